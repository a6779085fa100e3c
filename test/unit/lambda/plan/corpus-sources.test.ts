import 'aws-sdk-client-mock-jest';
import { gzipSync } from 'node:zlib';
import { Readable } from 'node:stream';
import { beforeEach, describe, expect, it } from '@jest/globals';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { binaryReason, classifyKey, corpusKey, SourceReader } from '../../../../lambda/plan/corpus-sources';
import { planInProcess, type PlanDeps, type PlanSettings } from '../../../../lambda/plan/plan-run';
import type { CorpusSourceEntry, FailureLine, WorkItem } from '../../../../lambda/shared/contracts';
import { CorpusNotFoundError } from '../../../../lambda/shared/errors';
import { FakeLedgerTable, FakeS3, recordSqs } from '../helpers';
import { useClientMocks } from '../../../support/aws-mocks';
import { mockedPlanDeps } from './plan-fixtures';
import { INGEST_BUCKET as INGEST, LEDGER_TABLE as TABLE, OUTPUT_BUCKET as OUT } from '../../../support/names';

const [s3Mock, ddbMock, sqsMock] = useClientMocks(S3Client, DynamoDBDocumentClient, SQSClient);

/** `n` plain lines `{"id": "<prefix>-<i>", "text": ...}`, each ending in a newline. */
function lines(prefix: string, n: number, from = 1): string {
  return Array.from(
    { length: n },
    (_, i) => `{"id":"${prefix}-${i + from}","text":"question ${prefix} ${i + from}"}\n`,
  ).join('');
}

/** Reads a source through a SourceReader from chunks of `chunkBytes`. */
async function read(
  bytes: Buffer,
  key: string,
  chunkBytes = 1000,
): Promise<{ text: string; problem: SourceReader['problem'] }> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkBytes) chunks.push(bytes.subarray(i, i + chunkBytes));
  const reader = new SourceReader(Readable.from(chunks), { key, gzip: key.endsWith('.gz') });
  const out: Buffer[] = [];
  for await (const chunk of reader.bytes()) out.push(chunk);
  return { text: Buffer.concat(out).toString('utf8'), problem: reader.problem };
}

describe('corpus keys', () => {
  it('a key ending in / is a prefix, one ending in /_SUCCESS names its folder, any other one object', () => {
    expect(corpusKey('corpora/a.jsonl')).toEqual({ key: 'corpora/a.jsonl', prefix: false });
    expect(corpusKey('corpora/drop-1/')).toEqual({ key: 'corpora/drop-1/', prefix: true });
    expect(corpusKey('corpora/drop-1/_SUCCESS')).toEqual({ key: 'corpora/drop-1/', prefix: true });
    expect(corpusKey('corpora/not_SUCCESS')).toEqual({ key: 'corpora/not_SUCCESS', prefix: false });
  });

  it('reads .jsonl, .jsonl.gz and .gz under a prefix, and says why it skips the rest', () => {
    expect(classifyKey('p/a.jsonl')).toEqual({ gzip: false });
    expect(classifyKey('p/a.jsonl.gz')).toEqual({ gzip: true });
    expect(classifyKey('p/part-0.gz')).toEqual({ gzip: true });
    expect(classifyKey('p/_SUCCESS')).toEqual({ reason: "the drop's completion marker" });
    expect(classifyKey('p/manifest.json')).toEqual({ reason: 'not a .jsonl, .jsonl.gz or .gz file' });
    expect(classifyKey('p/README')).toEqual({ reason: 'not a .jsonl, .jsonl.gz or .gz file' });
    expect(classifyKey('p/sub/')).toEqual({ reason: 'a folder placeholder' });
    expect(classifyKey('p/.hidden.jsonl')).toEqual({ reason: 'a hidden file' });
  });
});

describe('SourceReader', () => {
  const text = lines('r', 300);

  it('passes plain JSONL through unchanged, whatever the chunks', async () => {
    for (const size of [1, 7, 1000, 1 << 20]) {
      const got = await read(Buffer.from(text), 'p/a.jsonl', size);
      expect(got).toEqual({ text, problem: undefined });
    }
  });

  it('gunzips a .gz source, one member or several one after another', async () => {
    expect(await read(gzipSync(text), 'p/a.jsonl.gz', 50)).toEqual({ text, problem: undefined });
    const members = Buffer.concat([
      gzipSync(lines('a', 10)),
      gzipSync(lines('b', 10)),
      gzipSync(lines('c', 10)),
    ]);
    expect(await read(members, 'p/parts.gz', 33)).toEqual({
      text: lines('a', 10) + lines('b', 10) + lines('c', 10),
      problem: undefined,
    });
  });

  it('ends a gzip source cut short at the cut, keeping the whole lines before it and dropping the cut line', async () => {
    const big = lines('t', 5000);
    const zipped = gzipSync(big);
    const got = await read(zipped.subarray(0, Math.floor(zipped.length * 0.6)), 'p/cut.jsonl.gz', 4096);
    expect(got.problem?.code).toBe('CorruptGzip');
    expect(got.problem?.message).toContain('p/cut.jsonl.gz');
    expect(got.text.length).toBeGreaterThan(0);
    expect(got.text.endsWith('\n')).toBe(true);
    expect(big.startsWith(got.text)).toBe(true);
  });

  it('fails corrupt gzip data (a flipped byte) as CorruptGzip', async () => {
    const zipped = Buffer.from(gzipSync(lines('x', 50)));
    zipped[zipped.length - 6] = (zipped[zipped.length - 6] ?? 0) ^ 0xff; // the CRC-32 trailer
    const got = await read(zipped, 'p/flip.gz');
    expect(got.problem?.code).toBe('CorruptGzip');
  });

  it('refuses gzip data not named .gz, and a .gz that is not gzip, before any line', async () => {
    expect(await read(gzipSync(text), 'p/sneaky.jsonl')).toEqual({
      text: '',
      problem: { code: 'GzipNotNamedGz', message: expect.stringContaining('name it .jsonl.gz') },
    });
    expect(await read(Buffer.from(text), 'p/plain.jsonl.gz')).toEqual({
      text: '',
      problem: { code: 'NotGzip', message: expect.stringContaining('p/plain.jsonl.gz') },
    });
  });

  it("releases a refused source's stream instead of reading it to its end", async () => {
    const zipped = gzipSync(lines('big', 20_000));
    for (const [bytes, key] of [
      [zipped, 'p/sneaky.jsonl'],
      [Buffer.concat([Buffer.alloc(1024), Buffer.from(lines('x', 20_000))]), 'p/nul.jsonl'],
    ] as const) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += 1000) chunks.push(bytes.subarray(i, i + 1000));
      const body = Readable.from(chunks);
      const reader = new SourceReader(body, { key, gzip: false });
      for await (const chunk of reader.bytes()) expect(chunk).toBeUndefined();
      expect(reader.problem).toBeDefined();
      expect(body.destroyed).toBe(true);
    }
  });

  it('refuses a binary file (NUL bytes, or mostly not UTF-8) whole, even gzipped', async () => {
    const png = Buffer.from([
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52,
    ]);
    expect((await read(png, 'p/image.jsonl')).problem?.code).toBe('BinarySource');
    const noise = Buffer.from(Array.from({ length: 4000 }, (_, i) => 0x80 + ((i * 7) % 120)));
    expect((await read(noise, 'p/noise.jsonl')).problem).toEqual({
      code: 'BinarySource',
      message: expect.stringContaining('bytes that are not UTF-8'),
    });
    expect((await read(gzipSync(png), 'p/image.gz')).problem?.code).toBe('BinarySource');
  });

  it('leaves a text file with a few bad bytes to fail line by line', async () => {
    const latin1 = Buffer.concat([Buffer.from(lines('l', 20)), Buffer.from([0xe9, 0x0a])]);
    expect(binaryReason(latin1)).toBeUndefined();
    expect((await read(latin1, 'p/latin1.jsonl')).problem).toBeUndefined();
    // A corpus with a line holding a raw NUL and other control characters is text: that line fails on its own.
    const nulLine = Buffer.concat([
      Buffer.from(lines('n', 5)),
      Buffer.from('{"text":"a\u0000\u0001\u001b"}\n'),
    ]);
    expect(binaryReason(nulLine)).toBeUndefined();
    expect((await read(nulLine, 'p/nul-line.jsonl')).problem).toBeUndefined();
    // A sample cut inside a character is still text.
    expect(binaryReason(Buffer.from('{"text":"é', 'utf8').subarray(0, 10))).toBeUndefined();
  });
});

describe('Plan over a prefix', () => {
  const settings: PlanSettings = {
    outputBucket: OUT,
    input: { ingestBucket: INGEST, ingestPrefix: 'corpora/', allowedBuckets: [] },
    modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
    ledgerScope: 'test/model',
    prompt: { template: 'Answer briefly: {{text}}', maxTokens: 256 },
    batchSize: 10,
    mapConcurrency: 4,
    toleratedFailurePercentage: 10,
    batch: { toleratedFailurePercentage: 0, jobTimeoutHours: 24, reconcileIntervalMinutes: 5 },
  };
  let s3: FakeS3;
  const deps = (overrides: Partial<PlanSettings> = {}): PlanDeps =>
    mockedPlanDeps({ ...settings, ...overrides }, () => Promise.reject(new Error('converse only')));
  const run = (key: string, overrides: Partial<PlanSettings> = {}) =>
    planInProcess(
      {
        runId: 'run-1',
        startedAt: '2025-01-02T03:04:05.000Z',
        input: { bucket: INGEST, key, mode: 'converse' },
      },
      deps(overrides),
    );

  beforeEach(() => {
    s3 = new FakeS3(s3Mock, { listPageSize: 3 }).install();
    new FakeLedgerTable(ddbMock, TABLE).install();
    recordSqs(sqsMock);
    const drop = 'corpora/drop-1/';
    s3.put(INGEST, `${drop}b.jsonl`, lines('b', 3) + 'not json\n');
    s3.put(INGEST, `${drop}a.jsonl`, lines('a', 4));
    s3.putBytes(
      INGEST,
      `${drop}c.jsonl.gz`,
      Buffer.concat([gzipSync(lines('c', 2)), gzipSync(lines('c', 3, 3))]),
    );
    s3.putBytes(INGEST, `${drop}d-image.jsonl`, Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 0, 0]));
    s3.putBytes(INGEST, `${drop}e-zipped.jsonl`, gzipSync(lines('e', 5)));
    s3.put(INGEST, `${drop}README.md`, '# about this drop\n');
    s3.put(INGEST, `${drop}_SUCCESS`, '', { mode: 'converse' });
  });

  it('reads the sources in key order, names them in failures, lists them (and the skipped objects) in sources.json', async () => {
    const out = await run('corpora/drop-1/_SUCCESS');
    expect(out.corpus).toMatchObject({ bucket: INGEST, key: 'corpora/drop-1/', sources: 5 });
    // 4 + 4 + 5 lines, one line per refused source; a.jsonl first (key order, not upload order).
    expect(out.counts).toEqual({
      lines: 15,
      records: 12,
      invalid: 3,
      duplicates: 0,
      skipped: 0,
      toProcess: 12,
    });
    const items = s3.lines<WorkItem>(OUT, 'runs/run-1/items.jsonl');
    expect(items.map((i) => i.recordId)).toEqual([
      ...['a-1', 'a-2', 'a-3', 'a-4', 'b-1', 'b-2', 'b-3'],
      ...['c-1', 'c-2', 'c-3', 'c-4', 'c-5'],
    ]);
    expect(items.map((i) => i.line)).toEqual([1, 2, 3, 4, 1, 2, 3, 1, 2, 3, 4, 5]);
    const failures = s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl');
    expect(failures.map((f) => [f.source, f.line, f.stage, f.error.code])).toEqual([
      ['corpora/drop-1/b.jsonl', 4, 'plan', 'InvalidJson'],
      ['corpora/drop-1/d-image.jsonl', undefined, 'source', 'BinarySource'],
      ['corpora/drop-1/e-zipped.jsonl', undefined, 'source', 'GzipNotNamedGz'],
    ]);
    expect(failures[0]!.error.message).toMatch(/^corpora\/drop-1\/b\.jsonl: line 4 /);
    const sources = s3.json<CorpusSourceEntry[]>(OUT, 'runs/run-1/sources.json');
    expect(
      sources.map(({ key, lines: l, records, error, skipped }) => ({
        key,
        l,
        records,
        code: error?.code,
        skipped,
      })),
    ).toEqual([
      {
        key: 'corpora/drop-1/README.md',
        l: undefined,
        records: undefined,
        code: undefined,
        skipped: 'not a .jsonl, .jsonl.gz or .gz file',
      },
      {
        key: 'corpora/drop-1/_SUCCESS',
        l: undefined,
        records: undefined,
        code: undefined,
        skipped: "the drop's completion marker",
      },
      { key: 'corpora/drop-1/a.jsonl', l: 4, records: 4, code: undefined, skipped: undefined },
      { key: 'corpora/drop-1/b.jsonl', l: 4, records: 3, code: undefined, skipped: undefined },
      { key: 'corpora/drop-1/c.jsonl.gz', l: 5, records: 5, code: undefined, skipped: undefined },
      { key: 'corpora/drop-1/d-image.jsonl', l: 1, records: 0, code: 'BinarySource', skipped: undefined },
      { key: 'corpora/drop-1/e-zipped.jsonl', l: 1, records: 0, code: 'GzipNotNamedGz', skipped: undefined },
    ]);
    const read = sources.filter((s) => s.skipped === undefined);
    expect(read.reduce((n, s) => n + (s.lines ?? 0), 0)).toBe(out.counts.lines);
    expect(read.reduce((n, s) => n + (s.records ?? 0), 0)).toBe(out.counts.records);
    expect(sources.find((s) => s.key.endsWith('a.jsonl'))).toMatchObject({
      size: Buffer.byteLength(lines('a', 4)),
      etag: 'etag-1',
    });
  });

  it('parses each source in worker threads the same way', async () => {
    const inThread = await run('corpora/drop-1/');
    const inThreadItems = s3.lines<WorkItem>(OUT, 'runs/run-1/items.jsonl');
    const inWorkers = await run('corpora/drop-1/', { parseWorkers: 2, parallelParseMinBytes: 0 });
    expect(inWorkers.counts).toEqual(inThread.counts);
    expect(s3.lines<WorkItem>(OUT, 'runs/run-1/items.jsonl')).toEqual(inThreadItems);
    expect(s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl')).toHaveLength(3);
  }, 60_000);

  it('takes the run settings from the _SUCCESS marker, and reads the same prefix named directly', async () => {
    s3.put(INGEST, 'corpora/drop-1/_SUCCESS', '', { 'ledger-scope': 'from-marker' });
    const out = await run('corpora/drop-1/');
    expect(out.ledgerScope).toBe('from-marker');
    expect(out.counts.lines).toBe(15);
  });

  it('names the other source when a recordId is reused with different content across sources', async () => {
    s3.put(INGEST, 'corpora/drop-1/f.jsonl', '{"id":"a-2","text":"something else"}\n');
    await run('corpora/drop-1/');
    const failures = s3.lines<FailureLine>(OUT, 'runs/run-1/failures/plan.jsonl');
    const conflict = failures.find((f) => f.error.code === 'ConflictingRecordId');
    expect(conflict).toMatchObject({ source: 'corpora/drop-1/f.jsonl', line: 1 });
    expect(conflict?.error.message).toContain('of line 2 of corpora/drop-1/a.jsonl');
  });

  it('fails the run on a prefix without any source', async () => {
    s3.put(INGEST, 'corpora/empty/README.md', 'nothing here');
    await expect(run('corpora/empty/')).rejects.toThrow(CorpusNotFoundError);
    await expect(run('corpora/empty/')).rejects.toThrow(/holds no \.jsonl, \.jsonl\.gz or \.gz file/);
  });

  it('reads one gzip object named .gz', async () => {
    s3.putBytes(INGEST, 'corpora/one.jsonl.gz', gzipSync(lines('g', 7)));
    const out = await run('corpora/one.jsonl.gz');
    expect(out.counts).toMatchObject({ lines: 7, records: 7, invalid: 0 });
    expect(out.corpus).toMatchObject({ key: 'corpora/one.jsonl.gz', sources: 1 });
  });
});
