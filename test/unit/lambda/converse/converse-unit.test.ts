import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { batchIdOf } from '../../../../lambda/converse/item-batch-id';
import type {
  ItemBatchEvent,
  ItemBatchSummary,
  FailureLine,
  ResultLine,
  WorkItem,
} from '../../../../lambda/shared/contracts';
import {
  converseUnitDeadline,
  converseUnitKeys,
  processBatch,
  SAFETY_MARGIN_MS,
  type ConverseUnitDeps,
} from '../../../../lambda/converse/converse-unit';
import { FailureLaneSender } from '../../../../lambda/shared/failure-lane';
import { Ledger, unitOwner, type Claimant, type LedgerEntry } from '../../../../lambda/shared/ledger';
import {
  toConverseInput,
  type ModelCaller,
  type ModelCallStats,
} from '../../../../lambda/converse/model-caller';
import { contentHashOf } from '../../../../lambda/shared/records';
import type { PublishedRecord } from '../../../../lambda/shared/results-queue';
import {
  freshLedger,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from '../failure-lane/lane-fixtures';
import { awsError, FakeS3, recordSqs, type SentBatch } from '../helpers';
import { useClientMocks } from '../../../support/aws-mocks';
import {
  FAILURE_DLQ_URL as DLQ,
  FAILURE_QUEUE_URL as QUEUE,
  OUTPUT_BUCKET as OUT,
} from '../../../support/names';

// processBatch (lambda/converse/converse-unit.ts) against the real Ledger on
// dynalite, an in-memory S3 and a recording SQS behind aws-sdk-client-mock, a fake model and a recording results
// publisher.

const [s3Mock, sqsMock] = useClientMocks(S3Client, SQSClient);

const RUN = 'run-7';
const SCOPE = 'test/model';
const LEASE = 60_000;

let server: LedgerServer;
let tables = 0;
let ledger: Ledger;
/** The ledger's clock (epoch ms). */
let clock: number;
let s3: FakeS3;
let sent: SentBatch[];
/** What the results queue accepted, in order. */
let delivered: PublishedRecord[];

beforeAll(async () => {
  server = await startLedgerServer();
});

afterAll(async () => {
  await stopLedgerServer(server);
});

beforeEach(async () => {
  s3 = new FakeS3(s3Mock).install();
  sent = recordSqs(sqsMock);
  delivered = [];
  clock = Date.now();
  const { table } = await freshLedger(server, `converse-${++tables}`);
  ledger = new Ledger({ client: server.doc, tableName: table, ttlDays: 30, now: () => clock });
});

afterEach(() => {
  delete (globalThis as { __corpusFaultPoint?: unknown }).__corpusFaultPoint;
});

const SOURCE = 'drop/part-1.jsonl';

function item(recordId: string, line: number, text = `question ${recordId}`): WorkItem {
  return {
    recordId,
    source: SOURCE,
    line,
    format: 'converse',
    modelInput: { messages: [{ role: 'user', content: [{ text }] }] },
  };
}

function batch(...items: WorkItem[]): ItemBatchEvent {
  return { BatchInput: { runId: RUN, ledgerScope: SCOPE }, Items: items };
}

function idOf(ev: ItemBatchEvent): string {
  return batchIdOf(
    RUN,
    ev.Items.map((i) => i.recordId),
  );
}

function ownerOf(ev: ItemBatchEvent): string {
  return unitOwner(RUN, 'batch', idOf(ev));
}

function answerOf(recordId: string): { modelOutput: unknown; usage: ResultLine['usage'] } {
  const input = 10 + recordId.length;
  return {
    modelOutput: { output: { message: { role: 'assistant', content: [{ text: `answer ${recordId}` }] } } },
    usage: { inputTokens: input, outputTokens: 5, totalTokens: input + 5 },
  };
}

const throttle = Object.assign(awsError('ThrottlingException', 429, 'Too many requests', true), {
  $metadata: { httpStatusCode: 429, attempts: 3 },
});
const invalid = awsError('ValidationException', 400, 'messages: first turn must be user');

/**
 * A model answering every record but those given an error, each after its delay; it counts its calls per record and
 * as the client's counter would (a throttled call counts as throttled).
 */
class FakeModel {
  readonly calls = new Map<string, number>();
  readonly stats: ModelCallStats;
  readonly call: jest.Mock<ModelCaller>;

  constructor(
    errors: Record<string, Error> = {},
    delays: Record<string, number> = {},
    /** Calls the container made before this test's attempts (another invocation's). */
    earlier: ModelCallStats = { total: 0, throttled: 0, retried: 0 },
  ) {
    this.stats = { ...earlier };
    this.call = jest.fn<ModelCaller>(async (work) => {
      this.calls.set(work.recordId, (this.calls.get(work.recordId) ?? 0) + 1);
      this.stats.total++;
      const delay = delays[work.recordId];
      if (delay) await new Promise((r) => setTimeout(r, delay));
      const err = errors[work.recordId];
      if (err) {
        if (err.name === 'ThrottlingException') this.stats.throttled++;
        throw err;
      }
      return answerOf(work.recordId);
    });
  }

  snapshot = (): ModelCallStats => ({ ...this.stats });
}

function deps(model: FakeModel | undefined, overrides: Partial<ConverseUnitDeps> = {}): ConverseUnitDeps {
  return {
    s3: new S3Client({}),
    ledger,
    failureLane: new FailureLaneSender(new SQSClient({}), QUEUE, DLQ),
    ...(model ? { callModel: model.call, modelCalls: model.snapshot } : {}),
    resultsPublisher: {
      publish: async (records) => {
        delivered.push(...records);
      },
    },
    outputBucket: OUT,
    itemConcurrency: 4,
    leaseMs: LEASE,
    remainingMs: () => 280_000,
    ...overrides,
  };
}

/** The batch's results file, or [] when there is none. */
function results(ev: ItemBatchEvent): ResultLine[] {
  const key = converseUnitKeys.results(RUN, idOf(ev));
  return s3.text(OUT, key) === undefined ? [] : s3.lines<ResultLine>(OUT, key);
}

/** The batch's failures file, or [] when there is none. */
function failures(ev: ItemBatchEvent): FailureLine[] {
  const key = converseUnitKeys.failures(RUN, idOf(ev));
  return s3.text(OUT, key) === undefined ? [] : s3.lines<FailureLine>(OUT, key);
}

function laneMessages(url = QUEUE) {
  return sent.filter((b) => b.queueUrl === url).flatMap((b) => b.messages);
}

function count<T>(values: readonly T[], value: T): number {
  return values.filter((v) => v === value).length;
}

async function entry(recordId: string): Promise<LedgerEntry | undefined> {
  return ledger.get(SCOPE, recordId);
}

/** Installs the local runtime's fault hook: it throws at `step` of converse-batch and notes every step it passes. */
function crashAt(step: string): string[] {
  const seen: string[] = [];
  (globalThis as { __corpusFaultPoint?: (handler: string, s: string) => void }).__corpusFaultPoint = (
    handler,
    s,
  ) => {
    seen.push(`${handler}:${s}`);
    if (handler === 'converse-batch' && s === step) {
      const err = new Error(`injected crash at ${step}`);
      err.name = 'InjectedCrash';
      throw err;
    }
  };
  return seen;
}

function noFaults(): void {
  delete (globalThis as { __corpusFaultPoint?: unknown }).__corpusFaultPoint;
}

function expectBalanced(summary: ItemBatchSummary): void {
  expect(summary.succeeded + summary.failed + summary.skipped + summary.queued).toBe(summary.records);
}

describe('processBatch: one attempt over a mixed batch', () => {
  // ok1 answers last; slow is throttled (retryable), bad is invalid (final); theirs is held by another unit;
  // reused was published by an earlier run for another request.
  const ev = batch(
    item('ok1', 1),
    item('slow', 2),
    item('bad', 3),
    item('ok2', 5),
    item('theirs', 8),
    item('reused', 9, 'the new question'),
  );
  const other: Claimant = { runId: 'run-6', owner: unitOwner('run-6', 'batch', 'x'), attempt: 'o1' };
  const earlier: Claimant = { runId: 'run-5', owner: unitOwner('run-5', 'batch', 'y'), attempt: 'e1' };
  let model: FakeModel;
  let summary: ItemBatchSummary;

  beforeEach(async () => {
    await ledger.claim(SCOPE, 'theirs', other, { leaseMs: LEASE });
    await ledger.claim(SCOPE, 'reused', earlier, {
      leaseMs: LEASE,
      contentHash: contentHashOf(item('reused', 9, 'the old question').modelInput),
    });
    await ledger.commit(SCOPE, 'reused', earlier, 'runs/run-5/results/y.jsonl');
    model = new FakeModel(
      { slow: throttle, bad: invalid },
      { ok1: 50 },
      { total: 5, throttled: 2, retried: 1 },
    );
    summary = await processBatch(ev, deps(model, { newAttempt: () => 'a1' }));
  });

  it('writes the results file in item order with the published records only', () => {
    expect(converseUnitKeys.results(RUN, idOf(ev))).toMatch(/^runs\/run-7\/results\/[0-9a-f]{20}\.jsonl$/);
    expect(results(ev)).toEqual([
      { recordId: 'ok1', ...answerOf('ok1') },
      { recordId: 'ok2', ...answerOf('ok2') },
    ]);
  });

  it('writes final failures only, in item order: the invalid record and the reused recordId', () => {
    expect(failures(ev)).toEqual([
      {
        recordId: 'bad',
        source: SOURCE,
        line: 3,
        stage: 'converse',
        error: {
          code: 'ValidationException',
          message: 'the model API rejected the request: messages: first turn must be user',
          retryable: false,
        },
      },
      {
        recordId: 'reused',
        source: SOURCE,
        line: 9,
        stage: 'converse',
        error: expect.objectContaining({ code: 'RecordIdReused', retryable: false }),
      },
    ]);
    expect(failures(ev)[1]?.error.message).toContain('run-5');
  });

  it('hands the throttled record, with its request, to the failure queue and leaves it in neither file', async () => {
    expect(laneMessages(QUEUE)).toEqual([
      {
        recordId: 'slow',
        source: SOURCE,
        line: 2,
        stage: 'converse',
        error: {
          code: 'ThrottlingException',
          message: "throttled by the model's quota (after 3 attempts): Too many requests",
          retryable: true,
        },
        runId: RUN,
        ledgerScope: SCOPE,
        format: 'converse',
        modelInput: item('slow', 2).modelInput,
      },
    ]);
    expect(await entry('slow')).toMatchObject({
      status: 'queued',
      owner: ownerOf(ev),
      error: { code: 'ThrottlingException' },
    });
  });

  it('sends the final failures to the DLQ', () => {
    expect(laneMessages(DLQ).map((m) => [m.recordId, m.error.code, m.error.retryable])).toEqual([
      ['bad', 'ValidationException', false],
      ['reused', 'RecordIdReused', false],
    ]);
  });

  it('counts every record once, tokens of the published records only, and its own model calls', () => {
    expect(summary).toEqual({
      batchId: idOf(ev),
      records: 6,
      succeeded: 2,
      failed: 2,
      skipped: 1,
      queued: 1,
      inputTokens: answerOf('ok1').usage.inputTokens + answerOf('ok2').usage.inputTokens,
      outputTokens: 10,
      // The container's five earlier calls are not this attempt's.
      modelCalls: { total: 4, throttled: 1, retried: 0 },
    });
    expectBalanced(summary);
  });

  it('calls the model once for each record it holds, never for records others hold or published', () => {
    expect(Object.fromEntries(model.calls)).toEqual({ ok1: 1, slow: 1, bad: 1, ok2: 1 });
  });

  it("moves the ledger: published (delivered) with the results key, failed; others' records untouched", async () => {
    const resultKey = converseUnitKeys.results(RUN, idOf(ev));
    for (const id of ['ok1', 'ok2']) {
      expect(await entry(id)).toMatchObject({
        status: 'published',
        owner: ownerOf(ev),
        attempt: 'a1',
        resultKey,
        delivered: true,
        contentHash: contentHashOf(item(id, 1).modelInput),
      });
    }
    expect(await entry('bad')).toMatchObject({ status: 'failed', error: { code: 'ValidationException' } });
    expect(await entry('theirs')).toMatchObject({ status: 'claimed', owner: other.owner });
    expect(await entry('reused')).toMatchObject({ status: 'published', owner: earlier.owner });
    expect(delivered.map((d) => [d.recordId, d.resultKey, d.ledgerScope, d.runId])).toEqual([
      ['ok1', resultKey, SCOPE, RUN],
      ['ok2', resultKey, SCOPE, RUN],
    ]);
  });

  it('writes nothing for the record another unit holds', () => {
    const mentioned = [...results(ev), ...failures(ev), ...laneMessages(QUEUE), ...laneMessages(DLQ)].map(
      (l) => l.recordId,
    );
    expect(mentioned).not.toContain('theirs');
    expect(delivered.map((d) => d.recordId)).not.toContain('theirs');
  });

  it('a later attempt of the batch makes no model call and writes the same files', async () => {
    const before = {
      results: s3.text(OUT, converseUnitKeys.results(RUN, idOf(ev))),
      failures: s3.text(OUT, converseUnitKeys.failures(RUN, idOf(ev))),
    };
    const again = await processBatch(ev, deps(model, { newAttempt: () => 'a2' }));
    expect(model.call).toHaveBeenCalledTimes(4);
    expect(s3.text(OUT, converseUnitKeys.results(RUN, idOf(ev)))).toBe(before.results);
    expect(s3.text(OUT, converseUnitKeys.failures(RUN, idOf(ev)))).toBe(before.failures);
    // The same summary: the calls are the batch's across its attempts (this one made none), as the history holds them.
    expect(again).toEqual(summary);
    // Already delivered: no second results-queue message; the failure the ledger holds is not dead-lettered again
    // (the reused recordId has no ledger decision of this unit to remember, so it may be).
    expect(delivered).toHaveLength(2);
    expect(
      count(
        laneMessages(DLQ).map((m) => m.recordId),
        'bad',
      ),
    ).toBe(1);
    // The hand-over is sent again (the lane drops a duplicate; a lost first send would strand the record otherwise).
    expect(laneMessages(QUEUE).map((m) => m.recordId)).toEqual(['slow', 'slow']);
    // The ledger keeps the first attempt's decisions.
    expect(await entry('ok1')).toMatchObject({ status: 'published', attempt: 'a1' });
    expect(s3.keys(OUT, converseUnitKeys.attemptsPrefix(RUN, idOf(ev)))).toEqual([
      converseUnitKeys.attempt(RUN, idOf(ev), 'a1'),
    ]);
  });
});

describe('processBatch: a clean batch', () => {
  it('publishes every record and removes a failures file an earlier attempt left', async () => {
    const ev = batch(item('r1', 1), item('r2', 2), item('r3', 5));
    s3.putLines(OUT, converseUnitKeys.failures(RUN, idOf(ev)), [{ recordId: 'r2', stage: 'converse' }]);
    const model = new FakeModel();
    const summary = await processBatch(ev, deps(model));
    expect(results(ev).map((l) => l.recordId)).toEqual(['r1', 'r2', 'r3']);
    expect(s3.text(OUT, converseUnitKeys.failures(RUN, idOf(ev)))).toBeUndefined();
    expect(summary).toMatchObject({ records: 3, succeeded: 3, failed: 0, skipped: 0, queued: 0 });
    expect(sent).toEqual([]);
  });

  it('names the batch deterministically from the run and its records', () => {
    expect(batchIdOf(RUN, ['r1', 'r2'])).toBe(batchIdOf(RUN, ['r1', 'r2']));
    expect(batchIdOf(RUN, ['r1', 'r2'])).not.toBe(batchIdOf(RUN, ['r2', 'r1']));
    expect(batchIdOf(RUN, ['r1', 'r2'])).not.toBe(batchIdOf('run-8', ['r1', 'r2']));
    expect(batchIdOf(RUN, ['r1r2'])).not.toBe(batchIdOf(RUN, ['r1', 'r2']));
  });

  it("writes a record's result line only once the ledger holds its commit", async () => {
    const ev = batch(item('r1', 1), item('r2', 2));
    const seen: (string | undefined)[] = [];
    s3Mock.on(PutObjectCommand).callsFake(async (input: { Bucket: string; Key: string; Body: string }) => {
      if (input.Key === converseUnitKeys.results(RUN, idOf(ev))) {
        for (const id of ['r1', 'r2']) seen.push((await entry(id))?.status);
      }
      s3.put(input.Bucket, input.Key, input.Body);
      return {};
    });
    await processBatch(ev, deps(new FakeModel()));
    expect(seen).toEqual(['published', 'published']);
  });
});

describe('processBatch: crash and retry', () => {
  // A batch with a record of each kind; attempt 1 dies at a fault point, attempt 2 (the workflow's retry) finishes.
  const ev = batch(item('ok1', 1), item('slow', 2), item('bad', 3), item('ok2', 4));
  const points = [
    'after-claim',
    'after-stage',
    'after-commit',
    'after-results',
    'after-queue-send',
    'after-release',
  ] as const;

  it.each(points)(
    'a crash %s: every record ends exactly once, the model is asked once per record',
    async (point) => {
      const model = new FakeModel({ slow: throttle, bad: invalid });
      const seen = crashAt(point);
      await expect(processBatch(ev, deps(model, { newAttempt: () => 'a1' }))).rejects.toMatchObject({
        name: 'InjectedCrash',
      });
      // The fault happened where it was asked for, and nothing after it ran.
      expect(seen[seen.length - 1]).toBe(`converse-batch:${point}`);
      noFaults();

      const summary = await processBatch(ev, deps(model, { newAttempt: () => 'a2' }));

      // One line per published record, one per final failure; the queued one is in neither file.
      expect(results(ev).map((l) => l.recordId)).toEqual(['ok1', 'ok2']);
      expect(results(ev)[0]).toEqual({ recordId: 'ok1', ...answerOf('ok1') });
      expect(failures(ev).map((l) => [l.recordId, l.error.code])).toEqual([['bad', 'ValidationException']]);
      expect(await entry('slow')).toMatchObject({ status: 'queued', owner: ownerOf(ev) });
      expect(await entry('bad')).toMatchObject({ status: 'failed', owner: ownerOf(ev) });
      for (const id of ['ok1', 'ok2']) {
        expect(await entry(id)).toMatchObject({ status: 'published', owner: ownerOf(ev), delivered: true });
      }
      expect(summary).toMatchObject({ records: 4, succeeded: 2, failed: 1, skipped: 0, queued: 1 });
      expect(summary.inputTokens).toBe(answerOf('ok1').usage.inputTokens + answerOf('ok2').usage.inputTokens);

      // The model was asked once per record across both attempts: attempt 2 reused what attempt 1 staged.
      expect(Object.fromEntries(model.calls)).toEqual({ ok1: 1, slow: 1, bad: 1, ok2: 1 });
      // Every attempt's calls count, a crashed attempt's too (once staged): four calls in all, whoever made them.
      expect(summary.modelCalls.total).toBe(4);

      // The hand-over went out once (attempt 1 died before its sends); a final failure is never dead-lettered twice.
      const handedOver = laneMessages(QUEUE).map((m) => m.recordId);
      expect(handedOver).toEqual(['slow']);
      expect(laneMessages(QUEUE)[0]?.modelInput).toEqual(item('slow', 2).modelInput);
      const deadLettered = laneMessages(DLQ).map((m) => m.recordId);
      expect(count(deadLettered, 'bad')).toBeLessThanOrEqual(1);
      expect(deadLettered.filter((id) => id !== 'bad')).toEqual([]);
      if (point === 'after-claim' || point === 'after-stage') {
        // Attempt 2 made the record's final transition: it dead-letters it.
        expect(deadLettered).toEqual(['bad']);
      }

      // The results queue: once per record, twice only when attempt 1 died between the send and the mark.
      const sends = delivered.map((d) => d.recordId);
      const expected = point === 'after-queue-send' ? 2 : 1;
      expect([count(sends, 'ok1'), count(sends, 'ok2')]).toEqual([expected, expected]);
      expect(sends.filter((id) => id !== 'ok1' && id !== 'ok2')).toEqual([]);
    },
  );

  it('a retry whose attempt 1 died after staging writes the same files as an attempt that did not die', async () => {
    const clean = batch(item('ok1', 1), item('slow', 2), item('bad', 3), item('ok2', 4));
    await processBatch(clean, deps(new FakeModel({ slow: throttle, bad: invalid })));
    const expected = {
      results: s3.text(OUT, converseUnitKeys.results(RUN, idOf(clean))),
      failures: s3.text(OUT, converseUnitKeys.failures(RUN, idOf(clean))),
    };

    // The same batch in a fresh ledger and bucket, with a crash after staging.
    const { table } = await freshLedger(server, `converse-${++tables}`);
    ledger = new Ledger({ client: server.doc, tableName: table, ttlDays: 30, now: () => clock });
    s3.objects.clear();
    const model = new FakeModel({ slow: throttle, bad: invalid });
    crashAt('after-stage');
    await expect(processBatch(clean, deps(model, { newAttempt: () => 'a1' }))).rejects.toThrow('injected');
    noFaults();
    await processBatch(clean, deps(model, { newAttempt: () => 'a2' }));
    expect(s3.text(OUT, converseUnitKeys.results(RUN, idOf(clean)))).toBe(expected.results);
    expect(s3.text(OUT, converseUnitKeys.failures(RUN, idOf(clean)))).toBe(expected.failures);
    // Attempt 2 had nothing to stage: its answers are attempt 1's.
    expect(s3.keys(OUT, converseUnitKeys.attemptsPrefix(RUN, idOf(clean)))).toEqual([
      converseUnitKeys.attempt(RUN, idOf(clean), 'a1'),
    ]);
    expect(await entry('ok1')).toMatchObject({ status: 'published', attempt: 'a2' });
  });
});

describe('processBatch: Finalize repairing a dead batch (no model)', () => {
  const giveUp = { code: 'BatchDied', message: 'the batch child died; the failure lane retries its records' };

  it('after a crash after claiming: hands every undecided record to the lane with the reason', async () => {
    const ev = batch(item('a', 1), item('b', 2), item('c', 3));
    const model = new FakeModel();
    crashAt('after-claim');
    await expect(processBatch(ev, deps(model))).rejects.toThrow('injected');
    noFaults();
    expect(await entry('a')).toMatchObject({ status: 'claimed', owner: ownerOf(ev) });

    const summary = await processBatch(ev, deps(undefined, { giveUp }));
    expect(model.call).not.toHaveBeenCalled();
    expect(summary).toMatchObject({ records: 3, succeeded: 0, failed: 0, skipped: 0, queued: 3 });
    expect(summary.modelCalls).toEqual({ total: 0, throttled: 0, retried: 0 });
    expect(laneMessages(QUEUE)).toEqual(
      ['a', 'b', 'c'].map((id, i) =>
        expect.objectContaining({
          recordId: id,
          line: i + 1,
          error: { ...giveUp, retryable: true },
          modelInput: item(id, i + 1).modelInput,
        }),
      ),
    );
    for (const id of ['a', 'b', 'c']) {
      expect(await entry(id)).toMatchObject({ status: 'queued', owner: ownerOf(ev), error: giveUp });
    }
    expect(results(ev)).toEqual([]);
    expect(failures(ev)).toEqual([]);
  });

  it('keeps what the dead attempt decided and hands over only what it had not', async () => {
    // d is held by a unit that dies too: attempt 1 skips it; by the repair its lease has run out.
    const ev = batch(item('a', 1), item('b', 2), item('c', 3), item('d', 4));
    const dead: Claimant = { runId: 'run-6', owner: unitOwner('run-6', 'batch', 'z'), attempt: 'z1' };
    await ledger.claim(SCOPE, 'd', dead, { leaseMs: LEASE });
    const model = new FakeModel({ b: invalid, c: throttle });
    crashAt('after-stage');
    await expect(processBatch(ev, deps(model))).rejects.toThrow('injected');
    noFaults();
    clock += LEASE + 1;

    const summary = await processBatch(ev, deps(undefined, { giveUp }));
    expect(model.call).toHaveBeenCalledTimes(3);
    expect(summary).toMatchObject({ records: 4, succeeded: 1, failed: 1, skipped: 0, queued: 2 });
    expect(results(ev)).toEqual([{ recordId: 'a', ...answerOf('a') }]);
    expect(failures(ev).map((f) => [f.recordId, f.error.code])).toEqual([['b', 'ValidationException']]);
    // c keeps the reason it was staged with; d, which nobody decided, gets the repair's.
    expect(laneMessages(QUEUE).map((m) => [m.recordId, m.error.code])).toEqual([
      ['c', 'ThrottlingException'],
      ['d', giveUp.code],
    ]);
    expect(await entry('d')).toMatchObject({ status: 'queued', owner: ownerOf(ev) });
    expect(await entry('a')).toMatchObject({ status: 'published', delivered: true });
  });
});

describe('processBatch: the failure lane racing a retry of the batch', () => {
  const ev = batch(item('ok', 1), item('x', 2));
  const lane: Claimant = { runId: RUN, owner: unitOwner(RUN, 'lane', 'x'), attempt: 'lane-1' };

  async function attempt1(model: FakeModel): Promise<void> {
    crashAt('before-return');
    await expect(processBatch(ev, deps(model, { newAttempt: () => 'a1' }))).rejects.toThrow('injected');
    noFaults();
    expect(await entry('x')).toMatchObject({ status: 'queued', owner: ownerOf(ev) });
    expect(laneMessages(QUEUE).map((m) => m.recordId)).toEqual(['x']);
  }

  it('the lane published x: the retry counts it queued, never asks the model for it, writes nothing for it', async () => {
    const model = new FakeModel({ x: throttle });
    await attempt1(model);
    const laneKey = `runs/${RUN}/results/lane-x.jsonl`;
    expect(
      await ledger.claim(SCOPE, 'x', lane, {
        leaseMs: LEASE,
        reclaimOwn: 'queued-or-failed',
        contentHash: contentHashOf(item('x', 2).modelInput),
      }),
    ).toMatchObject({ kind: 'claimed' });
    expect(await ledger.commit(SCOPE, 'x', lane, laneKey)).toEqual({ kind: 'done' });

    const summary = await processBatch(ev, deps(model, { newAttempt: () => 'a2' }));
    expect(summary).toMatchObject({ records: 2, succeeded: 1, failed: 0, skipped: 0, queued: 1 });
    expect(model.calls.get('x')).toBe(1);
    expect(results(ev).map((l) => l.recordId)).toEqual(['ok']);
    expect(failures(ev)).toEqual([]);
    // Not handed over again, and the lane's publication stands.
    expect(laneMessages(QUEUE).map((m) => m.recordId)).toEqual(['x']);
    expect(await entry('x')).toMatchObject({ status: 'published', owner: lane.owner, resultKey: laneKey });
    expect(delivered.map((d) => d.recordId)).toEqual(['ok']);
  });

  it('the lane still holds x: the retry counts it queued and leaves it to the lane', async () => {
    const model = new FakeModel({ x: throttle });
    await attempt1(model);
    await ledger.claim(SCOPE, 'x', lane, { leaseMs: LEASE, reclaimOwn: 'queued-or-failed' });

    const summary = await processBatch(ev, deps(model, { newAttempt: () => 'a2' }));
    expect(summary).toMatchObject({ succeeded: 1, queued: 1, skipped: 0 });
    expect(model.calls.get('x')).toBe(1);
    expect(laneMessages(QUEUE)).toHaveLength(1);
    expect(await entry('x')).toMatchObject({ status: 'claimed', owner: lane.owner, attempt: 'lane-1' });
  });
});

describe('processBatch: time', () => {
  it('queues records as NotAttempted without a model call when the deadline leaves no time', async () => {
    const ev = batch(item('a', 1), item('b', 2));
    const model = new FakeModel();
    const summary = await processBatch(ev, deps(model, { remainingMs: () => SAFETY_MARGIN_MS + 500 }));
    expect(model.call).not.toHaveBeenCalled();
    expect(summary).toMatchObject({ succeeded: 0, failed: 0, queued: 2 });
    expect(
      laneMessages(QUEUE).map((m) => [m.recordId, m.error.code, m.error.retryable, m.modelInput]),
    ).toEqual([
      ['a', 'NotAttempted', true, item('a', 1).modelInput],
      ['b', 'NotAttempted', true, item('b', 2).modelInput],
    ]);
    expect(await entry('a')).toMatchObject({ status: 'queued', error: { code: 'NotAttempted' } });
    expect(results(ev)).toEqual([]);
    expect(failures(ev)).toEqual([]);
  });

  it('cuts a model call off at the deadline and queues the record as a retryable TimeoutError', async () => {
    let aborted = false;
    const hang: ModelCaller = (_work, signal) =>
      new Promise((_resolve, reject) =>
        signal.addEventListener('abort', () => {
          aborted = true;
          reject(awsError('AbortError', 0, 'Request aborted'));
        }),
      );
    const ev = batch(item('a', 1));
    const started = Date.now();
    // One second left after the safety margin.
    const summary = await processBatch(
      ev,
      deps(undefined, { callModel: hang, remainingMs: () => SAFETY_MARGIN_MS + 1_000 }),
    );
    expect(aborted).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(summary).toMatchObject({ queued: 1, failed: 0 });
    expect(laneMessages(QUEUE)[0]?.error).toMatchObject({ code: 'TimeoutError', retryable: true });
    expect(await entry('a')).toMatchObject({ status: 'queued', error: { code: 'TimeoutError' } });
  });
});

describe('converseUnitDeadline', () => {
  const now = Date.parse('2024-05-01T12:00:00.000Z');

  it('is the invocation end when the child has more time left', () => {
    const started = new Date(now - 10_000).toISOString();
    expect(converseUnitDeadline(now, 60_000, started, 300)).toBe(now + 60_000);
  });

  it('is the child budget end when that comes first (a retry late in the child)', () => {
    const started = new Date(now - 250_000).toISOString();
    expect(converseUnitDeadline(now, 600_000, started, 300)).toBe(now + 50_000);
  });

  it.each([undefined, 'not a date', ''])('ignores a missing or invalid childStartedAt (%p)', (started) => {
    expect(converseUnitDeadline(now, 60_000, started, 300)).toBe(now + 60_000);
  });
});

describe('processBatch: dependency failures', () => {
  it.each([
    // The history cannot be read: nothing is claimed or asked yet.
    ['ListObjectsV2', (err: Error) => s3Mock.on(ListObjectsV2Command).rejects(err), 1],
    // The answer cannot be staged: it is lost with the attempt, and the retry asks again.
    ['PutObject', (err: Error) => s3Mock.on(PutObjectCommand).rejects(err), 2],
  ] as [string, (err: Error) => void, number][])(
    'surfaces a throttled S3 %s as TransientDependencyError; a retry then finishes',
    async (name, fail, calls) => {
      const ev = batch(item('a', 1));
      const model = new FakeModel();
      fail(awsError('SlowDown', 503, 'Please reduce your request rate.'));
      await expect(processBatch(ev, deps(model))).rejects.toMatchObject({
        name: 'TransientDependencyError',
        message: `S3 ${name} failed transiently: Please reduce your request rate.`,
      });
      s3.install(); // S3 recovers
      expect((await entry('a'))?.status ?? 'none').not.toBe('published');
      expect(results(ev)).toEqual([]);

      const summary = await processBatch(ev, deps(model));
      expect(summary).toMatchObject({ succeeded: 1 });
      expect(results(ev).map((l) => l.recordId)).toEqual(['a']);
      expect(model.call).toHaveBeenCalledTimes(calls);
    },
  );

  it('surfaces a throttled S3 DeleteObject (no failures to write) as TransientDependencyError', async () => {
    s3Mock.on(DeleteObjectCommand).rejects(awsError('SlowDown', 503, 'slow down'));
    await expect(processBatch(batch(item('a', 1)), deps(new FakeModel()))).rejects.toMatchObject({
      name: 'TransientDependencyError',
    });
  });

  it('surfaces a throttled ledger as TransientDependencyError before any model call', async () => {
    const doc = DynamoDBDocumentClient.from(new DynamoDBClient({ region: 'us-east-1' }));
    const ddbMock = mockClient(doc);
    try {
      ddbMock
        .on(UpdateCommand)
        .rejects(awsError('ProvisionedThroughputExceededException', 400, 'throughput'));
      const throttled = new Ledger({ client: doc, tableName: 'ledger-table', ttlDays: 30 });
      const model = new FakeModel();
      await expect(
        processBatch(batch(item('a', 1)), deps(model, { ledger: throttled })),
      ).rejects.toMatchObject({
        name: 'TransientDependencyError',
      });
      expect(model.call).not.toHaveBeenCalled();
    } finally {
      ddbMock.restore();
    }
  });
});

describe('toConverseInput', () => {
  it('passes the Converse fields through with the model id', () => {
    const input = toConverseInput('model-x', {
      messages: [{ role: 'user', content: [{ text: 'hi' }] }],
      system: [{ text: 's' }],
      inferenceConfig: { maxTokens: 5 },
    });
    expect(input).toEqual({
      modelId: 'model-x',
      messages: [{ role: 'user', content: [{ text: 'hi' }] }],
      system: [{ text: 's' }],
      inferenceConfig: { maxTokens: 5 },
    });
  });

  it('rejects fields Converse does not have as a ValidationException naming them', () => {
    let thrown: unknown;
    try {
      toConverseInput('model-x', { messages: [], max_tokens: 5, temperature: 0 });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(Error);
    expect(thrown).toMatchObject({
      name: 'ValidationException',
      message: 'modelInput has fields Converse does not accept: max_tokens, temperature',
    });
  });
});
