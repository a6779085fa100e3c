import { randomUUID } from 'node:crypto';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { FailureLaneMessage } from './contracts';
import { callDependency, TransientDependencyError } from './errors';
import { logger } from './observability';
import { InFlightLimiter } from './pool';
import { sqsAttributeValue, sqsJsonBody } from './sqs-text';
import { jitteredBackoffMs, sleep } from './backoff';

const SQS_BATCH = 10;
/** SQS's message size limit, less room for attributes. */
const MAX_MESSAGE_BYTES = 250 * 1024;
/** SendMessageBatch's limit on the sum of its messages' sizes (bodies and attributes). */
const MAX_BATCH_BYTES = 256 * 1024;
const MAX_ATTEMPTS = 5;

/** A failure-lane message SQS refused as the sender's fault (SenderFault: resending it would be refused again). */
export interface RefusedMessage {
  /** The message as it was added. */
  message: FailureLaneMessage;
  /** SQS's error code for the entry, e.g. `InvalidMessageContents`. */
  code: string;
  /** SQS's error message for the entry. */
  reason: string;
}

/** Told about a message SQS refused; awaited before {@link FailureLaneSender.flush} returns. */
export type RefusalHandler = (refused: RefusedMessage) => void | Promise<void>;

interface Entry {
  message: FailureLaneMessage;
  /** The body as sent: {@link sqsJsonBody} of the (fitted) message. */
  body: string;
  /** The `errorCode` attribute value. */
  code: string;
  bytes: number;
  onRefused: RefusalHandler | undefined;
}

/**
 * Sends failures to the failure lane: retryable ones to the failure queue (its consumer retries them), the rest
 * straight to the dead-letter queue with their reason (retrying a validation error only burns receives).
 * Batches of at most ten messages and 256 KiB, several batches in flight, entries that failed on SQS's side resent
 * (then TransientDependencyError).
 *
 * Bodies and attributes are encoded so SQS accepts any record content (see sqs-text.ts). Should SQS still refuse an
 * entry as the sender's fault, only that entry is lost: it goes to the `onRefused` handler given with it to
 * {@link add}, or, without one, is returned by the next {@link flush}; the other entries are sent and nothing throws.
 */
export class FailureLaneSender {
  private retryable: Entry[] = [];
  private final: Entry[] = [];
  private readonly pendingBytes = { queue: 0, dlq: 0 };
  private readonly limiter = new InFlightLimiter(8);
  private refusedSinceFlush: RefusedMessage[] = [];
  /** Messages sent to the failure queue and to the DLQ. */
  readonly sent = { queue: 0, dlq: 0 };
  /** Messages SQS refused (sender faults), in all. */
  refused = 0;

  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
    private readonly dlqUrl: string,
  ) {}

  /**
   * Queues one failure for sending.
   * @param onRefused told if SQS refuses this message (awaited before the next flush returns); without it, the
   *   refusal is returned by the next {@link flush}
   */
  async add(message: FailureLaneMessage, onRefused?: RefusalHandler): Promise<void> {
    const toQueue = message.error.retryable === true;
    const body = encodeMessage(message);
    const code = sqsAttributeValue(message.error.code);
    const entry: Entry = { message, body, code, bytes: entryBytes(body, code), onRefused };
    const lane = toQueue ? 'queue' : 'dlq';
    if (this.pendingBytes[lane] + entry.bytes > MAX_BATCH_BYTES) await this.flushOne(toQueue);
    const bucket = toQueue ? this.retryable : this.final;
    bucket.push(entry);
    this.pendingBytes[lane] += entry.bytes;
    if (bucket.length >= SQS_BATCH) await this.flushOne(toQueue);
  }

  /**
   * Sends everything still buffered and waits for every send (and every refusal handler).
   * @returns the messages SQS refused since the previous flush that were added without a refusal handler
   * @throws TransientDependencyError when entries still fail on SQS's side after the resends
   */
  async flush(): Promise<RefusedMessage[]> {
    if (this.retryable.length) await this.flushOne(true);
    if (this.final.length) await this.flushOne(false);
    await this.limiter.drain();
    const refused = this.refusedSinceFlush;
    this.refusedSinceFlush = [];
    return refused;
  }

  private async flushOne(toQueue: boolean): Promise<void> {
    const batch = toQueue ? this.retryable : this.final;
    if (batch.length === 0) return;
    if (toQueue) this.retryable = [];
    else this.final = [];
    this.pendingBytes[toQueue ? 'queue' : 'dlq'] = 0;
    const url = toQueue ? this.queueUrl : this.dlqUrl;
    await this.limiter.add(async () => {
      const refused = await sendBatch(this.client, url, batch);
      const sent = batch.length - refused.length;
      if (toQueue) this.sent.queue += sent;
      else this.sent.dlq += sent;
      this.refused += refused.length;
      for (const { entry, code, reason } of refused) {
        logger.warn('failure lane refused a message', {
          queueUrl: url,
          recordId: entry.message.recordId,
          line: entry.message.line,
          errorCode: entry.message.error.code,
          sqsCode: code,
          sqsMessage: reason,
        });
        const refusal: RefusedMessage = { message: entry.message, code, reason };
        if (entry.onRefused) await entry.onRefused(refusal);
        else this.refusedSinceFlush.push(refusal);
      }
    });
  }
}

/** The size SQS counts for one message: its body and its `errorCode` attribute. */
function entryBytes(body: string, code: string): number {
  return Buffer.byteLength(body) + Buffer.byteLength(`errorCodeString${code}`);
}

/**
 * The message's body. An oversized request body is dropped from the message (the failures file keeps the record's
 * line number).
 */
function encodeMessage(message: FailureLaneMessage): string {
  const body = sqsJsonBody(message);
  if (Buffer.byteLength(body) <= MAX_MESSAGE_BYTES) return body;
  const { modelInput: _dropped, ...rest } = message;
  return sqsJsonBody({
    ...rest,
    error: { ...rest.error, message: `${rest.error.message} (request body omitted: too large for SQS)` },
  });
}

/**
 * Sends one batch, resending the entries that failed on SQS's side.
 * @returns the entries SQS refused as the sender's fault (never resent)
 */
async function sendBatch(
  client: SQSClient,
  queueUrl: string,
  entries: readonly Entry[],
): Promise<{ entry: Entry; code: string; reason: string }[]> {
  const refused: { entry: Entry; code: string; reason: string }[] = [];
  let pending = entries.map((entry) => ({ Id: randomUUID().replace(/-/g, ''), entry }));
  for (let attempt = 0; pending.length > 0; attempt++) {
    if (attempt >= MAX_ATTEMPTS) {
      throw new TransientDependencyError(
        `failure lane: ${pending.length} messages could not be sent to ${queueUrl}`,
      );
    }
    if (attempt > 0) await sleep(jitteredBackoffMs(attempt, 100));
    const out = await callDependency('SQS SendMessageBatch', () =>
      client.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: pending.map(({ Id, entry }) => ({
            Id,
            MessageBody: entry.body,
            MessageAttributes: { errorCode: { DataType: 'String', StringValue: entry.code } },
          })),
        }),
      ),
    );
    const retry = new Set<string>();
    const senderFaults = new Map<string, { code: string; reason: string }>();
    for (const f of out.Failed ?? []) {
      if (!f.Id) continue;
      if (f.SenderFault) senderFaults.set(f.Id, { code: f.Code ?? 'Unknown', reason: f.Message ?? '' });
      else retry.add(f.Id);
    }
    for (const p of pending) {
      const fault = senderFaults.get(p.Id);
      if (fault) refused.push({ entry: p.entry, ...fault });
    }
    pending = pending.filter((p) => retry.has(p.Id));
  }
  return refused;
}
