import { SendMessageBatchCommand, SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import type { AwsClientStub } from 'aws-sdk-client-mock';
import type { FailureLaneMessage } from '../../../../lambda/shared/contracts';
import { RunState } from '../../../../lambda/shared/run-state';
import { createRunsTable, type LedgerServer } from './lane-fixtures';

/**
 * Fixtures for the tests of the ledger protocol's units (the failure lane, ConverseBatch and Collect): the runs table
 * on dynalite, a recording SQS that behaves like a FIFO results queue, and the fault-point hook the local runtime
 * installs to kill an invocation at a named step.
 */

/** Creates a fresh runs table (`runId` hash, `item` range, as lib/ledger.ts RUNS_TABLE_KEYS) and a RunState on it. */
export async function freshRunState(
  server: LedgerServer,
  name: string,
): Promise<{ table: string; runs: RunState }> {
  await createRunsTable(server, name);
  return { table: name, runs: new RunState(server.doc, name, 30) };
}

/** One item of the runs table, or undefined. */
export async function runsItem(
  server: LedgerServer,
  table: string,
  runId: string,
  item: string,
): Promise<Record<string, unknown> | undefined> {
  const out = await server.doc.send(
    new GetCommand({ TableName: table, Key: { runId, item }, ConsistentRead: true }),
  );
  return out.Item;
}

/** One message the results queue accepted. */
export interface ResultsMessage {
  body: Record<string, unknown>;
  dedupeId: string | undefined;
  groupId: string | undefined;
}

/** One message sent to a failure DLQ. */
export interface DlqMessage {
  body: Record<string, unknown>;
  /** The `errorCode` attribute. */
  code: string | undefined;
  /** The `laneReason` attribute (the consumer's own dead-lettering). */
  reason: string | undefined;
}

/** What the recording SQS saw, per queue. */
export interface Queues {
  /** Every message the results queue accepted, in order (resends included). */
  results: ResultsMessage[];
  /** The failure queue's messages (hand-overs to the failure lane). */
  lane: FailureLaneMessage[];
  /** The DLQ's messages. */
  dlq: DlqMessage[];
  /**
   * What a FIFO queue would deliver: the first message of each deduplication id (all sends in a test fall in one
   * five-minute deduplication window).
   */
  delivered(): ResultsMessage[];
}

/** Queue URLs the recording SQS accepts. */
export interface QueueUrls {
  results: string;
  dlq: string;
  lane?: string;
}

/** Makes a mocked SQS client accept SendMessage and SendMessageBatch for the known queues and record them. */
export function recordQueues(mock: AwsClientStub<SQSClient>, urls: QueueUrls): Queues {
  const queues: Queues = {
    results: [],
    lane: [],
    dlq: [],
    delivered() {
      const seen = new Set<string | undefined>();
      return this.results.filter((m) => {
        if (seen.has(m.dedupeId)) return false;
        seen.add(m.dedupeId);
        return true;
      });
    },
  };
  mock.on(SendMessageBatchCommand).callsFake(
    async (input: {
      QueueUrl: string;
      Entries: {
        Id: string;
        MessageBody: string;
        MessageDeduplicationId?: string;
        MessageGroupId?: string;
        MessageAttributes?: Record<string, { StringValue?: string }>;
      }[];
    }) => {
      for (const e of input.Entries) {
        const body = JSON.parse(e.MessageBody) as Record<string, unknown>;
        if (input.QueueUrl === urls.results) {
          queues.results.push({ body, dedupeId: e.MessageDeduplicationId, groupId: e.MessageGroupId });
        } else if (input.QueueUrl === urls.dlq) {
          queues.dlq.push({
            body,
            code: e.MessageAttributes?.errorCode?.StringValue,
            reason: e.MessageAttributes?.laneReason?.StringValue,
          });
        } else if (urls.lane !== undefined && input.QueueUrl === urls.lane) {
          queues.lane.push(body as unknown as FailureLaneMessage);
        } else {
          throw new Error(`SendMessageBatch to an unknown queue ${input.QueueUrl}`);
        }
      }
      return {
        Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: `m-${e.Id}`, MD5OfMessageBody: 'x' })),
        Failed: [],
      };
    },
  );
  mock
    .on(SendMessageCommand)
    .callsFake(
      async (input: {
        QueueUrl: string;
        MessageBody: string;
        MessageAttributes?: Record<string, { StringValue?: string }>;
      }) => {
        if (input.QueueUrl !== urls.dlq)
          throw new Error(`SendMessage to an unexpected queue ${input.QueueUrl}`);
        queues.dlq.push({
          body: JSON.parse(input.MessageBody) as Record<string, unknown>,
          code: input.MessageAttributes?.errorCode?.StringValue,
          reason: input.MessageAttributes?.laneReason?.StringValue,
        });
        return { MessageId: `dlq-${queues.dlq.length}` };
      },
    );
  return queues;
}

/** The error an injected crash throws. */
export class InjectedCrash extends Error {
  override readonly name = 'InjectedCrash';
}

type FaultHook = (handler: string, step: string) => void;

/**
 * Installs the fault-point hook (lambda/shared/fault-points.ts): the `skip + 1`-th time `handler` reaches `step`, the
 * invocation "dies" there (an {@link InjectedCrash} is thrown), once. `hits` lists the crashes that happened, so a
 * test can prove the fault took place before checking what it guards.
 */
export function crashAt(handler: string, step: string, skip = 0): { hits: string[] } {
  const hits: string[] = [];
  let seen = 0;
  const hook: FaultHook = (h, s) => {
    if (h !== handler || s !== step) return;
    seen++;
    if (seen === skip + 1) {
      hits.push(`${h}@${s}`);
      throw new InjectedCrash(`injected crash at ${h}@${s}`);
    }
  };
  (globalThis as { __corpusFaultPoint?: FaultHook }).__corpusFaultPoint = hook;
  return { hits };
}

/** Removes the fault-point hook. */
export function clearFaults(): void {
  delete (globalThis as { __corpusFaultPoint?: FaultHook }).__corpusFaultPoint;
}

/** A promise with its resolver, to interleave concurrent work step by step. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
