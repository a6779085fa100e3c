import type { S3Client } from '@aws-sdk/client-s3';
import { runKeys, type CorpusSourceEntry, type FailureLine, type RecordFormat } from '../shared/contracts';
import type { FailureLaneSender, RefusalHandler } from '../shared/failure-lane';
import type { Ledger, PublishedEntry } from '../shared/ledger';
import { DuplicateTracker, type PromptSettings } from '../shared/records';
import type { ModelFamily } from '../shared/model-catalog';
import { JsonlObjectWriter } from '../shared/s3-jsonl';
import type { FormatTotals } from '../batch/shard-writer';
import type { CorpusSource, SourceReader } from './corpus-sources';
import { parseCorpus, type LineOutcome, type RecordOutcome, type ParseCorpusOptions } from './parse-pool';

/** Plan's line counts: every line is a record or invalid; records are duplicates, skipped or to process. */
export interface PlanCounts {
  lines: number;
  records: number;
  invalid: number;
  duplicates: number;
  skipped: number;
  toProcess: number;
}

/** What one pass over the corpus needs. */
export interface CorpusPassOptions {
  s3: S3Client;
  ledger: Ledger;
  failureLane: FailureLaneSender;
  outputBucket: string;
  runId: string;
  ledgerScope: string;
  /** Whether the run may go to batch jobs: then the records to process are summed per format for the shard cut. */
  batchPossible: boolean;
}

/** How the corpus is parsed. */
export interface ParseSettings {
  prompt: PromptSettings;
  family?: ModelFamily;
}

/** One source to read: the object, its reader once opened, and the parse workers its size is worth. */
export interface PassSource {
  source: CorpusSource;
  /** Opens the source (GetObject) and wraps its bytes. */
  open: () => Promise<SourceReader>;
  workers: number;
}

/** What one source gave: its lines and records so far, and why it (or its rest) was refused. */
interface SourceTally {
  source: CorpusSource;
  /** Lines of the corpus before this source (its line n is the corpus's line `offset + n` for the duplicate tracker). */
  offset: number;
  lines: number;
  records: number;
  error?: { code: string; message: string };
}

const LEDGER_LOOKUP_CHUNK = 100;
const LEDGER_LOOKUPS_IN_FLIGHT = 8;

/** A parsed record waiting for its ledger lookup, and the block of item lines it is a slice of. */
interface Pending {
  record: RecordOutcome;
  items: Buffer;
  /** Its source's tally. */
  from: SourceTally;
}

/** Consecutive item lines of one block, written to the items file as one slice. */
interface ItemRun {
  items: Buffer;
  start: number;
  end: number;
  lines: number;
}

/**
 * One pass over the corpus: parses it, records every bad line (failures file and failure lane), drops identical
 * duplicates, looks records up in the ledger (several chunks in flight, ahead of the writer) and writes the items file
 * of the records to process in corpus order. Its counts and per-format totals are the pass's state, read when it ends.
 */
export class CorpusPass {
  /** The line counts so far. */
  readonly counts: PlanCounts = { lines: 0, records: 0, invalid: 0, duplicates: 0, skipped: 0, toProcess: 0 };
  /** The records to process per format (only summed when batch is possible). */
  readonly totals: Record<RecordFormat, FormatTotals> = {
    converse: { records: 0, bytes: 0 },
    native: { records: 0, bytes: 0 },
  };
  private readonly items: JsonlObjectWriter;
  private failures: JsonlObjectWriter | undefined;
  private readonly lookups: { chunk: Pending[]; published: Promise<Map<string, PublishedEntry>> }[] = [];
  private chunk: Pending[] = [];
  private readonly tallies: SourceTally[] = [];
  private multiSource = false;

  constructor(private readonly options: CorpusPassOptions) {
    this.items = new JsonlObjectWriter(options.s3, options.outputBucket, runKeys.items(options.runId));
  }

  /** Reads the sources in order to their end and closes the items and failures files. */
  async run(sources: readonly PassSource[], parse: ParseSettings): Promise<void> {
    await this.readCorpus(sources, parse);
    await this.submitChunk();
    while (this.lookups.length > 0) await this.writeOldestChunk();
    await this.items.close();
    // Before the failures file closes: a message SQS refuses adds a line to it.
    await this.options.failureLane.flush();
    if (this.failures) await this.failures.close();
  }

  /** Each source read, with its counts (known once {@link run} returned), in reading order. */
  sourceEntries(): CorpusSourceEntry[] {
    return this.tallies.map((t) => ({
      key: t.source.key,
      size: t.source.size,
      ...(t.source.etag ? { etag: t.source.etag } : {}),
      lines: t.lines,
      records: t.records,
      ...(t.error ? { error: t.error } : {}),
    }));
  }

  /** A method of its own so the duplicate tracker (about 24 bytes a record) is garbage by the second pass. */
  private async readCorpus(sources: readonly PassSource[], parse: ParseSettings): Promise<void> {
    const tracker = new DuplicateTracker();
    this.multiSource = sources.length > 1;
    for (const { source, open, workers } of sources) {
      const tally: SourceTally = { source, offset: this.counts.lines, lines: 0, records: 0 };
      this.tallies.push(tally);
      const reader = await open();
      const parseOptions: ParseCorpusOptions = {
        prompt: parse.prompt,
        workers,
        ...(parse.family ? { family: parse.family } : {}),
      };
      for await (const block of parseCorpus(reader.bytes(), parseOptions)) {
        for (const outcome of block.outcomes) await this.take(outcome, block.items, tally, tracker);
      }
      if (reader.problem) {
        // The source, or its rest, is one bad "line": one failure line with the reason, whatever its size.
        const { code, message } = reader.problem;
        tally.error = { code, message };
        this.counts.lines++;
        tally.lines++;
        await this.recordFailure({
          source: source.key,
          stage: 'source',
          error: { code, message, retryable: false },
        });
      }
    }
  }

  /** One line's outcome: a bad line recorded, a duplicate dropped, a record queued for its ledger lookup. */
  private async take(
    outcome: LineOutcome,
    items: Buffer,
    tally: SourceTally,
    tracker: DuplicateTracker,
  ): Promise<void> {
    const source = tally.source.key;
    this.counts.lines++;
    tally.lines++;
    if (!outcome.ok) {
      const { code, message, recordId } = outcome.problem;
      await this.recordFailure({
        ...(recordId ? { recordId } : {}),
        source,
        line: outcome.line,
        stage: 'plan',
        error: { code, message: this.inSource(message, tally), retryable: false },
      });
      return;
    }
    const verdict = tracker.check(outcome.recordId, outcome.contentHash, tally.offset + outcome.line);
    if (verdict.kind === 'identical') {
      this.counts.duplicates++;
      return;
    }
    if (verdict.kind === 'conflict') {
      // No top-level recordId: the record of the first line keeps that id in the results.
      const first = this.lineAt(verdict.firstLine);
      const firstWhere =
        first.tally === tally ? `line ${first.line}` : `line ${first.line} of ${first.tally.source.key}`;
      await this.recordFailure({
        source,
        line: outcome.line,
        stage: 'plan',
        error: {
          code: 'ConflictingRecordId',
          message: this.inSource(
            `line ${outcome.line} reuses recordId ${JSON.stringify(outcome.recordId)} of ${firstWhere} with different content; give it its own recordId`,
            tally,
          ),
          retryable: false,
        },
      });
      return;
    }
    this.counts.records++;
    tally.records++;
    this.chunk.push({ record: outcome, items, from: tally });
    if (this.chunk.length >= LEDGER_LOOKUP_CHUNK) await this.submitChunk();
  }

  /** A line message naming its source when the corpus has several (one source: its key is the corpus). */
  private inSource(message: string, tally: SourceTally): string {
    return this.multiSource ? `${tally.source.key}: ${message}` : message;
  }

  /** The source and line of a line of the corpus, numbered across sources. */
  private lineAt(corpusLine: number): { tally: SourceTally; line: number } {
    let lo = 0;
    let hi = this.tallies.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.tallies[mid]!.offset < corpusLine) lo = mid;
      else hi = mid - 1;
    }
    const tally = this.tallies[lo]!;
    return { tally, line: corpusLine - tally.offset };
  }

  /** Starts the ledger lookup of the current chunk; writes the oldest chunk once enough lookups are in flight. */
  private async submitChunk(): Promise<void> {
    if (this.chunk.length === 0) return;
    const ids = this.chunk.map((p) => p.record.recordId);
    const published = this.options.ledger.lookupPublished(this.options.ledgerScope, ids);
    published.catch(() => undefined); // awaited in order by writeOldestChunk
    this.lookups.push({ chunk: this.chunk, published });
    this.chunk = [];
    if (this.lookups.length >= LEDGER_LOOKUPS_IN_FLIGHT) await this.writeOldestChunk();
  }

  /** Settles the oldest looked-up chunk: skips what the ledger holds, writes the rest to the items file. */
  private async writeOldestChunk(): Promise<void> {
    const next = this.lookups.shift();
    if (!next) return;
    const published = await next.published;
    let run: ItemRun | undefined;
    const writeRun = async (): Promise<void> => {
      if (run) await this.items.writeLines(run.items.subarray(run.start, run.end), run.lines);
      run = undefined;
    };
    for (const { record, items: blockItems, from } of next.chunk) {
      const entry = published.get(record.recordId);
      if (entry?.contentHash !== undefined && entry.contentHash !== record.contentHash) {
        // Another corpus (or an edited one) reuses the id for different content: skipping it would silently drop
        // this record, processing it would overwrite the published answer.
        this.counts.records--;
        from.records--;
        await writeRun();
        await this.recordFailure(this.reusedId(record, entry, from));
      } else if (entry) this.counts.skipped++;
      else {
        this.countToProcess(record);
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

  private countToProcess(record: RecordOutcome): void {
    this.counts.toProcess++;
    if (!this.options.batchPossible) return;
    this.totals[record.format].records++;
    this.totals[record.format].bytes += record.batchBytes;
  }

  private reusedId(record: RecordOutcome, entry: PublishedEntry, from: SourceTally): FailureLine {
    return {
      recordId: record.recordId,
      source: from.source.key,
      line: record.line,
      stage: 'plan',
      error: {
        code: 'RecordIdReused',
        message: `${this.multiSource ? `${from.source.key}: ` : ''}line ${record.line}: recordId ${JSON.stringify(record.recordId)} was already published in ledger scope ${JSON.stringify(this.options.ledgerScope)} (run ${entry.runId}) with different content; give this record its own recordId, or run it under another ledgerScope`,
        retryable: false,
      },
    };
  }

  /** A bad line: counted, written to the run's plan failures file and sent to the failure lane. */
  private async recordFailure(failure: FailureLine): Promise<void> {
    const { runId, ledgerScope } = this.options;
    this.counts.invalid++;
    await this.writeFailure(failure);
    await this.options.failureLane.add({ ...failure, runId, ledgerScope }, this.onLaneRefused);
  }

  // The bad line keeps its own failure line; what SQS refused is only its copy in the DLQ, which this line says.
  private readonly onLaneRefused: RefusalHandler = ({ message, code, reason }) =>
    this.writeFailure(laneRefusal(message, code, reason));

  private async writeFailure(failure: FailureLine): Promise<void> {
    const { s3, outputBucket, runId } = this.options;
    this.failures ??= new JsonlObjectWriter(s3, outputBucket, runKeys.failures(runId, 'plan'));
    await this.failures.write(failure);
  }
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
