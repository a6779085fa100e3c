import 'aws-sdk-client-mock-jest';
import { beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import {
  DeleteItemCommand,
  DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { CollectEvent } from '../../../lambda/collect';
import { collectKeys, type CollectShardInput } from '../../../lambda/shared/collect';
import type { ResultLine, ShardItem } from '../../../lambda/shared/contracts';
import { FakeLedgerTable, FakeS3, lambdaContext, recordSqs, type SentBatch } from '../handlers/helpers';
import { BUCKET, converseInput, converseSuccess, errorLine, ids, shuffled, stageShard } from './batch-output';

// The handler builds its clients at import from the environment test/setup/lambda-env.ts gives it; mocking the
// client classes reaches those instances. Idempotency is turned on for this file (the module is loaded after the
// switch), so a failing collect is seen going through makeIdempotent.
const s3Mock = mockClient(S3Client);
const ddbMock = mockClient(DynamoDBDocumentClient);
const sqsMock = mockClient(SQSClient);
const idempotencyMock = mockClient(DynamoDBClient);

let collect: typeof import('../../../lambda/collect');

beforeAll(() => {
  const disabled = process.env.POWERTOOLS_IDEMPOTENCY_DISABLED;
  process.env.POWERTOOLS_IDEMPOTENCY_DISABLED = 'false';
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded after the switch, from the same registry as the mocks
    collect = require('../../../lambda/collect') as typeof import('../../../lambda/collect');
  } finally {
    process.env.POWERTOOLS_IDEMPOTENCY_DISABLED = disabled;
  }
});

const RUN = 'run-h1';
const QUEUE = process.env.FAILURE_QUEUE_URL ?? '';

let s3: FakeS3;
let table: FakeLedgerTable;
let sent: SentBatch[];

beforeEach(() => {
  for (const m of [s3Mock, ddbMock, sqsMock, idempotencyMock]) m.reset();
  idempotencyMock.on(PutItemCommand).resolves({});
  idempotencyMock.on(UpdateItemCommand).resolves({});
  idempotencyMock.on(DeleteItemCommand).resolves({});
  expect(process.env.OUTPUT_BUCKET).toBe(BUCKET);
  s3 = new FakeS3(s3Mock).install();
  table = new FakeLedgerTable(ddbMock, process.env.LEDGER_TABLE ?? '').install();
  sent = recordSqs(sqsMock);
});

/** The event a shard's child builds for Collect, from Collect's staged input. */
function eventFor(staged: CollectShardInput, extra: Partial<CollectEvent['job']> = {}): CollectEvent {
  const shard: ShardItem = {
    shard: staged.shard,
    records: 6,
    bytes: 1234,
    format: 'converse',
    inputKeys: staged.inputKeys,
    inputPrefix: `runs/${RUN}/batch/shard-${staged.shard}/input/`,
    outputPrefix: `runs/${RUN}/batch/shard-${staged.shard}/output/`,
  };
  return {
    runId: RUN,
    ledgerScope: 'scope/h',
    shard,
    job: {
      jobArn: staged.jobArn,
      jobName: `corpus-test-${RUN}-${staged.shard}`,
      shard: staged.shard,
      status: staged.jobStatus,
      submittedAt: '2025-01-02T03:00:00.000Z',
      endedAt: '2025-01-02T04:00:00.000Z',
      outputPrefix: staged.outputPrefix,
      ...extra,
    },
  };
}

describe('Collect event mapping', () => {
  it('takes the input files from the shard, and the output prefix, status and message from the job', () => {
    const staged = stageShard(s3, {
      runId: RUN,
      shard: 4,
      jobId: 'jobm',
      inputs: [ids('m', 2).map(converseInput), ids('n', 2).map(converseInput)],
      outputs: [],
    });
    const event = eventFor(staged, { status: 'Stopped', message: 'stopped by a person' });
    expect(collect.toCollectInput(collect.parseCollectEvent(event))).toEqual({
      runId: RUN,
      ledgerScope: 'scope/h',
      shard: 4,
      jobArn: staged.jobArn,
      jobStatus: 'Stopped',
      failureMessage: 'stopped by a person',
      inputKeys: staged.inputKeys,
      outputPrefix: staged.outputPrefix,
      submittedAt: '2025-01-02T03:00:00.000Z',
      endedAt: '2025-01-02T04:00:00.000Z',
    });
    const { endedAt: _e, message: _m, ...job } = event.job;
    expect(collect.toCollectInput({ ...event, job })).not.toHaveProperty('failureMessage');
    expect(collect.toCollectInput({ ...event, job })).not.toHaveProperty('endedAt');
  });

  it('rejects an event that is not {runId, ledgerScope, shard, job} with InvalidEventError', () => {
    expect(() => collect.parseCollectEvent({ runId: RUN, shard: { shard: 1 } })).toThrow(
      expect.objectContaining({
        name: 'InvalidEventError',
        message: expect.stringContaining('Collect expects {runId, ledgerScope, shard: ShardItem, job'),
      }),
    );
  });

  it("rejects a job of another shard (the child's wiring is wrong)", () => {
    const staged = stageShard(s3, {
      runId: RUN,
      shard: 2,
      jobId: 'jobw',
      inputs: [ids('w', 2).map(converseInput)],
      outputs: [],
    });
    expect(() => collect.parseCollectEvent(eventFor(staged, { shard: 3 }))).toThrow(
      expect.objectContaining({
        name: 'InvalidEventError',
        message: 'Collect was given the job of shard 3 for shard 2',
      }),
    );
  });
});

describe('Collect handler, end to end with mocked AWS', () => {
  it('collects the job output through the ledger and keeps the job times in the marker', async () => {
    const records = ids('c', 6).map(converseInput);
    const staged = stageShard(
      s3,
      {
        runId: RUN,
        shard: 1,
        jobId: 'jobc',
        inputs: [records],
        outputs: [
          shuffled([
            ...records.slice(0, 4).map((r) => converseSuccess(r, 3, 2)),
            errorLine(records[4]!, 429, 'slow down'),
          ]),
        ],
        manifest: { total: 6, success: 4, error: 1 },
      },
      { jobStatus: 'PartiallyCompleted' },
    );
    const summary = await collect.handler(
      eventFor(staged, { message: 'some records were not processed' }),
      lambdaContext(),
    );
    expect(summary).toMatchObject({
      shard: 1,
      jobArn: staged.jobArn,
      status: 'PartiallyCompleted',
      records: 6,
      succeeded: 4,
      failed: 1,
      missing: 1,
      inputTokens: 12,
      outputTokens: 8,
      submittedAt: '2025-01-02T03:00:00.000Z',
      endedAt: '2025-01-02T04:00:00.000Z',
      message: 'some records were not processed',
    });
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 1))).toEqual(summary);
    // Keyed on run, shard, job and status; the record is completed with the summary.
    expect(idempotencyMock).toHaveReceivedCommandTimes(PutItemCommand, 1);
    expect(idempotencyMock).toHaveReceivedCommandTimes(UpdateItemCommand, 1);
    expect(
      s3
        .lines<ResultLine>(BUCKET, collectKeys.results(RUN, 1, 0))
        .map((l) => l.recordId)
        .sort(),
    ).toEqual(['c-0', 'c-1', 'c-2', 'c-3']);
    expect(table.publishes.sort()).toEqual(['c-0', 'c-1', 'c-2', 'c-3']);
    expect(s3.lines(BUCKET, collectKeys.redrive(RUN, 1)).map((w) => w.recordId)).toEqual(['c-5']);
    expect(sent.flatMap((b) => b.messages).map((m) => [m.recordId, m.ledgerScope])).toEqual([
      ['c-4', 'scope/h'],
    ]);
  });

  it('a Failed job: records its records as failed and fails with BatchJobFailedError', async () => {
    const staged = stageShard(
      s3,
      { runId: RUN, shard: 0, jobId: 'jobf', inputs: [ids('f', 3).map(converseInput)], outputs: [] },
      { jobStatus: 'Failed' },
    );
    await expect(
      collect.handler(eventFor(staged, { message: 'model access denied' }), lambdaContext()),
    ).rejects.toMatchObject({
      name: 'BatchJobFailedError',
      message: expect.stringContaining('model access denied'),
    });
    expect(s3.lines(BUCKET, collectKeys.failures(RUN, 0))).toHaveLength(3);
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 0))).toMatchObject({ status: 'Failed', failed: 3 });
    expect(sent.filter((b) => b.queueUrl === QUEUE).flatMap((b) => b.messages)).toHaveLength(3);
    // The error is not cached: the in-progress record is deleted, so a retry collects (or re-throws) again.
    expect(idempotencyMock).toHaveReceivedCommandTimes(PutItemCommand, 1);
    expect(idempotencyMock).toHaveReceivedCommandTimes(DeleteItemCommand, 1);
    expect(idempotencyMock).not.toHaveReceivedCommand(UpdateItemCommand);
  });
});
