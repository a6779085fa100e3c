// Run by e2e suites in a child process (`node --import tsx run-local-driver.ts '<json options>'`) for what the
// `corpus local run` command does not take: runLocalCorpus (or, with `corpusFiles`, runLocalCorpora: several corpora
// at once through one runtime) with the given options, `faults` as the CLI's --faults spec, and `expressTimeoutMs`
// (the EXPRESS children's cap). Prints the manifest, or one `{outDir, manifest}` per run.
import { runtimeOptionsFor } from '../../cli/commands/local-run';
import { parseFaults } from '../../cli/local/faults';
import { runLocalCorpora, runLocalCorpus, type LocalRunOptions } from '../../cli/local/run-local';

type DriverOptions = LocalRunOptions & { corpusFiles?: string[]; faults?: string; expressTimeoutMs?: number };

async function main(): Promise<void> {
  const { faults, expressTimeoutMs, corpusFiles, ...options } = JSON.parse(
    process.argv[2] ?? '{}',
  ) as DriverOptions;
  const runtime = {
    ...options.runtime,
    ...(faults ? runtimeOptionsFor(parseFaults(faults)) : {}),
    ...(expressTimeoutMs !== undefined ? { expressTimeoutMs } : {}),
  };
  if (corpusFiles) {
    const outcomes = await runLocalCorpora({ ...options, runtime, corpusFiles });
    process.stdout.write(
      `${JSON.stringify(outcomes.map((o) => ({ outDir: o.outDir, manifest: o.manifest })))}\n`,
    );
    return;
  }
  const outcome = await runLocalCorpus({ ...options, runtime });
  process.stdout.write(`${JSON.stringify(outcome.manifest)}\n`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
