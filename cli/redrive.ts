import {
  GetQueueAttributesCommand,
  ListMessageMoveTasksCommand,
  StartMessageMoveTaskCommand,
  type ListMessageMoveTasksResultEntry,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { RedriveOptions, RedriveOutcome } from './backend';
import { BackendError } from './errors';

/**
 * Redrive of the failure lane's dead-letter queue with SQS's native message move task: StartMessageMoveTask from the
 * DLQ to the failure queue, then ListMessageMoveTasks until the task ends. Only one move task can run per source
 * queue, so the most recent task listed for the DLQ is the one started here.
 */

/** Where to move from and to. */
export interface RedriveQueues {
  readonly sqs: SQSClient;
  /** The dead-letter queue (source). */
  readonly dlqUrl: string;
  /** The failure queue (destination). */
  readonly queueUrl: string;
}

/** Time and sleeping. */
export type RedriveClock = NonNullable<RedriveOptions['clock']>;

const realClock: RedriveClock = {
  now: Date.now,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** A queue's ARN and approximate depth. */
async function queueFacts(sqs: SQSClient, url: string): Promise<{ arn: string; depth: number }> {
  const out = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: url,
      AttributeNames: ['QueueArn', 'ApproximateNumberOfMessages'],
    }),
  );
  const arn = out.Attributes?.QueueArn;
  if (!arn) throw new BackendError(`SQS returned no QueueArn for ${url}`);
  return { arn, depth: Number(out.Attributes?.ApproximateNumberOfMessages ?? 0) };
}

/**
 * Starts a message move task from the DLQ to the failure queue and, with `wait`, polls it until it ends or the
 * timeout passes. An empty DLQ starts nothing (status NOTHING_TO_MOVE).
 */
export async function redriveDeadLetters(
  queues: RedriveQueues,
  options: RedriveOptions,
): Promise<RedriveOutcome> {
  const clock = options.clock ?? realClock;
  const [source, destination] = await Promise.all([
    queueFacts(queues.sqs, queues.dlqUrl),
    queueFacts(queues.sqs, queues.queueUrl),
  ]);
  const base = { sourceArn: source.arn, destinationArn: destination.arn, waiting: source.depth };
  if (source.depth === 0) {
    return { ...base, status: 'NOTHING_TO_MOVE', moved: 0, toMove: 0, stillRunning: false };
  }
  const started = await queues.sqs.send(
    new StartMessageMoveTaskCommand({
      SourceArn: source.arn,
      // Explicit: Plan's bad lines were sent to the DLQ directly and have no "original source" to go back to.
      DestinationArn: destination.arn,
      ...(options.maxPerSecond !== undefined ? { MaxNumberOfMessagesPerSecond: options.maxPerSecond } : {}),
    }),
  );
  const taskHandle = started.TaskHandle;
  let outcome: RedriveOutcome = {
    ...base,
    status: 'RUNNING',
    ...(taskHandle ? { taskHandle } : {}),
    moved: 0,
    stillRunning: true,
  };
  if (!options.wait) return outcome;
  const deadline = clock.now() + options.timeoutMs;
  for (;;) {
    const task = await latestTask(queues.sqs, source.arn);
    if (task) outcome = outcomeOf(base, task, taskHandle);
    options.onProgress?.(outcome);
    if (!outcome.stillRunning) return outcome;
    if (clock.now() >= deadline) return outcome;
    await clock.sleep(options.pollIntervalMs);
  }
}

async function latestTask(
  sqs: SQSClient,
  sourceArn: string,
): Promise<ListMessageMoveTasksResultEntry | undefined> {
  const out = await sqs.send(new ListMessageMoveTasksCommand({ SourceArn: sourceArn, MaxResults: 1 }));
  return out.Results?.[0];
}

function outcomeOf(
  base: { sourceArn: string; destinationArn: string; waiting: number },
  task: ListMessageMoveTasksResultEntry,
  taskHandle: string | undefined,
): RedriveOutcome {
  const status = task.Status ?? 'RUNNING';
  const handle = task.TaskHandle ?? taskHandle;
  return {
    ...base,
    status,
    ...(handle ? { taskHandle: handle } : {}),
    moved: task.ApproximateNumberOfMessagesMoved ?? 0,
    ...(task.ApproximateNumberOfMessagesToMove !== undefined
      ? { toMove: task.ApproximateNumberOfMessagesToMove }
      : {}),
    ...(task.FailureReason ? { failureReason: task.FailureReason } : {}),
    stillRunning: status === 'RUNNING' || status === 'CANCELLING',
  };
}
