import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { BatchQuotas } from './quotas';
import { planKeys, runKeys, shardKeys, type RecordFormat, type ShardItem } from '../shared/contracts';
import { callDependency } from '../shared/errors';
import { logger } from '../shared/observability';
import { mapWithConcurrency } from '../shared/pool';
import { concatenateObjects } from '../shared/s3-concat';
import {
  getJson,
  JsonlObjectWriter,
  openObject,
  putJson,
  readLineBuffers,
  readLines,
} from '../shared/s3-jsonl';
import { batchLineOf, type FormatTotals } from './shard-writer';
import { RecordNotShardableError, ShardAssigner, shardInputPrefix, shardOutputPrefix } from './sharding';

/**
 * Batch mode's shard files, cut without a pass over the corpus in one invocation. The merge assigns the records to
 * shards from the sizes each segment wrote (a few bytes a record, in items order), exactly as one pass over the items
 * file would ({@link ShardAssigner}: balanced shards within every batch quota, the other format, records too large
 * for a file and what no job can take going through Converse), and writes each segment's routes: which runs of its
 * items go to which shard file, to the Converse tail, or nowhere (an earlier segment holds the record). Then one
 * invocation per segment (the WriteShardSlices Map) streams its own items file and writes its slice of each shard file
 * it has records of, and its part of the tail: a job's input is a prefix, so a shard file that spans segments is one
 * file per segment there. A last step joins the tail parts in S3.
 */

/** Where a run of a segment's items goes: a shard's input file, the Converse tail, or nowhere. */
export type SliceTarget = { shard: number; file: number } | 'tail' | 'drop';

/** Consecutive items of a segment (`[from, to)`, 0-based lines of its items file) with one target. */
export interface SliceRoute {
  from: number;
  to: number;
  target: SliceTarget;
}

/** A segment of the plan as the shard cut sees it. */
export interface SlicedSegment {
  index: number;
  /** Lines of its items file (its sizes file has as many). */
  items: number;
}

/** What {@link assignShards} needs. */
export interface AssignShardsOptions {
  s3: S3Client;
  bucket: string;
  runId: string;
  segments: readonly SlicedSegment[];
  /** Per segment, the items (0-based lines) an earlier segment holds. */
  drops: ReadonlyMap<number, ReadonlySet<number>>;
  totals: Record<RecordFormat, FormatTotals>;
  quotas: BatchQuotas;
}

/** The shard cut: the shards and their input files, and the records that go through Converse. */
export interface AssignedShards {
  format: RecordFormat;
  shards: ShardItem[];
  viaConverse: number;
  /** The WriteShardSlices Map's items (JSON array of `{segment}`), the segments with anything to write. */
  slicesKey: string;
  slices: number;
}

/** One shard as the cut fills it: its counts and its input files, one per (file, segment). */
interface ShardFill {
  records: number;
  bytes: number;
  slices: { file: number; segment: number }[];
}

/** A segment's items as the sizes file gives them: `c<bytes>` or `n<bytes>` (format, batch line size). */
function parseSize(line: string): { format: RecordFormat; bytes: number } {
  const format: RecordFormat = line.startsWith('n') ? 'native' : 'converse';
  return { format, bytes: Number(line.slice(1)) };
}

/**
 * The record's size line in a segment's sizes file (written in items order, segment-pass.ts).
 */
export function sizeLine(format: RecordFormat, batchBytes: number): string {
  return `${format === 'native' ? 'n' : 'c'}${batchBytes}`;
}

/**
 * Assigns every record to process to a shard file or the Converse tail, and writes each segment's routes and the
 * WriteShardSlices Map's items. A job takes one record format: the format with more records goes into jobs, the other
 * through Converse. Memory: one segment's routes at a time.
 */
export async function assignShards(options: AssignShardsOptions): Promise<AssignedShards> {
  const { s3, bucket, runId, totals, quotas } = options;
  const format: RecordFormat = totals.native.records > totals.converse.records ? 'native' : 'converse';
  const assigner =
    totals[format].records > 0
      ? new ShardAssigner({ quotas, totalRecords: totals[format].records, totalBytes: totals[format].bytes })
      : undefined;
  const fills: ShardFill[] = [];
  let toTail = 0;
  let tooLarge = 0;
  const withWork: number[] = [];
  for (const segment of options.segments) {
    const routes: SliceRoute[] = [];
    const drops = options.drops.get(segment.index);
    const add = (ordinal: number, target: SliceTarget): void => {
      const last = routes[routes.length - 1];
      if (last && last.to === ordinal && sameTarget(last.target, target)) last.to++;
      else routes.push({ from: ordinal, to: ordinal + 1, target });
    };
    const body =
      segment.items > 0
        ? await openObject(s3, bucket, planKeys.segmentSizes(runId, segment.index))
        : undefined;
    let ordinal = 0;
    if (body) {
      for await (const line of readLines(body)) {
        if (line === '') continue;
        const at = ordinal++;
        if (drops?.has(at)) {
          add(at, 'drop');
          continue;
        }
        const size = parseSize(line);
        const target = place(size, format, assigner, fills, segment.index);
        if (target === 'tail') toTail++;
        if (target === 'too-large') {
          tooLarge++;
          toTail++;
        }
        add(at, target === 'too-large' ? 'tail' : target);
      }
    }
    if (ordinal !== segment.items)
      throw new Error(
        `segment ${segment.index} sized ${ordinal} items, its items file holds ${segment.items}`,
      );
    await putJson(s3, bucket, planKeys.segmentRoutes(runId, segment.index), routes);
    if (routes.some((r) => r.target !== 'drop')) withWork.push(segment.index);
  }
  const summary = assigner?.finish();
  const dropped = new Set(summary?.underMinimum ?? []);
  if (dropped.size > 0) {
    // Only possible with quotas where the minimum number of the largest records passes the job byte limit: those
    // shards' records go through Converse instead, and the routes say so before any slice is written.
    await mapWithConcurrency(withWork, 8, async (index) => {
      const key = planKeys.segmentRoutes(runId, index);
      const routes = (await getJson<SliceRoute[]>(s3, bucket, key)) ?? [];
      const rerouted = routes.map((r) =>
        typeof r.target === 'object' && dropped.has(r.target.shard) ? { ...r, target: 'tail' as const } : r,
      );
      await putJson(s3, bucket, key, rerouted);
    });
    for (const shard of dropped) toTail += fills[shard]?.records ?? 0;
  }
  const shards = fills.flatMap((fill, shard) =>
    dropped.has(shard)
      ? []
      : [
          {
            shard,
            records: fill.records,
            bytes: fill.bytes,
            format,
            inputKeys: fill.slices.map((s) => shardKeys.inputSlice(runId, shard, s.file, s.segment)),
            inputPrefix: shardInputPrefix(runId, shard),
            outputPrefix: shardOutputPrefix(runId, shard),
          },
        ],
  );
  // A kept shard keeps its files (written under its original index); only its position in the list changes, so the
  // job name and token follow the list position.
  const renumbered = shards.map((s, i) => ({ ...s, shard: i }));
  const slicesKey = planKeys.slices(runId);
  await putJson(
    s3,
    bucket,
    slicesKey,
    withWork.map((segment) => ({ segment })),
  );
  if (toTail > 0)
    logger.info('records routed through Converse', {
      viaConverse: toTail,
      tooLarge,
      otherFormat: format === 'native' ? totals.converse.records : totals.native.records,
    });
  return { format, shards: renumbered, viaConverse: toTail, slicesKey, slices: withWork.length };
}

function place(
  size: { format: RecordFormat; bytes: number },
  format: RecordFormat,
  assigner: ShardAssigner | undefined,
  fills: ShardFill[],
  segment: number,
): SliceTarget | 'too-large' {
  if (size.format !== format || !assigner) return 'tail';
  let placed;
  try {
    placed = assigner.assign(size.bytes);
  } catch (err) {
    if (!(err instanceof RecordNotShardableError)) throw err;
    // Too large for a batch input file, yet a valid request: Converse takes it.
    return 'too-large';
  }
  if (placed.mode === 'converse') return 'tail';
  const fill = (fills[placed.shard] ??= { records: 0, bytes: 0, slices: [] });
  fill.records++;
  fill.bytes += size.bytes;
  const last = fill.slices[fill.slices.length - 1];
  if (!last || last.file !== placed.file || last.segment !== segment)
    fill.slices.push({ file: placed.file, segment });
  return { shard: placed.shard, file: placed.file };
}

function sameTarget(a: SliceTarget, b: SliceTarget): boolean {
  if (typeof a === 'string' || typeof b === 'string') return a === b;
  return a.shard === b.shard && a.file === b.file;
}

/**
 * One segment's slice of the shard files and of the Converse tail, from its routes: streams the segment's items file
 * once, writes each item as a batch line into its shard file's slice, or as it is into the segment's tail part.
 * Writing the same objects again on a retry, it needs no idempotency of its own.
 */
export async function writeSegmentSlices(
  s3: S3Client,
  bucket: string,
  runId: string,
  segment: number,
): Promise<{ records: number; tail: number }> {
  const routes = await getJson<SliceRoute[]>(s3, bucket, planKeys.segmentRoutes(runId, segment));
  if (!routes)
    throw new Error(
      `segment ${segment} has no routes (s3://${bucket}/${planKeys.segmentRoutes(runId, segment)})`,
    );
  const body = await openObject(s3, bucket, planKeys.segmentItems(runId, segment));
  if (!body) throw new Error(`segment ${segment} has no items file`);
  let tail: JsonlObjectWriter | undefined;
  let slice: { key: string; writer: JsonlObjectWriter } | undefined;
  let route = 0;
  let ordinal = 0;
  let records = 0;
  let tailRecords = 0;
  for await (const lines of readLineBuffers(body)) {
    for (const raw of lines) {
      if (raw.length === 0) continue;
      while (routes[route] && routes[route]!.to <= ordinal) route++;
      const target = routes[route]?.target;
      ordinal++;
      if (target === undefined || target === 'drop') continue;
      if (target === 'tail') {
        tail ??= new JsonlObjectWriter(s3, bucket, planKeys.segmentTail(runId, segment));
        await tail.writeLine(raw);
        tailRecords++;
        continue;
      }
      const key = shardKeys.inputSlice(runId, target.shard, target.file, segment);
      if (slice?.key !== key) {
        if (slice) await slice.writer.close();
        slice = { key, writer: new JsonlObjectWriter(s3, bucket, key) };
      }
      const line = batchLineOf(raw);
      const writer = slice.writer;
      if (Array.isArray(line)) await writer.writeLine(line);
      else await writer.write(line);
      records++;
    }
  }
  if (slice) await slice.writer.close();
  if (tail) await tail.close();
  return { records, tail: tailRecords };
}

/** Joins the segments' tail parts into the run's Converse tail (`runKeys.converseTail`), in S3. */
export async function joinConverseTail(
  s3: S3Client,
  bucket: string,
  runId: string,
  segments: readonly number[],
): Promise<number> {
  const sized = await mapWithConcurrency(segments, 16, async (segment) => {
    const key = planKeys.segmentTail(runId, segment);
    return { key, size: (await objectSize(s3, bucket, key)) ?? 0 };
  });
  const pieces = sized.filter((p) => p.size > 0);
  if (pieces.length === 0) return 0;
  const { bytes } = await concatenateObjects(s3, bucket, runKeys.converseTail(runId), pieces);
  return bytes;
}

async function objectSize(s3: S3Client, bucket: string, key: string): Promise<number | undefined> {
  try {
    const head = await callDependency('S3 HeadObject', () =>
      s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })),
    );
    return head.ContentLength;
  } catch (err) {
    if ((err as { name?: string }).name === 'NotFound') return undefined;
    throw err;
  }
}
