import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  NotFound,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { BatchGetCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
// @smithy/util-stream is not a top-level package here; @smithy/core re-exports the same mixin the SDK uses.
import { sdkStreamMixin } from '@smithy/core/serde';
import type { AwsClientStub } from 'aws-sdk-client-mock';
import type { Context } from 'aws-lambda';
import type { FailureLaneMessage } from '../../../lambda/shared/contracts';

/**
 * Shared fakes for the handler unit tests: an in-memory S3 behind aws-sdk-client-mock (Put/Get/Head/List/Delete and
 * the multipart calls lib-storage's Upload makes), a ledger table, a recording SQS and a Lambda context.
 */

/** The repository's test fixtures directory. */
const FIXTURES = join(__dirname, '..', '..', 'fixtures');

/** The text of a fixture file. */
export function fixture(name: string): string {
  return readFileSync(join(FIXTURES, name), 'utf8');
}

/** One stored object. */
export interface StoredObject {
  body: string;
  /** The exact bytes, for an object that is not valid UTF-8 (body is then only their lossy decoding). */
  bytes?: Buffer;
  metadata?: Record<string, string>;
}

/** Reads any PutObject/UploadPart body the SDK accepts (string, bytes, Node stream) as UTF-8 text. */
async function bodyText(body: unknown): Promise<string> {
  return (await bodyBytes(body)).toString('utf8');
}

async function bodyBytes(body: unknown): Promise<Buffer> {
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof Uint8Array) return Buffer.from(body);
  if (body instanceof Readable) {
    const chunks: Buffer[] = [];
    for await (const chunk of body)
      chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
    return Buffer.concat(chunks);
  }
  throw new TypeError(`unsupported body type ${Object.prototype.toString.call(body)}`);
}

/** An HTTP byte range (`bytes=a-b` or `bytes=a-`) over an object of `size` bytes: `[start, end)`. */
function byteRange(range: string, size: number): { start: number; end: number } {
  const m = /^bytes=(\d+)-(\d*)$/.exec(range);
  if (!m) throw new Error(`unsupported range ${range}`);
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
  if (start >= size)
    throw Object.assign(new Error('The requested range is not satisfiable'), {
      name: 'InvalidRange',
      $metadata: { httpStatusCode: 416 },
    });
  return { start, end };
}

/** A streaming GetObject body, as the SDK returns it in Node. */
function streamBody(text: string): ReturnType<typeof sdkStreamMixin> {
  return sdkStreamMixin(Readable.from([Buffer.from(text, 'utf8')]));
}

/** Options of the fake S3. */
export interface FakeS3Options {
  /** ListObjectsV2 page size (small values exercise continuation tokens). */
  listPageSize?: number;
}

/**
 * An in-memory S3 wired into a mocked S3Client. Objects are keyed `bucket/key`. Every call goes through the mock,
 * so `aws-sdk-client-mock-jest` matchers still see them.
 */
export class FakeS3 {
  /** Stored objects by `bucket/key`. */
  readonly objects = new Map<string, StoredObject>();
  private readonly uploads = new Map<string, { bucket: string; key: string; parts: Map<number, Buffer> }>();
  private nextUpload = 0;

  constructor(
    private readonly mock: AwsClientStub<S3Client>,
    private readonly options: FakeS3Options = {},
  ) {}

  /** (Re)installs the behaviours on the mock; call after `mock.reset()`. */
  install(): this {
    const { mock } = this;
    mock
      .on(PutObjectCommand)
      .callsFake(
        async (input: { Bucket: string; Key: string; Body?: unknown; Metadata?: Record<string, string> }) => {
          this.put(input.Bucket, input.Key, await bodyText(input.Body), input.Metadata);
          return { ETag: '"put"' };
        },
      );
    mock.on(GetObjectCommand).callsFake(async (input: { Bucket: string; Key: string; Range?: string }) => {
      const object = this.objects.get(`${input.Bucket}/${input.Key}`);
      if (!object)
        throw new NoSuchKey({
          message: 'The specified key does not exist.',
          $metadata: { httpStatusCode: 404 },
        });
      if (input.Range !== undefined) {
        const bytes = object.bytes ?? Buffer.from(object.body, 'utf8');
        const { start, end } = byteRange(input.Range, bytes.length);
        return {
          Body: sdkStreamMixin(Readable.from([bytes.subarray(start, end)])),
          ContentLength: end - start,
          ContentRange: `bytes ${start}-${end - 1}/${bytes.length}`,
          ETag: '"etag-1"',
          Metadata: object.metadata,
        };
      }
      return {
        Body: object.bytes ? sdkStreamMixin(Readable.from([object.bytes])) : streamBody(object.body),
        ContentLength: object.bytes?.length ?? Buffer.byteLength(object.body),
        Metadata: object.metadata,
      };
    });
    mock.on(HeadObjectCommand).callsFake(async (input: { Bucket: string; Key: string }) => {
      const object = this.objects.get(`${input.Bucket}/${input.Key}`);
      if (!object) throw new NotFound({ message: 'NotFound', $metadata: { httpStatusCode: 404 } });
      return {
        ContentLength: object.bytes?.length ?? Buffer.byteLength(object.body),
        ETag: '"etag-1"',
        Metadata: object.metadata ?? {},
      };
    });
    mock.on(DeleteObjectCommand).callsFake(async (input: { Bucket: string; Key: string }) => {
      this.objects.delete(`${input.Bucket}/${input.Key}`);
      return {};
    });
    mock
      .on(ListObjectsV2Command)
      .callsFake(async (input: { Bucket: string; Prefix?: string; ContinuationToken?: string }) => {
        const keys = this.keys(input.Bucket, input.Prefix ?? '');
        const pageSize = this.options.listPageSize ?? 1000;
        const start = input.ContinuationToken ? Number(input.ContinuationToken) : 0;
        const page = keys.slice(start, start + pageSize);
        const truncated = start + pageSize < keys.length;
        return {
          Contents: page.map((Key) => {
            const object = this.objects.get(`${input.Bucket}/${Key}`);
            return {
              Key,
              Size: object?.bytes?.length ?? Buffer.byteLength(object?.body ?? ''),
              ETag: '"etag-1"',
            };
          }),
          KeyCount: page.length,
          IsTruncated: truncated,
          ...(truncated ? { NextContinuationToken: String(start + pageSize) } : {}),
        };
      });
    mock.on(CreateMultipartUploadCommand).callsFake(async (input: { Bucket: string; Key: string }) => {
      const UploadId = `upload-${++this.nextUpload}`;
      this.uploads.set(UploadId, { bucket: input.Bucket, key: input.Key, parts: new Map() });
      return { UploadId, Bucket: input.Bucket, Key: input.Key };
    });
    mock
      .on(UploadPartCommand)
      .callsFake(async (input: { UploadId: string; PartNumber: number; Body?: unknown }) => {
        const upload = this.uploads.get(input.UploadId);
        if (!upload) throw new Error(`unknown upload ${input.UploadId}`);
        upload.parts.set(input.PartNumber, await bodyBytes(input.Body));
        return { ETag: `"part-${input.PartNumber}"` };
      });
    mock
      .on(UploadPartCopyCommand)
      .callsFake(
        async (input: {
          UploadId: string;
          PartNumber: number;
          CopySource: string;
          CopySourceRange?: string;
        }) => {
          const upload = this.uploads.get(input.UploadId);
          if (!upload) throw new Error(`unknown upload ${input.UploadId}`);
          const source = decodeURIComponent(input.CopySource).replace(/^\//, '');
          const object = this.objects.get(source);
          if (!object)
            throw new NoSuchKey({
              message: 'The specified key does not exist.',
              $metadata: { httpStatusCode: 404 },
            });
          const bytes = object.bytes ?? Buffer.from(object.body, 'utf8');
          const { start, end } = input.CopySourceRange
            ? byteRange(input.CopySourceRange, bytes.length)
            : { start: 0, end: bytes.length };
          upload.parts.set(input.PartNumber, bytes.subarray(start, end));
          return { CopyPartResult: { ETag: `"part-${input.PartNumber}"` } };
        },
      );
    mock.on(CompleteMultipartUploadCommand).callsFake(async (input: { UploadId: string }) => {
      const upload = this.uploads.get(input.UploadId);
      if (!upload) throw new Error(`unknown upload ${input.UploadId}`);
      const ordered = [...upload.parts.entries()].sort(([a], [b]) => a - b).map(([, bytes]) => bytes);
      this.putBytes(upload.bucket, upload.key, Buffer.concat(ordered));
      this.uploads.delete(input.UploadId);
      return { ETag: '"multipart"' };
    });
    mock.on(AbortMultipartUploadCommand).callsFake(async (input: { UploadId: string }) => {
      this.uploads.delete(input.UploadId);
      return {};
    });
    return this;
  }

  /** Stores an object. */
  put(bucket: string, key: string, body: string, metadata?: Record<string, string>): void {
    this.objects.set(`${bucket}/${key}`, { body, ...(metadata ? { metadata } : {}) });
  }

  /** Stores an object given as bytes (any bytes, UTF-8 or not). */
  putBytes(bucket: string, key: string, bytes: Buffer, metadata?: Record<string, string>): void {
    this.objects.set(`${bucket}/${key}`, {
      body: bytes.toString('utf8'),
      bytes,
      ...(metadata ? { metadata } : {}),
    });
  }

  /** Stores a JSON object. */
  putJson(bucket: string, key: string, value: unknown): void {
    this.put(bucket, key, JSON.stringify(value));
  }

  /** Stores JSON lines. */
  putLines(bucket: string, key: string, values: readonly unknown[]): void {
    this.put(bucket, key, values.map((v) => `${JSON.stringify(v)}\n`).join(''));
  }

  /** An object's text, or undefined. */
  text(bucket: string, key: string): string | undefined {
    return this.objects.get(`${bucket}/${key}`)?.body;
  }

  /** An object's JSON lines, parsed; throws when the object is missing. */
  lines<T = Record<string, unknown>>(bucket: string, key: string): T[] {
    const text = this.text(bucket, key);
    if (text === undefined) throw new Error(`s3://${bucket}/${key} was not written`);
    return text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as T);
  }

  /** An object's JSON, parsed; throws when the object is missing. */
  json<T = Record<string, unknown>>(bucket: string, key: string): T {
    const text = this.text(bucket, key);
    if (text === undefined) throw new Error(`s3://${bucket}/${key} was not written`);
    return JSON.parse(text) as T;
  }

  /** Keys in a bucket under a prefix, sorted as S3 lists them. */
  keys(bucket: string, prefix = ''): string[] {
    return [...this.objects.keys()]
      .filter((k) => k.startsWith(`${bucket}/${prefix}`))
      .map((k) => k.slice(bucket.length + 1))
      .sort();
  }
}

/** A ledger table in memory behind a mocked DocumentClient: who claimed and who published each record. */
export class FakeLedgerTable {
  /** Record ids held (claimed or published) by another run: claims on them fail the condition. */
  readonly heldByOthers = new Set<string>();
  /** Record ids whose item says `published` (what BatchGet returns). */
  readonly published = new Set<string>();
  /** Content hashes stored with published records (by an earlier run), by record id. */
  readonly publishedHashes = new Map<string, string>();
  /** Record ids claimed by this run, in call order. */
  readonly claims: string[] = [];
  /** Record ids marked published, in call order. */
  readonly publishes: string[] = [];
  /** Called as each record is marked published (to check what was durable by then). */
  onPublish: ((recordId: string) => void) | undefined;

  constructor(
    private readonly mock: AwsClientStub<DynamoDBDocumentClient>,
    private readonly tableName: string,
  ) {}

  /** (Re)installs the behaviours on the mock. */
  install(): this {
    this.mock
      .on(BatchGetCommand)
      .callsFake(async (input: { RequestItems: Record<string, { Keys: { pk: string }[] }> }) => {
        const keys = input.RequestItems[this.tableName]?.Keys ?? [];
        const items = keys
          .map((k) => k.pk.slice(k.pk.indexOf('#') + 1))
          .filter((id) => this.published.has(id))
          .map((recordId) => {
            const contentHash = this.publishedHashes.get(recordId);
            return { recordId, status: 'published', runId: 'run-0', ...(contentHash ? { contentHash } : {}) };
          });
        return { Responses: { [this.tableName]: items }, UnprocessedKeys: {} };
      });
    this.mock
      .on(UpdateCommand)
      .callsFake(async (input: { Key: { pk: string }; UpdateExpression: string }) => {
        const recordId = input.Key.pk.slice(input.Key.pk.indexOf('#') + 1);
        if (input.UpdateExpression.includes('claimedAt')) {
          if (this.heldByOthers.has(recordId)) {
            throw new ConditionalCheckFailedException({
              message: 'The conditional request failed',
              $metadata: {},
            });
          }
          this.claims.push(recordId);
        } else {
          this.publishes.push(recordId);
          this.onPublish?.(recordId);
        }
        return {};
      });
    return this;
  }
}

/** What the recording SQS saw: each SendMessageBatch as its queue URL and parsed messages. */
export interface SentBatch {
  queueUrl: string;
  messages: FailureLaneMessage[];
}

/** Makes a mocked SQS client accept every entry and record what was sent. */
export function recordSqs(mock: AwsClientStub<SQSClient>): SentBatch[] {
  const sent: SentBatch[] = [];
  mock
    .on(SendMessageBatchCommand)
    .callsFake(async (input: { QueueUrl: string; Entries: { Id: string; MessageBody: string }[] }) => {
      sent.push({
        queueUrl: input.QueueUrl,
        messages: input.Entries.map((e) => JSON.parse(e.MessageBody) as FailureLaneMessage),
      });
      return {
        Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: `m-${e.Id}`, MD5OfMessageBody: 'x' })),
        Failed: [],
      };
    });
  return sent;
}

/** A Lambda context with a fixed remaining time. */
export function lambdaContext(remainingMs = 280_000): Context {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: 'test-function',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:test-function',
    memoryLimitInMB: '512',
    awsRequestId: 'req-1',
    logGroupName: '/aws/lambda/test-function',
    logStreamName: 'stream',
    getRemainingTimeInMillis: () => remainingMs,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

/** An AWS SDK service error shape (name, HTTP status, retryable marker) without a real response. */
export function awsError(name: string, status: number, message = name, retryable = false): Error {
  const err = new Error(message);
  err.name = name;
  Object.assign(err, {
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status, attempts: 1 },
    ...(retryable ? { $retryable: {} } : {}),
  });
  return err;
}
