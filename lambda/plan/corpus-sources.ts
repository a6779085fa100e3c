import { isUtf8 } from 'node:buffer';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { DROP_MARKER, type CorpusSourceEntry } from '../shared/contracts';
import { callDependency, CorpusNotFoundError } from '../shared/errors';
import { MAX_LINE_BYTES } from '../shared/records';

/**
 * A corpus is one object or a prefix of objects (its sources). This module lists a corpus's sources in the order they
 * are read, and turns one source's bytes into the JSONL bytes Plan parses: gunzipped when the source is gzip, refused
 * as a whole when it is binary or not what its name says. Listing and opening are separate, and a listing is plain
 * data, so a later step that reads sources in parallel (one segment per Map item) can list once and open each.
 */

/** A source Plan reads. */
export interface CorpusSource {
  key: string;
  size: number;
  etag?: string;
  /** Named `.gz` (`.jsonl.gz` or `.gz`): read through gunzip. */
  gzip: boolean;
}

/** An object under a corpus prefix that is not read, and why. */
export interface SkippedSource {
  key: string;
  size: number;
  etag?: string;
  reason: string;
}

/** A corpus's sources, in reading order (lexicographic by key), and the objects under its prefix left unread. */
export interface CorpusListing {
  /** The corpus as the run reads it: the object key, or the prefix (ending in `/`). */
  key: string;
  /** Whether the corpus is a prefix. */
  prefix: boolean;
  sources: CorpusSource[];
  skipped: SkippedSource[];
  /** The drop's `_SUCCESS` marker, when the prefix holds one (its metadata may carry the run's settings). */
  marker?: string;
}

/**
 * The corpus a run input's key names: a key ending in `/` is a prefix; a key ending in `/_SUCCESS` (the object that
 * closes a drop, whose upload starts the run) names its folder; any other key is one object.
 */
export function corpusKey(key: string): { key: string; prefix: boolean } {
  if (key.endsWith(`/${DROP_MARKER}`)) return { key: key.slice(0, -DROP_MARKER.length), prefix: true };
  return { key, prefix: key.endsWith('/') };
}

/** Whether an object under a corpus prefix is a source: `.jsonl`, `.jsonl.gz` and `.gz` are, anything else is not. */
export function classifyKey(key: string): { gzip: boolean } | { reason: string } {
  const name = key.slice(key.lastIndexOf('/') + 1);
  if (key.endsWith('/')) return { reason: 'a folder placeholder' };
  if (name === DROP_MARKER) return { reason: "the drop's completion marker" };
  if (name.startsWith('.')) return { reason: 'a hidden file' };
  if (name.endsWith('.gz')) return { gzip: true };
  if (name.endsWith('.jsonl')) return { gzip: false };
  return { reason: 'not a .jsonl, .jsonl.gz or .gz file' };
}

/**
 * Lists a corpus: the one object (with the size and etag its HeadObject gave), or every object under the prefix in
 * lexicographic key order, split into sources and skipped objects.
 * @throws CorpusNotFoundError when the prefix holds no source
 */
export async function listCorpus(
  s3: S3Client,
  bucket: string,
  corpus: { key: string; prefix: boolean },
  head?: { size: number; etag?: string },
): Promise<CorpusListing> {
  if (!corpus.prefix) {
    return {
      key: corpus.key,
      prefix: false,
      sources: [
        {
          key: corpus.key,
          size: head?.size ?? 0,
          ...(head?.etag ? { etag: head.etag } : {}),
          gzip: corpus.key.endsWith('.gz'),
        },
      ],
      skipped: [],
    };
  }
  const sources: CorpusSource[] = [];
  const skipped: SkippedSource[] = [];
  let marker: string | undefined;
  let token: string | undefined;
  do {
    const page = await callDependency('S3 ListObjectsV2', () =>
      s3.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: corpus.key,
          ...(token ? { ContinuationToken: token } : {}),
        }),
      ),
    );
    for (const object of page.Contents ?? []) {
      if (!object.Key) continue;
      const size = object.Size ?? 0;
      const etag = object.ETag?.replace(/"/g, '');
      const kind = classifyKey(object.Key);
      if (object.Key === `${corpus.key}${DROP_MARKER}`) marker = object.Key;
      if ('reason' in kind)
        skipped.push({ key: object.Key, size, ...(etag ? { etag } : {}), reason: kind.reason });
      else sources.push({ key: object.Key, size, ...(etag ? { etag } : {}), gzip: kind.gzip });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  // ListObjectsV2 returns keys in UTF-8 binary order already; sorting again keeps the order whatever the store.
  const byKey = (a: { key: string }, b: { key: string }): number =>
    a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
  sources.sort(byKey);
  skipped.sort(byKey);
  if (sources.length === 0) {
    throw new CorpusNotFoundError(
      `s3://${bucket}/${corpus.key} holds no .jsonl, .jsonl.gz or .gz file${skipped.length ? ` (only ${skipped.length} other object${skipped.length === 1 ? '' : 's'}, e.g. ${skipped[0]!.key})` : ''}`,
    );
  }
  return { key: corpus.key, prefix: true, sources, skipped, ...(marker ? { marker } : {}) };
}

/** Why a source, or its rest, could not be read: one failure for the whole source. */
export interface SourceProblem {
  code: 'BinarySource' | 'GzipNotNamedGz' | 'NotGzip' | 'CorruptGzip';
  message: string;
}

/** The bytes of the decoded data looked at to tell text from binary. */
const SNIFF_BYTES = 8 * 1024;
/** A line held back (waiting for its end) beyond this goes on anyway: Plan skips it as too long. */
const HOLD_MAX_BYTES = MAX_LINE_BYTES + 2;
const LF = 0x0a;

/**
 * One source's JSONL bytes, ready for the parse: iterate {@link bytes}; once it ends, {@link problem} says whether the
 * source (or its rest) was refused. A gzip source is gunzipped (several members one after another are one stream);
 * the content decides, not only the name: gzip data in a file not named `.gz`, a `.gz` file that is not gzip, and
 * binary data (more than one byte in ten a control character or not UTF-8 in its first 8 KiB) are refused whole, before any line; gzip data that is
 * corrupt or cut short ends the source there, keeping the whole lines before it (the partial line is dropped).
 */
export class SourceReader {
  /** Why the source, or its rest, was refused; known once {@link bytes} has ended. */
  problem: SourceProblem | undefined;
  /** Bytes of JSONL handed on (after gunzip). */
  bytesOut = 0;

  constructor(
    private readonly body: AsyncIterable<Buffer | Uint8Array | string>,
    private readonly source: Pick<CorpusSource, 'key' | 'gzip'>,
  ) {}

  /** The source's JSONL bytes. */
  async *bytes(): AsyncGenerator<Buffer> {
    const raw = this.body[Symbol.asyncIterator]();
    const first = await firstBytes(raw, 2);
    const isGzip = first.head.length >= 2 && first.head[0] === 0x1f && first.head[1] === 0x8b;
    if (isGzip && !this.source.gzip) {
      await raw.return?.();
      this.refuse(
        'GzipNotNamedGz',
        `${this.source.key} is gzip data (it starts with the gzip bytes 1f 8b) but its name does not end in .gz; name it .jsonl.gz to have it read`,
      );
      return;
    }
    if (!isGzip && this.source.gzip) {
      if (first.head.length === 0) return;
      await raw.return?.();
      this.refuse(
        'NotGzip',
        `${this.source.key} is named .gz but is not gzip data (it does not start with the gzip bytes 1f 8b); compress it with gzip or drop the .gz from its name`,
      );
      return;
    }
    const rest = concatIterable(first.chunks, raw);
    const decoded = isGzip ? this.gunzip(rest) : rest;
    yield* this.wholeLines(this.sniffed(decoded));
  }

  private refuse(code: SourceProblem['code'], message: string): void {
    this.problem ??= { code, message };
  }

  /** The gunzipped bytes; a zlib error ends them and becomes the source's problem. */
  private async *gunzip(compressed: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    const gunzip = createGunzip();
    const input = Readable.from(compressed);
    // An error reading the object (not the gzip data) is the run's to retry: it fails the gunzip with itself.
    let readError: unknown;
    input.on('error', (err) => {
      readError = err;
      gunzip.destroy(err);
    });
    input.pipe(gunzip);
    try {
      for await (const chunk of gunzip) yield chunk as Buffer;
    } catch (err) {
      if (readError !== undefined) throw readError;
      const code = (err as { code?: string }).code ?? '';
      if (!code.startsWith('Z_')) throw err;
      this.refuse(
        'CorruptGzip',
        `${this.source.key}: the gzip data is corrupt or cut short after ${this.bytesOut} uncompressed bytes (${(err as Error).message}); the whole lines before that point were read, the rest of the file was not`,
      );
    } finally {
      input.destroy();
      gunzip.destroy();
    }
  }

  /** The decoded bytes, once their first 8 KiB are known to be text. */
  private async *sniffed(decoded: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    const it = decoded[Symbol.asyncIterator]();
    const first = await firstBytes(it, SNIFF_BYTES);
    const why = binaryReason(first.head);
    if (why) {
      this.refuse(
        'BinarySource',
        `${this.source.key} is not a text file (${why}); a corpus file is UTF-8 JSONL, optionally gzipped and named .gz`,
      );
      await it.return?.();
      return;
    }
    yield* concatIterable(first.chunks, it);
  }

  /**
   * The bytes up to the last line end seen, the rest held until its line ends: when the data stops short (a gzip
   * error) the cut line is dropped, not parsed as a truncated record. Chunks are passed on as views, never copied.
   */
  private async *wholeLines(decoded: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    let held: Buffer[] = [];
    let heldBytes = 0;
    for await (const chunk of decoded) {
      const lf = chunk.lastIndexOf(LF);
      if (lf === -1) {
        held.push(chunk);
        heldBytes += chunk.length;
        if (heldBytes > HOLD_MAX_BYTES) {
          yield* this.release(held);
          held = [];
          heldBytes = 0;
        }
        continue;
      }
      yield* this.release(held);
      yield* this.release([chunk.subarray(0, lf + 1)]);
      held = lf + 1 < chunk.length ? [chunk.subarray(lf + 1)] : [];
      heldBytes = chunk.length - lf - 1;
    }
    if (!this.problem) yield* this.release(held);
  }

  private *release(parts: Buffer[]): Generator<Buffer> {
    for (const part of parts) {
      this.bytesOut += part.length;
      yield part;
    }
  }
}

/** Reads chunks until `bytes` bytes are known (or the stream ends): their concatenation's head, and the chunks. */
async function firstBytes(
  it: AsyncIterator<Buffer | Uint8Array | string>,
  bytes: number,
): Promise<{ head: Buffer; chunks: Buffer[] }> {
  const chunks: Buffer[] = [];
  let size = 0;
  while (size < bytes) {
    const next = await it.next();
    if (next.done) break;
    const chunk =
      typeof next.value === 'string'
        ? Buffer.from(next.value)
        : Buffer.isBuffer(next.value)
          ? next.value
          : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.length);
    chunks.push(chunk);
    size += chunk.length;
  }
  const head = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  return { head: head.subarray(0, bytes), chunks };
}

/** The chunks already read, then the rest of the iterator, as Buffers. */
async function* concatIterable(
  chunks: readonly Buffer[],
  it: AsyncIterator<Buffer | Uint8Array | string>,
): AsyncGenerator<Buffer> {
  let done = false;
  try {
    yield* chunks;
    for (;;) {
      const next = await it.next();
      if (next.done) {
        done = true;
        return;
      }
      const v = next.value;
      yield typeof v === 'string'
        ? Buffer.from(v)
        : Buffer.isBuffer(v)
          ? v
          : Buffer.from(v.buffer, v.byteOffset, v.length);
    }
  } finally {
    // Left early (a refused source, a failed parse): the object's stream is released, not left open.
    if (!done) await it.return?.();
  }
}

/**
 * Why the first bytes of a source are not text, or undefined when they may be: more than one byte in ten is a control
 * character other than tab, line feed and carriage return (NUL among them) or not UTF-8. Binary formats (images,
 * archives, Parquet, compressed data) are far past that; a text corpus with a few bad lines (a NUL or another control
 * character, Latin-1 bytes) is text: its bad lines fail one by one (InvalidUtf8, InvalidJson) and the rest is read.
 */
export function binaryReason(head: Buffer): string | undefined {
  let controls = 0;
  let firstNul = -1;
  for (let i = 0; i < head.length; i++) {
    const b = head[i]!;
    if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f) {
      controls++;
      if (b === 0 && firstNul === -1) firstNul = i;
    }
  }
  const invalid = isUtf8(head) ? 0 : invalidUtf8Bytes(head);
  if ((controls + invalid) * 10 <= head.length) return undefined;
  const parts = [
    ...(controls > 0
      ? [`${controls} control characters${firstNul === -1 ? '' : ` (a NUL byte at offset ${firstNul})`}`]
      : []),
    ...(invalid > 0 ? [`${invalid} bytes that are not UTF-8`] : []),
  ];
  return `${parts.join(' and ')} in its first ${head.length} bytes`;
}

/** Bytes of `head` that are not part of a valid UTF-8 sequence; a sequence cut at its end is not counted. */
function invalidUtf8Bytes(head: Buffer): number {
  let invalid = 0;
  for (let i = 0; i < head.length;) {
    const b = head[i]!;
    const len =
      b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len === 0) {
      invalid++;
      i++;
      continue;
    }
    if (i + len > head.length) break;
    if (len > 1 && !isUtf8(head.subarray(i, i + len))) {
      invalid++;
      i++;
      continue;
    }
    i += len;
  }
  return invalid;
}

/** A source's entry in the manifest: a read source with its counts (and its problem), or a skipped object. */
export function skippedEntry(skipped: SkippedSource): CorpusSourceEntry {
  return {
    key: skipped.key,
    size: skipped.size,
    ...(skipped.etag ? { etag: skipped.etag } : {}),
    skipped: skipped.reason,
  };
}
