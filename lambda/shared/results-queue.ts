import { createHash } from 'node:crypto';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { Usage } from './contracts';
import { callDependency, TransientDependencyError } from './errors';
import { InFlightLimiter } from './pool';
import { sqsJsonBody } from './sqs-text';
import { jitteredBackoffMs, sleep } from './backoff';

/**
 * The optional results queue (SQS FIFO): one message per record a run published, so a downstream stage can consume
 * results as they land instead of listing the results files. It is sent after the results file holding the record is
 * written and before the ledger marks the record published: a crash in between republishes the record with the same
 * deduplication id, which FIFO drops within its five-minute window.
 */

/** The body of one results-queue message. */
export interface PublishedRecord {
  runId: string;
  recordId: string;
  ledgerScope: string;
  /** S3 key (in the output bucket) of the results file holding the record's line. */
  resultKey: string;
  usage: Usage;
}

/** How many message groups records are spread over (see {@link resultsGroupId}). */
export const RESULTS_GROUP_BUCKETS = 32;

const SQS_BATCH = 10;
const MAX_ATTEMPTS = 5;

/** The results queue refused a message as malformed (a bug, not a transient failure): never retried. */
export class ResultsQueueRejectedError extends Error {
  override readonly name = 'ResultsQueueRejectedError';
}

/**
 * The deduplication id of a record's message: the same record in the same ledger scope always gives the same id, so
 * a resend (a retried batch, a crash before the ledger write) within FIFO's five-minute window is dropped.
 */
export function resultsDedupeId(ledgerScope: string, recordId: string): string {
  return createHash('sha256').update(ledgerScope).update('\n').update(recordId).digest('hex');
}

/**
 * The message group of a record: one of {@link RESULTS_GROUP_BUCKETS} buckets chosen by the record's hash. Not the
 * runId: a FIFO queue hands out one group's messages one batch at a time, so a run as one group would serialise its
 * whole downstream consumption, and high-throughput FIFO scales per group. Records carry no order among themselves,
 * so spreading them loses nothing; and the bucket depends only on the record, so a resend lands in the same group
 * (deduplication is per group when the queue's DeduplicationScope is messageGroup).
 */
export function resultsGroupId(ledgerScope: string, recordId: string): string {
  const bucket =
    Number.parseInt(resultsDedupeId(ledgerScope, recordId).slice(0, 8), 16) % RESULTS_GROUP_BUCKETS;
  return `results-${bucket.toString().padStart(2, '0')}`;
}

/** Tuning of a {@link ResultsPublisher}; the defaults suit a Lambda. */
export interface ResultsPublisherOptions {
  /** SendMessageBatch calls in flight at once (default 8). */
  concurrency?: number;
  /** Waits before resending the entries a batch call failed (default: jittered exponential backoff). */
  sleep?: (attempt: number) => Promise<void>;
}

/** Sends published records to the results queue in batches of ten, resending partial batch failures. */
export class ResultsPublisher {
  private readonly concurrency: number;
  private readonly sleep: (attempt: number) => Promise<void>;
  /** Messages the queue accepted so far (including ones it then dropped as duplicates). */
  sent = 0;

  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
    options: ResultsPublisherOptions = {},
  ) {
    this.concurrency = Math.max(1, options.concurrency ?? 8);
    this.sleep = options.sleep ?? backoff;
  }

  /**
   * Sends one message per record and waits until the queue has accepted each.
   * Which records still need a message is the caller's to know: the ledger's `delivered` mark (a record is marked
   * after its message was accepted, so a retry resends only the unmarked ones).
   * @throws TransientDependencyError when entries still fail after the resends
   * @throws ResultsQueueRejectedError when the queue rejects an entry as malformed
   */
  async publish(records: readonly PublishedRecord[]): Promise<void> {
    const limiter = new InFlightLimiter(this.concurrency);
    for (let start = 0; start < records.length; start += SQS_BATCH) {
      const batch = records.slice(start, start + SQS_BATCH);
      await limiter.add(() => this.sendBatch(batch));
    }
    await limiter.drain();
  }

  private async sendBatch(records: readonly PublishedRecord[]): Promise<void> {
    let pending = records.map((r, i) => ({
      Id: `r${i}`,
      // The ledger scope comes from the run input: any text, so encoded for SQS.
      MessageBody: sqsJsonBody({
        runId: r.runId,
        recordId: r.recordId,
        ledgerScope: r.ledgerScope,
        resultKey: r.resultKey,
        usage: r.usage,
      }),
      MessageGroupId: resultsGroupId(r.ledgerScope, r.recordId),
      MessageDeduplicationId: resultsDedupeId(r.ledgerScope, r.recordId),
    }));
    for (let attempt = 0; pending.length > 0; attempt++) {
      if (attempt >= MAX_ATTEMPTS) {
        throw new TransientDependencyError(
          `results queue: ${pending.length} messages could not be sent to ${this.queueUrl} after ${MAX_ATTEMPTS} attempts`,
        );
      }
      if (attempt > 0) await this.sleep(attempt);
      const out = await callDependency('SQS SendMessageBatch (results)', () =>
        this.client.send(new SendMessageBatchCommand({ QueueUrl: this.queueUrl, Entries: pending })),
      );
      const rejected = (out.Failed ?? []).find((f) => f.SenderFault);
      if (rejected) {
        throw new ResultsQueueRejectedError(
          `results queue rejected a message: ${rejected.Code ?? 'unknown'}: ${rejected.Message ?? ''}`,
        );
      }
      const failed = new Set((out.Failed ?? []).map((f) => f.Id));
      this.sent += pending.length - failed.size;
      pending = pending.filter((p) => failed.has(p.Id));
    }
  }
}

/**
 * The publisher for a function's environment: undefined (results queue off) when `RESULTS_QUEUE_URL` is unset or
 * empty.
 */
export function resultsPublisherFromEnv(
  client: SQSClient,
  env: NodeJS.ProcessEnv = process.env,
): ResultsPublisher | undefined {
  const url = env.RESULTS_QUEUE_URL;
  return url ? new ResultsPublisher(client, url) : undefined;
}

function backoff(attempt: number): Promise<void> {
  return sleep(jitteredBackoffMs(attempt, 100));
}
