import { beforeEach, describe, expect, it, jest } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { processBatch, type ModelCaller } from '../../../lambda/converse-batch';
import { batchIdOf } from '../../../lambda/shared/batches';
import { collectKeys, collectShard } from '../../../lambda/shared/collect';
import type { BatchEvent, ResultLine, WorkItem } from '../../../lambda/shared/contracts';
import { FailureLaneSender } from '../../../lambda/shared/failure-lane';
import { Ledger } from '../../../lambda/shared/ledger';
import type { PublishedRecord, PublishOptions, ResultsPublisher } from '../../../lambda/shared/results-queue';
import { FakeLedgerTable, FakeS3, recordSqs } from '../handlers/helpers';
import { BUCKET, converseInput, converseSuccess, errorLine, ids, stageShard } from '../mode-a/batch-output';

// The results-queue step of ConverseBatch and Collect: after the results file is written, before the ledger says
// published, never for records another run holds.
const s3Mock = mockClient(S3Client);
const ddbMock = mockClient(DynamoDBDocumentClient);
const sqsMock = mockClient(SQSClient);

const TABLE = 'ledger-table';
const QUEUE = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures';
const DLQ = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures-dlq';

let s3: FakeS3;
let table: FakeLedgerTable;

/** What the publisher saw at each call: the records, the options, and what was durable at that moment. */
interface PublishCall {
  records: PublishedRecord[];
  options: PublishOptions | undefined;
  fileLines: string[];
  publishedBefore: string[];
}

function recordingPublisher(): Pick<ResultsPublisher, 'publish'> & { calls: PublishCall[] } {
  const calls: PublishCall[] = [];
  return {
    calls,
    publish: jest.fn(async (records: readonly PublishedRecord[], options?: PublishOptions) => {
      const key = records[0]?.resultKey ?? '';
      calls.push({
        records: [...records],
        options,
        fileLines: s3.lines<ResultLine>(BUCKET, key).map((l) => l.recordId),
        publishedBefore: [...table.publishes],
      });
    }),
  };
}

function ledger(): Ledger {
  return new Ledger({
    client: DynamoDBDocumentClient.from(new DynamoDBClient({})),
    tableName: TABLE,
    ttlDays: 30,
    now: () => 1_000_000_000,
  });
}

beforeEach(() => {
  s3Mock.reset();
  ddbMock.reset();
  sqsMock.reset();
  s3 = new FakeS3(s3Mock).install();
  table = new FakeLedgerTable(ddbMock, TABLE).install();
  recordSqs(sqsMock);
});

describe('ConverseBatch publishes to the results queue', () => {
  const RUN = 'run-q';
  const SCOPE = 'test/model';
  function item(recordId: string, line: number): WorkItem {
    return {
      recordId,
      line,
      format: 'converse',
      modelInput: { messages: [{ role: 'user', content: [{ text: recordId }] }] },
    };
  }
  const callModel: ModelCaller = async (work) => {
    if (work.recordId === 'bad') throw Object.assign(new Error('no'), { name: 'ValidationException' });
    return {
      modelOutput: { text: work.recordId },
      usage: { inputTokens: 2, outputTokens: 1, totalTokens: 3 },
    };
  };

  function run(
    ev: BatchEvent,
    publisher: Pick<ResultsPublisher, 'publish'>,
  ): ReturnType<typeof processBatch> {
    return processBatch(ev, {
      s3: new S3Client({}),
      ledger: ledger(),
      failureLane: new FailureLaneSender(new SQSClient({}), QUEUE, DLQ),
      callModel,
      resultsPublisher: publisher,
      outputBucket: BUCKET,
      itemConcurrency: 2,
      remainingMs: () => 280_000,
    });
  }

  it('sends each record it published, after the results file and before markPublished; held and failed ones not', async () => {
    table.heldByOthers.add('held');
    const ev: BatchEvent = {
      BatchInput: { runId: RUN, ledgerScope: SCOPE },
      Items: [item('a', 1), item('held', 2), item('bad', 3), item('b', 4)],
    };
    const publisher = recordingPublisher();
    const summary = await run(ev, publisher);
    expect(summary).toMatchObject({ succeeded: 2, skipped: 1, failed: 1 });
    const key = `runs/${RUN}/results/${batchIdOf(RUN, ['a', 'held', 'bad', 'b'])}.jsonl`;
    expect(publisher.calls).toEqual([
      {
        records: ['a', 'b'].map((recordId) => ({
          runId: RUN,
          recordId,
          ledgerScope: SCOPE,
          resultKey: key,
          usage: { inputTokens: 2, outputTokens: 1, totalTokens: 3 },
        })),
        options: { skipPublished: false },
        fileLines: ['a', 'b'],
        publishedBefore: [],
      },
    ]);
    expect(table.publishes.sort()).toEqual(['a', 'b']);
  });

  it('a retried batch with answers from an earlier attempt skips records already marked published', async () => {
    const ev: BatchEvent = { BatchInput: { runId: RUN, ledgerScope: SCOPE }, Items: [item('a', 1)] };
    await run(ev, recordingPublisher());
    const publisher = recordingPublisher();
    await run(ev, publisher);
    expect(publisher.calls[0]?.options).toEqual({ skipPublished: true });
  });

  it('publishes nothing when nothing succeeded', async () => {
    const publisher = recordingPublisher();
    await run({ BatchInput: { runId: RUN, ledgerScope: SCOPE }, Items: [item('bad', 1)] }, publisher);
    expect(publisher.calls).toEqual([]);
  });
});

describe('Collect publishes to the results queue', () => {
  it('per output file, after the file is complete and before markPublished, leaving out held and error lines', async () => {
    const files = [ids('p', 4).map(converseInput), ids('q', 3).map(converseInput)];
    const [first = [], second = []] = files;
    table.heldByOthers.add('p-1');
    const input = stageShard(s3, {
      runId: 'run-c',
      shard: 2,
      jobId: 'jobc',
      inputs: files,
      outputs: [
        first.map((r) => converseSuccess(r)),
        [converseSuccess(second[0]!), errorLine(second[1]!, 400, 'bad'), converseSuccess(second[2]!)],
      ],
      manifest: { total: 7, success: 6, error: 1 },
    });
    const publisher = recordingPublisher();
    const summary = await collectShard(input, {
      s3: new S3Client({}),
      ledger: ledger(),
      failureLane: new FailureLaneSender(new SQSClient({}), QUEUE, DLQ),
      resultsPublisher: publisher,
      outputBucket: BUCKET,
      concurrency: 2,
    });
    expect(summary).toMatchObject({ succeeded: 5, skipped: 1, failed: 1 });
    expect(publisher.calls.map((c) => c.records.map((r) => r.recordId))).toEqual([
      ['p-0', 'p-2', 'p-3'],
      ['q-0', 'q-2'],
    ]);
    publisher.calls.forEach((c, part) => {
      expect(c.options).toEqual({ skipPublished: true });
      expect(c.records.every((r) => r.resultKey === collectKeys.results('run-c', 2, part))).toBe(true);
      expect(c.fileLines).toEqual(c.records.map((r) => r.recordId));
      expect(c.publishedBefore).toEqual([]);
      expect(c.records.every((r) => r.runId === 'run-c' && r.ledgerScope === 'test/model')).toBe(true);
    });
    expect(table.publishes.sort()).toEqual(['p-0', 'p-2', 'p-3', 'q-0', 'q-2']);
  });
});
