/**
 * Lambda's SQS event source mappings, run locally: for each enabled AWS::Lambda::EventSourceMapping on an SQS queue,
 * long-poll the queue, hand batches to the function in the real SQS event shape, and delete what the function
 * processed, as the Lambda pollers do:
 *
 * - without `ReportBatchItemFailures`: the whole batch is deleted when the function returns, nothing when it throws;
 * - with it: everything but the `batchItemFailures` item identifiers is deleted; a thrown error, or a response naming
 *   an empty, null or unknown identifier, fails the whole batch (nothing deleted).
 *
 * Messages not deleted come back after the queue's visibility timeout; the emulator's RedrivePolicy moves a message
 * to the DLQ on the receive after maxReceiveCount (fauxqs 1.9.2 does this itself). Not emulated: FilterCriteria,
 * the 6 MB batch payload cap, scaling ramp-up and the poller's back-off after function errors.
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  type Message,
  type SQSClient,
} from '@aws-sdk/client-sqs';

import type { EventSourceMappingDescription } from './template';

/** The part of an event source mapping the pollers read (an {@link EventSourceMappingDescription} fits). */
export type SqsEventSourceMapping = Pick<
  EventSourceMappingDescription,
  | 'uuid'
  | 'eventSourceArn'
  | 'functionName'
  | 'functionArn'
  | 'batchSize'
  | 'maximumBatchingWindowInSeconds'
  | 'functionResponseTypes'
  | 'enabled'
  | 'maximumConcurrency'
>;

/** A message attribute as Lambda's SQS event carries it. */
export interface SqsEventMessageAttribute {
  stringValue?: string;
  /** Base64. */
  binaryValue?: string;
  stringListValues: string[];
  binaryListValues: string[];
  dataType: string;
}

/** One record of an SQS event (`aws-lambda`'s SQSRecord). */
export interface SqsEventRecord {
  messageId: string;
  receiptHandle: string;
  body: string;
  /** ApproximateReceiveCount, SentTimestamp, SenderId, ApproximateFirstReceiveTimestamp (+ FIFO fields). */
  attributes: Record<string, string>;
  messageAttributes: Record<string, SqsEventMessageAttribute>;
  md5OfBody: string;
  md5OfMessageAttributes?: string;
  eventSource: 'aws:sqs';
  eventSourceARN: string;
  awsRegion: string;
}

/** The event an SQS event source mapping invokes its function with. */
export interface SqsEvent {
  Records: SqsEventRecord[];
}

/** Options of {@link startEventSourcePollers}. */
export interface EventSourcePollerOptions {
  /** A client of the SQS endpoint the queues live on. */
  sqs: SQSClient;
  /** Invokes the mapping's function (by name or ARN) synchronously; throws when the invocation fails. */
  invoke: (functionArn: string, event: SqsEvent, mapping: SqsEventSourceMapping) => Promise<unknown>;
  /** Region for records whose queue ARN names none. */
  region: string;
  /** Account id of queues addressed by name (GetQueueUrl's QueueOwnerAWSAccountId). */
  account: string;
  /** The queue URL of a queue ARN. @default GetQueueUrl with the ARN's queue name */
  resolveQueueUrl?: (queueArn: string) => string | undefined;
  /**
   * Fault `redeliver`: after a successful invocation, the first delivery of each message is not deleted, so it
   * comes back as a lapsed visibility timeout would bring it back; the function sees it twice.
   */
  redeliver?: boolean;
  /**
   * With `redeliver`: make the kept message visible again this many ms after the invocation (ChangeMessageVisibility
   * to 0) instead of waiting for the queue's visibility timeout. @default the queue's visibility timeout
   */
  redeliverAfterMs?: number;
  /**
   * Make messages a failed invocation left (all of a thrown batch, the batchItemFailures of a partial one) visible
   * again this many ms later (ChangeMessageVisibility to 0) instead of after the queue's visibility timeout, so that
   * retries and maxReceiveCount play out in seconds locally. @default the queue's visibility timeout
   */
  retryAfterMs?: number;
  /** Long-poll wait of each ReceiveMessage; stop() waits for the polls in progress. @default 1 */
  waitTimeSeconds?: number;
  /** Concurrent batches per mapping without ScalingConfig.MaximumConcurrency. @default 2 */
  defaultConcurrency?: number;
  /** Receives failed SQS calls (receive, delete, visibility changes). @default console.error */
  onError?: (error: unknown, mapping: SqsEventSourceMapping) => void;
  /** Receives each failed invocation (the batch stays on the queue). @default ignored (counted in stats) */
  onInvokeError?: (error: unknown, mapping: SqsEventSourceMapping, event: SqsEvent) => void;
}

/** Counters of one mapping. */
export interface EventSourcePollerStats {
  uuid: string;
  functionName: string;
  eventSourceArn: string;
  /** Invocations made. */
  batches: number;
  /** Messages handed to the function (a redelivered message counts each time). */
  messages: number;
  /** Invocations that threw (their batches were left on the queue). */
  failedInvocations: number;
  /** Messages named in batchItemFailures, or whole batches the response failed (left on the queue). */
  failedItems: number;
  /** Messages deleted after processing. */
  deleted: number;
  /** Messages kept for a second delivery by the `redeliver` fault. */
  redelivered: number;
}

/** The running pollers. */
export interface EventSourcePollers {
  /** Per-mapping counters. */
  stats(): EventSourcePollerStats[];
  /**
   * Stops polling; waits for the polls and invocations in progress, their deletes, and makes messages held back by
   * `redeliver` visible again.
   */
  stop(): Promise<void>;
}

/** An event source mapping the pollers cannot run. */
export class EventSourceMappingError extends Error {
  override readonly name = 'EventSourceMappingError';
}

const MAX_RECEIVE = 10;
const ERROR_BACKOFF_MS = 1000;

/**
 * Starts pollers for the enabled mappings whose source is an SQS queue (others are ignored): each mapping runs
 * `ScalingConfig.MaximumConcurrency` (else `defaultConcurrency`, 2) batches at once. Resolves once every queue URL
 * is known; a missing queue rejects.
 */
export async function startEventSourcePollers(
  mappings: readonly SqsEventSourceMapping[],
  options: EventSourcePollerOptions,
): Promise<EventSourcePollers> {
  const active = mappings.filter(
    (mapping) => mapping.enabled && mapping.eventSourceArn.startsWith('arn:aws:sqs:'),
  );
  const pollers = await Promise.all(
    active.map(async (mapping) => new MappingPoller(mapping, await queueUrlOf(mapping, options), options)),
  );
  for (const poller of pollers) poller.start();
  let stopped: Promise<void> | undefined;
  return {
    stats: () => pollers.map((poller) => ({ ...poller.stats })),
    stop: () => (stopped ??= Promise.all(pollers.map((poller) => poller.stop())).then(() => undefined)),
  };
}

async function queueUrlOf(
  mapping: SqsEventSourceMapping,
  options: EventSourcePollerOptions,
): Promise<string> {
  const known = options.resolveQueueUrl?.(mapping.eventSourceArn);
  if (known !== undefined) return known;
  const [, , , , account, queueName] = mapping.eventSourceArn.split(':');
  if (!queueName) throw new EventSourceMappingError(`not an SQS queue ARN: ${mapping.eventSourceArn}`);
  try {
    const { QueueUrl } = await options.sqs.send(
      new GetQueueUrlCommand({ QueueName: queueName, QueueOwnerAWSAccountId: account || options.account }),
    );
    if (!QueueUrl) throw new EventSourceMappingError(`GetQueueUrl returned no URL for ${queueName}`);
    return QueueUrl;
  } catch (error) {
    throw new EventSourceMappingError(
      `event source mapping ${mapping.uuid}: cannot find queue ${mapping.eventSourceArn} for ${mapping.functionName}`,
      { cause: error },
    );
  }
}

/** The item identifiers a ReportBatchItemFailures response names, or 'all' when it fails the whole batch. */
export function batchItemFailures(response: unknown, messageIds: ReadonlySet<string>): Set<string> | 'all' {
  if (response === null || response === undefined || typeof response !== 'object') return new Set();
  const failures = (response as { batchItemFailures?: unknown }).batchItemFailures;
  if (failures === null || failures === undefined) return new Set();
  if (!Array.isArray(failures)) return 'all';
  const ids = new Set<string>();
  for (const failure of failures) {
    const id = (failure as { itemIdentifier?: unknown } | null)?.itemIdentifier;
    if (typeof id !== 'string' || id === '' || !messageIds.has(id)) return 'all';
    ids.add(id);
  }
  return ids;
}

/** The SQS event Lambda builds for a batch of received messages. */
export function toSqsEvent(
  messages: readonly Message[],
  eventSourceArn: string,
  defaultRegion: string,
): SqsEvent {
  const awsRegion = eventSourceArn.split(':')[3] || defaultRegion;
  return {
    Records: messages.map((message) => ({
      messageId: message.MessageId ?? '',
      receiptHandle: message.ReceiptHandle ?? '',
      body: message.Body ?? '',
      attributes: { ...message.Attributes },
      messageAttributes: Object.fromEntries(
        Object.entries(message.MessageAttributes ?? {}).map(([name, value]) => [
          name,
          {
            ...(value.StringValue !== undefined ? { stringValue: value.StringValue } : {}),
            ...(value.BinaryValue !== undefined
              ? { binaryValue: Buffer.from(value.BinaryValue).toString('base64') }
              : {}),
            stringListValues: value.StringListValues ?? [],
            binaryListValues: (value.BinaryListValues ?? []).map((item) =>
              Buffer.from(item).toString('base64'),
            ),
            dataType: value.DataType ?? 'String',
          },
        ]),
      ),
      md5OfBody: message.MD5OfBody ?? '',
      ...(message.MD5OfMessageAttributes ? { md5OfMessageAttributes: message.MD5OfMessageAttributes } : {}),
      eventSource: 'aws:sqs' as const,
      eventSourceARN: eventSourceArn,
      awsRegion,
    })),
  };
}

function handlesOf(messages: readonly Message[]): string[] {
  return messages.map((message) => message.ReceiptHandle ?? '');
}

/** The pollers of one mapping. */
class MappingPoller {
  readonly stats: EventSourcePollerStats;
  private stopping = false;
  private loops: Promise<void>[] = [];
  /** Messages the `redeliver` fault already held back once. */
  private readonly heldBack = new Set<string>();
  /** Pending retryAfterMs / redeliverAfterMs timers and the receipt handles they will make visible. */
  private readonly releases = new Map<NodeJS.Timeout, string[]>();
  private readonly releasing = new Set<Promise<void>>();
  /** Ends the back-off pauses in progress (at stop). */
  private readonly sleepers = new Set<() => void>();

  constructor(
    private readonly mapping: SqsEventSourceMapping,
    private readonly queueUrl: string,
    private readonly options: EventSourcePollerOptions,
  ) {
    this.stats = {
      uuid: mapping.uuid,
      functionName: mapping.functionName,
      eventSourceArn: mapping.eventSourceArn,
      batches: 0,
      messages: 0,
      failedInvocations: 0,
      failedItems: 0,
      deleted: 0,
      redelivered: 0,
    };
  }

  start(): void {
    const concurrency = Math.max(1, this.mapping.maximumConcurrency ?? this.options.defaultConcurrency ?? 2);
    this.loops = Array.from({ length: concurrency }, () => this.loop());
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const wake of [...this.sleepers]) wake();
    await Promise.all(this.loops);
    const pending = [...this.releases];
    this.releases.clear();
    for (const [timer] of pending) clearTimeout(timer);
    await Promise.all([...this.releasing, ...pending.map(([, handles]) => this.release(handles))]);
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      let messages: Message[];
      try {
        messages = await this.collectBatch();
      } catch (error) {
        this.reportError(error);
        await this.pause(ERROR_BACKOFF_MS);
        continue;
      }
      if (messages.length > 0) await this.process(messages);
    }
  }

  /** Receives up to BatchSize messages, waiting up to MaximumBatchingWindowInSeconds after the first for more. */
  private async collectBatch(): Promise<Message[]> {
    const { batchSize, maximumBatchingWindowInSeconds: window } = this.mapping;
    const messages = await this.receive(Math.min(MAX_RECEIVE, batchSize), this.options.waitTimeSeconds ?? 1);
    if (messages.length === 0 || window <= 0) return messages;
    const deadline = Date.now() + window * 1000;
    while (!this.stopping && messages.length < batchSize && Date.now() < deadline) {
      const waitSeconds = Math.min(20, Math.ceil((deadline - Date.now()) / 1000));
      messages.push(...(await this.receive(Math.min(MAX_RECEIVE, batchSize - messages.length), waitSeconds)));
    }
    return messages;
  }

  private async receive(max: number, waitTimeSeconds: number): Promise<Message[]> {
    const received = await this.options.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: this.queueUrl,
        MaxNumberOfMessages: max,
        WaitTimeSeconds: waitTimeSeconds,
        MessageSystemAttributeNames: ['All'],
        MessageAttributeNames: ['All'],
      }),
    );
    return received.Messages ?? [];
  }

  private async process(messages: Message[]): Promise<void> {
    const event = toSqsEvent(messages, this.mapping.eventSourceArn, this.options.region);
    this.stats.batches += 1;
    this.stats.messages += messages.length;
    let response: unknown;
    try {
      response = await this.options.invoke(this.mapping.functionArn, event, this.mapping);
    } catch (error) {
      // The whole batch stays on the queue and comes back after the visibility timeout.
      this.stats.failedInvocations += 1;
      this.options.onInvokeError?.(error, this.mapping, event);
      this.scheduleRelease(handlesOf(messages), this.options.retryAfterMs);
      return;
    }
    let done = messages;
    if (this.mapping.functionResponseTypes.includes('ReportBatchItemFailures')) {
      const failed = batchItemFailures(response, new Set(messages.map((message) => message.MessageId ?? '')));
      done = failed === 'all' ? [] : messages.filter((message) => !failed.has(message.MessageId ?? ''));
      this.stats.failedItems += messages.length - done.length;
      this.scheduleRelease(
        handlesOf(messages.filter((message) => !done.includes(message))),
        this.options.retryAfterMs,
      );
    }
    if (this.options.redeliver) {
      const firstDeliveries = done.filter((message) => !this.heldBack.has(message.MessageId ?? ''));
      for (const message of firstDeliveries) this.heldBack.add(message.MessageId ?? '');
      this.stats.redelivered += firstDeliveries.length;
      done = done.filter((message) => !firstDeliveries.includes(message));
      this.scheduleRelease(handlesOf(firstDeliveries), this.options.redeliverAfterMs);
    }
    await this.delete(done);
  }

  private async delete(messages: Message[]): Promise<void> {
    for (let start = 0; start < messages.length; start += MAX_RECEIVE) {
      const chunk = messages.slice(start, start + MAX_RECEIVE);
      try {
        const result = await this.options.sqs.send(
          new DeleteMessageBatchCommand({
            QueueUrl: this.queueUrl,
            Entries: chunk.map((message, index) => ({
              Id: String(index),
              ReceiptHandle: message.ReceiptHandle!,
            })),
          }),
        );
        this.stats.deleted += result.Successful?.length ?? 0;
        for (const failure of result.Failed ?? []) {
          this.reportError(
            new EventSourceMappingError(
              `deleting message ${chunk[Number(failure.Id)]?.MessageId} from ${this.queueUrl} failed: ` +
                `${failure.Code} ${failure.Message ?? ''} (it will be delivered again)`,
            ),
          );
        }
      } catch (error) {
        this.reportError(error);
      }
    }
  }

  /** Makes messages left on the queue visible again after `delay` ms (none: the queue's visibility timeout). */
  private scheduleRelease(receiptHandles: string[], delay: number | undefined): void {
    if (receiptHandles.length === 0 || delay === undefined) return;
    const timer = setTimeout(() => {
      this.releases.delete(timer);
      const releasing = this.release(receiptHandles).finally(() => this.releasing.delete(releasing));
      this.releasing.add(releasing);
    }, delay);
    this.releases.set(timer, receiptHandles);
  }

  private async release(receiptHandles: string[]): Promise<void> {
    for (let start = 0; start < receiptHandles.length; start += MAX_RECEIVE) {
      try {
        await this.options.sqs.send(
          new ChangeMessageVisibilityBatchCommand({
            QueueUrl: this.queueUrl,
            Entries: receiptHandles.slice(start, start + MAX_RECEIVE).map((handle, index) => ({
              Id: String(index),
              ReceiptHandle: handle,
              VisibilityTimeout: 0,
            })),
          }),
        );
      } catch (error) {
        this.reportError(error);
      }
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.sleepers.add(done);
    });
  }

  private reportError(error: unknown): void {
    if (this.options.onError) this.options.onError(error, this.mapping);
    else console.error(`[local event source ${this.mapping.uuid} -> ${this.mapping.functionName}]`, error);
  }
}
