import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { FinalizeDeps } from '../../../../lambda/finalize/deps';
import { finalizeRun, type FinalizeEvent } from '../../../../lambda/finalize/finalize-run';
import { processLaneBatch } from '../../../../lambda/failure-lane/consumer';
import { gatherConverseItems } from '../../../../lambda/batch/converse-items';
import { batchIdOf } from '../../../../lambda/converse/item-batch-id';
import { collectShard } from '../../../../lambda/batch/collect/collect-shard';
import {
  BatchJobFailedError,
  collectKeys,
  type CollectDeps,
  type CollectShardInput,
} from '../../../../lambda/batch/collect/collect-contract';
import {
  runKeys,
  type ItemBatchEvent,
  MAX_MANIFEST_SOURCES,
  type BatchJobOutcome,
  type CorpusSourceEntry,
  type ItemBatchSummary,
  type FailureLaneMessage,
  type FailureLine,
  type ManifestJob,
  type PlanOutput,
  type ResultLine,
  type RunManifest,
  type ShardItem,
  type WorkItem,
} from '../../../../lambda/shared/contracts';
import { processBatch } from '../../../../lambda/converse/converse-unit';
import type { Claimant, Ledger, LedgerEntry } from '../../../../lambda/shared/ledger';
import type { ModelCaller } from '../../../../lambda/converse/model-caller';
import { contentHashOf } from '../../../../lambda/shared/records';
import type { RunState } from '../../../../lambda/shared/run-state';
import {
  freshLedger,
  sqsEvent,
  sqsRecord,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from '../failure-lane/lane-fixtures';
import {
  BUCKET,
  converseInput,
  converseSuccess,
  errorLine,
  ids,
  shuffled,
  stageShard,
  type InputRecord,
} from '../batch/batch-output';
import { awsError, FakeS3 } from '../helpers';
import {
  Crash,
  freshRunState,
  RecordingLane,
  RecordingPublisher,
  SimulatedCrash,
} from '../converse/unit-fixtures';
import { useClientMocks } from '../../../support/aws-mocks';
import { FAILURE_DLQ_URL as DLQ } from '../../../support/names';

// S3 is an in-memory fake and EventBridge a mock; the ledger and the runs table are real tables on dynalite; the
// failure lane and the results queue record what they are given. The runs' units (Converse batches, Collect, the
// failure lane) are the real functions, so what Finalize finds is what they leave behind.
const [s3Mock, ebMock, sqsMock] = useClientMocks(S3Client, EventBridgeClient, SQSClient);

const OUT = BUCKET;
const RUN = 'run-42';
/** The ledger scope of the run (stageShard's). */
const SCOPE = 'test/model';
const STARTED = '2025-01-02T03:00:00.000Z';
const FINISHED = new Date('2025-01-02T03:10:00.000Z');
const LEASE_MS = 60_000;

let server: LedgerServer;
let tables = 0;
let ledger: Ledger;
let runs: RunState;
let s3: FakeS3;
let laneSent: RecordingLane;
let publisher: RecordingPublisher;

beforeAll(async () => {
  server = await startLedgerServer();
});

afterAll(async () => {
  await stopLedgerServer(server);
});

beforeEach(async () => {
  s3 = new FakeS3(s3Mock).install();
  ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'evt-1' }] });
  sqsMock.on(SendMessageCommand).resolves({ MessageId: 'dlq-1' });
  tables++;
  ({ ledger } = await freshLedger(server, `finalize-ledger-${tables}`));
  runs = await freshRunState(server, `finalize-runs-${tables}`);
  laneSent = new RecordingLane();
  publisher = new RecordingPublisher();
});

afterEach(() => {
  Crash.remove();
});

function deps(overrides: Partial<FinalizeDeps> = {}): FinalizeDeps {
  return {
    s3: new S3Client({}),
    events: new EventBridgeClient({}),
    ledger,
    runs,
    failureLane: laneSent,
    resultsPublisher: publisher,
    outputBucket: OUT,
    eventBusName: 'corpus-bus',
    leaseMs: LEASE_MS,
    now: () => FINISHED,
    ...overrides,
  };
}

function event(state: object): FinalizeEvent {
  return { runId: RUN, startedAt: STARTED, state: { ...state } };
}

function item(recordId: string, line: number): WorkItem {
  return {
    recordId,
    line,
    format: 'converse',
    modelInput: { messages: [{ role: 'user', content: [{ text: `question ${recordId}` }] }] },
  };
}

function items(prefix: string, n: number, firstLine = 1): WorkItem[] {
  return ids(prefix, n).map((id, i) => item(id, firstLine + i));
}

/** A model that answers every record but those given an error, counting its calls as the SDK's counter would. */
class Model {
  readonly calls = { total: 0, throttled: 0, retried: 0 };

  constructor(private readonly errors: Record<string, Error> = {}) {}

  readonly caller: ModelCaller = async (request) => {
    this.calls.total++;
    const err = this.errors[request.recordId];
    if (err) {
      if (err.name === 'ThrottlingException') this.calls.throttled++;
      throw err;
    }
    return {
      modelOutput: {
        output: { message: { role: 'assistant', content: [{ text: `answer ${request.recordId}` }] } },
      },
      usage: { inputTokens: 10, outputTokens: 4, totalTokens: 14 },
    };
  };

  readonly stats = (): { total: number; throttled: number; retried: number } => ({ ...this.calls });
}

const throttled = (): Error => awsError('ThrottlingException', 429, 'Rate exceeded', true);
const rejected = (): Error => awsError('ValidationException', 400, 'messages: must not be empty');

function batchEvent(batch: WorkItem[]): ItemBatchEvent {
  return { BatchInput: { runId: RUN, ledgerScope: SCOPE }, Items: batch };
}

/** One Converse child (ConverseBatch) over a batch, as the fan-out runs it. */
function runChild(batch: WorkItem[], model: Model): Promise<ItemBatchSummary> {
  return processBatch(batchEvent(batch), {
    s3: new S3Client({}),
    ledger,
    failureLane: laneSent,
    callModel: model.caller,
    resultsPublisher: publisher,
    outputBucket: OUT,
    itemConcurrency: 4,
    leaseMs: LEASE_MS,
    remainingMs: () => 120_000,
    modelCalls: model.stats,
  });
}

/** A child that crashes at a fault point of ConverseBatch: the batch is left half-done. */
async function crashChild(batch: WorkItem[], model: Model, step: string): Promise<void> {
  const crash = new Crash('converse-batch', step).install();
  await expect(runChild(batch, model)).rejects.toBeInstanceOf(SimulatedCrash);
  expect(crash.crashed).toBe(true);
  Crash.remove();
}

function collectDeps(): CollectDeps {
  return {
    s3: new S3Client({}),
    ledger,
    failureLane: laneSent,
    resultsPublisher: publisher,
    outputBucket: OUT,
    leaseMs: LEASE_MS,
  };
}

/** A Map Run's ResultWriter output (manifest and result files), in the AWS format. */
class MapRun {
  private readonly children: Record<'SUCCEEDED' | 'FAILED' | 'PENDING', Record<string, unknown>[]> = {
    SUCCEEDED: [],
    FAILED: [],
    PENDING: [],
  };

  constructor(private readonly prefix: string) {}

  succeeded(input: unknown, output: unknown): this {
    return this.add('SUCCEEDED', input, {
      Output: JSON.stringify(output),
      OutputDetails: { Included: true },
    });
  }

  failed(input: unknown, error: string, cause: string): this {
    return this.add('FAILED', input, { Error: error, Cause: cause });
  }

  pending(input: unknown): this {
    return this.add('PENDING', input, {});
  }

  /** Writes the files; returns the state's Map result. */
  write(): { mapRunArn: string; resultWriterDetails: { Bucket: string; Key: string } } {
    const files: Record<string, { Key: string; Size: number }[]> = {};
    for (const [status, children] of Object.entries(this.children)) {
      if (children.length === 0) continue;
      const key = `${this.prefix}${status}_0.json`;
      s3.putJson(OUT, key, children);
      files[status] = [{ Key: key, Size: 1 }];
    }
    const mapRunArn = `arn:aws:states:us-east-1:123456789012:mapRun:pipeline/Map:${this.prefix}`;
    s3.putJson(OUT, `${this.prefix}manifest.json`, {
      DestinationBucket: OUT,
      MapRunArn: mapRunArn,
      ResultFiles: files,
    });
    return { mapRunArn, resultWriterDetails: { Bucket: OUT, Key: `${this.prefix}manifest.json` } };
  }

  private add(
    status: 'SUCCEEDED' | 'FAILED' | 'PENDING',
    input: unknown,
    extra: Record<string, unknown>,
  ): this {
    const n = this.children[status].length;
    this.children[status].push({
      ExecutionArn: `arn:aws:states:us-east-1:123456789012:execution:pipeline/Map:${status}-${n}`,
      Input: JSON.stringify(input),
      InputDetails: { Included: true },
      Name: `${status}-${n}`,
      Status: status,
      ...extra,
    });
    return this;
  }
}

function lambdaCause(errorType: string, errorMessage: string): string {
  return JSON.stringify({
    errorType,
    errorMessage,
    trace: [`${errorType}: ${errorMessage}`, '    at handler (/var/task/index.js:1:1)'],
  });
}

/** Plan's output for records to process, with the items file and Plan's failures file (its invalid lines). */
function stagePlan(
  toProcess: WorkItem[],
  counts: { skipped?: number; invalid?: number; duplicates?: number } = {},
): PlanOutput {
  const { skipped = 1, invalid = 2, duplicates = 1 } = counts;
  const records = toProcess.length + skipped;
  s3.putLines(OUT, runKeys.items(RUN), toProcess);
  if (invalid > 0) {
    s3.putLines(
      OUT,
      runKeys.failures(RUN, 'plan'),
      Array.from({ length: invalid }, (_, i) => ({
        line: 900 + i,
        stage: 'plan',
        error: { code: 'InvalidJson', message: 'the line is not JSON' },
      })),
    );
  }
  return {
    runId: RUN,
    startedAt: STARTED,
    mode: 'converse',
    requestedMode: 'auto',
    corpus: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl', etag: 'e', size: 100 },
    output: { bucket: OUT, prefix: `runs/${RUN}/` },
    itemsKey: runKeys.items(RUN),
    ledgerScope: SCOPE,
    modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
    counts: {
      lines: records + invalid + duplicates,
      records,
      invalid,
      duplicates,
      skipped,
      toProcess: toProcess.length,
    },
    fanOut: { itemsKey: runKeys.items(RUN), batchSize: 4, maxConcurrency: 2, toleratedFailurePercentage: 50 },
  };
}

function manifest(): RunManifest {
  return s3.json<RunManifest>(OUT, runKeys.manifest(RUN));
}

function putEvents(): {
  DetailType?: string;
  Source?: string;
  EventBusName?: string;
  detail: Record<string, unknown>;
}[] {
  return ebMock.commandCalls(PutEventsCommand).map((call) => {
    const entry = call.args[0].input.Entries?.[0];
    if (!entry) throw new Error('an event without entries');
    return { ...entry, detail: JSON.parse(entry.Detail ?? '{}') as Record<string, unknown> };
  });
}

function linesUnder<T>(prefix: string): T[] {
  return s3.keys(OUT, prefix).flatMap((key) => s3.lines<T>(OUT, key));
}

async function ledgerEntries(recordIds: readonly string[]): Promise<Map<string, LedgerEntry>> {
  const found = new Map<string, LedgerEntry>();
  for (let i = 0; i < recordIds.length; i += 100) {
    for (const [id, entry] of await ledger.getMany(SCOPE, recordIds.slice(i, i + 100))) found.set(id, entry);
  }
  return found;
}

/**
 * The manifest's invariants, against the files and the ledger: `records = succeeded + failed + skipped + pending`;
 * the results files hold `succeeded` lines, each record once, and the failures files `failed + invalid`; no record is
 * in both; and the records the failure lane holds (queued, or claimed by the lane) are the `pending` ones.
 */
async function expectAccounted(m: RunManifest, recordIds: readonly string[]): Promise<void> {
  const c = m.counts;
  expect(c.lines).toBe(c.records + c.invalid + c.duplicates);
  expect(c.records).toBe(c.succeeded + c.failed + c.skipped + c.pending);
  const results = linesUnder<ResultLine>(runKeys.resultsPrefix(RUN)).map((l) => l.recordId);
  const failures = linesUnder<FailureLine>(runKeys.failuresPrefix(RUN));
  expect(results).toHaveLength(c.succeeded);
  expect(new Set(results).size).toBe(results.length);
  expect(failures).toHaveLength(c.failed + c.invalid);
  const failed = failures.flatMap((f) => (f.stage === 'plan' || !f.recordId ? [] : [f.recordId]));
  expect(new Set(failed).size).toBe(failed.length);
  expect(failed.filter((id) => results.includes(id))).toEqual([]);
  const withLane = [...(await ledgerEntries(recordIds)).values()].filter(
    (e) =>
      e.runId === RUN &&
      (e.status === 'queued' || (e.owner.startsWith(`${RUN}/lane/`) && e.status === 'claimed')),
  );
  expect(withLane).toHaveLength(c.pending);
}

const handedOver = (messages: FailureLaneMessage[]): string[] =>
  messages
    .filter((m) => m.error.retryable === true)
    .map((m) => m.recordId ?? '')
    .sort();

describe('finalizeRun: a Converse run whose children all succeeded', () => {
  const first = items('r', 3);
  const second = items('s', 3, 4);
  let out: Awaited<ReturnType<typeof finalizeRun>>;
  let summaries: ItemBatchSummary[];
  let laneBefore: number;

  beforeEach(async () => {
    const plan = stagePlan([...first, ...second]);
    summaries = [
      await runChild(first, new Model({ 'r-2': throttled() })),
      await runChild(second, new Model({ 's-1': rejected() })),
    ];
    const fanOutResult = new MapRun('map-runs/f1/')
      .succeeded(batchEvent(first), summaries[0])
      .succeeded(batchEvent(second), summaries[1])
      .write();
    laneBefore = laneSent.messages.length;
    out = await finalizeRun(event({ ...plan, fanOutResult }), deps());
  });

  it("sums the children's summaries: what they queued is pending, their model calls add up", async () => {
    expect(summaries.map((s) => [s.succeeded, s.failed, s.skipped, s.queued])).toEqual([
      [2, 0, 0, 1],
      [2, 1, 0, 0],
    ]);
    const m = manifest();
    expect(m.status).toBe('SUCCEEDED');
    expect(m.counts).toEqual({
      lines: 10,
      records: 7,
      succeeded: 4,
      failed: 1,
      invalid: 2,
      duplicates: 1,
      skipped: 1,
      pending: 1,
      recovered: 0,
    });
    expect(m.tokens).toEqual({ input: 40, output: 16 });
    // Three calls per child, one of them throttled.
    expect(m.modelCalls).toEqual({ total: 6, throttled: 1, retried: 0 });
    expect(m.batches).toEqual({ total: 2, failed: 0 });
    expect(m.error).toBeUndefined();
    await expectAccounted(
      m,
      [...first, ...second].map((i) => i.recordId),
    );
    // The children handed their records over already: Finalize sends nothing more.
    expect(laneSent.messages).toHaveLength(laneBefore);
    expect(handedOver(laneSent.messages)).toEqual(['r-2']);
  });

  it('writes manifest revision 1 with where everything is, and returns it', () => {
    const m = manifest();
    expect(m).toMatchObject({
      runId: RUN,
      revision: 1,
      mode: 'converse',
      startedAt: STARTED,
      finishedAt: FINISHED.toISOString(),
      durationMs: 600_000,
      corpus: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl' },
      modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
      ledgerScope: SCOPE,
      output: {
        bucket: OUT,
        manifestKey: `runs/${RUN}/manifest.json`,
        resultsPrefix: `runs/${RUN}/results/`,
        failuresPrefix: `runs/${RUN}/failures/`,
      },
    });
    expect(out).toEqual({
      runId: RUN,
      status: 'SUCCEEDED',
      manifestKey: `runs/${RUN}/manifest.json`,
      revision: 1,
      counts: m.counts,
    });
  });

  it('puts Corpus Run Completed on the pipeline bus with the revision, counts and S3 URIs', () => {
    const events = putEvents();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      EventBusName: 'corpus-bus',
      Source: 'corpus.pipeline',
      DetailType: 'Corpus Run Completed',
    });
    expect(events[0]?.detail).toEqual({
      runId: RUN,
      revision: 1,
      status: 'SUCCEEDED',
      mode: 'converse',
      counts: manifest().counts,
      tokens: { input: 40, output: 16 },
      corpus: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl' },
      manifest: `s3://${OUT}/runs/${RUN}/manifest.json`,
      results: `s3://${OUT}/runs/${RUN}/results/`,
      failures: `s3://${OUT}/runs/${RUN}/failures/`,
    });
  });
});

describe('finalizeRun: children that did not finish', () => {
  it("finishes a failed or never-run child's batch as that batch: its decisions stand, the rest goes to the lane", async () => {
    const done = items('d', 4);
    const halfDone = items('e', 4, 5);
    const claimedOnly = items('g', 3, 9);
    const neverRun = items('p', 2, 12);
    const plan = stagePlan([...done, ...halfDone, ...claimedOnly, ...neverRun]);

    const summary = await runChild(done, new Model());
    // e-*: answered (e-2 throttled, e-3 rejected) and committed in the ledger, then the child died before writing
    // its files or handing anything to the lane.
    await crashChild(halfDone, new Model({ 'e-2': throttled(), 'e-3': rejected() }), 'after-commit');
    const halfDoneId = batchIdOf(RUN, ids('e', 4));
    const afterCrash = await ledgerEntries(ids('e', 4));
    expect([...afterCrash.values()].map((e) => e.status).sort()).toEqual([
      'failed',
      'published',
      'published',
      'queued',
    ]);
    expect(s3.text(OUT, runKeys.results(RUN, halfDoneId))).toBeUndefined();
    // g-*: claimed, then the child died before any model call was staged.
    await crashChild(claimedOnly, new Model(), 'after-claim');
    expect([...(await ledgerEntries(ids('g', 3))).values()].map((e) => e.status)).toEqual([
      'claimed',
      'claimed',
      'claimed',
    ]);
    const laneBefore = laneSent.messages.length;
    expect(laneBefore).toBe(0);

    const fanOutResult = new MapRun('map-runs/f2/')
      .succeeded(batchEvent(done), summary)
      .failed(batchEvent(halfDone), 'States.Timeout', 'Task timed out after 300.00 seconds')
      .failed(
        batchEvent(claimedOnly),
        'Lambda.Unknown',
        lambdaCause('Lambda.Unknown', 'The function was killed: out of memory'),
      )
      .pending(batchEvent(neverRun))
      .write();
    const out = await finalizeRun(event({ ...plan, fanOutResult }), deps());

    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    expect(m.counts).toMatchObject({ succeeded: 6, failed: 1, skipped: 1, pending: 6, recovered: 0 });
    expect(m.batches).toEqual({ total: 4, failed: 3 });
    await expectAccounted(
      m,
      [...done, ...halfDone, ...claimedOnly, ...neverRun].map((i) => i.recordId),
    );

    // What the half-done batch published stays its publication, with its line in the batch's results file.
    const published = s3.lines<ResultLine>(OUT, runKeys.results(RUN, halfDoneId));
    expect(published.map((l) => l.recordId).sort()).toEqual(['e-0', 'e-1']);
    expect(published[0]?.modelOutput).toEqual({
      output: { message: { role: 'assistant', content: [{ text: `answer ${published[0]?.recordId}` }] } },
    });
    const after = await ledgerEntries(ids('e', 4));
    for (const id of ['e-0', 'e-1']) {
      expect(after.get(id)).toMatchObject({
        status: 'published',
        owner: `${RUN}/batch/${halfDoneId}`,
        attempt: afterCrash.get(id)?.attempt,
        resultKey: runKeys.results(RUN, halfDoneId),
      });
    }
    expect(s3.lines<FailureLine>(OUT, runKeys.failures(RUN, halfDoneId))).toEqual([
      {
        recordId: 'e-3',
        line: 8,
        stage: 'converse',
        error: {
          code: 'ValidationException',
          message: expect.stringContaining('must not be empty'),
          retryable: false,
        },
      },
    ]);

    // Handed to the lane with its request: what the batch had queued itself, and everything it had not decided.
    const queue = laneSent.queue;
    expect(handedOver(queue)).toEqual(['e-2', 'g-0', 'g-1', 'g-2', 'p-0', 'p-1']);
    const byId = new Map(queue.map((msg) => [msg.recordId, msg]));
    expect(byId.get('e-2')).toMatchObject({
      runId: RUN,
      ledgerScope: SCOPE,
      line: 7,
      format: 'converse',
      modelInput: halfDone[2]?.modelInput,
      error: { code: 'ThrottlingException', retryable: true },
    });
    expect(byId.get('g-1')).toMatchObject({
      modelInput: claimedOnly[1]?.modelInput,
      error: {
        code: 'Lambda.Unknown',
        message: 'the batch holding this record did not finish: The function was killed: out of memory',
      },
    });
    expect(byId.get('p-0')).toMatchObject({
      modelInput: neverRun[0]?.modelInput,
      error: {
        code: 'NotProcessed',
        message: 'the batch holding this record did not finish: no cause given',
      },
    });
    const handed = await ledgerEntries(['e-2', ...ids('g', 3), ...ids('p', 2)]);
    expect([...handed.values()].every((e) => e.status === 'queued')).toBe(true);
    expect(handed.get('g-0')?.owner).toBe(`${RUN}/batch/${batchIdOf(RUN, ids('g', 3))}`);
    expect(handed.get('p-0')?.owner).toBe(`${RUN}/batch/${batchIdOf(RUN, ids('p', 2))}`);
    // Each record once: no result, failure or hand-over twice.
    expect(new Set(queue.map((msg) => msg.recordId)).size).toBe(queue.length);
    expect(publisher.sent.map((r) => r.recordId).sort()).toEqual([...ids('d', 4), 'e-0', 'e-1']);
  });
});

describe('finalizeRun: the fan-out failed without ResultWriter details', () => {
  it("accounts for every record from the ledger: this run's units finished, the lane's pending, other runs' skipped", async () => {
    const all = items('o', 13);
    const plan = stagePlan(all);
    // o-10..o-12: a child finished them (o-12 rejected by the model) before the Map failed.
    const finished = all.slice(10);
    await runChild(finished, new Model({ 'o-12': rejected() }));
    const finishedId = batchIdOf(RUN, ids('o', 13).slice(10));
    const finishedFiles = [runKeys.results(RUN, finishedId), runKeys.failures(RUN, finishedId)].map((key) =>
      s3.text(OUT, key),
    );
    expect(finishedFiles.every((text) => text !== undefined)).toBe(true);
    // o-0..o-2: a child answered and committed them, then died.
    const crashed = all.slice(0, 3);
    await crashChild(crashed, new Model(), 'after-commit');
    const crashedId = batchIdOf(RUN, ids('o', 3));
    // o-3: the failure lane of this run holds it.
    const laneWho: Claimant = { runId: RUN, owner: `${RUN}/lane/o-3`, attempt: 'lane-1' };
    expect((await ledger.claim(SCOPE, 'o-3', laneWho, { leaseMs: LEASE_MS })).kind).toBe('claimed');
    // o-4: another run published the same request.
    const other: Claimant = { runId: 'run-old', owner: 'run-old/batch/b0', attempt: 'old' };
    await ledger.claim(SCOPE, 'o-4', other, {
      contentHash: contentHashOf(all[4]?.modelInput),
      leaseMs: LEASE_MS,
    });
    await ledger.commit(SCOPE, 'o-4', other, 'runs/run-old/results/b0.jsonl');
    // o-5: another run handed it to its lane and gave up on it.
    await ledger.claim(SCOPE, 'o-5', other, { leaseMs: LEASE_MS });
    await ledger.queue(SCOPE, 'o-5', other, { code: 'ThrottlingException', message: 'throttled' });
    // o-6..o-9: nobody claimed them.

    const cause = 'The specified tolerated failure threshold was exceeded';
    const out = await finalizeRun(
      event({ ...plan, error: { Error: 'States.ExceedToleratedFailureThreshold', Cause: cause } }),
      deps(),
    );

    expect(out.status).toBe('FAILED');
    expect(out.error).toEqual({ code: 'States.ExceedToleratedFailureThreshold', message: cause });
    const m = manifest();
    expect(m.error).toEqual(out.error);
    expect(m.counts).toMatchObject({ records: 14, succeeded: 5, failed: 1, skipped: 2, pending: 6 });
    await expectAccounted(m, ids('o', 13));
    expect(putEvents().map((e) => e.DetailType)).toEqual(['Corpus Run Failed']);

    // The dead child's unit finished as that unit: its lines in its own results file, its publications standing.
    expect(
      s3
        .lines<ResultLine>(OUT, runKeys.results(RUN, crashedId))
        .map((l) => l.recordId)
        .sort(),
    ).toEqual(ids('o', 3));
    const after = await ledgerEntries(ids('o', 13));
    for (const id of ids('o', 3)) {
      expect(after.get(id)).toMatchObject({ status: 'published', owner: `${RUN}/batch/${crashedId}` });
    }
    expect(after.get('o-3')).toMatchObject({ status: 'claimed', owner: `${RUN}/lane/o-3` });
    expect(after.get('o-4')).toMatchObject({ status: 'published', owner: 'run-old/batch/b0' });
    // The rest handed to the lane with the run's error, each once.
    expect(handedOver(laneSent.messages)).toEqual(['o-5', 'o-6', 'o-7', 'o-8', 'o-9']);
    for (const msg of laneSent.queue) {
      expect(msg).toMatchObject({
        runId: RUN,
        ledgerScope: SCOPE,
        format: 'converse',
        modelInput: all.find((i) => i.recordId === msg.recordId)?.modelInput,
        error: { code: 'States.ExceedToleratedFailureThreshold', message: cause, retryable: true },
      });
    }
    for (const id of ['o-5', 'o-6', 'o-7', 'o-8', 'o-9']) {
      expect(after.get(id)).toMatchObject({ status: 'queued', runId: RUN });
    }
    // The finished child's unit, finished again, writes the same files and sends nothing twice.
    expect(
      [runKeys.results(RUN, finishedId), runKeys.failures(RUN, finishedId)].map((key) => s3.text(OUT, key)),
    ).toEqual(finishedFiles);
    expect(publisher.sent.map((r) => r.recordId).sort()).toEqual(['o-0', 'o-1', 'o-10', 'o-11', 'o-2']);
    expect(laneSent.dlq.map((msg) => msg.recordId)).toEqual(['o-12']);
  });
});

describe('finalizeRun: the failure lane settled records before Finalize', () => {
  it('folds them into the manifest: pending down, recovered and succeeded up, failed up', async () => {
    const all = items('l', 4);
    const plan = stagePlan(all);
    const summary = await runChild(
      all,
      new Model({ 'l-1': throttled(), 'l-2': throttled(), 'l-3': throttled() }),
    );
    expect(summary).toMatchObject({ succeeded: 1, queued: 3 });
    // The lane receives the hand-overs: it answers l-1, the model rejects l-2, l-3 is still waiting.
    const messages = laneSent.queue.filter((msg) => msg.recordId !== 'l-3');
    const laneModel = new Model({ 'l-2': rejected() });
    const response = await processLaneBatch(sqsEvent(...messages.map((msg, i) => sqsRecord(`m-${i}`, msg))), {
      s3: new S3Client({}),
      sqs: new SQSClient({}),
      ledger,
      runs,
      events: new EventBridgeClient({}),
      eventBusName: 'corpus-bus',
      callModel: laneModel.caller,
      modelCalls: laneModel.stats,
      dlqUrl: DLQ,
      outputBucket: OUT,
      leaseMs: LEASE_MS,
      remainingMs: () => 120_000,
    });
    expect(response.batchItemFailures).toEqual([]);
    // No manifest yet: the lane left the revision to Finalize.
    expect(s3.text(OUT, runKeys.manifest(RUN))).toBeUndefined();

    const fanOutResult = new MapRun('map-runs/f4/').succeeded(batchEvent(all), summary).write();
    const out = await finalizeRun(event({ ...plan, fanOutResult }), deps());

    const m = manifest();
    expect(m.revision).toBe(1);
    expect(m.counts).toEqual({
      lines: 8,
      records: 5,
      succeeded: 2,
      failed: 1,
      invalid: 2,
      duplicates: 1,
      skipped: 1,
      pending: 1,
      recovered: 1,
    });
    expect(m.tokens).toEqual({ input: 20, output: 8 });
    // The child's four calls and the lane's two.
    expect(m.modelCalls).toEqual({ total: 6, throttled: 3, retried: 0 });
    expect(out.counts).toEqual(m.counts);
    await expectAccounted(m, ids('l', 4));
    expect(sqsMock).toHaveReceivedCommandWith(SendMessageCommand, { QueueUrl: DLQ });
  });
});

describe('finalizeRun: accounting', () => {
  it('fails the run with AccountingMismatch when the children do not account for every record', async () => {
    const all = items('m', 5);
    const plan = stagePlan(all);
    // The ResultWriter lists one child of one record; nothing accounts for the other four.
    const summary = await runChild(all.slice(0, 1), new Model());
    const fanOutResult = new MapRun('map-runs/f5/').succeeded(batchEvent(all.slice(0, 1)), summary).write();
    const out = await finalizeRun(event({ ...plan, fanOutResult }), deps());
    expect(out.status).toBe('FAILED');
    expect(out.error).toEqual({
      code: 'AccountingMismatch',
      message:
        '5 records were to be processed but 1 succeeded, 0 failed, 0 were skipped and 0 were handed to the failure lane',
    });
    const m = manifest();
    expect(m.error).toEqual(out.error);
    // Which is what the manifest shows: its counts do not add up to its records.
    expect(m.counts.succeeded + m.counts.failed + m.counts.skipped + m.counts.pending).toBe(2);
    expect(m.counts.records).toBe(6);
    expect(putEvents().map((e) => e.DetailType)).toEqual(['Corpus Run Failed']);
  });
});

describe('finalizeRun on runs that stopped early', () => {
  it('Plan failed: a FAILED manifest carrying the Lambda errorMessage, and Corpus Run Failed', async () => {
    const message = 'Invalid run input (key: Invalid input: expected string, received undefined)';
    const out = await finalizeRun(
      event({
        bucket: 'ingest-bucket',
        key: 'x.jsonl',
        error: { Error: 'InvalidRunInputError', Cause: lambdaCause('InvalidRunInputError', message) },
      }),
      deps(),
    );
    const counts = {
      lines: 0,
      records: 0,
      succeeded: 0,
      failed: 0,
      invalid: 0,
      duplicates: 0,
      skipped: 0,
      pending: 0,
      recovered: 0,
    };
    expect(out).toEqual({
      runId: RUN,
      status: 'FAILED',
      manifestKey: `runs/${RUN}/manifest.json`,
      revision: 1,
      counts,
      error: { code: 'InvalidRunInputError', message },
    });
    const m = manifest();
    expect(m).toMatchObject({
      revision: 1,
      status: 'FAILED',
      mode: null,
      modelId: null,
      ledgerScope: null,
      corpus: { bucket: 'ingest-bucket', key: 'x.jsonl' },
      counts,
      modelCalls: { total: 0, throttled: 0, retried: 0 },
      error: { code: 'InvalidRunInputError', message },
    });
    expect(m.batches).toBeUndefined();
    await expectAccounted(m, []);
    const [e] = putEvents();
    expect(e?.DetailType).toBe('Corpus Run Failed');
    expect(e?.detail).toMatchObject({
      revision: 1,
      status: 'FAILED',
      error: { code: 'InvalidRunInputError', message },
    });
    expect(s3Mock).not.toHaveReceivedCommand(GetObjectCommand);
  });

  it('keeps a cause that is not Lambda JSON as it is', async () => {
    const out = await finalizeRun(
      event({ error: { Error: 'States.Timeout', Cause: 'Task timed out' } }),
      deps(),
    );
    expect(out.error).toEqual({ code: 'States.Timeout', message: 'Task timed out' });
    expect(manifest().corpus).toBeNull();
    await expectAccounted(manifest(), []);
  });

  it('nothing to process: SUCCEEDED without reading a Map file or the ledger (only the sources Plan listed)', async () => {
    const plan = stagePlan([], { skipped: 6 });
    const out = await finalizeRun(event(plan), deps());
    expect(out.status).toBe('SUCCEEDED');
    expect(out.counts).toEqual({
      lines: 9,
      records: 6,
      succeeded: 0,
      failed: 0,
      invalid: 2,
      duplicates: 1,
      skipped: 6,
      pending: 0,
      recovered: 0,
    });
    expect(s3Mock).toHaveReceivedCommandTimes(GetObjectCommand, 1);
    expect(s3Mock).toHaveReceivedCommandWith(GetObjectCommand, { Key: `runs/${RUN}/sources.json` });
    expect(s3Mock).not.toHaveReceivedCommand(ListObjectsV2Command);
    const m = manifest();
    expect(m.batches).toEqual({ total: 0, failed: 0 });
    await expectAccounted(m, []);
    expect(putEvents().map((e) => e.DetailType)).toEqual(['Corpus Run Completed']);
  });

  it("lists the corpus's sources Plan read in the manifest, at most MAX_MANIFEST_SOURCES, the rest in sourcesFile", async () => {
    const plan = stagePlan([], { skipped: 6 });
    const sources: CorpusSourceEntry[] = Array.from({ length: MAX_MANIFEST_SOURCES + 2 }, (_, i) => ({
      key: `corpora/drop/part-${String(i).padStart(4, '0')}.jsonl`,
      size: 10,
      lines: 1,
      records: 1,
    }));
    s3.put(OUT, `runs/${RUN}/sources.json`, JSON.stringify(sources));
    await finalizeRun(event(plan), deps());
    const m = manifest();
    expect(m.sources).toEqual(sources.slice(0, MAX_MANIFEST_SOURCES));
    expect(m.sourcesFile).toEqual({ key: `runs/${RUN}/sources.json`, count: MAX_MANIFEST_SOURCES + 2 });
  });

  it('throws when the ResultWriter manifest is missing', async () => {
    const plan = stagePlan(items('x', 2));
    await expect(
      finalizeRun(
        event({
          ...plan,
          fanOutResult: { resultWriterDetails: { Bucket: OUT, Key: 'map-runs/none/manifest.json' } },
        }),
        deps(),
      ),
    ).rejects.toThrow(`Map Run manifest s3://${OUT}/map-runs/none/manifest.json is missing`);
  });
});

describe('finalizeRun: the run event', () => {
  it('throws when EventBridge does not accept the event', async () => {
    ebMock.on(PutEventsCommand).resolves({
      FailedEntryCount: 1,
      Entries: [{ ErrorCode: 'AccessDeniedException', ErrorMessage: 'not allowed' }],
    });
    const err = await finalizeRun(event(stagePlan([], { skipped: 6 })), deps()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toMatchObject({ name: 'TransientDependencyError' });
    expect((err as Error).message).toBe('the run event was not accepted: AccessDeniedException: not allowed');
  });

  it('throws a retryable TransientDependencyError when EventBridge throttles; the retry writes revision 2 and the event', async () => {
    const plan = stagePlan([], { skipped: 6 });
    ebMock
      .on(PutEventsCommand)
      .resolvesOnce({
        FailedEntryCount: 1,
        Entries: [{ ErrorCode: 'ThrottlingException', ErrorMessage: 'Rate exceeded' }],
      })
      .resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'evt-2' }] });
    await expect(finalizeRun(event(plan), deps())).rejects.toMatchObject({
      name: 'TransientDependencyError',
      message: expect.stringContaining('ThrottlingException: Rate exceeded'),
    });
    expect(manifest().revision).toBe(1);

    const out = await finalizeRun(event(plan), deps());
    expect(out.revision).toBe(2);
    expect(manifest().revision).toBe(2);
    await expectAccounted(manifest(), []);
    expect(putEvents().map((e) => [e.DetailType, e.detail.revision])).toEqual([
      ['Corpus Run Completed', 1],
      ['Corpus Run Completed', 2],
    ]);
  });
});

describe('finalizeRun for a batch-mode run', () => {
  const JOB = (n: number): string => `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job${n}`;
  const tail = items('t', 2, 100);

  /** One shard of the run: its input records and what its job wrote. */
  interface ShardSpec {
    records: InputRecord[];
    outputs: unknown[];
    status: BatchJobOutcome['status'];
    message?: string;
  }

  /**
   * The shards: 0 answered three, rejected one (400) and left one without output; 1's job Failed for a reason a
   * model call can get past (all re-driven); 2 answered four, one of them (s2-3) published by another run meanwhile,
   * and left one without output; 3 answered two and left one without output.
   */
  function shardSpecs(): ShardSpec[] {
    const s0 = ids('s0', 5).map(converseInput);
    const s1 = ids('s1', 3).map(converseInput);
    const s2 = ids('s2', 5).map(converseInput);
    const s3r = ids('s3', 3).map(converseInput);
    return [
      {
        records: s0,
        outputs: shuffled([...s0.slice(0, 3).map((r) => converseSuccess(r)), errorLine(s0[3]!, 400, 'bad')]),
        status: 'PartiallyCompleted',
      },
      { records: s1, outputs: [], status: 'Failed', message: 'Internal error while processing the job' },
      { records: s2, outputs: s2.slice(0, 4).map((r) => converseSuccess(r)), status: 'PartiallyCompleted' },
      { records: s3r, outputs: s3r.slice(0, 2).map((r) => converseSuccess(r)), status: 'PartiallyCompleted' },
    ];
  }

  interface StagedRun {
    plan: PlanOutput;
    shards: ShardItem[];
    inputs: CollectShardInput[];
    jobs: BatchJobOutcome[];
    recordIds: string[];
  }

  /** Plan's files for the shards and the tail, and each job's output as Bedrock wrote it. */
  async function stageRun(specs: ShardSpec[]): Promise<StagedRun> {
    const inputs = specs.map((spec, shard) =>
      stageShard(
        s3,
        { runId: RUN, shard, jobId: `job${shard}`, inputs: [spec.records], outputs: [spec.outputs] },
        {
          jobStatus: spec.status,
          ...(spec.message ? { failureMessage: spec.message } : {}),
          submittedAt: `2025-01-02T03:0${shard}:00.000Z`,
          endedAt: `2025-01-02T04:0${shard}:00.000Z`,
        },
      ),
    );
    const shards: ShardItem[] = inputs.map((input, shard) => ({
      shard,
      records: specs[shard]!.records.length,
      bytes: 100,
      format: 'converse',
      inputKeys: input.inputKeys,
      inputPrefix: `runs/${RUN}/batch/shard-${shard}/input/`,
      outputPrefix: `runs/${RUN}/batch/shard-${shard}/output/`,
    }));
    const jobs: BatchJobOutcome[] = inputs.map((input, shard) => ({
      jobArn: input.jobArn,
      jobName: `corpus-test-${RUN}-${shard}`,
      shard,
      status: input.jobStatus,
      ...(input.failureMessage ? { message: input.failureMessage } : {}),
      submittedAt: input.submittedAt!,
      endedAt: input.endedAt!,
      outputPrefix: input.outputPrefix,
    }));
    expect(jobs[0]?.jobArn).toBe(JOB(0));
    // s2-3 was published by another run (for the same request) after Plan looked.
    const s23 = specs[2]?.records[3];
    if (s23) {
      const other: Claimant = { runId: 'run-old', owner: 'run-old/shard/0', attempt: 'old' };
      await ledger.claim(SCOPE, s23.recordId, other, {
        contentHash: contentHashOf(s23.modelInput),
        leaseMs: LEASE_MS,
      });
      await ledger.commit(SCOPE, s23.recordId, other, 'runs/run-old/results/shard-0-0.jsonl');
    }

    const inShards = specs.flatMap((spec) => spec.records.map((r) => r.recordId));
    const base = stagePlan([...inShards.map((id, i) => item(id, i + 1)), ...tail]);
    s3.putJson(OUT, runKeys.shards(RUN), shards);
    s3.putLines(OUT, runKeys.converseTail(RUN), tail);
    const plan: PlanOutput = {
      ...base,
      mode: 'batch',
      requestedMode: 'batch',
      fanOut: { ...base.fanOut, itemsKey: runKeys.converseItems(RUN) },
      batch: {
        shardsKey: runKeys.shards(RUN),
        shards: shards.length,
        records: inShards.length,
        viaConverse: tail.length,
        slicesKey: `runs/${RUN}/plan/slices.json`,
        slices: 1,
        sliceConcurrency: 4,
        maxConcurrency: 2,
        toleratedFailurePercentage: 50,
        jobWaitSeconds: 108_000,
        heartbeatSeconds: 960,
        quotas: { minRecordsPerJob: 2 },
        quotaSources: { minRecordsPerJob: 'configured' },
      },
    };
    return { plan, shards, inputs, jobs, recordIds: [...inShards, ...tail.map((t) => t.recordId)] };
  }

  /** A shard's child execution input, as the batch Map's ItemSelector builds it (with the job once it ended). */
  function shardChildInput(run: StagedRun, shard: number, withJob: boolean): Record<string, unknown> {
    return {
      runId: RUN,
      ledgerScope: SCOPE,
      shard: run.shards[shard],
      jobWaitSeconds: 108_000,
      heartbeatSeconds: 960,
      ...(withJob ? { job: run.jobs[shard] } : {}),
    };
  }

  /** ConverseItems, then the Converse fan-out over what it gathered, in batches of four. */
  async function runFanOut(prefix: string): Promise<ReturnType<MapRun['write']>> {
    await gatherConverseItems({ runId: RUN }, { s3: new S3Client({}), outputBucket: OUT });
    const converseItems = s3.lines<WorkItem>(OUT, runKeys.converseItems(RUN));
    const map = new MapRun(prefix);
    for (let i = 0; i < converseItems.length; i += 4) {
      const batch = converseItems.slice(i, i + 4);
      map.succeeded(batchEvent(batch), await runChild(batch, new Model()));
    }
    return map.write();
  }

  it('sums the collect markers and the Converse fan-out; the jobs come from the markers in shard order', async () => {
    const run = await stageRun(shardSpecs().slice(0, 3));
    const batchMap = new MapRun('map-runs/b1/');
    for (const input of run.inputs) {
      const marker = await collectShard(input, collectDeps());
      batchMap.succeeded(shardChildInput(run, input.shard, true), marker);
    }
    const batchResult = batchMap.write();
    const fanOutResult = await runFanOut('map-runs/f1/');
    const laneBefore = laneSent.messages.length;
    const out = await finalizeRun(event({ ...run.plan, batchResult, fanOutResult }), deps());

    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    expect(m.mode).toBe('batch');
    // Shards: 3 + 0 + 3 answered; the fan-out: s0-4, s1-*, s2-4 and the tail.
    expect(m.counts).toMatchObject({ records: 16, succeeded: 13, failed: 1, skipped: 2, pending: 0 });
    expect(m.batches).toEqual({ total: 2, failed: 0 });
    await expectAccounted(m, run.recordIds);
    expect(laneSent.messages).toHaveLength(laneBefore);
    // Summed from the markers and the children: the results and failures files were not read.
    expect(s3Mock).not.toHaveReceivedCommandWith(ListObjectsV2Command, {
      Prefix: runKeys.resultsPrefix(RUN),
    });
    const expected: ManifestJob[] = [
      {
        shard: 0,
        jobArn: JOB(0),
        status: 'PartiallyCompleted',
        records: 5,
        succeeded: 3,
        failed: 1,
        skipped: 0,
        redriven: 1,
        submittedAt: '2025-01-02T03:00:00.000Z',
        endedAt: '2025-01-02T04:00:00.000Z',
      },
      {
        shard: 1,
        jobArn: JOB(1),
        status: 'Failed',
        records: 3,
        succeeded: 0,
        failed: 0,
        skipped: 0,
        redriven: 3,
        submittedAt: '2025-01-02T03:01:00.000Z',
        endedAt: '2025-01-02T04:01:00.000Z',
        message: 'Internal error while processing the job',
      },
      {
        shard: 2,
        jobArn: JOB(2),
        status: 'PartiallyCompleted',
        records: 5,
        succeeded: 3,
        failed: 0,
        skipped: 1,
        redriven: 1,
        submittedAt: '2025-01-02T03:02:00.000Z',
        endedAt: '2025-01-02T04:02:00.000Z',
      },
    ];
    expect(m.jobs).toEqual(expected);
  });

  it('collects a shard whose child died with its job ended; what it re-drives late goes to the lane, once', async () => {
    const run = await stageRun(shardSpecs());
    const batchMap = new MapRun('map-runs/b2/');
    for (const input of run.inputs.slice(0, 2)) {
      batchMap.succeeded(shardChildInput(run, input.shard, true), await collectShard(input, collectDeps()));
    }
    // Shard 2's Collect died before its marker (its files and its redrive of s2-4 written); shard 3's never ran.
    const crash = new Crash('collect', 'before-marker').install();
    await expect(collectShard(run.inputs[2]!, collectDeps())).rejects.toBeInstanceOf(SimulatedCrash);
    expect(crash.crashed).toBe(true);
    Crash.remove();
    expect(s3.text(OUT, collectKeys.marker(RUN, 2))).toBeUndefined();
    batchMap.failed(shardChildInput(run, 2, true), 'States.Timeout', 'Task timed out after 900.00 seconds');
    batchMap.failed(
      shardChildInput(run, 3, true),
      'Lambda.ServiceException',
      lambdaCause('Lambda.ServiceException', 'Lambda was unable to run the function'),
    );
    const batchResult = batchMap.write();
    // ConverseItems gathered shard 2's redrive (s2-4), not shard 3's, which did not exist yet.
    const fanOutResult = await runFanOut('map-runs/f2/');
    expect(s3.lines<WorkItem>(OUT, runKeys.converseItems(RUN)).map((w) => w.recordId)).toContain('s2-4');

    const out = await finalizeRun(event({ ...run.plan, batchResult, fanOutResult }), deps());

    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    // s2-4 counted once (by the fan-out); s3-2, left without output, is with the lane.
    expect(m.counts).toMatchObject({ records: 19, succeeded: 15, failed: 1, skipped: 2, pending: 1 });
    await expectAccounted(m, run.recordIds);
    expect(handedOver(laneSent.messages)).toEqual(['s3-2']);
    expect(laneSent.queue[0]).toMatchObject({
      runId: RUN,
      ledgerScope: SCOPE,
      format: 'converse',
      modelInput: converseInput('s3-2').modelInput,
      error: { code: 'NoBatchOutput', retryable: true },
    });
    // Finalize collected both shards: their markers, their lines.
    expect(m.jobs?.map((j) => [j.shard, j.status, j.succeeded, j.skipped, j.redriven])).toEqual([
      [0, 'PartiallyCompleted', 3, 0, 1],
      [1, 'Failed', 0, 0, 3],
      [2, 'PartiallyCompleted', 3, 1, 1],
      [3, 'PartiallyCompleted', 2, 0, 1],
    ]);
    expect(
      s3
        .lines<ResultLine>(OUT, collectKeys.results(RUN, 3, 0))
        .map((l) => l.recordId)
        .sort(),
    ).toEqual(['s3-0', 's3-1']);
    expect(await ledger.get(SCOPE, 's2-4')).toMatchObject({
      status: 'published',
      owner: expect.stringMatching(/\/batch\//),
    });
  });

  it("hands every record of a shard whose job never ended to the lane, with the child's error", async () => {
    const run = await stageRun(shardSpecs());
    const batchMap = new MapRun('map-runs/b3/');
    for (const input of run.inputs.slice(0, 3)) {
      batchMap.succeeded(shardChildInput(run, input.shard, true), await collectShard(input, collectDeps()));
    }
    // Shard 3's job never ended: its wait timed out, no job outcome.
    batchMap.failed(shardChildInput(run, 3, false), 'States.Timeout', 'the job did not end in time');
    const batchResult = batchMap.write();
    const fanOutResult = await runFanOut('map-runs/f3/');

    const out = await finalizeRun(event({ ...run.plan, batchResult, fanOutResult }), deps());

    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    expect(m.counts).toMatchObject({ records: 19, succeeded: 13, failed: 1, skipped: 2, pending: 3 });
    await expectAccounted(m, run.recordIds);
    expect(handedOver(laneSent.messages)).toEqual(ids('s3', 3));
    for (const [i, msg] of laneSent.queue.entries()) {
      expect(msg).toMatchObject({
        modelInput: converseInput(`s3-${i}`).modelInput,
        error: { code: 'States.Timeout', message: expect.stringContaining('the job did not end in time') },
      });
    }
    expect(m.jobs?.[3]).toEqual({
      shard: 3,
      jobArn: null,
      status: 'NotCollected',
      records: 3,
      succeeded: 0,
      failed: 0,
      skipped: 0,
      redriven: 0,
      submittedAt: null,
      endedAt: null,
      message: 'States.Timeout: the job did not end in time',
    });
    expect(s3.text(OUT, collectKeys.results(RUN, 3, 0))).toBeUndefined();
  });

  it('the batch Map failed before the fan-out: the tail and the re-driven records accounted from the ledger', async () => {
    const run = await stageRun(shardSpecs());
    for (const input of run.inputs.slice(0, 3)) await collectShard(input, collectDeps());
    const cause = 'The specified tolerated failure threshold was exceeded';
    // No ResultWriter details, no ConverseItems, no fan-out.
    const out = await finalizeRun(
      event({ ...run.plan, error: { Error: 'States.ExceedToleratedFailureThreshold', Cause: cause } }),
      deps(),
    );

    expect(out.status).toBe('FAILED');
    expect(out.error).toEqual({ code: 'States.ExceedToleratedFailureThreshold', message: cause });
    const m = manifest();
    // Shards 0 and 2 answered six; shard 3's records, the re-driven ones and the tail are with the lane.
    expect(m.counts).toMatchObject({ records: 19, succeeded: 6, failed: 1, skipped: 2, pending: 10 });
    await expectAccounted(m, run.recordIds);
    expect(handedOver(laneSent.messages)).toEqual(
      ['s0-4', ...ids('s1', 3), 's2-4', ...ids('s3', 3), 't-0', 't-1'].sort(),
    );
    expect(laneSent.queue.every((msg) => msg.error.code === 'States.ExceedToleratedFailureThreshold')).toBe(
      true,
    );
    expect(m.jobs?.map((j) => [j.shard, j.status])).toEqual([
      [0, 'PartiallyCompleted'],
      [1, 'Failed'],
      [2, 'PartiallyCompleted'],
      [3, 'NotCollected'],
    ]);
    expect(putEvents().map((e) => e.DetailType)).toEqual(['Corpus Run Failed']);
  });

  it('a fatal Failed job: its records failed by Collect, the shard counted from its marker', async () => {
    const specs = shardSpecs().slice(0, 2);
    specs[1] = { ...specs[1]!, message: "You don't have access to the model with the specified model ID." };
    const run = await stageRun(specs);
    const batchMap = new MapRun('map-runs/b5/');
    batchMap.succeeded(shardChildInput(run, 0, true), await collectShard(run.inputs[0]!, collectDeps()));
    await expect(collectShard(run.inputs[1]!, collectDeps())).rejects.toBeInstanceOf(BatchJobFailedError);
    batchMap.failed(
      shardChildInput(run, 1, true),
      'BatchJobFailedError',
      lambdaCause('BatchJobFailedError', `Bedrock batch job ${JOB(1)} (shard 1) failed`),
    );
    const batchResult = batchMap.write();
    const fanOutResult = await runFanOut('map-runs/f5/');

    const out = await finalizeRun(event({ ...run.plan, batchResult, fanOutResult }), deps());

    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    expect(m.counts).toMatchObject({ records: 11, succeeded: 6, failed: 4, skipped: 1, pending: 0 });
    await expectAccounted(m, run.recordIds);
    expect(m.jobs?.[1]).toMatchObject({ shard: 1, status: 'Failed', failed: 3, redriven: 0 });
    expect(laneSent.dlq.filter((msg) => msg.error.code === 'AccessDeniedException')).toHaveLength(3);
  });

  it('a shard whose Collect died on a fatal Failed job: Finalize collects it, its records stay failed', async () => {
    const specs = shardSpecs().slice(0, 2);
    specs[1] = { ...specs[1]!, message: 'The specified model was not found.' };
    const run = await stageRun(specs);
    const batchMap = new MapRun('map-runs/b6/');
    batchMap.succeeded(shardChildInput(run, 0, true), await collectShard(run.inputs[0]!, collectDeps()));
    // Shard 1's Collect failed its records, then died before its marker.
    const crash = new Crash('collect', 'before-marker').install();
    await expect(collectShard(run.inputs[1]!, collectDeps())).rejects.toBeInstanceOf(SimulatedCrash);
    expect(crash.crashed).toBe(true);
    Crash.remove();
    expect(s3.text(OUT, collectKeys.marker(RUN, 1))).toBeUndefined();
    batchMap.failed(shardChildInput(run, 1, true), 'States.Timeout', 'Task timed out after 900.00 seconds');
    const batchResult = batchMap.write();
    const fanOutResult = await runFanOut('map-runs/f6/');

    const out = await finalizeRun(event({ ...run.plan, batchResult, fanOutResult }), deps());

    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    expect(m.counts).toMatchObject({ records: 11, succeeded: 6, failed: 4, skipped: 1, pending: 0 });
    await expectAccounted(m, run.recordIds);
    expect(m.jobs?.[1]).toMatchObject({ shard: 1, status: 'Failed', failed: 3, redriven: 0 });
    // Failed for good by the shard, not handed to the lane as well.
    expect(handedOver(laneSent.messages)).toEqual([]);
    for (const entry of (await ledgerEntries(ids('s1', 3))).values()) {
      expect(entry).toMatchObject({ status: 'failed', owner: `${RUN}/shard/1` });
    }
  });

  it('throws when the shard list is missing', async () => {
    const run = await stageRun(shardSpecs().slice(0, 1));
    s3.objects.delete(`${OUT}/${runKeys.shards(RUN)}`);
    await expect(finalizeRun(event(run.plan), deps())).rejects.toThrow(
      `shard list s3://${OUT}/${runKeys.shards(RUN)} is missing`,
    );
  });
});
