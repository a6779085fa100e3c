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
  return { format, head: line.subarray(0, idEnd), modelInput: line.subarray(inputStart, lineKey) };
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
  const { s3, bucket, runId, totals, quotas } = options;
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

  let tail: JsonlObjectWriter | undefined;
  const toTail = async (item: WorkItem): Promise<void> => {
    tail ??= new JsonlObjectWriter(s3, bucket, runKeys.converseTail(runId));
    await tail.write(item);
  };
  // An items line goes to the tail as it is (it is a WorkItem already); a parsed one is written back.
  const toTailRaw = async (raw: Buffer, parsed: WorkItem | undefined): Promise<void> => {
    if (parsed) return toTail(parsed);
    tail ??= new JsonlObjectWriter(s3, bucket, runKeys.converseTail(runId));
    await tail.writeLine(raw);
  };
  const shards: ShardItem[] = [];
  let file: JsonlObjectWriter | undefined;
  let tooLarge = 0;

  const body = await openObject(s3, bucket, options.itemsKey);
  if (!body) throw new Error(`items file s3://${bucket}/${options.itemsKey} is missing`);
  // The items file is read as bytes and each line cut, not parsed: a batch line is the item's own recordId and
  // modelInput text. Lines of another shape (an older writer) are parsed and serialized instead.
  for await (const lines of readLineBuffers(body)) {
    for (const raw of lines) {
      if (raw.length === 0) continue;
      const cut = cutItemLine(raw);
      let recordFormat: RecordFormat;
      let bytes: number;
      let parsed: WorkItem | undefined;
      if (cut) {
        recordFormat = cut.format;
        bytes = cut.head.length + MODEL_INPUT_KEY.length + cut.modelInput.length + CLOSE.length + 1;
      } else {
        parsed = JSON.parse(raw.toString('utf8')) as WorkItem;
        recordFormat = parsed.format;
        bytes = batchLineBytes(parsed);
      }
      if (recordFormat !== format || !assigner) {
        await toTailRaw(raw, parsed);
        continue;
      }
      let placed;
      try {
        placed = assigner.assign(bytes);
      } catch (err) {
        if (!(err instanceof RecordNotShardableError)) throw err;
        // Too large for a batch input file, yet a valid request: Converse takes it.
        tooLarge++;
        await toTailRaw(raw, parsed);
        continue;
      }
      if (placed.mode === 'converse') {
        await toTailRaw(raw, parsed);
        continue;
      }
      if (placed.newShard) {
        shards.push({
          shard: placed.shard,
          records: 0,
          bytes: 0,
          format,
          inputKeys: [],
          inputPrefix: shardInputPrefix(runId, placed.shard),
          outputPrefix: shardOutputPrefix(runId, placed.shard),
        });
      }
      const shard = shards[shards.length - 1];
      if (!shard) throw new Error('shard assignment out of order');
      if (placed.newFile || placed.newShard) {
        if (file) await file.close();
        const key = shardFileKey(runId, placed.shard, placed.file);
        shard.inputKeys.push(key);
        file = new JsonlObjectWriter(s3, bucket, key);
      }
      if (!file) throw new Error('shard file not open');
      if (cut) await file.writeLine([cut.head, MODEL_INPUT_KEY, cut.modelInput, CLOSE]);
      else if (parsed) await file.write(batchLine(parsed));
      shard.records++;
      shard.bytes += bytes;
    }
  }
  if (file) await file.close();
  if (tooLarge > 0)
    notes.push(`${tooLarge} records are larger than a batch input file may be: they go through Converse`);

  const summary = assigner?.finish();
  let kept = shards;
  if (summary && summary.underMinimum.length > 0) {
    // Only possible with quotas where the minimum number of the largest records passes the job byte limit.
    const under = new Set(summary.underMinimum);
    const ids = new Set<string>();
    for (const shard of shards.filter((s) => under.has(s.shard))) {
      for (const key of shard.inputKeys) {
        const part = await openObject(s3, bucket, key);
        if (!part) throw new Error(`shard file s3://${bucket}/${key} is missing`);
        for await (const line of readLines(part)) {
          if (line) ids.add((JSON.parse(line) as { recordId: string }).recordId);
        }
      }
    }
    // A third pass, for the items (with their corpus line numbers) of those few records.
    const again = await openObject(s3, bucket, options.itemsKey);
    if (!again) throw new Error(`items file s3://${bucket}/${options.itemsKey} is missing`);
    for await (const line of readLines(again)) {
      if (!line) continue;
      const item = JSON.parse(line) as WorkItem;
      if (ids.has(item.recordId)) await toTail(item);
    }
    notes.push(
      `shards ${summary.underMinimum.join(', ')} ended under the job minimum (byte limits): their records go through Converse`,
    );
    kept = shards.filter((s) => !under.has(s.shard)).map((s, i) => renumbered(runId, s, i));
  }
  if (tail) await (tail as JsonlObjectWriter).close();
  const viaConverse = (tail as JsonlObjectWriter | undefined)?.lines ?? 0;
  if (summary && summary.viaConverse > 0) {
    notes.push(
      `${summary.viaConverse} records are too few for another job of at least ${quotas.minRecordsPerJob} records: they go through Converse`,
    );
  }
  if (notes.length > 0) logger.info('records routed through Converse', { notes });
  return { format, shards: kept, viaConverse, notes };
}

/**
 * A kept shard after under-minimum ones were dropped keeps its files (already written under its original index); only
 * its position in the list changes, so the job name and token follow the list position.
 */
function renumbered(_runId: string, shard: ShardItem, index: number): ShardItem {
  return { ...shard, shard: index };
}
