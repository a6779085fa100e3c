import { isUtf8 } from 'node:buffer';
import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { RecordFormat } from '../shared/contracts';
import type { ModelFamily } from '../shared/model-catalog';
import {
  cleanLine,
  lineTooLong,
  MAX_ITEM_BYTES,
  MAX_LINE_BYTES,
  readRecord,
  recordTooLarge,
  sha256,
  type LineProblem,
  type PromptSettings,
  type ReadRecord,
} from '../shared/records';
import { splitCr } from '../shared/s3-jsonl';

/**
 * Plan's parse stage: the corpus cut into blocks of whole lines, each block decoded, split, validated, canonicalized
 * and hashed either in this thread or in a pool of worker threads, and the outcomes handed back in corpus order.
 *
 * Parsing is most of Plan's CPU (JSON.parse, the canonical JSON, SHA-256, the item's text), and the rest of Plan (the
 * duplicate tracker, ledger lookups, writing) needs the records in order but not the parsing itself, so a function with
 * several vCPUs (Lambda gives one per 1,769 MB, six at 10,240 MB) spreads it over them: the main thread only cuts the
 * stream into blocks at line ends and counts their lines (memchr speed), which numbers every line before it is parsed.
 *
 * The workers run this same file: the bundle (`__filename` of the deployed function) or, from the TypeScript source
 * (the local runtime, tests), this module through tsx. A module that imports this one therefore also loads in each
 * worker; its top-level code must only define things (a handler module does), never start work.
 */

/** One non-blank corpus line after parsing: the record to plan, or why the line was rejected. */
export type LineOutcome = RecordOutcome | { ok: false; line: number; problem: LineProblem };

/** A line that is a valid record. */
export interface RecordOutcome {
  ok: true;
  /** 1-based line number in the corpus. */
  line: number;
  recordId: string;
  format: RecordFormat;
  /** contentHashOf(modelInput). */
  contentHash: string;
  /** Where its work item line (JSON and newline, UTF-8) is in the block's `items`: `[start, end)`. */
  start: number;
  end: number;
  /** The size of its line in a batch input file (batchLineBytes). */
  batchBytes: number;
}

/** A block of lines after parsing. */
export interface ParsedBlock {
  /** The outcomes of its non-blank lines, in order. */
  outcomes: LineOutcome[];
  /** The work item lines of its records, one after another, each ending in a newline. */
  items: Buffer;
}

/** Blocks are cut at the first line end from this many bytes on. */
export const BLOCK_BYTES = 1024 * 1024;
/** Blocks waiting for, or in, each worker: enough to keep it busy while the main thread takes a result. */
const BLOCKS_IN_FLIGHT_PER_WORKER = 2;
const LF = 0x0a;
const CR = 0x0d;
const WORKER_ROLE = 'corpus-plan-parse';
/**
 * Blocks larger than this hold a very long line (blocks are cut near BLOCK_BYTES otherwise): they are parsed in the
 * main thread, whose heap is sized for the function, so a worker's small heap never has to take one.
 */
const WORKER_MAX_BLOCK_BYTES = 4 * 1024 * 1024;
/**
 * A worker's heap: its live data is a block or two (at most WORKER_MAX_BLOCK_BYTES each, a few times that once
 * decoded and parsed). With V8's defaults (a young generation of up to 48 MiB, an old one sized for the whole
 * machine) each worker grew by tens of MB over a long corpus and used more CPU (cache misses) (bench/README.md).
 * 16 MiB rather than 4: a record leaves about 8 KB of short-lived strings and objects, and with 4 MiB the scavenges
 * (eight times as many) cost about 9% of the parse stage's CPU.
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 16, maxOldGenerationSizeMb: 64 };

/**
 * The worker threads worth starting on this machine: one per CPU beyond the main thread's, at most `max`. None on
 * one CPU, where a worker would only add copying.
 */
export function defaultParseWorkers(max = 8): number {
  return Math.max(0, Math.min(max, availableParallelism() - 1));
}

/**
 * Parses one block of lines (the corpus's first `firstLine - 1` lines come before it). Lines end at LF, CRLF or a lone
 * CR, as readLines splits them; blank lines are left out; a UTF-8 BOM is dropped from line 1. The records' work item
 * lines are encoded here, into one buffer, so the thread that writes them only copies bytes.
 * @returns the parsed block, and how many lines it held (blank ones included)
 */
export function parseBlock(
  block: Buffer,
  firstLine: number,
  prompt: PromptSettings,
  maxLineBytes = MAX_LINE_BYTES,
  family?: ModelFamily,
  source?: string,
): ParsedBlock & { lines: number } {
  const valid = isUtf8(block);
  // toString turns invalid UTF-8 into U+FFFD silently; only a block that is not valid UTF-8 pays for finding the lines.
  const notUtf8 = valid ? undefined : invalidUtf8Lines(block, firstLine);
  const outcomes: LineOutcome[] = [];
  const encoder = new ItemEncoder(source);
  let lineNo = firstLine - 1;
  const take = (raw: string): void => {
    lineNo++;
    const invalid = notUtf8?.get(lineNo);
    if (invalid) {
      outcomes.push({ ok: false, line: lineNo, problem: invalid });
      return;
    }
    const line = cleanLine(raw, lineNo === 1);
    if (line.trim() === '') return;
    const read = readRecord(line, lineNo, prompt, maxLineBytes, family);
    outcomes.push(read.ok ? encoder.add(read, lineNo) : { ok: false, line: lineNo, problem: read.problem });
  };
  if (valid && block.indexOf(CR) === -1) {
    // The common case: lines decoded one by one from the bytes, so a line of ASCII is a one-byte string (a block with
    // one non-ASCII character decodes to a two-byte string, which every later step reads slower).
    let start = 0;
    for (let nl = block.indexOf(LF); nl !== -1; nl = block.indexOf(LF, start)) {
      take(block.toString('utf8', start, nl));
      start = nl + 1;
    }
    if (start < block.length) take(block.toString('utf8', start));
  } else {
    const text = block.toString('utf8');
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      const raw = nl === -1 ? text.slice(start) : text.slice(start, nl);
      // The text after the last LF is a line only when there is some (the last line of a file without a final LF).
      if (nl !== -1 || raw !== '') {
        if (raw.includes('\r')) for (const piece of splitCr(raw)) take(piece);
        else take(raw);
      }
      if (nl === -1) break;
      start = nl + 1;
    }
  }
  return { outcomes, items: encoder.finish(outcomes), lines: lineNo - firstLine + 1 };
}

/** Room kept before a record's modelInput for its head: `{"recordId":` + the id's JSON (at most 514) + the format. */
const HEAD_ROOM = 600;
/** `,"modelInput":` and `}`, what a batch line has besides the recordId's head and the modelInput. */
const BATCH_LINE_EXTRA = 15;
/** A parse thread's working buffer for item lines, kept between blocks (it only grows to the largest block's needs). */
let scratch = Buffer.allocUnsafeSlow(0);

/**
 * Encodes a block's work item lines (`{"recordId":R,"format":"F","modelInput":M,"source":S,"line":N}`; `source` when
 * known) into
 * one buffer: each modelInput's canonical JSON is encoded to UTF-8 once, hashed from those bytes and copied once more
 * into the block's items, never held as another string.
 */
class ItemEncoder {
  /** Where each record's item line is in the scratch buffer, `[start, end)` pairs (the newline not included). */
  private readonly ranges: number[] = [];
  private used = 0;
  /** `,"source":S` when the source is known, written before each item's line number. */
  private readonly sourceField: string;
  private readonly sourceBytes: number;

  constructor(source: string | undefined) {
    this.sourceField = source === undefined ? '' : `,"source":${JSON.stringify(source)}`;
    this.sourceBytes = Buffer.byteLength(this.sourceField);
  }

  /** Hashes and encodes one record; its outcome, or RecordTooLarge. */
  add(read: Extract<ReadRecord, { ok: true }>, lineNo: number): LineOutcome {
    const { canonicalInput, format } = read;
    const inputStart = this.used + HEAD_ROOM;
    // An object key may be any UTF-8: the tail's size in bytes is the source's plus the ASCII rest.
    const tail = `${this.sourceField},"line":${lineNo}}`;
    const tailBytes = this.sourceBytes + tail.length - this.sourceField.length;
    this.reserve(inputStart + canonicalInput.length * 3 + tailBytes + 1);
    const inputEnd = inputStart + scratch.write(canonicalInput, inputStart, 'utf8');
    const inputBytes = inputEnd - inputStart;
    const contentHash = sha256(scratch.subarray(inputStart, inputEnd)).slice(0, 32);
    const recordId = read.recordId ?? `h-${contentHash}`;
    const idHead = `{"recordId":${JSON.stringify(recordId)}`;
    // recordIds are printable ASCII (records.ts), so the head's length in characters is its length in bytes.
    const head = `${idHead},"format":"${format}","modelInput":`;
    const bytes = head.length + inputBytes + tailBytes;
    if (bytes > MAX_ITEM_BYTES)
      return { ok: false, line: lineNo, problem: recordTooLarge(lineNo, recordId, bytes) };
    const start = inputStart - head.length;
    scratch.write(head, start, 'latin1');
    const end = inputEnd + scratch.write(tail, inputEnd, 'utf8');
    this.ranges.push(start, end);
    this.used = end;
    return {
      ok: true,
      line: lineNo,
      recordId,
      format,
      contentHash,
      // Placeholders: finish() sets where the line is in the block's items.
      start: 0,
      end: 0,
      batchBytes: idHead.length + BATCH_LINE_EXTRA + inputBytes + 1,
    };
  }

  /** The item lines, each ending in a newline, in a buffer of their own; sets the records' start and end in it. */
  finish(outcomes: LineOutcome[]): Buffer {
    const ranges = this.ranges;
    let size = 0;
    for (let i = 0; i < ranges.length; i += 2) size += (ranges[i + 1] as number) - (ranges[i] as number) + 1;
    // Its own memory (never a slice of Buffer's shared pool), so it can be transferred from a worker.
    const items = Buffer.allocUnsafeSlow(size);
    let offset = 0;
    let r = 0;
    for (const outcome of outcomes) {
      if (!outcome.ok) continue;
      outcome.start = offset;
      offset += scratch.copy(items, offset, ranges[r] as number, ranges[r + 1] as number);
      items[offset++] = LF;
      outcome.end = offset;
      r += 2;
    }
    return items;
  }

  private reserve(bytes: number): void {
    if (bytes <= scratch.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(bytes, scratch.length * 2, BLOCK_BYTES * 2));
    scratch.copy(grown, 0, 0, this.used);
    scratch = grown;
  }
}

/**
 * The lines of a block that are not valid UTF-8, by line number, each with its InvalidUtf8 problem. Lines are cut as
 * parseBlock cuts the decoded text (an invalid sequence never hides an LF or a CR: decoding replaces it and keeps
 * them), so the numbers agree.
 */
function invalidUtf8Lines(block: Buffer, firstLine: number): Map<number, LineProblem> {
  const invalid = new Map<number, LineProblem>();
  let lineNo = firstLine - 1;
  const check = (start: number, end: number): void => {
    lineNo++;
    const line = block.subarray(start, end);
    if (isUtf8(line)) return;
    const at = firstInvalidUtf8(line);
    // The offending byte and the continuation bytes (10xxxxxx) after it, at most four in all.
    let upTo = at + 1;
    while (upTo < Math.min(line.length, at + 4) && ((line[upTo] as number) & 0xc0) === 0x80) upTo++;
    const shown = [...line.subarray(at, upTo)].map((b) => `0x${b.toString(16).padStart(2, '0')}`).join(' ');
    invalid.set(lineNo, {
      code: 'InvalidUtf8',
      message: `line ${lineNo} is not valid UTF-8: at byte offset ${at} of the line, ${shown} is no UTF-8 character; save the corpus as UTF-8`,
    });
  };
  let start = 0;
  for (;;) {
    const nl = block.indexOf(LF, start);
    const end = nl === -1 ? block.length : nl;
    // As parseBlock: the bytes after the last LF are a line only when there are some; CRs split, a final CR ends one.
    if (nl !== -1 || end > start) {
      let from = start;
      for (let cr = block.indexOf(CR, from); cr !== -1 && cr < end; cr = block.indexOf(CR, from)) {
        check(from, cr);
        from = cr + 1;
      }
      if (from < end || from === start) check(from, end);
    }
    if (nl === -1) break;
    start = nl + 1;
  }
  return invalid;
}

/** The offset of the first byte of `bytes` that does not begin a well-formed UTF-8 sequence (RFC 3629). */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length;) {
    const lead = bytes[i] as number;
    let length: number;
    let min = 0x80;
    let max = 0xbf;
    if (lead < 0x80) length = 1;
    else if (lead >= 0xc2 && lead <= 0xdf) length = 2;
    else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      // No overlong forms (E0 A0..), no surrogates (ED 80..9F).
      if (lead === 0xe0) min = 0xa0;
      if (lead === 0xed) max = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      // No overlong forms (F0 90..), nothing above U+10FFFF (F4 80..8F).
      if (lead === 0xf0) min = 0x90;
      if (lead === 0xf4) max = 0x8f;
    } else return i;
    for (let k = 1; k < length; k++) {
      const next = bytes[i + k];
      if (next === undefined || next < (k === 1 ? min : 0x80) || next > (k === 1 ? max : 0xbf)) return i;
    }
    i += length;
  }
  return bytes.length;
}

/**
 * How many lines parseBlock counts in `block`, from the bytes alone: each LF ends one, and so does each CR not followed
 * by an LF, except one that ends the block (it ends the line the text after the last LF makes, counted once).
 */
export function countLines(block: Buffer): number {
  let lines = 0;
  for (let i = block.indexOf(LF); i !== -1; i = block.indexOf(LF, i + 1)) lines++;
  for (let i = block.indexOf(CR); i !== -1; i = block.indexOf(CR, i + 1)) {
    if (i + 1 < block.length && block[i + 1] !== LF) lines++;
  }
  // Text after the last LF is one more line (even a lone CR: it ends an empty line).
  if (block.length > block.lastIndexOf(LF) + 1) lines++;
  return lines;
}

/** A line {@link cutBlocks} skipped because it is longer than the line limit: never held whole. */
export interface SkippedLine {
  skipped: true;
  /** Its size in bytes, without its line end. */
  bytes: number;
}

/** What {@link cutBlocks} measured while cutting, for callers that watch its memory. */
export interface CutStats {
  /** The most bytes it held at once (the block being gathered). */
  maxPendingBytes: number;
}

const NO_BYTES = Buffer.alloc(0);

/**
 * Cuts a byte stream into blocks that end at a line end (the last block may not): each is cut at the first line end
 * from its `blockBytes`-th byte on, whatever the size of the stream's chunks, so it is at least `blockBytes` long and
 * longer by less than a line. A block is a fresh Buffer that owns its memory, so it can be transferred to a worker.
 *
 * Memory stays bounded whatever the lines: once the line being gathered (since the last LF or lone CR) grows past
 * `maxLineBytes`, the lines before it go out as a block and the rest of it is counted and dropped up to its line end;
 * it is yielded as a {@link SkippedLine} in its place (one line). A longer line that came within one chunk is left in
 * its block for parseLine to reject: the stream's chunk held it already.
 */
export async function* cutBlocks(
  stream: AsyncIterable<Buffer | string>,
  blockBytes = BLOCK_BYTES,
  maxLineBytes = MAX_LINE_BYTES,
  stats?: CutStats,
): AsyncGenerator<Buffer | SkippedLine> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  // Where the line being gathered starts in the pending bytes: after the last LF seen.
  let lineStart = 0;
  // The line being skipped: its bytes so far, and whether it ended at a CR (an LF right after still belongs to it).
  let skipping: { bytes: number; endedAtCr: boolean } | undefined;
  for await (const piece of stream) {
    let chunk = typeof piece === 'string' ? Buffer.from(piece) : piece;
    while (chunk.length > 0) {
      if (skipping) {
        if (skipping.endedAtCr) {
          if (chunk[0] === LF) chunk = chunk.subarray(1);
          yield { skipped: true, bytes: skipping.bytes };
          skipping = undefined;
          continue;
        }
        const lf = chunk.indexOf(LF);
        const cr = chunk.indexOf(CR);
        const end = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
        if (end === -1) {
          skipping.bytes += chunk.length;
          break;
        }
        skipping.bytes += end;
        chunk = chunk.subarray(end + 1);
        if (end === lf) {
          yield { skipped: true, bytes: skipping.bytes };
          skipping = undefined;
        } else skipping.endedAtCr = true;
        continue;
      }
      const lf = chunk.indexOf(LF, Math.max(0, blockBytes - pendingBytes - 1));
      if (lf !== -1) {
        pending.push(chunk.subarray(0, lf + 1));
        yield ownedConcat(pending, pendingBytes + lf + 1);
        pending = [];
        pendingBytes = 0;
        lineStart = 0;
        chunk = chunk.subarray(lf + 1);
        continue;
      }
      const lastLf = chunk.lastIndexOf(LF);
      if (lastLf !== -1) lineStart = pendingBytes + lastLf + 1;
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (stats && pendingBytes > stats.maxPendingBytes) stats.maxPendingBytes = pendingBytes;
      chunk = NO_BYTES;
      // One byte of slack: the line may end in the CR of a CRLF whose LF has not come yet.
      if (pendingBytes - lineStart <= maxLineBytes + 1) break;
      // Lines also end at a lone CR: a CR before the last byte (whose next byte is known, and is no LF here).
      const cr = lastIndexIn(pending, CR, lineStart, pendingBytes - 1);
      if (cr !== -1 && pendingBytes - (cr + 1) <= maxLineBytes + 1) {
        // Lines ended by lone CRs, each short enough: cut after the last one.
        const [head, tail] = splitAt(pending, cr + 1);
        yield ownedConcat(head, cr + 1);
        pending = tail;
        pendingBytes -= cr + 1;
        lineStart = 0;
        break;
      }
      const start = cr === -1 ? lineStart : cr + 1;
      if (start > 0) yield ownedConcat(splitAt(pending, start)[0], start);
      const endedAtCr = pending.at(-1)?.at(-1) === CR;
      skipping = { bytes: pendingBytes - start - (endedAtCr ? 1 : 0), endedAtCr };
      pending = [];
      pendingBytes = 0;
      lineStart = 0;
    }
  }
  if (skipping) yield { skipped: true, bytes: skipping.bytes };
  else if (pendingBytes > 0) yield ownedConcat(pending, pendingBytes);
}

function ownedConcat(parts: Buffer[], length: number): Buffer {
  const out = Buffer.allocUnsafeSlow(length);
  let offset = 0;
  for (const part of parts) offset += part.copy(out, offset);
  return out;
}

/** The parts before byte `at` of their concatenation, and the parts from it on (views, no copy). */
function splitAt(parts: readonly Buffer[], at: number): [Buffer[], Buffer[]] {
  const head: Buffer[] = [];
  const tail: Buffer[] = [];
  let offset = 0;
  for (const part of parts) {
    if (offset + part.length <= at) head.push(part);
    else if (offset >= at) tail.push(part);
    else {
      head.push(part.subarray(0, at - offset));
      tail.push(part.subarray(at - offset));
    }
    offset += part.length;
  }
  return [head, tail];
}

/** The last position of `byte` in the concatenation of `parts` within `[from, to)`, or -1. */
function lastIndexIn(parts: readonly Buffer[], byte: number, from: number, to: number): number {
  let end = parts.reduce((n, p) => n + p.length, 0);
  for (let i = parts.length - 1; i >= 0 && end > from; i--) {
    const part = parts[i] as Buffer;
    const start = end - part.length;
    const last = Math.min(part.length, to - start) - 1;
    if (last >= 0) {
      const at = part.lastIndexOf(byte, last);
      if (at !== -1 && start + at >= from) return start + at;
    }
    end = start;
  }
  return -1;
}

/** Options of {@link parseCorpus}. */
export interface ParseCorpusOptions {
  /** How to turn `{id, text}` lines into requests. */
  prompt: PromptSettings;
  /** Worker threads to parse in; 0 parses in this thread. */
  workers: number;
  /** @default BLOCK_BYTES */
  blockBytes?: number;
  /** Lines longer than this are skipped unread (LineTooLong). @default MAX_LINE_BYTES */
  maxLineBytes?: number;
  /** The configured model's family: tells its native bodies from Converse requests (records.ts detectFormat). */
  family?: ModelFamily;
  /** The number of the stream's first line in its source (a byte range of a source starts after its earlier lines). @default 1 */
  firstLine?: number;
  /** The corpus object the stream is read from: each work item names it (`source`), so later failures can too. */
  source?: string;
}

/**
 * Parses a corpus stream, yielding its blocks' outcomes in corpus order.
 * With workers, blocks are parsed ahead in parallel (at most two per worker at once, so memory stays bounded);
 * the workers are stopped when the iteration ends, whether it completes, fails or is abandoned.
 */
export async function* parseCorpus(
  stream: AsyncIterable<Buffer | string>,
  options: ParseCorpusOptions,
): AsyncGenerator<ParsedBlock> {
  const maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  const blocks = cutBlocks(stream, options.blockBytes, maxLineBytes);
  if (options.workers <= 0) {
    let nextLine = options.firstLine ?? 1;
    for await (const block of blocks) {
      if (!Buffer.isBuffer(block)) {
        yield skippedLine(nextLine++, block, maxLineBytes);
        continue;
      }
      const parsed = parseBlock(
        block,
        nextLine,
        options.prompt,
        maxLineBytes,
        options.family,
        options.source,
      );
      nextLine += parsed.lines;
      yield parsed;
    }
    return;
  }
  const pool = new ParsePool(options.workers, {
    prompt: options.prompt,
    maxLineBytes,
    family: options.family,
    source: options.source,
  });
  const window: Promise<ParsedBlock>[] = [];
  try {
    let nextLine = options.firstLine ?? 1;
    for await (const block of blocks) {
      const firstLine = nextLine;
      if (!Buffer.isBuffer(block)) {
        nextLine++;
        window.push(Promise.resolve(skippedLine(firstLine, block, maxLineBytes)));
        if (window.length >= options.workers * BLOCKS_IN_FLIGHT_PER_WORKER) yield await window.shift()!;
        continue;
      }
      nextLine += countLines(block);
      const parsed =
        block.length > WORKER_MAX_BLOCK_BYTES
          ? Promise.resolve(
              parseBlock(block, firstLine, options.prompt, maxLineBytes, options.family, options.source),
            )
          : pool.parse(block, firstLine);
      parsed.catch(() => undefined); // awaited in order below
      window.push(parsed);
      if (window.length >= options.workers * BLOCKS_IN_FLIGHT_PER_WORKER) yield await window.shift()!;
    }
    while (window.length > 0) yield await window.shift()!;
  } finally {
    await pool.close();
  }
}

/** The outcome of a line cutBlocks skipped for its length. */
function skippedLine(line: number, skipped: SkippedLine, limit: number): ParsedBlock {
  return {
    outcomes: [{ ok: false, line, problem: lineTooLong(line, skipped.bytes, limit) }],
    items: NO_BYTES,
  };
}

/** Raised when a parse worker fails (it crashed, ran out of memory or could not start). */
export class ParseWorkerError extends Error {
  override readonly name = 'ParseWorkerError';
}

interface ParseRequest {
  id: number;
  block: Buffer;
  firstLine: number;
}
type ParseReply = { id: number; outcomes: LineOutcome[]; items: Uint8Array } | { id: number; error: string };

/** Worker threads running parseBlock, handed blocks round-robin. */
class ParsePool {
  private readonly workers: Worker[] = [];
  private readonly waiting = new Map<
    number,
    { resolve: (b: ParsedBlock) => void; reject: (e: Error) => void }
  >();
  private nextId = 0;
  private closing = false;

  constructor(count: number, settings: Omit<WorkerSettings, 'role'>) {
    for (let i = 0; i < count; i++) {
      const worker = startWorker({ role: WORKER_ROLE, ...settings });
      worker.on('message', (reply: ParseReply) => this.settle(reply));
      worker.on('error', (err) => this.failAll(new ParseWorkerError(`parse worker failed: ${err.message}`)));
      worker.on('exit', (code) => {
        if (!this.closing) this.failAll(new ParseWorkerError(`parse worker exited with code ${code}`));
      });
      this.workers.push(worker);
    }
  }

  parse(block: Buffer, firstLine: number): Promise<ParsedBlock> {
    const id = this.nextId++;
    const worker = this.workers[id % this.workers.length]!;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      const request: ParseRequest = { id, block, firstLine };
      // The block owns its ArrayBuffer (cutBlocks), so it moves to the worker instead of being copied.
      worker.postMessage(request, [block.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.failAll(new ParseWorkerError('parse workers stopped'));
  }

  private settle(reply: ParseReply): void {
    const waiter = this.waiting.get(reply.id);
    if (!waiter) return;
    this.waiting.delete(reply.id);
    if ('error' in reply) waiter.reject(new ParseWorkerError(`parse worker failed: ${reply.error}`));
    else {
      const { buffer, byteOffset, byteLength } = reply.items;
      waiter.resolve({ outcomes: reply.outcomes, items: Buffer.from(buffer, byteOffset, byteLength) });
    }
  }

  private failAll(err: Error): void {
    for (const waiter of this.waiting.values()) waiter.reject(err);
    this.waiting.clear();
  }
}

function startWorker(data: WorkerSettings): Worker {
  if (__filename.endsWith('.ts')) {
    // From the TypeScript source: load this module through tsx (a dependency of the local runtime, never bundled).
    const source = `require('tsx/cjs'); require(${JSON.stringify(__filename)});`;
    return new Worker(source, { eval: true, workerData: data, resourceLimits: WORKER_LIMITS });
  }
  return new Worker(__filename, { workerData: data, resourceLimits: WORKER_LIMITS });
}

/** What a parse worker is started with. */
interface WorkerSettings {
  role: string;
  prompt: PromptSettings;
  maxLineBytes: number;
  family: ModelFamily | undefined;
  /** The corpus object the blocks come from (each work item names it). */
  source: string | undefined;
}

// In a parse worker: answer blocks until terminated.
if (!isMainThread && parentPort && (workerData as { role?: string } | null)?.role === WORKER_ROLE) {
  const port = parentPort;
  const { prompt, maxLineBytes, family, source } = workerData as WorkerSettings;
  port.on('message', (request: ParseRequest) => {
    try {
      const block = Buffer.from(request.block.buffer, request.block.byteOffset, request.block.byteLength);
      const { outcomes, items } = parseBlock(block, request.firstLine, prompt, maxLineBytes, family, source);
      const reply: ParseReply = { id: request.id, outcomes, items };
      port.postMessage(reply, [items.buffer as ArrayBuffer]);
    } catch (err) {
      const reply: ParseReply = {
        id: request.id,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      };
      port.postMessage(reply);
    }
  });
}
