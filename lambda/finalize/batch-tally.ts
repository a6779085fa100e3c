import {
  runKeys,
  type BatchJobOutcome,
  type BatchPlan,
  type ManifestJob,
  type PlanOutput,
  type ShardItem,
  type WorkItem,
} from '../shared/contracts';
import { collectShard } from '../batch/collect/collect-shard';
import {
  BatchJobFailedError,
  collectKeys,
  type CollectShardSummary,
} from '../batch/collect/collect-contract';
import { logger } from '../shared/observability';
import { mapWithConcurrency } from '../shared/pool';
import { getJson, objectLines } from '../shared/s3-jsonl';
import {
  describeCause,
  resultWriterDetailsOf,
  type ChildResult,
  type ResultWriterManifest,
} from './map-results';
import type { FinalizeDeps } from './deps';
import {
  add,
  notReached,
  recordIdsOf,
  REPAIR_CONCURRENCY,
  repairBatch,
  tallyConverse,
  tallyOrphans,
  type Reason,
  type Tally,
} from './tally';

/** A shard child of the batch Map that failed or never ran: how its job ended (if known) and why it stopped. */
interface FailedShardChild {
  job?: BatchJobOutcome;
  reason: Reason;
}

/** Shard markers are read this many at a time. */
const MARKER_READS_IN_FLIGHT = 16;

/**
 * A run of Bedrock batch jobs: the shards from their collect markers; a shard without one (its child failed before
 * Collect finished) is collected here when its job ended (its records without output handed to the failure lane, the
 * fan-out being over), or handed to the failure lane as a whole when no job ever ended. Then the Converse fan-out over
 * the tail and the re-driven records.
 * @returns the run manifest's `jobs`, one per shard in shard order
 */
export async function tallyBatchRun(
  deps: FinalizeDeps,
  plan: PlanOutput,
  batch: BatchPlan,
  state: Record<string, unknown>,
  tally: Tally,
  error: Reason | undefined,
): Promise<ManifestJob[]> {
  const shards = await getJson<ShardItem[]>(deps.s3, deps.outputBucket, batch.shardsKey);
  if (!shards) throw new Error(`shard list s3://${deps.outputBucket}/${batch.shardsKey} is missing`);
  let markers = await readMarkers(deps, plan, shards);
  const batchDetails = resultWriterDetailsOf(state.batchResult);
  const failedChildren = batchDetails
    ? await readFailedShardChildren(deps, batchDetails)
    : new Map<number, FailedShardChild>();

  const uncollected = shards.filter((_, i) => !markers[i]);
  const { lateRedrives, notes } = await finishUncollected(
    deps,
    plan,
    uncollected,
    failedChildren,
    tally,
    error,
  );
  if (uncollected.length > 0) markers = await readMarkers(deps, plan, shards);
  for (const marker of markers) if (marker) add(tally, marker);

  await tallyBatchFanOut(deps, plan, state, markers, lateRedrives, tally, error);
  return shards.map((item, i) => manifestJob(item, markers[i], failedChildren.get(item.shard), notes));
}

/** The shards' collect markers, in shard order (undefined for a shard not collected). */
function readMarkers(
  deps: FinalizeDeps,
  plan: PlanOutput,
  shards: ShardItem[],
): Promise<(CollectShardSummary | undefined)[]> {
  return mapWithConcurrency(shards, MARKER_READS_IN_FLIGHT, (shard) =>
    getJson<CollectShardSummary>(deps.s3, deps.outputBucket, collectKeys.marker(plan.runId, shard.shard)),
  );
}

/**
 * Finishes the shards no Collect finished: collected here when their job ended, else every record handed to the
 * failure lane as the shard.
 * @returns the re-drive files of shards collected here, and a note per shard on why it was not collected
 */
async function finishUncollected(
  deps: FinalizeDeps,
  plan: PlanOutput,
  uncollected: ShardItem[],
  failedChildren: Map<number, FailedShardChild>,
  tally: Tally,
  error: Reason | undefined,
): Promise<{ lateRedrives: string[]; notes: Map<number, string> }> {
  const lateRedrives: string[] = [];
  const notes = new Map<number, string>();
  await mapWithConcurrency(uncollected, REPAIR_CONCURRENCY, async (item) => {
    const child = failedChildren.get(item.shard);
    const reason = child?.reason ??
      error ?? { code: 'NotCollected', message: "the shard's batch job output was never collected" };
    notes.set(item.shard, `${reason.code}: ${reason.message}`);
    if (child?.job) {
      const collected = await collectLate(deps, plan, item, child.job);
      if (collected.done) {
        if (collected.redriveKey) lateRedrives.push(collected.redriveKey);
        return;
      }
    }
    // No job output to collect: every record of the shard is handed to the failure lane, as the shard.
    await repairShard(deps, plan, item, reason, tally);
  });
  return { lateRedrives, notes };
}

/** Collects a shard whose child failed after its job ended; `done: false` when that failed and it must be repaired. */
async function collectLate(
  deps: FinalizeDeps,
  plan: PlanOutput,
  item: ShardItem,
  job: BatchJobOutcome,
): Promise<{ done: boolean; redriveKey?: string }> {
  try {
    const summary = await collectShard(
      {
        runId: plan.runId,
        ledgerScope: plan.ledgerScope,
        shard: item.shard,
        jobArn: job.jobArn,
        jobStatus: job.status,
        ...(job.message ? { failureMessage: job.message } : {}),
        inputKeys: item.inputKeys,
        outputPrefix: job.outputPrefix,
        submittedAt: job.submittedAt,
        ...(job.endedAt ? { endedAt: job.endedAt } : {}),
      },
      { ...deps, leaseMs: deps.leaseMs },
    );
    return { done: true, ...(summary.redriveKey ? { redriveKey: summary.redriveKey } : {}) };
  } catch (err) {
    // The job failed for a reason no model call gets past: Collect failed its records and wrote its marker.
    if (err instanceof BatchJobFailedError) return { done: true };
    logger.warn('collecting a shard Finalize found uncollected failed', { shard: item.shard, err });
    return { done: false };
  }
}

/**
 * The Converse fan-out of a batch run: the tail and the records jobs left without output. When the fan-out never ran,
 * they are accounted for from the ledger; records that shards collected here re-drove after it ran go to the lane.
 */
async function tallyBatchFanOut(
  deps: FinalizeDeps,
  plan: PlanOutput,
  state: Record<string, unknown>,
  markers: (CollectShardSummary | undefined)[],
  lateRedrives: string[],
  tally: Tally,
  error: Reason | undefined,
): Promise<void> {
  const fanOutRan = resultWriterDetailsOf(state.fanOutResult) !== undefined;
  const converseItemsKey = runKeys.converseItems(plan.runId);
  if (fanOutRan) {
    await tallyConverse(deps, plan, state, [converseItemsKey], tally, error);
  } else {
    const redrives = markers.flatMap((m) => (m?.redriveKey ? [m.redriveKey] : []));
    const keys = [runKeys.converseTail(plan.runId), ...redrives];
    await tallyOrphans(deps, plan, keys, tally, error ?? notReached());
  }
  if (fanOutRan && lateRedrives.length > 0) {
    // Shards collected here re-drove records after the fan-out had run: the ones the fan-out did not have go to the
    // failure lane.
    tally.seen = await recordIdsOf(deps, [converseItemsKey]);
    await tallyOrphans(deps, plan, lateRedrives, tally, {
      code: 'NoBatchOutput',
      message: 'the batch job left this record without output after the Converse fan-out had run',
    });
  }
}

/** One shard's entry of the run manifest's `jobs`: from its collect marker, or as not collected. */
function manifestJob(
  item: ShardItem,
  marker: CollectShardSummary | undefined,
  child: FailedShardChild | undefined,
  notes: Map<number, string>,
): ManifestJob {
  if (marker) {
    return {
      shard: item.shard,
      jobArn: marker.jobArn,
      status: marker.status,
      records: marker.records,
      succeeded: marker.succeeded,
      failed: marker.failed,
      skipped: marker.skipped,
      redriven: marker.missing,
      submittedAt: marker.submittedAt ?? null,
      endedAt: marker.endedAt ?? null,
      ...(marker.message ? { message: marker.message } : {}),
    };
  }
  return {
    shard: item.shard,
    jobArn: child?.job?.jobArn ?? null,
    status: 'NotCollected',
    records: item.records,
    succeeded: 0,
    failed: 0,
    skipped: 0,
    redriven: 0,
    submittedAt: child?.job?.submittedAt ?? null,
    endedAt: child?.job?.endedAt ?? null,
    ...(notes.has(item.shard) ? { message: notes.get(item.shard) as string } : {}),
  };
}

/** A shard whose job never ended: each of its records handed to the failure lane, as the shard's unit. */
async function repairShard(
  deps: FinalizeDeps,
  plan: PlanOutput,
  shard: ShardItem,
  reason: Reason,
  tally: Tally,
): Promise<void> {
  const items: WorkItem[] = [];
  for await (const { text } of objectLines(deps.s3, deps.outputBucket, shard.inputKeys)) {
    const value = JSON.parse(text) as { recordId: string; modelInput: Record<string, unknown> };
    // Batch input files do not carry the corpus line number: the record's position in the shard stands in.
    items.push({
      recordId: value.recordId,
      format: shard.format,
      modelInput: value.modelInput,
      line: items.length + 1,
    });
  }
  // Nothing was collected: no shard decision exists to keep, so the records go as a batch of Finalize's.
  for (let i = 0; i < items.length; i += 500) {
    add(
      tally,
      await repairBatch(deps, plan, items.slice(i, i + 500), reason, `shard-${shard.shard}-${i / 500}`),
    );
  }
}

/** The batch Map's failed and never-run children by shard, with their error and how their job ended (if known). */
async function readFailedShardChildren(
  deps: FinalizeDeps,
  details: { Bucket: string; Key: string },
): Promise<Map<number, FailedShardChild>> {
  const manifest = await getJson<ResultWriterManifest>(deps.s3, details.Bucket, details.Key);
  if (!manifest) throw new Error(`Map Run manifest s3://${details.Bucket}/${details.Key} is missing`);
  const children = new Map<number, FailedShardChild>();
  for (const status of ['FAILED', 'PENDING'] as const) {
    for (const file of manifest.ResultFiles?.[status] ?? []) {
      for (const child of (await getJson<ChildResult[]>(deps.s3, details.Bucket, file.Key)) ?? []) {
        const input = JSON.parse(child.Input ?? '{}') as {
          shard?: Partial<ShardItem>;
          job?: BatchJobOutcome;
        };
        const shard = input.shard?.shard;
        if (typeof shard !== 'number') continue;
        children.set(shard, {
          ...(input.job ? { job: input.job } : {}),
          reason: {
            code: child.Error ?? (status === 'PENDING' ? 'NotProcessed' : 'ChildExecutionFailed'),
            message: child.Cause ? describeCause(child.Cause) : 'the shard did not complete',
          },
        });
      }
    }
  }
  return children;
}
