import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import * as z from 'zod';
import {
  EVENT_SOURCE,
  RUN_COMPLETED,
  RUN_FAILED,
  runKeys,
  type BatchEvent,
  type BatchSummary,
  type BatchJobOutcome,
  type BatchPlan,
  type FailureLine,
  type ManifestJob,
  type PlanOutput,
  type ResultLine,
  type RunManifest,
  type ShardItem,
  type WorkItem,
} from './shared/contracts';
import { collectKeys, type CollectShardSummary } from './shared/collect';
import { readEnv, required } from './shared/env';
import { batchIdOf } from './shared/batches';
import {
  callDependency,
  InvalidEventError,
  isTransientAwsError,
  TransientDependencyError,
} from './shared/errors';
import { logger, metrics, traced } from './shared/observability';
import { mapWithConcurrency } from './shared/pool';
import {
  getJson,
  JsonlObjectWriter,
  openObject,
  putJson,
  readLines,
  readResultsFile,
} from './shared/s3-jsonl';

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
  counts: RunManifest['counts'];
  error?: { code: string; message: string };
}

/** What Finalize talks to. */
export interface FinalizeDeps {
  s3: S3Client;
  events: EventBridgeClient;
  outputBucket: string;
  eventBusName: string;
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

/** Why records went unprocessed, as a failure line's code and message. */
interface Reason {
  code: string;
  message: string;
}

/** A shard of a mode A run whose job output was never collected (no marker), and its records' fate. */
interface UncollectedShard {
  item: ShardItem;
  /** How the shard's job ended, when its child got that far. */
  job?: BatchJobOutcome;
  reason: Reason;
  succeeded: number;
  failed: number;
}

/** A failed (or never run) child of the batch Map, from its ResultWriter files. */
interface FailedShardChild {
  job?: BatchJobOutcome;
  reason: Reason;
}

interface Tally {
  succeeded: number;
  failed: number;
  skipped: number;
  inputTokens: number;
  outputTokens: number;
  batches: number;
  failedBatches: number;
}

/**
 * Accounts for every line of the run, writes `runs/<runId>/manifest.json` and announces the outcome on the
 * pipeline's event bus. Sums the children's summaries from the Map's ResultWriter files; the records of a child that
 * failed are checked against what it managed to publish and the rest recorded as failed; when the Map itself failed
 * (no ResultWriter details), every record is accounted for from the files the children wrote. A mode A run is
 * summed from its shards' collect markers plus the Converse fan-out, and its manifest lists the jobs.
 */
export async function finalizeRun(event: FinalizeEvent, deps: FinalizeDeps): Promise<FinalizeOutput> {
  const { runId, state } = event;
  const plan = isPlanOutput(state) ? state : undefined;
  const stateError = state.error as StepFunctionsError | undefined;
  const tally: Tally = {
    succeeded: 0,
    failed: 0,
    skipped: 0,
    inputTokens: 0,
    outputTokens: 0,
    batches: 0,
    failedBatches: 0,
  };
  let error: { code: string; message: string } | undefined = stateError
    ? { code: stateError.Error ?? 'States.TaskFailed', message: describeCause(stateError.Cause) }
    : undefined;

  let jobs: ManifestJob[] | undefined;
  if (plan && plan.counts.toProcess > 0) {
    if (plan.mode === 'batch' && plan.batch) {
      jobs = await tallyBatchRun(deps, plan, plan.batch, state, tally, error);
    } else {
      const details = resultWriterDetailsOf(state.fanOutResult);
      if (details) {
        await tallyFromResultWriter(deps, plan, details, tally);
      } else {
        await tallyFromRunFiles(deps, plan, tally, error);
      }
    }
    if (!error && tally.succeeded + tally.failed + tally.skipped !== plan.counts.toProcess) {
      error = {
        code: 'AccountingMismatch',
        message: `${plan.counts.toProcess} records were to be processed but ${tally.succeeded} succeeded, ${tally.failed} failed and ${tally.skipped} were skipped`,
      };
    }
  }

  const finishedAt = (deps.now ?? (() => new Date()))();
  const status = error ? 'FAILED' : 'SUCCEEDED';
  const manifestKey = runKeys.manifest(runId);
  const manifest: RunManifest = {
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
    },
    tokens: { input: tally.inputTokens, output: tally.outputTokens },
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
  await putJson(deps.s3, deps.outputBucket, manifestKey, manifest);
  await publishRunEvent(deps, manifest);
  metrics.addMetric(status === 'SUCCEEDED' ? 'RunsSucceeded' : 'RunsFailed', 'Count', 1);
  logger.info('run finalized', { runId, status, counts: manifest.counts, error });
  return { runId, status, manifestKey, counts: manifest.counts, ...(error ? { error } : {}) };
}

function resultWriterDetailsOf(mapResult: unknown): { Bucket: string; Key: string } | undefined {
  return (mapResult as { resultWriterDetails?: { Bucket: string; Key: string } } | undefined)
    ?.resultWriterDetails;
}

/**
 * Mode A: accounts for the shards from their collect markers (a `Failed` job's marker counts its records as failed)
 * and for the records that went through Converse from the fan-out's ResultWriter files. When a shard has no marker
 * (its child failed before Collect finished) or the run failed, every record is accounted for from the run's files
 * instead, each record of an uncollected shard recorded as failed with its child's error.
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
  const markers = await mapWithConcurrency(shards, 16, (shard) =>
    getJson<CollectShardSummary>(deps.s3, deps.outputBucket, collectKeys.marker(plan.runId, shard.shard)),
  );
  const batchDetails = resultWriterDetailsOf(state.batchResult);
  const failedChildren = batchDetails
    ? await readFailedShardChildren(deps, batchDetails)
    : new Map<number, FailedShardChild>();

  const uncollected = new Map<number, UncollectedShard>();
  shards.forEach((item, i) => {
    if (markers[i]) return;
    const child = failedChildren.get(item.shard);
    uncollected.set(item.shard, {
      item,
      ...(child?.job ? { job: child.job } : {}),
      reason: child?.reason ??
        error ?? { code: 'NotCollected', message: "the shard's batch job output was never collected" },
      succeeded: 0,
      failed: 0,
    });
  });

  if (uncollected.size === 0 && !error) {
    for (const marker of markers) {
      if (!marker) continue;
      tally.succeeded += marker.succeeded;
      tally.failed += marker.failed;
      tally.skipped += marker.skipped;
      tally.inputTokens += marker.inputTokens;
      tally.outputTokens += marker.outputTokens;
    }
    const fanOut = resultWriterDetailsOf(state.fanOutResult);
    if (fanOut) await tallyFromResultWriter(deps, plan, fanOut, tally);
  } else {
    logger.warn('accounting for the batch run from its files', {
      uncollected: [...uncollected.keys()],
      error,
    });
    await tallyFromRunFiles(deps, plan, tally, error, [...uncollected.values()]);
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
    const lost = uncollected.get(item.shard);
    return {
      shard: item.shard,
      jobArn: lost?.job?.jobArn ?? null,
      status: 'NotCollected',
      records: item.records,
      succeeded: lost?.succeeded ?? 0,
      failed: lost?.failed ?? 0,
      skipped: 0,
      redriven: 0,
      submittedAt: lost?.job?.submittedAt ?? null,
      endedAt: lost?.job?.endedAt ?? null,
      ...(lost ? { message: `${lost.reason.code}: ${lost.reason.message}` } : {}),
    };
  });
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

async function tallyFromResultWriter(
  deps: FinalizeDeps,
  plan: PlanOutput,
  details: { Bucket: string; Key: string },
  tally: Tally,
): Promise<void> {
  const manifest = await getJson<ResultWriterManifest>(deps.s3, details.Bucket, details.Key);
  if (!manifest) throw new Error(`Map Run manifest s3://${details.Bucket}/${details.Key} is missing`);
  const files = manifest.ResultFiles ?? {};
  for (const file of files.SUCCEEDED ?? []) {
    for (const child of (await getJson<ChildResult[]>(deps.s3, details.Bucket, file.Key)) ?? []) {
      const summary = JSON.parse(child.Output ?? '{}') as Partial<BatchSummary>;
      tally.batches++;
      tally.succeeded += summary.succeeded ?? 0;
      tally.failed += summary.failed ?? 0;
      tally.skipped += summary.skipped ?? 0;
      tally.inputTokens += summary.inputTokens ?? 0;
      tally.outputTokens += summary.outputTokens ?? 0;
    }
  }
  let writer: JsonlObjectWriter | undefined;
  for (const status of ['FAILED', 'PENDING'] as const) {
    for (const file of files[status] ?? []) {
      for (const child of (await getJson<ChildResult[]>(deps.s3, details.Bucket, file.Key)) ?? []) {
        tally.batches++;
        tally.failedBatches++;
        const batch = JSON.parse(child.Input ?? '{}') as Partial<BatchEvent>;
        const items = batch.Items ?? [];
        const batchId = batchIdOf(
          plan.runId,
          items.map((i) => i.recordId),
        );
        // What the batch managed to publish before it failed.
        const published = await readResultsFile(
          deps.s3,
          deps.outputBucket,
          runKeys.results(plan.runId, batchId),
        );
        const reason = {
          code: child.Error ?? (status === 'PENDING' ? 'NotProcessed' : 'ChildExecutionFailed'),
          message: child.Cause ? describeCause(child.Cause) : 'the batch did not complete',
        };
        writer ??= new JsonlObjectWriter(deps.s3, deps.outputBucket, runKeys.failures(plan.runId, 'fanout'));
        for (const item of items) {
          const usage = published.get(item.recordId)?.usage;
          if (usage) {
            // Its answer is in the results file: it succeeded, and its tokens were spent.
            tally.succeeded++;
            tally.inputTokens += usage.inputTokens;
            tally.outputTokens += usage.outputTokens;
            continue;
          }
          tally.failed++;
          await writer.write(fanOutFailure(item, reason));
        }
      }
    }
  }
  if (writer) await writer.close();
}

function fanOutFailure(item: WorkItem, reason: { code: string; message: string }): FailureLine {
  return {
    recordId: item.recordId,
    line: item.line,
    stage: 'fanout',
    error: {
      code: reason.code,
      message: `the batch holding this record failed: ${reason.message}`,
      retryable: true,
    },
  };
}

/**
 * The Map failed as a whole (for instance the tolerated failure threshold was exceeded), or a mode A shard was never
 * collected: account for every record from the result and failure files the run wrote, and record the rest as not
 * processed. The rest of an uncollected shard is recorded (stage `batch`) with that shard's reason, and each
 * uncollected shard's records are counted into it.
 */
async function tallyFromRunFiles(
  deps: FinalizeDeps,
  plan: PlanOutput,
  tally: Tally,
  error: Reason | undefined,
  uncollected: UncollectedShard[] = [],
): Promise<void> {
  // recordId -> true when it succeeded, false when it failed.
  const accounted = new Map<string, boolean>();
  for await (const key of listKeys(deps, runKeys.resultsPrefix(plan.runId))) {
    const body = await openObject(deps.s3, deps.outputBucket, key);
    if (!body) continue;
    for await (const line of readLines(body)) {
      if (!line) continue;
      const result = JSON.parse(line) as ResultLine;
      if (accounted.has(result.recordId)) continue;
      accounted.set(result.recordId, true);
      tally.succeeded++;
      tally.inputTokens += result.usage.inputTokens;
      tally.outputTokens += result.usage.outputTokens;
    }
  }
  for await (const key of listKeys(deps, runKeys.failuresPrefix(plan.runId))) {
    if (key.endsWith('/plan.jsonl') || key.endsWith('/fanout.jsonl')) continue;
    const body = await openObject(deps.s3, deps.outputBucket, key);
    if (!body) continue;
    for await (const line of readLines(body)) {
      if (!line) continue;
      const failure = JSON.parse(line) as FailureLine;
      if (!failure.recordId || accounted.has(failure.recordId)) continue;
      accounted.set(failure.recordId, false);
      tally.failed++;
    }
  }
  // The records of uncollected shards still unaccounted for, by the shard they belong to.
  const lostIn = new Map<string, UncollectedShard>();
  for (const lost of uncollected) {
    for await (const recordId of shardRecordIds(deps, lost.item)) {
      const outcome = accounted.get(recordId);
      if (outcome === undefined) lostIn.set(recordId, lost);
      else if (outcome) lost.succeeded++;
      else lost.failed++;
    }
  }
  const items = await openObject(deps.s3, deps.outputBucket, plan.itemsKey);
  if (!items) throw new Error(`items file s3://${deps.outputBucket}/${plan.itemsKey} is missing`);
  const reason = {
    code: error?.code ?? 'NotProcessed',
    message: error?.message ?? 'the run stopped before this record',
  };
  let writer: JsonlObjectWriter | undefined;
  for await (const line of readLines(items)) {
    if (!line) continue;
    const item = JSON.parse(line) as WorkItem;
    if (accounted.has(item.recordId)) continue;
    accounted.set(item.recordId, false);
    tally.failed++;
    writer ??= new JsonlObjectWriter(deps.s3, deps.outputBucket, runKeys.failures(plan.runId, 'fanout'));
    const lost = lostIn.get(item.recordId);
    if (lost) {
      lost.failed++;
      await writer.write(uncollectedFailure(item, lost));
      continue;
    }
    await writer.write({
      ...fanOutFailure(item, reason),
      error: { code: reason.code, message: `not processed: ${reason.message}`, retryable: true },
    });
  }
  if (writer) await writer.close();
}

function uncollectedFailure(item: WorkItem, lost: UncollectedShard): FailureLine {
  return {
    recordId: item.recordId,
    line: item.line,
    stage: 'batch',
    error: {
      code: lost.reason.code,
      message: `the batch job of shard ${lost.item.shard} was not collected: ${lost.reason.message}`,
      retryable: true,
    },
  };
}

/** The record ids of a shard's input files (batch input lines `{recordId, modelInput}`), streamed. */
async function* shardRecordIds(deps: FinalizeDeps, shard: ShardItem): AsyncGenerator<string> {
  for (const key of shard.inputKeys) {
    const body = await openObject(deps.s3, deps.outputBucket, key);
    if (!body) continue;
    for await (const line of readLines(body)) {
      if (!line.trim()) continue;
      const { recordId } = JSON.parse(line) as { recordId?: unknown };
      if (typeof recordId === 'string') yield recordId;
    }
  }
}

async function* listKeys(deps: FinalizeDeps, prefix: string): AsyncGenerator<string> {
  let token: string | undefined;
  do {
    const out = await callDependency('S3 ListObjectsV2', () =>
      deps.s3.send(
        new ListObjectsV2Command({ Bucket: deps.outputBucket, Prefix: prefix, ContinuationToken: token }),
      ),
    );
    for (const o of out.Contents ?? []) if (o.Key) yield o.Key;
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
}

async function publishRunEvent(deps: FinalizeDeps, manifest: RunManifest): Promise<void> {
  const detail = {
    runId: manifest.runId,
    status: manifest.status,
    mode: manifest.mode,
    counts: manifest.counts,
    tokens: manifest.tokens,
    corpus: manifest.corpus,
    manifest: `s3://${manifest.output.bucket}/${manifest.output.manifestKey}`,
    results: `s3://${manifest.output.bucket}/${manifest.output.resultsPrefix}`,
    failures: `s3://${manifest.output.bucket}/${manifest.output.failuresPrefix}`,
    ...(manifest.error ? { error: manifest.error } : {}),
  };
  const out = await callDependency('EventBridge PutEvents', () =>
    deps.events.send(
      new PutEventsCommand({
        Entries: [
          {
            EventBusName: deps.eventBusName,
            Source: EVENT_SOURCE,
            DetailType: manifest.status === 'SUCCEEDED' ? RUN_COMPLETED : RUN_FAILED,
            Detail: JSON.stringify(detail),
          },
        ],
      }),
    ),
  );
  if (out.FailedEntryCount) {
    const entry = out.Entries?.[0];
    const message = `the run event was not accepted: ${entry?.ErrorCode}: ${entry?.ErrorMessage}`;
    // A throttled or internally failed entry is worth another try: the workflow retries this name.
    if (entry?.ErrorCode === 'InternalFailure' || isTransientAwsError({ name: entry?.ErrorCode })) {
      throw new TransientDependencyError(message);
    }
    throw new Error(message);
  }
}

const env = readEnv(
  z.object({ OUTPUT_BUCKET: required, EVENT_BUS_NAME: required, IDEMPOTENCY_TABLE: required }),
);
const s3 = traced(new S3Client({}));
const events = traced(new EventBridgeClient({}));
const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: traced(new DynamoDBClient({})),
});

/** Lambda entry: Finalize, idempotent per run (one manifest, one event). */
export const handler = makeIdempotent(
  async (event: unknown, _context: Context): Promise<FinalizeOutput> => {
    const parsed = finalizeEventSchema.safeParse(event);
    if (!parsed.success)
      throw new InvalidEventError(`Finalize expects {runId, startedAt, state}: ${parsed.error.message}`);
    logger.appendKeys({ runId: parsed.data.runId });
    try {
      return await finalizeRun(parsed.data, {
        s3,
        events,
        outputBucket: env.OUTPUT_BUCKET,
        eventBusName: env.EVENT_BUS_NAME,
      });
    } finally {
      metrics.publishStoredMetrics();
    }
  },
  {
    persistenceStore,
    config: new IdempotencyConfig({ eventKeyJmesPath: 'runId', expiresAfterSeconds: 3600 }),
  },
);
