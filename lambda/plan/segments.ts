import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { callDependency } from '../shared/errors';
import type { CorpusSource } from './corpus-sources';

/**
 * A corpus cut into Plan segments (one Map item each), and the reading of the lines a byte range of an object owns.
 *
 * A large uncompressed source is cut into byte ranges; the lines of a range are the lines that START in it, so the
 * ranges of one object, read one by one, give every line of the object exactly once. Ranges are cut only at LF: a
 * CRLF ends at its LF and a lone CR never ends a range (a file whose lines all end at a lone CR is read whole by its
 * first range). Every range therefore holds whole lines as parseBlock splits them (LF, CRLF, lone CR), and the line
 * counts of an object's ranges add up to the object's.
 */

/** One piece of a segment: a whole source, or the lines of an uncompressed source that start in [start, end). */
export interface SegmentPart {
  /** The source's index in the listing (reading order). */
  source: number;
  key: string;
  size: number;
  etag?: string;
  gzip: boolean;
  /** Byte range of the object whose lines this part owns; a whole source is [0, size). */
  start: number;
  end: number;
}

/** One Map item of Plan: parts read one after another by one invocation. */
export interface PlanSegment {
  index: number;
  parts: SegmentPart[];
  /** The bytes of its parts' ranges, added up. */
  bytes: number;
}

/** Default segment size (bytes of corpus per invocation). */
export const DEFAULT_SEGMENT_BYTES = 256 * 1024 * 1024;
/** Most parts in one segment (keeps a Map item far below Step Functions' 256 KB). */
export const MAX_PARTS_PER_SEGMENT = 500;

const LF = 0x0a;
const CR = 0x0d;

/**
 * Cuts a corpus's sources (in listing order) into segments. A source larger than `segmentBytes` whose index is in
 * `splittable` (and that is not gzip: a gzip stream cannot be entered mid-way) is cut into ceil(size / segmentBytes)
 * byte ranges of equal size (to a byte), each a segment of its own. Every other source is a whole part, packed
 * greedily in order into segments of up to `segmentBytes` and {@link MAX_PARTS_PER_SEGMENT} parts (a whole source
 * larger than `segmentBytes` is a segment of its own). Empty sources are parts too, so every source is in a segment.
 * @throws RangeError when segmentBytes is not a positive safe integer
 */
export function cutSegments(
  sources: readonly CorpusSource[],
  segmentBytes: number,
  splittable: ReadonlySet<number>,
): PlanSegment[] {
  if (!Number.isSafeInteger(segmentBytes) || segmentBytes <= 0) {
    throw new RangeError(`segmentBytes must be a positive integer, not ${segmentBytes}`);
  }
  const segments: PlanSegment[] = [];
  let open: SegmentPart[] = [];
  let openBytes = 0;
  const close = (): void => {
    if (open.length === 0) return;
    segments.push({ index: segments.length, parts: open, bytes: openBytes });
    open = [];
    openBytes = 0;
  };
  sources.forEach((source, index) => {
    const base = {
      source: index,
      key: source.key,
      size: source.size,
      ...(source.etag !== undefined ? { etag: source.etag } : {}),
      gzip: source.gzip,
    };
    if (source.size > segmentBytes && !source.gzip && splittable.has(index)) {
      close();
      const ranges = Math.ceil(source.size / segmentBytes);
      for (let k = 0; k < ranges; k++) {
        const start = Math.floor((k * source.size) / ranges);
        const end = Math.floor(((k + 1) * source.size) / ranges);
        segments.push({ index: segments.length, parts: [{ ...base, start, end }], bytes: end - start });
      }
      return;
    }
    if (open.length > 0 && (openBytes + source.size > segmentBytes || open.length >= MAX_PARTS_PER_SEGMENT)) {
      close();
    }
    open.push({ ...base, start: 0, end: source.size });
    openBytes += source.size;
  });
  close();
  return segments;
}

/** Where a part's lines are: a ranged read opener. `range` is an HTTP Range value like `bytes=10-` . */
export type OpenRange = (range: string) => Promise<AsyncIterable<Uint8Array>>;

/**
 * The object read is not the one listed (its size or etag changed since), or not the bytes asked for (another range).
 */
export class SourceChangedError extends Error {
  override readonly name = 'SourceChangedError';
}

/**
 * The bytes of the lines that start in [start, end) of an object of `size` bytes: from the first line start at or after
 * `start` (start itself when start is 0 or byte start-1 is an LF; otherwise just after the first LF at or after start)
 * to the end of the line holding byte end-1 (just after the first LF at or after end-1), or the object's end. Reads one
 * ranged GET from start-1 (open-ended) and stops reading (returns the iterator, which destroys an SDK body) once past
 * its end; a part that owns no line (its range lies inside one line) may still read up to its end. Consecutive parts
 * of one object own consecutive, non-overlapping byte ranges that together are the whole object. Chunks are views of
 * the body's chunks, never copies.
 * @throws SourceChangedError when the body read is longer than the object's listed size, or ends before it while its
 * lines are still wanted
 */
export async function* ownedBytes(
  open: OpenRange,
  part: Pick<SegmentPart, 'start' | 'end' | 'size'>,
): AsyncGenerator<Buffer> {
  const { start, end, size } = part;
  // Nothing starts in an empty range (an empty object, too: a ranged GET of it would fail with 416).
  if (start >= end || start >= size) return;
  const from = start === 0 ? 0 : start - 1;
  const body = await open(`bytes=${from}-`);
  // The offset in the object of the next chunk's first byte.
  let at = from;
  // Whether the owned lines have begun: with start > 0 they begin after the first LF at or after start-1.
  let begun = start === 0;
  for await (const raw of body) {
    const chunk = asBuffer(raw);
    const chunkStart = at;
    at += chunk.length;
    if (at > size) {
      throw new SourceChangedError(
        `the object goes on past byte ${size}, the size its listing gave: it changed since it was listed`,
      );
    }
    let offset = 0;
    if (!begun) {
      const lf = chunk.indexOf(LF);
      if (lf === -1) {
        // No line starts before end when no LF is at or before end-2: the range lies within one line.
        if (at - 1 >= end - 2) return;
        continue;
      }
      if (chunkStart + lf + 1 >= end) return;
      begun = true;
      offset = lf + 1;
    }
    // The owned lines end at the first LF at or after end-1.
    const searchFrom = Math.max(offset, end - 1 - chunkStart);
    const lf = searchFrom < chunk.length ? chunk.indexOf(LF, searchFrom) : -1;
    if (lf !== -1) {
      yield chunk.subarray(offset, lf + 1);
      return;
    }
    if (offset < chunk.length) yield chunk.subarray(offset);
  }
  if (at < size) {
    throw new SourceChangedError(
      `the object ended at byte ${at} while its listing gave ${size} bytes: it changed since it was listed`,
    );
  }
}

/**
 * The number of lines in a stream, as parseBlock counts them: each LF ends one, a CR not followed by an LF ends one
 * (a CR at a chunk's end followed by an LF in the next is one CRLF), and text after the last LF is one more line
 * (a final CR only ends it).
 */
export async function countLines(chunks: AsyncIterable<Buffer>): Promise<number> {
  let lines = 0;
  // The last chunk ended in a CR, whose next byte decides whether it ended a line on its own.
  let pendingCr = false;
  // Bytes came after the last LF.
  let tail = false;
  for await (const chunk of chunks) {
    if (chunk.length === 0) continue;
    if (pendingCr && chunk[0] !== LF) lines++;
    for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) lines++;
    const last = chunk.length - 1;
    for (let i = chunk.indexOf(CR); i !== -1 && i < last; i = chunk.indexOf(CR, i + 1)) {
      if (chunk[i + 1] !== LF) lines++;
    }
    pendingCr = chunk[last] === CR;
    const lastLf = chunk.lastIndexOf(LF);
    tail = lastLf === -1 ? true : lastLf < last;
  }
  return tail ? lines + 1 : lines;
}

/**
 * An {@link OpenRange} over an S3 object: a GetObject with the Range, its Body as the chunks. Given the listed etag,
 * the object must still be that one (IfMatch, and the answer's ETag for stores that ignore IfMatch), so a replaced
 * object fails instead of being read in pieces of two versions. S3 errors go through callDependency (a throttled or
 * failed call is a TransientDependencyError, the workflow's to retry).
 * @throws SourceChangedError when the etag no longer matches, or S3 answers with another range than asked
 */
export function openRangeFromS3(s3: S3Client, bucket: string, key: string, etag?: string): OpenRange {
  const where = `s3://${bucket}/${key}`;
  return async (range) => {
    const out = await callDependency('S3 GetObject', () =>
      s3.send(
        new GetObjectCommand({ Bucket: bucket, Key: key, Range: range, ...(etag ? { IfMatch: etag } : {}) }),
      ),
    ).catch((err: unknown) => {
      if ((err as { name?: string }).name !== 'PreconditionFailed') throw err;
      throw new SourceChangedError(`${where} changed since it was listed (its etag is no longer ${etag})`, {
        cause: err,
      });
    });
    const body = out.Body as (AsyncIterable<Uint8Array> & { destroy?: () => void }) | undefined;
    const refuse = (why: string): never => {
      // The body is never read: its connection is released now, not when it times out.
      body?.destroy?.();
      throw new SourceChangedError(`${where}: ${why}`);
    };
    const answered = out.ETag?.replace(/"/g, '');
    if (etag && answered !== undefined && answered !== etag) {
      refuse(`changed since it was listed (its etag is ${answered}, not ${etag})`);
    }
    // A body from another offset (a store that ignored the Range) would misplace every line.
    const first = /^bytes=(\d+)-/.exec(range)?.[1];
    if (first !== undefined && !out.ContentRange?.startsWith(`bytes ${first}-`)) {
      refuse(
        `asked for ${range}, got ${out.ContentRange ? `Content-Range ${out.ContentRange}` : 'no Content-Range'}`,
      );
    }
    return body ?? refuse(`GetObject ${range} returned no body`);
  };
}

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}
