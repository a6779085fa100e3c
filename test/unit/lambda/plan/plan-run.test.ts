import 'aws-sdk-client-mock-jest';
import { ledgerKey } from '../../../../lambda/shared/ledger';
import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageBatchCommand, SQSClient, type SendMessageBatchCommandInput } from '@aws-sdk/client-sqs';
import { BatchGetCommand, DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import {
  planInProcess,
  type PlanDeps,
  type PlanEvent,
  type PlanSettings,
} from '../../../../lambda/plan/plan-run';
import type {
  FailureLaneMessage,
  FailureLine,
  PlanOutput,
  ShardItem,
  WorkItem,
} from '../../../../lambda/shared/contracts';
import type { BatchQuotas } from '../../../../lambda/batch/quotas';
import { contentHashOf, MAX_ITEM_BYTES, MAX_LINE_BYTES } from '../../../../lambda/shared/records';
import { awsError, FakeLedgerTable, FakeS3, fixture, recordSqs, type SentBatch } from '../helpers';
import { useClientMocks } from '../../../support/aws-mocks';
import { mockedPlanDeps } from './plan-fixtures';
import {
  FAILURE_DLQ_URL as DLQ,
  FAILURE_QUEUE_URL as QUEUE,
  INGEST_BUCKET as INGEST,
  LEDGER_TABLE as TABLE,
  OUTPUT_BUCKET as OUT,
} from '../../../support/names';

const [s3Mock, ddbMock, sqsMock] = useClientMocks(S3Client, DynamoDBDocumentClient, SQSClient);

const SCOPE = 'test/model';

const settings: PlanSettings = {
  outputBucket: OUT,
  // Any key of the ingest bucket: the prefix has tests of its own.
  input: { ingestBucket: INGEST, ingestPrefix: '', allowedBuckets: [] },
  modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
  ledgerScope: SCOPE,
  prompt: { template: 'Answer briefly: {{text}}', maxTokens: 256 },
  batchSize: 10,
  mapConcurrency: 4,
  toleratedFailurePercentage: 10,
  batch: { toleratedFailurePercentage: 0, jobTimeoutHours: 24, reconcileIntervalMinutes: 5 },
};

/** The local environment's small quotas: a few thousand records make several shards. */
const QUOTAS: BatchQuotas = {
  minRecordsPerJob: 100,
  maxRecordsPerJob: 1000,
  maxRecordsPerFile: 400,
  maxBytesPerFile: 10_000_000,
  maxBytesPerJob: 50_000_000,
  maxConcurrentJobs: 2,
};
let quotas: BatchQuotas = QUOTAS;

let s3: FakeS3;
let table: FakeLedgerTable;
let sent: SentBatch[];

function deps(): PlanDeps {
  return mockedPlanDeps(settings, () =>
    Promise.resolve({ quotas, sources: { minRecordsPerJob: 'configured' } }),
  );
}

function event(input: unknown, runId = 'run-1'): PlanEvent {
  return { runId, startedAt: '2025-01-02T03:04:05.000Z', input };
}

const FIXTURE_KEY = 'corpora/bad-input-corpus.jsonl';
const FIXTURE_RECORDS = [
  'ok-1',
  'ok-2',
  'rejected-empty',
  'rejected-assistant-first',
  'rejected-maxtokens',
  'plain-1',
  `h-${contentHashOf({ messages: [{ role: 'user', content: [{ text: 'No id here' }] }] })}`,
  ...Array.from({ length: 10 }, (_, i) => `ok-${i + 3}`),
];

beforeEach(() => {
  s3 = new FakeS3(s3Mock).install();
  table = new FakeLedgerTable(ddbMock, TABLE).install();
  sent = recordSqs(sqsMock);
  quotas = QUOTAS;
  s3.put(INGEST, FIXTURE_KEY, fixture('bad-input-corpus.jsonl'));
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('Plan over the bad-input fixture', () => {
  let out: PlanOutput;
  beforeEach(async () => {
    out = await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps());
  });

  it('counts every line: lines = records + invalid + duplicates, toProcess = records - skipped', () => {
    expect(out.counts).toEqual({
      lines: 24,
      records: 17,
      invalid: 6,
      duplicates: 1,
      skipped: 0,
      toProcess: 17,
    });
    const c = out.counts;
    expect(c.lines).toBe(c.records + c.invalid + c.duplicates);
    expect(c.toProcess).toBe(c.records - c.skipped);
  });

  it('returns the plan the workflow runs on and writes it as plan.json', () => {
    expect(out).toEqual({
      runId: 'run-1',
      startedAt: '2025-01-02T03:04:05.000Z',
      mode: 'converse',
      requestedMode: 'auto',
      corpus: {
        bucket: INGEST,
        key: FIXTURE_KEY,
        etag: 'etag-1',
        size: Buffer.byteLength(fixture('bad-input-corpus.jsonl')),
        sources: 1,
      },
      output: { bucket: OUT, prefix: 'runs/run-1/' },
      itemsKey: 'runs/run-1/items.jsonl',
      ledgerScope: SCOPE,
      modelId: settings.modelId,
      counts: out.counts,
      fanOut: {
        itemsKey: 'runs/run-1/items.jsonl',
        batchSize: 10,
        maxConcurrency: 4,
        toleratedFailurePercentage: 10,
      },
    });
    expect(s3.json(OUT, 'runs/run-1/plan.json')).toEqual(out);
  });

  it('writes the items file in corpus order, one normalised work item per record', () => {
    const items = s3.lines<WorkItem>(OUT, out.itemsKey);
    expect(items.map((i) => i.recordId)).toEqual(FIXTURE_RECORDS);
    expect(items.map((i) => i.line)).toEqual([
      1, 3, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    ]);
    expect(items[0]).toEqual({
      recordId: 'ok-1',
      format: 'converse',
      // The source and line, so a record's later failure (Converse, the lane) can name both.
      source: FIXTURE_KEY,
      line: 1,
      modelInput: { messages: [{ role: 'user', content: [{ text: 'Hello one' }] }] },
    });
    expect(items[5]?.modelInput).toEqual({
      messages: [{ role: 'user', content: [{ text: 'Answer briefly: Translate to French: good morning' }] }],
      inferenceConfig: { maxTokens: 256 },
    });
  });

  it('writes one failure line per bad line, with its line number and an actionable reason', () => {
    const failures = s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl');
    expect(failures.map((f) => [f.line, f.stage, f.error.code, f.error.retryable])).toEqual([
      [4, 'plan', 'InvalidJson', false],
      [5, 'plan', 'NotAnObject', false],
      [6, 'plan', 'NotAnObject', false],
      [7, 'plan', 'MissingModelInput', false],
      [8, 'plan', 'InvalidModelInput', false],
      [10, 'plan', 'ConflictingRecordId', false],
    ]);
    for (const f of failures) expect(f.error.message).toMatch(new RegExp(`^line ${f.line}\\b`));
    expect(failures[5]?.error.message).toBe(
      'line 10 reuses recordId "ok-2" of line 3 with different content; give it its own recordId',
    );
    // The conflicting line must not carry ok-2 as its recordId: ok-2 is line 3's record.
    expect(failures.every((f) => f.recordId === undefined)).toBe(true);
  });

  it('sends each bad line to the dead-letter queue, never to the retry queue', () => {
    expect(sent.every((b) => b.queueUrl === DLQ)).toBe(true);
    const messages = sent.flatMap((b) => b.messages);
    expect(messages.map((m) => m.line)).toEqual([4, 5, 6, 7, 8, 10]);
    for (const m of messages) {
      expect(m).toMatchObject({
        runId: 'run-1',
        ledgerScope: SCOPE,
        stage: 'plan',
        error: { retryable: false },
      });
      expect(m.modelInput).toBeUndefined();
    }
    expect(sqsMock).not.toHaveReceivedCommandWith(SendMessageBatchCommand, { QueueUrl: QUEUE });
  });

  it('asks the ledger about every record, keyed by scope, with strongly consistent reads', () => {
    expect(ddbMock).toHaveReceivedCommandTimes(BatchGetCommand, 1);
    const request = ddbMock.commandCalls(BatchGetCommand)[0]?.args[0].input.RequestItems?.[TABLE];
    expect(request?.Keys).toEqual(FIXTURE_RECORDS.map((id) => ({ pk: ledgerKey(SCOPE, id) })));
    expect(request?.ConsistentRead).toBe(true);
  });
});

describe('Plan and the ledger', () => {
  it('skips records the ledger holds as published, keeping the order of the rest', async () => {
    table.published.add('ok-1').add('ok-5').add('plain-1');
    const out = await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps());
    expect(out.counts).toMatchObject({ records: 17, skipped: 3, toProcess: 14 });
    const ids = s3.lines<WorkItem>(OUT, out.itemsKey).map((i) => i.recordId);
    expect(ids).toEqual(FIXTURE_RECORDS.filter((id) => !['ok-1', 'ok-5', 'plain-1'].includes(id)));
  });

  it('refuses a recordId published earlier in the scope with different content, and skips the same content', async () => {
    const items = s3.lines<WorkItem>(
      OUT,
      (await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps())).itemsKey,
    );
    const ok3 = items.find((i) => i.recordId === 'ok-3');
    table.published.add('ok-3');
    table.publishedHashes.set('ok-3', contentHashOf(ok3?.modelInput));
    table.published.add('ok-4');
    table.publishedHashes.set('ok-4', 'a-different-record');
    const out = await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }, 'run-2'), deps());
    expect(out.counts).toEqual({
      lines: 24,
      records: 16,
      invalid: 7,
      duplicates: 1,
      skipped: 1,
      toProcess: 15,
    });
    const reused = s3
      .lines<FailureLine>(OUT, 'runs/run-2/failures/plan.jsonl')
      .find((f) => f.recordId === 'ok-4');
    expect(reused?.error).toMatchObject({ code: 'RecordIdReused', retryable: false });
    expect(reused?.error.message).toMatch(
      /already published in ledger scope .* \(run run-0\) with different content/,
    );
  });

  it('retries the keys BatchGet leaves unprocessed', async () => {
    jest.spyOn(Math, 'random').mockReturnValue(0);
    ddbMock.reset();
    ddbMock
      .on(BatchGetCommand)
      .resolvesOnce({
        Responses: { [TABLE]: [{ recordId: 'ok-1', status: 'published' }] },
        UnprocessedKeys: { [TABLE]: { Keys: [{ pk: `${SCOPE}#ok-3` }, { pk: `${SCOPE}#ok-4` }] } },
      })
      .resolvesOnce({
        Responses: {
          [TABLE]: [
            { recordId: 'ok-4', status: 'published' },
            { recordId: 'ok-3', status: 'claimed' },
          ],
        },
      });
    const out = await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps());
    expect(ddbMock).toHaveReceivedCommandTimes(BatchGetCommand, 2);
    expect(ddbMock).toHaveReceivedNthCommandWith(2, BatchGetCommand, {
      RequestItems: {
        [TABLE]: expect.objectContaining({ Keys: [{ pk: `${SCOPE}#ok-3` }, { pk: `${SCOPE}#ok-4` }] }),
      },
    });
    expect(out.counts).toMatchObject({ skipped: 2, toProcess: 15 });
    const ids = s3.lines<WorkItem>(OUT, out.itemsKey).map((i) => i.recordId);
    expect(ids).toContain('ok-3'); // only claimed, not published: still to process
    expect(ids).not.toContain('ok-4');
  });

  it('fails with TransientDependencyError when the ledger lookup is throttled', async () => {
    ddbMock.on(BatchGetCommand).rejects(awsError('ProvisionedThroughputExceededException', 400));
    await expect(planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps())).rejects.toMatchObject({
      name: 'TransientDependencyError',
      message: expect.stringContaining('ledger BatchGetItem failed transiently'),
    });
    expect(s3.text(OUT, 'runs/run-1/plan.json')).toBeUndefined();
  });

  it('fails with TransientDependencyError when writing the items file is throttled', async () => {
    s3Mock.on(PutObjectCommand).rejects(awsError('SlowDown', 503));
    await expect(planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps())).rejects.toMatchObject({
      name: 'TransientDependencyError',
    });
  });

  it('writes an empty items file when the ledger holds every record', async () => {
    FIXTURE_RECORDS.forEach((id) => table.published.add(id));
    const out = await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps());
    expect(out.counts).toMatchObject({ records: 17, skipped: 17, toProcess: 0 });
    expect(s3.text(OUT, out.itemsKey)).toBe('');
  });

  it('looks up a large corpus in chunks of 100 and still writes items in corpus order', async () => {
    const lines = Array.from({ length: 1250 }, (_, i) =>
      JSON.stringify({ id: `r${i}`, text: `question ${i}` }),
    );
    s3.put(INGEST, 'big.jsonl', `${lines.join('\n')}\n`);
    for (let i = 0; i < 1250; i += 7) table.published.add(`r${i}`);
    const out = await planInProcess(event({ bucket: INGEST, key: 'big.jsonl' }), deps());
    expect(ddbMock).toHaveReceivedCommandTimes(BatchGetCommand, 13);
    for (const call of ddbMock.commandCalls(BatchGetCommand)) {
      expect(call.args[0].input.RequestItems?.[TABLE]?.Keys?.length).toBeLessThanOrEqual(100);
    }
    const expected = Array.from({ length: 1250 }, (_, i) => i)
      .filter((i) => i % 7 !== 0)
      .map((i) => `r${i}`);
    expect(s3.lines<WorkItem>(OUT, out.itemsKey).map((i) => i.recordId)).toEqual(expected);
    expect(out.counts).toEqual({
      lines: 1250,
      records: 1250,
      invalid: 0,
      duplicates: 0,
      skipped: 179,
      toProcess: 1071,
    });
  });
});

describe('Plan input and corpus checks', () => {
  it('rejects an invalid input with a message naming each field', async () => {
    const err = planInProcess(event({ bucket: 'b', mode: 'fast', extra: 1 }), deps());
    await expect(err).rejects.toMatchObject({ name: 'InvalidRunInputError' });
    await expect(err).rejects.toThrow(/bucket: bucket must be an S3 bucket name/);
    await expect(err).rejects.toThrow(/key: /);
    await expect(err).rejects.toThrow(/mode: mode must be one of auto, batch, converse/);
    await expect(err).rejects.toThrow(/extra/);
    await expect(err).rejects.toThrow(
      /Expected \{"bucket": "<ingest bucket>", "key": "<corpus.jsonl or prefix\/>"/,
    );
    expect(s3Mock).not.toHaveReceivedAnyCommand();
  });

  it('rejects a non-object input', async () => {
    await expect(planInProcess(event('s3://bucket/key'), deps())).rejects.toThrow(
      /Invalid run input \(input: /,
    );
  });

  it('fails with CorpusNotFoundError naming the object when the corpus is missing', async () => {
    const err = planInProcess(event({ bucket: INGEST, key: 'nope.jsonl' }), deps());
    await expect(err).rejects.toMatchObject({ name: 'CorpusNotFoundError' });
    await expect(err).rejects.toThrow('Cannot read the corpus s3://ingest-bucket/nope.jsonl (NotFound)');
  });

  it('turns a throttled HeadObject into TransientDependencyError (the workflow retries it)', async () => {
    s3Mock.on(HeadObjectCommand).rejects(awsError('SlowDown', 503));
    await expect(planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps())).rejects.toMatchObject({
      name: 'TransientDependencyError',
    });
  });

  it('takes the mode from the corpus object metadata when the input has none', async () => {
    s3.put(INGEST, 'meta.jsonl', fixture('bad-input-corpus.jsonl'), { mode: 'Converse' });
    const out = await planInProcess(event({ bucket: INGEST, key: 'meta.jsonl' }), deps());
    expect(out).toMatchObject({ requestedMode: 'converse', mode: 'converse' });
  });

  it('lets the input mode win over the metadata', async () => {
    s3.put(INGEST, 'meta.jsonl', fixture('bad-input-corpus.jsonl'), { mode: 'batch' });
    const out = await planInProcess(event({ bucket: INGEST, key: 'meta.jsonl', mode: 'auto' }), deps());
    expect(out.requestedMode).toBe('auto');
  });

  it('rejects a metadata mode it does not know', async () => {
    s3.put(INGEST, 'meta.jsonl', '', { mode: 'turbo' });
    await expect(planInProcess(event({ bucket: INGEST, key: 'meta.jsonl' }), deps())).rejects.toMatchObject({
      name: 'InvalidRunInputError',
      message: expect.stringContaining('metadata mode=turbo is not one of auto, batch, converse'),
    });
  });

  it.each([
    ['the input', { bucket: INGEST, key: FIXTURE_KEY, mode: 'batch' }, undefined],
    ['the metadata', { bucket: INGEST, key: 'meta.jsonl' }, { mode: 'batch' }],
  ])(
    'runs batch asked for in %s through Converse when the records are too few for one job',
    async (_where, input, metadata) => {
      s3.put(INGEST, 'meta.jsonl', fixture('bad-input-corpus.jsonl'), metadata);
      const out = await planInProcess(event(input), deps());
      expect(out).toMatchObject({ requestedMode: 'batch', mode: 'converse' });
      expect(out.batch).toBeUndefined();
      expect(out.fanOut.itemsKey).toBe(out.itemsKey);
    },
  );

  it("refuses the output bucket, even a key that exists there (another run's items file)", async () => {
    s3.put(OUT, 'runs/run-0/items.jsonl', fixture('bad-input-corpus.jsonl'));
    const err = planInProcess(event({ bucket: OUT, key: 'runs/run-0/items.jsonl' }), deps());
    await expect(err).rejects.toMatchObject({ name: 'InvalidRunInputError' });
    await expect(err).rejects.toThrow(
      "The run input names s3://output-bucket/runs/run-0/items.jsonl, in the pipeline's output bucket, which holds " +
        "runs' own files and is never read as a corpus; a corpus must be under s3://ingest-bucket/",
    );
    expect(s3Mock).not.toHaveReceivedAnyCommand();
  });

  it('refuses a bucket it was not given, naming the buckets it may read', async () => {
    const d = deps();
    d.settings = {
      ...settings,
      input: {
        ingestBucket: INGEST,
        ingestPrefix: 'corpora/',
        allowedBuckets: ['partner-corpora', 'archive'],
      },
    };
    s3.put('elsewhere', 'corpora/x.jsonl', fixture('bad-input-corpus.jsonl'));
    await expect(planInProcess(event({ bucket: 'elsewhere', key: 'corpora/x.jsonl' }), d)).rejects.toThrow(
      'The run input names the bucket elsewhere, which runs may not read; a corpus must be under ' +
        "s3://ingest-bucket/corpora/, s3://partner-corpora/, s3://archive/ (the environment's ingest.allowedBuckets " +
        'setting allows other buckets)',
    );
    await expect(planInProcess(event({ bucket: INGEST, key: 'elsewhere/x.jsonl' }), d)).rejects.toMatchObject(
      {
        name: 'InvalidRunInputError',
        message: expect.stringContaining(
          'names s3://ingest-bucket/elsewhere/x.jsonl, outside the ingest prefix corpora/',
        ),
      },
    );
    expect(s3Mock).not.toHaveReceivedAnyCommand();
  });

  it('reads any key of an allowed bucket and the ingest prefix of the ingest bucket, but never the output bucket', async () => {
    const d = deps();
    d.settings = {
      ...settings,
      input: { ingestBucket: INGEST, ingestPrefix: 'corpora/', allowedBuckets: ['partner-corpora', OUT] },
    };
    s3.put('partner-corpora', 'any/where.jsonl', fixture('bad-input-corpus.jsonl'));
    const out = await planInProcess(event({ bucket: 'partner-corpora', key: 'any/where.jsonl' }), d);
    expect(out.corpus).toMatchObject({ bucket: 'partner-corpora', key: 'any/where.jsonl' });
    expect(out.counts.records).toBe(17);
    const inPrefix = await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }, 'run-2'), d);
    expect(inPrefix.counts.records).toBe(17);
    // Allowing the output bucket by mistake changes nothing.
    s3.put(OUT, 'runs/run-1/items.jsonl', fixture('bad-input-corpus.jsonl'));
    await expect(
      planInProcess(event({ bucket: OUT, key: 'runs/run-1/items.jsonl' }, 'run-3'), d),
    ).rejects.toMatchObject({
      name: 'InvalidRunInputError',
    });
  });

  it('takes the ledger scope from the corpus object metadata, unless the input names one', async () => {
    s3.put(INGEST, 'meta.jsonl', fixture('bad-input-corpus.jsonl'), { 'ledger-scope': 'tenant-b' });
    const fromMetadata = await planInProcess(event({ bucket: INGEST, key: 'meta.jsonl' }), deps());
    expect(fromMetadata.ledgerScope).toBe('tenant-b');
    const keys = ddbMock.commandCalls(BatchGetCommand)[0]?.args[0].input.RequestItems?.[TABLE]?.Keys;
    expect(keys?.[0]).toEqual({ pk: 'tenant-b#ok-1' });
    const fromInput = await planInProcess(
      event({ bucket: INGEST, key: 'meta.jsonl', ledgerScope: 'tenant-a' }, 'run-2'),
      deps(),
    );
    expect(fromInput.ledgerScope).toBe('tenant-a');
  });

  it.each([
    [
      'the metadata',
      { 'ledger-scope': ' padded' },
      undefined,
      /metadata ledger-scope " padded" starts or ends with a space/,
    ],
    ['the metadata', { 'ledger-scope': '' }, undefined, /metadata ledger-scope "" is blank/],
    ['the metadata', { 'ledger-scope': 'x'.repeat(201) }, undefined, /is longer than 200 characters/],
    ['the input', undefined, 'tab\there', /input's ledgerScope "tab\\there" holds a control character/],
    ['the input', undefined, 'odd\uffff', /holds a control character, U\+FFFE, U\+FFFF or a lone surrogate/],
    ['the input', undefined, 'lone\ud800', /holds a control character, U\+FFFE, U\+FFFF or a lone surrogate/],
  ])(
    'refuses a ledger scope from %s that is not printable text',
    async (_where, metadata, ledgerScope, message) => {
      s3.put(INGEST, 'meta.jsonl', fixture('bad-input-corpus.jsonl'), metadata);
      const err = planInProcess(
        event({ bucket: INGEST, key: 'meta.jsonl', ...(ledgerScope ? { ledgerScope } : {}) }),
        deps(),
      );
      await expect(err).rejects.toMatchObject({ name: 'InvalidRunInputError' });
      await expect(err).rejects.toThrow(message);
    },
  );

  it('uses the ledger scope of the input over the deployment default', async () => {
    const out = await planInProcess(
      event({ bucket: INGEST, key: FIXTURE_KEY, ledgerScope: 'tenant-a' }),
      deps(),
    );
    expect(out.ledgerScope).toBe('tenant-a');
    const keys = ddbMock.commandCalls(BatchGetCommand)[0]?.args[0].input.RequestItems?.[TABLE]?.Keys;
    expect(keys?.[0]).toEqual({ pk: 'tenant-a#ok-1' });
  });

  it('records an oversized record as RecordTooLarge with its recordId, and processes the rest', async () => {
    const big = JSON.stringify({
      recordId: 'huge',
      modelInput: { messages: [{ role: 'user', content: [{ text: 'x'.repeat(MAX_ITEM_BYTES) }] }] },
    });
    s3.put(INGEST, 'big.jsonl', `${big}\n{"id": "small", "text": "hi"}\n`);
    const out = await planInProcess(event({ bucket: INGEST, key: 'big.jsonl' }), deps());
    expect(out.counts).toMatchObject({ lines: 2, records: 1, invalid: 1, toProcess: 1 });
    const [failure] = s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl');
    expect(failure).toMatchObject({
      recordId: 'huge',
      line: 1,
      stage: 'plan',
      error: { code: 'RecordTooLarge' },
    });
  });

  it('writes no failures file for a clean corpus, and counts an empty corpus as zero', async () => {
    s3.put(INGEST, 'empty.jsonl', '\n\n');
    const out = await planInProcess(event({ bucket: INGEST, key: 'empty.jsonl' }), deps());
    expect(out.counts).toEqual({ lines: 0, records: 0, invalid: 0, duplicates: 0, skipped: 0, toProcess: 0 });
    expect(s3.text(OUT, 'runs/run-1/failures/plan.jsonl')).toBeUndefined();
    expect(ddbMock).not.toHaveReceivedAnyCommand();
    expect(sqsMock).not.toHaveReceivedAnyCommand();
  });
});

/** What SQS accepts in a body or a String attribute value (API_SendMessage), written out here, not imported. */
const SQS_TEXT = /^[\t\n\r\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]*$/u;

/**
 * Makes the mocked SQS answer as SQS does: an entry whose body or errorCode attribute holds a character SQS refuses,
 * or one `refuse` picks, fails on its own as a sender fault; the rest are sent (and recorded).
 */
function strictSqs(refuse: (m: FailureLaneMessage) => boolean = () => false): SentBatch[] {
  const accepted: SentBatch[] = [];
  sqsMock.on(SendMessageBatchCommand).callsFake((input: SendMessageBatchCommandInput) => {
    const entries = input.Entries ?? [];
    const refused = (e: (typeof entries)[number]): boolean =>
      !SQS_TEXT.test(e.MessageBody ?? '') ||
      !SQS_TEXT.test(e.MessageAttributes?.errorCode?.StringValue ?? '') ||
      refuse(JSON.parse(e.MessageBody ?? '{}') as FailureLaneMessage);
    accepted.push({
      queueUrl: input.QueueUrl ?? '',
      messages: entries
        .filter((e) => !refused(e))
        .map((e) => JSON.parse(e.MessageBody ?? '') as FailureLaneMessage),
    });
    return {
      Successful: entries
        .filter((e) => !refused(e))
        .map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
      Failed: entries.filter(refused).map((e) => ({
        Id: e.Id,
        SenderFault: true,
        Code: 'InvalidMessageContents',
        Message: 'Invalid characters found.',
      })),
    };
  });
  return accepted;
}

describe('Plan and the failure lane', () => {
  it('dead-letters bad lines holding text SQS refuses (emoji ids, U+FFFF, controls) and goes on', async () => {
    const request = { messages: [{ role: 'user', content: [{ text: 'hi' }] }] };
    const lines = [
      JSON.stringify({ recordId: 'emoji-😀', modelInput: request }),
      '{"recordId": "nonchar-\uffff", "modelInput": {}}',
      JSON.stringify({ recordId: 'ok', modelInput: request }),
      '{"id": "nul-\\u0000-lone-\\ud800", "text": "hi"}',
    ];
    s3.put(INGEST, 'corpora/odd.jsonl', `${lines.join('\n')}\n`);
    const accepted = strictSqs();
    const out = await planInProcess(event({ bucket: INGEST, key: 'corpora/odd.jsonl' }), deps());
    expect(out.counts).toMatchObject({ lines: 4, records: 1, invalid: 3 });
    const failures = s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl');
    expect(failures.map((f) => [f.line, f.error.code])).toEqual([
      [1, 'InvalidRecordId'],
      [2, 'InvalidRecordId'],
      [4, 'InvalidRecordId'],
    ]);
    // Each one reached the DLQ with the same failure it has in the file.
    const dead = accepted.flatMap((b) => b.messages);
    expect(dead.map(({ source, line, stage, error }) => ({ source, line, stage, error }))).toEqual(failures);
    expect(dead[0]?.error.message).toContain('emoji-😀');
  });

  it('loses only the DLQ copy of a line whose message SQS refuses, and says so in the failures file', async () => {
    const accepted = strictSqs((m) => m.line === 5);
    const out = await planInProcess(event({ bucket: INGEST, key: FIXTURE_KEY }), deps());
    expect(out.counts).toMatchObject({ lines: 24, records: 17, invalid: 6, duplicates: 1 });
    expect(accepted.flatMap((b) => b.messages).map((m) => m.line)).toEqual([4, 6, 7, 8, 10]);
    const failures = s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl');
    expect(failures.filter((f) => f.line === 5).map((f) => f.error.code)).toEqual([
      'NotAnObject',
      'FailureLaneRefused',
    ]);
    expect(failures.find((f) => f.error.code === 'FailureLaneRefused')?.error.message).toBe(
      'line 5: SQS refused its failure-lane message (InvalidMessageContents: Invalid characters found.), so the ' +
        'failure dead-letter queue does not hold it; its reason is the NotAnObject failure of the same line in this file',
    );
  });
});

describe('Plan over lines no record can be made of', () => {
  it('rejects invalid UTF-8, 5,000-deep nesting and an over-long line each on its own line, and plans the rest', async () => {
    const request = (text: string): Record<string, unknown> => ({
      messages: [{ role: 'user', content: [{ text }] }],
    });
    const ok = (id: string, text: string): Buffer =>
      Buffer.from(`${JSON.stringify({ recordId: id, modelInput: request(text) })}\n`);
    const corpus = Buffer.concat([
      ok('r1', 'before 😀'),
      Buffer.concat([
        Buffer.from('{"id": "bad-utf8", "text": "caf'),
        Buffer.from([0xc3, 0x28]),
        Buffer.from('"}\n'),
      ]),
      ok('r3', 'مرحبا 你好'),
      Buffer.from(
        `{"recordId": "deep", "modelInput": {"messages": ${'['.repeat(5000)}${']'.repeat(5000)}}}\n`,
      ),
      Buffer.from(`{"id": "long", "text": "${'x'.repeat(MAX_LINE_BYTES)}"}\r\n`),
      Buffer.from('[1, 2]\n42\n"text"\nnull\ntrue\n'),
      ok('r11', 'after \u{1d400}'),
    ]);
    s3.putBytes(INGEST, 'corpora/hostile.jsonl', corpus);
    const out = await planInProcess(event({ bucket: INGEST, key: 'corpora/hostile.jsonl' }), deps());
    expect(out.counts).toMatchObject({ lines: 11, records: 3, invalid: 8, duplicates: 0 });
    const failures = s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl');
    expect(failures.map((f) => [f.line, f.error.code])).toEqual([
      [2, 'InvalidUtf8'],
      [4, 'NestingTooDeep'],
      [5, 'LineTooLong'],
      [6, 'NotAnObject'],
      [7, 'NotAnObject'],
      [8, 'NotAnObject'],
      [9, 'NotAnObject'],
      [10, 'NotAnObject'],
    ]);
    expect(failures[0]?.error.message).toMatch(
      /^line 2 is not valid UTF-8: at byte offset 31 of the line, 0xc3 is no UTF-8 character/,
    );
    expect(s3.lines<WorkItem>(OUT, out.itemsKey).map((i) => [i.line, i.recordId])).toEqual([
      [1, 'r1'],
      [3, 'r3'],
      [11, 'r11'],
    ]);
  });
});

/** A corpus of `n` Converse-format records, ids r-00000.., optionally with native-format lines mixed in. */
function corpus(n: number, nativeEvery = 0): string {
  return Array.from({ length: n }, (_, i) => {
    const recordId = `r-${String(i).padStart(5, '0')}`;
    if (nativeEvery > 0 && i % nativeEvery === 0) {
      return JSON.stringify({
        recordId,
        modelInput: {
          anthropic_version: 'bedrock-2023-05-31',
          max_tokens: 64,
          messages: [{ role: 'user', content: `native ${i}` }],
        },
      });
    }
    return JSON.stringify({
      recordId,
      modelInput: { messages: [{ role: 'user', content: [{ text: `record ${i}` }] }] },
    });
  }).join('\n');
}

describe('Plan in batch mode (sharding)', () => {
  function shardsOf(out: PlanOutput): ShardItem[] {
    return s3.json(OUT, out.batch?.shardsKey ?? 'missing') as ShardItem[];
  }

  it('cuts 2,550 records into three balanced shards within the job and file limits', async () => {
    s3.put(INGEST, 'big.jsonl', corpus(2550));
    const out = await planInProcess(event({ bucket: INGEST, key: 'big.jsonl', mode: 'batch' }), deps());
    expect(out.mode).toBe('batch');
    expect(out.batch).toMatchObject({
      shardsKey: 'runs/run-1/shards.json',
      shards: 3,
      records: 2550,
      viaConverse: 0,
      maxConcurrency: 2,
      toleratedFailurePercentage: 0,
      jobWaitSeconds: 24 * 3600 + 6 * 3600,
      heartbeatSeconds: 5 * 60 * 3 + 60,
    });
    expect(out.fanOut.itemsKey).toBe('runs/run-1/converse-items.jsonl');
    const shards = shardsOf(out);
    expect(shards.map((s) => s.records)).toEqual([850, 850, 850]);
    const seen: string[] = [];
    for (const shard of shards) {
      expect(shard).toMatchObject({
        format: 'converse',
        inputPrefix: `runs/run-1/shards/0000${shard.shard}/input/`,
        outputPrefix: `runs/run-1/shards/0000${shard.shard}/output/`,
      });
      // 850 records with at most 400 per file: three files.
      expect(shard.inputKeys).toHaveLength(3);
      let bytes = 0;
      for (const key of shard.inputKeys) {
        expect(key.startsWith(shard.inputPrefix)).toBe(true);
        const lines = s3.lines<{ recordId: string; modelInput: unknown }>(OUT, key);
        expect(lines.length).toBeLessThanOrEqual(400);
        for (const line of lines) {
          expect(Object.keys(line)).toEqual(['recordId', 'modelInput']);
          seen.push(line.recordId);
          bytes += Buffer.byteLength(JSON.stringify(line)) + 1;
        }
      }
      expect(bytes).toBe(shard.bytes);
    }
    // Every record exactly once, in corpus order.
    expect(seen).toEqual(Array.from({ length: 2550 }, (_, i) => `r-${String(i).padStart(5, '0')}`));
    expect(s3.text(OUT, 'runs/run-1/converse-tail.jsonl')).toBeUndefined();
  });

  it('sends records too few for another job through Converse (the tail)', async () => {
    // 1,050 records with a 1,000 cap: 2 shards of 525 (balanced, no 50-record job).
    s3.put(INGEST, 'c.jsonl', corpus(1050));
    const out = await planInProcess(event({ bucket: INGEST, key: 'c.jsonl', mode: 'batch' }), deps());
    expect(shardsOf(out).map((s) => s.records)).toEqual([525, 525]);
    // 150 records: one job of 150. 99 records: none, all via Converse.
    quotas = { ...QUOTAS, maxRecordsPerJob: 100, maxRecordsPerFile: 100 };
    s3.put(INGEST, 'd.jsonl', corpus(150));
    const tail = await planInProcess(
      event({ bucket: INGEST, key: 'd.jsonl', mode: 'batch' }, 'run-2'),
      deps(),
    );
    expect(tail.batch).toMatchObject({ shards: 1, records: 100, viaConverse: 50 });
    expect(s3.lines<WorkItem>(OUT, 'runs/run-2/converse-tail.jsonl').map((i) => i.recordId)).toEqual(
      Array.from({ length: 50 }, (_, i) => `r-${String(i + 100).padStart(5, '0')}`),
    );
    expect(s3.lines<WorkItem>(OUT, 'runs/run-2/converse-tail.jsonl')[0]).toMatchObject({
      format: 'converse',
      line: 101,
    });
  });

  it('puts the minority format through Converse: a job takes one format', async () => {
    s3.put(INGEST, 'mixed.jsonl', corpus(600, 10));
    const out = await planInProcess(event({ bucket: INGEST, key: 'mixed.jsonl', mode: 'batch' }), deps());
    expect(out.batch).toMatchObject({ records: 540, viaConverse: 60 });
    expect(shardsOf(out).every((s) => s.format === 'converse')).toBe(true);
    const tail = s3.lines<WorkItem>(OUT, 'runs/run-1/converse-tail.jsonl');
    expect(tail).toHaveLength(60);
    expect(tail.every((i) => i.format === 'native')).toBe(true);
  });

  it('auto picks batch at the job minimum and converse one record below it', async () => {
    s3.put(INGEST, 'a.jsonl', corpus(100));
    s3.put(INGEST, 'b.jsonl', corpus(99));
    const atMin = await planInProcess(event({ bucket: INGEST, key: 'a.jsonl' }), deps());
    const below = await planInProcess(event({ bucket: INGEST, key: 'b.jsonl' }, 'run-2'), deps());
    expect(atMin).toMatchObject({ requestedMode: 'auto', mode: 'batch', batch: { shards: 1 } });
    expect(below).toMatchObject({ requestedMode: 'auto', mode: 'converse' });
  });

  it('runs at most batch.mapConcurrency shards at once, never more than the concurrent-jobs quota', async () => {
    s3.put(INGEST, 'big.jsonl', corpus(2550));
    const capped = deps();
    capped.settings = { ...settings, batch: { ...settings.batch, mapConcurrency: 1 } };
    const one = await planInProcess(event({ bucket: INGEST, key: 'big.jsonl', mode: 'batch' }), capped);
    expect(one.batch?.maxConcurrency).toBe(1);
    const above = deps();
    above.settings = { ...settings, batch: { ...settings.batch, mapConcurrency: 8 } };
    const quota = await planInProcess(
      event({ bucket: INGEST, key: 'big.jsonl', mode: 'batch' }, 'run-2'),
      above,
    );
    expect(quota.batch?.maxConcurrency).toBe(QUOTAS.maxConcurrentJobs);
  });

  it('auto honours a configured threshold above the minimum', async () => {
    s3.put(INGEST, 'a.jsonl', corpus(300));
    const d = deps();
    d.settings = { ...settings, batch: { ...settings.batch, autoThreshold: 500 } };
    expect((await planInProcess(event({ bucket: INGEST, key: 'a.jsonl' }), d)).mode).toBe('converse');
  });

  it('never reads the quotas for a converse run', async () => {
    s3.put(INGEST, 'a.jsonl', corpus(300));
    const d = deps();
    const read = jest.fn(d.batchQuotas);
    d.batchQuotas = read;
    expect((await planInProcess(event({ bucket: INGEST, key: 'a.jsonl', mode: 'converse' }), d)).mode).toBe(
      'converse',
    );
    expect(read).not.toHaveBeenCalled();
  });

  it('respects the byte limits before the record limits', async () => {
    // Each record is ~80 bytes in a shard file: 20 KB per file fits ~250 of them, under the 400-record cap.
    quotas = { ...QUOTAS, maxBytesPerFile: 20_000, maxBytesPerJob: 60_000 };
    s3.put(INGEST, 'a.jsonl', corpus(2000));
    const out = await planInProcess(event({ bucket: INGEST, key: 'a.jsonl', mode: 'batch' }), deps());
    const shards = shardsOf(out);
    for (const shard of shards) {
      expect(shard.bytes).toBeLessThanOrEqual(60_000);
      for (const key of shard.inputKeys) {
        expect(Buffer.byteLength(s3.text(OUT, key) ?? '')).toBeLessThanOrEqual(20_000);
      }
    }
    expect(shards.reduce((n, s) => n + s.records, 0) + (out.batch?.viaConverse ?? 0)).toBe(2000);
    expect(shards.length).toBeGreaterThan(2);
  });

  it('a corpus above one job byte limit with few records: jobs within every limit, the rest through Converse', async () => {
    // ~75 bytes per record in a shard file: 150 records take ~11 KB, over a 9 KB job limit, yet two jobs of the
    // 100-record minimum cannot be made: one job as large as the limit allows, the remainder through Converse.
    quotas = { ...QUOTAS, maxBytesPerFile: 9_000, maxBytesPerJob: 9_000 };
    s3.put(INGEST, 'few-big.jsonl', corpus(150));
    const out = await planInProcess(event({ bucket: INGEST, key: 'few-big.jsonl', mode: 'batch' }), deps());
    const shards = out.batch ? shardsOf(out) : [];
    for (const shard of shards) {
      expect(shard.records).toBeGreaterThanOrEqual(100);
      expect(shard.bytes).toBeLessThanOrEqual(9_000);
    }
    const inJobs = shards.reduce((n, sh) => n + sh.records, 0);
    const tail =
      inJobs === 150
        ? 0
        : s3.lines<WorkItem>(OUT, out.batch ? 'runs/run-1/converse-tail.jsonl' : out.itemsKey).length;
    expect(inJobs + tail).toBe(150);
  });

  it('a corpus of only bad lines: nothing to process, every line has its reason', async () => {
    s3.put(INGEST, 'bad.jsonl', '{"recordId": 1\n[1]\n"x"\n');
    const out = await planInProcess(event({ bucket: INGEST, key: 'bad.jsonl', mode: 'batch' }), deps());
    expect(out.counts).toEqual({ lines: 3, records: 0, invalid: 3, duplicates: 0, skipped: 0, toProcess: 0 });
    expect(out.batch).toBeUndefined();
    expect(s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl')).toHaveLength(3);
  });
});

describe('Plan with parse workers', () => {
  it('plans the same run in worker threads as in one thread: items, failures, counts and shards', async () => {
    const bad = ['{"recordId": "cut', '[1]', fixture('bad-input-corpus.jsonl')];
    s3.put(INGEST, 'mixed.jsonl', `${corpus(2550, 9)}\n${bad.join('\n')}`);
    for (let i = 0; i < 2550; i += 11) table.published.add(`r-${String(i).padStart(5, '0')}`);
    const run = async (runId: string, parse: Partial<PlanSettings>) => {
      const out = await planInProcess(event({ bucket: INGEST, key: 'mixed.jsonl', mode: 'batch' }, runId), {
        ...deps(),
        settings: { ...settings, ...parse },
      });
      const key = (k: string): string => k.replace(`runs/${runId}/`, '');
      const files = Object.fromEntries(
        s3
          .keys(OUT)
          .filter((k) => k.startsWith(`runs/${runId}/`) && !k.endsWith('plan.json'))
          .map((k) => [key(k), s3.text(OUT, k)?.replaceAll(runId, '<run>')]),
      );
      return { counts: out.counts, mode: out.mode, shards: out.batch?.shards, files };
    };
    const inline = await run('inline', { parseWorkers: 0 });
    const pooled = await run('pooled', { parseWorkers: 2, parallelParseMinBytes: 0 });
    expect(inline.shards).toBeGreaterThan(1);
    expect(inline.counts.invalid).toBeGreaterThan(5);
    expect(Object.keys(inline.files)).toContain('failures/plan.jsonl');
    expect(pooled).toEqual(inline);
  });
});
