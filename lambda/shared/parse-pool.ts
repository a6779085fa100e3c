import { availableParallelism } from 'node:os';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { RecordFormat } from './contracts';
import { cleanLine, parseLine, serializedItem, type LineProblem, type PromptSettings } from './records';
import { splitCr } from './s3-jsonl';
import { batchLineBytes } from './shard-writer';

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
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 };

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
): ParsedBlock & { lines: number } {
  const text = block.toString('utf8');
  const outcomes: LineOutcome[] = [];
  const texts: string[] = [];
  let offset = 0;
  let lineNo = firstLine - 1;
  const take = (raw: string): void => {
    lineNo++;
    const line = cleanLine(raw, lineNo === 1);
    if (line.trim() === '') return;
    const parsed = parseLine(line, lineNo, prompt);
    if (!parsed.ok) {
      outcomes.push({ ok: false, line: lineNo, problem: parsed.problem });
      return;
    }
    const { item } = parsed;
    const known = serializedItem(item);
    const itemText = known?.text ?? JSON.stringify(item);
    texts.push(itemText);
    const start = offset;
    offset += (known?.bytes ?? Buffer.byteLength(itemText)) + 1;
    outcomes.push({
      ok: true,
      line: lineNo,
      recordId: item.recordId,
      format: item.format,
      contentHash: parsed.contentHash,
      start,
      end: offset,
      batchBytes: batchLineBytes(item),
    });
  };
  const hasCr = text.includes('\r');
  let start = 0;
  for (;;) {
    const nl = text.indexOf('\n', start);
    const raw = nl === -1 ? text.slice(start) : text.slice(start, nl);
    // The text after the last LF is a line only when there is some (the last line of a file without a final LF).
    if (nl !== -1 || raw !== '') {
      if (hasCr && raw.includes('\r')) for (const piece of splitCr(raw)) take(piece);
      else take(raw);
    }
    if (nl === -1) break;
    start = nl + 1;
  }
  // Its own memory (never a slice of Buffer's shared pool), so it can be transferred from a worker.
  const items = Buffer.allocUnsafeSlow(offset);
  if (texts.length > 0) {
    texts.push('');
    const written = items.write(texts.join('\n'));
    if (written !== offset) throw new Error(`item lines took ${written} bytes, ${offset} expected`);
  }
  return { outcomes, items, lines: lineNo - firstLine + 1 };
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

/**
 * Cuts a byte stream into blocks that end at a line end (the last block may not): each is cut at the first line end
 * from its `blockBytes`-th byte on, whatever the size of the stream's chunks, so it is at least `blockBytes` long and
 * longer by less than a line. A block is a fresh Buffer that owns its memory, so it can be transferred to a worker.
 */
export async function* cutBlocks(
  stream: AsyncIterable<Buffer | string>,
  blockBytes = BLOCK_BYTES,
): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const piece of stream) {
    let chunk = typeof piece === 'string' ? Buffer.from(piece) : piece;
    while (chunk.length > 0) {
      const lf = chunk.indexOf(LF, Math.max(0, blockBytes - pendingBytes - 1));
      if (lf === -1) {
        pending.push(chunk);
        pendingBytes += chunk.length;
        break;
      }
      pending.push(chunk.subarray(0, lf + 1));
      yield ownedConcat(pending, pendingBytes + lf + 1);
      pending = [];
      pendingBytes = 0;
      chunk = chunk.subarray(lf + 1);
    }
  }
  if (pendingBytes > 0) yield ownedConcat(pending, pendingBytes);
}

function ownedConcat(parts: Buffer[], length: number): Buffer {
  const out = Buffer.allocUnsafeSlow(length);
  let offset = 0;
  for (const part of parts) offset += part.copy(out, offset);
  return out;
}

/** Options of {@link parseCorpus}. */
export interface ParseCorpusOptions {
  /** How to turn `{id, text}` lines into requests. */
  prompt: PromptSettings;
  /** Worker threads to parse in; 0 parses in this thread. */
  workers: number;
  /** @default BLOCK_BYTES */
  blockBytes?: number;
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
  const blocks = cutBlocks(stream, options.blockBytes);
  if (options.workers <= 0) {
    let nextLine = 1;
    for await (const block of blocks) {
      const parsed = parseBlock(block, nextLine, options.prompt);
      nextLine += parsed.lines;
      yield parsed;
    }
    return;
  }
  const pool = new ParsePool(options.workers, options.prompt);
  const window: Promise<ParsedBlock>[] = [];
  try {
    let nextLine = 1;
    for await (const block of blocks) {
      const firstLine = nextLine;
      nextLine += countLines(block);
      const parsed =
        block.length > WORKER_MAX_BLOCK_BYTES
          ? Promise.resolve(parseBlock(block, firstLine, options.prompt))
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

  constructor(count: number, prompt: PromptSettings) {
    for (let i = 0; i < count; i++) {
      const worker = startWorker({ role: WORKER_ROLE, prompt });
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

function startWorker(data: { role: string; prompt: PromptSettings }): Worker {
  if (__filename.endsWith('.ts')) {
    // From the TypeScript source: load this module through tsx (a dependency of the local runtime, never bundled).
    const source = `require('tsx/cjs'); require(${JSON.stringify(__filename)});`;
    return new Worker(source, { eval: true, workerData: data, resourceLimits: WORKER_LIMITS });
  }
  return new Worker(__filename, { workerData: data, resourceLimits: WORKER_LIMITS });
}

// In a parse worker: answer blocks until terminated.
if (!isMainThread && parentPort && (workerData as { role?: string } | null)?.role === WORKER_ROLE) {
  const port = parentPort;
  const { prompt } = workerData as { prompt: PromptSettings };
  port.on('message', (request: ParseRequest) => {
    try {
      const block = Buffer.from(request.block.buffer, request.block.byteOffset, request.block.byteLength);
      const { outcomes, items } = parseBlock(block, request.firstLine, prompt);
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
