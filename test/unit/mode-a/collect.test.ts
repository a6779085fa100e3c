import 'aws-sdk-client-mock-jest';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import {
  BatchJobFailedError,
  collectKeys,
  collectShard,
  isRetryableBatchError,
  normaliseModelOutput,
  type CollectDeps,
  type CollectFailureLine,
  type CollectShardInput,
} from '../../../lambda/shared/collect';
import type { ResultLine, WorkItem } from '../../../lambda/shared/contracts';
import { FailureLaneSender } from '../../../lambda/shared/failure-lane';
import { Ledger } from '../../../lambda/shared/ledger';
import { logger } from '../../../lambda/shared/observability';
import { FakeLedgerTable, FakeS3, recordSqs, type SentBatch } from '../handlers/helpers';
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
} from './batch-output';

const s3Mock = mockClient(S3Client);
const ddbMock = mockClient(DynamoDBDocumentClient);
const sqsMock = mockClient(SQSClient);

const TABLE = 'ledger-table';
const QUEUE = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures';
const DLQ = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures-dlq';
const RUN = 'run-a1';

let s3: FakeS3;
let table: FakeLedgerTable;
let sent: SentBatch[];

function ledger(): Ledger {
  return new Ledger({
    client: DynamoDBDocumentClient.from(new DynamoDBClient({})),
    tableName: TABLE,
    ttlDays: 30,
    now: () => 1_000_000_000,
  });
}

function deps(overrides: Partial<CollectDeps> = {}): CollectDeps {
  return {
    s3: new S3Client({}),
    ledger: ledger(),
    failureLane: new FailureLaneSender(new SQSClient({}), QUEUE, DLQ),
    outputBucket: BUCKET,
    concurrency: 8,
    ...overrides,
  };
}

/** Every result line of the run, across its results parts, with the key it is in. */
function allResults(): { key: string; line: ResultLine }[] {
  return s3
    .keys(BUCKET, `runs/${RUN}/results/`)
    .flatMap((key) => s3.lines<ResultLine>(BUCKET, key).map((line) => ({ key, line })));
}

/** Everything the run wrote (results, failures, redrive), key -> text; the collect marker apart. */
function runFiles(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const key of s3.keys(BUCKET, `runs/${RUN}/`)) {
    if (key.includes('/batch/') || key.includes('/collect/')) continue;
    files[key] = s3.text(BUCKET, key) ?? '';
  }
  return files;
}

function laneMessages(url: string): SentBatch['messages'] {
  return sent.filter((b) => b.queueUrl === url).flatMap((b) => b.messages);
}

beforeEach(() => {
  s3Mock.reset();
  ddbMock.reset();
  sqsMock.reset();
  s3 = new FakeS3(s3Mock).install();
  table = new FakeLedgerTable(ddbMock, TABLE).install();
  sent = recordSqs(sqsMock);
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('collectShard: a Completed Converse job', () => {
  const files = [ids('a', 30).map(converseInput), ids('b', 25).map(converseInput)];
  let input: CollectShardInput;

  beforeEach(() => {
    input = stageShard(s3, {
      runId: RUN,
      shard: 3,
      jobId: 'job3',
      inputs: files,
      outputs: files.map((records, i) =>
        shuffled(
          records.map((r) => converseSuccess(r)),
          i + 1,
        ),
      ),
      manifest: { total: 55, success: 55, error: 0 },
    });
  });

  it('joins shuffled output lines on recordId and writes one results part per output file', async () => {
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
    expect(s3.text(BUCKET, collectKeys.failures(RUN, 3))).toBeUndefined();
    expect(s3.text(BUCKET, collectKeys.redrive(RUN, 3))).toBeUndefined();
    expect(sqsMock).not.toHaveReceivedAnyCommand();
  });

  it('claims each record in the ledger scope and marks it published only once its results part is durable', async () => {
    const durable: boolean[] = [];
    table.onPublish = (id) =>
      durable.push(allResults().some(({ line }) => line.recordId === id) && table.claims.includes(id));
    await collectShard(input, deps());
    expect(table.claims.sort()).toEqual([...ids('a', 30), ...ids('b', 25)].sort());
    expect(table.publishes.sort()).toEqual(table.claims);
    expect(durable).toHaveLength(55);
    expect(durable.every(Boolean)).toBe(true);
    expect(ddbMock.commandCalls(UpdateCommand)[0]?.args[0].input).toMatchObject({
      Key: { pk: expect.stringMatching(/^test\/model#[ab]-\d+$/) },
      ExpressionAttributeValues: expect.objectContaining({ ':run': RUN, ':scope': 'test/model' }),
    });
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
    expect(normaliseModelOutput({ completion: 'x' }).usage).toEqual({
      inputTokens: 0,
      outputTokens: 0,
      totalTokens: 0,
    });
  });
});

describe('collectShard: error lines', () => {
  const records = ids('e', 8).map(converseInput);
  const [ok0, ok1, ok2, throttled, invalid, server, timeout, bare] = records as [
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
    InputRecord,
  ];
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
          errorLine(server, 500, 'Internal server error'),
          errorLine(timeout, 'ModelTimeoutException', 'Model timed out'),
          converseSuccess(ok1),
          // A retryable error line without its request: the failure lane gets it from the input file.
          errorLine(bare, 503, 'Service unavailable', false),
        ],
      ],
      manifest: { total: 8, success: 3, error: 5 },
    });
  });

  it('writes each error line to runs/<runId>/failures/shard-<n>.jsonl with its code and retryability', async () => {
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({
      records: 8,
      succeeded: 3,
      failed: 5,
      missing: 0,
      failuresKey: `runs/${RUN}/failures/shard-1.jsonl`,
      manifestCheck: { expected: 8, seen: 8, ok: true },
    });
    expect(s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 1))).toEqual([
      {
        recordId: 'e-4',
        stage: 'batch',
        error: {
          code: 'ValidationException',
          message: 'messages.0.content: must not be empty',
          retryable: false,
        },
      },
      {
        recordId: 'e-3',
        stage: 'batch',
        error: { code: 'ThrottlingException', message: 'Too many tokens, please wait', retryable: true },
      },
      {
        recordId: 'e-5',
        stage: 'batch',
        error: { code: 'InternalServerException', message: 'Internal server error', retryable: true },
      },
      {
        recordId: 'e-6',
        stage: 'batch',
        error: { code: 'ModelTimeoutException', message: 'Model timed out', retryable: true },
      },
      {
        recordId: 'e-7',
        stage: 'batch',
        error: { code: 'ServiceUnavailableException', message: 'Service unavailable', retryable: true },
      },
    ]);
    expect(allResults().map(({ line }) => line.recordId)).toEqual(['e-2', 'e-0', 'e-1']);
    expect(table.claims.sort()).toEqual(['e-0', 'e-1', 'e-2']);
  });

  it('sends retryable failures to the queue with their request and the rest to the DLQ without it', async () => {
    await collectShard(input, deps());
    const queued = laneMessages(QUEUE);
    expect(queued.map((m) => m.recordId).sort()).toEqual(['e-3', 'e-5', 'e-6', 'e-7']);
    for (const m of queued) {
      const record = records.find((r) => r.recordId === m.recordId);
      expect(m).toMatchObject({
        runId: RUN,
        ledgerScope: 'test/model',
        stage: 'batch',
        format: 'converse',
        modelInput: record?.modelInput,
        error: { retryable: true },
      });
    }
    expect(laneMessages(DLQ)).toEqual([
      {
        recordId: 'e-4',
        stage: 'batch',
        runId: RUN,
        ledgerScope: 'test/model',
        error: {
          code: 'ValidationException',
          message: 'messages.0.content: must not be empty',
          retryable: false,
        },
      },
    ]);
  });

  it('decides retryability from the code: throttling, timeouts and 5xx yes, validation no', () => {
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

  it('PartiallyCompleted: keeps the answers and writes the missing records as WorkItems for mode B', async () => {
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
    expect(table.claims).not.toContain('p-1');
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
    expect(table.publishes.sort()).toEqual(['p-0', 'p-2', 'p-3', 'p-5', 'p-6', 'p-8']);
    expect(summary.manifestCheck).toEqual(
      withManifest
        ? { expected: 6, seen: 6, ok: true, ignoredLines: 0 }
        : { expected: null, seen: 6, ok: false, ignoredLines: 0, detail: 'manifest.json.out was not found' },
    );
  });
});

describe('collectShard: a Failed job', () => {
  const reason = 'The input file has 12 records, fewer than the minimum of 100.';
  const converseRecords = ids('f', 3).map(converseInput);
  const nativeRecords = ids('g', 2).map(nativeInput);
  let input: CollectShardInput;

  beforeEach(() => {
    input = stageShard(
      s3,
      {
        runId: RUN,
        shard: 5,
        jobId: 'jobf',
        // f-1 repeated in the second file: recorded once.
        inputs: [converseRecords, [...nativeRecords, converseRecords[1]!]],
        outputs: [],
      },
      {
        jobStatus: 'Failed',
        failureMessage: reason,
        submittedAt: '2025-01-02T03:00:00.000Z',
        endedAt: '2025-01-02T03:05:00.000Z',
      },
    );
  });

  it('records every input record as a retryable failure, writes the marker, then throws BatchJobFailedError', async () => {
    const err = await collectShard(input, deps()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BatchJobFailedError);
    expect(err).toMatchObject({
      name: 'BatchJobFailedError',
      jobArn: input.jobArn,
      shard: 5,
      message: expect.stringContaining('fewer than the minimum of 100'),
    });

    const failures = s3.lines<CollectFailureLine>(BUCKET, collectKeys.failures(RUN, 5));
    expect(failures.map((f) => f.recordId)).toEqual(['f-0', 'f-1', 'f-2', 'g-0', 'g-1']);
    for (const f of failures) {
      expect(f).toEqual({
        recordId: f.recordId,
        stage: 'batch',
        error: {
          code: 'BatchJobFailed',
          message: expect.stringContaining(`${input.jobArn} failed (${reason})`),
          retryable: true,
        },
      });
    }
    expect(failures[0]?.error.message).toContain('retried through Converse');

    // Each record goes to the failure queue with its request, so it can be retried through Converse.
    const queued = laneMessages(QUEUE);
    expect(queued.map((m) => m.recordId)).toEqual(['f-0', 'f-1', 'f-2', 'g-0', 'g-1']);
    expect(queued[0]).toEqual({
      ...failures[0],
      runId: RUN,
      ledgerScope: 'test/model',
      format: 'converse',
      modelInput: converseRecords[0]!.modelInput,
    });
    expect(queued[3]).toMatchObject({ format: 'native', modelInput: nativeRecords[0]!.modelInput });
    expect(laneMessages(DLQ)).toEqual([]);

    expect(s3.json(BUCKET, collectKeys.marker(RUN, 5))).toEqual({
      shard: 5,
      jobArn: input.jobArn,
      status: 'Failed',
      records: 5,
      succeeded: 0,
      failed: 5,
      skipped: 0,
      missing: 0,
      failuresKey: collectKeys.failures(RUN, 5),
      inputTokens: 0,
      outputTokens: 0,
      manifestCheck: {
        expected: null,
        seen: 0,
        ok: false,
        ignoredLines: 0,
        detail: 'the job failed: its output was not read',
      },
      submittedAt: '2025-01-02T03:00:00.000Z',
      endedAt: '2025-01-02T03:05:00.000Z',
      message: reason,
    });
    // Nothing was claimed or published, nothing re-driven.
    expect(ddbMock).not.toHaveReceivedAnyCommand();
    expect(allResults()).toEqual([]);
    expect(s3.text(BUCKET, collectKeys.redrive(RUN, 5))).toBeUndefined();
  });

  it('a repeated collect of the same Failed job throws again without writing or sending anything', async () => {
    await expect(collectShard(input, deps())).rejects.toBeInstanceOf(BatchJobFailedError);
    const files = runFiles();
    const marker = s3.text(BUCKET, collectKeys.marker(RUN, 5));
    const messages = sent.flatMap((b) => b.messages).length;
    const puts = s3Mock.commandCalls(PutObjectCommand).length;

    const again = await collectShard(input, deps()).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(BatchJobFailedError);
    expect(again).toMatchObject({ jobArn: input.jobArn, shard: 5, message: expect.stringContaining(reason) });
    expect(sent.flatMap((b) => b.messages)).toHaveLength(messages);
    expect(messages).toBe(5);
    expect(s3Mock.commandCalls(PutObjectCommand)).toHaveLength(puts);
    expect(runFiles()).toEqual(files);
    expect(s3.text(BUCKET, collectKeys.marker(RUN, 5))).toBe(marker);
  });

  it('a resubmitted job of the shard is collected even though the failed one left a marker', async () => {
    await expect(collectShard(input, deps())).rejects.toBeInstanceOf(BatchJobFailedError);
    const records = [...converseRecords, ...nativeRecords];
    const retry = stageShard(s3, {
      runId: RUN,
      shard: 5,
      jobId: 'jobf2',
      inputs: [records],
      outputs: [records.map((r, i) => (i < 3 ? converseSuccess(r) : nativeSuccess(r)))],
      manifest: { total: 5, success: 5, error: 0 },
    });
    const summary = await collectShard(retry, deps());
    expect(summary).toMatchObject({ status: 'Completed', succeeded: 5, failed: 0 });
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 5))).toEqual(summary);
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

describe('collectShard: claims held by another run', () => {
  it('counts them as skipped, publishes nothing of them and leaves no results part without lines', async () => {
    const files = [ids('h', 6).map(converseInput), ids('k', 3).map(converseInput)];
    for (const id of ['h-1', 'h-4', ...ids('k', 3)]) table.heldByOthers.add(id);
    const input = stageShard(s3, {
      runId: RUN,
      shard: 6,
      jobId: 'jobh',
      inputs: files,
      outputs: files.map((records) => shuffled(records.map((r) => converseSuccess(r, 10, 5)))),
      manifest: { total: 9, success: 9, error: 0 },
    });
    // A part an earlier attempt wrote before the other run took these records over.
    s3.putLines(BUCKET, collectKeys.results(RUN, 6, 1), [{ recordId: 'k-0' }]);
    const summary = await collectShard(input, deps());
    expect(summary).toMatchObject({
      records: 9,
      succeeded: 4,
      skipped: 5,
      inputTokens: 40,
      outputTokens: 20,
    });
    expect(
      allResults()
        .map(({ line }) => line.recordId)
        .sort(),
    ).toEqual(['h-0', 'h-2', 'h-3', 'h-5']);
    expect(s3.text(BUCKET, collectKeys.results(RUN, 6, 1))).toBeUndefined();
    expect(table.publishes.sort()).toEqual(['h-0', 'h-2', 'h-3', 'h-5']);
  });
});

describe('collectShard: idempotent', () => {
  const records = ids('i', 20).map(converseInput);
  let input: CollectShardInput;

  beforeEach(() => {
    input = stageShard(
      s3,
      {
        runId: RUN,
        shard: 7,
        jobId: 'jobi',
        inputs: [records],
        outputs: [
          shuffled([
            ...records.slice(0, 14).map((r) => converseSuccess(r)),
            errorLine(records[14]!, 429, 'slow down'),
            errorLine(records[15]!, 400, 'bad'),
          ]),
        ],
        manifest: { total: 20, success: 14, error: 2 },
      },
      { jobStatus: 'PartiallyCompleted' },
    );
  });

  it('a repeated collect of the same job returns the same summary and writes or sends nothing more', async () => {
    const first = await collectShard(input, deps());
    const files = runFiles();
    const calls = { claims: table.claims.length, publishes: table.publishes.length, sqs: sent.length };
    expect(s3.json(BUCKET, collectKeys.marker(RUN, 7))).toEqual(first);

    const second = await collectShard(input, deps());
    expect(second).toEqual(first);
    expect(runFiles()).toEqual(files);
    expect({ claims: table.claims.length, publishes: table.publishes.length, sqs: sent.length }).toEqual(
      calls,
    );
  });

  it('a collect interrupted before its marker re-claims its own records and rewrites the same files', async () => {
    const first = await collectShard(input, deps());
    const files = runFiles();
    expect(Object.keys(files).sort()).toEqual([
      collectKeys.failures(RUN, 7),
      collectKeys.redrive(RUN, 7),
      collectKeys.results(RUN, 7, 0),
    ]);
    s3.objects.delete(`${BUCKET}/${collectKeys.marker(RUN, 7)}`);

    const second = await collectShard(input, deps());
    expect(second).toEqual(first);
    expect(runFiles()).toEqual(files);
    // Each answer is in the results exactly once, however often it was collected.
    const published = allResults().map(({ line }) => line.recordId);
    expect(new Set(published).size).toBe(published.length);
    expect(published).toHaveLength(14);
  });

  it('collects again when the marker belongs to another job of the shard', async () => {
    await collectShard(input, deps());
    const claims = table.claims.length;
    await collectShard({ ...input, jobArn: `${input.jobArn}-resubmitted` }, deps());
    expect(table.claims.length).toBe(2 * claims);
  });
});

/**
 * An in-memory ledger (the mocked DynamoDB costs ~0.2 ms a call, too slow for 40,000 calls) that measures how many
 * claims are in flight and how far the output stream ran ahead of them.
 */
class CountingLedger implements Pick<Ledger, 'claim' | 'markPublished'> {
  readonly claimed = new Set<string>();
  readonly published = new Set<string>();
  inFlight = 0;
  maxInFlight = 0;
  started = 0;
  maxLead = 0;
  constructor(private readonly linesRead: () => number) {}

  async claim(_scope: string, recordId: string): Promise<'claimed' | 'held'> {
    this.started++;
    this.maxLead = Math.max(this.maxLead, this.linesRead() - this.started);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((resolve) => setImmediate(resolve));
      this.claimed.add(recordId);
      return 'claimed';
    } finally {
      this.inFlight--;
    }
  }

  async markPublished(_scope: string, recordId: string): Promise<void> {
    if (!this.claimed.has(recordId)) throw new Error(`${recordId} published without a claim`);
    this.published.add(recordId);
  }
}

describe('collectShard: a large output', () => {
  it('streams 20,000 lines with bounded claims in flight and no read-ahead of the whole file', async () => {
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

    const summary = await collectShard(input, deps({ ledger: counting, concurrency: 16 }));
    expect(summary).toMatchObject({ records: n, succeeded: n, missing: 0, manifestCheck: { ok: true } });
    const lines = allResults();
    expect(lines).toHaveLength(n);
    expect(new Set(lines.map(({ line }) => line.recordId)).size).toBe(n);
    // Claims are pipelined (never one at a time) but bounded.
    expect(counting.maxInFlight).toBeGreaterThan(1);
    expect(counting.maxInFlight).toBeLessThanOrEqual(16);
    // The reader never ran far ahead of the claims: the file was streamed, not loaded.
    expect(counting.maxLead).toBeLessThan(n / 10);
    expect(counting.published.size).toBe(n);
  }, 60_000);
});
