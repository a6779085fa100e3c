import type { S3Client } from '@aws-sdk/client-s3';
import type { BatchQuotas } from './batch-quotas';
import { runKeys, type RecordFormat, type ShardItem, type WorkItem } from './contracts';
import { logger } from './observability';
import { JsonlObjectWriter, openObject, readLines } from './s3-jsonl';
import {
  RecordNotShardableError,
  ShardAssigner,
  shardFileKey,
  shardInputPrefix,
  shardOutputPrefix,
} from './sharding';

/** The size of a record in a batch input file: its `{"recordId", "modelInput"}` line plus the newline. */
export function batchLineBytes(item: Pick<WorkItem, 'recordId' | 'modelInput'>): number {
  return Buffer.byteLength(JSON.stringify(batchLine(item))) + 1;
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
 * Plan's second pass in mode A: streams the items file once and writes each record either into a shard's input file
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
  const shards: ShardItem[] = [];
  let file: JsonlObjectWriter | undefined;
  let tooLarge = 0;

  const body = await openObject(s3, bucket, options.itemsKey);
  if (!body) throw new Error(`items file s3://${bucket}/${options.itemsKey} is missing`);
  for await (const line of readLines(body)) {
    if (!line) continue;
    const item = JSON.parse(line) as WorkItem;
    if (item.format !== format || !assigner) {
      await toTail(item);
      continue;
    }
    const bytes = batchLineBytes(item);
    let placed;
    try {
      placed = assigner.assign(bytes);
    } catch (err) {
      if (!(err instanceof RecordNotShardableError)) throw err;
      // Too large for a batch input file, yet a valid request: Converse takes it.
      tooLarge++;
      await toTail(item);
      continue;
    }
    if (placed.mode === 'converse') {
      await toTail(item);
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
    await file.write(batchLine(item));
    shard.records++;
    shard.bytes += bytes;
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
