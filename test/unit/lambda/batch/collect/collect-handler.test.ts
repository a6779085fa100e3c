import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import {
  parseCollectEvent,
  toCollectInput,
  type CollectEvent,
} from '../../../../../lambda/batch/collect/collect-event';
import { collectKeys, type CollectShardInput } from '../../../../../lambda/batch/collect/collect-contract';
import type { ResultLine, ShardItem } from '../../../../../lambda/shared/contracts';
import type { Ledger } from '../../../../../lambda/shared/ledger';
import {
  freshLedger,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from '../../failure-lane/lane-fixtures';
import { FakeS3, lambdaContext, recordSqs, type SentBatch } from '../../helpers';
import {
  BUCKET,
  converseInput,
  converseSuccess,
  errorLine,
  ids,
  shuffled,
  stageShard,
} from '../batch-output';
import { useClientMocks } from '../../../../support/aws-mocks';
import { FAILURE_DLQ_URL as DLQ, FAILURE_QUEUE_URL as QUEUE, LEDGER_TABLE } from '../../../../support/names';

// The handler builds its clients at import from the environment test/setup/lambda-env.ts gives it, plus the claim
// lease and a DynamoDB endpoint on dynalite (the ledger's conditional writes are real); S3 and SQS are mocked, which
// reaches the handler's instances.
const [s3Mock, sqsMock] = useClientMocks(S3Client, SQSClient);

let collect: typeof import('../../../../../lambda/collect');
let server: LedgerServer;
let ledger: Ledger;
const saved: Record<string, string | undefined> = {};

beforeAll(async () => {
  server = await startLedgerServer();
  const env = { AWS_ENDPOINT_URL_DYNAMODB: server.dynamodb.endpoint, CLAIM_LEASE_SECONDS: '1200' };
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  ({ ledger } = await freshLedger(server, LEDGER_TABLE));
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded once the environment is set
  collect = require('../../../../../lambda/collect') as typeof import('../../../../../lambda/collect');
});

afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await stopLedgerServer(server);
});

const RUN = 'run-h1';
const SCOPE = 'scope/h';

let s3: FakeS3;
let sent: SentBatch[];

beforeEach(() => {
  expect(process.env.OUTPUT_BUCKET).toBe(BUCKET);
  s3 = new FakeS3(s3Mock).install();
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
    ledgerScope: SCOPE,
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
    expect(toCollectInput(parseCollectEvent(event))).toEqual({
      runId: RUN,
      ledgerScope: SCOPE,
      shard: 4,
      jobArn: staged.jobArn,
      jobStatus: 'Stopped',
      failureMessage: 'stopped by a person',
      inputKeys: staged.inputKeys,
      // Re-driven records keep the shard's format (Plan's, which knew the model's family).
      format: 'converse',
      outputPrefix: staged.outputPrefix,
      submittedAt: '2025-01-02T03:00:00.000Z',
      endedAt: '2025-01-02T04:00:00.000Z',
    });
    const { endedAt: _e, message: _m, ...job } = event.job;
    expect(toCollectInput({ ...event, job })).not.toHaveProperty('failureMessage');
    expect(toCollectInput({ ...event, job })).not.toHaveProperty('endedAt');
  });

  it('rejects an event that is not {runId, ledgerScope, shard, job} with InvalidEventError', () => {
    expect(() => parseCollectEvent({ runId: RUN, shard: { shard: 1 } })).toThrow(
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
    expect(() => parseCollectEvent(eventFor(staged, { shard: 3 }))).toThrow(
      expect.objectContaining({
        name: 'InvalidEventError',
        message: 'Collect was given the job of shard 3 for shard 2',
      }),
    );
  });
});

describe('Collect handler, end to end', () => {
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
            errorLine(records[4]!, 400, 'bad request'),
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
    expect(
      s3
        .lines<ResultLine>(BUCKET, collectKeys.results(RUN, 1, 0))
        .map((l) => l.recordId)
        .sort(),
    ).toEqual(['c-0', 'c-1', 'c-2', 'c-3']);
    // Published in the event's ledger scope by the shard's unit.
    const entries = await ledger.getMany(SCOPE, ids('c', 6));
    expect([...entries.keys()].sort()).toEqual(['c-0', 'c-1', 'c-2', 'c-3', 'c-4']);
    for (const id of ['c-0', 'c-1', 'c-2', 'c-3']) {
      expect(entries.get(id)).toMatchObject({
        status: 'published',
        owner: `${RUN}/shard/1`,
        resultKey: collectKeys.results(RUN, 1, 0),
      });
    }
    expect(entries.get('c-4')).toMatchObject({ status: 'failed', error: { code: 'ValidationException' } });
    expect(s3.lines(BUCKET, collectKeys.redrive(RUN, 1)).map((w) => w.recordId)).toEqual(['c-5']);
    expect(sent.map((b) => b.queueUrl)).toEqual([DLQ]);
    expect(sent.flatMap((b) => b.messages).map((m) => [m.recordId, m.ledgerScope])).toEqual([['c-4', SCOPE]]);
  });

  it('a job that failed for a reason every call would meet: records failed, BatchJobFailedError, and again on a retry', async () => {
    const staged = stageShard(
      s3,
      { runId: RUN, shard: 0, jobId: 'jobf', inputs: [ids('f', 3).map(converseInput)], outputs: [] },
      { jobStatus: 'Failed' },
    );
    const event = eventFor(staged, { message: 'model access denied' });
    await expect(collect.handler(event, lambdaContext())).rejects.toMatchObject({
      name: 'BatchJobFailedError',
      message: expect.stringContaining('model access denied'),
    });
    expect(s3.lines(BUCKET, collectKeys.failures(RUN, 0))).toHaveLength(3);
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 0))).toMatchObject({ status: 'Failed', failed: 3 });
    expect(sent.filter((b) => b.queueUrl === DLQ).flatMap((b) => b.messages)).toHaveLength(3);
    expect(sent.filter((b) => b.queueUrl === QUEUE)).toEqual([]);
    for (const entry of (await ledger.getMany(SCOPE, ids('f', 3))).values()) {
      expect(entry).toMatchObject({ status: 'failed', error: { code: 'AccessDeniedException' } });
    }
    // No idempotency record holds a retry off: it finds the marker and fails the same way, sending nothing more.
    await expect(collect.handler(event, lambdaContext())).rejects.toMatchObject({
      name: 'BatchJobFailedError',
    });
    expect(sent.flatMap((b) => b.messages)).toHaveLength(3);
  });
});
