// Run by e2e suites in a child process (`node --import tsx run-local-driver.ts '<json options>'`) for what the
// `corpus local run` command does not take: runLocalCorpus (or, with `corpusFiles`, runLocalCorpora: several corpora
// at once through one runtime) with the given options. Prints the manifest, or one `{outDir, manifest}` per run.
import { runLocalCorpora, runLocalCorpus, type LocalRunOptions } from '../../local/run-local';

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? '{}') as LocalRunOptions & { corpusFiles?: string[] };
  if (options.corpusFiles) {
    const outcomes = await runLocalCorpora({ ...options, corpusFiles: options.corpusFiles });
    process.stdout.write(
      `${JSON.stringify(outcomes.map((o) => ({ outDir: o.outDir, manifest: o.manifest })))}\n`,
    );
    return;
  }
  const outcome = await runLocalCorpus(options);
  process.stdout.write(`${JSON.stringify(outcome.manifest)}\n`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
