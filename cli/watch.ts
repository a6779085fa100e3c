import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import * as fmt from './format';
import type { RunProgress } from './run-view';

/**
 * Live progress: a rate measured over a sliding window, the CLI's one set of cli-progress bars, and two displays of a
 * run's progress: bars on a terminal (the run, each Map Run, each batch job in flight) and one line per update
 * elsewhere (logs, CI, pipes).
 */

/** Records per second over the last `windowMs` of samples (the average since the first sample until then). */
export class RateTracker {
  private readonly samples: { t: number; done: number }[] = [];

  constructor(private readonly windowMs = 60_000) {}

  /** Adds a sample and returns the rate, or null until two samples are apart in time. */
  add(t: number, done: number): number | null {
    this.samples.push({ t, done });
    while (this.samples.length > 2 && t - this.samples[1]!.t >= this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const seconds = (t - first.t) / 1000;
    return seconds > 0 ? Math.max(0, (done - first.done) / seconds) : null;
  }
}

/** Where progress is drawn. */
export interface ProgressDisplay {
  /** Shows the latest progress. */
  update(progress: RunProgress): void;
  /** Removes the bars (the final status is printed after). */
  stop(): void;
}

/** A stream progress can be drawn on. */
export type ProgressStream = NodeJS.WritableStream & { isTTY?: boolean };

/** A terminal gets bars, anything else one line per update. */
export function createProgressDisplay(stream: ProgressStream): ProgressDisplay {
  return stream.isTTY ? new BarDisplay(stream) : new LineDisplay(stream);
}

/** The headline of a progress update: records done of total, rate, ETA, error rate. */
export function progressLine(p: RunProgress): string {
  const share = p.total > 0 ? ` (${fmt.percent(p.done / p.total)})` : '';
  const parts = [
    `${p.status}`,
    p.total > 0 || p.finished ? `${fmt.count(p.done)} of ${fmt.count(p.total)} records${share}` : 'planning',
    `rate ${fmt.rate(p.ratePerSecond)}`,
    `ETA ${p.etaSeconds === null ? '-' : fmt.duration(p.etaSeconds * 1000)}`,
    `errors ${fmt.percent(p.errorRate)}`,
  ];
  const running = p.jobs.filter((j) => !j.endedAt && j.jobArn);
  if (p.jobs.length > 0) parts.push(`jobs ${p.jobs.length - running.length}/${p.jobs.length} ended`);
  return parts.join('  ');
}

class LineDisplay implements ProgressDisplay {
  constructor(private readonly stream: ProgressStream) {}

  update(progress: RunProgress): void {
    this.stream.write(`${new Date().toISOString().slice(11, 19)} ${progressLine(progress)}\n`);
  }

  stop(): void {}
}

/** One bar of {@link ProgressBars}: records (or shards) done of total, a label before and a detail after. */
export interface BarState {
  readonly value: number;
  readonly total: number;
  readonly label: string;
  readonly unit: string;
  readonly detail: string;
}

const BAR_FORMAT = '{label} {bar} {percentage}% {value}/{total} {unit}  {detail}';

/**
 * The one cli-progress bar set of the CLI (`corpus status --watch` and `corpus local run` draw with it): bars by key,
 * lines printed above them. Drawing starts with the first `show`; a line logged before that goes straight out.
 */
export class ProgressBars {
  private multi: MultiBar | undefined;
  private readonly bars = new Map<string, SingleBar>();

  constructor(private readonly stream: ProgressStream) {}

  /** Draws exactly these bars: new keys get a bar, known ones are updated, the others removed. */
  show(wanted: ReadonlyMap<string, BarState>): void {
    const multi = (this.multi ??= new MultiBar(
      {
        format: BAR_FORMAT,
        stream: this.stream,
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        barsize: 30,
        formatValue: (value, _options, type) =>
          type === 'value' || type === 'total' ? fmt.count(value) : String(value),
      },
      Presets.shades_classic,
    ));
    for (const [key, bar] of this.bars) {
      if (!wanted.has(key)) {
        multi.remove(bar);
        this.bars.delete(key);
      }
    }
    for (const [key, want] of wanted) {
      // cli-progress divides by the total: a bar of nothing shows as empty, not as NaN.
      const total = Math.max(1, want.total);
      const value = Math.min(want.value, total);
      const payload = { label: want.label, unit: want.unit, detail: want.detail };
      const bar = this.bars.get(key);
      if (bar) {
        bar.setTotal(total);
        bar.update(value, payload);
      } else {
        this.bars.set(key, multi.create(total, value, payload));
      }
    }
  }

  /** Prints a line above the bars (or as is, before any). */
  log(line: string): void {
    if (this.multi) this.multi.log(`${line}\n`);
    else this.stream.write(`${line}\n`);
  }

  /** Stops drawing and forgets the bars. */
  stop(): void {
    this.multi?.stop();
    this.multi = undefined;
    this.bars.clear();
  }
}

class BarDisplay implements ProgressDisplay {
  private readonly bars: ProgressBars;

  constructor(stream: ProgressStream) {
    this.bars = new ProgressBars(stream);
  }

  update(p: RunProgress): void {
    const wanted = new Map<string, BarState>();
    wanted.set('run', {
      value: p.done,
      total: p.total,
      label: `run ${p.runId.slice(0, 12)}`.padEnd(22),
      unit: 'records',
      detail: `${fmt.rate(p.ratePerSecond)}  ETA ${p.etaSeconds === null ? '-' : fmt.duration(p.etaSeconds * 1000)}  errors ${fmt.percent(p.errorRate)}  ${p.status}`,
    });
    for (const run of p.mapRuns) {
      wanted.set(`map:${run.stateName}`, {
        value: run.done,
        total: run.total,
        label: `  ${run.stateName}`.padEnd(22),
        unit: run.unit,
        detail: `${fmt.count(run.running)} running, ${fmt.count(run.failed)} failed  ${run.status}`,
      });
    }
    for (const job of p.jobs) {
      if (!job.jobArn || job.endedAt || job.records === null) continue;
      wanted.set(`job:${job.shard}`, {
        value: job.processed ?? 0,
        total: job.records,
        label: `  shard ${job.shard}`.padEnd(22),
        unit: 'records',
        detail: `${job.status}${job.failed ? `, ${fmt.count(job.failed)} errors` : ''}`,
      });
    }
    this.bars.show(wanted);
  }

  stop(): void {
    this.bars.stop();
  }
}
