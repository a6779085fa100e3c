// concatenateObjects against the S3 emulator (s3rver with UploadPartCopy, and S3's 5 MiB minimum part enforced at
// CompleteMultipartUpload), with the real SDK: the result must equal the in-memory concatenation byte for byte.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';

import {
  LOCAL_CREDENTIALS,
  startS3Emulator,
  type S3Emulator,
} from '@corpus-pipeline/local-aws/cloud/emulators';
import {
  ConcatenationError,
  concatenateObjects,
  type ConcatOptions,
  type ConcatPiece,
} from '../../../../lambda/shared/s3-concat';

const BUCKET = 'concat-bucket';
const MIB = 1024 * 1024;
/** The smallest streamed part, so the tests move as few bytes as S3's minimum allows. */
const FAST: ConcatOptions = { partBytes: 5 * MIB };

let stateDir: string;
let s3: S3Emulator;
let client: S3Client;
let nextKey = 0;

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 's3-concat-'));
  s3 = await startS3Emulator({ directory: stateDir });
  client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, credentials: LOCAL_CREDENTIALS });
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
});

afterAll(async () => {
  client.destroy();
  await s3.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

/** JSON lines of about `bytes` bytes (each line names its piece and number, so a misplaced line shows). */
function jsonl(name: string, bytes: number, lineBytes = 100): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const head = `{"piece":"${name}","line":${i},"pad":"`;
    const line = `${head}${'x'.repeat(Math.max(0, lineBytes - head.length - 3))}"}\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join(''));
}

/** A piece stored under a fresh key, with what it contributes to the concatenation. */
async function piece(
  content: Buffer,
  dropLines?: readonly number[],
): Promise<ConcatPiece & { content: Buffer }> {
  const key = `runs/r/plan/segments/${nextKey++}/items.jsonl`;
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: content }));
  return {
    key,
    size: content.length,
    content,
    ...(dropLines === undefined ? {} : { dropLines: new Set(dropLines) }),
  };
}

/** The in-memory concatenation, leaving out the dropped lines (a last line without LF counts). */
function expected(pieces: readonly (ConcatPiece & { content: Buffer })[]): Buffer {
  return Buffer.concat(
    pieces.map(({ content, dropLines }) => {
      if (dropLines === undefined) return content;
      const lines: Buffer[] = [];
      let start = 0;
      for (let ordinal = 0; start < content.length; ordinal++) {
        const lf = content.indexOf(0x0a, start);
        const end = lf === -1 ? content.length : lf + 1;
        if (!dropLines.has(ordinal)) lines.push(content.subarray(start, end));
        start = end;
      }
      return Buffer.concat(lines);
    }),
  );
}

async function read(key: string): Promise<Buffer> {
  const out = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function concatAndCheck(
  target: string,
  pieces: readonly (ConcatPiece & { content: Buffer })[],
  options: ConcatOptions = FAST,
) {
  const result = await concatenateObjects(client, BUCKET, target, pieces, options);
  const want = expected(pieces);
  const got = await read(target);
  expect(got.length).toBe(want.length);
  expect(got.equals(want)).toBe(true);
  expect(result.bytes).toBe(want.length);
  expect(result.copiedBytes + result.streamedBytes).toBe(want.length);
  return result;
}

describe('concatenateObjects', () => {
  it('writes zero pieces, and empty pieces, as an empty object in one PutObject', async () => {
    expect(await concatAndCheck('out/none.jsonl', [])).toEqual({
      bytes: 0,
      parts: 0,
      copiedBytes: 0,
      streamedBytes: 0,
    });
    const empties = [await piece(Buffer.alloc(0)), await piece(Buffer.alloc(0), [0])];
    expect((await concatAndCheck('out/empties.jsonl', empties)).parts).toBe(0);
  });

  it('writes many small pieces in one PutObject, with its Content-Type', async () => {
    const pieces = await Promise.all(Array.from({ length: 40 }, (_, i) => piece(jsonl(`s${i}`, 2_000))));
    const result = await concatenateObjects(client, BUCKET, 'out/small.jsonl', pieces, {
      ...FAST,
      contentType: 'application/x-ndjson',
    });
    expect(result).toMatchObject({ parts: 0, copiedBytes: 0 });
    expect((await read('out/small.jsonl')).equals(expected(pieces))).toBe(true);
    const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'out/small.jsonl' }));
    expect(head.ContentType).toBe('application/x-ndjson');
  });

  it('streams small pieces past one part in parts of partBytes, the last smaller', async () => {
    const pieces = await Promise.all(Array.from({ length: 30 }, (_, i) => piece(jsonl(`m${i}`, 400_000))));
    const result = await concatAndCheck('out/many.jsonl', pieces);
    expect(result).toMatchObject({ parts: 3, copiedBytes: 0 });
  });

  it('copies big pieces server-side, whole', async () => {
    const pieces = [await piece(jsonl('b0', 6 * MIB)), await piece(jsonl('b1', 5 * MIB + 1))];
    const result = await concatAndCheck('out/big.jsonl', pieces);
    expect(result).toEqual({
      bytes: pieces[0]!.size + pieces[1]!.size,
      parts: 2,
      copiedBytes: pieces[0]!.size + pieces[1]!.size,
      streamedBytes: 0,
    });
  });

  it('small, big, small: reads just enough of the big piece to make the pending part 5 MiB, copies the rest', async () => {
    const pieces = [
      await piece(jsonl('a', 3_000)),
      await piece(jsonl('big', 12 * MIB)),
      await piece(jsonl('c', 3_000)),
    ];
    const result = await concatAndCheck('out/mixed.jsonl', pieces);
    const topUp = 5 * MIB - pieces[0]!.size;
    expect(result).toEqual({
      bytes: result.bytes,
      parts: 3,
      copiedBytes: pieces[1]!.size - topUp,
      streamedBytes: pieces[0]!.size + topUp + pieces[2]!.size,
    });
  });

  it('streams a big piece whose rest after the top-up would be under the minimum part', async () => {
    const pieces = [await piece(jsonl('a', 1 * MIB)), await piece(jsonl('big', 8 * MIB))];
    const result = await concatAndCheck('out/short-rest.jsonl', pieces);
    expect(result.copiedBytes).toBe(0);
  });

  it('uploads pending bytes past the minimum as their own part before a copy', async () => {
    const pieces = [
      await piece(jsonl('a', 3 * MIB)),
      await piece(jsonl('b', 3 * MIB)),
      await piece(jsonl('big', 5 * MIB + 10)),
    ];
    const result = await concatAndCheck('out/pending-part.jsonl', pieces, { partBytes: 8 * MIB });
    expect(result).toMatchObject({
      parts: 2,
      copiedBytes: pieces[2]!.size,
      streamedBytes: pieces[0]!.size + pieces[1]!.size,
    });
  });

  it('copies a piece larger than the largest part in even parts', async () => {
    const pieces = [await piece(jsonl('huge', 25 * MIB))];
    const result = await concatAndCheck('out/split.jsonl', pieces, {
      partBytes: 5 * MIB,
      maxPartBytes: 10 * MIB,
    });
    expect(result).toMatchObject({ parts: 3, copiedBytes: pieces[0]!.size, streamedBytes: 0 });
  });

  it('leaves out dropped lines: first, middle, last, every line, and the last line of a piece without final LF', async () => {
    const ten = jsonl('d', 1_000); // 10 lines of 100 bytes
    const noFinalLf = Buffer.from('{"n":0}\n{"n":1}\n{"n":2}');
    const pieces = [
      await piece(ten, [0]),
      await piece(ten, [4, 5, 7]),
      await piece(ten, [9]),
      await piece(ten, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
      await piece(noFinalLf, [2]),
      await piece(noFinalLf, [1]),
      await piece(ten, []),
    ];
    const result = await concatAndCheck('out/drops.jsonl', pieces);
    expect(result.parts).toBe(0);
  });

  it('streams a big piece with drops (lines spanning chunks), around copied pieces', async () => {
    const big = jsonl('big', 11 * MIB, 70_000);
    const lines = big.toString().split('\n').length - 1;
    const pieces = [
      await piece(jsonl('a', 6 * MIB)),
      await piece(big, [0, 3, 50, lines - 1]),
      await piece(jsonl('c', 11 * MIB)),
      await piece(jsonl('d', 100), [0]),
    ];
    const result = await concatAndCheck('out/big-drops.jsonl', pieces);
    expect(result.copiedBytes).toBeGreaterThan(0);
  });

  it('appends byte ranges of objects: copied server-side when large, streamed when small', async () => {
    const big = await piece(jsonl('r', 16 * MIB));
    const cut = big.content.indexOf(0x0a, 7 * MIB) + 1;
    const small = big.content.indexOf(0x0a, cut + 500) + 1;
    // The ranges around two left-out stretches of the same object: [0, cut), [small, end) and a small one in between.
    const ranges = [
      { key: big.key, offset: 0, size: cut },
      { key: big.key, offset: cut + 100, size: small - cut - 100 },
      { key: big.key, offset: small, size: big.size - small },
    ];
    const result = await concatenateObjects(client, BUCKET, 'out/ranges.jsonl', ranges, FAST);
    const want = Buffer.concat(ranges.map((r) => big.content.subarray(r.offset, r.offset + r.size)));
    expect((await read('out/ranges.jsonl')).equals(want)).toBe(true);
    expect(result.bytes).toBe(want.length);
    // The small range leaves a pending part under S3's minimum: the next range tops it up to 5 MiB, the rest is copied.
    expect(result.copiedBytes).toBe(want.length - result.streamedBytes);
    expect(result.streamedBytes).toBeLessThanOrEqual(cut + 5 * MIB);
    expect(result.copiedBytes).toBeGreaterThan(3 * MIB);
  });

  it('aborts and rethrows when a piece is missing, leaving no target', async () => {
    const pieces = [await piece(jsonl('a', 6 * MIB)), { key: 'runs/r/missing.jsonl', size: 10 }];
    await expect(concatenateObjects(client, BUCKET, 'out/missing.jsonl', pieces, FAST)).rejects.toMatchObject(
      {
        name: 'NoSuchKey',
      },
    );
    await expect(read('out/missing.jsonl')).rejects.toMatchObject({ name: 'NoSuchKey' });
  });

  it('refuses a piece that is not the size its writer gave', async () => {
    const real = await piece(jsonl('a', 1_000));
    await expect(
      concatenateObjects(client, BUCKET, 'out/wrong-size.jsonl', [{ ...real, size: real.size + 1 }], FAST),
    ).rejects.toThrow(ConcatenationError);
    await expect(
      concatenateObjects(client, BUCKET, 'out/wrong-size.jsonl', [
        await piece(jsonl('z', 10)),
        { ...real, size: 6 * MIB },
      ]),
    ).rejects.toThrow(/is 1000 bytes, not the 6291456/);
  });

  it('throws a clear error past the most parts, and aborts', async () => {
    const pieces = [await piece(jsonl('a', 6 * MIB)), await piece(jsonl('b', 6 * MIB))];
    await expect(
      concatenateObjects(client, BUCKET, 'out/too-many.jsonl', pieces, { ...FAST, maxParts: 1 }),
    ).rejects.toThrow(/needs more than 1 parts/);
    await expect(read('out/too-many.jsonl')).rejects.toMatchObject({ name: 'NoSuchKey' });
  });
});
