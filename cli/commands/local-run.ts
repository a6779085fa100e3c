import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import type { LocalRunOptions, LocalRunOutcome } from '../local/run-local';
import { describeFaults, parseFaults, type FaultPlan } from '../local/faults';
import { formatMapProgress, type MapRunProgress } from '../local/progress';
import { write, type CliContext } from '../context';
import { CliUsageError, EXIT } from '../errors';
import * as fmt from '../format';
import { ProgressBars, RateTracker, type BarState, type ProgressStream } from '../watch';

/** The local runtime's entry points `corpus local run` uses. */
export interface LocalRunner {
  /** @throws an error named UsageError for a missing corpus file */
  readonly runLocalCorpus: (options: LocalRunOptions) => Promise<LocalRunOutcome>;
  readonly formatSummary: (outcome: LocalRunOutcome) => string;
}

/** Loads the local runtime only when `local run` runs (it pulls in the emulators, the simulator and the CDK). */
function loadLocalRunner(): Promise<LocalRunner> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily (see above)
  return Promise.resolve(require('../local/run-local') as typeof import('../local/run-local'));
}

/** Options of `corpus local run`. */
interface LocalRunCommandOptions {
  corpus: string;
  mode: 'auto' | 'batch' | 'converse';
  out?: string;
  json: boolean;
  stateDir: string;
  faults?: string;
  ledgerScope?: string;
}

/**
 * The local runtime's settings for a `--faults` plan: Converse faults for the simulator's runtime side, batch faults
 * for its batch side, crashes and redelivery for the runtime itself.
 */
export function runtimeOptionsFor(faults: FaultPlan): NonNullable<LocalRunOptions['runtime']> {
  return {
    bedrock: { faults: faults.runtime, batch: { faults: faults.batch } },
    faults: faults.local,
  };
}

/** Errors of the local runtime that are the caller's mistake (exit code 2). */
const USAGE_ERROR_NAMES = new Set(['UsageError', 'FaultSpecError']);

/**
 * `corpus local`: the offline runtime. `local run` keeps its contract (options, output, exit codes 0 finished / 1 run
 * failed / 2 bad usage / 3 the runtime failed) and, on a terminal, draws the run's progress as live bars.
 */
export function localCommand(
  ctx: CliContext,
  loadRunner: () => Promise<LocalRunner> = loadLocalRunner,
): Command {
  const local = new Command('local')
    .summary('local run: run a corpus through the pipeline offline')
    .description('The offline local runtime (emulators and the Bedrock simulator).');
  local
    .command('run')
    .description(
      'Run a corpus through the whole pipeline offline: the file is put into the local ingest bucket and the run starts ' +
        'through S3 -> EventBridge -> Step Functions, as in AWS. Shows live progress, prints a summary, and writes ' +
        'manifest.json, results.jsonl and failures.jsonl into --out. Exit codes: 0 the run finished (failed records ' +
        'included), 1 the run failed, 2 bad usage, 3 the local runtime could not start or run.',
    )
    .requiredOption(
      '--corpus <path>',
      'the corpus: a .jsonl or .jsonl.gz file, or a folder of them (put as a drop, closed by _SUCCESS)',
    )
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
    .option('--faults <spec>', 'comma-separated faults to inject into the local run (listed below)')
    .option(
      '--ledger-scope <scope>',
      "the ledger scope records are deduplicated in (default: the environment's ledger.scope); a new scope processes every record again",
    )
    .option('--json', 'print the run manifest as JSON instead of a summary', false)
    .option(
      '--state-dir <dir>',
      'where the local runtime keeps its state (buckets, ledger, queues, logs)',
      '.corpus-local',
    )
    // A function: the list is built only when the help is shown.
    .addHelpText('after', () => `\nFaults (--faults):\n${describeFaults()}`)
    .action(async (opts: LocalRunCommandOptions) => {
      const display = opts.json ? undefined : new LocalRunDisplay(ctx.stderr, ctx.now);
      try {
        const faults = opts.faults === undefined ? undefined : parseFaults(opts.faults);
        if (
          opts.ledgerScope !== undefined &&
          (opts.ledgerScope.length < 1 || opts.ledgerScope.length > 200)
        ) {
          throw new CliUsageError('--ledger-scope must be 1 to 200 characters');
        }
        const runner = await loadRunner();
        const outcome = await runner.runLocalCorpus({
          ...(faults ? { runtime: runtimeOptionsFor(faults) } : {}),
          ...(opts.ledgerScope === undefined ? {} : { ledgerScope: opts.ledgerScope }),
          corpusFile: resolve(opts.corpus),
          mode: opts.mode,
          stateDir: resolve(opts.stateDir),
          ...(opts.out ? { outDir: resolve(opts.out) } : {}),
          progress: display ? (line: string) => display.line(line) : undefined,
          mapProgress: display ? (progress: MapRunProgress) => display.map(progress) : undefined,
        });
        display?.stop();
        write(
          ctx.stdout,
          opts.json ? JSON.stringify(outcome.manifest, null, 2) : runner.formatSummary(outcome),
        );
        ctx.exitCode = outcome.manifest.status === 'SUCCEEDED' ? EXIT.ok : EXIT.notFoundOrFailed;
      } catch (err) {
        display?.stop();
        if (err instanceof CliUsageError || (err instanceof Error && USAGE_ERROR_NAMES.has(err.name))) {
          write(ctx.stderr, `corpus: ${err.message}`);
          ctx.exitCode = EXIT.usage;
          return;
        }
        write(
          ctx.stderr,
          `corpus: the local run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
        );
        ctx.exitCode = EXIT.backend;
      }
    });
  return local;
}

/**
 * The local run's progress on stderr: on a terminal, one bar per Distributed Map (records done of total, rate, ETA,
 * error rate) with the other lines printed above; elsewhere the runtime's lines and each Map's progress as a line.
 */
export class LocalRunDisplay {
  private readonly bars: ProgressBars;
  /** Every Map seen so far, in order: a line reports one of them, the others keep their last state. */
  private readonly maps = new Map<string, { state: BarState; rate: RateTracker }>();

  constructor(
    private readonly stream: ProgressStream,
    private readonly now: () => number,
  ) {
    this.bars = new ProgressBars(stream);
  }

  /** Takes one progress line of the runtime. */
  line(text: string): void {
    this.bars.log(text);
  }

  /** Takes one Map's progress: a bar on a terminal, a line elsewhere. */
  map(progress: MapRunProgress): void {
    if (!this.stream.isTTY) {
      this.line(formatMapProgress(progress));
      return;
    }
    const rate = this.maps.get(progress.state)?.rate ?? new RateTracker(30_000);
    const perSecond = rate.add(this.now(), progress.done);
    const remaining = progress.total - progress.done;
    const etaText = remaining <= 0 ? '0s' : perSecond ? fmt.duration((remaining / perSecond) * 1000) : '-';
    const errors = fmt.percent(progress.done > 0 ? progress.failed / progress.done : null);
    const state: BarState = {
      value: progress.done,
      total: progress.total,
      label: progress.state.padEnd(10),
      unit: progress.unit,
      detail: `${fmt.rate(perSecond)}  ETA ${etaText}  errors ${errors}`,
    };
    this.maps.set(progress.state, { state, rate });
    this.bars.show(new Map([...this.maps].map(([name, map]) => [name, map.state])));
  }

  /** Stops drawing (the summary follows). */
  stop(): void {
    this.bars.stop();
    this.maps.clear();
  }
}
