import 'aws-sdk-client-mock-jest';
import { gzipSync } from 'node:zlib';
import { beforeEach, describe, expect, it } from '@jest/globals';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { keptRanges } from '../../../../lambda/plan/merge-plan';
import { planInProcess, type PlanDeps, type PlanSettings } from '../../../../lambda/plan/plan-run';
import type { PlannedSegment } from '../../../../lambda/plan/segment-pass';
import {
  planKeys,
  runKeys,
  type CorpusSourceEntry,
  type FailureLaneMessage,
  type PlanOutput,
  type ShardItem,
} from '../../../../lambda/shared/contracts';
import { FakeLedgerTable, FakeS3, recordSqs, type SentBatch } from '../helpers';
import { useClientMocks } from '../../../support/aws-mocks';
import { mockedPlanDeps } from './plan-fixtures';
import { mulberry32 } from '@corpus-pipeline/local-aws/bedrock-simulator/engine';
import { INGEST_BUCKET as INGEST, LEDGER_TABLE as TABLE, OUTPUT_BUCKET as OUT } from '../../../support/names';

/**
 * Plan scaled out must plan exactly what one pass over the corpus plans: the same counts, the same items file byte
 * for byte, the same failures and failure-lane messages, the same sources. The reference is the same code with one
 * segment holding the whole corpus (one invocation reads it all, in order); the subject cuts the same corpus into
 * segments of a few hundred bytes, so recordIds meet across segments, sources are cut in byte ranges and lines
 * straddle every boundary.
 */

const [s3Mock, ddbMock, sqsMock] = useClientMocks(S3Client, DynamoDBDocumentClient, SQSClient);

const settings: PlanSettings = {
  outputBucket: OUT,
  input: { ingestBucket: INGEST, ingestPrefix: '', allowedBuckets: [] },
  modelId: 'amazon.nova-lite-v1:0',
  ledgerScope: 'scope',
  prompt: { template: 'Answer: {{text}}', maxTokens: 64 },
  batchSize: 10,
  mapConcurrency: 4,
  toleratedFailurePercentage: 10,
  batch: { toleratedFailurePercentage: 0, jobTimeoutHours: 24, reconcileIntervalMinutes: 5 },
  parseWorkers: 0,
};

let s3: FakeS3;
let table: FakeLedgerTable;
let sent: SentBatch[];

beforeEach(() => {
  s3 = new FakeS3(s3Mock).install();
  table = new FakeLedgerTable(ddbMock, TABLE).install();
  sent = recordSqs(sqsMock);
});

function deps(segmentBytes: number): PlanDeps {
  return mockedPlanDeps({ ...settings, segmentBytes }, () =>
    Promise.resolve({
      quotas: {
        minRecordsPerJob: 10,
        maxRecordsPerJob: 50,
        maxRecordsPerFile: 50,
        maxBytesPerFile: 1_000_000,
        maxBytesPerJob: 5_000_000,
        maxConcurrentJobs: 2,
      },
      sources: {},
    }),
  );
}

const TEXTS = ['hello', 'Grüße 👋🏽', 'مرحبا', '你好，世界', 'a\u200db', 'tab\there', 'same text'];

/** A corpus line: records with ids from a small pool (duplicates and conflicts), plain lines, bad lines, blanks. */
function line(next: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  const r = next();
  if (r < 0.05) return '';
  if (r < 0.1) return '{"id": "broken", "text": ';
  if (r < 0.13) return '[1, 2, 3]';
  if (r < 0.18) return JSON.stringify({ text: pick(TEXTS) });
  return JSON.stringify({ id: `r-${Math.floor(next() * 40)}`, text: pick(TEXTS.slice(0, 3)) });
}

function corpusText(next: () => number, lines: number): string {
  const out: string[] = [];
  for (let i = 0; i < lines; i++) out.push(line(next), next() < 0.2 ? '\r\n' : '\n');
  return out.join('');
}

interface Planned {
  out: PlanOutput;
  items: string;
  failures: string[];
  sources: CorpusSourceEntry[];
  lane: string[];
  segments: PlannedSegment[];
  /** Batch mode: each shard's counts and the concatenation of its input files, and the Converse tail. */
  shards: { records: number; bytes: number; format: string; input: string }[];
  tail: string;
}

async function plan(runId: string, key: string, segmentBytes: number): Promise<Planned> {
  sent.length = 0;
  const out = await planInProcess(
    { runId, startedAt: '2026-01-01T00:00:00Z', input: { bucket: INGEST, key, mode: 'auto' } },
    deps(segmentBytes),
  );
  const lane = sent.flatMap((b) =>
    b.messages.map((m: FailureLaneMessage) => JSON.stringify({ ...m, runId: 'run' })),
  );
  return {
    out,
    items: s3.text(OUT, runKeys.items(runId)) ?? '',
    failures: (s3.text(OUT, runKeys.failures(runId, 'plan')) ?? '').split('\n').filter(Boolean).sort(),
    sources: JSON.parse(s3.text(OUT, runKeys.sources(runId)) ?? '[]') as CorpusSourceEntry[],
    lane: lane.sort(),
    segments: JSON.parse(s3.text(OUT, planKeys.segments(runId)) ?? '[]') as PlannedSegment[],
    shards: (JSON.parse(s3.text(OUT, runKeys.shards(runId)) ?? '[]') as ShardItem[]).map((s) => ({
      records: s.records,
      bytes: s.bytes,
      format: s.format,
      input: s.inputKeys.map((k) => s3.text(OUT, k) ?? '').join(''),
    })),
    tail: s3.text(OUT, runKeys.converseTail(runId)) ?? '',
  };
}

function expectSamePlan(whole: Planned, cut: Planned): void {
  expect(cut.out.counts).toEqual(whole.out.counts);
  const { counts } = cut.out;
  expect(counts.lines).toBe(counts.records + counts.invalid + counts.duplicates);
  expect(cut.out.mode).toBe(whole.out.mode);
  expect(cut.items).toBe(whole.items);
  expect(cut.failures).toEqual(whole.failures);
  expect(cut.failures).toHaveLength(counts.invalid);
  expect(cut.lane).toEqual(whole.lane);
  expect(cut.sources).toEqual(whole.sources);
  // The shard files, cut by the segments' own invocations, hold the same records in the same order as one pass.
  expect(cut.shards).toEqual(whole.shards);
  expect(cut.tail).toBe(whole.tail);
}

describe('Plan scaled out over segments', () => {
  it.each([1, 2, 3, 4, 5])(
    'plans a single object cut in byte ranges as one pass does (seed %i)',
    async (seed) => {
      const next = mulberry32(seed);
      s3.put(INGEST, 'corpus.jsonl', '\uFEFF' + corpusText(next, 150));
      for (const id of ['r-1', 'r-2', 'r-3', 'r-4', 'r-5']) table.published.add(id);
      table.publishedHashes.set('r-3', 'other content');
      table.publishedHashes.set('r-4', 'other content');
      const whole = await plan('whole', 'corpus.jsonl', 1 << 30);
      const cut = await plan('cut', 'corpus.jsonl', 200 + seed * 37);
      expect(whole.segments).toHaveLength(1);
      expect(cut.segments.length).toBeGreaterThan(10);
      expect(cut.out.counts.duplicates).toBeGreaterThan(0);
      expect(cut.failures.some((f) => f.includes('ConflictingRecordId'))).toBe(true);
      expect(cut.failures.some((f) => f.includes('RecordIdReused'))).toBe(true);
      expectSamePlan(whole, cut);
      expect(cut.out.mode).toBe('batch');
      expect(cut.shards.length).toBeGreaterThan(0);
      // A shard's input spans segments: one file per segment it takes records from.
      const inputs = JSON.parse(s3.text(OUT, runKeys.shards('cut')) ?? '[]') as ShardItem[];
      expect(inputs.some((shard) => shard.inputKeys.length > 1)).toBe(true);
    },
  );

  it('plans a prefix of plain, gzip and large files as one pass does', async () => {
    const next = mulberry32(42);
    s3.put(INGEST, 'drop/a.jsonl', corpusText(next, 40));
    s3.putBytes(INGEST, 'drop/b.jsonl.gz', gzipSync(Buffer.from(corpusText(next, 60))));
    s3.put(INGEST, 'drop/c.jsonl', corpusText(next, 200));
    s3.put(INGEST, 'drop/d.jsonl', '');
    s3.put(INGEST, 'drop/e.jsonl', corpusText(next, 5));
    s3.putBytes(
      INGEST,
      'drop/f.jsonl',
      Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(3000, 7)]),
    );
    const whole = await plan('whole', 'drop/', 1 << 30);
    const cut = await plan('cut', 'drop/', 500);
    expect(cut.segments.some((s) => s.parts.some((p) => p.start > 0))).toBe(true);
    expect(cut.segments.some((s) => s.parts.length > 1)).toBe(true);
    expect(cut.sources.find((s) => s.key === 'drop/f.jsonl')?.error?.code).toBe('GzipNotNamedGz');
    expectSamePlan(whole, cut);
  });

  it('numbers the lines of every byte range from the start of its source', async () => {
    const lines = Array.from({ length: 300 }, (_, i) =>
      i % 7 === 3 ? '{oops' : JSON.stringify({ id: `n-${i}`, text: 'x' }),
    );
    s3.put(INGEST, 'numbered.jsonl', lines.join('\n') + '\n');
    const cut = await plan('cut', 'numbered.jsonl', 256);
    const failures = cut.failures.map((f) => JSON.parse(f) as { line: number });
    expect(failures.map((f) => f.line).sort((a, b) => a - b)).toEqual(
      lines.flatMap((l, i) => (l === '{oops' ? [i + 1] : [])),
    );
    const items = cut.items
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { recordId: string; line: number });
    for (const item of items) expect(item.recordId).toBe(`n-${item.line - 1}`);
  });

  it('joins a segment around the few items it leaves out as byte ranges, and streams one with many', () => {
    const MIB = 1024 * 1024;
    expect(keptRanges('k', 100, undefined)).toEqual([{ key: 'k', size: 100 }]);
    const drops = [
      { ordinal: 2, offset: 40 * MIB, bytes: 10 },
      { ordinal: 0, offset: 0, bytes: 5 },
      { ordinal: 9, offset: 90 * MIB, bytes: 10 },
      { ordinal: 3, offset: 50 * MIB, bytes: 10 },
    ];
    expect(keptRanges('k', 100 * MIB, drops)).toEqual([
      { key: 'k', offset: 5, size: 40 * MIB - 5 },
      { key: 'k', offset: 40 * MIB + 10, size: 10 * MIB - 10 },
      { key: 'k', offset: 50 * MIB + 10, size: 40 * MIB - 10 },
      { key: 'k', offset: 90 * MIB + 10, size: 10 * MIB - 10 },
    ]);
    expect(keptRanges('k', 60 * MIB, drops.slice(0, 4))).toEqual([
      { key: 'k', size: 60 * MIB, dropLines: new Set([2, 0, 9, 3]) },
    ]);
  });
});
