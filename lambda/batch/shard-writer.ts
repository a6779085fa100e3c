import type { S3Client } from '@aws-sdk/client-s3';
import type { BatchQuotas } from './quotas';
import { runKeys, type RecordFormat, type ShardItem, type WorkItem } from '../shared/contracts';
import { logger } from '../shared/observability';
import { serializedItem } from '../shared/records';
import { JsonlObjectWriter, openObject, readLineBuffers, readLines } from '../shared/s3-jsonl';
import {
  RecordNotShardableError,
  ShardAssigner,
  shardFileKey,
  shardInputPrefix,
  shardOutputPrefix,
  type ShardAssignment,
} from './sharding';

/** The size of a record in a batch input file: its `{"recordId", "modelInput"}` line plus the newline. */
export function batchLineBytes(item: Pick<WorkItem, 'recordId' | 'modelInput'>): number {
  const known = fromItemJson(item);
  if (known !== undefined) return known;
  return Buffer.byteLength(JSON.stringify(batchLine(item))) + 1;
}

/**
 * The batch line size of an item parseLine serialized, without serializing it again: the item's JSON is
 * `{"recordId":R,"format":"F","modelInput":M,"line":N}` and its batch line `{"recordId":R,"modelInput":M}`, so the
 * difference is the ASCII of `,"format":"F"` and `,"line":N`. Undefined when the item's text is not known or not of
 * that shape.
 */
function fromItemJson(item: Pick<WorkItem, 'recordId' | 'modelInput'>): number | undefined {
  const known = serializedItem(item);
  const { format, line } = item as Partial<WorkItem>;
  if (!known || (format !== 'converse' && format !== 'native') || !Number.isSafeInteger(line))
    return undefined;
  const lineSuffix = `,"line":${String(line)}}`;
  if (!known.text.endsWith(lineSuffix)) return undefined;
  // `,"format":"` + format + `"` and `,"line":` + digits; the closing brace stays.
  return known.bytes - (12 + format.length) - (lineSuffix.length - 1) + 1;
}

const ITEM_HEAD = Buffer.from('{"recordId":"');
const FORMAT_KEYS: Record<RecordFormat, Buffer> = {
  converse: Buffer.from(',"format":"converse","modelInput":'),
  native: Buffer.from(',"format":"native","modelInput":'),
};
const MODEL_INPUT_KEY = Buffer.from(',"modelInput":');
const LINE_KEY = Buffer.from(',"line":');
const SOURCE_KEY = Buffer.from(',"source":"');
const CLOSE = Buffer.from('}');

/** An items-file line cut into what a batch line is made of, without parsing it. */
interface RawItem {
  format: RecordFormat;
  /** `{"recordId":"<id>"` */
  head: Buffer;
  /** The modelInput's JSON. */
  modelInput: Buffer;
}

/**
 * Cuts an items-file line as Plan writes it (`{"recordId":"<id>","format":"<f>","modelInput":<json>,"line":<n>}`)
 * into its parts, or undefined when it is not exactly of that shape (the caller then parses it). Safe on UTF-8
 * bytes: a quote or backslash byte never occurs inside a multi-byte character.
 */
export function cutItemLine(line: Buffer): RawItem | undefined {
  if (
    line.length < ITEM_HEAD.length ||
    line.compare(ITEM_HEAD, 0, ITEM_HEAD.length, 0, ITEM_HEAD.length) !== 0
  )
    return undefined;
  // The recordId's closing quote: the first quote not escaped by an odd run of backslashes.
  let idEnd = -1;
  for (
    let quote = line.indexOf(0x22, ITEM_HEAD.length);
    quote !== -1;
    quote = line.indexOf(0x22, quote + 1)
  ) {
    let slashes = 0;
    while (line[quote - 1 - slashes] === 0x5c) slashes++;
    if (slashes % 2 === 0) {
      idEnd = quote + 1;
      break;
    }
  }
  if (idEnd === -1) return undefined;
  let format: RecordFormat | undefined;
  for (const candidate of ['converse', 'native'] as const) {
    const key = FORMAT_KEYS[candidate];
    if (
      line.length >= idEnd + key.length &&
      line.compare(key, 0, key.length, idEnd, idEnd + key.length) === 0
    ) {
      format = candidate;
      break;
    }
  }
  if (!format) return undefined;
  const inputStart = idEnd + FORMAT_KEYS[format].length;
  const lineKey = line.lastIndexOf(LINE_KEY);
  if (lineKey <= inputStart || line[line.length - 1] !== 0x7d) return undefined;
  const digitsStart = lineKey + LINE_KEY.length;
  if (digitsStart >= line.length - 1) return undefined;
  for (let i = digitsStart; i < line.length - 1; i++) {
    const byte = line[i] as number;
    if (byte < 0x30 || byte > 0x39) return undefined;
  }
  // A modelInput ends in `}`; a quote before the line number ends the source string Plan writes between them (an
  // unescaped `,"source":"` cannot be inside that string, so the last one is where it starts).
  let inputEnd = lineKey;
  if (line[lineKey - 1] === 0x22) {
    inputEnd = line.lastIndexOf(SOURCE_KEY, lineKey);
    if (inputEnd <= inputStart) return undefined;
  }
  return { format, head: line.subarray(0, idEnd), modelInput: line.subarray(inputStart, inputEnd) };
}

function batchLine(item: Pick<WorkItem, 'recordId' | 'modelInput'>): {
  recordId: string;
  modelInput: Record<string, unknown>;
} {
  return { recordId: item.recordId, modelInput: item.modelInput };
}

/** What the first pass counted, per record format, of the records to process. */
export interface FormatTotals {
  records: number;
  bytes: number;
}

/** What {@link writeShards} needs. */
export interface WriteShardsOptions {
  s3: S3Client;
  bucket: string;
  runId: string;
  /** The items file to cut (every record to process, in corpus order). */
  itemsKey: string;
  /** The first pass's totals per format. */
  totals: Record<RecordFormat, FormatTotals>;
  quotas: BatchQuotas;
}

/** What {@link writeShards} wrote. */
export interface WrittenShards {
  /** The records' format in the shards. */
  format: RecordFormat;
  shards: ShardItem[];
  /** Records written to the Converse tail (`runKeys.converseTail`). */
  viaConverse: number;
  /** Why records went to the tail, for the log. */
  notes: string[];
}

/**
 * Plan's second pass in batch mode: streams the items file once and writes each record either into a shard's input file
 * (balanced shards within every batch quota, see {@link ShardAssigner}) or into the Converse tail. A job takes one
 * record format, so the format with more records goes into jobs and the other one through Converse. Memory stays
 * flat: one shard file and the tail are open at a time.
 */
export async function writeShards(options: WriteShardsOptions): Promise<WrittenShards> {
  const { s3, bucket, totals, quotas } = options;
  const format: RecordFormat = totals.native.records > totals.converse.records ? 'native' : 'converse';
  const other: RecordFormat = format === 'native' ? 'converse' : 'native';
  const notes: string[] = [];
  if (totals[other].records > 0) {
    notes.push(
      `${totals[other].records} records in ${other} format go through Converse: a batch job takes one format and this run's jobs use ${format}`,
    );
  }
  const assigner =
    totals[format].records > 0
      ? new ShardAssigner({ quotas, totalRecords: totals[format].records, totalBytes: totals[format].bytes })
      : undefined;
  const writing = new ShardFiles(options, format);

  const body = await openObject(s3, bucket, options.itemsKey);
  if (!body) throw new Error(`items file s3://${bucket}/${options.itemsKey} is missing`);
  for await (const lines of readLineBuffers(body)) {
    for (const raw of lines) {
      if (raw.length > 0) await writing.place(raw, assigner);
    }
  }
  await writing.closeShardFile();
  if (writing.tooLarge > 0)
    notes.push(
      `${writing.tooLarge} records are larger than a batch input file may be: they go through Converse`,
    );

  const summary = assigner?.finish();
  let kept = writing.shards;
  if (summary && summary.underMinimum.length > 0) {
    kept = await writing.dropShards(new Set(summary.underMinimum));
    notes.push(
      `shards ${summary.underMinimum.join(', ')} ended under the job minimum (byte limits): their records go through Converse`,
    );
  }
  const viaConverse = await writing.closeTail();
  if (summary && summary.viaConverse > 0) {
    notes.push(
      `${summary.viaConverse} records are too few for another job of at least ${quotas.minRecordsPerJob} records: they go through Converse`,
    );
  }
  if (notes.length > 0) logger.info('records routed through Converse', { notes });
  return { format, shards: kept, viaConverse, notes };
}

/**
 * The files of {@link writeShards}' pass: the shards with their input files (one open at a time) and the Converse
 * tail, and how many records were too large for a batch input file.
 */
class ShardFiles {
  /** The shards so far, in order. */
  readonly shards: ShardItem[] = [];
  /** Records too large for a batch input file (sent to the tail). */
  tooLarge = 0;
  private file: JsonlObjectWriter | undefined;
  private tail: JsonlObjectWriter | undefined;

  constructor(
    private readonly options: WriteShardsOptions,
    private readonly format: RecordFormat,
  ) {}

  /**
   * Places one items line: into the current shard file, a new file or shard, or the tail. The line is cut as bytes,
   * not parsed: a batch line is the item's own recordId and modelInput text. Lines of another shape (an older
   * writer) are parsed and serialized instead.
   */
  async place(raw: Buffer, assigner: ShardAssigner | undefined): Promise<void> {
    const cut = cutItemLine(raw);
    const parsed = cut ? undefined : (JSON.parse(raw.toString('utf8')) as WorkItem);
    const recordFormat = cut ? cut.format : (parsed as WorkItem).format;
    const bytes = cut
      ? cut.head.length + MODEL_INPUT_KEY.length + cut.modelInput.length + CLOSE.length + 1
      : batchLineBytes(parsed as WorkItem);
    if (recordFormat !== this.format || !assigner) return this.toTailRaw(raw, parsed);
    let placed: ShardAssignment;
    try {
      placed = assigner.assign(bytes);
    } catch (err) {
      if (!(err instanceof RecordNotShardableError)) throw err;
      // Too large for a batch input file, yet a valid request: Converse takes it.
      this.tooLarge++;
      return this.toTailRaw(raw, parsed);
    }
    if (placed.mode === 'converse') return this.toTailRaw(raw, parsed);
    const { shard, file } = await this.shardFileFor(placed);
    if (cut) await file.writeLine([cut.head, MODEL_INPUT_KEY, cut.modelInput, CLOSE]);
    else if (parsed) await file.write(batchLine(parsed));
    shard.records++;
    shard.bytes += bytes;
  }

  /** The shard and the open input file an assignment goes to, starting a new shard or file when it says so. */
  private async shardFileFor(
    placed: Extract<ShardAssignment, { mode: 'batch' }>,
  ): Promise<{ shard: ShardItem; file: JsonlObjectWriter }> {
    const { runId } = this.options;
    if (placed.newShard) {
      this.shards.push({
        shard: placed.shard,
        records: 0,
        bytes: 0,
        format: this.format,
        inputKeys: [],
        inputPrefix: shardInputPrefix(runId, placed.shard),
        outputPrefix: shardOutputPrefix(runId, placed.shard),
      });
    }
    const shard = this.shards[this.shards.length - 1];
    if (!shard) throw new Error('shard assignment out of order');
    if (placed.newFile || placed.newShard) {
      await this.closeShardFile();
      const key = shardFileKey(runId, placed.shard, placed.file);
      shard.inputKeys.push(key);
      this.file = new JsonlObjectWriter(this.options.s3, this.options.bucket, key);
    }
    if (!this.file) throw new Error('shard file not open');
    return { shard, file: this.file };
  }

  /** Completes the open shard input file, if any. */
  async closeShardFile(): Promise<void> {
    if (this.file) await this.file.close();
    this.file = undefined;
  }

  /**
   * Sends the records of `dropped` shards through Converse (a third pass over the items, for their corpus line
   * numbers) and renumbers the shards kept.
   */
  async dropShards(dropped: Set<number>): Promise<ShardItem[]> {
    const { s3, bucket, itemsKey, runId } = this.options;
    // Only possible with quotas where the minimum number of the largest records passes the job byte limit.
    const ids = new Set<string>();
    for (const shard of this.shards.filter((s) => dropped.has(s.shard))) {
      for (const key of shard.inputKeys) {
        const part = await openObject(s3, bucket, key);
        if (!part) throw new Error(`shard file s3://${bucket}/${key} is missing`);
        for await (const line of readLines(part)) {
          if (line) ids.add((JSON.parse(line) as { recordId: string }).recordId);
        }
      }
    }
    const again = await openObject(s3, bucket, itemsKey);
    if (!again) throw new Error(`items file s3://${bucket}/${itemsKey} is missing`);
    for await (const line of readLines(again)) {
      if (!line) continue;
      const item = JSON.parse(line) as WorkItem;
      if (ids.has(item.recordId)) await this.toTail(item);
    }
    return this.shards.filter((s) => !dropped.has(s.shard)).map((s, i) => renumbered(runId, s, i));
  }

  /** Completes the tail; the records it holds. */
  async closeTail(): Promise<number> {
    if (this.tail) await this.tail.close();
    return this.tail?.lines ?? 0;
  }

  private async toTail(item: WorkItem): Promise<void> {
    await this.openTail().write(item);
  }

  /** An items line goes to the tail as it is (it is a WorkItem already); a parsed one is written back. */
  private async toTailRaw(raw: Buffer, parsed: WorkItem | undefined): Promise<void> {
    if (parsed) return this.toTail(parsed);
    await this.openTail().writeLine(raw);
  }

  private openTail(): JsonlObjectWriter {
    this.tail ??= new JsonlObjectWriter(
      this.options.s3,
      this.options.bucket,
      runKeys.converseTail(this.options.runId),
    );
    return this.tail;
  }
}

/**
 * A kept shard after under-minimum ones were dropped keeps its files (already written under its original index); only
 * its position in the list changes, so the job name and token follow the list position.
 */
function renumbered(_runId: string, shard: ShardItem, index: number): ShardItem {
  return { ...shard, shard: index };
}
