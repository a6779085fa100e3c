import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import {
  isLastReceive,
  laneKeys,
  laneResultKey,
  parseLaneMessage,
  processLaneBatch,
  processLaneRecord,
  type FailureLaneConsumerDeps,
  type LaneRunDeps,
} from '../../../../lambda/failure-lane/consumer';
import {
  RUN_UPDATED,
  runKeys,
  type FailureLaneMessage,
  type FailureLine,
  type ModelCalls,
  type ResultLine,
  type RunManifest,
  type Usage,
} from '../../../../lambda/shared/contracts';
import { unitOwner, type Claimant, type Ledger } from '../../../../lambda/shared/ledger';
import type { ModelCaller } from '../../../../lambda/converse/model-caller';
import { contentHashOf } from '../../../../lambda/shared/records';
import { resultsDedupeId, ResultsPublisher } from '../../../../lambda/shared/results-queue';
import { writeManifest, type ManifestBase, type RunState } from '../../../../lambda/shared/run-state';
import type { AttemptLine } from '../../../../lambda/converse/unit-of-work';
import { awsError, FakeS3 } from '../helpers';
import {
  freshLedger,
  retryable,
  sqsEvent,
  sqsRecord,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from './lane-fixtures';
import {
  clearFaults,
  crashAt,
  deferred,
  freshRunState,
  recordQueues,
  runsItem,
  type Queues,
} from './protocol-fixtures';
import { useClientMocks } from '../../../support/aws-mocks';
import { EVENT_BUS_NAME as BUS, FAILURE_DLQ_URL as DLQ, OUTPUT_BUCKET as OUT } from '../../../support/names';

// The failure lane as a unit of work per record, against the real ledger and runs table (dynalite: the conditional
// writes are the point); S3, SQS and EventBridge are in-memory fakes behind aws-sdk-client-mock.
const [s3Mock, sqsMock, eventsMock] = useClientMocks(S3Client, SQSClient, EventBridgeClient);

const RESULTS = 'https://sqs.us-east-1.amazonaws.com/123456789012/results.fifo';
const SCOPE = 'scope-a';
const RUN = 'run-9';
const LEASE_MS = 60_000;
const MAX_RECEIVES = 3;

let server: LedgerServer;
let tables = 0;
let ledger: Ledger;
let runs: RunState;
let runsTable: string;
let s3: FakeS3;
let queues: Queues;
/** Model calls made so far, as the consumer's ModelCallCounter would report them. */
let modelCalls: ModelCalls;

beforeAll(async () => {
  server = await startLedgerServer();
});

afterAll(async () => {
  await stopLedgerServer(server);
});

beforeEach(async () => {
  s3 = new FakeS3(s3Mock).install();
  queues = recordQueues(sqsMock, { results: RESULTS, dlq: DLQ });
  eventsMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e-1' }] });
  tables++;
  ({ ledger } = await freshLedger(server, `ledger-${tables}`));
  ({ runs, table: runsTable } = await freshRunState(server, `runs-${tables}`));
  modelCalls = { total: 0, throttled: 0, retried: 0 };
});

afterEach(() => {
  clearFaults();
});

function usage(): Usage {
  return { inputTokens: 7, outputTokens: 3, totalTokens: 10 };
}

/** The model's answer to its `n`-th call (1-based) for a record: each call answers differently. */
function answer(recordId: string, n: number): { modelOutput: unknown; usage: Usage } {
  return { modelOutput: { text: `answer ${n} to ${recordId}` }, usage: usage() };
}

/**
 * A model that answers the `n`-th call for a record with {@link answer}, unless `fail` gives an error for it; every
 * call is counted in {@link modelCalls} (a throttled one as throttled).
 */
function model(
  fail: (recordId: string, n: number) => Error | undefined = () => undefined,
): jest.Mock<ModelCaller> {
  const calls = new Map<string, number>();
  return jest.fn<ModelCaller>(async (item) => {
    const n = (calls.get(item.recordId) ?? 0) + 1;
    calls.set(item.recordId, n);
    modelCalls.total++;
    const err = fail(item.recordId, n);
    if (err) {
      if (err.name === 'ThrottlingException') modelCalls.throttled++;
      throw err;
    }
    return answer(item.recordId, n);
  });
}

const throttled = (): Error => awsError('ThrottlingException', 429, 'Too many requests', true);
const rejected = (): Error => awsError('ValidationException', 400, 'messages: too long');

function deps(
  callModel: ModelCaller,
  overrides: Partial<FailureLaneConsumerDeps & LaneRunDeps> = {},
): FailureLaneConsumerDeps & LaneRunDeps {
  const sqs = new SQSClient({});
  return {
    s3: new S3Client({}),
    sqs,
    ledger,
    runs,
    events: new EventBridgeClient({}),
    eventBusName: BUS,
    callModel,
    dlqUrl: DLQ,
    outputBucket: OUT,
    resultsPublisher: new ResultsPublisher(sqs, RESULTS, { sleep: async () => undefined }),
    leaseMs: LEASE_MS,
    remainingMs: () => 120_000,
    maxReceiveCount: MAX_RECEIVES,
    modelCalls: () => ({ ...modelCalls }),
    ...overrides,
  };
}

/** A unit of work of `runId` other than the lane. */
function unit(runId: string, kind: 'batch' | 'shard', id: string, attempt = 'a-1'): Claimant {
  return { runId, owner: unitOwner(runId, kind, id), attempt };
}

/** What a Converse batch of `runId` does with a record it could not finish: claim it, then queue it for the lane. */
async function handOver(msg: FailureLaneMessage, runId = msg.runId): Promise<void> {
  const who = unit(runId, 'batch', 'b-1');
  const hash = contentHashOf(msg.modelInput);
  expect((await ledger.claim(SCOPE, msg.recordId!, who, { contentHash: hash, leaseMs: LEASE_MS })).kind).toBe(
    'claimed',
  );
  expect((await ledger.queue(SCOPE, msg.recordId!, who, msg.error)).kind).toBe('done');
}

/** Another run's unit publishes the record, for `modelInput`. */
async function publishElsewhere(recordId: string, modelInput: unknown, runId = 'run-other'): Promise<void> {
  const who = unit(runId, 'batch', 'b-x');
  await ledger.claim(SCOPE, recordId, who, { contentHash: contentHashOf(modelInput), leaseMs: LEASE_MS });
  expect((await ledger.commit(SCOPE, recordId, who, runKeys.results(runId, 'b-x'))).kind).toBe('done');
}

/** The lane outcome item of a record in the runs table. */
async function laneOutcome(recordId: string, runId = RUN): Promise<Record<string, unknown> | undefined> {
  return runsItem(server, runsTable, runId, `lane#${recordId}`);
}

/** The manifest Finalize would have written: `pending` records handed to the lane. */
function base(runId: string, pending: number): ManifestBase {
  return {
    runId,
    mode: 'converse',
    status: 'SUCCEEDED',
    counts: {
      lines: 10,
      records: 10,
      succeeded: 6,
      failed: 1,
      invalid: 0,
      duplicates: 0,
      skipped: 3 - pending,
      pending,
      recovered: 0,
    },
    tokens: { input: 100, output: 50 },
    modelCalls: { total: 9, throttled: 2, retried: 1 },
    startedAt: '2024-01-01T00:00:00.000Z',
    finishedAt: '2024-01-01T00:10:00.000Z',
    durationMs: 600_000,
    corpus: { bucket: 'corpus', key: 'in.jsonl' },
    modelId: 'model',
    ledgerScope: SCOPE,
    output: {
      bucket: OUT,
      manifestKey: runKeys.manifest(runId),
      resultsPrefix: runKeys.resultsPrefix(runId),
      failuresPrefix: runKeys.failuresPrefix(runId),
    },
  };
}

/** The `Corpus Run Updated` events put so far: their detail, parsed. */
function runEvents(): Record<string, unknown>[] {
  return eventsMock.commandCalls(PutEventsCommand).flatMap((call) =>
    (call.args[0].input.Entries ?? []).map((e) => {
      expect(e).toMatchObject({ EventBusName: BUS, Source: 'corpus.pipeline', DetailType: RUN_UPDATED });
      return JSON.parse(e.Detail ?? '{}') as Record<string, unknown>;
    }),
  );
}

describe('a retryable failure answered on retry', () => {
  it('is claimed by the lane, answered once, staged, committed, written, recorded, sent once and marked delivered', async () => {
    const msg = retryable('r1');
    await handOver(msg);
    const laneOwner = `${RUN}/lane/r1`;
    const callModel = model();
    // What the ledger holds while the model is asked: the lane's claim on the record the batch queued.
    const during: unknown[] = [];
    const observed: ModelCaller = async (item, signal) => {
      during.push(await ledger.get(SCOPE, 'r1'));
      return callModel(item, signal);
    };
    const response = await processLaneBatch(
      sqsEvent(sqsRecord('m1', msg)),
      deps(observed, { newAttempt: () => 'att-1' }),
    );
    expect(response.batchItemFailures).toEqual([]);
    expect(during).toEqual([
      expect.objectContaining({ status: 'claimed', runId: RUN, owner: laneOwner, attempt: 'att-1' }),
    ]);
    expect(callModel).toHaveBeenCalledTimes(1);
    expect(callModel.mock.calls[0]?.[0]).toEqual({
      recordId: 'r1',
      format: 'converse',
      modelInput: msg.modelInput,
    });

    // Staged under the lane's attempts prefix, named by the record's hash, one file per attempt.
    const staged = `${laneKeys.attemptsPrefix(RUN, 'r1')}att-1.jsonl`;
    expect(staged).toMatch(/^runs\/run-9\/attempts\/lane-[0-9a-f]{32}\/att-1\.jsonl$/);
    expect(s3.lines<AttemptLine>(OUT, staged)).toEqual([
      expect.objectContaining({ recordId: 'r1', attempt: 'att-1', outcome: 'answered', ...answer('r1', 1) }),
    ]);

    const resultKey = laneKeys.results(RUN, 'r1');
    expect(resultKey).toMatch(/^runs\/run-9\/results\/lane-[0-9a-f]{32}\.jsonl$/);
    expect(laneResultKey(RUN, 'r1')).toBe(resultKey);
    expect(s3.lines<ResultLine>(OUT, resultKey)).toEqual([{ recordId: 'r1', ...answer('r1', 1) }]);
    expect(s3.text(OUT, laneKeys.failures(RUN, 'r1'))).toBeUndefined();

    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({
      status: 'published',
      runId: RUN,
      owner: laneOwner,
      attempt: 'att-1',
      resultKey,
      delivered: true,
    });
    expect(await laneOutcome('r1')).toMatchObject({ outcome: 'succeeded', inputTokens: 7, outputTokens: 3 });
    expect(queues.results).toEqual([
      {
        body: { runId: RUN, recordId: 'r1', ledgerScope: SCOPE, resultKey, usage: usage() },
        dedupeId: resultsDedupeId(SCOPE, 'r1'),
        groupId: expect.stringMatching(/^results-\d\d$/),
      },
    ]);
    expect(queues.dlq).toEqual([]);
  });

  it('a redelivery after success makes no second model call, no second line and no second queue message', async () => {
    const msg = retryable('r2');
    const callModel = model();
    await processLaneBatch(sqsEvent(sqsRecord('m2', msg)), deps(callModel));
    expect(queues.results).toHaveLength(1);

    const again = await processLaneBatch(sqsEvent(sqsRecord('m2', msg, 2)), deps(callModel));
    expect(again.batchItemFailures).toEqual([]);
    expect(callModel).toHaveBeenCalledTimes(1);
    expect(s3.lines<ResultLine>(OUT, laneKeys.results(RUN, 'r2'))).toEqual([
      { recordId: 'r2', ...answer('r2', 1) },
    ]);
    expect(queues.results).toHaveLength(1);
    expect(queues.dlq).toEqual([]);
    expect(await laneOutcome('r2')).toMatchObject({ outcome: 'succeeded' });
  });

  it('calls a native record through the caller with its format', async () => {
    const callModel = model();
    const native = retryable('n1', {
      format: 'native',
      modelInput: { anthropic_version: 'bedrock-2023-05-31', max_tokens: 5, messages: [] },
    });
    expect((await processLaneRecord(sqsRecord('m1', native), deps(callModel))).kind).toBe('published');
    expect(callModel.mock.calls[0]?.[0].format).toBe('native');
  });

  it('works without a results queue', async () => {
    const outcome = await processLaneRecord(
      sqsRecord('m1', retryable('r3')),
      deps(model(), { resultsPublisher: undefined }),
    );
    expect(outcome.kind).toBe('published');
    expect(s3.lines(OUT, laneKeys.results(RUN, 'r3'))).toHaveLength(1);
    expect(queues.results).toEqual([]);
  });

  it('takes over a unit claim whose lease ran out (its holder died)', async () => {
    const msg = retryable('r4');
    const dead = unit(RUN, 'batch', 'b-dead');
    await ledger.claim(SCOPE, 'r4', dead, { contentHash: contentHashOf(msg.modelInput), leaseMs: 1 });
    await new Promise((r) => setTimeout(r, 5));
    const outcome = await processLaneRecord(sqsRecord('m4', msg), deps(model()));
    expect(outcome.kind).toBe('published');
    expect(await ledger.get(SCOPE, 'r4')).toMatchObject({ status: 'published', owner: `${RUN}/lane/r4` });
    // The dead unit's commit after the takeover does not take effect.
    expect((await ledger.commit(SCOPE, 'r4', dead, 'elsewhere')).kind).toBe('lost');
  });

  it('two deliveries of one message at once: only the attempt holding the claim commits; the file holds its answer', async () => {
    const msg = retryable('r5');
    const firstCalled = deferred();
    const releaseFirst = deferred();
    let n = 0;
    const callModel = jest.fn<ModelCaller>(async (item) => {
      const call = ++n;
      if (call === 1) {
        firstCalled.resolve();
        await releaseFirst.promise;
      }
      return answer(item.recordId, call);
    });
    const attempts = ['att-1', 'att-2'];
    const d = deps(callModel, { newAttempt: () => attempts.shift() ?? 'att-x' });
    const first = processLaneRecord(sqsRecord('m5', msg), d);
    await firstCalled.promise;
    // The second delivery re-enters the lane's own claim (same unit) and answers first.
    const second = await processLaneRecord(sqsRecord('m5', msg, 2), d);
    expect(second.kind).toBe('published');
    releaseFirst.resolve();
    expect(await first).toEqual({ kind: 'already-settled', recordId: 'r5' });

    expect(callModel).toHaveBeenCalledTimes(2);
    expect(await ledger.get(SCOPE, 'r5')).toMatchObject({ status: 'published', attempt: 'att-2' });
    expect(s3.lines<ResultLine>(OUT, laneKeys.results(RUN, 'r5'))).toEqual([
      { recordId: 'r5', ...answer('r5', 2) },
    ]);
    expect(queues.results).toHaveLength(1);
  });
});

describe('a crash after the commit, then a redelivery', () => {
  it.each<[string, number]>([
    ['after-commit', 0],
    ['after-results', 0],
    ['after-queue-send', 1],
  ])(
    'at %s: one line (the committed answer), one outcome, at most one queue message per dedupe window',
    async (step, resends) => {
      const msg = retryable('c1');
      const callModel = model();
      const crash = crashAt('failure-lane-consumer', step);
      const first = await processLaneBatch(sqsEvent(sqsRecord('m-c1', msg)), deps(callModel));
      // The fault happened, and the message returned to the queue with the record committed by the lane.
      expect(crash.hits).toEqual([`failure-lane-consumer@${step}`]);
      expect(first.batchItemFailures).toEqual([{ itemIdentifier: 'm-c1' }]);
      const committed = await ledger.get(SCOPE, 'c1');
      expect(committed).toMatchObject({ status: 'published', owner: `${RUN}/lane/c1` });
      expect(committed?.delivered).toBeUndefined();

      const second = await processLaneBatch(sqsEvent(sqsRecord('m-c1', msg, 2)), deps(callModel));
      expect(second.batchItemFailures).toEqual([]);
      expect(crash.hits).toHaveLength(1);
      expect(callModel).toHaveBeenCalledTimes(1);
      // The committed attempt's staged answer is the one in the file.
      const staged = s3.lines<AttemptLine>(
        OUT,
        `${laneKeys.attemptsPrefix(RUN, 'c1')}${committed?.attempt ?? ''}.jsonl`,
      );
      expect(staged).toEqual([expect.objectContaining({ outcome: 'answered', ...answer('c1', 1) })]);
      expect(s3.lines<ResultLine>(OUT, laneKeys.results(RUN, 'c1'))).toEqual([
        { recordId: 'c1', ...answer('c1', 1) },
      ]);
      expect(await laneOutcome('c1')).toMatchObject({ outcome: 'succeeded' });
      expect(await ledger.get(SCOPE, 'c1')).toMatchObject({ status: 'published', delivered: true });
      // A crash after the send resends once, with the same deduplication id: FIFO delivers one message.
      expect(queues.results).toHaveLength(1 + resends);
      expect(new Set(queues.results.map((m) => m.dedupeId))).toEqual(new Set([resultsDedupeId(SCOPE, 'c1')]));
      expect(queues.delivered()).toHaveLength(1);
      expect((await runs.laneTotals(RUN)).succeeded).toBe(1);
    },
  );
});

describe('a retryable failure that fails again', () => {
  it('throttled again: the lane gives its claim back, the message is a batch item failure, the next receive reclaims it', async () => {
    const msg = retryable('t1');
    await handOver(msg);
    const callModel = model((id, n) => (id === 't1' && n === 1 ? throttled() : undefined));
    const first = await processLaneBatch(
      sqsEvent(sqsRecord('m-t1', msg), sqsRecord('m-ok', retryable('ok1'))),
      deps(callModel),
    );
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: 'm-t1' }]);
    expect(await ledger.get(SCOPE, 't1')).toMatchObject({
      status: 'queued',
      owner: `${RUN}/lane/t1`,
      error: { code: 'ThrottlingException' },
    });
    expect(await ledger.get(SCOPE, 'ok1')).toMatchObject({ status: 'published' });
    expect(await laneOutcome('t1')).toBeUndefined();
    expect(s3.text(OUT, laneKeys.results(RUN, 't1'))).toBeUndefined();
    expect(queues.dlq).toEqual([]);

    const second = await processLaneBatch(sqsEvent(sqsRecord('m-t1', msg, 2)), deps(callModel));
    expect(second.batchItemFailures).toEqual([]);
    expect(await ledger.get(SCOPE, 't1')).toMatchObject({ status: 'published', owner: `${RUN}/lane/t1` });
    expect(s3.lines<ResultLine>(OUT, laneKeys.results(RUN, 't1'))).toEqual([
      { recordId: 't1', ...answer('t1', 2) },
    ]);
    expect(await laneOutcome('t1')).toMatchObject({ outcome: 'succeeded' });
  });

  it('5xx and deadline timeouts are retried later too, with the claim given back', async () => {
    const callModel = model(() => awsError('ServiceUnavailableException', 503));
    await expect(processLaneRecord(sqsRecord('m-s', retryable('s')), deps(callModel))).rejects.toMatchObject({
      name: 'RetryLaterError',
      code: 'ServiceUnavailableException',
    });
    expect(await ledger.get(SCOPE, 's')).toMatchObject({ status: 'queued', owner: `${RUN}/lane/s` });
    const hang: ModelCaller = (_item, signal) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () =>
          reject(Object.assign(new Error('aborted'), { name: 'AbortError' })),
        );
      });
    await expect(
      processLaneRecord(sqsRecord('m-h', retryable('h')), deps(hang, { remainingMs: () => 10_500 })),
    ).rejects.toMatchObject({ name: 'RetryLaterError', code: 'TimeoutError' });
    expect(await ledger.get(SCOPE, 'h')).toMatchObject({ status: 'queued', error: { code: 'TimeoutError' } });
  });

  it('with too little time left the model is not called and the claim is given back', async () => {
    const callModel = model();
    await expect(
      processLaneRecord(sqsRecord('m-x', retryable('x')), deps(callModel, { remainingMs: () => 2_000 })),
    ).rejects.toMatchObject({ name: 'RetryLaterError', code: 'NotAttempted' });
    expect(callModel).not.toHaveBeenCalled();
    expect(await ledger.get(SCOPE, 'x')).toMatchObject({ status: 'queued', owner: `${RUN}/lane/x` });
  });

  it('on its last receive it fails for good: ledger, lane failures file, outcome, DLQ with the reason', async () => {
    const msg = retryable('t2');
    await handOver(msg);
    const callModel = model(() => awsError('ThrottlingException', 429, 'slow down'));
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-t2', msg, MAX_RECEIVES)), deps(callModel));
    expect(response.batchItemFailures).toEqual([]);
    expect(await ledger.get(SCOPE, 't2')).toMatchObject({
      status: 'failed',
      owner: `${RUN}/lane/t2`,
      error: { code: 'ThrottlingException' },
    });
    expect(s3.lines<FailureLine>(OUT, laneKeys.failures(RUN, 't2'))).toEqual([
      {
        recordId: 't2',
        line: 3,
        stage: 'converse',
        error: {
          code: 'ThrottlingException',
          message: expect.stringContaining(`still failing after ${MAX_RECEIVES} receives`),
          retryable: false,
        },
      },
    ]);
    expect(s3.text(OUT, laneKeys.results(RUN, 't2'))).toBeUndefined();
    expect(await laneOutcome('t2')).toMatchObject({ outcome: 'failed', code: 'ThrottlingException' });
    expect(queues.dlq).toEqual([
      {
        body: { ...msg, laneReason: expect.stringContaining(`still failing after ${MAX_RECEIVES} receives`) },
        code: 'ThrottlingException',
        reason: expect.stringContaining('slow down'),
      },
    ]);
    expect(queues.results).toEqual([]);
  });

  it('a redrive of the dead-lettered message that now succeeds replaces the failure (files, outcome, manifest)', async () => {
    const msg = retryable('t3');
    await handOver(msg);
    await runs.putBase(RUN, base(RUN, 1));
    const failing = model(() => throttled());
    await processLaneBatch(sqsEvent(sqsRecord('m-t3', msg, MAX_RECEIVES)), deps(failing));
    expect(s3.lines(OUT, laneKeys.failures(RUN, 't3'))).toHaveLength(1);
    const failedManifest = s3.json<RunManifest>(OUT, runKeys.manifest(RUN));
    expect(failedManifest).toMatchObject({
      revision: 2,
      counts: { succeeded: 6, failed: 2, pending: 0, recovered: 0 },
    });

    // The DLQ's message as it is redriven to the failure queue: a new message, first receive.
    const redriven = queues.dlq[0]?.body;
    expect(redriven).toMatchObject({ recordId: 't3', laneReason: expect.any(String) });
    const callModel = model();
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-redrive', redriven)), deps(callModel));
    expect(response.batchItemFailures).toEqual([]);
    expect(callModel).toHaveBeenCalledTimes(1);
    expect(await ledger.get(SCOPE, 't3')).toMatchObject({ status: 'published', owner: `${RUN}/lane/t3` });
    expect(s3.lines<ResultLine>(OUT, laneKeys.results(RUN, 't3'))).toEqual([
      { recordId: 't3', ...answer('t3', 1) },
    ]);
    expect(s3.text(OUT, laneKeys.failures(RUN, 't3'))).toBeUndefined();
    expect(await laneOutcome('t3')).toMatchObject({ outcome: 'succeeded' });
    expect(await laneOutcome('t3')).not.toHaveProperty('code');
    expect(s3.json<RunManifest>(OUT, runKeys.manifest(RUN))).toMatchObject({
      revision: 3,
      counts: { succeeded: 7, failed: 1, pending: 0, recovered: 1 },
    });
    expect(runEvents().map((e) => e.revision)).toEqual([2, 3]);
  });

  it('rejected by the model (validation): failed for good at once, with the reason', async () => {
    const msg = retryable('v1');
    await handOver(msg);
    const callModel = model(() => rejected());
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-v1', msg)), deps(callModel));
    expect(response.batchItemFailures).toEqual([]);
    expect(callModel).toHaveBeenCalledTimes(1);
    const reason =
      'the model rejected the retried request: the model API rejected the request: messages: too long';
    expect(await ledger.get(SCOPE, 'v1')).toMatchObject({
      status: 'failed',
      owner: `${RUN}/lane/v1`,
      error: { code: 'ValidationException', message: reason },
    });
    expect(s3.lines<FailureLine>(OUT, laneKeys.failures(RUN, 'v1'))).toEqual([
      {
        recordId: 'v1',
        line: 3,
        stage: 'converse',
        error: { code: 'ValidationException', message: reason, retryable: false },
      },
    ]);
    expect(await laneOutcome('v1')).toMatchObject({ outcome: 'failed', code: 'ValidationException' });
    expect(queues.dlq).toEqual([
      { body: { ...msg, laneReason: reason }, code: 'ValidationException', reason },
    ]);
  });

  it('a DLQ send that fails transiently returns the message to the queue (never dropped)', async () => {
    sqsMock.on(SendMessageCommand).rejects(awsError('ServiceUnavailable', 503));
    const msg = retryable('v2');
    const callModel = model(() => rejected());
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-v2', msg)), deps(callModel));
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: 'm-v2' }]);
    expect(queues.dlq).toEqual([]);

    // The redelivery reaches the DLQ; the record stays failed once, with one failure line.
    queues = recordQueues(sqsMock, { results: RESULTS, dlq: DLQ });
    const again = await processLaneBatch(sqsEvent(sqsRecord('m-v2', msg, 2)), deps(callModel));
    expect(again.batchItemFailures).toEqual([]);
    expect(queues.dlq).toEqual([expect.objectContaining({ code: 'ValidationException' })]);
    expect(s3.lines(OUT, laneKeys.failures(RUN, 'v2'))).toHaveLength(1);
    expect(await runs.laneTotals(RUN)).toMatchObject({ failed: 1, succeeded: 0 });
  });
});

describe('a record the lane does not hold', () => {
  it('held by a live unit claim: retried later; on the last receive dead-lettered with ClaimHeld, no outcome', async () => {
    const msg = retryable('h1');
    const holder = unit(RUN, 'batch', 'b-live');
    await ledger.claim(SCOPE, 'h1', holder, {
      contentHash: contentHashOf(msg.modelInput),
      leaseMs: LEASE_MS,
    });
    const callModel = model();

    await expect(processLaneRecord(sqsRecord('m-h1', msg), deps(callModel))).rejects.toMatchObject({
      name: 'RetryLaterError',
      code: 'ClaimHeld',
    });
    const first = await processLaneBatch(sqsEvent(sqsRecord('m-h1', msg, MAX_RECEIVES - 2)), deps(callModel));
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: 'm-h1' }]);
    expect(queues.dlq).toEqual([]);

    // The verdict comes one receive early (isLastReceive), keeping the last for a consumer killed meanwhile.
    const last = await processLaneBatch(sqsEvent(sqsRecord('m-h1', msg, MAX_RECEIVES - 1)), deps(callModel));
    expect(last.batchItemFailures).toEqual([]);
    expect(queues.dlq).toEqual([
      {
        body: { ...msg, laneReason: expect.stringContaining(`claimed by ${holder.owner}`) },
        code: 'ClaimHeld',
        reason: expect.stringContaining('redrive the DLQ once that claim has ended'),
      },
    ]);
    expect(callModel).not.toHaveBeenCalled();
    expect(await ledger.get(SCOPE, 'h1')).toMatchObject({ status: 'claimed', owner: holder.owner });
    expect(await laneOutcome('h1')).toBeUndefined();
    expect(s3.keys(OUT, `runs/${RUN}/`)).toEqual([]);
  });

  it('published by another run: skipped, recorded as such, no model call, nothing written or sent', async () => {
    const msg = retryable('p1');
    await handOver(msg);
    await publishElsewhere('p1', msg.modelInput);
    const callModel = model();
    const outcome = await processLaneRecord(sqsRecord('m-p1', msg), deps(callModel));
    expect(outcome).toEqual({ kind: 'skipped', recordId: 'p1', runId: RUN });
    expect(callModel).not.toHaveBeenCalled();
    expect(await laneOutcome('p1')).toMatchObject({ outcome: 'skipped' });
    expect(await ledger.get(SCOPE, 'p1')).toMatchObject({ status: 'published', runId: 'run-other' });
    expect(s3.keys(OUT, `runs/${RUN}/`)).toEqual([]);
    expect(queues.results).toEqual([]);
    expect(queues.dlq).toEqual([]);
  });

  it('published by a unit of the same run (a repeated hand-over): already settled, nothing recorded', async () => {
    const msg = retryable('p2');
    await publishElsewhere('p2', msg.modelInput, RUN);
    const callModel = model();
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-p2', msg)), deps(callModel));
    expect(response.batchItemFailures).toEqual([]);
    expect(await processLaneRecord(sqsRecord('m-p2', msg, 2), deps(callModel))).toEqual({
      kind: 'already-settled',
      recordId: 'p2',
    });
    expect(callModel).not.toHaveBeenCalled();
    expect(await laneOutcome('p2')).toBeUndefined();
    expect(s3.keys(OUT, `runs/${RUN}/`)).toEqual([]);
    expect(queues.results).toEqual([]);
    expect(queues.dlq).toEqual([]);
  });

  it('published by another run for a different request (RecordIdReused): failed for good in this run', async () => {
    const msg = retryable('u1');
    await publishElsewhere('u1', { messages: [{ role: 'user', content: [{ text: 'another record' }] }] });
    const callModel = model();
    const outcome = await processLaneRecord(sqsRecord('m-u1', msg), deps(callModel));
    expect(outcome).toMatchObject({ kind: 'failed', recordId: 'u1', code: 'RecordIdReused' });
    expect(callModel).not.toHaveBeenCalled();
    expect(s3.lines<FailureLine>(OUT, laneKeys.failures(RUN, 'u1'))).toEqual([
      expect.objectContaining({ recordId: 'u1', error: expect.objectContaining({ code: 'RecordIdReused' }) }),
    ]);
    expect(await laneOutcome('u1')).toMatchObject({ outcome: 'failed', code: 'RecordIdReused' });
    expect(queues.dlq).toEqual([
      expect.objectContaining({ code: 'RecordIdReused', reason: expect.stringContaining('run-other') }),
    ]);
    // The other run's publication stands.
    expect(await ledger.get(SCOPE, 'u1')).toMatchObject({ status: 'published', runId: 'run-other' });
  });
});

describe('messages that cannot succeed by retrying', () => {
  it('not retryable, or without a recordId: DLQ only, with its reason; no ledger entry, no outcome', async () => {
    const callModel = model();
    const badLine = {
      line: 12,
      stage: 'plan',
      runId: RUN,
      ledgerScope: SCOPE,
      error: { code: 'InvalidJson', message: 'line 12 is not valid JSON' },
    };
    const rejectedByBatch = retryable('v3', {
      error: { code: 'ValidationException', message: 'bad request', retryable: false },
    });
    const noRecordId = { ...retryable('x'), recordId: undefined };
    const response = await processLaneBatch(
      sqsEvent(
        sqsRecord('m-bad', badLine),
        sqsRecord('m-v3', rejectedByBatch),
        sqsRecord('m-noid', noRecordId),
      ),
      deps(callModel),
    );
    expect(response.batchItemFailures).toEqual([]);
    expect(callModel).not.toHaveBeenCalled();
    expect(queues.dlq).toHaveLength(3);
    expect(queues.dlq).toEqual(
      expect.arrayContaining([
        {
          body: { ...badLine, laneReason: expect.stringContaining('not retryable (InvalidJson') },
          code: 'InvalidJson',
          reason: expect.stringContaining('fix the record and run the corpus again'),
        },
        expect.objectContaining({
          body: expect.objectContaining({ recordId: 'v3' }),
          code: 'ValidationException',
        }),
        expect.objectContaining({ code: 'ThrottlingException' }),
      ]),
    );
    expect(await ledger.get(SCOPE, 'v3')).toBeUndefined();
    expect(await ledger.get(SCOPE, 'x')).toBeUndefined();
    expect(await runs.laneTotals(RUN)).toMatchObject({ succeeded: 0, failed: 0, skipped: 0 });
    expect(s3.keys(OUT)).toEqual([]);
  });

  it('a retryable failure without its request (too large for SQS): failed for good with the explanation', async () => {
    const { modelInput: _omitted, format: _format, ...withoutInput } = retryable('big');
    const callModel = model();
    const outcome = await processLaneRecord(sqsRecord('m-big', withoutInput), deps(callModel));
    expect(outcome).toMatchObject({ kind: 'failed', recordId: 'big', code: 'ThrottlingException' });
    expect(callModel).not.toHaveBeenCalled();
    expect(await ledger.get(SCOPE, 'big')).toMatchObject({ status: 'failed', owner: `${RUN}/lane/big` });
    const [failure] = s3.lines<FailureLine>(OUT, laneKeys.failures(RUN, 'big'));
    expect(failure?.error.message).toMatch(/too large for an SQS message: run the corpus again/);
    expect(await laneOutcome('big')).toMatchObject({ outcome: 'failed' });
    expect(queues.dlq).toEqual([
      expect.objectContaining({
        code: 'ThrottlingException',
        reason: expect.stringContaining('run the corpus again'),
      }),
    ]);
  });

  it('malformed bodies go to the DLQ with the reason and what could be read of them', async () => {
    const partial = {
      recordId: 'r9',
      stage: 'converse',
      error: { code: 'X', message: 'y', retryable: true },
    };
    const response = await processLaneBatch(
      sqsEvent(sqsRecord('m-junk', 'not json {'), sqsRecord('m-arr', '[1]'), sqsRecord('m-partial', partial)),
      deps(model()),
    );
    expect(response.batchItemFailures).toEqual([]);
    expect(queues.dlq).toEqual(
      expect.arrayContaining([
        {
          body: { laneReason: expect.stringContaining('not JSON'), originalBody: 'not json {' },
          code: 'MalformedMessage',
          reason: expect.stringContaining('the message body is not JSON'),
        },
        expect.objectContaining({
          body: { laneReason: 'the message body is not a JSON object', originalBody: '[1]' },
        }),
        expect.objectContaining({
          body: { ...partial, laneReason: expect.stringMatching(/runId: .*ledgerScope: /) },
        }),
      ]),
    );
    expect(queues.dlq).toHaveLength(3);
    expect(runEvents()).toEqual([]);
  });
});

describe('processLaneBatch: the run manifest and its event', () => {
  it('folds the settled records into a new manifest revision and puts one Corpus Run Updated event per run', async () => {
    const a = retryable('a');
    const b = retryable('b');
    const c = retryable('c', { runId: 'run-2' });
    await runs.putBase(RUN, base(RUN, 3));
    await runs.putBase('run-2', base('run-2', 1));
    const callModel = model((id) => (id === 'b' ? rejected() : undefined));
    const response = await processLaneBatch(
      sqsEvent(sqsRecord('m-a', a), sqsRecord('m-b', b), sqsRecord('m-c', c)),
      deps(callModel),
    );
    expect(response.batchItemFailures).toEqual([]);

    const manifest = s3.json<RunManifest>(OUT, runKeys.manifest(RUN));
    expect(manifest).toMatchObject({
      runId: RUN,
      revision: 2,
      counts: { records: 10, succeeded: 7, failed: 2, skipped: 0, pending: 1, recovered: 1 },
      tokens: { input: 107, output: 53 },
    });
    const other = s3.json<RunManifest>(OUT, runKeys.manifest('run-2'));
    expect(other).toMatchObject({
      revision: 2,
      counts: { succeeded: 7, failed: 1, pending: 0, recovered: 1 },
    });
    const events = runEvents();
    expect(events).toHaveLength(2);
    expect(events).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ runId: RUN, revision: 2, counts: manifest.counts }),
        expect.objectContaining({ runId: 'run-2', revision: 2, counts: other.counts }),
      ]),
    );
  });

  it('adds the lane model calls to the run item, and the manifest counts them', async () => {
    await runs.putBase(RUN, base(RUN, 2));
    const callModel = model((id, n) => (id === 't' && n === 1 ? throttled() : undefined));
    await processLaneBatch(
      sqsEvent(sqsRecord('m-t', retryable('t')), sqsRecord('m-ok', retryable('ok'))),
      deps(callModel),
    );
    await processLaneBatch(sqsEvent(sqsRecord('m-t', retryable('t'), 2)), deps(callModel));
    expect(callModel).toHaveBeenCalledTimes(3);
    const run = await runs.getRun(RUN);
    expect(run.laneCalls).toEqual({ total: 3, throttled: 1, retried: 0 });
    expect(s3.json<RunManifest>(OUT, runKeys.manifest(RUN))).toMatchObject({
      revision: 3,
      modelCalls: { total: 12, throttled: 3, retried: 1 },
      counts: { succeeded: 8, pending: 0, recovered: 2 },
    });
  });

  it('before Finalize wrote the base: outcomes and calls recorded, no manifest and no event (Finalize counts them)', async () => {
    const callModel = model();
    await processLaneBatch(sqsEvent(sqsRecord('m-a', retryable('a'))), deps(callModel));
    expect(await laneOutcome('a')).toMatchObject({ outcome: 'succeeded' });
    expect((await runs.getRun(RUN)).laneCalls.total).toBe(1);
    expect(s3.text(OUT, runKeys.manifest(RUN))).toBeUndefined();
    expect(runEvents()).toEqual([]);

    // Finalize then writes the base with the record still pending; the manifest folds the lane's outcome in.
    const revision = await runs.putBase(RUN, base(RUN, 1));
    const manifest = await writeManifest(runs, new S3Client({}), OUT, RUN, revision);
    expect(manifest).toMatchObject({ revision: 1, counts: { succeeded: 7, pending: 0, recovered: 1 } });
    expect(manifest.modelCalls.total).toBe(10);
  });

  it('a batch that settles nothing new makes no revision', async () => {
    await runs.putBase(RUN, base(RUN, 1));
    const msg = retryable('h');
    await ledger.claim(SCOPE, 'h', unit(RUN, 'batch', 'b'), { leaseMs: LEASE_MS });
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-h', msg)), deps(model()));
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: 'm-h' }]);
    expect(s3.text(OUT, runKeys.manifest(RUN))).toBeUndefined();
    expect(runEvents()).toEqual([]);
    expect((await runs.getRun(RUN)).revision).toBe(1);
  });

  it('a batch where every message is throttled is reported, not thrown', async () => {
    const callModel = model(() => throttled());
    const response = await processLaneBatch(
      sqsEvent(sqsRecord('m-a', retryable('a')), sqsRecord('m-b', retryable('b'))),
      deps(callModel),
    );
    expect(response.batchItemFailures.map((f) => f.itemIdentifier).sort()).toEqual(['m-a', 'm-b']);
    expect((await runs.getRun(RUN)).laneCalls).toEqual({ total: 2, throttled: 2, retried: 0 });
  });
});

describe('writeManifest', () => {
  it('two concurrent writers at different revisions leave the newest manifest in S3', async () => {
    await runs.putBase(RUN, base(RUN, 2));
    await runs.putLaneOutcome(RUN, 'x1', { outcome: 'succeeded', inputTokens: 1, outputTokens: 1 });
    const older = await runs.nextRevision(RUN);
    expect(older).toBe(2);

    // The older writer reads the lane's outcomes, then stalls before writing.
    const read = deferred();
    const resume = deferred();
    let stalled = false;
    const slowRuns: Pick<RunState, 'getRun' | 'laneTotals'> = {
      getRun: (id) => runs.getRun(id),
      laneTotals: async (id) => {
        const totals = await runs.laneTotals(id);
        if (!stalled) {
          stalled = true;
          read.resolve();
          await resume.promise;
        }
        return totals;
      },
    };
    const s3Client = new S3Client({});
    const olderWrite = writeManifest(slowRuns, s3Client, OUT, RUN, older!);
    await read.promise;

    // Meanwhile the lane settles another record and a newer writer takes the next revision and writes.
    await runs.putLaneOutcome(RUN, 'x2', { outcome: 'failed', inputTokens: 0, outputTokens: 0, code: 'E' });
    const newer = await runs.nextRevision(RUN);
    expect(newer).toBe(3);
    const newest = await writeManifest(runs, s3Client, OUT, RUN, newer!);
    expect(newest).toMatchObject({ revision: 3, counts: { succeeded: 7, failed: 2, pending: 0 } });

    resume.resolve();
    const last = await olderWrite;
    // The stale write happened after the newer one (the interleaving took place) ...
    const writes = s3Mock
      .commandCalls(PutObjectCommand)
      .filter((c) => c.args[0].input.Key === runKeys.manifest(RUN))
      .map((c) => JSON.parse(String(c.args[0].input.Body)) as RunManifest);
    expect(writes.map((m) => [m.revision, m.counts.failed])).toEqual([
      [3, 2],
      [2, 1],
      [3, 2],
    ]);
    // ... and the older writer noticed and wrote the newest state again.
    expect(last).toEqual(newest);
    expect(s3.json<RunManifest>(OUT, runKeys.manifest(RUN))).toEqual(newest);
  });
});

describe('isLastReceive', () => {
  it('gives the verdict one receive before maxReceiveCount, keeping the last for a killed consumer', () => {
    const at = (n: number) => sqsRecord('m', '{}', n);
    expect(isLastReceive(at(3), 5)).toBe(false);
    expect(isLastReceive(at(4), 5)).toBe(true);
    expect(isLastReceive(at(5), 5)).toBe(true);
    expect(isLastReceive(at(1), 1)).toBe(true);
    expect(isLastReceive(at(1), 2)).toBe(true);
    expect(isLastReceive(at(99), undefined)).toBe(false);
  });
});

describe('parseLaneMessage and laneKeys', () => {
  it('accepts a redriven message carrying an earlier laneReason and keeps the raw body', () => {
    const parsed = parseLaneMessage(JSON.stringify({ ...retryable('r1'), laneReason: 'earlier', extra: 1 }));
    expect(parsed.ok).toBe(true);
    if (parsed.ok) {
      expect(parsed.message.laneReason).toBe('earlier');
      expect(parsed.raw.extra).toBe(1);
    }
  });

  it('refuses arrays, scalars and bodies missing the run', () => {
    expect(parseLaneMessage('[1]')).toMatchObject({
      ok: false,
      reason: 'the message body is not a JSON object',
    });
    expect(parseLaneMessage('3')).toMatchObject({ ok: false });
    expect(parseLaneMessage(JSON.stringify({ ...retryable('r1'), runId: '' }))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('runId'),
    });
  });

  it('gives each record its own files, the same in every attempt, apart from other records and runs', () => {
    const keys = (run: string, id: string): string[] => [
      laneKeys.results(run, id),
      laneKeys.failures(run, id),
      laneKeys.attemptsPrefix(run, id),
    ];
    expect(keys(RUN, 'r1')).toEqual(keys(RUN, 'r1'));
    const all = [...keys(RUN, 'r1'), ...keys(RUN, 'r2'), ...keys('run-2', 'r1'), ...keys(RUN, 'r#1/../x')];
    expect(new Set(all).size).toBe(all.length);
    for (const key of keys(RUN, 'r#1/../x'))
      expect(key).toMatch(/^runs\/run-9\/[a-z]+\/lane-[0-9a-f]{32}(\.jsonl|\/)$/);
  });
});
