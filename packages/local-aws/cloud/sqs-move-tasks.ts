/**
 * SQS message move tasks (the service's native DLQ redrive: StartMessageMoveTask, ListMessageMoveTasks,
 * CancelMessageMoveTask) and ListDeadLetterSourceQueues, none of which fauxqs 1.9.2 has.
 *
 * The service talks to the SQS emulator through an ordinary SDK client (ListQueues, GetQueueAttributes,
 * ReceiveMessage, SendMessageBatch, DeleteMessageBatch), so it runs against any SQS endpoint; the emulator answers
 * the four operations on its own port by calling {@link SqsMoveTaskService.handle} (see emulators.ts).
 */
import { randomUUID } from 'node:crypto';

import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ListQueuesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type Message,
  type MessageAttributeValue,
  type SQSClient,
} from '@aws-sdk/client-sqs';

/** The operations {@link SqsMoveTaskService.handle} answers (`X-Amz-Target: AmazonSQS.<operation>`). */
export const SQS_MOVE_TASK_OPERATIONS: ReadonlySet<string> = new Set([
  'StartMessageMoveTask',
  'ListMessageMoveTasks',
  'CancelMessageMoveTask',
  'ListDeadLetterSourceQueues',
]);

/** A move task's status, as ListMessageMoveTasks reports it. */
export type MessageMoveTaskStatus = 'RUNNING' | 'COMPLETED' | 'CANCELLING' | 'CANCELLED' | 'FAILED';

/** One entry of ListMessageMoveTasks' `Results`. */
export interface MessageMoveTaskEntry {
  /** Only present while the task is RUNNING, as in the service. */
  TaskHandle?: string;
  Status: MessageMoveTaskStatus;
  SourceArn: string;
  /** Only present when the task was started with one. */
  DestinationArn?: string;
  MaxNumberOfMessagesPerSecond?: number;
  ApproximateNumberOfMessagesMoved: number;
  ApproximateNumberOfMessagesToMove: number;
  /** Why the task FAILED. */
  FailureReason?: string;
  /** Epoch milliseconds. */
  StartedTimestamp: number;
}

/**
 * The legacy query codes SQS sends in `x-amzn-query-error` where they differ from the error shape (from the SDK's
 * model); the SDK names the error after this code.
 */
const QUERY_ERROR_CODES: Readonly<Record<string, string>> = {
  UnsupportedOperation: 'AWS.SimpleQueueService.UnsupportedOperation',
  QueueDoesNotExist: 'AWS.SimpleQueueService.NonExistentQueue',
};

/** HTTP statuses of the error shapes that are not 400. */
const ERROR_STATUSES: Readonly<Record<string, number>> = {
  ResourceNotFoundException: 404,
  InternalError: 500,
};

/** A request refused the way the service refuses it (an SQS error shape, a message, an HTTP status). */
export class SqsMoveTaskError extends Error {
  override readonly name = 'SqsMoveTaskError';
  /** The HTTP status. */
  readonly status: number;

  /**
   * @param code the SQS error shape (`err.name` in the SDK), e.g. `ResourceNotFoundException`
   * @param message what is wrong, for a person
   */
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.status = ERROR_STATUSES[code] ?? 400;
  }

  /** The `x-amzn-query-error` header value (the legacy query code and the fault side). */
  get queryErrorHeader(): string {
    return `${QUERY_ERROR_CODES[this.code] ?? this.code};${this.status < 500 ? 'Sender' : 'Receiver'}`;
  }

  /** The awsJson1_0 error body. */
  toJSON(): { __type: string; message: string } {
    return { __type: `com.amazonaws.sqs#${this.code}`, message: this.message };
  }
}

/** Options of {@link SqsMoveTaskService}. */
export interface SqsMoveTaskServiceOptions {
  /** A client of the SQS endpoint whose queues the tasks move (a function: the endpoint may be known later). */
  client: SQSClient | (() => SQSClient);
  /**
   * The ARN of the queue a message in a DLQ was moved from (the service's `DeadLetterQueueSourceArn`), given the
   * DLQ's URL and the receipt handle of a receive. Used when a task has no DestinationArn and the DLQ serves several
   * source queues; without it (or when it returns undefined) such a task can only move to a DLQ's single source.
   */
  originOf?: (deadLetterQueueUrl: string, receiptHandle: string) => string | undefined;
  /** Receives the error that ended a task in FAILED (also in its FailureReason). @default console.error */
  onTaskError?: (error: unknown, task: MessageMoveTaskEntry) => void;
  /** How many finished tasks per source queue are kept for ListMessageMoveTasks. @default 10 */
  keepPerSource?: number;
}

/** A queue as the service sees it. */
interface QueueInfo {
  url: string;
  arn: string;
  fifo: boolean;
  deadLetterTargetArn: string | undefined;
  visibleMessages: number;
}

interface Task {
  id: string;
  handle: string;
  entry: MessageMoveTaskEntry;
  cancelRequested: boolean;
  done: Promise<void>;
}

const MOVE_VISIBILITY_TIMEOUT_SECONDS = 60;

/** Runs message move tasks against an SQS endpoint and answers the move-task operations. */
export class SqsMoveTaskService {
  private readonly tasks = new Map<string, Task>();
  private readonly client: () => SQSClient;
  private readonly keepPerSource: number;

  constructor(private readonly options: SqsMoveTaskServiceOptions) {
    const { client } = options;
    this.client = typeof client === 'function' ? client : () => client;
    this.keepPerSource = options.keepPerSource ?? 10;
  }

  /**
   * Answers one operation of {@link SQS_MOVE_TASK_OPERATIONS} with its awsJson1_0 response payload; throws
   * {@link SqsMoveTaskError} for a request the service would refuse.
   */
  async handle(operation: string, body: unknown): Promise<unknown> {
    const input = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
    switch (operation) {
      case 'StartMessageMoveTask':
        return this.start({
          SourceArn: requiredString(input, 'SourceArn'),
          ...optionalField(input, 'DestinationArn', 'string'),
          ...optionalField(input, 'MaxNumberOfMessagesPerSecond', 'number'),
        });
      case 'ListMessageMoveTasks':
        return this.list({
          SourceArn: requiredString(input, 'SourceArn'),
          ...optionalField(input, 'MaxResults', 'number'),
        });
      case 'CancelMessageMoveTask':
        return this.cancel({ TaskHandle: requiredString(input, 'TaskHandle') });
      case 'ListDeadLetterSourceQueues':
        return this.listDeadLetterSourceQueues({ QueueUrl: requiredString(input, 'QueueUrl') });
      default:
        throw new SqsMoveTaskError('InvalidAction', `Unknown action: ${operation}`);
    }
  }

  /** StartMessageMoveTask: validates like the service, starts moving in the background, returns the handle. */
  async start(input: {
    SourceArn: string;
    DestinationArn?: string;
    MaxNumberOfMessagesPerSecond?: number;
  }): Promise<{ TaskHandle: string }> {
    const rate = input.MaxNumberOfMessagesPerSecond;
    if (rate !== undefined && !(Number.isInteger(rate) && rate >= 1 && rate <= 500)) {
      throw new SqsMoveTaskError(
        'InvalidParameterValue',
        `Value ${rate} for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: Must be an integer from 1 to 500.`,
      );
    }
    const queues = await this.queues();
    const source = queues.find((queue) => queue.arn === input.SourceArn);
    if (!source) {
      throw new SqsMoveTaskError(
        'ResourceNotFoundException',
        `The resource that you specified for the SourceArn parameter doesn't exist: ${input.SourceArn}`,
      );
    }
    const sources = queues.filter((queue) => queue.deadLetterTargetArn === source.arn);
    if (sources.length === 0) {
      throw new SqsMoveTaskError(
        'InvalidParameterValue',
        `Source queue ${source.arn} is not a dead-letter queue: no queue's RedrivePolicy names it as ` +
          'deadLetterTargetArn. A message move task can only redrive a dead-letter queue.',
      );
    }
    if (source.fifo) {
      throw new SqsMoveTaskError(
        'UnsupportedOperation',
        `Source queue ${source.arn} is a FIFO queue; the local move task only redrives standard queues.`,
      );
    }
    let destination: QueueInfo | undefined;
    if (input.DestinationArn !== undefined) {
      destination = queues.find((queue) => queue.arn === input.DestinationArn);
      if (!destination) {
        throw new SqsMoveTaskError(
          'ResourceNotFoundException',
          `The resource that you specified for the DestinationArn parameter doesn't exist: ${input.DestinationArn}`,
        );
      }
      if (destination.arn === source.arn) {
        throw new SqsMoveTaskError(
          'InvalidParameterValue',
          'The DestinationArn must be a different queue than the SourceArn.',
        );
      }
    }
    const running = [...this.tasks.values()].find(
      (task) =>
        task.entry.SourceArn === source.arn &&
        (task.entry.Status === 'RUNNING' || task.entry.Status === 'CANCELLING'),
    );
    if (running) {
      throw new SqsMoveTaskError(
        'UnsupportedOperation',
        `A message move task is already running for ${source.arn}; only one active task per queue is supported.`,
      );
    }
    const id = randomUUID();
    const handle = Buffer.from(JSON.stringify({ taskId: id, sourceArn: source.arn })).toString('base64');
    const entry: MessageMoveTaskEntry = {
      Status: 'RUNNING',
      SourceArn: source.arn,
      ...(destination ? { DestinationArn: destination.arn } : {}),
      ...(rate !== undefined ? { MaxNumberOfMessagesPerSecond: rate } : {}),
      ApproximateNumberOfMessagesMoved: 0,
      ApproximateNumberOfMessagesToMove: source.visibleMessages,
      StartedTimestamp: Date.now(),
    };
    const task: Task = { id, handle, entry, cancelRequested: false, done: Promise.resolve() };
    this.tasks.set(id, task);
    task.done = this.run(task, { source, destination, sources, queues }).catch((error: unknown) => {
      entry.Status = 'FAILED';
      entry.FailureReason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      (this.options.onTaskError ?? defaultTaskError)(error, { ...entry });
    });
    this.prune(source.arn);
    return { TaskHandle: handle };
  }

  /** ListMessageMoveTasks: the most recent tasks of a source queue (at most MaxResults, 1..10), newest first. */
  async list(input: {
    SourceArn: string;
    MaxResults?: number;
  }): Promise<{ Results: MessageMoveTaskEntry[] }> {
    const max = input.MaxResults ?? 1;
    if (!(Number.isInteger(max) && max >= 1 && max <= 10)) {
      throw new SqsMoveTaskError(
        'InvalidParameterValue',
        `Value ${max} for parameter MaxResults is invalid. Reason: Must be an integer from 1 to 10.`,
      );
    }
    const queues = await this.queues();
    if (!queues.some((queue) => queue.arn === input.SourceArn)) {
      throw new SqsMoveTaskError(
        'ResourceNotFoundException',
        `The resource that you specified for the SourceArn parameter doesn't exist: ${input.SourceArn}`,
      );
    }
    const results = this.tasksOf(input.SourceArn)
      .slice(0, max)
      .map((task) => ({
        ...(task.entry.Status === 'RUNNING' ? { TaskHandle: task.handle } : {}),
        ...task.entry,
      }));
    return { Results: results };
  }

  /** CancelMessageMoveTask: stops a RUNNING task after its current batch; moved messages stay moved. */
  async cancel(input: { TaskHandle: string }): Promise<{ ApproximateNumberOfMessagesMoved: number }> {
    const task = this.taskOfHandle(input.TaskHandle);
    if (task.entry.Status !== 'RUNNING') {
      throw new SqsMoveTaskError(
        'UnsupportedOperation',
        `The message move task is ${task.entry.Status}; only a RUNNING task can be cancelled.`,
      );
    }
    task.cancelRequested = true;
    task.entry.Status = 'CANCELLING';
    return { ApproximateNumberOfMessagesMoved: task.entry.ApproximateNumberOfMessagesMoved };
  }

  /** ListDeadLetterSourceQueues: the URLs of the queues whose RedrivePolicy names this queue. */
  async listDeadLetterSourceQueues(input: { QueueUrl: string }): Promise<{ queueUrls: string[] }> {
    const queues = await this.queues();
    const dlq = queues.find((queue) => queue.url === input.QueueUrl);
    if (!dlq) {
      throw new SqsMoveTaskError('QueueDoesNotExist', 'The specified queue does not exist.');
    }
    return {
      queueUrls: queues.filter((queue) => queue.deadLetterTargetArn === dlq.arn).map((queue) => queue.url),
    };
  }

  /** Resolves once every task started so far has ended (COMPLETED, CANCELLED or FAILED). */
  async settled(): Promise<void> {
    await Promise.all([...this.tasks.values()].map((task) => task.done));
  }

  /** Cancels running tasks and waits for them to end (messages taken but not yet moved become visible again). */
  async stop(): Promise<void> {
    for (const task of this.tasks.values()) {
      if (task.entry.Status === 'RUNNING') {
        task.cancelRequested = true;
        task.entry.Status = 'CANCELLING';
      }
    }
    await this.settled();
  }

  private async run(
    task: Task,
    queues: {
      source: QueueInfo;
      destination: QueueInfo | undefined;
      sources: QueueInfo[];
      queues: QueueInfo[];
    },
  ): Promise<void> {
    const { entry } = task;
    const { source, destination, sources } = queues;
    const client = this.client();
    const queueUrlByArn = new Map(queues.queues.map((queue) => [queue.arn, queue.url]));
    const rate = entry.MaxNumberOfMessagesPerSecond;
    const startedAt = Date.now();
    while (
      !task.cancelRequested &&
      entry.ApproximateNumberOfMessagesMoved < entry.ApproximateNumberOfMessagesToMove
    ) {
      const wanted = Math.min(
        10,
        rate ?? 10,
        entry.ApproximateNumberOfMessagesToMove - entry.ApproximateNumberOfMessagesMoved,
      );
      const received = await client.send(
        new ReceiveMessageCommand({
          QueueUrl: source.url,
          MaxNumberOfMessages: wanted,
          VisibilityTimeout: MOVE_VISIBILITY_TIMEOUT_SECONDS,
          WaitTimeSeconds: 0,
          MessageAttributeNames: ['All'],
          MessageSystemAttributeNames: ['All'],
        }),
      );
      const messages = received.Messages ?? [];
      if (messages.length === 0) break;
      if (task.cancelRequested) {
        await this.release(source.url, messages);
        break;
      }
      const byDestination = new Map<string, Message[]>();
      const unplaced: Message[] = [];
      for (const message of messages) {
        const target =
          destination?.url ??
          queueUrlByArn.get(this.options.originOf?.(source.url, message.ReceiptHandle ?? '') ?? '') ??
          (sources.length === 1 ? sources[0]!.url : undefined);
        if (target === undefined) unplaced.push(message);
        else byDestination.set(target, [...(byDestination.get(target) ?? []), message]);
      }
      if (unplaced.length > 0) {
        await this.release(source.url, messages);
        throw new SqsMoveTaskError(
          'UnsupportedOperation',
          `cannot tell which of the source queues (${sources.map((queue) => queue.arn).join(', ')}) ` +
            `message ${unplaced[0]!.MessageId} came from; start the task with a DestinationArn`,
        );
      }
      for (const [targetUrl, batch] of byDestination) {
        await this.moveBatch(source.url, targetUrl, batch);
        entry.ApproximateNumberOfMessagesMoved += batch.length;
      }
      if (rate !== undefined) {
        // Paces the task so that moved / elapsed never exceeds the requested rate.
        const due = startedAt + (entry.ApproximateNumberOfMessagesMoved / rate) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    entry.Status = task.cancelRequested ? 'CANCELLED' : 'COMPLETED';
  }

  /** Sends a batch to the destination, then deletes from the source what was sent; a failed send fails the task. */
  private async moveBatch(sourceUrl: string, targetUrl: string, batch: Message[]): Promise<void> {
    const client = this.client();
    const sent = await client.send(
      new SendMessageBatchCommand({
        QueueUrl: targetUrl,
        Entries: batch.map((message, index) => ({
          Id: String(index),
          MessageBody: message.Body ?? '',
          ...(message.MessageAttributes && Object.keys(message.MessageAttributes).length > 0
            ? { MessageAttributes: sendableAttributes(message.MessageAttributes) }
            : {}),
        })),
      }),
    );
    const sentIds = new Set((sent.Successful ?? []).map((result) => result.Id));
    const moved = batch.filter((_message, index) => sentIds.has(String(index)));
    if (moved.length > 0) {
      const deleted = await client.send(
        new DeleteMessageBatchCommand({
          QueueUrl: sourceUrl,
          Entries: moved.map((message, index) => ({
            Id: String(index),
            ReceiptHandle: message.ReceiptHandle!,
          })),
        }),
      );
      const failedDelete = deleted.Failed?.[0];
      if (failedDelete) {
        throw new SqsMoveTaskError(
          'InternalError',
          `a moved message could not be deleted from the source (it may be moved twice): ${failedDelete.Code} ${failedDelete.Message ?? ''}`,
        );
      }
    }
    const failedSend = sent.Failed?.[0];
    if (failedSend) {
      await this.release(
        sourceUrl,
        batch.filter((_message, index) => !sentIds.has(String(index))),
      );
      throw new SqsMoveTaskError(
        'InternalError',
        `sending to ${targetUrl} failed: ${failedSend.Code} ${failedSend.Message ?? ''}`,
      );
    }
  }

  /** Makes received but unmoved messages visible again at once. */
  private async release(queueUrl: string, messages: Message[]): Promise<void> {
    if (messages.length === 0) return;
    await this.client().send(
      new ChangeMessageVisibilityBatchCommand({
        QueueUrl: queueUrl,
        Entries: messages.map((message, index) => ({
          Id: String(index),
          ReceiptHandle: message.ReceiptHandle!,
          VisibilityTimeout: 0,
        })),
      }),
    );
  }

  /** Every queue of the endpoint with what validation needs. */
  private async queues(): Promise<QueueInfo[]> {
    const client = this.client();
    const urls: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await client.send(
        new ListQueuesCommand({ MaxResults: 1000, ...(nextToken ? { NextToken: nextToken } : {}) }),
      );
      urls.push(...(page.QueueUrls ?? []));
      nextToken = page.NextToken;
    } while (nextToken);
    return Promise.all(
      urls.map(async (url) => {
        const { Attributes: attributes = {} } = await client.send(
          new GetQueueAttributesCommand({
            QueueUrl: url,
            AttributeNames: ['QueueArn', 'RedrivePolicy', 'FifoQueue', 'ApproximateNumberOfMessages'],
          }),
        );
        const redrive = attributes.RedrivePolicy
          ? (JSON.parse(attributes.RedrivePolicy) as { deadLetterTargetArn?: string })
          : undefined;
        return {
          url,
          arn: attributes.QueueArn ?? '',
          fifo: attributes.FifoQueue === 'true',
          deadLetterTargetArn: redrive?.deadLetterTargetArn,
          visibleMessages: Number(attributes.ApproximateNumberOfMessages ?? 0),
        };
      }),
    );
  }

  private tasksOf(sourceArn: string): Task[] {
    return [...this.tasks.values()]
      .filter((task) => task.entry.SourceArn === sourceArn)
      .sort((a, b) => b.entry.StartedTimestamp - a.entry.StartedTimestamp);
  }

  private taskOfHandle(handle: string): Task {
    let decoded: unknown;
    try {
      decoded = JSON.parse(Buffer.from(handle, 'base64').toString('utf8'));
    } catch {
      // Not one of ours: answered below exactly like an unknown task.
      decoded = undefined;
    }
    const taskId = (decoded as { taskId?: unknown } | undefined)?.taskId;
    const task = typeof taskId === 'string' ? this.tasks.get(taskId) : undefined;
    if (!task) throw new SqsMoveTaskError('ResourceNotFoundException', `Task does not exist: ${handle}`);
    return task;
  }

  /** Forgets the oldest finished tasks of a source beyond keepPerSource. */
  private prune(sourceArn: string): void {
    const finished = this.tasksOf(sourceArn).filter(
      (task) => task.entry.Status !== 'RUNNING' && task.entry.Status !== 'CANCELLING',
    );
    for (const task of finished.slice(this.keepPerSource)) this.tasks.delete(task.id);
  }
}

function defaultTaskError(error: unknown, task: MessageMoveTaskEntry): void {
  console.error(`[local sqs] message move task from ${task.SourceArn} failed:`, error);
}

/** Received message attributes as SendMessage accepts them (no empty list members). */
function sendableAttributes(
  attributes: Record<string, MessageAttributeValue>,
): Record<string, MessageAttributeValue> {
  return Object.fromEntries(
    Object.entries(attributes).map(([name, value]) => [
      name,
      {
        DataType: value.DataType,
        ...(value.StringValue !== undefined ? { StringValue: value.StringValue } : {}),
        ...(value.BinaryValue !== undefined ? { BinaryValue: value.BinaryValue } : {}),
      },
    ]),
  );
}

function requiredString(input: Record<string, unknown>, field: string): string {
  const value = input[field];
  if (typeof value !== 'string' || value === '') {
    throw new SqsMoveTaskError('MissingParameter', `The request must contain the parameter ${field}.`);
  }
  return value;
}

function optionalField<K extends string, T extends 'string' | 'number'>(
  input: Record<string, unknown>,
  field: K,
  type: T,
): Partial<Record<K, T extends 'string' ? string : number>> {
  const value = input[field];
  if (value === undefined || value === null) return {};
  if (typeof value !== type) {
    throw new SqsMoveTaskError('InvalidParameterValue', `Value for parameter ${field} must be a ${type}.`);
  }
  return { [field]: value } as Partial<Record<K, T extends 'string' ? string : number>>;
}
