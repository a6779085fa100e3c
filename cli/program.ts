import { Command, CommanderError } from 'commander';
import type { PipelineConfig } from '../lib/config';
import type { BackendOpener } from './backend';
import { doctorCommand } from './commands/doctor';
import { failuresCommand } from './commands/failures';
import { localCommand, type LocalRunner } from './commands/local-run';
import { reconcileCommand } from './commands/reconcile';
import { redriveCommand } from './commands/redrive';
import { reportCommand } from './commands/report';
import { runsCommand } from './commands/runs';
import { startCommand } from './commands/start';
import { statusCommand } from './commands/status';
import { write, type CliContext, type DoctorDeps } from './context';
import { describeError, EXIT } from './errors';
import type { ProgressStream } from './watch';

/** What the CLI runs with; bin/ passes the real process streams and the backend opener. */
export interface CliDeps {
  readonly openBackend: BackendOpener;
  readonly stdout: ProgressStream;
  readonly stderr: ProgressStream;
  /** @default Date.now */
  readonly now?: () => number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** @default the local runtime (cli/local/run-local), loaded when `local run` runs */
  readonly localRunner?: () => Promise<LocalRunner>;
  /** Reads an environment's validated settings (bin/ reads cdk.json); `corpus doctor` needs it. */
  readonly loadEnvironment?: (envName: string) => Promise<PipelineConfig>;
  /** @default the real AWS clients and this machine */
  readonly doctor?: DoctorDeps;
}

const DESCRIPTION = [
  'Run a foundation model over a JSONL corpus with the corpus pipeline, on AWS or offline, and operate it.',
  '',
  'Every operating command works against a deployed environment (--env <name>: the stack CorpusPipeline-<name> in ' +
    "the environment's Region, its outputs found with CloudFormation) or the local runtime's state (--local " +
    '[--state-dir DIR]; it starts the emulators on that directory, so only while no `corpus local run` is using ' +
    'it), and prints JSON with --json. `corpus <command> --help` tells more.',
  '',
  'Before the first deploy, `corpus doctor --env <name>` checks the account is ready (and `--local`, this machine).',
  '',
  'Exit codes: 0 ok, 1 not found, the run failed, or a doctor check failed, 2 bad usage, 3 AWS or the local runtime ' +
    'could not answer.',
].join('\n');

/** Builds the `corpus` program: every command, with help text, writing to the context's streams. */
export function buildProgram(ctx: CliContext, localRunner?: () => Promise<LocalRunner>): Command {
  const program = new Command('corpus').description(DESCRIPTION).showHelpAfterError();
  program.addCommand(localCommand(ctx, ...(localRunner ? [localRunner] : [])));
  program.addCommand(startCommand(ctx));
  program.addCommand(runsCommand(ctx));
  program.addCommand(statusCommand(ctx));
  program.addCommand(failuresCommand(ctx));
  program.addCommand(reportCommand(ctx));
  program.addCommand(redriveCommand(ctx));
  program.addCommand(reconcileCommand(ctx));
  program.addCommand(doctorCommand(ctx));
  configure(program, ctx);
  return program;
}

/** Commander's settings are not inherited by added commands: every command throws instead of exiting. */
function configure(command: Command, ctx: CliContext): void {
  command.exitOverride().configureOutput({
    writeOut: (text) => ctx.stdout.write(text),
    writeErr: (text) => ctx.stderr.write(text),
  });
  for (const sub of command.commands) configure(sub, ctx);
}

/**
 * Runs the CLI on `argv` (without the node and script entries) and returns the exit code: a command's own, 0 for
 * help, 2 for anything commander rejects (unknown command or option, missing argument, bad value).
 */
export async function runCli(argv: readonly string[], deps: CliDeps): Promise<number> {
  const ctx: CliContext = {
    openBackend: deps.openBackend,
    stdout: deps.stdout,
    stderr: deps.stderr,
    now: deps.now ?? Date.now,
    sleep: deps.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    exitCode: EXIT.ok,
    ...(deps.loadEnvironment ? { loadEnvironment: deps.loadEnvironment } : {}),
    ...(deps.doctor ? { doctor: deps.doctor } : {}),
  };
  const program = buildProgram(ctx, deps.localRunner);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return ctx.exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    write(ctx.stderr, `corpus: ${describeError(error)}`);
    return EXIT.backend;
  }
}
