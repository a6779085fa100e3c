// Run by e2e suites in a child process (`node --import tsx run-local-driver.ts '<json options>'`) for what the
// `corpus local run` command does not take yet: calls runLocalCorpus with the given options and prints the manifest.
import { runLocalCorpus, type LocalRunOptions } from '../../local/run-local';

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? '{}') as LocalRunOptions;
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
