import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { collectShard } from '../../../../../lambda/batch/collect/collect-shard';
import {
  BatchJobFailedError,
  collectKeys,
  type CollectDeps,
  type CollectFailureLine,
  type CollectShardInput,
  type CollectShardSummary,
} from '../../../../../lambda/batch/collect/collect-contract';
import {
  batchErrorCode,
  batchJobFailure,
  isRetryableBatchError,
  normaliseModelOutput,
} from '../../../../../lambda/batch/collect/output-lines';
import type { ResultLine, WorkItem } from '../../../../../lambda/shared/contracts';
import type {
  Claimant,
  ClaimOutcome,
  Ledger,
  LedgerEntry,
  TransitionOutcome,
} from '../../../../../lambda/shared/ledger';
import { logger } from '../../../../../lambda/shared/observability';
import { contentHashOf } from '../../../../../lambda/shared/records';
import {
  freshLedger,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from '../../failure-lane/lane-fixtures';
import { FakeS3 } from '../../helpers';
import {
  Crash,
  RecordingLane,
  RecordingPublisher,
  SimulatedCrash,
  TracingLedger,
} from '../../converse/unit-fixtures';
import {
  BUCKET,
  converseInput,
  converseSuccess,
  errorLine,
  ids,
  nativeInput,
  nativeSuccess,
  shuffled,
  stageShard,
  type InputRecord,
} from '../batch-output';
import {
  AWS_FIXTURES,
  fixtureJson,
  fixtureJsonLines,
  fixtureText,
  type AwsFixtureName,
} from '../../../aws-shapes/fixtures';
import { useClientMocks } from '../../../../support/aws-mocks';

// S3 is an in-memory fake behind aws-sdk-client-mock; the ledger is a real table on dynalite, so claims, commits and
// failures are the real conditional writes; the failure lane and the results queue record what they are given.
const [s3Mock] = useClientMocks(S3Client);

const RUN = 'run-a1';
/** The ledger scope stageShard gives every shard. */
const SCOPE = 'test/model';
const LEASE_MS = 60_000;

/** The fake S3, which can watch what is written. */
class WatchedS3 extends FakeS3 {
  onPut: ((key: string, body: string) => void) | undefined;

  override put(bucket: string, key: string, body: string, metadata?: Record<string, string>): void {
    this.onPut?.(key, body);
    super.put(bucket, key, body, metadata);
  }
}

let server: LedgerServer;
let tables = 0;
let ledger: Ledger;
let s3: WatchedS3;
let lane: RecordingLane;
let publisher: RecordingPublisher;

beforeAll(async () => {
  server = await startLedgerServer();
});

afterAll(async () => {
  await stopLedgerServer(server);
});

beforeEach(async () => {
  s3 = new WatchedS3(s3Mock).install();
  ({ ledger } = await freshLedger(server, `collect-ledger-${++tables}`));
  lane = new RecordingLane();
  publisher = new RecordingPublisher();
});

afterEach(() => {
  Crash.remove();
  jest.restoreAllMocks();
});

function deps(overrides: Partial<CollectDeps> = {}): CollectDeps {
  return {
    s3: new S3Client({}),
    ledger,
    failureLane: lane,
    resultsPublisher: publisher,
    outputBucket: BUCKET,
    leaseMs: LEASE_MS,
    concurrency: 8,
    ...overrides,
  };
}

/** The ledger entries of records (in `scope`), by record id. */
async function entries(recordIds: readonly string[], scope = SCOPE): Promise<Map<string, LedgerEntry>> {
  const found = new Map<string, LedgerEntry>();
  for (let i = 0; i < recordIds.length; i += 100) {
    for (const [id, entry] of await ledger.getMany(scope, recordIds.slice(i, i + 100))) found.set(id, entry);
  }
  return found;
}

/** Another run's unit publishes a record for a request (its content hash). */
async function publishedElsewhere(recordId: string, modelInput: unknown, runId = 'run-old'): Promise<void> {
  const who: Claimant = { runId, owner: `${runId}/batch/b0`, attempt: 'old-attempt' };
  const claim = await ledger.claim(SCOPE, recordId, who, {
    contentHash: contentHashOf(modelInput),
    leaseMs: LEASE_MS,
  });
  expect(claim.kind).toBe('claimed');
  expect(await ledger.commit(SCOPE, recordId, who, `runs/${runId}/results/b0.jsonl`)).toEqual({
    kind: 'done',
  });
}

/** Every result line of a run, across its results parts, with the key it is in. */
function allResults(runId = RUN): { key: string; line: ResultLine }[] {
  return s3
    .keys(BUCKET, `runs/${runId}/results/`)
    .flatMap((key) => s3.lines<ResultLine>(BUCKET, key).map((line) => ({ key, line })));
}

/** Everything a run wrote (results, failures, redrive), key -> text; the job's files and the marker apart. */
function runFiles(runId = RUN): Record<string, string> {
  const files: Record<string, string> = {};
  for (const key of s3.keys(BUCKET, `runs/${runId}/`)) {
    if (key.includes('/batch/') || key.includes('/collect/')) continue;
    files[key] = s3.text(BUCKET, key) ?? '';
  }
  return files;
}

function laneOf(runId: string): typeof lane.messages {
  return lane.messages.filter((m) => m.runId === runId);
}

describe('collectShard: a Completed Converse job', () => {
  const files = [ids('a', 30).map(converseInput), ids('b', 25).map(converseInput)];
  const inputOf = new Map(files.flat().map((r) => [r.recordId, r.modelInput]));
  const partOf = (recordId: string): string => collectKeys.results(RUN, 3, recordId.startsWith('a') ? 0 : 1);

  function stage(echo: (record: InputRecord) => InputRecord = (r) => r): CollectShardInput {
    return stageShard(s3, {
      runId: RUN,
      shard: 3,
      jobId: 'job3',
      inputs: files,
      outputs: files.map((records, i) =>
        shuffled(
          records.map((r) => converseSuccess(echo(r))),
          i + 1,
        ),
      ),
      manifest: { total: 55, success: 55, error: 0 },
    });
  }

  it('joins shuffled output lines on recordId and writes one results part per output file', async () => {
    const input = stage();
    const summary = await collectShard(input, deps());
    expect(s3.keys(BUCKET, `runs/${RUN}/results/`)).toEqual([
      collectKeys.results(RUN, 3, 0),
      collectKeys.results(RUN, 3, 1),
    ]);
    expect(collectKeys.results(RUN, 3, 0)).toBe(`runs/${RUN}/results/shard-3-0.jsonl`);
    const part0 = s3.lines<ResultLine>(BUCKET, collectKeys.results(RUN, 3, 0));
    expect(part0.map((l) => l.recordId).sort()).toEqual(ids('a', 30).sort());
    // Written in the order Bedrock wrote them (deterministic), not re-sorted.
    expect(part0.map((l) => l.recordId)).toEqual(shuffled(ids('a', 30), 1));
    const b7 = s3.lines<ResultLine>(BUCKET, collectKeys.results(RUN, 3, 1)).find((l) => l.recordId === 'b-7');
    expect(b7).toEqual({
      recordId: 'b-7',
      modelOutput: {
        output: { message: { role: 'assistant', content: [{ text: 'answer b-7' }] } },
        stopReason: 'end_turn',
      },
      usage: { inputTokens: 10, outputTokens: 5, totalTokens: 15 },
    });
    expect(summary).toEqual({
      shard: 3,
      jobArn: input.jobArn,
      status: 'Completed',
      records: 55,
      succeeded: 55,
      failed: 0,
      skipped: 0,
      missing: 0,
      inputTokens: 550,
      outputTokens: 275,
      manifestCheck: { expected: 55, seen: 55, ok: true, ignoredLines: 0 },
    });
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 3))).toEqual(summary);
    expect(s3.text(BUCKET, collectKeys.failures(RUN, 3))).toBeUndefined();
    expect(s3.text(BUCKET, collectKeys.redrive(RUN, 3))).toBeUndefined();
    expect(lane.messages).toEqual([]);
    // One results-queue message per record, naming the part that holds its line; each then marked delivered.
    expect(publisher.sent.map((m) => m.recordId).sort()).toEqual([...inputOf.keys()].sort());
    for (const m of publisher.sent) {
      expect(m).toEqual({
        runId: RUN,
        recordId: m.recordId,
        ledgerScope: SCOPE,
        resultKey: partOf(m.recordId),
        usage: { inputTokens: 10, outputTokens: 5, totalTokens: 15 },
      });
    }
    const ledgerEntries = await entries([...inputOf.keys()]);
    expect([...ledgerEntries.values()].every((e) => e.delivered === true)).toBe(true);
  });

  it('claims each answered record with the hash of its request in the shard input and commits it before writing its line', async () => {
    // Bedrock echoes a modelInput on each output line; the claim must hash the request the shard sent.
    const input = stage((r) => ({ ...r, modelInput: { ...r.modelInput, echoed: true } }));
    const tracer = new TracingLedger(ledger);
    const uncommitted: string[] = [];
    let linesChecked = 0;
    s3.onPut = (key, body) => {
      if (!key.startsWith(`runs/${RUN}/results/`)) return;
      for (const text of body.split('\n').filter(Boolean)) {
        linesChecked++;
        const { recordId } = JSON.parse(text) as ResultLine;
        if (!tracer.committed.has(recordId)) uncommitted.push(recordId);
      }
    };
    await collectShard(input, deps({ ledger: tracer }));
    expect(linesChecked).toBe(55);
    expect(uncommitted).toEqual([]);

    const claims = tracer.calls.filter((c) => c.op === 'claim');
    expect(claims).toHaveLength(55);
    for (const claim of claims) {
      const request = inputOf.get(claim.recordId);
      expect(claim.contentHash).toBe(contentHashOf(request));
      expect(claim.contentHash).not.toBe(contentHashOf({ ...request, echoed: true }));
    }
    const ledgerEntries = await entries([...inputOf.keys()]);
    expect(ledgerEntries.size).toBe(55);
    for (const [recordId, entry] of ledgerEntries) {
      expect(entry).toMatchObject({
        status: 'published',
        runId: RUN,
        owner: `${RUN}/shard/3`,
        resultKey: partOf(recordId),
        contentHash: contentHashOf(inputOf.get(recordId)),
      });
    }
  });
});

describe('collectShard: the output files as the Bedrock documentation shows them', () => {
  /** Stages a shard whose input holds the records of `outputName`'s lines and whose job wrote that file as is. */
  function stageDocumented(outputName: AwsFixtureName, manifestText?: string): CollectShardInput {
    const records = fixtureJsonLines(outputName).map((line) => ({
      recordId: String(line.recordId),
      modelInput: line.modelInput as Record<string, unknown>,
    }));
    const input = stageShard(s3, {
      runId: RUN,
      shard: 7,
      jobId: 'abcdefghwxyz',
      inputs: [records],
      outputs: [[]],
    });
    s3.put(BUCKET, `${input.outputPrefix}part-0.jsonl.out`, fixtureText(outputName));
    if (manifestText !== undefined) s3.put(BUCKET, `${input.outputPrefix}manifest.json.out`, manifestText);
    return input;
  }

  it("reads the documented success and error lines and manifest.json.out: usage, Bedrock's reason, counts", async () => {
    const input = stageDocumented(AWS_FIXTURES.batchOutput, fixtureText(AWS_FIXTURES.batchManifest));
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({
      records: 2,
      succeeded: 1,
      failed: 1,
      skipped: 0,
      missing: 0,
      inputTokens: 8,
      outputTokens: 3,
      manifestCheck: { expected: 2, seen: 2, ok: true, ignoredLines: 0 },
    });
    // An InvokeModel job's modelOutput is the model's native body (here Amazon Titan Text's), kept whole.
    expect(allResults().map(({ line }) => line)).toEqual([
      {
        recordId: '3223593EFGH',
        modelOutput: {
          inputTextTokenCount: 8,
          results: [{ tokenCount: 3, outputText: 'blue\n', completionReason: 'FINISH' }],
        },
        usage: { inputTokens: 8, outputTokens: 3, totalTokens: 11 },
      },
    ]);
    // errorCode 400 is the runtime API's ValidationException: not worth a retry, so it fails with Bedrock's message.
    const failure: CollectFailureLine = {
      recordId: '1223213ABCD',
      stage: 'batch',
      error: { code: 'ValidationException', message: 'bad request', retryable: false },
    };
    expect(s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 7))).toEqual([failure]);
    expect(lane.dlq).toEqual([{ ...failure, runId: RUN, ledgerScope: SCOPE }]);
  });

  it("reads a Converse job's success line: the Converse response, its usage and stopReason", async () => {
    const manifest = JSON.stringify({
      totalRecordCount: 1,
      processedRecordCount: 1,
      successRecordCount: 1,
      errorRecordCount: 0,
      inputTokenCount: 125,
      outputTokenCount: 60,
    });
    const summary = await collectShard(stageDocumented(AWS_FIXTURES.batchOutputConverse, manifest), deps());
    expect(summary).toMatchObject({
      records: 1,
      succeeded: 1,
      failed: 0,
      inputTokens: 125,
      outputTokens: 60,
      manifestCheck: { ok: true },
    });
    const converse = fixtureJson(AWS_FIXTURES.converseResponse);
    expect(allResults().map(({ line }) => line)).toEqual([
      {
        recordId: 'CONVERSE001',
        modelOutput: { output: converse.output, stopReason: 'end_turn' },
        usage: { inputTokens: 125, outputTokens: 60, totalTokens: 185 },
      },
    ]);
  });
});

describe('collectShard: model output formats', () => {
  it('normalises a native Anthropic body: the whole body as modelOutput, usage from input_tokens/output_tokens', async () => {
    const records = ids('n', 4).map(nativeInput);
    const input = stageShard(s3, {
      runId: RUN,
      shard: 0,
      jobId: 'jobn',
      inputs: [records],
      outputs: [shuffled(records.map((r) => nativeSuccess(r, 12, 7)))],
      manifest: { total: 4, success: 4, error: 0 },
    });
    const summary = await collectShard(input, deps());
    const n2 = allResults().find(({ line }) => line.recordId === 'n-2')?.line;
    expect(n2).toEqual({
      recordId: 'n-2',
      modelOutput: expect.objectContaining({
        content: [{ type: 'text', text: 'answer n-2' }],
        stop_reason: 'end_turn',
        usage: { input_tokens: 12, output_tokens: 7 },
      }),
      usage: { inputTokens: 12, outputTokens: 7, totalTokens: 19 },
    });
    expect(summary).toMatchObject({ succeeded: 4, inputTokens: 48, outputTokens: 28 });
  });

  it('reads usage from Converse, Anthropic, Llama and Titan bodies and tolerates none', () => {
    expect(
      normaliseModelOutput({
        output: { message: { role: 'assistant', content: [] } },
        stopReason: 'max_tokens',
        usage: { inputTokens: 3, outputTokens: 4, totalTokens: 7 },
      }),
    ).toEqual({
      modelOutput: { output: { message: { role: 'assistant', content: [] } }, stopReason: 'max_tokens' },
      usage: { inputTokens: 3, outputTokens: 4, totalTokens: 7 },
    });
    expect(normaliseModelOutput({ usage: { input_tokens: 2, output_tokens: 1 } }).usage).toEqual({
      inputTokens: 2,
      outputTokens: 1,
      totalTokens: 3,
    });
    expect(
      normaliseModelOutput({ generation: 'x', prompt_token_count: 5, generation_token_count: 6 }).usage,
    ).toEqual({ inputTokens: 5, outputTokens: 6, totalTokens: 11 });
    expect(
      normaliseModelOutput({ inputTextTokenCount: 8, results: [{ tokenCount: 3 }, { tokenCount: 2 }] }).usage,
    ).toEqual({ inputTokens: 8, outputTokens: 5, totalTokens: 13 });
    // Every catalog family's documented answer (test/fixtures/aws/models): gpt-oss's usage, Mistral's none.
    const documented = (family: string): unknown =>
      JSON.parse(
        readFileSync(join(__dirname, `../../../../fixtures/aws/models/${family}/response.json`), 'utf8'),
      );
    expect(normaliseModelOutput(documented('openai-chat')).usage).toEqual({
      inputTokens: 20,
      outputTokens: 10,
      totalTokens: 30,
    });
    expect(normaliseModelOutput(documented('meta-llama')).usage).toEqual({
      inputTokens: 17,
      outputTokens: 10,
      totalTokens: 27,
    });
    expect(normaliseModelOutput(documented('anthropic-messages')).usage.inputTokens).toBe(14);
    expect(normaliseModelOutput(documented('amazon-nova')).usage).toEqual({
      inputTokens: 12,
      outputTokens: 10,
      totalTokens: 22,
    });
    expect(normaliseModelOutput(documented('mistral-chat')).usage.totalTokens).toBe(0);
    // A Nova native answer looks like a Converse one: from a native shard it is kept whole, as converse mode keeps it.
    expect(normaliseModelOutput(documented('amazon-nova'), 'native')).toEqual({
      modelOutput: documented('amazon-nova'),
      usage: { inputTokens: 12, outputTokens: 10, totalTokens: 22 },
    });
    expect(normaliseModelOutput(documented('amazon-nova'), 'converse').modelOutput).not.toHaveProperty(
      'usage',
    );
    expect(normaliseModelOutput({ completion: 'x' }).usage).toEqual({
      inputTokens: 0,
      outputTokens: 0,
      totalTokens: 0,
    });
    expect(normaliseModelOutput('plain text')).toEqual({
      modelOutput: 'plain text',
      usage: { inputTokens: 0, outputTokens: 0, totalTokens: 0 },
    });
  });
});

describe('collectShard: error lines', () => {
  const records = ids('e', 9).map(converseInput);
  const [ok0, ok1, ok2, throttled, invalid, server500, timeout408, bare, named] = records as [
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
  ];
  const retryableIds = ['e-3', 'e-5', 'e-6', 'e-7', 'e-8'];
  let input: CollectShardInput;

  beforeEach(() => {
    input = stageShard(s3, {
      runId: RUN,
      shard: 1,
      jobId: 'jobe',
      inputs: [records],
      outputs: [
        [
          errorLine(invalid, 400, 'messages.0.content: must not be empty'),
          converseSuccess(ok2),
          errorLine(throttled, 429, 'Too many tokens, please wait'),
          converseSuccess(ok0),
          errorLine(server500, 500, 'Internal server error'),
          errorLine(timeout408, 408, 'Request timed out'),
          converseSuccess(ok1),
          // A retryable error line without its request: the redrive takes it from the input file.
          errorLine(bare, 503, 'Service unavailable', false),
          errorLine(named, 'ModelTimeoutException', 'Model timed out'),
        ],
      ],
      manifest: { total: 9, success: 3, error: 6 },
    });
  });

  it('a non-retryable error line fails for good: its failure line, the ledger says failed, a DLQ message', async () => {
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({
      records: 9,
      succeeded: 3,
      failed: 1,
      skipped: 0,
      missing: 5,
      failuresKey: `runs/${RUN}/failures/shard-1.jsonl`,
      manifestCheck: { expected: 9, seen: 9, ok: true },
    });
    const failure: CollectFailureLine = {
      recordId: 'e-4',
      stage: 'batch',
      error: {
        code: 'ValidationException',
        message: 'messages.0.content: must not be empty',
        retryable: false,
      },
    };
    expect(s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 1))).toEqual([failure]);
    expect(await ledger.get(SCOPE, 'e-4')).toMatchObject({
      status: 'failed',
      owner: `${RUN}/shard/1`,
      error: { code: 'ValidationException', message: 'messages.0.content: must not be empty' },
    });
    expect(lane.dlq).toEqual([{ ...failure, runId: RUN, ledgerScope: SCOPE }]);
    expect(lane.queue).toEqual([]);
    expect(allResults().map(({ line }) => line.recordId)).toEqual(['e-2', 'e-0', 'e-1']);
  });

  it('retryable error lines (429, 5xx, 408, timeouts) go to the redrive file with their request, unclaimed', async () => {
    const summary = await collectShard(input, deps());
    expect(summary.redriveKey).toBe(collectKeys.redrive(RUN, 1));
    const redrive = s3.lines<WorkItem>(BUCKET, collectKeys.redrive(RUN, 1));
    // In input order, each with the request the shard sent and its 1-based position in the shard.
    expect(redrive).toEqual(
      retryableIds.map((recordId) => {
        const position = Number(recordId.slice(2));
        return {
          recordId,
          format: 'converse',
          modelInput: records[position]!.modelInput,
          line: position + 1,
        };
      }),
    );
    const ledgerEntries = await entries(records.map((r) => r.recordId));
    expect([...ledgerEntries.keys()].sort()).toEqual(['e-0', 'e-1', 'e-2', 'e-4']);
    const failed = s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 1)).map((f) => f.recordId);
    expect(failed.filter((id) => id !== undefined && retryableIds.includes(id))).toEqual([]);
    expect(lane.messages.map((m) => m.recordId)).toEqual(['e-4']);
  });

  it('names the HTTP status of an error line as the runtime API does, and decides retryability from it', () => {
    expect(batchErrorCode(400)).toBe('ValidationException');
    expect(batchErrorCode('429')).toBe('ThrottlingException');
    expect(batchErrorCode(503)).toBe('ServiceUnavailableException');
    expect(batchErrorCode(418)).toBe('418');
    expect(batchErrorCode('ModelErrorException')).toBe('ModelErrorException');
    expect(batchErrorCode(undefined)).toBe('BatchRecordError');
    for (const code of ['429', '408', '500', '503', 'ThrottlingException', 'ModelTimeoutException']) {
      expect(isRetryableBatchError(code)).toBe(true);
    }
    for (const code of ['400', '403', '404', '424', 'ValidationException', 'AccessDeniedException', 'x']) {
      expect(isRetryableBatchError(code)).toBe(false);
    }
  });
});

describe('collectShard: records without an output line', () => {
  const files = [ids('p', 10).map(converseInput), ids('q', 6).map(nativeInput)];
  const answered = new Set(['p-0', 'p-2', 'p-3', 'p-5', 'p-6', 'p-8', 'q-1', 'q-4']);

  function stage(
    extra: Partial<CollectShardInput>,
    withManifest: boolean,
    secondFileOutput = true,
  ): CollectShardInput {
    return stageShard(
      s3,
      {
        runId: RUN,
        shard: 2,
        jobId: 'jobp',
        inputs: files,
        outputs: files
          .map((records, i) =>
            shuffled(
              records
                .filter((r) => answered.has(r.recordId))
                .map((r) => (i === 0 ? converseSuccess(r) : nativeSuccess(r))),
              i + 3,
            ),
          )
          .slice(0, secondFileOutput ? 2 : 1),
        ...(withManifest ? { manifest: { total: 16, success: secondFileOutput ? 8 : 6, error: 0 } } : {}),
      },
      extra,
    );
  }

  it('PartiallyCompleted: keeps the answers and writes the missing records as WorkItems for the Converse fan-out', async () => {
    const input = stage({ jobStatus: 'PartiallyCompleted' }, true);
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({
      status: 'PartiallyCompleted',
      records: 16,
      succeeded: 8,
      failed: 0,
      skipped: 0,
      missing: 8,
      redriveKey: `runs/${RUN}/redrive/shard-2.jsonl`,
      manifestCheck: { expected: 8, seen: 8, ok: true },
    });
    expect(summary.succeeded + summary.failed + summary.skipped + summary.missing).toBe(summary.records);
    const redrive = s3.lines<WorkItem>(BUCKET, collectKeys.redrive(RUN, 2));
    expect(redrive.map((w) => w.recordId)).toEqual(['p-1', 'p-4', 'p-7', 'p-9', 'q-0', 'q-2', 'q-3', 'q-5']);
    // line: the record's 1-based position among the shard's input records, across its input files.
    expect(redrive[0]).toEqual({ ...files[0]![1], format: 'converse', line: 2 });
    expect(redrive[4]).toEqual({ ...files[1]![0], format: 'native', line: 11 });
    expect(redrive.map((w) => w.line)).toEqual([2, 5, 8, 10, 11, 13, 14, 16]);
    expect(
      allResults()
        .map(({ line }) => line.recordId)
        .sort(),
    ).toEqual([...answered].sort());
    // Re-driven records are not claimed: the Converse fan-out of this run claims them.
    const ledgerEntries = await entries(files.flat().map((r) => r.recordId));
    expect([...ledgerEntries.keys()].sort()).toEqual([...answered].sort());
    expect(lane.messages).toEqual([]);
  });

  it.each<['Stopped' | 'Expired', boolean]>([
    ['Stopped', false],
    ['Expired', true],
  ])('%s: keeps what the job wrote and re-drives the rest', async (status, withManifest) => {
    // The job ended before it wrote the second file's output.
    const input = stage(
      {
        jobStatus: status,
        failureMessage: `job ${status}`,
        submittedAt: '2025-01-02T03:00:00.000Z',
        endedAt: '2025-01-03T03:00:00.000Z',
      },
      withManifest,
      false,
    );
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({ status, records: 16, succeeded: 6, missing: 10 });
    // The job's times and message are kept for the run manifest's jobs.
    expect(summary).toMatchObject({
      submittedAt: '2025-01-02T03:00:00.000Z',
      endedAt: '2025-01-03T03:00:00.000Z',
      message: `job ${status}`,
    });
    expect(s3.lines<WorkItem>(BUCKET, collectKeys.redrive(RUN, 2)).map((w) => w.recordId)).toEqual([
      'p-1',
      'p-4',
      'p-7',
      'p-9',
      ...ids('q', 6),
    ]);
    const ledgerEntries = await entries(files.flat().map((r) => r.recordId));
    expect(
      [...ledgerEntries]
        .filter(([, e]) => e.status === 'published')
        .map(([id]) => id)
        .sort(),
    ).toEqual(['p-0', 'p-2', 'p-3', 'p-5', 'p-6', 'p-8']);
    expect(ledgerEntries.size).toBe(6);
    expect(summary.manifestCheck).toEqual(
      withManifest
        ? { expected: 6, seen: 6, ok: true, ignoredLines: 0 }
        : { expected: null, seen: 6, ok: false, ignoredLines: 0, detail: 'manifest.json.out was not found' },
    );
  });
});

describe('collectShard: records other runs have in the ledger scope', () => {
  const files = [ids('h', 6).map(converseInput), ids('k', 3).map(converseInput)];
  const byId = new Map(files.flat().map((r) => [r.recordId, r]));

  function stage(): CollectShardInput {
    return stageShard(s3, {
      runId: RUN,
      shard: 6,
      jobId: 'jobh',
      inputs: files,
      outputs: files.map((records) => shuffled(records.map((r) => converseSuccess(r, 10, 5)))),
    });
  }

  it('the same request published by another run: skipped, nothing written or sent for it, its entry untouched', async () => {
    await publishedElsewhere('h-1', byId.get('h-1')!.modelInput);
    // h-4 is claimed by another run's live unit (its lease is running).
    const other: Claimant = { runId: 'run-other', owner: 'run-other/batch/b9', attempt: 'x' };
    await ledger.claim(SCOPE, 'h-4', other, {
      contentHash: contentHashOf(byId.get('h-4')!.modelInput),
      leaseMs: LEASE_MS,
    });
    const input = stage();
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({
      records: 9,
      succeeded: 7,
      failed: 0,
      skipped: 2,
      missing: 0,
      inputTokens: 70,
      outputTokens: 35,
    });
    const published = allResults().map(({ line }) => line.recordId);
    expect(published).not.toContain('h-1');
    expect(published).not.toContain('h-4');
    expect(published).toHaveLength(7);
    expect(await ledger.get(SCOPE, 'h-1')).toMatchObject({
      status: 'published',
      runId: 'run-old',
      owner: 'run-old/batch/b0',
      resultKey: 'runs/run-old/results/b0.jsonl',
    });
    expect(await ledger.get(SCOPE, 'h-4')).toMatchObject({ status: 'claimed', owner: 'run-other/batch/b9' });
    expect(publisher.sent.map((m) => m.recordId)).not.toContain('h-1');
    expect(lane.messages).toEqual([]);
    expect(s3.text(BUCKET, collectKeys.failures(RUN, 6))).toBeUndefined();
  });

  it('a recordId published earlier for a different request is a RecordIdReused failure with the way out', async () => {
    // An earlier run published k-* under another prompt template: same recordIds, other requests.
    for (const id of ids('k', 3)) {
      await publishedElsewhere(id, {
        messages: [{ role: 'user', content: [{ text: `old template ${id}` }] }],
      });
    }
    const input = stage();
    // A part an earlier attempt wrote before it lost these records: no lines now, so it goes.
    s3.putLines(BUCKET, collectKeys.results(RUN, 6, 1), [{ recordId: 'k-0' }]);
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({ records: 9, succeeded: 6, failed: 3, skipped: 0, missing: 0 });
    const failures = s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 6));
    expect(failures.map((f) => f.recordId).sort()).toEqual(ids('k', 3));
    for (const f of failures) {
      expect(f.error).toEqual({
        code: 'RecordIdReused',
        message: expect.stringContaining('run-old'),
        retryable: false,
      });
      expect(f.error.message).toContain('for a different request');
      expect(f.error.message).toContain(
        'give this record its own recordId, or run the corpus under another ledgerScope',
      );
    }
    expect(lane.dlq.map((m) => m.recordId).sort()).toEqual(ids('k', 3));
    expect(lane.dlq.every((m) => m.error.code === 'RecordIdReused')).toBe(true);
    // The earlier run's publication stands.
    for (const [, entry] of await entries(ids('k', 3))) {
      expect(entry).toMatchObject({ status: 'published', owner: 'run-old/batch/b0' });
    }
    expect(s3.text(BUCKET, collectKeys.results(RUN, 6, 1))).toBeUndefined();
    expect(
      allResults()
        .map(({ line }) => line.recordId)
        .sort(),
    ).toEqual(ids('h', 6));
  });
});

describe('collectShard: a Failed job', () => {
  const converseRecords = ids('f', 3).map(converseInput);
  const nativeRecords = ids('g', 2).map(nativeInput);
  const allIds = ['f-0', 'f-1', 'f-2', 'g-0', 'g-1'];

  function stage(failureMessage: string): CollectShardInput {
    return stageShard(
      s3,
      {
        runId: RUN,
        shard: 5,
        jobId: 'jobf',
        // f-1 repeated in the second file: counted once.
        inputs: [converseRecords, [...nativeRecords, converseRecords[1]!]],
        outputs: [],
      },
      {
        jobStatus: 'Failed',
        failureMessage,
        submittedAt: '2025-01-02T03:00:00.000Z',
        endedAt: '2025-01-02T03:05:00.000Z',
      },
    );
  }

  it('for a reason a model call can get past: every record re-driven, status Failed, no throw', async () => {
    const reason = 'The input file has 12 records, fewer than the minimum of 100.';
    const input = stage(reason);
    const summary = await collectShard(input, deps());
    expect(summary).toEqual({
      shard: 5,
      jobArn: input.jobArn,
      status: 'Failed',
      records: 5,
      succeeded: 0,
      failed: 0,
      skipped: 0,
      missing: 5,
      redriveKey: collectKeys.redrive(RUN, 5),
      inputTokens: 0,
      outputTokens: 0,
      manifestCheck: {
        expected: null,
        seen: 0,
        ok: false,
        ignoredLines: 0,
        detail: `the job failed (${reason}): its output was not read`,
      },
      submittedAt: '2025-01-02T03:00:00.000Z',
      endedAt: '2025-01-02T03:05:00.000Z',
      message: reason,
    });
    const redrive = s3.lines<WorkItem>(BUCKET, collectKeys.redrive(RUN, 5));
    expect(redrive.map((w) => [w.recordId, w.format, w.line])).toEqual([
      ['f-0', 'converse', 1],
      ['f-1', 'converse', 2],
      ['f-2', 'converse', 3],
      ['g-0', 'native', 4],
      ['g-1', 'native', 5],
    ]);
    expect(redrive[3]?.modelInput).toEqual(nativeRecords[0]!.modelInput);
    expect((await entries(allIds)).size).toBe(0);
    expect(lane.messages).toEqual([]);
    expect(s3.text(BUCKET, collectKeys.failures(RUN, 5))).toBeUndefined();
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 5))).toEqual(summary);

    // A repeated collect of the same job returns the marker and writes nothing.
    const puts = s3Mock.commandCalls(PutObjectCommand).length;
    expect(await collectShard(input, deps())).toEqual(summary);
    expect(s3Mock.commandCalls(PutObjectCommand)).toHaveLength(puts);
  });

  it.each([
    ['AccessDeniedException', "You don't have access to the model with the specified model ID."],
    ['ResourceNotFoundException', 'The specified model was not found in this Region.'],
  ])(
    'for a reason every call would meet (%s): every record failed with the job message, marker, BatchJobFailedError',
    async (code, message) => {
      const input = stage(message);
      const err = await collectShard(input, deps()).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BatchJobFailedError);
      expect(err).toMatchObject({
        jobArn: input.jobArn,
        shard: 5,
        message: expect.stringContaining(message),
      });

      const failures = s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 5));
      expect(failures.map((f) => f.recordId)).toEqual(allIds);
      for (const f of failures) {
        expect(f).toEqual({
          recordId: f.recordId,
          stage: 'batch',
          error: { code, message: expect.stringContaining(message), retryable: false },
        });
        expect(f.error.message).toContain(input.jobArn);
      }
      const ledgerEntries = await entries(allIds);
      expect(ledgerEntries.size).toBe(5);
      for (const entry of ledgerEntries.values()) {
        expect(entry).toMatchObject({ status: 'failed', owner: `${RUN}/shard/5`, error: { code } });
      }
      expect(lane.dlq.map((m) => m.recordId)).toEqual(allIds);
      expect(lane.queue).toEqual([]);
      const marker = s3.json<CollectShardSummary>(BUCKET, collectKeys.marker(RUN, 5));
      expect(marker).toMatchObject({
        status: 'Failed',
        records: 5,
        failed: 5,
        missing: 0,
        failuresKey: collectKeys.failures(RUN, 5),
        message,
      });
      expect(marker.redriveKey).toBeUndefined();
      expect(allResults()).toEqual([]);

      // A repeated collect of the same job throws again, without a ledger call, a write or a message.
      const tracer = new TracingLedger(ledger);
      const puts = s3Mock.commandCalls(PutObjectCommand).length;
      const again = await collectShard(input, deps({ ledger: tracer })).catch((e: unknown) => e);
      expect(again).toBeInstanceOf(BatchJobFailedError);
      expect(tracer.calls).toEqual([]);
      expect(s3Mock.commandCalls(PutObjectCommand)).toHaveLength(puts);
      expect(lane.messages).toHaveLength(5);
    },
  );

  it('tells a fatal job message from one a model call can get past', () => {
    expect(batchJobFailure('AccessDeniedException: not authorized to perform bedrock:InvokeModel')).toEqual({
      code: 'AccessDeniedException',
      fatal: true,
    });
    expect(batchJobFailure('The model has reached its end of life')).toEqual({
      code: 'ResourceNotFoundException',
      fatal: true,
    });
    expect(batchJobFailure('Internal error while processing the job')).toEqual({
      code: 'BatchJobFailed',
      fatal: false,
    });
    expect(batchJobFailure(undefined)).toEqual({ code: 'BatchJobFailed', fatal: false });
  });
});

describe('collectShard: the manifest cross-check', () => {
  it('reports (and logs) a mismatch without failing, and ignores lines it cannot use', async () => {
    const warn = jest.spyOn(logger, 'warn');
    const records = ids('m', 8).map(converseInput);
    const [first] = records as [InputRecord];
    const input = stageShard(s3, {
      runId: RUN,
      shard: 4,
      jobId: 'jobm',
      inputs: [records],
      outputs: [
        [
          ...records.map((r) => converseSuccess(r)),
          converseSuccess(first), // a repeated record
          converseSuccess(converseInput('stranger')), // not in this shard
        ],
      ],
      manifest: { total: 8, success: 10, error: 0, processed: 10 },
    });
    const summary = await collectShard(input, deps());
    expect(summary.succeeded).toBe(8);
    expect(summary.manifestCheck).toEqual({
      expected: 10,
      seen: 8,
      ok: false,
      ignoredLines: 2,
      detail: 'processedRecordCount 10 but 8 records have output; successRecordCount 10 but 8 success lines',
    });
    expect(allResults()).toHaveLength(8);
    expect(await ledger.get(SCOPE, 'stranger')).toBeUndefined();
    expect(warn).toHaveBeenCalledWith(
      'batch job output does not match its manifest',
      expect.objectContaining({
        shard: 4,
        ignoredSamples: [
          expect.stringContaining('m-0 repeats an earlier output line'),
          expect.stringContaining('stranger is not in the shard'),
        ],
      }),
    );
  });
});

/** A shard with two output files: answers, a 400 and a 429 line in the first, a record without output in the second. */
function stageMixed(runId: string, ledgerScope: string): CollectShardInput {
  const first = ids('c', 6).map(converseInput);
  const second = ids('d', 6).map(converseInput);
  return stageShard(
    s3,
    {
      runId,
      shard: 8,
      jobId: 'jobx',
      inputs: [first, second],
      outputs: [
        shuffled([
          ...first.slice(0, 4).map((r) => converseSuccess(r)),
          errorLine(first[4]!, 400, 'bad request'),
          errorLine(first[5]!, 429, 'slow down'),
        ]),
        shuffled(second.slice(0, 5).map((r) => converseSuccess(r, 20, 8))),
      ],
      manifest: { total: 12, success: 9, error: 2 },
    },
    { jobStatus: 'PartiallyCompleted', ledgerScope },
  );
}
const MIXED_IDS = [...ids('c', 6), ...ids('d', 6)];
const MIXED_PUBLISHED = [...ids('c', 4), ...ids('d', 5)];

describe('collectShard: idempotent', () => {
  it('a repeated collect of the same job returns its marker without a ledger call, a write or a message', async () => {
    const input = stageMixed(RUN, SCOPE);
    const first = await collectShard(input, deps());
    const files = runFiles();
    const sent = { results: publisher.sent.length, lane: lane.messages.length };
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 8))).toEqual(first);
    expect(sent).toEqual({ results: 9, lane: 1 });

    const tracer = new TracingLedger(ledger);
    const puts = s3Mock.commandCalls(PutObjectCommand).length;
    const second = await collectShard(input, deps({ ledger: tracer }));
    expect(second).toEqual(first);
    expect(tracer.calls).toEqual([]);
    expect(s3Mock.commandCalls(PutObjectCommand)).toHaveLength(puts);
    expect(runFiles()).toEqual(files);
    expect({ results: publisher.sent.length, lane: lane.messages.length }).toEqual(sent);
  });

  it('collects again for another job of the shard, but the shard’s earlier decisions stand', async () => {
    const input = stageMixed(RUN, SCOPE);
    const first = await collectShard(input, deps({ newAttempt: () => 'attempt-1' }));
    const files = runFiles();
    const second = await collectShard(
      { ...input, jobArn: `${input.jobArn}-resubmitted` },
      deps({ newAttempt: () => 'attempt-2' }),
    );
    expect({ ...second, jobArn: first.jobArn }).toEqual(first);
    expect(runFiles()).toEqual(files);
    // Nothing was committed again, nor sent twice.
    for (const entry of (await entries(MIXED_IDS)).values()) expect(entry.attempt).toBe('attempt-1');
    expect(publisher.sent.map((m) => m.recordId).sort()).toEqual([...MIXED_PUBLISHED].sort());
    expect(lane.messages.map((m) => m.recordId)).toEqual(['c-4']);
  });
});

describe('collectShard: a collect that crashed, then ran again', () => {
  const REF = 'run-ref';

  /** A run's files and summary with its run id replaced, to compare with another run's. */
  function asRun<T>(value: T, from: string, to: string): T {
    return JSON.parse(JSON.stringify(value).split(from).join(to)) as T;
  }

  it.each<[string, number]>([
    ['after-claim', 3],
    ['after-commit', 5],
    ['after-results', 2],
    ['before-marker', 1],
  ])('crashed at %s (pass %i): same files, each record once, no results message twice', async (step, nth) => {
    // What a collect that never crashed writes (another run, in another ledger scope).
    const reference = await collectShard(stageMixed(REF, 'ref/scope'), deps());
    const referenceFiles = runFiles(REF);

    const input = stageMixed(RUN, SCOPE);
    const crash = new Crash('collect', step, nth).install();
    const crashed = new TracingLedger(ledger);
    const err = await collectShard(
      input,
      deps({ ledger: crashed, newAttempt: () => 'attempt-1', concurrency: 4 }),
    ).catch((e: unknown) => e);
    // The fault happened where it was meant to, and the collect did not finish.
    expect(err).toBeInstanceOf(SimulatedCrash);
    expect(crash.crashed).toBe(true);
    await crashed.quiesce();
    Crash.remove();
    expect(s3.text(BUCKET, collectKeys.marker(RUN, 8))).toBeUndefined();
    const before = await entries(MIXED_IDS);
    const publishedBefore = [...before].filter(([, e]) => e.status === 'published').map(([id]) => id);
    const deliveredBefore = publisher.sent.filter((m) => m.runId === RUN).length;
    if (step === 'after-claim') expect([...before.values()].some((e) => e.status === 'claimed')).toBe(true);
    if (step !== 'after-claim') expect(publishedBefore.length).toBeGreaterThan(0);
    // Past the first output file: its records were delivered before the crash.
    if (step !== 'after-claim') expect(deliveredBefore).toBeGreaterThan(0);

    // The workflow's retry: a new attempt of the same unit.
    const summary = await collectShard(input, deps({ newAttempt: () => 'attempt-2' }));
    expect(summary).toEqual(asRun(reference, REF, RUN));
    expect(runFiles()).toEqual(asRun(referenceFiles, REF, RUN));

    // Each record in exactly one of results, failures, redrive.
    const placed = [
      ...allResults().map(({ line }) => line.recordId),
      ...s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 8)).map((f) => f.recordId),
      ...s3.lines<WorkItem>(BUCKET, collectKeys.redrive(RUN, 8)).map((w) => w.recordId),
    ];
    expect(placed.sort()).toEqual([...MIXED_IDS].sort());

    // What the crashed attempt published stays its publication; the rest the new attempt published.
    const after = await entries(MIXED_IDS);
    for (const id of MIXED_PUBLISHED) {
      expect(after.get(id)).toMatchObject({
        status: 'published',
        owner: `${RUN}/shard/8`,
        attempt: publishedBefore.includes(id) ? 'attempt-1' : 'attempt-2',
        delivered: true,
      });
    }
    expect(after.get('c-4')).toMatchObject({ status: 'failed', error: { code: 'ValidationException' } });
    expect(after.has('c-5')).toBe(false);
    expect(after.has('d-5')).toBe(false);

    // One results-queue message per published record, however the deliveries fell across the two attempts.
    const messages = publisher.sent.filter((m) => m.runId === RUN).map((m) => m.recordId);
    expect(messages.sort()).toEqual([...MIXED_PUBLISHED].sort());
    // The final failure's DLQ message is never sent twice.
    expect(laneOf(RUN).filter((m) => m.recordId === 'c-4').length).toBeLessThanOrEqual(1);
  });
});

/**
 * An in-memory ledger (dynalite is too slow for 40,000 calls in a unit test) that measures how many calls are in
 * flight and how far the output stream ran ahead of the claims.
 */
class CountingLedger implements Pick<Ledger, 'claim' | 'commit' | 'fail' | 'markDelivered'> {
  readonly claimed = new Set<string>();
  readonly committed = new Set<string>();
  inFlight = 0;
  maxInFlight = 0;
  started = 0;
  maxLead = 0;
  constructor(private readonly linesRead: () => number) {}

  async claim(_scope: string, recordId: string): Promise<ClaimOutcome> {
    this.started++;
    this.maxLead = Math.max(this.maxLead, this.linesRead() - this.started);
    return this.call(() => {
      this.claimed.add(recordId);
      return { kind: 'claimed' };
    });
  }

  async commit(_scope: string, recordId: string): Promise<TransitionOutcome> {
    return this.call(() => {
      if (!this.claimed.has(recordId)) throw new Error(`${recordId} committed without a claim`);
      this.committed.add(recordId);
      return { kind: 'done' };
    });
  }

  async fail(): Promise<TransitionOutcome> {
    throw new Error('no record fails here');
  }

  async markDelivered(): Promise<void> {
    throw new Error('no results queue here');
  }

  private async call<T>(fn: () => T): Promise<T> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((resolve) => setImmediate(resolve));
      return fn();
    } finally {
      this.inFlight--;
    }
  }
}

describe('collectShard: a large output', () => {
  it('streams 20,000 lines with bounded ledger calls in flight and no read-ahead of the whole file', async () => {
    const n = 20_000;
    const records = ids('L', n).map(converseInput);
    const input = stageShard(s3, {
      runId: RUN,
      shard: 9,
      jobId: 'jobl',
      inputs: [records],
      outputs: [shuffled(records.map((r) => converseSuccess(r)))],
      manifest: { total: n, success: n, error: 0 },
    });
    const outputKey = `${input.outputPrefix}part-0.jsonl.out`;
    const outputText = s3.text(BUCKET, outputKey) ?? '';
    let linesRead = 0;
    // The output object served in chunks of 50 lines, counting what the reader has pulled.
    s3Mock.on(GetObjectCommand, { Bucket: BUCKET, Key: outputKey }).callsFake(async () => {
      const lines = outputText.split('\n').map((l) => `${l}\n`);
      async function* chunks(): AsyncGenerator<Buffer> {
        for (let i = 0; i < lines.length; i += 50) {
          linesRead += Math.min(50, lines.length - i);
          yield Buffer.from(lines.slice(i, i + 50).join(''));
        }
      }
      return { Body: Readable.from(chunks(), { objectMode: false, highWaterMark: 16 * 1024 }) };
    });
    const counting = new CountingLedger(() => linesRead);

    const summary = await collectShard(
      input,
      deps({ ledger: counting, concurrency: 16, resultsPublisher: undefined }),
    );
    expect(summary).toMatchObject({ records: n, succeeded: n, missing: 0, manifestCheck: { ok: true } });
    const lines = allResults();
    expect(lines).toHaveLength(n);
    expect(new Set(lines.map(({ line }) => line.recordId)).size).toBe(n);
    // Ledger calls are pipelined (never one at a time) but bounded.
    expect(counting.maxInFlight).toBeGreaterThan(1);
    expect(counting.maxInFlight).toBeLessThanOrEqual(16);
    // The reader never ran far ahead of the claims: the file was streamed, not loaded.
    expect(counting.maxLead).toBeLessThan(n / 10);
    expect(counting.committed.size).toBe(n);
  }, 60_000);
});
