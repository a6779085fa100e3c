import type { S3Client } from '@aws-sdk/client-s3';
import { planKeys, type FailureLine, type RecordFormat } from '../shared/contracts';
import type { FailureLaneSender, RefusalHandler } from '../shared/failure-lane';
import { faultPoint } from '../shared/fault-points';
import type { Ledger, PublishedEntry } from '../shared/ledger';
import type { ModelFamily } from '../shared/model-catalog';
import type { PromptSettings } from '../shared/records';
import { JsonlObjectWriter, putJson } from '../shared/s3-jsonl';
import type { SourceReader } from './corpus-sources';
import { parseCorpus, type LineOutcome, type RecordOutcome } from './parse-pool';
import type { SegmentPart } from './segments';
import { sizeLine } from '../batch/shard-slices';

/**
 * One segment of Plan (one item of the Plan Map): its parts read in order, every line checked on its own, records
 * looked up in the ledger, the work items of the records it may process written, and an index of every record line
 * by recordId for the merge. What a line is by itself (a bad line, a refused source) is final here; what depends on
 * other lines of the corpus (a recordId seen earlier, in this segment or another) is left to the merge, which sees
 * every segment's index: this segment only knows which of its record lines came first *within the segment*.
 */

/** A segment's part, with where its line numbers start. */
export interface PlannedPart extends SegmentPart {
  /**
   * The starts of the earlier byte-range parts of the same source: the part's first line follows their lines (the
   * line-count Map wrote each one's count). Absent for a part that starts at byte 0.
   */
  countedBefore?: number[];
}

/** One segment as the Plan Map hands it over. */
export interface PlannedSegment {
  index: number;
  parts: PlannedPart[];
  bytes: number;
}

/** What one part gave: its non-blank lines, its bad lines, and why it (or its rest) was refused. */
export interface PartTally {
  lines: number;
  invalid: number;
  error?: { code: string; message: string };
}

/** What a segment wrote, for the merge (`planKeys.segmentSummary`). */
export interface SegmentSummary {
  segment: number;
  parts: PartTally[];
  /** Non-blank lines of the segment. */
  lines: number;
  /** Lines that are bad by themselves (and refused sources): final, each in the segment's failures file. */
  invalid: number;
  /** Record lines in the index. */
  indexed: number;
  items: { lines: number; bytes: number };
  failures: { lines: number; bytes: number };
  index: { bytes: number };
}

/**
 * The kind of a record line in a segment's index: the first line of its recordId in the segment (`P` to process,
 * `S` skipped as published, `R` published with other content), or a later line of the same recordId (`O`).
 */
export type IndexKind = 'P' | 'S' | 'R' | 'O';

/** One record line of a segment's index. */
export interface IndexEntry {
  recordId: string;
  contentHash: string;
  /** The part of the segment the line is in. */
  part: number;
  line: number;
  kind: IndexKind;
  /** `P`: the work item's line number (0-based) in the segment's items file. */
  ordinal: number;
  /** `P`: where its work item line starts in the segment's items file (bytes). */
  itemOffset: number;
  /** `P`: its work item line's size, newline included. */
  itemBytes: number;
  format: RecordFormat;
  /** `P`: its size in a batch input file. */
  batchBytes: number;
  /** `R`: the run that published the recordId with other content. */
  ledgerRun: string;
}

/** What a segment pass needs. */
export interface SegmentPassOptions {
  s3: S3Client;
  ledger: Ledger;
  failureLane: FailureLaneSender;
  outputBucket: string;
  runId: string;
  ledgerScope: string;
  segment: PlannedSegment;
  /** Whether the corpus has several sources (then line messages name theirs). */
  multiSource: boolean;
}

/** One part to read: its bytes, and the line its first line is. */
export interface PartInput {
  /** The part's JSONL bytes (a whole source through its SourceReader, or a byte range's owned lines). */
  bytes: AsyncIterable<Buffer>;
  /** A whole source's reader: its problem, known once the bytes ended, refuses the source (or its rest). */
  reader?: SourceReader;
  firstLine: number;
  workers: number;
}

/** How the segment is parsed. */
export interface SegmentParseSettings {
  prompt: PromptSettings;
  family?: ModelFamily;
}

const LEDGER_LOOKUP_CHUNK = 100;
const LEDGER_LOOKUPS_IN_FLIGHT = 8;

/** A first-in-segment record waiting for its ledger lookup, and the block of item lines it is a slice of. */
interface Pending {
  record: RecordOutcome;
  items: Buffer;
  part: number;
}

/** Consecutive item lines of one block, written to the items file as one slice. */
interface ItemRun {
  items: Buffer;
  start: number;
  end: number;
  lines: number;
}

/** Reads one segment (see the module comment); {@link run} returns its summary once its files are written. */
export class SegmentPass {
  private readonly tallies: PartTally[] = [];
  /** The index lines (formatIndexEntry): a string each, half the memory of an object per record line. */
  private readonly entries: string[] = [];
  private readonly seen = new Set<string>();
  private readonly items: JsonlObjectWriter;
  private readonly failures: PlanFailureFile;
  private readonly lookups: { chunk: Pending[]; published: Promise<Map<string, PublishedEntry>> }[] = [];
  private chunk: Pending[] = [];
  private itemLines = 0;
  /** The records to process as the shard cut sizes them, in items order (batch/shard-slices.ts). */
  private readonly sizes: JsonlObjectWriter;
  private itemBytes = 0;
  private lines = 0;
  private invalid = 0;

  constructor(private readonly options: SegmentPassOptions) {
    this.items = new JsonlObjectWriter(
      options.s3,
      options.outputBucket,
      planKeys.segmentItems(options.runId, options.segment.index),
    );
    this.sizes = new JsonlObjectWriter(
      options.s3,
      options.outputBucket,
      planKeys.segmentSizes(options.runId, options.segment.index),
    );
    this.failures = new PlanFailureFile(
      options,
      planKeys.segmentFailures(options.runId, options.segment.index),
    );
  }

  /** Reads the parts in order, writes the segment's items, failures, index and (last) summary. */
  async run(parts: AsyncIterable<PartInput>, parse: SegmentParseSettings): Promise<SegmentSummary> {
    let i = 0;
    for await (const input of parts) await this.readPart(i++, input, parse);
    await this.submitChunk();
    while (this.lookups.length > 0) await this.writeOldestChunk();
    const items = await this.items.close();
    await this.sizes.close();
    const failures = (await this.failures.close()) ?? { lines: 0, bytes: 0 };
    const index = await this.writeIndex();
    const summary: SegmentSummary = {
      segment: this.options.segment.index,
      parts: this.tallies,
      lines: this.lines,
      invalid: this.invalid,
      indexed: this.entries.length,
      items,
      failures,
      index,
    };
    const { s3, outputBucket, runId, segment } = this.options;
    faultPoint('plan', 'segment-before-summary');
    await putJson(s3, outputBucket, planKeys.segmentSummary(runId, segment.index), summary);
    return summary;
  }

  private async readPart(part: number, input: PartInput, parse: SegmentParseSettings): Promise<void> {
    const tally: PartTally = { lines: 0, invalid: 0 };
    this.tallies.push(tally);
    const blocks = parseCorpus(input.bytes, {
      prompt: parse.prompt,
      workers: input.workers,
      firstLine: input.firstLine,
      source: this.keyOf(part),
      ...(parse.family ? { family: parse.family } : {}),
    });
    for await (const block of blocks) {
      for (const outcome of block.outcomes) await this.take(outcome, block.items, part, tally);
    }
    const problem = input.reader?.problem;
    if (problem) {
      // The source, or its rest, is one bad "line": one failure line with the reason, whatever its size.
      const { code, message } = problem;
      tally.error = { code, message };
      this.countLine(tally);
      await this.recordFailure(tally, {
        source: this.keyOf(part),
        stage: 'source',
        error: { code, message, retryable: false },
      });
    }
  }

  private countLine(tally: PartTally): void {
    this.lines++;
    tally.lines++;
  }

  /** One line's outcome: a bad line recorded; a record indexed, and queued for its ledger lookup when first here. */
  private async take(outcome: LineOutcome, items: Buffer, part: number, tally: PartTally): Promise<void> {
    this.countLine(tally);
    if (!outcome.ok) {
      const { code, message, recordId } = outcome.problem;
      await this.recordFailure(tally, {
        ...(recordId ? { recordId } : {}),
        source: this.keyOf(part),
        line: outcome.line,
        stage: 'plan',
        error: { code, message: this.inSource(message, part), retryable: false },
      });
      return;
    }
    if (this.seen.has(outcome.recordId)) {
      // A later line of a recordId seen in this segment: the merge decides (duplicate or conflict) against the
      // recordId's first line in the corpus, which may be in an earlier segment.
      this.entries.push(formatIndexEntry(entry(outcome, part, 'O')));
      return;
    }
    this.seen.add(outcome.recordId);
    this.chunk.push({ record: outcome, items, part });
    if (this.chunk.length >= LEDGER_LOOKUP_CHUNK) await this.submitChunk();
  }

  private keyOf(part: number): string {
    return this.options.segment.parts[part]!.key;
  }

  /** A line message naming its source when the corpus has several (one source: its key is the corpus). */
  private inSource(message: string, part: number): string {
    return this.options.multiSource ? `${this.keyOf(part)}: ${message}` : message;
  }

  /** Starts the ledger lookup of the current chunk; settles the oldest chunk once enough lookups are in flight. */
  private async submitChunk(): Promise<void> {
    if (this.chunk.length === 0) return;
    const ids = this.chunk.map((p) => p.record.recordId);
    const published = this.options.ledger.lookupPublished(this.options.ledgerScope, ids);
    published.catch(() => undefined); // awaited in order by writeOldestChunk
    this.lookups.push({ chunk: this.chunk, published });
    this.chunk = [];
    if (this.lookups.length >= LEDGER_LOOKUPS_IN_FLIGHT) await this.writeOldestChunk();
  }

  /**
   * Settles the oldest looked-up chunk: indexes each record as published (`S`), published with other content (`R`)
   * or to process (`P`, its work item written). The merge turns `R` into a failure only for a recordId's first line.
   */
  private async writeOldestChunk(): Promise<void> {
    const next = this.lookups.shift();
    if (!next) return;
    const published = await next.published;
    let run: ItemRun | undefined;
    const writeRun = async (): Promise<void> => {
      if (run) await this.items.writeLines(run.items.subarray(run.start, run.end), run.lines);
      run = undefined;
    };
    for (const { record, items: blockItems, part } of next.chunk) {
      const found = published.get(record.recordId);
      if (found?.contentHash !== undefined && found.contentHash !== record.contentHash) {
        this.entries.push(formatIndexEntry({ ...entry(record, part, 'R'), ledgerRun: found.runId }));
      } else if (found) this.entries.push(formatIndexEntry(entry(record, part, 'S')));
      else {
        const itemBytes = record.end - record.start;
        await this.sizes.writeLine(sizeLine(record.format, record.batchBytes));
        this.entries.push(
          formatIndexEntry({
            ...entry(record, part, 'P'),
            ordinal: this.itemLines++,
            itemOffset: this.itemBytes,
            itemBytes,
          }),
        );
        this.itemBytes += itemBytes;
        if (run && run.items === blockItems && run.end === record.start) {
          run.end = record.end;
          run.lines++;
        } else {
          await writeRun();
          run = { items: blockItems, start: record.start, end: record.end, lines: 1 };
        }
      }
    }
    await writeRun();
  }

  /**
   * The index, sorted by recordId, then by where the line is (part, line): a recordId's first line (indexed when its
   * ledger lookup settled, after later lines of it may have been) comes first. The lines sort as plain strings (see
   * {@link formatIndexEntry}).
   */
  private async writeIndex(): Promise<{ bytes: number }> {
    const { s3, outputBucket, runId, segment } = this.options;
    this.entries.sort();
    const writer = new JsonlObjectWriter(s3, outputBucket, planKeys.segmentIndex(runId, segment.index));
    for (const line of this.entries) await writer.writeLine(line);
    const { bytes } = await writer.close();
    return { bytes };
  }

  /** A bad line: counted, written to the segment's failures file and sent to the failure lane. */
  private async recordFailure(tally: PartTally, failure: FailureLine): Promise<void> {
    this.invalid++;
    tally.invalid++;
    await this.failures.record(failure);
  }
}

/**
 * A failures file of Plan (a segment's, the merge's), created with its first line: each failure is written to it and
 * sent to the failure lane, and a message SQS refuses adds a line saying so.
 */
export class PlanFailureFile {
  private writer: JsonlObjectWriter | undefined;

  constructor(
    private readonly options: Pick<
      SegmentPassOptions,
      's3' | 'outputBucket' | 'runId' | 'ledgerScope' | 'failureLane'
    >,
    private readonly key: string,
  ) {}

  /** Writes the failure and hands it to the failure lane. */
  async record(failure: FailureLine): Promise<void> {
    const { runId, ledgerScope } = this.options;
    await this.write(failure);
    await this.options.failureLane.add({ ...failure, runId, ledgerScope }, this.onLaneRefused);
  }

  /** Flushes the failure lane (its refusals add lines), then closes the file: what it holds, if it was written. */
  async close(): Promise<{ key: string; lines: number; bytes: number } | undefined> {
    await this.options.failureLane.flush();
    if (!this.writer) return undefined;
    return { key: this.key, ...(await this.writer.close()) };
  }

  // The bad line keeps its own failure line; what SQS refused is only its copy in the DLQ, which this line says.
  private readonly onLaneRefused: RefusalHandler = ({ message, code, reason }) =>
    this.write(laneRefusal(message, code, reason));

  private async write(failure: FailureLine): Promise<void> {
    this.writer ??= new JsonlObjectWriter(this.options.s3, this.options.outputBucket, this.key);
    await this.writer.write(failure);
  }
}

function entry(record: RecordOutcome, part: number, kind: IndexKind): IndexEntry {
  return {
    recordId: record.recordId,
    contentHash: record.contentHash,
    part,
    line: record.line,
    kind,
    ordinal: -1,
    itemOffset: -1,
    itemBytes: 0,
    format: record.format,
    batchBytes: record.batchBytes,
    ledgerRun: '',
  };
}

/**
 * One index line (without its newline): tab-separated fields, the recordId first, then the part and the line
 * zero-padded, so that lines sort as strings by (recordId, part, line). recordIds are printable ASCII (records.ts), so
 * no tab or line end can be in one, and a tab sorts before any character of an id: `a` before `a-1`. A ledger run id
 * is an execution name (no tabs either).
 */
export function formatIndexEntry(e: IndexEntry): string {
  const part = String(e.part).padStart(PART_DIGITS, '0');
  const line = String(e.line).padStart(LINE_DIGITS, '0');
  // join, not a template literal: a template of 21 pieces is a tree of string nodes until something flattens it, and
  // a segment holds one line per record line until it ends.
  return [
    e.recordId,
    part,
    line,
    e.contentHash,
    e.kind,
    e.ordinal,
    e.itemOffset,
    e.itemBytes,
    e.format,
    e.batchBytes,
    e.ledgerRun,
  ].join('\t');
}

/** Digits of a part's index in an index line (a segment holds at most MAX_PARTS_PER_SEGMENT parts). */
const PART_DIGITS = 4;
/** Digits of a line number in an index line (a source of up to 10^12 lines). */
const LINE_DIGITS = 12;

/** Reads one index line (without its newline), as {@link formatIndexEntry} wrote it. */
export function parseIndexEntry(text: string): IndexEntry {
  const f = text.split('\t');
  if (f.length !== 11) throw new Error(`not a Plan index line: ${JSON.stringify(text.slice(0, 200))}`);
  return {
    recordId: f[0]!,
    part: Number(f[1]),
    line: Number(f[2]),
    contentHash: f[3]!,
    kind: f[4] as IndexKind,
    ordinal: Number(f[5]),
    itemOffset: Number(f[6]),
    itemBytes: Number(f[7]),
    format: f[8] as RecordFormat,
    batchBytes: Number(f[9]),
    ledgerRun: f[10]!,
  };
}

/** The failure line of a bad line whose failure-lane message SQS refused (the DLQ does not hold it). */
function laneRefusal(message: FailureLine, code: string, reason: string): FailureLine {
  const where = message.line === undefined ? 'a bad line' : `line ${message.line}`;
  return {
    ...(message.recordId ? { recordId: message.recordId } : {}),
    ...(message.source === undefined ? {} : { source: message.source }),
    ...(message.line === undefined ? {} : { line: message.line }),
    stage: message.stage,
    error: {
      code: 'FailureLaneRefused',
      message: `${where}: SQS refused its failure-lane message (${code}: ${reason}), so the failure dead-letter queue does not hold it; its reason is the ${message.error.code} failure of the same line in this file`,
      retryable: false,
    },
  };
}
