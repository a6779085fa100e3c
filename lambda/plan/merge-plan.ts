import * as z from 'zod';
import {
  planKeys,
  runKeys,
  type BatchPlan,
  type CorpusSourceEntry,
  type PlanCounts,
  type PlanOutput,
  type PlanPrepared,
  type RequestedMode,
  type RunMode,
} from '../shared/contracts';
import { faultPoint } from '../shared/fault-points';
import { logger, metrics } from '../shared/observability';
import { concatenateObjects, type ConcatPiece } from '../shared/s3-concat';
import { mapWithConcurrency } from '../shared/pool';
import { putJson } from '../shared/s3-jsonl';
import { skippedEntry, type CorpusListing } from './corpus-sources';
import type { BatchQuotas } from '../batch/quotas';
import {
  assignShards,
  joinConverseTail,
  writeSegmentSlices,
  type AssignShardsOptions,
} from '../batch/shard-slices';
import { autoMode } from '../batch/sharding';
import { resolveIds, type IdResolution, type ItemDrop } from './id-merge';
import { type PlannedSegment, type SegmentSummary } from './segment-pass';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';
import type { PlanDeps } from './plan-run';
import { requireJson, SMALL_READS_IN_FLIGHT } from './plan-files';
import { DEFAULT_PLAN_MAP_CONCURRENCY } from './prepare';

/**
 * Plan's merge (MergePlan: recordIds across segments, the items and failures files, the mode, the shard cut) and, in
 * batch mode, the steps after it: each segment's shard slices (WriteShardSlices) and the tail's join.
 */

/** The margin the workflow waits beyond a job's own timeout (jobs may queue before their clock starts). */
export const JOB_WAIT_MARGIN_SECONDS = 6 * 3600;

/**
 * Plan's last step: joins the segments. Resolves recordIds across them (id-merge.ts), writes the run's items file
 * (the segments' items, concatenated in S3, without the work items of records an earlier segment already holds) and
 * plan failures file, the sources, then chooses the mode and, for batch, cuts the shards, and writes the plan.
 */
export async function mergePlan(prepared: PlanPrepared, deps: PlanDeps): Promise<PlanOutput> {
  const { settings } = deps;
  const { runId } = prepared;
  logger.appendKeys({ runId });
  const segments = await requireJson<PlannedSegment[]>(deps, planKeys.segments(runId));
  const listing = await requireJson<CorpusListing>(deps, planKeys.listing(runId));
  const summaries: SegmentSummary[] = new Array<SegmentSummary>(segments.length);
  await mapWithConcurrency(segments, SMALL_READS_IN_FLIGHT, async (segment) => {
    summaries[segment.index] = await requireJson<SegmentSummary>(
      deps,
      planKeys.segmentSummary(runId, segment.index),
    );
  });
  const resolution = await resolveIds({
    s3: deps.s3,
    failureLane: deps.failureLane,
    outputBucket: settings.outputBucket,
    runId,
    ledgerScope: prepared.ledgerScope,
    segments,
    multiSource: prepared.corpus.sources > 1,
    batchPossible: prepared.requestedMode !== 'converse',
  });
  faultPoint('plan', 'before-items');
  await concatenateObjects(
    deps.s3,
    settings.outputBucket,
    runKeys.items(runId),
    segments.flatMap((segment) =>
      keptRanges(
        planKeys.segmentItems(runId, segment.index),
        summaries[segment.index]!.items.bytes,
        resolution.drops.get(segment.index),
      ),
    ),
  );
  const failurePieces = [
    ...segments
      .filter((segment) => summaries[segment.index]!.failures.bytes > 0)
      .map((segment) => ({
        key: planKeys.segmentFailures(runId, segment.index),
        size: summaries[segment.index]!.failures.bytes,
      })),
    ...(resolution.failures ? [{ key: resolution.failures.key, size: resolution.failures.bytes }] : []),
  ];
  if (failurePieces.length > 0)
    await concatenateObjects(deps.s3, settings.outputBucket, runKeys.failures(runId, 'plan'), failurePieces);
  const counts: PlanCounts = {
    lines: summaries.reduce((n, s) => n + s.lines, 0),
    records: resolution.records,
    invalid: summaries.reduce((n, s) => n + s.invalid, 0) + resolution.invalid,
    duplicates: resolution.duplicates,
    skipped: resolution.skipped,
    toProcess: resolution.toProcess,
  };
  const sources = [
    ...sourceEntries(listing, segments, summaries, resolution),
    ...listing.skipped.map(skippedEntry),
  ].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  await putJson(deps.s3, settings.outputBucket, runKeys.sources(runId), sources);
  const { mode, batch } = await planMode(deps, runId, prepared.requestedMode, counts.toProcess, {
    totals: resolution.totals,
    segments: segments.map((segment) => ({
      index: segment.index,
      items: summaries[segment.index]!.items.lines,
    })),
    drops: new Map(
      [...resolution.drops].map(([segment, drops]) => [segment, new Set(drops.map((d) => d.ordinal))]),
    ),
  });
  const output: PlanOutput = {
    runId,
    startedAt: prepared.startedAt,
    mode,
    requestedMode: prepared.requestedMode,
    corpus: prepared.corpus,
    output: { bucket: settings.outputBucket, prefix: runKeys.prefix(runId) },
    itemsKey: runKeys.items(runId),
    ledgerScope: prepared.ledgerScope,
    modelId: settings.modelId,
    counts,
    fanOut: {
      itemsKey: batch ? runKeys.converseItems(runId) : runKeys.items(runId),
      batchSize: settings.batchSize,
      maxConcurrency: settings.mapConcurrency,
      toleratedFailurePercentage: settings.toleratedFailurePercentage,
    },
    ...(batch ? { batch } : {}),
  };
  faultPoint('plan', 'after-items');
  await putJson(deps.s3, settings.outputBucket, runKeys.plan(runId), output);
  metrics.addMetric(PIPELINE_METRICS.corpusLines, 'Count', counts.lines);
  metrics.addMetric(PIPELINE_METRICS.invalidLines, 'Count', counts.invalid);
  metrics.addMetric(PIPELINE_METRICS.recordsSkipped, 'Count', counts.skipped);
  logger.info('plan written', { counts, mode, segments: segments.length, dropped: resolution.drops.size });
  return output;
}

/** Items left out of a segment less often than once per this many bytes are cut around (see {@link keptRanges}). */
const SPARSE_DROP_BYTES = 16 * 1024 * 1024;

/**
 * A segment's items file as pieces of the run's items file, leaving out the items an earlier segment holds. Few such
 * items: the byte ranges around them, each of which S3 copies server-side when it is at least a part (5 MiB), so a
 * rare duplicate costs a cut, not a rewrite. Many: the whole file streamed without those lines (ranges under 5 MiB
 * would be streamed anyway, one GET each).
 */
export function keptRanges(key: string, size: number, drops: readonly ItemDrop[] | undefined): ConcatPiece[] {
  if (!drops || drops.length === 0) return [{ key, size }];
  if ((drops.length + 1) * SPARSE_DROP_BYTES > size)
    return [{ key, size, dropLines: new Set(drops.map((d) => d.ordinal)) }];
  const pieces: ConcatPiece[] = [];
  let from = 0;
  for (const drop of [...drops].sort((a, b) => a.offset - b.offset)) {
    if (drop.offset > from) pieces.push({ key, offset: from, size: drop.offset - from });
    from = drop.offset + drop.bytes;
  }
  if (size > from) pieces.push({ key, offset: from, size: size - from });
  return pieces;
}

/** The manifest's entry of each source read: its lines and bad lines from the segments, its records from the merge. */
function sourceEntries(
  listing: CorpusListing,
  segments: readonly PlannedSegment[],
  summaries: readonly SegmentSummary[],
  resolution: IdResolution,
): CorpusSourceEntry[] {
  const entries: CorpusSourceEntry[] = listing.sources.map((source, i) => ({
    key: source.key,
    size: source.size,
    ...(source.etag ? { etag: source.etag } : {}),
    lines: 0,
    records: resolution.sourceRecords.get(i) ?? 0,
  }));
  for (const segment of segments)
    segment.parts.forEach((part, p) => {
      const tally = summaries[segment.index]!.parts[p];
      const entry = entries[part.source]!;
      if (!tally) return;
      entry.lines = (entry.lines ?? 0) + tally.lines;
      if (tally.error && !entry.error) entry.error = tally.error;
    });
  return entries;
}

/**
 * The run's mode and, for batch, its Bedrock batch jobs: the shards cut to the model's batch quotas and written with
 * their list. Batch falls back to Converse when no job of the minimum size can be made.
 */
async function planMode(
  deps: PlanDeps,
  runId: string,
  requestedMode: RequestedMode,
  toProcess: number,
  cut: Pick<AssignShardsOptions, 'totals' | 'segments' | 'drops'>,
): Promise<{ mode: RunMode; batch?: BatchPlan }> {
  const { settings } = deps;
  if (requestedMode === 'converse' || toProcess === 0) return { mode: 'converse' };
  const { quotas, sources } = await deps.batchQuotas();
  const mode = chooseMode(requestedMode, toProcess, quotas, settings.batch.autoThreshold);
  if (mode !== 'batch') return { mode };
  const written = await assignShards({ s3: deps.s3, bucket: settings.outputBucket, runId, quotas, ...cut });
  if (written.shards.length === 0) {
    // Nothing can make a job of the minimum size: every record goes through Converse.
    logger.info('batch requested, but no job of the minimum size can be made: using Converse', {
      toProcess,
      minRecordsPerJob: quotas.minRecordsPerJob,
    });
    return { mode: 'converse' };
  }
  await putJson(deps.s3, settings.outputBucket, runKeys.shards(runId), written.shards);
  return {
    mode,
    batch: {
      shardsKey: runKeys.shards(runId),
      shards: written.shards.length,
      records: written.shards.reduce((n, s) => n + s.records, 0),
      viaConverse: written.viaConverse,
      maxConcurrency: Math.min(
        quotas.maxConcurrentJobs,
        settings.batch.mapConcurrency ?? quotas.maxConcurrentJobs,
      ),
      toleratedFailurePercentage: settings.batch.toleratedFailurePercentage,
      jobWaitSeconds: settings.batch.jobTimeoutHours * 3600 + JOB_WAIT_MARGIN_SECONDS,
      // Three reconciler ticks may be missed before the wait gives up on a heartbeat.
      heartbeatSeconds: settings.batch.reconcileIntervalMinutes * 60 * 3 + 60,
      quotas: { ...quotas },
      quotaSources: sources,
      slicesKey: written.slicesKey,
      slices: written.slices,
      sliceConcurrency: settings.planMapConcurrency ?? DEFAULT_PLAN_MAP_CONCURRENCY,
    },
  };
}

/** The WriteShardSlices Map's event: one segment whose slices of the shard files and the Converse tail to write. */
export const sliceEventSchema = z.object({ runId: z.string().min(1), segment: z.number().int().min(0) });
/** The WriteShardSlices Map's event. */
export type SliceEvent = z.infer<typeof sliceEventSchema>;

/** Writes one segment's slices of the shard files and its part of the Converse tail (batch/shard-slices.ts). */
export async function planSlices(
  event: SliceEvent,
  deps: Pick<PlanDeps, 's3' | 'settings'>,
): Promise<{ records: number; tail: number }> {
  return writeSegmentSlices(deps.s3, deps.settings.outputBucket, event.runId, event.segment);
}

/** The tail step's event: the run whose segments' tail parts to join. */
export const tailEventSchema = z.object({ runId: z.string().min(1), slicesKey: z.string().min(1) });
/** The tail step's event. */
export type TailEvent = z.infer<typeof tailEventSchema>;

/** Joins the segments' parts of the Converse tail into the run's tail file, after the WriteShardSlices Map. */
export async function joinTail(
  event: TailEvent,
  deps: Pick<PlanDeps, 's3' | 'settings'>,
): Promise<{ bytes: number }> {
  const slices = await requireJson<{ segment: number }[]>(deps, event.slicesKey);
  const bytes = await joinConverseTail(
    deps.s3,
    deps.settings.outputBucket,
    event.runId,
    slices.map((s) => s.segment),
  );
  return { bytes };
}

/**
 * Chooses the processing mode: `batch` and `converse` as asked; `auto` picks batch when the records to process reach
 * the batch threshold (at least the minimum records per job), converse otherwise.
 */
export function chooseMode(
  requested: RequestedMode,
  toProcess: number,
  quotas: BatchQuotas,
  autoThreshold?: number,
): RunMode {
  if (requested !== 'auto') return requested;
  return autoMode(toProcess, quotas, autoThreshold);
}
