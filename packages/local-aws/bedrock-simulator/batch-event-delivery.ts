/**
 * Delivery of batch job state-change events: one in-order chain to the listener, with the dropEvents and
 * duplicateEvents faults applied and counted.
 */
import {
  buildStateChangeEvent,
  type BatchJobEventListener,
  type BatchJobStateChangeEvent,
} from './batch-events';
import type { BatchFaultInjector } from './batch-faults';
import type { JobRecord } from './batch-job';

/** Counters of the state-change event delivery. */
export interface BatchEventStats {
  /** Status changes that produced an event. */
  emitted: number;
  /** Events handed to the listener (duplicates count twice). */
  delivered: number;
  /** Events dropped by the dropEvents fault. */
  dropped: number;
  /** Extra deliveries made by the duplicateEvents fault. */
  duplicated: number;
  /** Deliveries whose listener threw or rejected (logged). */
  listenerErrors: number;
}

/** Turns status changes into events and hands them to the listener, one after another. */
export class BatchEventDelivery {
  /** Delivery counters. */
  readonly stats: BatchEventStats = {
    emitted: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    listenerErrors: 0,
  };
  private delivery: Promise<void> = Promise.resolve();

  /**
   * @param where account and region of the events
   * @param faults decides dropped and duplicated events
   * @param target its `onEvent` receives the events, read at each delivery (none: events are only counted)
   */
  constructor(
    private readonly where: { readonly accountId: string; readonly region: string },
    private readonly faults: BatchFaultInjector,
    private readonly target: { readonly onEvent?: BatchJobEventListener },
  ) {}

  /** Queues the event of the job's current status. */
  emit(job: JobRecord): void {
    const event = buildStateChangeEvent(
      {
        jobArn: job.jobArn,
        jobName: job.input.jobName,
        modelArn: job.modelArn,
        status: job.status,
        ...(job.message === undefined ? {} : { message: job.message }),
        submitTime: job.submitTime,
      },
      { accountId: this.where.accountId, region: this.where.region },
      job.lastModifiedTime,
    );
    this.stats.emitted += 1;
    const copies = this.faults.eventCopies(job.status);
    if (copies === 0) {
      this.stats.dropped += 1;
      return;
    }
    if (copies === 2) this.stats.duplicated += 1;
    for (let i = 0; i < copies; i += 1) {
      this.delivery = this.delivery.then(() => this.deliver(event));
    }
  }

  /** Waits until every event emitted so far has been delivered to the listener. */
  async delivered(): Promise<void> {
    let current: Promise<void>;
    do {
      current = this.delivery;
      await current;
    } while (current !== this.delivery);
  }

  private async deliver(event: BatchJobStateChangeEvent): Promise<void> {
    const listener = this.target.onEvent;
    if (!listener) return;
    this.stats.delivered += 1;
    try {
      await listener(event);
    } catch (err) {
      // A failing target must not stop the job or the events after it; EventBridge would retry and give up.
      this.stats.listenerErrors += 1;
      console.error(
        `bedrock-simulator: the job event listener failed on ${event.detail.status} of ${event.detail.batchJobArn}`,
        err,
      );
    }
  }
}
