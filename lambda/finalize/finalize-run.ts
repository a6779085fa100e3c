import * as z from 'zod';
import {
  MAX_MANIFEST_SOURCES,
  RUN_COMPLETED,
  RUN_FAILED,
  runKeys,
  type CorpusSourceEntry,
  type ManifestJob,
  type PlanOutput,
  type RunManifest,
} from '../shared/contracts';
import { faultPoint } from '../shared/fault-points';
import { logger, metrics } from '../shared/observability';
import { putRunEvent } from '../shared/run-events';
import { getJson } from '../shared/s3-jsonl';
import { writeManifest, type ManifestBase } from '../shared/run-state';
import { tallyBatchRun } from './batch-tally';
import { describeCause, type StepFunctionsError } from './map-results';
import type { FinalizeDeps } from './deps';
import { emptyTally, tallyConverse, type Reason, type Tally } from './tally';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';

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
  const tally = emptyTally();
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
    error ??= accountingMismatch(plan, tally);
  }

  const finishedAt = (deps.now ?? (() => new Date()))();
  const status = error ? 'FAILED' : 'SUCCEEDED';
  const manifestKey = runKeys.manifest(runId);
  const sources = plan
    ? await getJson<CorpusSourceEntry[]>(deps.s3, deps.outputBucket, runKeys.sources(runId))
    : undefined;
  const base = manifestBase(event, deps, {
    plan,
    tally,
    jobs,
    error,
    status,
    finishedAt,
    manifestKey,
    sources,
  });
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
  metrics.addMetric(
    status === 'SUCCEEDED' ? PIPELINE_METRICS.runsSucceeded : PIPELINE_METRICS.runsFailed,
    'Count',
    1,
  );
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

/** The error of a run whose units do not account for every record Plan gave them, if they do not. */
function accountingMismatch(plan: PlanOutput, tally: Tally): Reason | undefined {
  const accounted = tally.succeeded + tally.failed + tally.skipped + tally.queued;
  if (accounted === plan.counts.toProcess) return undefined;
  return {
    code: 'AccountingMismatch',
    message: `${plan.counts.toProcess} records were to be processed but ${tally.succeeded} succeeded, ${tally.failed} failed, ${tally.skipped} were skipped and ${tally.queued} were handed to the failure lane`,
  };
}

/** What the run's tally came to. */
interface RunOutcome {
  plan: PlanOutput | undefined;
  tally: Tally;
  jobs: ManifestJob[] | undefined;
  error: Reason | undefined;
  status: 'SUCCEEDED' | 'FAILED';
  finishedAt: Date;
  manifestKey: string;
  /** The corpus's objects as Plan read them (runs/<runId>/sources.json). */
  sources: CorpusSourceEntry[] | undefined;
}

/** The run manifest's base: what Finalize found, before the failure lane's later outcomes fold in. */
function manifestBase(event: FinalizeEvent, deps: FinalizeDeps, outcome: RunOutcome): ManifestBase {
  const { runId, state } = event;
  const { plan, tally, jobs, error, status, finishedAt, manifestKey, sources } = outcome;
  return {
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
    ...(sources
      ? {
          sources: sources.slice(0, MAX_MANIFEST_SOURCES),
          sourcesFile: { key: runKeys.sources(runId), count: sources.length },
        }
      : {}),
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
}

function isPlanOutput(state: Record<string, unknown>): state is Record<string, unknown> & PlanOutput {
  return typeof state.itemsKey === 'string' && typeof state.counts === 'object' && state.counts !== null;
}

function corpusOf(state: Record<string, unknown>): { bucket: string; key: string } | null {
  return typeof state.bucket === 'string' && typeof state.key === 'string'
    ? { bucket: state.bucket, key: state.key }
    : null;
}
