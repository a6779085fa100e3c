import { mulberry32 } from './engine';
import type { BatchJobStatus } from './batch-status';

/** Faults of the batch control plane, to exercise partial results, failed jobs and missed events. */
export interface BatchFaultOptions {
  /** Seed of the PRNGs behind the fractions; the same seed and order give the same faults. @default 1 */
  readonly seed?: number;
  /**
   * Share (0..1) of records that get no output line at all (as if the job ran out of time); a job that loses
   * any record this way ends PartiallyCompleted. @default 0
   */
  readonly partialJob?: number;
  /** The next N jobs created end Failed once they reach InProgress, without output. @default 0 */
  readonly failJobs?: number;
  /** Share (0..1) of state-change events never delivered (EventBridge delivery is best-effort). @default 0 */
  readonly dropEvents?: number;
  /** Share (0..1) of delivered state-change events delivered twice. @default 0 */
  readonly duplicateEvents?: number;
  /** Statuses whose events dropEvents/duplicateEvents apply to. @default every status */
  readonly eventStatuses?: readonly BatchJobStatus[];
  /** Extra processing time per record, in ms (on the batch clock). @default 0 */
  readonly slowMs?: number;
}

/** Message of a job failed by the `failJobs` fault. */
export const INJECTED_JOB_FAILURE_MESSAGE =
  'An internal error occurred while processing the batch inference job. Submit the job again. (simulated fault failJobs)';

/**
 * Decides the batch faults. Record and event decisions draw from two PRNGs seeded from `seed`, so the events of
 * a run do not shift which records are dropped. {@link configure} restarts both sequences.
 */
export class BatchFaultInjector {
  private options: BatchFaultOptions = {};
  private recordRandom: () => number = mulberry32(1);
  private eventRandom: () => number = mulberry32(1);
  private jobFailuresLeft = 0;

  /** @param options initial faults */
  constructor(options: BatchFaultOptions = {}) {
    this.configure(options);
  }

  /**
   * Replaces every fault setting (absent fields switch that fault off) and reseeds the PRNGs.
   * @throws RangeError for fractions outside 0..1 or negative counts
   */
  configure(options: BatchFaultOptions): void {
    for (const key of ['partialJob', 'dropEvents', 'duplicateEvents'] as const) {
      const value = options[key];
      if (value !== undefined && !(value >= 0 && value <= 1)) {
        throw new RangeError(`BatchFaultOptions.${key} must be between 0 and 1, got ${value}`);
      }
    }
    if (options.failJobs !== undefined && !(Number.isInteger(options.failJobs) && options.failJobs >= 0)) {
      throw new RangeError(`BatchFaultOptions.failJobs must be an integer >= 0, got ${options.failJobs}`);
    }
    if (options.slowMs !== undefined && !(options.slowMs >= 0)) {
      throw new RangeError(`BatchFaultOptions.slowMs must be >= 0, got ${options.slowMs}`);
    }
    this.options = { ...options };
    const seed = options.seed ?? 1;
    this.recordRandom = mulberry32(seed);
    // A different stream for events, derived from the same seed.
    this.eventRandom = mulberry32(seed ^ 0x5bd1e995);
    this.jobFailuresLeft = options.failJobs ?? 0;
  }

  /** Current settings (failJobs as configured, not as many as are left). */
  current(): BatchFaultOptions {
    return { ...this.options };
  }

  /** Extra processing time per record. */
  get slowMs(): number {
    return this.options.slowMs ?? 0;
  }

  /** Failures still to inject from `failJobs`. */
  get jobFailuresRemaining(): number {
    return this.jobFailuresLeft;
  }

  /** Called once per created job: true when this job must fail (consumes one `failJobs`). */
  takeJobFailure(): boolean {
    if (this.jobFailuresLeft <= 0) return false;
    this.jobFailuresLeft -= 1;
    return true;
  }

  /** Called once per record: true when the record must get no output line. */
  dropRecord(): boolean {
    const fraction = this.options.partialJob ?? 0;
    if (fraction <= 0) return false;
    return this.recordRandom() < fraction;
  }

  /**
   * How many times to deliver the event of a status change: 0 (dropped), 1, or 2 (duplicated). Always draws
   * twice when a fault applies to the status, so the sequence does not depend on which fractions are set.
   */
  eventCopies(status: BatchJobStatus): 0 | 1 | 2 {
    const { dropEvents = 0, duplicateEvents = 0, eventStatuses } = this.options;
    if (dropEvents <= 0 && duplicateEvents <= 0) return 1;
    if (eventStatuses !== undefined && !eventStatuses.includes(status)) return 1;
    const dropDraw = this.eventRandom();
    const duplicateDraw = this.eventRandom();
    if (dropDraw < dropEvents) return 0;
    return duplicateDraw < duplicateEvents ? 2 : 1;
  }
}
