import { InvalidArgumentError, type Command } from 'commander';
import type { PipelineConfig } from '../lib/config';
import type { Backend, BackendChoice, BackendOpener } from './backend';
import type { AwsDoctorDeps } from './doctor-aws';
import type { LocalProbes } from './doctor-local';
import { CliUsageError, describeError, EXIT, exitCodeOf } from './errors';
import { RunStore } from './run-store';
import type { ProgressStream } from './watch';

/** What the commands are given: the backend opener (from bin/), output streams, the clock. */
export interface CliContext {
  /** Opens the backend a command chose; bin/ supplies it (it reads cdk.json context). */
  readonly openBackend: BackendOpener;
  /** Standard output: results (text or JSON). */
  readonly stdout: ProgressStream;
  /** Standard error: messages and progress. */
  readonly stderr: ProgressStream;
  /** Epoch milliseconds. */
  readonly now: () => number;
  /** Waits between polls. */
  readonly sleep: (ms: number) => Promise<void>;
  /** The exit code of the command that ran (set by {@link runCommand}). */
  exitCode: number;
  /**
   * Reads and validates an environment's settings from cdk.json (bin/ supplies it); `corpus doctor` checks against
   * them, deployed or not.
   */
  readonly loadEnvironment?: (envName: string) => Promise<PipelineConfig>;
  /** What `corpus doctor` checks with: AWS clients, the model check, the machine's probes (tests replace them). */
  readonly doctor?: DoctorDeps;
}

/** The dependencies of `corpus doctor` that tests replace. */
export interface DoctorDeps {
  readonly aws?: AwsDoctorDeps;
  readonly local?: Partial<LocalProbes>;
}

/** The options every backend command takes. */
export interface BackendOptions {
  env?: string;
  local?: boolean;
  stateDir: string;
  json: boolean;
}

/** The help line that says when `--local` works. */
const LOCAL_HELP =
  "the local runtime's state in --state-dir (starts its emulators: only while no `corpus local run` is using it)";

/** Adds `--env`, `--local`, `--state-dir` and `--json` to a command. */
export function withBackendOptions(command: Command): Command {
  return command
    .option('--env <name>', 'a deployed environment (cdk.json context.environments), e.g. dev')
    .option('--local', LOCAL_HELP)
    .option('--state-dir <dir>', 'the local state directory (with --local)', '.corpus-local')
    .option('--json', 'print JSON for scripts instead of text', false);
}

/**
 * The backend a command asked for.
 * @throws CliUsageError when neither or both of `--env` and `--local` are given
 */
export function chooseBackend(options: BackendOptions): BackendChoice {
  if (options.env !== undefined && options.local) {
    throw new CliUsageError('choose one of --env <name> and --local, not both');
  }
  if (options.env !== undefined) return { kind: 'aws', envName: options.env };
  if (options.local) return { kind: 'local', stateDir: options.stateDir };
  throw new CliUsageError('choose a backend: --env <name> (a deployed environment) or --local');
}

/** Writes text (a newline is added) to a stream. */
export function write(stream: ProgressStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Writes a value as indented JSON. */
export function writeJson(stream: ProgressStream, value: unknown): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Runs a command body and turns its outcome into the exit code: the body's number, or the code of what it threw
 * (with the message on stderr). Never lets an error escape to commander.
 */
export async function runCommand(ctx: CliContext, body: () => Promise<number>): Promise<void> {
  try {
    ctx.exitCode = await body();
  } catch (error) {
    ctx.exitCode = exitCodeOf(error);
    const detail =
      ctx.exitCode === EXIT.backend && error instanceof Error && !(error.name === 'BackendError')
        ? `${error.name}: ${describeError(error)}`
        : describeError(error);
    write(ctx.stderr, `corpus: ${detail}`);
  }
}

/** Opens a backend, runs the body with it and a run store on its output bucket, then closes it. */
export async function useBackend(
  ctx: CliContext,
  choice: BackendChoice,
  body: (backend: Backend, store: RunStore) => Promise<number>,
): Promise<number> {
  const backend = await ctx.openBackend(choice);
  try {
    return await body(backend, new RunStore(backend.s3, backend.outputs.outputBucket));
  } finally {
    await backend.close();
  }
}

/**
 * {@link runCommand} with the backend the options chose ({@link useBackend}). `check` runs first, so bad arguments
 * are refused before any backend is opened.
 */
export async function withBackend(
  ctx: CliContext,
  options: BackendOptions,
  body: (backend: Backend, store: RunStore) => Promise<number>,
  check?: () => void,
): Promise<void> {
  await runCommand(ctx, () => {
    check?.();
    return useBackend(ctx, chooseBackend(options), body);
  });
}

/** Parses a positive integer option (commander reports a bad value as a usage error). */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

/** Parses a positive number option (seconds and the like). */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number');
  return n;
}
