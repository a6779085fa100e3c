import { Readable, type PassThrough } from 'node:stream';
import { beforeEach, describe, expect, it } from '@jest/globals';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import {
  getJson,
  JsonlObjectWriter,
  openObject,
  putJson,
  putJsonl,
  readLines,
  type ReadLinesOptions,
} from '../../../../lambda/shared/s3-jsonl';
import { awsError, FakeS3 } from '../helpers';
import { useClientMocks } from '../../../support/aws-mocks';
import { OUTPUT_BUCKET as BUCKET } from '../../../support/names';

const [s3Mock] = useClientMocks(S3Client);
let s3: FakeS3;

beforeEach(() => {
  s3 = new FakeS3(s3Mock).install();
});

describe('JsonlObjectWriter', () => {
  it('writes a small object in one PutObject as JSON lines', async () => {
    const writer = new JsonlObjectWriter(new S3Client({}), BUCKET, 'runs/r/items.jsonl');
    await writer.write({ a: 1 });
    await writer.write({ b: 'two' });
    expect(await writer.close()).toEqual({ lines: 2, bytes: 20 });
    expect(s3.text(BUCKET, 'runs/r/items.jsonl')).toBe('{"a":1}\n{"b":"two"}\n');
    expect(s3Mock).toHaveReceivedCommandWith(PutObjectCommand, {
      Bucket: BUCKET,
      Key: 'runs/r/items.jsonl',
      ContentType: 'application/x-ndjson',
    });
    expect(s3Mock).not.toHaveReceivedCommand(CreateMultipartUploadCommand);
  });

  it('writes an empty object when nothing was written', async () => {
    const writer = new JsonlObjectWriter(new S3Client({}), BUCKET, 'empty.jsonl');
    expect(await writer.close()).toEqual({ lines: 0, bytes: 0 });
    expect(s3.text(BUCKET, 'empty.jsonl')).toBe('');
  });

  it('switches to a multipart upload past one part (5 MiB) and keeps every line in order', async () => {
    const writer = new JsonlObjectWriter(new S3Client({}), BUCKET, 'big.jsonl');
    const pad = 'x'.repeat(1000);
    for (let i = 0; i < 9000; i++) await writer.write({ i, pad });
    await writer.close();
    expect(s3Mock).toHaveReceivedCommandTimes(CreateMultipartUploadCommand, 1);
    expect(s3Mock).toHaveReceivedCommandTimes(UploadPartCommand, 2);
    expect(s3Mock).toHaveReceivedCommandTimes(CompleteMultipartUploadCommand, 1);
    const lines = s3.lines<{ i: number }>(BUCKET, 'big.jsonl');
    expect(lines).toHaveLength(9000);
    expect(lines.every((l, idx) => l.i === idx)).toBe(true);
  });

  it('takes lines that are already bytes, between other lines, in order and counted', async () => {
    const writer = new JsonlObjectWriter(new S3Client({}), BUCKET, 'bytes.jsonl');
    await writer.write({ a: 1 });
    await writer.writeLines(Buffer.from('{"b":2}\n{"c":3}\n'), 2);
    await writer.writeLines(Buffer.alloc(0), 0);
    await writer.writeLine('{"d":4}');
    expect(await writer.close()).toEqual({ lines: 4, bytes: 32 });
    expect(s3.text(BUCKET, 'bytes.jsonl')).toBe('{"a":1}\n{"b":2}\n{"c":3}\n{"d":4}\n');
  });

  it('surfaces a throttled upload (503) as TransientDependencyError from close()', async () => {
    s3Mock.on(PutObjectCommand).rejects(awsError('SlowDown', 503, 'Please reduce your request rate.'));
    const writer = new JsonlObjectWriter(new S3Client({}), BUCKET, 'k.jsonl');
    await writer.write({ a: 1 });
    await expect(writer.close()).rejects.toMatchObject({
      name: 'TransientDependencyError',
      message: 'S3 upload failed transiently: Please reduce your request rate.',
    });
  });

  it('rethrows a permanent upload failure as it is', async () => {
    s3Mock.on(PutObjectCommand).rejects(awsError('AccessDenied', 403, 'Access Denied'));
    const writer = new JsonlObjectWriter(new S3Client({}), BUCKET, 'k.jsonl');
    await expect(writer.close()).rejects.toMatchObject({ name: 'AccessDenied' });
  });

  it('does not pile up stream listeners while it waits for back-pressure to ease', async () => {
    // White-box: force every write to report a full buffer, then let it drain, as a slow upload would.
    const writer = new JsonlObjectWriter(new S3Client({}), BUCKET, 'k.jsonl');
    const body = (writer as unknown as { body: PassThrough }).body;
    const realWrite = body.write.bind(body) as (chunk: string) => boolean;
    const closeListeners = body.listenerCount('close');
    body.write = ((chunk: string) => {
      realWrite(chunk);
      setImmediate(() => body.emit('drain'));
      return false;
    }) as typeof body.write;
    for (let i = 0; i < 20; i++) await writer.write({ i });
    expect(body.listenerCount('close')).toBe(closeListeners);
    expect(body.listenerCount('drain')).toBeLessThanOrEqual(1);
    await writer.close();
    expect(s3.lines(BUCKET, 'k.jsonl')).toHaveLength(20);
  });
});

describe('small object helpers', () => {
  it('putJsonl writes one line per value, and nothing for none', async () => {
    await putJsonl(new S3Client({}), BUCKET, 'a.jsonl', [{ x: 1 }, { y: 2 }]);
    await putJsonl(new S3Client({}), BUCKET, 'b.jsonl', []);
    expect(s3.text(BUCKET, 'a.jsonl')).toBe('{"x":1}\n{"y":2}\n');
    expect(s3.text(BUCKET, 'b.jsonl')).toBe('');
  });

  it('putJson and getJson round-trip; getJson gives undefined for a missing key', async () => {
    await putJson(new S3Client({}), BUCKET, 'p.json', { a: [1, 2] });
    expect(await getJson(new S3Client({}), BUCKET, 'p.json')).toEqual({ a: [1, 2] });
    expect(await getJson(new S3Client({}), BUCKET, 'missing.json')).toBeUndefined();
  });

  it('openObject gives undefined for a missing key and maps a 503 to TransientDependencyError', async () => {
    expect(await openObject(new S3Client({}), BUCKET, 'missing')).toBeUndefined();
    s3Mock.on(GetObjectCommand).rejects(awsError('InternalError', 500));
    await expect(openObject(new S3Client({}), BUCKET, 'x')).rejects.toMatchObject({
      name: 'TransientDependencyError',
    });
  });

  it('readLines yields raw lines, CRLF folded, BOM left for the caller', async () => {
    const lines: string[] = [];
    for await (const line of readLines(Readable.from(['\ufeffa\r\n', 'b\n\nc']))) lines.push(line);
    expect(lines).toEqual(['\ufeffa', 'b', '', 'c']);
  });
});

describe('readLines with a line limit', () => {
  /** The lines readLines yields for these chunks, with these options. */
  async function lines(chunks: (string | Buffer)[], options?: ReadLinesOptions): Promise<string[]> {
    const out: string[] = [];
    for await (const line of readLines(Readable.from(chunks), options)) out.push(line);
    return out;
  }

  it('yields exactly what readLines without a limit yields, whatever the line ends and chunk cuts', async () => {
    const alphabet = ['\n', '\r', '\r\n', 'a', 'é', '😀', ' ', '{}'];
    let seed = 3;
    const next = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let round = 0; round < 400; round++) {
      const text = Array.from({ length: next() % 14 }, () => alphabet[next() % alphabet.length]).join('');
      const bytes = Buffer.from(text);
      // Cut anywhere, inside multi-byte characters and between a CR and its LF too.
      const cuts = [0, ...Array.from({ length: next() % 4 }, () => next() % (bytes.length + 1))].sort(
        (x, y) => x - y,
      );
      const chunks = cuts
        .map((c, i) => bytes.subarray(c, cuts[i + 1] ?? bytes.length))
        .filter((c) => c.length);
      expect([JSON.stringify(text), await lines(chunks, { maxLineBytes: 1000 })]).toEqual([
        JSON.stringify(text),
        await lines([bytes]),
      ]);
    }
  });

  it('yields an empty line in place of a line over the limit and says which and how long', async () => {
    const told: { line: number; bytes: number }[] = [];
    const long = 'é'.repeat(30);
    const got = await lines(
      ['ok\r', '\n', long.slice(0, 7), long.slice(7), '\r', '\nafter\r', long, '\nend'],
      {
        maxLineBytes: 50,
        onLineTooLong: (l) => told.push(l),
      },
    );
    expect(got).toEqual(['ok', '', 'after', '', 'end']);
    expect(told).toEqual([
      { line: 2, bytes: 60 },
      { line: 4, bytes: 60 },
    ]);
  });

  it('holds no more than the limit and a chunk of a 64 MiB line streamed in 64 KiB chunks', async () => {
    const CHUNK = 64 * 1024;
    const LINE = 64 * 1024 * 1024;
    const LIMIT = 1024 * 1024;
    let generated = 0;
    async function* corpus(): AsyncGenerator<Buffer> {
      yield Buffer.from('first\n');
      const filler = Buffer.alloc(CHUNK, 0x62);
      for (; generated < LINE; generated += CHUNK) yield filler;
      yield Buffer.from('\r\nlast');
    }
    const stats = { maxBufferedChars: 0 };
    const told: { line: number; bytes: number }[] = [];
    const got: string[] = [];
    for await (const line of readLines(Readable.from(corpus()), {
      maxLineBytes: LIMIT,
      onLineTooLong: (l) => told.push(l),
      stats,
    })) {
      got.push(line);
    }
    expect(generated).toBe(LINE);
    expect(got).toEqual(['first', '', 'last']);
    expect(told).toEqual([{ line: 2, bytes: LINE }]);
    expect(stats.maxBufferedChars).toBeLessThanOrEqual(LIMIT + CHUNK);
    expect(stats.maxBufferedChars).toBeGreaterThan(LIMIT);
  });
});
