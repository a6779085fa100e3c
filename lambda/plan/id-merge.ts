import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { planKeys, type FailureLine, type RecordFormat } from '../shared/contracts';
import { CorpusNotFoundError } from '../shared/errors';
import type { FailureLaneSender } from '../shared/failure-lane';
import { openObject, readLines } from '../shared/s3-jsonl';
import type { FormatTotals } from '../batch/shard-writer';
import { parseIndexEntry, PlanFailureFile, type IndexEntry, type PlannedSegment } from './segment-pass';

/**
 * The merge's pass over the segments' indexes: a k-way merge of the sorted index files, one recordId at a time with
 * its lines from every segment in corpus order, deciding what only the whole corpus can tell. The first line of a
 * recordId is its record (to process, skipped as published, or refused because the ledger holds other content for
 * it); every later line is a duplicate when its content is the same, a conflict otherwise, and when a later line was
 * the first of its own segment (a work item there), its item is dropped. Memory: one read-ahead per segment and the
 * lines of one recordId.
 */

/** What the merge decided, for the counts, the items to drop and the sources' record counts. */
export interface IdResolution {
  records: number;
  duplicates: number;
  skipped: number;
  toProcess: number;
  /** Failures the merge wrote (RecordIdReused, ConflictingRecordId). */
  invalid: number;
  totals: Record<RecordFormat, FormatTotals>;
  /** Per segment, the work items to leave out of its items file: their lines and byte ranges. */
  drops: Map<number, ItemDrop[]>;
  /** Distinct records per source (its index in the listing). */
  sourceRecords: Map<number, number>;
  /** The merge's failures file (`planKeys.mergeFailures`), when it wrote one. */
  failures?: { key: string; lines: number; bytes: number };
}

/** A work item to leave out of a segment's items file: its line (0-based) and its bytes `[offset, offset + bytes)`. */
export interface ItemDrop {
  ordinal: number;
  offset: number;
  bytes: number;
}

/** What the id merge needs. */
export interface IdMergeOptions {
  s3: S3Client;
  failureLane: FailureLaneSender;
  outputBucket: string;
  runId: string;
  ledgerScope: string;
  segments: readonly PlannedSegment[];
  /** Whether the corpus has several sources (then messages name theirs). */
  multiSource: boolean;
  /** Whether the run may go to batch jobs (then the records to process are summed per format). */
  batchPossible: boolean;
}

/** An entry with the segment it came from. */
interface Located extends IndexEntry {
  segment: number;
}

/** One segment's index, read line by line. */
class IndexCursor {
  current: Located | undefined;
  private readonly lines: AsyncIterator<string>;

  constructor(
    readonly segment: number,
    body: Readable,
  ) {
    this.lines = readLines(body)[Symbol.asyncIterator]();
  }

  async advance(): Promise<void> {
    for (;;) {
      const next = await this.lines.next();
      if (next.done) {
        this.current = undefined;
        return;
      }
      if (next.value === '') continue;
      this.current = { ...parseIndexEntry(next.value), segment: this.segment };
      return;
    }
  }
}

/** Cursors ordered by their current entry's recordId, then segment: a binary min-heap. */
class CursorHeap {
  private readonly heap: IndexCursor[] = [];

  get size(): number {
    return this.heap.length;
  }

  peek(): IndexCursor | undefined {
    return this.heap[0];
  }

  push(cursor: IndexCursor): void {
    const h = this.heap;
    h.push(cursor);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  pop(): IndexCursor | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: IndexCursor, b: IndexCursor): boolean {
  const x = a.current!;
  const y = b.current!;
  if (x.recordId !== y.recordId) return x.recordId < y.recordId;
  return a.segment < b.segment;
}

/** Merges the segments' indexes: see the module comment. */
export async function resolveIds(options: IdMergeOptions): Promise<IdResolution> {
  const { s3, outputBucket, runId } = options;
  const resolution: IdResolution = {
    records: 0,
    duplicates: 0,
    skipped: 0,
    toProcess: 0,
    invalid: 0,
    totals: { converse: { records: 0, bytes: 0 }, native: { records: 0, bytes: 0 } },
    drops: new Map(),
    sourceRecords: new Map(),
  };
  const heap = new CursorHeap();
  const bodies: Readable[] = [];
  const failures = new PlanFailureFile(options, planKeys.mergeFailures(runId));
  const fail = async (failure: FailureLine): Promise<void> => {
    resolution.invalid++;
    await failures.record(failure);
  };
  try {
    for (const segment of options.segments) {
      const key = planKeys.segmentIndex(runId, segment.index);
      const body = await openObject(s3, outputBucket, key);
      if (!body)
        throw new CorpusNotFoundError(
          `Plan segment ${segment.index} wrote no index (s3://${outputBucket}/${key})`,
        );
      bodies.push(body);
      const cursor = new IndexCursor(segment.index, body);
      await cursor.advance();
      if (cursor.current) heap.push(cursor);
    }
    const group: Located[] = [];
    while (heap.size > 0) {
      group.length = 0;
      const recordId = heap.peek()!.current!.recordId;
      while (heap.size > 0 && heap.peek()!.current!.recordId === recordId) {
        const cursor = heap.pop()!;
        // A segment's lines of one recordId are consecutive in its index, in line order.
        while (cursor.current?.recordId === recordId) {
          group.push(cursor.current);
          await cursor.advance();
        }
        if (cursor.current) heap.push(cursor);
      }
      await decide(group, resolution, options, fail);
    }
    const written = await failures.close();
    if (written) resolution.failures = written;
  } finally {
    for (const body of bodies) body.destroy();
  }
  return resolution;
}

/** One recordId's lines across the corpus, in order: its record, its duplicates and its conflicts. */
async function decide(
  group: readonly Located[],
  resolution: IdResolution,
  options: IdMergeOptions,
  fail: (failure: FailureLine) => Promise<void>,
): Promise<void> {
  const first = group[0]!;
  const firstSource = sourceOf(options, first);
  if (first.kind === 'R') {
    await fail(reusedId(first, options));
  } else {
    // The first line of a recordId in the corpus is the first of its segment: P, S or R, never O.
    resolution.records++;
    resolution.sourceRecords.set(
      firstSource.source,
      (resolution.sourceRecords.get(firstSource.source) ?? 0) + 1,
    );
    if (first.kind === 'S') resolution.skipped++;
    else {
      resolution.toProcess++;
      if (options.batchPossible) {
        resolution.totals[first.format].records++;
        resolution.totals[first.format].bytes += first.batchBytes;
      }
    }
  }
  for (let i = 1; i < group.length; i++) {
    const later = group[i]!;
    if (later.kind === 'P') {
      let drops = resolution.drops.get(later.segment);
      if (!drops) resolution.drops.set(later.segment, (drops = []));
      drops.push({ ordinal: later.ordinal, offset: later.itemOffset, bytes: later.itemBytes });
    }
    if (later.contentHash === first.contentHash) {
      resolution.duplicates++;
      continue;
    }
    const laterSource = sourceOf(options, later);
    const firstWhere =
      firstSource.source === laterSource.source
        ? `line ${first.line}`
        : `line ${first.line} of ${firstSource.key}`;
    const message = `line ${later.line} reuses recordId ${JSON.stringify(later.recordId)} of ${firstWhere} with different content; give it its own recordId`;
    await fail({
      source: laterSource.key,
      line: later.line,
      stage: 'plan',
      error: {
        code: 'ConflictingRecordId',
        message: options.multiSource ? `${laterSource.key}: ${message}` : message,
        retryable: false,
      },
    });
  }
}

function sourceOf(options: IdMergeOptions, entry: Located): { source: number; key: string } {
  const part = options.segments[entry.segment]?.parts[entry.part];
  if (!part)
    throw new Error(`Plan index names part ${entry.part} of segment ${entry.segment}, which does not exist`);
  return { source: part.source, key: part.key };
}

function reusedId(entry: Located, options: IdMergeOptions): FailureLine {
  const { key } = sourceOf(options, entry);
  return {
    recordId: entry.recordId,
    source: key,
    line: entry.line,
    stage: 'plan',
    error: {
      code: 'RecordIdReused',
      message: `${options.multiSource ? `${key}: ` : ''}line ${entry.line}: recordId ${JSON.stringify(entry.recordId)} was already published in ledger scope ${JSON.stringify(options.ledgerScope)} (run ${entry.ledgerRun}) with different content; give this record its own recordId, or run it under another ledgerScope`,
      retryable: false,
    },
  };
}
