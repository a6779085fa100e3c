import type { FailureLaneMessage } from '../../../../lambda/shared/contracts';
import type { FailureLaneSender, RefusedMessage } from '../../../../lambda/shared/failure-lane';
import type { Claimant, Ledger, TransitionOutcome } from '../../../../lambda/shared/ledger';
import type { PublishedRecord, ResultsPublisher } from '../../../../lambda/shared/results-queue';
import { RunState } from '../../../../lambda/shared/run-state';
import { createRunsTable, type LedgerServer } from '../failure-lane/lane-fixtures';

/**
 * Fixtures for the tests of the units of work (Collect, Finalize): a failure lane and a results queue that record
 * what they were given, the runs table on dynalite, a ledger wrapper that traces the calls, and a fault hook that
 * kills a handler at one of its fault points.
 */

/** A failure-lane sender that records each message; `queue` are the retryable ones, `dlq` the rest (its routing). */
export class RecordingLane implements Pick<FailureLaneSender, 'add' | 'flush'> {
  readonly messages: FailureLaneMessage[] = [];

  async add(message: FailureLaneMessage): Promise<void> {
    this.messages.push(structuredClone(message));
  }

  async flush(): Promise<RefusedMessage[]> {
    // Nothing is buffered, nothing refused.
    return [];
  }

  /** What went to the failure queue (the lane retries them). */
  get queue(): FailureLaneMessage[] {
    return this.messages.filter((m) => m.error.retryable === true);
  }

  /** What went to the dead-letter queue (final failures). */
  get dlq(): FailureLaneMessage[] {
    return this.messages.filter((m) => m.error.retryable !== true);
  }
}

/** A results queue that records each message. */
export class RecordingPublisher implements Pick<ResultsPublisher, 'publish'> {
  readonly sent: PublishedRecord[] = [];

  async publish(records: readonly PublishedRecord[]): Promise<void> {
    this.sent.push(...records.map((r) => structuredClone(r)));
  }
}

/** Creates a runs table (`runId` hash, `item` range) on the dynalite server and a RunState on it. */
export async function freshRunState(server: LedgerServer, name: string): Promise<RunState> {
  await createRunsTable(server, name);
  return new RunState(server.doc, name, 30);
}

type CollectLedger = Pick<Ledger, 'claim' | 'commit' | 'fail' | 'markDelivered'>;

/** A ledger that passes every call on to a real one, recording the calls and the commits that took effect. */
export class TracingLedger implements CollectLedger {
  readonly calls: {
    op: 'claim' | 'commit' | 'fail' | 'markDelivered';
    recordId: string;
    contentHash?: string;
  }[] = [];
  /** Record ids whose commit took effect, as soon as the ledger said so. */
  readonly committed = new Set<string>();
  inFlight = 0;

  constructor(private readonly inner: CollectLedger) {}

  claim(...args: Parameters<Ledger['claim']>): ReturnType<Ledger['claim']> {
    const [, recordId, , options] = args;
    this.calls.push({
      op: 'claim',
      recordId,
      ...(options.contentHash !== undefined ? { contentHash: options.contentHash } : {}),
    });
    return this.track(this.inner.claim(...args));
  }

  async commit(
    scope: string,
    recordId: string,
    who: Claimant,
    resultKey: string,
  ): Promise<TransitionOutcome> {
    this.calls.push({ op: 'commit', recordId });
    const outcome = await this.track(this.inner.commit(scope, recordId, who, resultKey));
    if (outcome.kind === 'done') this.committed.add(recordId);
    return outcome;
  }

  fail(...args: Parameters<Ledger['fail']>): ReturnType<Ledger['fail']> {
    this.calls.push({ op: 'fail', recordId: args[1] });
    return this.track(this.inner.fail(...args));
  }

  markDelivered(...args: Parameters<Ledger['markDelivered']>): ReturnType<Ledger['markDelivered']> {
    this.calls.push({ op: 'markDelivered', recordId: args[1] });
    return this.track(this.inner.markDelivered(...args));
  }

  /** Waits until no call is in flight (the stray work of a crashed attempt has stopped). */
  async quiesce(): Promise<void> {
    do await new Promise((resolve) => setTimeout(resolve, 5));
    while (this.inFlight > 0);
  }

  private async track<T>(call: Promise<T>): Promise<T> {
    this.inFlight++;
    try {
      return await call;
    } finally {
      this.inFlight--;
    }
  }
}

/** The error a simulated crash throws. */
export class SimulatedCrash extends Error {
  override readonly name = 'SimulatedCrash';
}

type FaultHook = (handler: string, step: string) => void;
const hookHost = globalThis as { __corpusFaultPoint?: FaultHook };

/**
 * Kills a handler at its `nth` pass through a fault point (the hook the local runtime installs). Once it has, every
 * fault point throws too: the process is dead, so stray work of the crashed invocation stops at its next step.
 */
export class Crash {
  hits = 0;
  crashed = false;

  constructor(
    private readonly handler: string,
    private readonly step: string,
    private readonly nth = 1,
  ) {}

  install(): this {
    hookHost.__corpusFaultPoint = (handler, step) => {
      if (this.crashed) throw new SimulatedCrash(`dead after ${this.handler}@${this.step}`);
      if (handler !== this.handler || step !== this.step) return;
      if (++this.hits < this.nth) return;
      this.crashed = true;
      throw new SimulatedCrash(`crashed at ${handler}@${step} (pass ${this.hits})`);
    };
    return this;
  }

  /** Removes the hook (the next invocation is a new, healthy process). */
  static remove(): void {
    delete hookHost.__corpusFaultPoint;
  }
}
