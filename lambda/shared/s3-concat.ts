import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import { callDependency, errorMessage } from './errors';
import { logger } from './observability';
import { InFlightLimiter } from './pool';
import { MIN_PART_BYTES } from './s3-jsonl';

/** S3's largest part (5 GiB) and most parts (10,000) of one multipart upload (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html). */
const MAX_PART_BYTES = 5 * 1024 * 1024 * 1024;
const MAX_PARTS = 10_000;
/** The size of the parts streamed through this process. */
const DEFAULT_PART_BYTES = 8 * 1024 * 1024;
/** Server-side copies in flight at once: they hold no memory here, only S3's time. */
const COPY_CONCURRENCY = 4;
const LF = 0x0a;

/** One object to append, in order. */
export interface ConcatPiece {
  /** Its key, in the target's bucket. */
  key: string;
  /**
   * Its size in bytes, from its writer (no HeadObject is made); it must be exact. With `offset`, the size of the byte
   * range `[offset, offset + size)` of the object that is appended.
   */
  size: number;
  /** Where in the object the appended bytes start (a byte range of it). @default 0, the whole object */
  offset?: number;
  /** 0-based ordinals of lines (LF-terminated; a last line without LF counts) of this object to leave out. */
  dropLines?: ReadonlySet<number>;
}

/** What {@link concatenateObjects} wrote. */
export interface ConcatResult {
  /** The target's size. */
  bytes: number;
  /** The parts of its multipart upload; 0 when it was small enough for one PutObject. */
  parts: number;
  /** Bytes of the target S3 copied server-side (UploadPartCopy). */
  copiedBytes: number;
  /** Bytes of the target streamed through this process (`bytes` = `copiedBytes` + `streamedBytes`). */
  streamedBytes: number;
}

/** Options of {@link concatenateObjects}. S3's limits are the defaults; tests may lower them. */
export interface ConcatOptions {
  /** The smallest part but the last. @default 5 MiB, S3's minimum */
  minPartBytes?: number;
  /** The size of the parts streamed through this process (one is buffered at a time). @default 8 MiB */
  partBytes?: number;
  /** The largest part (copied pieces larger than this are copied in several parts). @default 5 GiB, S3's maximum */
  maxPartBytes?: number;
  /** The most parts. @default 10,000, S3's maximum */
  maxParts?: number;
  /** The target's Content-Type. */
  contentType?: string;
}

/** The concatenation cannot be written: a piece is not the size its writer gave, or the target needs too many parts. */
export class ConcatenationError extends Error {
  override readonly name = 'ConcatenationError';
}

/**
 * Writes `target` as the concatenation of `pieces` (in order, all in `bucket`), leaving out each piece's `dropLines`,
 * without streaming what S3 can copy: a multipart upload whose parts are, in order,
 * - server-side copies (UploadPartCopy with a byte range) of each piece with no lines to leave out whose bytes make a
 *   part of at least the minimum size: when streamed bytes are pending (fewer than the minimum), the piece's first
 *   bytes are read (one ranged GetObject) to bring them to the minimum, and the rest of the piece is copied;
 * - parts of `partBytes` streamed from the other pieces (GetObject, filtered line by line when lines are left out);
 *   the last part may be smaller.
 *
 * A target that never reaches one streamed part and copies nothing (small, or empty) is written in one PutObject.
 * Memory stays at about one part. On any failure the multipart upload is aborted and the error rethrown; throttling
 * surfaces as TransientDependencyError.
 */
export async function concatenateObjects(
  s3: S3Client,
  bucket: string,
  target: string,
  pieces: readonly ConcatPiece[],
  options: ConcatOptions = {},
): Promise<ConcatResult> {
  const upload = new ConcatUpload(s3, bucket, target, options);
  try {
    for (const piece of pieces) await upload.append(piece);
    return await upload.finish();
  } catch (err) {
    await upload.abort(err);
    throw err;
  }
}

/** The state of one concatenation: the multipart upload (created at its first part) and the pending bytes. */
class ConcatUpload {
  private readonly minPartBytes: number;
  private readonly partBytes: number;
  private readonly maxPartBytes: number;
  private readonly maxParts: number;
  private readonly copies = new InFlightLimiter(COPY_CONCURRENCY);
  private uploadId: string | undefined;
  /** Part N at index N - 1; a copy's entry is filled when it completes. */
  private readonly parts: CompletedPart[] = [];
  private partCount = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private copiedBytes = 0;
  private streamedBytes = 0;

  constructor(
    private readonly s3: S3Client,
    private readonly bucket: string,
    private readonly target: string,
    private readonly options: ConcatOptions,
  ) {
    this.minPartBytes = options.minPartBytes ?? MIN_PART_BYTES;
    this.partBytes = options.partBytes ?? Math.max(DEFAULT_PART_BYTES, this.minPartBytes);
    this.maxPartBytes = options.maxPartBytes ?? MAX_PART_BYTES;
    this.maxParts = options.maxParts ?? MAX_PARTS;
    // A copy split in even parts keeps each at least half the largest part: that must still be a valid part.
    if (!(
      this.minPartBytes > 0 &&
      this.minPartBytes <= this.partBytes &&
      2 * this.partBytes <= this.maxPartBytes
    )) {
      throw new RangeError(
        `concatenateObjects needs 0 < minPartBytes <= partBytes <= maxPartBytes / 2 (got ${this.minPartBytes}, ${this.partBytes}, ${this.maxPartBytes})`,
      );
    }
  }

  async append(piece: ConcatPiece): Promise<void> {
    if (piece.size === 0) return;
    const drops = piece.dropLines !== undefined && piece.dropLines.size > 0 ? piece.dropLines : undefined;
    if (drops === undefined) {
      const topUp =
        this.pendingBytes > 0 && this.pendingBytes < this.minPartBytes
          ? this.minPartBytes - this.pendingBytes
          : 0;
      if (piece.size - topUp >= this.minPartBytes) {
        if (topUp > 0) await this.stream(piece, undefined, topUp);
        if (this.pendingBytes > 0) await this.uploadPending();
        await this.copy(piece, topUp);
        return;
      }
    }
    await this.stream(piece, drops);
  }

  async finish(): Promise<ConcatResult> {
    const bytes = this.copiedBytes + this.streamedBytes;
    if (this.uploadId === undefined) {
      await callDependency('S3 PutObject', () =>
        this.s3.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: this.target,
            Body: Buffer.concat(this.pending),
            ContentType: this.options.contentType,
          }),
        ),
      );
      return { bytes, parts: 0, copiedBytes: this.copiedBytes, streamedBytes: this.streamedBytes };
    }
    if (this.pendingBytes > 0) await this.uploadPending();
    await this.copies.drain();
    const uploadId = this.uploadId;
    await callDependency('S3 CompleteMultipartUpload', () =>
      this.s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: this.target,
          UploadId: uploadId,
          MultipartUpload: { Parts: this.parts },
        }),
      ),
    );
    return { bytes, parts: this.partCount, copiedBytes: this.copiedBytes, streamedBytes: this.streamedBytes };
  }

  /** Aborts the multipart upload, if one was created, after `cause` (the error the caller rethrows). */
  async abort(cause: unknown): Promise<void> {
    const uploadId = this.uploadId;
    if (uploadId === undefined) return;
    // Copies still in flight would add parts after the abort; their own failures, if any, follow from `cause`.
    await this.copies.drain().catch(() => undefined);
    try {
      await callDependency('S3 AbortMultipartUpload', () =>
        this.s3.send(
          new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.target, UploadId: uploadId }),
        ),
      );
    } catch (abortError) {
      // The caller rethrows `cause`, the failure that matters; the upload left behind is only storage until the
      // bucket's lifecycle rule for incomplete multipart uploads removes it.
      logger.warn('AbortMultipartUpload failed after a failed concatenation', {
        bucket: this.bucket,
        key: this.target,
        uploadId,
        cause: errorMessage(cause),
        error: errorMessage(abortError),
      });
    }
  }

  /**
   * Appends the piece's bytes (its first `length` only, when given) to the pending part, leaving out the lines in
   * `drops`; uploads a part each time `partBytes` are pending.
   */
  private async stream(
    piece: ConcatPiece,
    drops: ReadonlySet<number> | undefined,
    length?: number,
  ): Promise<void> {
    const offset = piece.offset ?? 0;
    const ranged = length !== undefined || piece.offset !== undefined;
    const out = await callDependency('S3 GetObject', () =>
      this.s3.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: piece.key,
          Range: ranged ? `bytes=${offset}-${offset + (length ?? piece.size) - 1}` : undefined,
        }),
      ),
    );
    // A whole piece's size is checked against the object's; a range's, by the bytes read below.
    if (piece.offset === undefined) {
      const objectSize = length === undefined ? out.ContentLength : Number(out.ContentRange?.split('/')[1]);
      if (objectSize !== piece.size) this.sizeMismatch(piece, objectSize);
    }
    const line = { ordinal: 0 };
    let read = 0;
    for await (const chunk of out.Body as Readable) {
      const bytes = chunk as Buffer;
      read += bytes.length;
      if (drops === undefined) await this.add(bytes);
      else for (const kept of keptBytes(bytes, line, drops)) await this.add(kept);
    }
    if (read !== (length ?? piece.size)) this.sizeMismatch(piece, read);
  }

  private sizeMismatch(piece: ConcatPiece, actual: number | undefined): never {
    throw new ConcatenationError(
      `s3://${this.bucket}/${piece.key} is ${String(actual)} bytes, not the ${piece.size} its writer gave`,
    );
  }

  private async add(bytes: Buffer): Promise<void> {
    if (bytes.length === 0) return;
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    this.streamedBytes += bytes.length;
    if (this.pendingBytes >= this.partBytes) await this.uploadPending();
  }

  private async uploadPending(): Promise<void> {
    const body = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    const uploadId = await this.ensureUpload();
    const partNumber = this.nextPartNumber();
    const out = await callDependency('S3 UploadPart', () =>
      this.s3.send(
        new UploadPartCommand({
          Bucket: this.bucket,
          Key: this.target,
          UploadId: uploadId,
          PartNumber: partNumber,
          Body: body,
        }),
      ),
    );
    this.parts[partNumber - 1] = { PartNumber: partNumber, ETag: this.etag(out.ETag, partNumber) };
  }

  /** Copies the piece from byte `from` to its end server-side, in even parts no larger than the largest part. */
  private async copy(piece: ConcatPiece, from: number): Promise<void> {
    const uploadId = await this.ensureUpload();
    const length = piece.size - from;
    const count = Math.ceil(length / this.maxPartBytes);
    const copySource = `${this.bucket}/${piece.key.split('/').map(encodeURIComponent).join('/')}`;
    let start = (piece.offset ?? 0) + from;
    for (let index = 0; index < count; index++) {
      const size = Math.floor(length / count) + (index < length % count ? 1 : 0);
      const partNumber = this.nextPartNumber();
      const range = `bytes=${start}-${start + size - 1}`;
      start += size;
      this.copiedBytes += size;
      await this.copies.add(async () => {
        const out = await callDependency('S3 UploadPartCopy', () =>
          this.s3.send(
            new UploadPartCopyCommand({
              Bucket: this.bucket,
              Key: this.target,
              UploadId: uploadId,
              PartNumber: partNumber,
              CopySource: copySource,
              CopySourceRange: range,
            }),
          ),
        );
        this.parts[partNumber - 1] = {
          PartNumber: partNumber,
          ETag: this.etag(out.CopyPartResult?.ETag, partNumber),
        };
      });
    }
  }

  private async ensureUpload(): Promise<string> {
    if (this.uploadId !== undefined) return this.uploadId;
    const out = await callDependency('S3 CreateMultipartUpload', () =>
      this.s3.send(
        new CreateMultipartUploadCommand({
          Bucket: this.bucket,
          Key: this.target,
          ContentType: this.options.contentType,
        }),
      ),
    );
    if (out.UploadId === undefined) {
      throw new ConcatenationError(
        `CreateMultipartUpload for s3://${this.bucket}/${this.target} gave no UploadId`,
      );
    }
    this.uploadId = out.UploadId;
    return out.UploadId;
  }

  private nextPartNumber(): number {
    if (this.partCount >= this.maxParts) {
      throw new ConcatenationError(
        `s3://${this.bucket}/${this.target} needs more than ${this.maxParts} parts, S3's limit: use larger parts (partBytes)`,
      );
    }
    return ++this.partCount;
  }

  private etag(etag: string | undefined, partNumber: number): string {
    if (etag === undefined) {
      throw new ConcatenationError(
        `part ${partNumber} of s3://${this.bucket}/${this.target} came back without an ETag`,
      );
    }
    return etag;
  }
}

/**
 * The bytes of `chunk` outside the lines in `drops`, as slices of it; `line.ordinal` is the line the chunk starts in
 * and is advanced past each LF, so a line that spans chunks is kept or left out whole.
 */
function* keptBytes(chunk: Buffer, line: { ordinal: number }, drops: ReadonlySet<number>): Generator<Buffer> {
  let keptFrom = 0;
  for (let at = 0; at < chunk.length;) {
    const lf = chunk.indexOf(LF, at);
    const end = lf === -1 ? chunk.length : lf + 1;
    if (drops.has(line.ordinal)) {
      if (at > keptFrom) yield chunk.subarray(keptFrom, at);
      keptFrom = end;
    }
    at = end;
    if (lf !== -1) line.ordinal++;
  }
  if (keptFrom < chunk.length) yield chunk.subarray(keptFrom);
}
