import { randomUUID } from 'node:crypto';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { FailureLaneMessage } from './contracts';
import { callDependency, TransientDependencyError } from './errors';
import { InFlightLimiter } from './pool';

const SQS_BATCH = 10;
/** SQS's message size limit, less room for attributes. */
const MAX_MESSAGE_BYTES = 250 * 1024;
/** SendMessageBatch's limit on the sum of its messages' sizes (bodies and attributes). */
const MAX_BATCH_BYTES = 256 * 1024;

/**
 * Sends failures to the failure lane: retryable ones to the failure queue (its consumer retries them), the rest
 * straight to the dead-letter queue with their reason (retrying a validation error only burns receives).
 * Batches of at most ten messages and 256 KiB, several batches in flight, partial batch failures resent.
 */
export class FailureLaneSender {
  private retryable: FailureLaneMessage[] = [];
  private final: FailureLaneMessage[] = [];
  private readonly pendingBytes = { queue: 0, dlq: 0 };
  private readonly limiter = new InFlightLimiter(8);
  /** Messages sent to the failure queue and to the DLQ. */
  readonly sent = { queue: 0, dlq: 0 };

  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
    private readonly dlqUrl: string,
  ) {}

  /** Queues one failure for sending. */
  async add(message: FailureLaneMessage): Promise<void> {
    const toQueue = message.error.retryable === true;
    const fitted = fitMessage(message);
    const size = entryBytes(fitted);
    const lane = toQueue ? 'queue' : 'dlq';
    if (this.pendingBytes[lane] + size > MAX_BATCH_BYTES) await this.flushOne(toQueue);
    const bucket = toQueue ? this.retryable : this.final;
    bucket.push(fitted);
    this.pendingBytes[lane] += size;
    if (bucket.length >= SQS_BATCH) await this.flushOne(toQueue);
  }

  /** Sends everything still buffered and waits for every send. */
  async flush(): Promise<void> {
    if (this.retryable.length) await this.flushOne(true);
    if (this.final.length) await this.flushOne(false);
    await this.limiter.drain();
  }

  private async flushOne(toQueue: boolean): Promise<void> {
    const batch = toQueue ? this.retryable : this.final;
    if (batch.length === 0) return;
    if (toQueue) this.retryable = [];
    else this.final = [];
    this.pendingBytes[toQueue ? 'queue' : 'dlq'] = 0;
    const url = toQueue ? this.queueUrl : this.dlqUrl;
    await this.limiter.add(async () => {
      await sendBatch(this.client, url, batch);
      if (toQueue) this.sent.queue += batch.length;
      else this.sent.dlq += batch.length;
    });
  }
}

/** The size SQS counts for one message: its body and its `errorCode` attribute. */
function entryBytes(message: FailureLaneMessage): number {
  return (
    Buffer.byteLength(JSON.stringify(message)) + Buffer.byteLength(`errorCodeString${message.error.code}`)
  );
}

/** An oversized request body is dropped from the message (the failures file keeps the record's line number). */
function fitMessage(message: FailureLaneMessage): FailureLaneMessage {
  if (Buffer.byteLength(JSON.stringify(message)) <= MAX_MESSAGE_BYTES) return message;
  const { modelInput: _dropped, ...rest } = message;
  return {
    ...rest,
    error: { ...rest.error, message: `${rest.error.message} (request body omitted: too large for SQS)` },
  };
}

async function sendBatch(client: SQSClient, queueUrl: string, messages: FailureLaneMessage[]): Promise<void> {
  let pending = messages.map((m) => ({
    Id: randomUUID().replace(/-/g, ''),
    MessageBody: JSON.stringify(m),
    code: m.error.code,
  }));
  for (let attempt = 0; pending.length > 0; attempt++) {
    if (attempt >= 5) {
      throw new TransientDependencyError(
        `failure lane: ${pending.length} messages could not be sent to ${queueUrl}`,
      );
    }
    if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * 100 * 2 ** attempt));
    const out = await callDependency('SQS SendMessageBatch', () =>
      client.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: pending.map(({ Id, MessageBody, code }) => ({
            Id,
            MessageBody,
            MessageAttributes: { errorCode: { DataType: 'String', StringValue: code } },
          })),
        }),
      ),
    );
    const failed = new Set((out.Failed ?? []).filter((f) => !f.SenderFault).map((f) => f.Id));
    const senderFault = (out.Failed ?? []).find((f) => f.SenderFault);
    if (senderFault)
      throw new Error(`failure lane rejected a message: ${senderFault.Code}: ${senderFault.Message}`);
    pending = pending.filter((p) => failed.has(p.Id));
  }
}
