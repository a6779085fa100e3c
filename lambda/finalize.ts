import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import { z } from 'zod';
import {
  EVENT_SOURCE,
  RUN_COMPLETED,
  RUN_FAILED,
  runKeys,
  type BatchEvent,
  type BatchSummary,
  type FailureLine,
  type PlanOutput,
  type ResultLine,
  type RunManifest,
  type WorkItem,
} from './shared/contracts';
import { readEnv, required } from './shared/env';
import { batchIdOf } from './shared/batches';
import {
  callDependency,
  InvalidEventError,
  isTransientAwsError,
  TransientDependencyError,
} from './shared/errors';
import { logger, metrics, tracer } from './shared/observability';
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
 * (no ResultWriter details), every record is accounted for from the files the children wrote.
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

  if (plan && plan.counts.toProcess > 0) {
    const details = (
      state.fanOutResult as { resultWriterDetails?: { Bucket: string; Key: string } } | undefined
    )?.resultWriterDetails;
    if (details) {
      await tallyFromResultWriter(deps, plan, details, tally);
    } else {
      await tallyFromRunFiles(deps, plan, tally, error);
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
    ...(error ? { error } : {}),
  };
  await putJson(deps.s3, deps.outputBucket, manifestKey, manifest);
  await publishRunEvent(deps, manifest);
  metrics.addMetric(status === 'SUCCEEDED' ? 'RunsSucceeded' : 'RunsFailed', 'Count', 1);
  logger.info('run finalized', { runId, status, counts: manifest.counts, error });
  return { runId, status, manifestKey, counts: manifest.counts, ...(error ? { error } : {}) };
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
 * The Map failed as a whole (for instance the tolerated failure threshold was exceeded): account for every record
 * from the result and failure files the children wrote, and record the rest as not processed.
 */
async function tallyFromRunFiles(
  deps: FinalizeDeps,
  plan: PlanOutput,
  tally: Tally,
  error: { code: string; message: string } | undefined,
): Promise<void> {
  const accounted = new Set<string>();
  for await (const key of listKeys(deps, runKeys.resultsPrefix(plan.runId))) {
    const body = await openObject(deps.s3, deps.outputBucket, key);
    if (!body) continue;
    for await (const line of readLines(body)) {
      if (!line) continue;
      const result = JSON.parse(line) as ResultLine;
      if (accounted.has(result.recordId)) continue;
      accounted.add(result.recordId);
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
      accounted.add(failure.recordId);
      tally.failed++;
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
    accounted.add(item.recordId);
    tally.failed++;
    writer ??= new JsonlObjectWriter(deps.s3, deps.outputBucket, runKeys.failures(plan.runId, 'fanout'));
    await writer.write({
      ...fanOutFailure(item, reason),
      error: { code: reason.code, message: `not processed: ${reason.message}`, retryable: true },
    });
  }
  if (writer) await writer.close();
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
const s3 = tracer.captureAWSv3Client(new S3Client({}));
const events = tracer.captureAWSv3Client(new EventBridgeClient({}));
const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: tracer.captureAWSv3Client(new DynamoDBClient({})),
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
