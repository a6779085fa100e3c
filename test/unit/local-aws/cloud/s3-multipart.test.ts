// The S3 emulator's multipart additions to s3rver, with the real SDK: UploadPartCopy, AbortMultipartUpload and
// CompleteMultipartUpload's checks (EntityTooSmall, InvalidPart, InvalidPartOrder, NoSuchUpload).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';

import {
  LOCAL_CREDENTIALS,
  S3_MIN_PART_BYTES,
  startS3Emulator,
  type S3Emulator,
} from '@corpus-pipeline/local-aws/cloud/emulators';

const BUCKET = 'multipart-bucket';
const MIB = 1024 * 1024;

let stateDir: string;
let s3: S3Emulator;
let client: S3Client;

/** Bytes that differ by position, so a wrong offset shows. */
function pattern(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) % 251;
  return bytes;
}

async function read(key: string): Promise<Buffer> {
  const out = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

async function createUpload(key: string): Promise<string> {
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  return UploadId!;
}

async function complete(key: string, uploadId: string, etags: readonly (string | undefined)[]) {
  return client.send(
    new CompleteMultipartUploadCommand({
      Bucket: BUCKET,
      Key: key,
      UploadId: uploadId,
      MultipartUpload: { Parts: etags.map((ETag, index) => ({ PartNumber: index + 1, ETag })) },
    }),
  );
}

const big = pattern(6 * MIB, 7);
const small = Buffer.from('one\ntwo\nthree\n');

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(tmpdir(), 's3-multipart-'));
  s3 = await startS3Emulator({ directory: stateDir });
  client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, credentials: LOCAL_CREDENTIALS });
  await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'src/big.bin', Body: big }));
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'src/small file.txt', Body: small }));
});

afterAll(async () => {
  client.destroy();
  await s3.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('UploadPartCopy', () => {
  it('copies whole objects and byte ranges as parts, next to uploaded parts', async () => {
    const key = 'out/copied.bin';
    const uploadedBody = pattern(S3_MIN_PART_BYTES, 3);
    const uploadId = await createUpload(key);
    const whole = await client.send(
      new UploadPartCopyCommand({
        Bucket: BUCKET,
        Key: key,
        UploadId: uploadId,
        PartNumber: 1,
        CopySource: `${BUCKET}/src/big.bin`,
      }),
    );
    expect(whole.CopyPartResult?.ETag).toMatch(/^"[0-9a-f]{32}"$/);
    expect(whole.CopyPartResult?.LastModified).toBeInstanceOf(Date);
    const ranged = await client.send(
      new UploadPartCopyCommand({
        Bucket: BUCKET,
        Key: key,
        UploadId: uploadId,
        PartNumber: 2,
        CopySource: `/${BUCKET}/src/big.bin?versionId=null`,
        CopySourceRange: `bytes=${MIB}-${6 * MIB - 1}`,
      }),
    );
    const uploaded = await client.send(
      new UploadPartCommand({
        Bucket: BUCKET,
        Key: key,
        UploadId: uploadId,
        PartNumber: 3,
        Body: uploadedBody,
      }),
    );
    const oneByte = await client.send(
      new UploadPartCopyCommand({
        Bucket: BUCKET,
        Key: key,
        UploadId: uploadId,
        PartNumber: 4,
        CopySource: encodeURIComponent(`${BUCKET}/src/small file.txt`),
        CopySourceRange: 'bytes=0-0',
      }),
    );
    await complete(key, uploadId, [
      whole.CopyPartResult?.ETag,
      ranged.CopyPartResult?.ETag,
      uploaded.ETag,
      oneByte.CopyPartResult?.ETag,
    ]);
    const expected = Buffer.concat([big, big.subarray(MIB), uploadedBody, small.subarray(0, 1)]);
    expect((await read(key)).equals(expected)).toBe(true);
  });

  it('answers as S3 for a missing source, a range outside the object, a malformed range, a missing upload', async () => {
    const key = 'out/errors.bin';
    const uploadId = await createUpload(key);
    const copy = (input: Partial<ConstructorParameters<typeof UploadPartCopyCommand>[0]>) =>
      client.send(
        new UploadPartCopyCommand({
          Bucket: BUCKET,
          Key: key,
          UploadId: uploadId,
          PartNumber: 1,
          CopySource: `${BUCKET}/src/big.bin`,
          ...input,
        }),
      );
    await expect(copy({ CopySource: `${BUCKET}/src/missing.bin` })).rejects.toMatchObject({
      name: 'NoSuchKey',
      $metadata: { httpStatusCode: 404 },
    });
    await expect(copy({ CopySource: `no-such-bucket/src/big.bin` })).rejects.toMatchObject({
      name: 'NoSuchBucket',
    });
    await expect(copy({ CopySourceRange: `bytes=0-${big.length}` })).rejects.toMatchObject({
      name: 'InvalidArgument',
      message: `Range specified is not valid for source object of size: ${big.length}`,
      $metadata: { httpStatusCode: 400 },
    });
    await expect(copy({ CopySourceRange: 'bytes=10-5' })).rejects.toMatchObject({ name: 'InvalidArgument' });
    await expect(copy({ CopySourceRange: 'bytes=5-' })).rejects.toMatchObject({
      name: 'InvalidArgument',
      message: expect.stringMatching(/must be of the form bytes=first-last/) as unknown,
    });
    await expect(copy({ PartNumber: 10_001 })).rejects.toMatchObject({ name: 'InvalidArgument' });
    await expect(copy({ UploadId: 'feedc0de' })).rejects.toMatchObject({
      name: 'NoSuchUpload',
      $metadata: { httpStatusCode: 404 },
    });
    await expect(copy({ Key: 'out/another-key.bin' })).rejects.toMatchObject({ name: 'NoSuchUpload' });
  });
});

describe('AbortMultipartUpload', () => {
  it('discards the upload: its parts can no longer be added or completed', async () => {
    const key = 'out/aborted.bin';
    const uploadId = await createUpload(key);
    const part = await client.send(
      new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: uploadId, PartNumber: 1, Body: 'x' }),
    );
    await client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: uploadId }));
    await expect(complete(key, uploadId, [part.ETag])).rejects.toMatchObject({ name: 'NoSuchUpload' });
    await expect(
      client.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId: uploadId })),
    ).rejects.toMatchObject({ name: 'NoSuchUpload' });
    await expect(read(key)).rejects.toMatchObject({ name: 'NoSuchKey' });
  });
});

describe('CompleteMultipartUpload', () => {
  async function twoParts(key: string, firstSize: number) {
    const uploadId = await createUpload(key);
    const first = await client.send(
      new UploadPartCommand({
        Bucket: BUCKET,
        Key: key,
        UploadId: uploadId,
        PartNumber: 1,
        Body: pattern(firstSize, 1),
      }),
    );
    const second = await client.send(
      new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId: uploadId, PartNumber: 2, Body: 'end' }),
    );
    return { uploadId, etags: [first.ETag, second.ETag] };
  }

  it('refuses a part but the last under 5 MiB (EntityTooSmall); the last may be any size', async () => {
    const { uploadId, etags } = await twoParts('out/too-small.bin', S3_MIN_PART_BYTES - 1);
    await expect(complete('out/too-small.bin', uploadId, etags)).rejects.toMatchObject({
      name: 'EntityTooSmall',
      $metadata: { httpStatusCode: 400 },
    });
    const ok = await twoParts('out/just-enough.bin', S3_MIN_PART_BYTES);
    await complete('out/just-enough.bin', ok.uploadId, ok.etags);
    expect((await read('out/just-enough.bin')).length).toBe(S3_MIN_PART_BYTES + 3);
  });

  it('refuses a part never uploaded or with another ETag (InvalidPart), and parts out of order', async () => {
    const { uploadId, etags } = await twoParts('out/invalid.bin', S3_MIN_PART_BYTES);
    await expect(complete('out/invalid.bin', uploadId, [etags[0], etags[0]])).rejects.toMatchObject({
      name: 'InvalidPart',
    });
    await expect(
      client.send(
        new CompleteMultipartUploadCommand({
          Bucket: BUCKET,
          Key: 'out/invalid.bin',
          UploadId: uploadId,
          MultipartUpload: { Parts: [{ PartNumber: 3, ETag: etags[1] }] },
        }),
      ),
    ).rejects.toMatchObject({ name: 'InvalidPart' });
    await expect(
      client.send(
        new CompleteMultipartUploadCommand({
          Bucket: BUCKET,
          Key: 'out/invalid.bin',
          UploadId: uploadId,
          MultipartUpload: {
            Parts: [
              { PartNumber: 2, ETag: etags[1] },
              { PartNumber: 1, ETag: etags[0] },
            ],
          },
        }),
      ),
    ).rejects.toMatchObject({ name: 'InvalidPartOrder' });
  });
});
