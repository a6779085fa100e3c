import {
  type ItemBatchEvent,
  type ItemBatchSummary,
  type ModelCalls,
  type PlanOutput,
  type WorkItem,
} from '../shared/contracts';
import { processBatch } from '../converse/converse-unit';
import type { UnitCounts } from '../converse/unit-of-work';
import { isLaneOwner, type LedgerEntry } from '../shared/ledger';
import { logger } from '../shared/observability';
import { mapWithConcurrency } from '../shared/pool';
import { getJson, objectLines } from '../shared/s3-jsonl';
import type { FinalizeDeps } from './deps';
import {
  describeCause,
  resultWriterDetailsOf,
  type ChildResult,
  type ResultWriterManifest,
} from './map-results';

/** Why records went unprocessed, as a failure's code and message. */
export interface Reason {
  code: string;
  message: string;
}

/** Where the run's records ended, summed over its units. */
export interface Tally extends UnitCounts {
  batches: number;
  failedBatches: number;
  modelCalls: ModelCalls;
  /** Records some unit accounted for (only tracked when an orphan scan follows). */
  seen?: Set<string>;
}

/** Finished units finished here run this many at a time. */
export const REPAIR_CONCURRENCY = 4;

/** A tally of nothing yet. */
export function emptyTally(): Tally {
  return {
    succeeded: 0,
    failed: 0,
    skipped: 0,
    queued: 0,
    inputTokens: 0,
    outputTokens: 0,
    batches: 0,
    failedBatches: 0,
    modelCalls: { total: 0, throttled: 0, retried: 0 },
  };
}

/** Adds one unit's summary to the tally. */
export function add(tally: Tally, summary: Partial<ItemBatchSummary>): void {
  tally.succeeded += summary.succeeded ?? 0;
  tally.failed += summary.failed ?? 0;
  tally.skipped += summary.skipped ?? 0;
  tally.queued += summary.queued ?? 0;
  tally.inputTokens += summary.inputTokens ?? 0;
  tally.outputTokens += summary.outputTokens ?? 0;
  tally.modelCalls.total += summary.modelCalls?.total ?? 0;
  tally.modelCalls.throttled += summary.modelCalls?.throttled ?? 0;
  tally.modelCalls.retried += summary.modelCalls?.retried ?? 0;
}

/**
 * The Converse fan-out: the children's summaries from its ResultWriter files; a failed or never-run child's batch
 * finished here. When the fan-out left no ResultWriter files (it failed as a whole, or never ran), every record of
 * `itemKeys` is accounted for from the ledger instead.
 */
export async function tallyConverse(
  deps: FinalizeDeps,
  plan: PlanOutput,
  state: Record<string, unknown>,
  itemKeys: string[],
  tally: Tally,
  error: Reason | undefined,
): Promise<void> {
  const details = resultWriterDetailsOf(state.fanOutResult);
  if (!details) {
    await tallyOrphans(deps, plan, itemKeys, tally, error ?? notReached());
    return;
  }
  const manifest = await getJson<ResultWriterManifest>(deps.s3, details.Bucket, details.Key);
  if (!manifest) throw new Error(`Map Run manifest s3://${details.Bucket}/${details.Key} is missing`);
  const files = manifest.ResultFiles ?? {};
  for (const file of files.SUCCEEDED ?? []) {
    for (const child of (await getJson<ChildResult[]>(deps.s3, details.Bucket, file.Key)) ?? []) {
      tally.batches++;
      add(tally, JSON.parse(child.Output ?? '{}') as Partial<ItemBatchSummary>);
    }
  }
  const dead: { items: WorkItem[]; reason: Reason }[] = [];
  for (const status of ['FAILED', 'PENDING'] as const) {
    for (const file of files[status] ?? []) {
      for (const child of (await getJson<ChildResult[]>(deps.s3, details.Bucket, file.Key)) ?? []) {
        tally.batches++;
        tally.failedBatches++;
        const batch = JSON.parse(child.Input ?? '{}') as Partial<ItemBatchEvent>;
        const reason = {
          code: child.Error ?? (status === 'PENDING' ? 'NotProcessed' : 'ChildExecutionFailed'),
          message: `the batch holding this record did not finish: ${child.Cause ? describeCause(child.Cause) : 'no cause given'}`,
        };
        if (batch.Items && batch.Items.length > 0) dead.push({ items: batch.Items, reason });
      }
    }
  }
  await mapWithConcurrency(dead, REPAIR_CONCURRENCY, async ({ items, reason }) => {
    add(tally, await repairBatch(deps, plan, items, reason));
  });
}

/** Finishes a Converse batch whose child died, as that batch: its decisions stand, the rest goes to the lane. */
export function repairBatch(
  deps: FinalizeDeps,
  plan: PlanOutput,
  items: WorkItem[],
  reason: Reason,
  batchId?: string,
): Promise<ItemBatchSummary> {
  logger.warn('finishing a batch whose child did not finish', { records: items.length, reason });
  return processBatch(
    { BatchInput: { runId: plan.runId, ledgerScope: plan.ledgerScope }, Items: items },
    {
      s3: deps.s3,
      ledger: deps.ledger,
      failureLane: deps.failureLane,
      resultsPublisher: deps.resultsPublisher,
      outputBucket: deps.outputBucket,
      itemConcurrency: 16,
      leaseMs: deps.leaseMs,
      remainingMs: () => 0,
      giveUp: reason,
      ...(batchId ? { batchId } : {}),
    },
  );
}

/**
 * Records no unit accounted for (the workflow failed before, or without, reporting them): each one's ledger entry
 * says which unit of this run holds it, and that unit is finished here with the records it holds; records nobody
 * claimed are claimed and handed to the failure lane by Finalize itself.
 */
export async function tallyOrphans(
  deps: FinalizeDeps,
  plan: PlanOutput,
  itemKeys: string[],
  tally: Tally,
  reason: Reason,
): Promise<void> {
  logger.warn('accounting for records from the ledger', { itemKeys, reason });
  const byOwner = new Map<string, WorkItem[]>();
  const unclaimed: WorkItem[] = [];
  const seen = tally.seen ?? new Set<string>();
  let chunk: WorkItem[] = [];
  const flush = async (): Promise<void> => {
    if (chunk.length === 0) return;
    const entries = await deps.ledger.getMany(
      plan.ledgerScope,
      chunk.map((i) => i.recordId),
    );
    for (const item of chunk) {
      const entry = entries.get(item.recordId);
      const owner = entry && ownedByRun(entry, plan.runId) ? entry.owner : undefined;
      if (owner) byOwner.set(owner, [...(byOwner.get(owner) ?? []), item]);
      // The failure lane has it: the lane settles it, and its outcome folds into the manifest.
      else if (entry && isLaneOwner(entry.owner, plan.runId)) tally.queued++;
      // Another run holds or published it.
      else if (entry && entry.status !== 'queued' && entry.status !== 'failed') tally.skipped++;
      else unclaimed.push(item);
    }
    chunk = [];
  };
  for await (const { text } of objectLines(deps.s3, deps.outputBucket, itemKeys)) {
    const item = JSON.parse(text) as WorkItem;
    if (seen.has(item.recordId)) continue;
    seen.add(item.recordId);
    chunk.push(item);
    if (chunk.length === 100) await flush();
  }
  await flush();
  const groups = [...byOwner].map(([owner, items]) => {
    const batchId = /\/batch\/([^/]+)$/.exec(owner)?.[1];
    return { items, batchId };
  });
  // Records held by a unit that is not a Converse batch (a shard's records re-driven and left unreached) go with
  // those nobody claimed.
  for (const group of groups) if (!group.batchId) unclaimed.push(...group.items);
  await mapWithConcurrency(
    groups.filter((g) => g.batchId),
    REPAIR_CONCURRENCY,
    async (g) => add(tally, await repairBatch(deps, plan, g.items, reason, g.batchId)),
  );
  for (let i = 0; i < unclaimed.length; i += 500) {
    add(tally, await repairBatch(deps, plan, unclaimed.slice(i, i + 500), reason, `orphans-${i / 500}`));
  }
}

function ownedByRun(entry: LedgerEntry, runId: string): boolean {
  return entry.owner.startsWith(`${runId}/`) && !entry.owner.startsWith(`${runId}/lane/`);
}

/** The reason of records the run never reached. */
export function notReached(): Reason {
  return { code: 'NotProcessed', message: 'the run stopped before this record was processed' };
}

/** The record ids of JSONL files of WorkItems. */
export async function recordIdsOf(deps: FinalizeDeps, keys: string[]): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const { text } of objectLines(deps.s3, deps.outputBucket, keys)) {
    ids.add((JSON.parse(text) as WorkItem).recordId);
  }
  return ids;
}
