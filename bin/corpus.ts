import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { describeFaults, FaultSpecError, parseFaults } from '../local/faults';
import { formatSummary, runLocalCorpus, UsageError } from '../local/run-local';

/**
 * The `corpus` CLI. Exit codes: 0 the run finished (failed records included), 1 the run failed, 2 bad usage,
 * 3 the local runtime could not start or run.
 */
const program = new Command('corpus')
  .description('Run a foundation model over a JSONL corpus with the corpus pipeline, on AWS or offline.')
  .showHelpAfterError();

const local = program
  .command('local')
  .description('The offline local runtime (emulators and the Bedrock simulator).');

local
  .command('run')
  .description(
    'Run a corpus through the whole pipeline offline: the file is put into the local ingest bucket and the run starts ' +
      'through S3 -> EventBridge -> Step Functions, as in AWS. Prints a summary, and writes manifest.json, ' +
      'results.jsonl and failures.jsonl into --out.',
  )
  .requiredOption('--corpus <file>', 'the JSONL corpus to run')
  .addOption(
    new Option(
      '--mode <mode>',
      'auto picks the mode from the corpus; batch = Bedrock batch jobs; converse = Converse fan-out',
    )
      .choices(['auto', 'batch', 'converse'])
      .default('auto'),
  )
  .option(
    '--out <dir>',
    'where to write manifest.json, results.jsonl and failures.jsonl (default: <state-dir>/runs/<runId>)',
  )
  .option('--faults <spec>', `comma-separated faults to inject into the local run:\n${describeFaults()}`)
  .option('--json', 'print the run manifest as JSON instead of a summary', false)
  .option(
    '--state-dir <dir>',
    'where the local runtime keeps its state (buckets, ledger, queues, logs)',
    '.corpus-local',
  )
  .action(
    async (opts: {
      corpus: string;
      mode: 'auto' | 'batch' | 'converse';
      out?: string;
      json: boolean;
      stateDir: string;
      faults?: string;
    }) => {
      try {
        const faults = opts.faults === undefined ? undefined : parseFaults(opts.faults);
        const outcome = await runLocalCorpus({
          ...(faults ? { runtime: { bedrock: { ...faults.runtime, batch: { faults: faults.batch } } } } : {}),
          corpusFile: resolve(opts.corpus),
          mode: opts.mode,
          stateDir: resolve(opts.stateDir),
          ...(opts.out ? { outDir: resolve(opts.out) } : {}),
          progress: opts.json ? undefined : (line: string) => process.stderr.write(`${line}\n`),
        });
        process.stdout.write(
          opts.json ? `${JSON.stringify(outcome.manifest, null, 2)}\n` : `${formatSummary(outcome)}\n`,
        );
        process.exitCode = outcome.manifest.status === 'SUCCEEDED' ? 0 : 1;
      } catch (err) {
        if (err instanceof UsageError || err instanceof FaultSpecError) {
          process.stderr.write(`corpus: ${err.message}\n`);
          process.exitCode = 2;
          return;
        }
        process.stderr.write(
          `corpus: the local run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
        );
        process.exitCode = 3;
      }
    },
  );

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`corpus: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 2;
});
