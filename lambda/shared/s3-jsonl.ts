import { createInterface } from 'node:readline';
import { PassThrough, type Readable } from 'node:stream';
import { GetObjectCommand, NoSuchKey, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { ResultLine } from './contracts';
import { callDependency } from './errors';

/**
 * Streams JSON lines into one S3 object through a multipart upload, so memory stays flat whatever the size.
 * `write` resolves when the stream can take more (back-pressure); `close` completes the upload.
 */
export class JsonlObjectWriter {
  private readonly body = new PassThrough({ highWaterMark: 1024 * 1024 });
  private readonly upload: Upload;
  private readonly done: Promise<unknown>;
  private uploadError: unknown;
  /** Lines written so far. */
  lines = 0;
  /** Bytes written so far. */
  bytes = 0;

  constructor(client: S3Client, bucket: string, key: string) {
    this.upload = new Upload({
      client,
      params: { Bucket: bucket, Key: key, Body: this.body, ContentType: 'application/x-ndjson' },
      queueSize: 4,
      partSize: 8 * 1024 * 1024,
    });
    // Mapped once, so write() and close() both surface a throttled upload as TransientDependencyError.
    this.done = callDependency('S3 upload', () => this.upload.done()).catch((err: unknown) => {
      this.uploadError = err;
      this.body.destroy();
      throw err;
    });
    // The failure is rethrown by close(); this keeps it from being reported as unhandled meanwhile.
    this.done.catch(() => undefined);
  }

  /** Appends one JSON line. */
  async write(value: unknown): Promise<void> {
    if (this.uploadError) throw this.uploadError;
    const text = `${JSON.stringify(value)}\n`;
    this.lines++;
    this.bytes += Buffer.byteLength(text);
    if (!this.body.write(text)) {
      // Both listeners go once either fires: a long write would otherwise pile up one 'close' listener per wait.
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          this.body.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          this.body.off('drain', onDrain);
          reject(this.uploadError ?? new Error('upload stream closed'));
        };
        this.body.once('drain', onDrain);
        this.body.once('close', onClose);
      });
    }
  }

  /** Ends the stream and waits for the upload to complete. */
  async close(): Promise<{ lines: number; bytes: number }> {
    this.body.end();
    await this.done;
    return { lines: this.lines, bytes: this.bytes };
  }
}

/** Writes a small JSONL object in one PutObject. */
export async function putJsonl(
  client: S3Client,
  bucket: string,
  key: string,
  values: readonly unknown[],
): Promise<void> {
  const body = values.map((v) => JSON.stringify(v)).join('\n') + (values.length ? '\n' : '');
  await callDependency('S3 PutObject', () =>
    client.send(
      new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: 'application/x-ndjson' }),
    ),
  );
}

/** Writes a JSON object. */
export async function putJson(client: S3Client, bucket: string, key: string, value: unknown): Promise<void> {
  await callDependency('S3 PutObject', () =>
    client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: JSON.stringify(value, null, 2),
        ContentType: 'application/json',
      }),
    ),
  );
}

/** Reads a JSON object, or undefined when it does not exist. */
export async function getJson<T>(client: S3Client, bucket: string, key: string): Promise<T | undefined> {
  try {
    const out = await callDependency('S3 GetObject', () =>
      client.send(new GetObjectCommand({ Bucket: bucket, Key: key })),
    );
    return JSON.parse(await out.Body!.transformToString()) as T;
  } catch (err) {
    if (err instanceof NoSuchKey || (err as { name?: string }).name === 'NoSuchKey') return undefined;
    throw err;
  }
}

/** Opens an object as a stream, or undefined when it does not exist. */
export async function openObject(
  client: S3Client,
  bucket: string,
  key: string,
): Promise<Readable | undefined> {
  try {
    const out = await callDependency('S3 GetObject', () =>
      client.send(new GetObjectCommand({ Bucket: bucket, Key: key })),
    );
    return out.Body as Readable;
  } catch (err) {
    if (err instanceof NoSuchKey || (err as { name?: string }).name === 'NoSuchKey') return undefined;
    throw err;
  }
}

/** Iterates the raw lines of a stream (no parsing; CR and BOM are left for the caller). */
export async function* readLines(stream: Readable): AsyncGenerator<string> {
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  try {
    for await (const line of rl) yield line;
  } finally {
    rl.close();
  }
}

/**
 * The result lines of one results file by recordId (empty when the file does not exist). For a batch's or a shard
 * part's file, which holds at most a few thousand lines.
 */
export async function readResultsFile(
  s3: S3Client,
  bucket: string,
  key: string,
): Promise<Map<string, ResultLine>> {
  const results = new Map<string, ResultLine>();
  const body = await openObject(s3, bucket, key);
  if (!body) return results;
  for await (const line of readLines(body)) {
    if (!line) continue;
    const result = JSON.parse(line) as ResultLine;
    results.set(result.recordId, result);
  }
  return results;
}
