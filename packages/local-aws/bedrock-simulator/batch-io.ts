import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { PassThrough, Readable } from 'node:stream';

import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

import { BatchJobFailure } from './batch-errors';

/** A bucket and a key (or key prefix; empty for the bucket root). */
export interface S3Location {
  readonly bucket: string;
  readonly key: string;
}

/** Splits `s3://bucket/key` (the URI already passed the S3Uri pattern). */
export function parseS3Uri(uri: string): S3Location {
  const rest = uri.replace(/^s3:\/\//, '');
  const slash = rest.indexOf('/');
  return slash < 0 ? { bucket: rest, key: '' } : { bucket: rest.slice(0, slash), key: rest.slice(slash + 1) };
}

/** One input file of a job. */
export interface BatchInputFile {
  readonly bucket: string;
  readonly key: string;
  /** Size in bytes. */
  readonly size: number;
  /** The name its output file is derived from: the path below the input prefix (or the file's base name). */
  readonly name: string;
}

/** Input files must end with this extension. */
export const INPUT_EXTENSION = '.jsonl';

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

function isNotFound(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return err.name === 'NotFound' || err.name === 'NoSuchKey' || status === 404;
}

/**
 * Finds a job's input files: the object itself when `s3Uri` names one, otherwise every `.jsonl` object under
 * the prefix (nested folders included), in key order.
 * @throws BatchJobFailure when nothing usable is there or S3 refuses
 */
export async function listInputFiles(s3: S3Client, s3Uri: string): Promise<BatchInputFile[]> {
  const { bucket, key } = parseS3Uri(s3Uri);
  try {
    if (key.length > 0 && !key.endsWith('/')) {
      try {
        const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
        if (!key.endsWith(INPUT_EXTENSION)) {
          throw new BatchJobFailure(
            `The input file ${s3Uri} is not a ${INPUT_EXTENSION} file. Batch inference reads JSONL files whose names end with ${INPUT_EXTENSION}.`,
          );
        }
        return [{ bucket, key, size: head.ContentLength ?? 0, name: key.slice(key.lastIndexOf('/') + 1) }];
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    const prefix = key.length === 0 || key.endsWith('/') ? key : `${key}/`;
    const files: BatchInputFile[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined || !object.Key.endsWith(INPUT_EXTENSION)) continue;
        files.push({
          bucket,
          key: object.Key,
          size: object.Size ?? 0,
          name: object.Key.slice(prefix.length),
        });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    if (files.length === 0) {
      throw new BatchJobFailure(
        `No ${INPUT_EXTENSION} input files were found at ${s3Uri}. Point the job at a ${INPUT_EXTENSION} file, or at a prefix that holds ${INPUT_EXTENSION} files.`,
      );
    }
    return files.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  } catch (err) {
    if (err instanceof BatchJobFailure) throw err;
    throw new BatchJobFailure(`Unable to read the input location ${s3Uri}: ${describe(err)}`);
  }
}

/**
 * Streams the lines of an input file (without line endings, blank lines included), holding one line at a time.
 * Leaving the loop early releases the connection.
 * @throws BatchJobFailure when S3 refuses or the download breaks
 */
export async function* readInputLines(s3: S3Client, file: BatchInputFile): AsyncGenerator<string> {
  let body: Readable;
  try {
    const response = await s3.send(new GetObjectCommand({ Bucket: file.bucket, Key: file.key }));
    if (!(response.Body instanceof Readable)) {
      throw new TypeError(
        `GetObject s3://${file.bucket}/${file.key} returned a body that is not a Node stream`,
      );
    }
    body = response.Body;
  } catch (err) {
    throw new BatchJobFailure(
      `Unable to read the input file s3://${file.bucket}/${file.key}: ${describe(err)}`,
    );
  }
  const lines = createInterface({ input: body, crlfDelay: Infinity });
  try {
    for await (const line of lines) yield line;
  } catch (err) {
    throw new BatchJobFailure(
      `Reading the input file s3://${file.bucket}/${file.key} failed: ${describe(err)}`,
    );
  } finally {
    lines.close();
    body.destroy();
  }
}

/** Counts the non-blank lines (records) of an input file, streaming it. */
export async function countRecords(s3: S3Client, file: BatchInputFile): Promise<number> {
  let count = 0;
  for await (const line of readInputLines(s3, file)) if (line.trim().length > 0) count += 1;
  return count;
}

/**
 * Writes a JSONL object whose lines come out in shuffled order, with flat memory: a window of `window` lines
 * is held; each new line takes the place of a random held line, which is written out. On close the rest is
 * shuffled and written. Files no longer than the window are fully shuffled. The object is streamed to S3
 * (multipart when large), so nothing but the window and one part is in memory.
 */
export class ShuffledJsonlWriter {
  private readonly held: string[] = [];
  private readonly stream = new PassThrough();
  private readonly done: Promise<unknown>;
  private failure: unknown;
  /** Lines written so far. */
  lines = 0;

  /**
   * @param s3 the client
   * @param target where to write
   * @param window how many lines to hold for shuffling
   * @param random the PRNG that picks the order
   */
  constructor(
    s3: S3Client,
    private readonly target: S3Location,
    private readonly window: number,
    private readonly random: () => number,
  ) {
    const upload = new Upload({
      client: s3,
      params: { Bucket: target.bucket, Key: target.key, Body: this.stream, ContentType: 'application/jsonl' },
      queueSize: 1,
    });
    this.done = upload.done();
    // Keep the failure for write()/close() to report; a rejection nobody awaits yet must not crash the process.
    this.done.catch((err: unknown) => {
      this.failure = err;
    });
  }

  /** Adds one line (without the newline). */
  async write(line: string): Promise<void> {
    this.lines += 1;
    if (this.held.length < this.window) {
      this.held.push(line);
      return;
    }
    const at = Math.floor(this.random() * this.window);
    const out = this.held[at] as string;
    this.held[at] = line;
    await this.emit(out);
  }

  private async emit(line: string): Promise<void> {
    if (this.failure !== undefined) throw this.wrap(this.failure);
    if (this.stream.write(`${line}\n`)) return;
    try {
      await Promise.race([once(this.stream, 'drain'), this.done]);
    } catch (err) {
      throw this.wrap(err);
    }
  }

  private wrap(err: unknown): BatchJobFailure {
    return new BatchJobFailure(
      `Unable to write the output file s3://${this.target.bucket}/${this.target.key}: ${describe(err)}`,
    );
  }

  /** Gives up the object: drops the held lines and breaks the upload (nothing is written). */
  abort(): void {
    this.held.length = 0;
    this.stream.destroy(new Error('output writer aborted'));
  }

  /** Writes the held lines in random order and finishes the upload. */
  async close(): Promise<void> {
    for (let i = this.held.length - 1; i > 0; i -= 1) {
      const j = Math.floor(this.random() * (i + 1));
      [this.held[i], this.held[j]] = [this.held[j] as string, this.held[i] as string];
    }
    for (const line of this.held.splice(0)) await this.emit(line);
    this.stream.end();
    try {
      await this.done;
    } catch (err) {
      throw this.wrap(err);
    }
  }
}

/** Writes a small JSON object (the manifest). */
export async function putJson(s3: S3Client, target: S3Location, value: unknown): Promise<void> {
  try {
    await s3.send(
      new PutObjectCommand({
        Bucket: target.bucket,
        Key: target.key,
        Body: JSON.stringify(value),
        ContentType: 'application/json',
      }),
    );
  } catch (err) {
    throw new BatchJobFailure(`Unable to write s3://${target.bucket}/${target.key}: ${describe(err)}`);
  }
}

/** Joins an output prefix and a relative key without doubling or dropping slashes. */
export function joinKey(prefix: string, ...parts: string[]): string {
  return [prefix.replace(/\/+$/, ''), ...parts].filter((p) => p.length > 0).join('/');
}
