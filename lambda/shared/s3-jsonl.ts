import { PassThrough, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { GetObjectCommand, NoSuchKey, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { cleanLine } from './records';
import { callDependency } from './errors';

/** Lines are handed to the upload stream in blocks of about this many bytes, not one write per line. */
const WRITE_BLOCK_BYTES = 256 * 1024;
const NEWLINE = Buffer.from('\n');
/**
 * S3's smallest part of a multipart upload but the last (5 MiB), the part size of {@link JsonlObjectWriter} so an open
 * writer holds as little as it can; with at most 10,000 parts an object may reach 48.8 GiB, twice the items file of the
 * 20 GB design point.
 */
export const MIN_PART_BYTES = 5 * 1024 * 1024;

/**
 * Streams JSON lines into one S3 object through a multipart upload, so memory stays flat whatever the size.
 * `write` resolves when the stream can take more (back-pressure); `close` completes the upload.
 *
 * Lines are gathered into blocks of about 256 KiB before they go to the upload stream (a stream write per line costs
 * more than the line), and at most two parts upload at once besides the one filling: about 20 MiB per open writer,
 * whatever the object's size.
 */
export class JsonlObjectWriter {
  private readonly body = new PassThrough({ highWaterMark: 1024 * 1024 });
  private readonly upload: Upload;
  private readonly done: Promise<unknown>;
  private uploadError: unknown;
  /** Lines and line pieces not yet handed to the stream; strings until a Buffer comes. */
  private pending: (string | Buffer)[] = [];
  private pendingSize = 0;
  private pendingBuffers = false;
  /** Lines written so far. */
  lines = 0;
  /** Bytes handed to the upload so far (exact once {@link close} returns; lines still in the block are not counted). */
  bytes = 0;

  constructor(client: S3Client, bucket: string, key: string) {
    this.upload = new Upload({
      client,
      params: { Bucket: bucket, Key: key, Body: this.body, ContentType: 'application/x-ndjson' },
      queueSize: 2,
      partSize: MIN_PART_BYTES,
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

  /** Appends one value as a JSON line. */
  async write(value: unknown): Promise<void> {
    const text = JSON.stringify(value);
    this.pending.push(text, '\n');
    this.pendingSize += text.length + 1;
    this.lines++;
    if (this.pendingSize >= WRITE_BLOCK_BYTES) await this.flush();
  }

  /**
   * Appends one line that is already JSON (without its newline): a string, a Buffer, or the Buffers that make it up in
   * order. The caller vouches for the text.
   */
  async writeLine(line: string | Buffer | readonly Buffer[]): Promise<void> {
    if (typeof line === 'string') {
      this.pending.push(line, '\n');
      this.pendingSize += line.length + 1;
    } else {
      this.pendingBuffers = true;
      if (Buffer.isBuffer(line)) {
        this.pending.push(line, NEWLINE);
        this.pendingSize += line.length + 1;
      } else {
        for (const part of line) {
          this.pending.push(part);
          this.pendingSize += part.length;
        }
        this.pending.push(NEWLINE);
        this.pendingSize += 1;
      }
    }
    this.lines++;
    if (this.pendingSize >= WRITE_BLOCK_BYTES) await this.flush();
  }

  /**
   * Appends whole JSON lines that are already bytes, each ending in a newline (`lines` of them). The caller vouches
   * for the text.
   */
  async writeLines(bytes: Buffer, lines: number): Promise<void> {
    if (bytes.length === 0) return;
    this.pendingBuffers = true;
    this.pending.push(bytes);
    this.pendingSize += bytes.length;
    this.lines += lines;
    if (this.pendingSize >= WRITE_BLOCK_BYTES) await this.flush();
  }

  /** Hands the gathered lines to the upload stream as one block, waiting when the stream is full. */
  private async flush(): Promise<void> {
    if (this.uploadError) throw this.uploadError;
    if (this.pending.length === 0) return;
    const only = this.pending.length === 1 ? this.pending[0] : undefined;
    const block = Buffer.isBuffer(only)
      ? only
      : this.pendingBuffers
        ? Buffer.concat(this.pending.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)))
        : Buffer.from((this.pending as string[]).join(''));
    this.pending = [];
    this.pendingSize = 0;
    this.pendingBuffers = false;
    this.bytes += block.length;
    if (!this.body.write(block)) {
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
    await this.flush();
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

/** Options of {@link readLines}. */
export interface ReadLinesOptions {
  /**
   * Lines longer than this many bytes (UTF-8, without the line end) are not gathered: their text is dropped as it
   * streams and an empty string is yielded in their place (so a caller counting lines stays right), after
   * `onLineTooLong` was told. @default no limit
   */
  maxLineBytes?: number;
  /** Told about each line over `maxLineBytes`: its 1-based number (blank lines count) and its size in bytes. */
  onLineTooLong?: (line: { line: number; bytes: number }) => void;
  /** Filled in as lines are read, for callers that watch memory. */
  stats?: { maxBufferedChars: number };
}

/**
 * Iterates the raw lines of a stream (no parsing; the BOM is left for the caller). Lines end at LF, CRLF or a lone CR,
 * as node:readline splits them, but the bytes are decoded a chunk at a time and cut with indexOf instead of a regular
 * expression per chunk, which makes it several times faster on large objects. With `maxLineBytes`, memory stays
 * bounded whatever the lines (see {@link ReadLinesOptions}).
 */
export async function* readLines(stream: Readable, options: ReadLinesOptions = {}): AsyncGenerator<string> {
  if (options.maxLineBytes !== undefined) {
    yield* readBoundedLines(stream, options.maxLineBytes, options);
    return;
  }
  const decoder = new StringDecoder('utf8');
  // Pieces of a line that spans chunks, joined once its end comes (never re-scanned: long lines stay linear).
  let parts: string[] = [];
  let partsHaveCr = false;
  for await (const chunk of stream) {
    const text = typeof chunk === 'string' ? chunk : decoder.write(chunk as Buffer);
    const hasCr = text.includes('\r');
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      let line = text.slice(start, nl);
      start = nl + 1;
      let mayHaveCr = hasCr;
      if (parts.length > 0) {
        parts.push(line);
        line = parts.join('');
        mayHaveCr ||= partsHaveCr;
        parts = [];
        partsHaveCr = false;
      }
      if (mayHaveCr && line.includes('\r')) yield* splitCr(line);
      else yield line;
    }
    if (start < text.length) {
      parts.push(start === 0 ? text : text.slice(start));
      partsHaveCr ||= hasCr;
    }
  }
  const end = decoder.end();
  if (end) parts.push(end);
  const last = parts.join('');
  if (last) {
    if (last.includes('\r')) yield* splitCr(last);
    else yield last;
  }
}

/**
 * readLines with a line limit: the line being gathered is checked as it grows (its characters bound its bytes from
 * below, so past `maxLineBytes` characters it is too long for sure), and its text is only counted from then on.
 */
async function* readBoundedLines(
  stream: Readable,
  maxLineBytes: number,
  options: ReadLinesOptions,
): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let lineNo = 0;
  // The text of the line being gathered, from chunks before this one.
  let parts: string[] = [];
  let partsChars = 0;
  // The bytes so far of a line too long to gather.
  let dropping: number | undefined;
  // The last chunk ended in a CR: an LF first in the next one is the rest of that CRLF.
  let swallowLf = false;
  const tooLong = (bytes: number): string => {
    lineNo++;
    options.onLineTooLong?.({ line: lineNo, bytes });
    return '';
  };
  const complete = (line: string): string => {
    if (line.length * 3 > maxLineBytes) {
      const bytes = Buffer.byteLength(line);
      if (bytes > maxLineBytes) return tooLong(bytes);
    }
    lineNo++;
    return line;
  };
  for await (const chunk of stream) {
    let text = typeof chunk === 'string' ? chunk : decoder.write(chunk as Buffer);
    if (swallowLf && text.length > 0) {
      if (text.startsWith('\n')) text = text.slice(1);
      swallowLf = false;
    }
    // The next CR, looked up again only once passed: a search per line would rescan chunks without any.
    let cr = text.indexOf('\r');
    for (let start = 0; ;) {
      if (cr !== -1 && cr < start) cr = text.indexOf('\r', start);
      const lf = text.indexOf('\n', start);
      const end = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
      if (end === -1) {
        const rest = start === 0 ? text : text.slice(start);
        if (dropping !== undefined) dropping += Buffer.byteLength(rest);
        else if (rest) {
          parts.push(rest);
          partsChars += rest.length;
          if (options.stats && partsChars > options.stats.maxBufferedChars) {
            options.stats.maxBufferedChars = partsChars;
          }
          if (partsChars > maxLineBytes) {
            dropping = Buffer.byteLength(parts.join(''));
            parts = [];
            partsChars = 0;
          }
        }
        break;
      }
      const piece = text.slice(start, end);
      if (dropping !== undefined) {
        yield tooLong(dropping + Buffer.byteLength(piece));
        dropping = undefined;
      } else if (parts.length > 0) {
        parts.push(piece);
        const line = parts.join('');
        parts = [];
        partsChars = 0;
        yield complete(line);
      } else yield complete(piece);
      if (text[end] === '\r' && end + 1 === text.length) swallowLf = true;
      start = end + (text[end] === '\r' && text[end + 1] === '\n' ? 2 : 1);
    }
  }
  const rest = decoder.end();
  if (dropping !== undefined) yield tooLong(dropping + Buffer.byteLength(rest));
  else {
    const last = parts.join('') + rest;
    if (last) yield complete(last);
  }
}

/** A line with CRs in it, as readline splits it: a lone CR ends a line, the CR of a CRLF is dropped. */
export function splitCr(line: string): string[] {
  const pieces = line.split('\r');
  if (line.endsWith('\r')) pieces.pop();
  return pieces;
}

/**
 * Iterates the lines of a stream as Buffers (without their LF; a CR before it is dropped), a chunk's worth of lines at
 * a time, without decoding them: for files this pipeline wrote, read by code that can work on the bytes. A line's
 * Buffer may share memory with the chunk it came from.
 */
export async function* readLineBuffers(stream: Readable): AsyncGenerator<Buffer[]> {
  let parts: Buffer[] = [];
  const trimCr = (line: Buffer): Buffer =>
    line.length > 0 && line[line.length - 1] === 0x0d ? line.subarray(0, line.length - 1) : line;
  for await (const piece of stream) {
    const chunk = typeof piece === 'string' ? Buffer.from(piece) : (piece as Buffer);
    const lines: Buffer[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      let line = chunk.subarray(start, nl);
      start = nl + 1;
      if (parts.length > 0) {
        parts.push(line);
        line = Buffer.concat(parts);
        parts = [];
      }
      lines.push(trimCr(line));
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
    if (lines.length > 0) yield lines;
  }
  if (parts.length > 0) {
    const last = trimCr(Buffer.concat(parts));
    if (last.length > 0) yield [last];
  }
}

/** One non-blank line of a JSONL object. */
export interface ObjectLine {
  /** The object's key. */
  key: string;
  /** 1-based line number in the object. */
  lineNo: number;
  /** The line, without a leading BOM or a trailing CR. */
  text: string;
}

/**
 * The non-blank lines of JSONL objects, one object after the other, each with its key and line number; an object
 * that does not exist is skipped. For the files the pipeline writes itself (items, tails, re-drives, shard inputs).
 */
export async function* objectLines(
  client: S3Client,
  bucket: string,
  keys: readonly string[],
): AsyncGenerator<ObjectLine> {
  for (const key of keys) {
    const body = await openObject(client, bucket, key);
    if (!body) continue;
    let lineNo = 0;
    for await (const raw of readLines(body)) {
      lineNo++;
      const text = cleanLine(raw, lineNo === 1);
      if (text.trim() !== '') yield { key, lineNo, text };
    }
  }
}
