import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import {
  LOCAL_CREDENTIALS,
  startS3Emulator,
  type S3Emulator,
} from '@corpus-pipeline/local-aws/cloud/emulators';
import type { CorpusSource } from '../../../../lambda/plan/corpus-sources';
import { countLines as countBlockLines, parseBlock } from '../../../../lambda/plan/parse-pool';
import {
  countLines,
  cutSegments,
  MAX_PARTS_PER_SEGMENT,
  openRangeFromS3,
  ownedBytes,
  SourceChangedError,
  type OpenRange,
  type SegmentPart,
} from '../../../../lambda/plan/segments';
import type { PromptSettings } from '../../../../lambda/shared/records';
import { mulberry32 } from '@corpus-pipeline/local-aws/bedrock-simulator/engine';

const PROMPT: PromptSettings = { template: 'Answer: {{text}}', maxTokens: 64 };
const MAX_CHUNK = 9;

/** What an in-memory opener did: the object offset past the last chunk it handed out, and whether it was closed. */
interface OpenLog {
  opens: string[];
  readTo: number;
  finished: boolean;
  closedEarly: boolean;
}

/**
 * An OpenRange over bytes in memory, answering `bytes=N-` with the bytes from N in chunks of 1 to MAX_CHUNK bytes
 * (random when a PRNG is given), logging how far it was read.
 */
function memoryOpener(object: Buffer, random?: () => number): { open: OpenRange; log: OpenLog } {
  const log: OpenLog = { opens: [], readTo: -1, finished: false, closedEarly: false };
  const open: OpenRange = (range) => {
    log.opens.push(range);
    const from = Number(/^bytes=(\d+)-$/.exec(range)?.[1]);
    if (!Number.isInteger(from) || from >= object.length) throw new Error(`bad range ${range}`);
    log.readTo = from;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      let at = from;
      try {
        while (at < object.length) {
          const n = random ? 1 + Math.floor(random() * MAX_CHUNK) : MAX_CHUNK;
          const chunk = object.subarray(at, at + n);
          at += chunk.length;
          log.readTo = at;
          // Plain Uint8Arrays (not Buffers), as some bodies are.
          yield new Uint8Array(chunk);
        }
        log.finished = true;
      } finally {
        if (!log.finished) log.closedEarly = true;
      }
    }
    return Promise.resolve(chunks());
  };
  return { open, log };
}

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return Buffer.concat(out);
}

async function* once(...chunks: string[]): AsyncGenerator<Buffer> {
  for (const chunk of chunks) yield Buffer.from(chunk);
}

/** The text the part [start, end) of `text` owns, read through an in-memory opener. */
async function owned(text: string, start: number, end: number): Promise<{ text: string; log: OpenLog }> {
  const object = Buffer.from(text);
  const { open, log } = memoryOpener(object);
  const bytes = await collect(ownedBytes(open, { start, end, size: object.length }));
  return { text: bytes.toString(), log };
}

const source = (key: string, size: number, extra: Partial<CorpusSource> = {}): CorpusSource => ({
  key,
  size,
  gzip: false,
  ...extra,
});

/** A segment's parts as `source:start-end` strings. */
const shape = (segments: ReturnType<typeof cutSegments>): string[][] =>
  segments.map((s) => s.parts.map((p) => `${p.source}:${p.start}-${p.end}`));

describe('cutSegments', () => {
  it('packs whole sources greedily, in order, into segments of up to segmentBytes', () => {
    const segments = cutSegments(
      [source('a', 40), source('b', 50), source('c', 20), source('d', 100), source('e', 0), source('f', 1)],
      100,
      new Set(),
    );
    expect(shape(segments)).toEqual([['0:0-40', '1:0-50'], ['2:0-20'], ['3:0-100', '4:0-0'], ['5:0-1']]);
    expect(segments.map((s) => s.index)).toEqual([0, 1, 2, 3]);
    expect(segments.map((s) => s.bytes)).toEqual([90, 20, 100, 1]);
    expect(segments[0]!.parts[0]).toEqual({ source: 0, key: 'a', size: 40, gzip: false, start: 0, end: 40 });
  });

  it('cuts a large splittable source into equal byte ranges, each a segment of its own', () => {
    const segments = cutSegments(
      [source('a', 10), source('big', 1000, { etag: 'e1' }), source('b', 10)],
      300,
      new Set([1]),
    );
    expect(shape(segments)).toEqual([
      ['0:0-10'],
      ['1:0-250'],
      ['1:250-500'],
      ['1:500-750'],
      ['1:750-1000'],
      ['2:0-10'],
    ]);
    expect(segments[1]!.parts[0]).toMatchObject({ key: 'big', etag: 'e1', size: 1000 });
  });

  it('ranges are ceil(size / segmentBytes), contiguous, at most segmentBytes, sizes within one byte', () => {
    const random = mulberry32(3);
    for (let round = 0; round < 200; round++) {
      const size = 1 + Math.floor(random() * 100_000);
      const segmentBytes = 1 + Math.floor(random() * size);
      const segments = cutSegments([source('s', size)], segmentBytes, new Set([0]));
      const ranges = segments.map((s) => s.parts[0]!);
      expect(segments.every((s) => s.parts.length === 1)).toBe(true);
      if (size > segmentBytes) expect(ranges).toHaveLength(Math.ceil(size / segmentBytes));
      else expect(ranges).toHaveLength(1);
      expect(ranges[0]!.start).toBe(0);
      expect(ranges.at(-1)!.end).toBe(size);
      ranges.forEach((r, i) => i > 0 && expect(r.start).toBe(ranges[i - 1]!.end));
      const lengths = ranges.map((r) => r.end - r.start);
      expect(Math.max(...lengths)).toBeLessThanOrEqual(segmentBytes);
      expect(Math.max(...lengths) - Math.min(...lengths)).toBeLessThanOrEqual(1);
      expect(segments.map((s) => s.bytes)).toEqual(lengths);
    }
  });

  it('keeps gzip and unsplittable sources whole, alone when larger than segmentBytes', () => {
    const segments = cutSegments(
      [source('a', 10), source('big.gz', 500, { gzip: true }), source('big', 500), source('b', 10)],
      100,
      new Set([1]),
    );
    expect(shape(segments)).toEqual([['0:0-10'], ['1:0-500'], ['2:0-500'], ['3:0-10']]);
  });

  it('puts at most MAX_PARTS_PER_SEGMENT parts in a segment, empty sources included', () => {
    const sources = Array.from({ length: 2 * MAX_PARTS_PER_SEGMENT + 7 }, (_, i) => source(`s${i}`, i % 2));
    const segments = cutSegments(sources, 1_000_000, new Set());
    expect(segments.map((s) => s.parts.length)).toEqual([MAX_PARTS_PER_SEGMENT, MAX_PARTS_PER_SEGMENT, 7]);
    expect(segments.flatMap((s) => s.parts.map((p) => p.source))).toEqual(sources.map((_, i) => i));
  });

  it('is deterministic and lists every source, in order', () => {
    const random = mulberry32(11);
    const sources = Array.from({ length: 300 }, (_, i) =>
      source(`s${i}`, Math.floor(random() ** 4 * 5000), { gzip: random() < 0.2 }),
    );
    const splittable = new Set(sources.map((_, i) => i).filter((i) => i % 3 !== 0));
    const segments = cutSegments(sources, 700, splittable);
    expect(cutSegments(sources, 700, splittable)).toEqual(segments);
    const seen = segments.flatMap((s) => s.parts.map((p) => p.source));
    expect([...new Set(seen)]).toEqual(sources.map((_, i) => i));
    for (const s of segments) {
      expect(s.bytes).toBe(s.parts.reduce((n, p) => n + p.end - p.start, 0));
      if (s.parts.length > 1) expect(s.bytes).toBeLessThanOrEqual(700);
    }
  });

  it('refuses a segment size that is not a positive integer', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => cutSegments([source('a', 1)], bad, new Set())).toThrow(RangeError);
    }
  });
});

describe('ownedBytes', () => {
  it('a part owns the lines that start in its range', async () => {
    const text = 'ab\ncd\nef';
    expect((await owned(text, 0, 1)).text).toBe('ab\n');
    expect((await owned(text, 1, 4)).text).toBe('cd\n');
    expect((await owned(text, 4, 7)).text).toBe('ef');
    expect((await owned(text, 4, 8)).text).toBe('ef');
    expect((await owned(text, 0, 8)).text).toBe(text);
  });

  it('an LF at start-1 starts a line at start; an LF at end-1 ends the last line owned', async () => {
    const text = 'ab\ncd\nef\n';
    // Byte 2 (start-1) is an LF: the part begins at its start. Byte 5 (end-1) is an LF: the part ends after it.
    expect((await owned(text, 3, 6)).text).toBe('cd\n');
    expect((await owned(text, 0, 3)).text).toBe('ab\n');
    expect((await owned(text, 6, 9)).text).toBe('ef\n');
    // Byte 3 (start-1) is not an LF: the line cd started before, and ef starts at 6, outside [4, 6).
    expect((await owned(text, 4, 6)).text).toBe('');
    expect((await owned(text, 4, 7)).text).toBe('ef\n');
  });

  it('a CRLF across the boundary ends at its LF: the cut is after the LF', async () => {
    const text = 'ab\r\ncd\r\n';
    // The CR is byte 2 (end-1 of the first part), its LF byte 3.
    expect((await owned(text, 0, 3)).text).toBe('ab\r\n');
    expect((await owned(text, 3, 8)).text).toBe('cd\r\n');
    expect((await owned(text, 0, 4)).text).toBe('ab\r\n');
    expect((await owned(text, 4, 8)).text).toBe('cd\r\n');
  });

  it('never cuts at a lone CR: a CR-only file is owned whole by its first part', async () => {
    const text = 'a\rb\rc\rd';
    expect((await owned(text, 0, 2)).text).toBe(text);
    expect((await owned(text, 2, 5)).text).toBe('');
    expect((await owned(text, 5, 8)).text).toBe('');
  });

  it('a range inside one long line owns nothing and stops reading at its end', async () => {
    const text = `${'x'.repeat(100)}\n${'y'.repeat(100)}\n`;
    const { text: got, log } = await owned(text, 20, 40);
    expect(got).toBe('');
    expect(log.readTo).toBeLessThanOrEqual(40 + MAX_CHUNK);
    expect(log.closedEarly).toBe(true);
    // The part holding the LF at 100 owns the line after it, up to the next LF.
    expect((await owned(text, 40, 120)).text).toBe(`${'y'.repeat(100)}\n`);
    expect((await owned(text, 120, 202)).text).toBe('');
  });

  it('reads one ranged GET from start-1, and stops once past its end', async () => {
    const text = Array.from({ length: 50 }, (_, i) => `line ${i}`).join('\n');
    const { text: got, log } = await owned(text, 30, 60);
    expect(log.opens).toEqual(['bytes=29-']);
    expect(got.startsWith('line ')).toBe(true);
    expect(got.endsWith('\n')).toBe(true);
    expect(log.readTo).toBeLessThan(70 + MAX_CHUNK);
    expect(log.closedEarly).toBe(true);
    expect((await owned(text, 0, 10)).log.opens).toEqual(['bytes=0-']);
  });

  it("reads the object's last line without an LF to the object's end", async () => {
    const { text, log } = await owned('ab\ncd', 2, 5);
    expect(text).toBe('cd');
    expect(log.finished).toBe(true);
  });

  it('an empty object or an empty range reads nothing', async () => {
    const { open, log } = memoryOpener(Buffer.alloc(0));
    expect(await collect(ownedBytes(open, { start: 0, end: 0, size: 0 }))).toHaveLength(0);
    expect(log.opens).toEqual([]);
    expect((await owned('ab\n', 2, 2)).log.opens).toEqual([]);
  });

  it('fails when the object is shorter or longer than its listed size', async () => {
    const { open } = memoryOpener(Buffer.from('ab\ncd'));
    await expect(collect(ownedBytes(open, { start: 0, end: 9, size: 9 }))).rejects.toThrow(
      SourceChangedError,
    );
    await expect(collect(ownedBytes(open, { start: 2, end: 3, size: 3 }))).rejects.toThrow(
      SourceChangedError,
    );
  });
});

describe('countLines', () => {
  it('counts as parseBlock does, a CR at a chunk end followed by an LF being one line end', async () => {
    expect(await countLines(once())).toBe(0);
    expect(await countLines(once('', ''))).toBe(0);
    expect(await countLines(once('a'))).toBe(1);
    expect(await countLines(once('\n'))).toBe(1);
    expect(await countLines(once('a\r', '\nb'))).toBe(2);
    expect(await countLines(once('a\r', 'b'))).toBe(2);
    expect(await countLines(once('a\r'))).toBe(1);
    expect(await countLines(once('a\r', '', '\n'))).toBe(1);
    expect(await countLines(once('\r', '\r', '\r'))).toBe(3);
    expect(await countLines(once('a\n\n', '\r\n'))).toBe(3);
  });

  it('agrees with parseBlock for any text cut into any chunks', async () => {
    const random = mulberry32(5);
    const alphabet = ['\n', '\r', '\r\n', 'a', '{}', ' ', 'é'];
    for (let round = 0; round < 500; round++) {
      const text = Array.from(
        { length: Math.floor(random() * 12) },
        () => alphabet[Math.floor(random() * alphabet.length)],
      ).join('');
      const bytes = Buffer.from(text);
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length;) {
        const n = Math.floor(random() * 4);
        chunks.push(bytes.subarray(at, at + n));
        at += n;
      }
      async function* raw(): AsyncGenerator<Buffer> {
        yield* chunks;
      }
      expect([JSON.stringify(text), await countLines(raw())]).toEqual([
        JSON.stringify(text),
        parseBlock(bytes, 1, PROMPT).lines,
      ]);
    }
  });
});

/** A random text: lines of ASCII, multibyte UTF-8 and JSON, some blank, some long, ended by LF, CRLF or a lone CR. */
function randomText(random: () => number): Buffer {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const words = ['a', 'hello', 'é', '€uro', '日本語', '😀', '{"id":"x","text":"y"}', ' ', '\t', '"'];
  const lineEnds = ['\n', '\n', '\n', '\r\n', '\r'];
  const lines = Math.floor(random() * 12);
  let text = '';
  for (let i = 0; i < lines; i++) {
    const kind = random();
    if (kind < 0.15) text += '';
    else if (kind < 0.25) text += pick(words).repeat(50 + Math.floor(random() * 200));
    else text += Array.from({ length: 1 + Math.floor(random() * 6) }, () => pick(words)).join('');
    // The last line has no end sometimes.
    if (i < lines - 1 || random() < 0.6) text += pick(lineEnds);
  }
  if (random() < 0.05) text = text.replace(/\n/g, '\r');
  return Buffer.from(text);
}

/** Random cuts of [0, size): sorted, distinct, from 0 to size. */
function randomRanges(size: number, random: () => number): Pick<SegmentPart, 'start' | 'end' | 'size'>[] {
  const cuts = new Set([0, size]);
  const n = Math.floor(random() * 6);
  for (let i = 0; i < n; i++) cuts.add(Math.floor(random() * size));
  const sorted = [...cuts].sort((a, b) => a - b);
  return sorted.slice(1).map((end, i) => ({ start: sorted[i]!, end, size }));
}

describe('ownedBytes and countLines over random texts', () => {
  it('the parts of an object own it all, once, in whole lines counted as parseBlock counts them', async () => {
    const random = mulberry32(2024);
    for (let round = 0; round < 400; round++) {
      const object = randomText(random);
      const size = object.length;
      const segmentBytes = 1 + Math.floor(random() * Math.max(1, size));
      const fromSegments = cutSegments([{ key: 'k', size, gzip: false }], segmentBytes, new Set([0])).map(
        (s) => s.parts[0]!,
      );
      const wholeLines = parseBlock(object, 1, PROMPT).lines;
      expect(await countLines(once(object.toString()))).toBe(wholeLines);
      for (const parts of [fromSegments, randomRanges(size, random)]) {
        const owned: Buffer[] = [];
        let lines = 0;
        let ownedEnd = 0;
        for (const part of parts) {
          const { open, log } = memoryOpener(object, random);
          const bytes = await collect(ownedBytes(open, part));
          owned.push(bytes);
          ownedEnd += bytes.length;
          const counted = await countLines(ownedBytes(memoryOpener(object, random).open, part));
          const context = { text: object.toString(), part };
          expect({ ...context, counted }).toEqual({
            ...context,
            counted: parseBlock(bytes, 1, PROMPT).lines,
          });
          expect(countBlockLines(bytes)).toBe(counted);
          lines += counted;
          // Parts are cut at LF only (or the object's end), and never read far past their end.
          if (bytes.length > 0 && ownedEnd < size) expect(bytes.at(-1)).toBe(0x0a);
          if (size > 0) expect(log.readTo).toBeLessThanOrEqual(Math.max(ownedEnd, part.end) + MAX_CHUNK);
        }
        expect(Buffer.concat(owned).equals(object)).toBe(true);
        expect(lines).toBe(wholeLines);
      }
    }
  });
});

describe('openRangeFromS3', () => {
  const BUCKET = 'segments';
  let stateDir: string;
  let emulator: S3Emulator;
  let s3: S3Client;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'segments-'));
    emulator = await startS3Emulator({ directory: join(stateDir, 's3') });
    s3 = new S3Client({ region: 'us-east-1', endpoint: emulator.endpoint, credentials: LOCAL_CREDENTIALS });
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
  });

  afterAll(async () => {
    s3.destroy();
    await emulator.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('reads the lines of each part with ranged GetObjects, the parts together being the object', async () => {
    const random = mulberry32(9);
    const object = Buffer.concat(Array.from({ length: 20 }, () => randomText(random)));
    const put = await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'c/a.jsonl', Body: object }));
    const etag = put.ETag!.replace(/"/g, '');
    const segments = cutSegments(
      [{ key: 'c/a.jsonl', size: object.length, etag, gzip: false }],
      Math.ceil(object.length / 7),
      new Set([0]),
    );
    expect(segments).toHaveLength(7);
    const owned: Buffer[] = [];
    let lines = 0;
    for (const { parts } of segments) {
      const part = parts[0]!;
      const open = openRangeFromS3(s3, BUCKET, part.key, part.etag);
      const bytes = await collect(ownedBytes(open, part));
      owned.push(bytes);
      lines += await countLines(ownedBytes(open, part));
    }
    expect(Buffer.concat(owned).equals(object)).toBe(true);
    expect(lines).toBe(parseBlock(object, 1, PROMPT).lines);
  });

  it('an empty object is never read; a replaced object fails with SourceChangedError', async () => {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'c/empty.jsonl', Body: Buffer.alloc(0) }));
    const open = openRangeFromS3(s3, BUCKET, 'c/empty.jsonl');
    expect(await collect(ownedBytes(open, { start: 0, end: 0, size: 0 }))).toHaveLength(0);

    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'c/b.jsonl', Body: 'ab\ncd\n' }));
    const stale = openRangeFromS3(s3, BUCKET, 'c/b.jsonl', '0123456789abcdef0123456789abcdef');
    await expect(collect(ownedBytes(stale, { start: 3, end: 6, size: 6 }))).rejects.toThrow(
      SourceChangedError,
    );
    const fresh = openRangeFromS3(s3, BUCKET, 'c/b.jsonl');
    expect((await collect(ownedBytes(fresh, { start: 3, end: 6, size: 6 }))).toString()).toBe('cd\n');
  });
});
