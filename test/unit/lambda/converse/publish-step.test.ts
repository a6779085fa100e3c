import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { batchIdOf } from '../../../../lambda/converse/item-batch-id';
import { collectShard } from '../../../../lambda/batch/collect/collect-shard';
import { collectKeys, type CollectDeps } from '../../../../lambda/batch/collect/collect-contract';
import {
  runKeys,
  type ItemBatchEvent,
  type ResultLine,
  type WorkItem,
} from '../../../../lambda/shared/contracts';
import {
  converseUnitKeys,
  processBatch,
  type ConverseUnitDeps,
} from '../../../../lambda/converse/converse-unit';
import { FailureLaneSender } from '../../../../lambda/shared/failure-lane';
import { unitOwner, type Claimant, type Ledger, type LedgerEntry } from '../../../../lambda/shared/ledger';
import type { ModelCaller } from '../../../../lambda/converse/model-caller';
import { contentHashOf } from '../../../../lambda/shared/records';
import {
  resultsDedupeId,
  ResultsPublisher,
  type PublishedRecord,
} from '../../../../lambda/shared/results-queue';
import { awsError, FakeS3 } from '../helpers';
import { BUCKET, converseInput, converseSuccess, errorLine, ids, stageShard } from '../batch/batch-output';
import {
  freshLedger,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from '../failure-lane/lane-fixtures';
import {
  clearFaults,
  crashAt,
  deferred,
  InjectedCrash,
  recordQueues,
  type Queues,
} from '../failure-lane/protocol-fixtures';
import { useClientMocks } from '../../../support/aws-mocks';
import { FAILURE_DLQ_URL as DLQ, FAILURE_QUEUE_URL as LANE } from '../../../support/names';

// The results-queue step of the units that publish (ConverseBatch, Collect), against the real ledger on dynalite: a
// record's message is sent only once its commit took effect and its results file is written, never for a record
// another run holds, and the record is marked delivered after the send; an attempt that follows a crash resends only
// what was not marked delivered, with the same FIFO deduplication ids.
const [s3Mock, sqsMock] = useClientMocks(S3Client, SQSClient);

const RESULTS = 'https://sqs.us-east-1.amazonaws.com/123456789012/results.fifo';
const LEASE_MS = 60_000;

let server: LedgerServer;
let tables = 0;
let ledger: Ledger;
let s3: FakeS3;
let queues: Queues;

beforeAll(async () => {
  server = await startLedgerServer();
});

afterAll(async () => {
  await stopLedgerServer(server);
});

beforeEach(async () => {
  s3 = new FakeS3(s3Mock).install();
  queues = recordQueues(sqsMock, { results: RESULTS, dlq: DLQ, lane: LANE });
  ({ ledger } = await freshLedger(server, `publish-ledger-${++tables}`));
});

afterEach(() => {
  clearFaults();
});

/** What was durable when the unit called the results queue: each record's ledger entry and its results file. */
interface PublishCall {
  records: PublishedRecord[];
  entries: (LedgerEntry | undefined)[];
  /** The record ids in each record's results file at that moment. */
  fileLines: string[][];
}

/** The real publisher (to the recording FIFO queue), observed: it notes what was durable at each call. */
function observingPublisher(): { publish: ResultsPublisher['publish']; calls: PublishCall[] } {
  const real = new ResultsPublisher(new SQSClient({}), RESULTS, { sleep: async () => undefined });
  const calls: PublishCall[] = [];
  return {
    calls,
    publish: async (records) => {
      const entries = await Promise.all(records.map((r) => ledger.get(r.ledgerScope, r.recordId)));
      const fileLines = records.map((r) =>
        s3.text(BUCKET, r.resultKey) === undefined
          ? []
          : s3.lines<ResultLine>(BUCKET, r.resultKey).map((l) => l.recordId),
      );
      calls.push({ records: [...records], entries, fileLines });
      await real.publish(records);
    },
  };
}

/** Checks that each record of a call was published by `owner` into the file it names, and not yet delivered. */
function expectDurableBeforeSend(call: PublishCall | undefined, owner: string): void {
  expect(call).toBeDefined();
  call?.records.forEach((r, i) => {
    expect(call.entries[i]).toMatchObject({ status: 'published', owner, resultKey: r.resultKey });
    expect(call.entries[i]?.delivered).toBeUndefined();
    expect(call.fileLines[i]).toContain(r.recordId);
  });
}

function other(runId: string, id: string): Claimant {
  return { runId, owner: unitOwner(runId, 'batch', id), attempt: 'other-attempt' };
}

/** Another run's unit holds a live claim on the record. */
async function heldElsewhere(scope: string, recordId: string, modelInput: unknown): Promise<void> {
  const who = other('run-other', 'b-live');
  expect(
    (await ledger.claim(scope, recordId, who, { contentHash: contentHashOf(modelInput), leaseMs: LEASE_MS }))
      .kind,
  ).toBe('claimed');
}

/** Another run published the record, for the same request. */
async function publishedElsewhere(scope: string, recordId: string, modelInput: unknown): Promise<void> {
  const who = other('run-other', 'b-done');
  await ledger.claim(scope, recordId, who, { contentHash: contentHashOf(modelInput), leaseMs: LEASE_MS });
  expect((await ledger.commit(scope, recordId, who, runKeys.results('run-other', 'b-done'))).kind).toBe(
    'done',
  );
}

describe('ConverseBatch', () => {
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

  function model(): jest.Mock<ModelCaller> {
    return jest.fn<ModelCaller>(async (work) => {
      if (work.recordId === 'bad') throw awsError('ValidationException', 400, 'no');
      if (work.recordId === 'thr') throw awsError('ThrottlingException', 429, 'slow down');
      return {
        modelOutput: { text: work.recordId },
        usage: { inputTokens: 2, outputTokens: 1, totalTokens: 3 },
      };
    });
  }

  function deps(
    callModel: ModelCaller,
    publisher: ConverseUnitDeps['resultsPublisher'],
    overrides: Partial<ConverseUnitDeps> = {},
  ): ConverseUnitDeps {
    return {
      s3: new S3Client({}),
      ledger,
      failureLane: new FailureLaneSender(new SQSClient({}), LANE, DLQ),
      callModel,
      resultsPublisher: publisher,
      outputBucket: BUCKET,
      itemConcurrency: 2,
      leaseMs: LEASE_MS,
      remainingMs: () => 280_000,
      ...overrides,
    };
  }

  function batch(...items: WorkItem[]): { event: ItemBatchEvent; owner: string; resultKey: string } {
    const batchId = batchIdOf(
      RUN,
      items.map((i) => i.recordId),
    );
    return {
      event: { BatchInput: { runId: RUN, ledgerScope: SCOPE }, Items: items },
      owner: unitOwner(RUN, 'batch', batchId),
      resultKey: converseUnitKeys.results(RUN, batchId),
    };
  }

  it('sends a record only after its commit and its results file, never one another run holds, then marks it delivered', async () => {
    const items = [
      item('a', 1),
      item('held', 2),
      item('other', 3),
      item('bad', 4),
      item('thr', 5),
      item('b', 6),
    ];
    await heldElsewhere(SCOPE, 'held', items[1]?.modelInput);
    await publishedElsewhere(SCOPE, 'other', items[2]?.modelInput);
    const { event, owner, resultKey } = batch(...items);
    const publisher = observingPublisher();

    const summary = await processBatch(event, deps(model(), publisher));
    expect(summary).toMatchObject({ succeeded: 2, skipped: 2, failed: 1, queued: 1 });
    expect(publisher.calls).toHaveLength(1);
    expect(publisher.calls[0]?.records).toEqual(
      ['a', 'b'].map((recordId) => ({
        runId: RUN,
        recordId,
        ledgerScope: SCOPE,
        resultKey,
        usage: { inputTokens: 2, outputTokens: 1, totalTokens: 3 },
      })),
    );
    expectDurableBeforeSend(publisher.calls[0], owner);
    expect(queues.results.map((m) => m.dedupeId)).toEqual([
      resultsDedupeId(SCOPE, 'a'),
      resultsDedupeId(SCOPE, 'b'),
    ]);
    for (const id of ['a', 'b']) expect((await ledger.get(SCOPE, id))?.delivered).toBe(true);
    // The other run's records stay its own; the queued one went to the lane, the failed one to the DLQ.
    expect(await ledger.get(SCOPE, 'held')).toMatchObject({ status: 'claimed', runId: 'run-other' });
    expect(await ledger.get(SCOPE, 'other')).toMatchObject({ status: 'published', runId: 'run-other' });
    expect(queues.lane.map((m) => m.recordId)).toEqual(['thr']);
    expect(queues.dlq.map((m) => m.body.recordId)).toEqual(['bad']);
  });

  it('a crash after the commit sends nothing; the retry writes the file, then sends once', async () => {
    const { event, owner } = batch(item('a', 1), item('b', 2));
    const callModel = model();
    const crash = crashAt('converse-batch', 'after-commit');
    await expect(processBatch(event, deps(callModel, observingPublisher()))).rejects.toBeInstanceOf(
      InjectedCrash,
    );
    expect(crash.hits).toEqual(['converse-batch@after-commit']);
    expect(await ledger.get(SCOPE, 'a')).toMatchObject({ status: 'published', owner });
    expect(queues.results).toEqual([]);

    const publisher = observingPublisher();
    await processBatch(event, deps(callModel, publisher));
    expect(callModel).toHaveBeenCalledTimes(2);
    expectDurableBeforeSend(publisher.calls[0], owner);
    expect(queues.results.map((m) => m.body.recordId)).toEqual(['a', 'b']);
  });

  it('a retry after a crash at after-queue-send resends the undelivered records with the same dedupe ids, no model call', async () => {
    const { event, owner, resultKey } = batch(item('a', 1), item('b', 2));
    const callModel = model();
    const crash = crashAt('converse-batch', 'after-queue-send');
    await expect(processBatch(event, deps(callModel, observingPublisher()))).rejects.toBeInstanceOf(
      InjectedCrash,
    );
    expect(crash.hits).toEqual(['converse-batch@after-queue-send']);
    const firstSends = queues.results.map((m) => m.dedupeId);
    expect(firstSends).toHaveLength(2);
    for (const id of ['a', 'b']) expect((await ledger.get(SCOPE, id))?.delivered).toBeUndefined();

    const publisher = observingPublisher();
    const summary = await processBatch(event, deps(callModel, publisher));
    expect(summary).toMatchObject({ succeeded: 2 });
    expect(callModel).toHaveBeenCalledTimes(2);
    expectDurableBeforeSend(publisher.calls[0], owner);
    expect(queues.results.slice(2).map((m) => m.dedupeId)).toEqual(firstSends);
    expect(queues.delivered()).toHaveLength(2);
    for (const id of ['a', 'b']) expect((await ledger.get(SCOPE, id))?.delivered).toBe(true);
    expect(s3.lines<ResultLine>(BUCKET, resultKey).map((l) => l.recordId)).toEqual(['a', 'b']);
  });

  it('a retry after marking stopped partway resends only the record not marked delivered', async () => {
    const { event, owner } = batch(item('a', 1), item('b', 2));
    const callModel = model();
    const aMarked = deferred();
    let failB = true;
    const flaky: ConverseUnitDeps['ledger'] = {
      claim: (...args) => ledger.claim(...args),
      commit: (...args) => ledger.commit(...args),
      fail: (...args) => ledger.fail(...args),
      queue: (...args) => ledger.queue(...args),
      failQueued: (...args) => ledger.failQueued(...args),
      get: (...args) => ledger.get(...args),
      getMany: (...args) => ledger.getMany(...args),
      markDelivered: async (scope, recordId, owner) => {
        if (recordId === 'b' && failB) {
          failB = false;
          await aMarked.promise;
          throw awsError('InternalServerError', 500);
        }
        await ledger.markDelivered(scope, recordId, owner);
        if (recordId === 'a') aMarked.resolve();
      },
    };
    await expect(
      processBatch(event, deps(callModel, observingPublisher(), { ledger: flaky })),
    ).rejects.toMatchObject({
      name: 'InternalServerError',
    });
    expect(failB).toBe(false);
    expect((await ledger.get(SCOPE, 'a'))?.delivered).toBe(true);
    expect((await ledger.get(SCOPE, 'b'))?.delivered).toBeUndefined();

    const publisher = observingPublisher();
    await processBatch(event, deps(callModel, publisher));
    expect(publisher.calls.map((c) => c.records.map((r) => r.recordId))).toEqual([['b']]);
    expectDurableBeforeSend(publisher.calls[0], owner);
    expect(queues.results.map((m) => m.body.recordId)).toEqual(['a', 'b', 'b']);
    expect(queues.results[2]?.dedupeId).toBe(resultsDedupeId(SCOPE, 'b'));
    expect(queues.delivered()).toHaveLength(2);
    expect((await ledger.get(SCOPE, 'b'))?.delivered).toBe(true);
  });

  it('sends nothing when nothing succeeded', async () => {
    const publisher = observingPublisher();
    await processBatch(batch(item('bad', 1), item('thr', 2)).event, deps(model(), publisher));
    expect(publisher.calls).toEqual([]);
    expect(queues.results).toEqual([]);
  });
});

describe('Collect', () => {
  const RUN = 'run-c';
  const SCOPE = 'test/model';
  const SHARD = 2;
  const OWNER = unitOwner(RUN, 'shard', String(SHARD));

  function deps(publisher: CollectDeps['resultsPublisher']): CollectDeps {
    return {
      s3: new S3Client({}),
      ledger,
      failureLane: new FailureLaneSender(new SQSClient({}), LANE, DLQ),
      leaseMs: LEASE_MS,
      resultsPublisher: publisher,
      outputBucket: BUCKET,
      concurrency: 2,
    };
  }

  /** Two output files: p-0..p-3 all answered, q-0..q-2 with q-1 rejected (400). */
  function shard(): ReturnType<typeof stageShard> {
    const p = ids('p', 4).map(converseInput);
    const q = ids('q', 3).map(converseInput);
    return stageShard(s3, {
      runId: RUN,
      shard: SHARD,
      jobId: 'jobc',
      inputs: [p, q],
      outputs: [
        p.map((r) => converseSuccess(r)),
        [converseSuccess(q[0]!), errorLine(q[1]!, 400, 'bad'), converseSuccess(q[2]!)],
      ],
      manifest: { total: 7, success: 6, error: 1 },
    });
  }

  it('sends per output file, after its commits and its results part, leaving out held, other-run and error lines', async () => {
    const input = shard();
    await heldElsewhere(SCOPE, 'p-1', converseInput('p-1').modelInput);
    await publishedElsewhere(SCOPE, 'p-3', converseInput('p-3').modelInput);
    const publisher = observingPublisher();
    const summary = await collectShard(input, deps(publisher));
    expect(summary).toMatchObject({ succeeded: 4, skipped: 2, failed: 1, missing: 0 });
    expect(publisher.calls.map((c) => c.records.map((r) => r.recordId))).toEqual([
      ['p-0', 'p-2'],
      ['q-0', 'q-2'],
    ]);
    publisher.calls.forEach((call, part) => {
      expect(call.records.every((r) => r.resultKey === collectKeys.results(RUN, SHARD, part))).toBe(true);
      expect(call.records.every((r) => r.runId === RUN && r.ledgerScope === SCOPE)).toBe(true);
      expectDurableBeforeSend(call, OWNER);
      // The part is complete when it is sent: every line of it, nothing else.
      expect(call.fileLines[0]).toEqual(call.records.map((r) => r.recordId));
    });
    expect(queues.results.map((m) => m.dedupeId)).toEqual(
      ['p-0', 'p-2', 'q-0', 'q-2'].map((id) => resultsDedupeId(SCOPE, id)),
    );
    for (const id of ['p-0', 'p-2', 'q-0', 'q-2'])
      expect((await ledger.get(SCOPE, id))?.delivered).toBe(true);
    expect(await ledger.get(SCOPE, 'p-1')).toMatchObject({ status: 'claimed', runId: 'run-other' });
    expect(await ledger.get(SCOPE, 'p-3')).toMatchObject({ status: 'published', runId: 'run-other' });
    expect(await ledger.get(SCOPE, 'q-1')).toMatchObject({ status: 'failed', owner: OWNER });
  });

  it('a retry after a crash at after-queue-send of the second file resends only that file, with the same dedupe ids', async () => {
    const input = shard();
    const crash = crashAt('collect', 'after-queue-send', 1);
    await expect(collectShard(input, deps(observingPublisher()))).rejects.toBeInstanceOf(InjectedCrash);
    expect(crash.hits).toEqual(['collect@after-queue-send']);
    expect(s3.text(BUCKET, collectKeys.marker(RUN, SHARD))).toBeUndefined();
    const firstSends = queues.results.map((m) => [m.body.recordId, m.dedupeId]);
    expect(firstSends.map(([id]) => id)).toEqual(['p-0', 'p-1', 'p-2', 'p-3', 'q-0', 'q-2']);
    expect((await ledger.get(SCOPE, 'p-0'))?.delivered).toBe(true);
    expect((await ledger.get(SCOPE, 'q-0'))?.delivered).toBeUndefined();

    const publisher = observingPublisher();
    const summary = await collectShard(input, deps(publisher));
    expect(summary).toMatchObject({ succeeded: 6, failed: 1, skipped: 0 });
    expect(publisher.calls.map((c) => c.records.map((r) => r.recordId))).toEqual([['q-0', 'q-2']]);
    expectDurableBeforeSend(publisher.calls[0], OWNER);
    expect(queues.results.slice(firstSends.length).map((m) => [m.body.recordId, m.dedupeId])).toEqual(
      firstSends.slice(4),
    );
    expect(queues.delivered()).toHaveLength(6);
    for (const id of ['q-0', 'q-2']) expect((await ledger.get(SCOPE, id))?.delivered).toBe(true);
    expect(s3.lines<ResultLine>(BUCKET, collectKeys.results(RUN, SHARD, 1)).map((l) => l.recordId)).toEqual([
      'q-0',
      'q-2',
    ]);
  });
});
