import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import * as z from 'zod';
import {
  RUN_COMPLETED,
  RUN_FAILED,
  runKeys,
  type BatchEvent,
  type BatchJobOutcome,
  type BatchPlan,
  type BatchSummary,
  type ManifestJob,
  type ModelCalls,
  type PlanOutput,
  type RunManifest,
  type ShardItem,
  type WorkItem,
} from './shared/contracts';
import {
  BatchJobFailedError,
  collectKeys,
  collectShard,
  type CollectShardSummary,
} from './batch/collect/collect-shard';
import { processBatch } from './converse/converse-unit';
import { withInProgressLock } from './shared/idempotency';
import { readEnv, positiveInt, required } from './shared/env';
import { InvalidEventError } from './shared/errors';
import { FailureLaneSender } from './shared/failure-lane';
import { faultPoint } from './shared/fault-points';
import { isLaneOwner, Ledger, type LedgerEntry } from './shared/ledger';
import { logger, metrics, traced, withObservability } from './shared/observability';
import { mapWithConcurrency } from './shared/pool';
import { resultsPublisherFromEnv, type ResultsPublisher } from './shared/results-queue';
import { putRunEvent } from './shared/run-events';
import { RunState, writeManifest, type ManifestBase } from './shared/run-state';
import { getJson, objectLines } from './shared/s3-jsonl';
import type { UnitCounts } from './converse/unit-of-work';

/** Finalize's event: the workflow state, whatever path led here. */
export const finalizeEventSchema = z.object({
  runId: z.string().min(1),
  startedAt: z.string().min(1),
  state: z.record(z.string(), z.unknown()),
});
/** Finalize's event. */
export type FinalizeEvent = z.infer<typeof finalizeEventSchema>;

/** What Finalize returns to the workflow. */
export interface FinalizeOutput {
  runId: string;
  status: RunManifest['status'];
  manifestKey: string;
  revision: number;
  counts: RunManifest['counts'];
  error?: { code: string; message: string };
}

/** What Finalize talks to. */
export interface FinalizeDeps {
  s3: S3Client;
  events: Pick<EventBridgeClient, 'send'>;
  ledger: Ledger;
  runs: RunState;
  failureLane: Pick<FailureLaneSender, 'add' | 'flush'>;
  resultsPublisher?: Pick<ResultsPublisher, 'publish'> | undefined;
  outputBucket: string;
  eventBusName: string;
  /** How long Finalize's claims (repairs) hold, in ms. */
  leaseMs: number;
  now?: () => Date;
}

interface ChildResult {
  Status?: string;
  Input?: string;
  Output?: string;
  Error?: string;
  Cause?: string;
}

interface ResultWriterManifest {
  ResultFiles?: Record<string, { Key: string; Size?: number }[]>;
  DestinationBucket?: string;
}

interface StepFunctionsError {
  Error?: string;
  Cause?: string;
}

/** Why records went unprocessed, as a failure's code and message. */
interface Reason {
  code: string;
  message: string;
}

/** Where the run's records ended, summed over its units. */
interface Tally extends UnitCounts {
  batches: number;
  failedBatches: number;
  modelCalls: ModelCalls;
  /** Records some unit accounted for (only tracked when an orphan scan follows). */
  seen?: Set<string>;
}

const REPAIR_CONCURRENCY = 4;

/**
 * Accounts for every record of the run and writes `runs/<runId>/manifest.json`, then announces the outcome on the
 * pipeline's event bus. Each record ends with one unit of work: the Converse batches' summaries (from the Map's
 * ResultWriter files) and the shards' collect markers say where theirs ended. A unit that never finished (a failed
 * or never-run child, an uncollected shard, records the workflow never reached) is finished here as that same unit
 * (or, for records nobody claimed, as Finalize's own): what it had decided stands, and whatever it had not decided is
 * handed to the failure lane with the reason, so nothing is lost and nothing is published twice. Records handed to
 * the failure lane are `pending` until it settles them; each one it settles later revises the manifest.
 */
export async function finalizeRun(event: FinalizeEvent, deps: FinalizeDeps): Promise<FinalizeOutput> {
  const { runId, state } = event;
  const plan = isPlanOutput(state) ? state : undefined;
  const stateError = state.error as StepFunctionsError | undefined;
  const tally: Tally = {
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
  let error: Reason | undefined = stateError
    ? { code: stateError.Error ?? 'States.TaskFailed', message: describeCause(stateError.Cause) }
    : undefined;

  let jobs: ManifestJob[] | undefined;
  if (plan && plan.counts.toProcess > 0) {
    if (plan.mode === 'batch' && plan.batch) {
      jobs = await tallyBatchRun(deps, plan, plan.batch, state, tally, error);
    } else {
      await tallyConverse(deps, plan, state, [plan.itemsKey], tally, error);
    }
    const accounted = tally.succeeded + tally.failed + tally.skipped + tally.queued;
    if (!error && accounted !== plan.counts.toProcess) {
      error = {
        code: 'AccountingMismatch',
        message: `${plan.counts.toProcess} records were to be processed but ${tally.succeeded} succeeded, ${tally.failed} failed, ${tally.skipped} were skipped and ${tally.queued} were handed to the failure lane`,
      };
    }
  }

  const finishedAt = (deps.now ?? (() => new Date()))();
  const status = error ? 'FAILED' : 'SUCCEEDED';
  const manifestKey = runKeys.manifest(runId);
  const base: ManifestBase = {
    runId,
    mode: plan?.mode ?? null,
    status,
    counts: {
      lines: plan?.counts.lines ?? 0,
      records: plan?.counts.records ?? 0,
      succeeded: tally.succeeded,
      failed: tally.failed,
      invalid: plan?.counts.invalid ?? 0,
      duplicates: plan?.counts.duplicates ?? 0,
      skipped: (plan?.counts.skipped ?? 0) + tally.skipped,
      pending: tally.queued,
      recovered: 0,
    },
    tokens: { input: tally.inputTokens, output: tally.outputTokens },
    modelCalls: tally.modelCalls,
    startedAt: event.startedAt,
    finishedAt: finishedAt.toISOString(),
    durationMs: Math.max(0, finishedAt.getTime() - Date.parse(event.startedAt)),
    corpus: plan ? { bucket: plan.corpus.bucket, key: plan.corpus.key } : corpusOf(state),
    modelId: plan?.modelId ?? null,
    ledgerScope: plan?.ledgerScope ?? null,
    output: {
      bucket: deps.outputBucket,
      manifestKey,
      resultsPrefix: runKeys.resultsPrefix(runId),
      failuresPrefix: runKeys.failuresPrefix(runId),
    },
    ...(plan ? { batches: { total: tally.batches, failed: tally.failedBatches } } : {}),
    ...(jobs ? { jobs } : {}),
    ...(error ? { error } : {}),
  };
  const revision = await deps.runs.putBase(runId, base);
  // The lane may have settled some of the run's records already: the manifest folds them in.
  const manifest = await writeManifest(deps.runs, deps.s3, deps.outputBucket, runId, revision);
  faultPoint('finalize', 'after-manifest');
  await putRunEvent(
    deps.events,
    deps.eventBusName,
    manifest,
    status === 'SUCCEEDED' ? RUN_COMPLETED : RUN_FAILED,
  );
  metrics.addMetric(status === 'SUCCEEDED' ? 'RunsSucceeded' : 'RunsFailed', 'Count', 1);
  logger.info('run finalized', { runId, status, counts: manifest.counts, error });
  return {
    runId,
    status,
    manifestKey,
    revision: manifest.revision,
    counts: manifest.counts,
    ...(error ? { error } : {}),
  };
}

function resultWriterDetailsOf(mapResult: unknown): { Bucket: string; Key: string } | undefined {
  return (mapResult as { resultWriterDetails?: { Bucket: string; Key: string } } | undefined)
    ?.resultWriterDetails;
}

function add(tally: Tally, summary: Partial<BatchSummary>): void {
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
async function tallyConverse(
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
      add(tally, JSON.parse(child.Output ?? '{}') as Partial<BatchSummary>);
    }
  }
  const dead: { items: WorkItem[]; reason: Reason }[] = [];
  for (const status of ['FAILED', 'PENDING'] as const) {
    for (const file of files[status] ?? []) {
      for (const child of (await getJson<ChildResult[]>(deps.s3, details.Bucket, file.Key)) ?? []) {
        tally.batches++;
        tally.failedBatches++;
        const batch = JSON.parse(child.Input ?? '{}') as Partial<BatchEvent>;
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
function repairBatch(
  deps: FinalizeDeps,
  plan: PlanOutput,
  items: WorkItem[],
  reason: Reason,
  batchId?: string,
): Promise<BatchSummary> {
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
async function tallyOrphans(
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

function notReached(): Reason {
  return { code: 'NotProcessed', message: 'the run stopped before this record was processed' };
}

/**
 * Mode A: the shards from their collect markers; a shard without one (its child failed before Collect finished) is
 * collected here when its job ended (its records without output handed to the failure lane, the fan-out being over),
 * or handed to the failure lane as a whole when no job ever ended. Then the Converse fan-out over the tail and the
 * re-driven records.
 * @returns the run manifest's `jobs`, one per shard in shard order
 */
async function tallyBatchRun(
  deps: FinalizeDeps,
  plan: PlanOutput,
  batch: BatchPlan,
  state: Record<string, unknown>,
  tally: Tally,
  error: Reason | undefined,
): Promise<ManifestJob[]> {
  const shards = await getJson<ShardItem[]>(deps.s3, deps.outputBucket, batch.shardsKey);
  if (!shards) throw new Error(`shard list s3://${deps.outputBucket}/${batch.shardsKey} is missing`);
  let markers = await mapWithConcurrency(shards, 16, (shard) =>
    getJson<CollectShardSummary>(deps.s3, deps.outputBucket, collectKeys.marker(plan.runId, shard.shard)),
  );
  const batchDetails = resultWriterDetailsOf(state.batchResult);
  const failedChildren = batchDetails
    ? await readFailedShardChildren(deps, batchDetails)
    : new Map<number, { job?: BatchJobOutcome; reason: Reason }>();

  const uncollected = shards.filter((_, i) => !markers[i]);
  const lateRedrives: string[] = [];
  const notes = new Map<number, string>();
  await mapWithConcurrency(uncollected, REPAIR_CONCURRENCY, async (item) => {
    const child = failedChildren.get(item.shard);
    const reason = child?.reason ??
      error ?? { code: 'NotCollected', message: "the shard's batch job output was never collected" };
    notes.set(item.shard, `${reason.code}: ${reason.message}`);
    if (child?.job) {
      try {
        const summary = await collectShard(
          {
            runId: plan.runId,
            ledgerScope: plan.ledgerScope,
            shard: item.shard,
            jobArn: child.job.jobArn,
            jobStatus: child.job.status,
            ...(child.job.message ? { failureMessage: child.job.message } : {}),
            inputKeys: item.inputKeys,
            outputPrefix: child.job.outputPrefix,
            submittedAt: child.job.submittedAt,
            ...(child.job.endedAt ? { endedAt: child.job.endedAt } : {}),
          },
          { ...deps, leaseMs: deps.leaseMs },
        );
        if (summary.redriveKey) lateRedrives.push(summary.redriveKey);
        return;
      } catch (err) {
        // The job failed for a reason no model call gets past: Collect failed its records and wrote its marker.
        if (err instanceof BatchJobFailedError) return;
        logger.warn('collecting a shard Finalize found uncollected failed', { shard: item.shard, err });
      }
    }
    // No job output to collect: every record of the shard is handed to the failure lane, as the shard.
    await repairShard(deps, plan, item, reason, tally);
  });
  if (uncollected.length > 0) {
    markers = await mapWithConcurrency(shards, 16, (shard) =>
      getJson<CollectShardSummary>(deps.s3, deps.outputBucket, collectKeys.marker(plan.runId, shard.shard)),
    );
  }
  for (const marker of markers) {
    if (!marker) continue;
    add(tally, marker);
  }

  // The Converse fan-out: the tail and the records jobs left without output.
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

  return shards.map((item, i): ManifestJob => {
    const marker = markers[i];
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
    const child = failedChildren.get(item.shard);
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
  });
}

/** The record ids of JSONL files of WorkItems. */
async function recordIdsOf(deps: FinalizeDeps, keys: string[]): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const { text } of objectLines(deps.s3, deps.outputBucket, keys)) {
    ids.add((JSON.parse(text) as WorkItem).recordId);
  }
  return ids;
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
): Promise<Map<number, { job?: BatchJobOutcome; reason: Reason }>> {
  const manifest = await getJson<ResultWriterManifest>(deps.s3, details.Bucket, details.Key);
  if (!manifest) throw new Error(`Map Run manifest s3://${details.Bucket}/${details.Key} is missing`);
  const children = new Map<number, { job?: BatchJobOutcome; reason: Reason }>();
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

function isPlanOutput(state: Record<string, unknown>): state is Record<string, unknown> & PlanOutput {
  return typeof state.itemsKey === 'string' && typeof state.counts === 'object' && state.counts !== null;
}

function corpusOf(state: Record<string, unknown>): { bucket: string; key: string } | null {
  return typeof state.bucket === 'string' && typeof state.key === 'string'
    ? { bucket: state.bucket, key: state.key }
    : null;
}

/** Lambda errors arrive as a JSON Cause `{errorType, errorMessage, trace}`: keep the message a person can act on. */
function describeCause(cause: string | undefined): string {
  if (!cause) return 'no cause given';
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === 'string') return parsed.errorMessage;
  } catch {
    // not JSON: a plain cause
  }
  return cause;
}

const env = readEnv(
  z.object({
    OUTPUT_BUCKET: required,
    EVENT_BUS_NAME: required,
    IDEMPOTENCY_TABLE: required,
    LEDGER_TABLE: required,
    RUNS_TABLE: required,
    FAILURE_QUEUE_URL: required,
    FAILURE_DLQ_URL: required,
    LEDGER_TTL_DAYS: positiveInt,
    CLAIM_LEASE_SECONDS: positiveInt,
  }),
);
const s3 = traced(new S3Client({}));
const events = traced(new EventBridgeClient({}));
const ddb = traced(new DynamoDBClient({}));
const sqs = traced(new SQSClient({}));
const documentClient = DynamoDBDocumentClient.from(ddb);
const ledger = new Ledger({
  client: documentClient,
  tableName: env.LEDGER_TABLE,
  ttlDays: env.LEDGER_TTL_DAYS,
});
const runs = new RunState(documentClient, env.RUNS_TABLE, env.LEDGER_TTL_DAYS);
const resultsPublisher = resultsPublisherFromEnv(sqs);
const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: ddb,
});

const idempotent = makeIdempotent(
  async (event: unknown, _context: Context): Promise<FinalizeOutput> => {
    const parsed = finalizeEventSchema.safeParse(event);
    if (!parsed.success)
      throw new InvalidEventError(`Finalize expects {runId, startedAt, state}: ${parsed.error.message}`);
    logger.appendKeys({ runId: parsed.data.runId });
    return finalizeRun(parsed.data, {
      s3,
      events,
      ledger,
      runs,
      failureLane: new FailureLaneSender(sqs, env.FAILURE_QUEUE_URL, env.FAILURE_DLQ_URL),
      resultsPublisher,
      outputBucket: env.OUTPUT_BUCKET,
      eventBusName: env.EVENT_BUS_NAME,
      leaseMs: env.CLAIM_LEASE_SECONDS * 1000,
    });
  },
  {
    persistenceStore,
    config: new IdempotencyConfig({ eventKeyJmesPath: 'runId', expiresAfterSeconds: 3600 }),
  },
);

/**
 * Lambda entry: Finalize, idempotent per run (a repeated invocation returns the first answer), its in-progress lock held
 * only as long as a retry waits (lambda/shared/idempotency.ts).
 */
export const handler = withObservability((event: unknown, context: Context): Promise<FinalizeOutput> =>
  idempotent(event, withInProgressLock(context)),
);
