import { Command, Option } from 'commander';
import { MODES, runInputSchema, type RequestedMode, type RunInput } from '../../lambda/shared/contracts';
import type { Backend } from '../backend';
import {
  chooseBackend,
  runCommand,
  useBackend,
  withBackendOptions,
  write,
  writeJson,
  type BackendOptions,
  type CliContext,
} from '../context';
import { CliUsageError, EXIT } from '../errors';
import { checkRunId } from '../run-store';

/** Options of `corpus start`. */
interface StartOptions extends BackendOptions {
  corpus: string;
  mode: RequestedMode;
  name?: string;
  ledgerScope?: string;
}

/**
 * The execution input for a corpus URI, validated with the workflow's own schema (what Plan checks first).
 * @throws CliUsageError naming what is wrong
 */
export function runInputOf(corpusUri: string, mode: RequestedMode, ledgerScope?: string): RunInput {
  const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(corpusUri);
  if (!match)
    throw new CliUsageError(`--corpus must be s3://bucket/key or s3://bucket/prefix/, not "${corpusUri}"`);
  // A key ending in / is a prefix: Plan reads its .jsonl, .jsonl.gz and .gz files in key order.
  const [, bucket, key] = match as unknown as [string, string, string];
  const parsed = runInputSchema.safeParse({
    bucket,
    key,
    mode,
    trigger: 'cli',
    ...(ledgerScope !== undefined ? { ledgerScope } : {}),
  });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'input'}: ${i.message}`);
    throw new CliUsageError(`invalid run input: ${problems.join('; ')}`);
  }
  return parsed.data;
}

/** `corpus start --corpus s3://bucket/key`: starts a run on a deployed environment. */
export function startCommand(ctx: CliContext): Command {
  return withBackendOptions(
    new Command('start')
      .summary('start a run on a deployed environment')
      .description(
        'Start a run on a deployed environment: StartExecution with a validated input {bucket, key, mode}. ' +
          'The corpus may be in any bucket the pipeline can read. Offline, runs start with `corpus local run`.',
      )
      .requiredOption(
        '--corpus <s3uri>',
        'the corpus: one object s3://bucket/key (.jsonl, .jsonl.gz) or a prefix s3://bucket/prefix/ of such files',
      )
      .addOption(
        new Option(
          '--mode <mode>',
          'auto picks from the corpus; batch = Bedrock batch jobs; converse = Converse fan-out',
        )
          .choices(MODES)
          .default('auto'),
      )
      .option('--name <runId>', 'the execution name, which becomes the runId (default: a generated UUID)')
      .option(
        '--ledger-scope <scope>',
        'deduplicate against this ledger scope instead of the environment default',
      ),
  ).action(async (options: StartOptions) => {
    await runCommand(ctx, async () => {
      const input = runInputOf(options.corpus, options.mode, options.ledgerScope);
      const name = options.name === undefined ? undefined : checkRunId(options.name);
      const choice = chooseBackend(options);
      if (choice.kind === 'local') {
        throw new CliUsageError(
          `offline, a run starts with \`corpus local run --corpus FILE --mode ${input.mode ?? 'auto'} --state-dir ${choice.stateDir}\`: ` +
            'it puts the file into the local ingest bucket (the run starts through S3 -> EventBridge -> Step Functions) and shows it live',
        );
      }
      return useBackend(ctx, choice, (backend) => start(ctx, backend, input, name, options.json));
    });
  });
}

async function start(
  ctx: CliContext,
  backend: Backend,
  input: RunInput,
  name: string | undefined,
  json: boolean,
): Promise<number> {
  const execution = await backend.startExecution(input, name);
  if (json) {
    writeJson(ctx.stdout, { ...execution, input });
  } else {
    write(
      ctx.stdout,
      [
        `Started run ${execution.runId} on ${backend.label}`,
        `  input:     ${JSON.stringify(input)}`,
        `  execution: ${execution.executionArn}`,
        `  follow it: corpus status ${execution.runId} --env ${backend.config.envName} --watch`,
      ].join('\n'),
    );
  }
  return EXIT.ok;
}
