import type { CollectShardSummary } from '../lambda/batch/collect/collect-contract';
import {
  mapItemUnit,
  type PlanOutput,
  type RunManifest,
  type RunMode,
  type ShardItem,
} from '../lambda/shared/contracts';
import type { Backend, ExecutionInfo, JobInfo, MapRunInfo } from './backend';
import { NotFoundError } from './errors';
import { mapWithConcurrency } from '../lambda/shared/pool';
import { RunStore } from './run-store';

/**
 * One run as the CLI shows it, assembled from the execution (AWS), plan.json and manifest.json, and its progress:
 * records done of total, rate, ETA, error rate, the batch jobs (batch mode) and the Map Runs (AWS).
 */

/** Statuses in which an execution is still going. */
const ACTIVE_STATUSES = new Set(['RUNNING', 'PENDING_REDRIVE']);

/** Statuses that make a run "failed" for the exit code. */
export const FAILED_STATUSES = new Set(['FAILED', 'TIMED_OUT', 'ABORTED']);

/** A run: what the execution and the run files say about it. */
export interface RunView {
  readonly runId: string;
  /**
   * The execution's status when there is one (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED), else the manifest's
   * (SUCCEEDED, FAILED), else UNFINISHED (planned, never finalized: an interrupted local run).
   */
  readonly status: string;
  /** False while the execution runs. */
  readonly finished: boolean;
  readonly mode: RunMode | null;
  readonly modelId: string | null;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly execution?: ExecutionInfo;
  readonly plan?: PlanOutput;
  readonly manifest?: RunManifest;
}

/** Combines what is known of a run; undefined when nothing is. */
export function runViewOf(
  runId: string,
  execution: ExecutionInfo | undefined,
  plan: PlanOutput | undefined,
  manifest: RunManifest | undefined,
): RunView | undefined {
  if (!execution && !plan && !manifest) return undefined;
  const status = execution?.status ?? manifest?.status ?? 'UNFINISHED';
  return {
    runId,
    status,
    finished: !ACTIVE_STATUSES.has(status),
    mode: manifest?.mode ?? plan?.mode ?? null,
    modelId: manifest?.modelId ?? plan?.modelId ?? null,
    startedAt: execution?.startedAt ?? plan?.startedAt ?? manifest?.startedAt ?? null,
    finishedAt: manifest?.finishedAt ?? execution?.stoppedAt ?? null,
    ...(execution ? { execution } : {}),
    ...(plan ? { plan } : {}),
    ...(manifest ? { manifest } : {}),
  };
}

/**
 * Loads a run.
 * @throws NotFoundError when neither an execution nor run files exist for it
 */
export async function loadRun(backend: Backend, store: RunStore, runId: string): Promise<RunView> {
  const [execution, plan, manifest] = await Promise.all([
    backend.describeExecution(runId),
    store.plan(runId),
    store.manifest(runId),
  ]);
  const view = runViewOf(runId, execution, plan, manifest);
  if (!view) throw new NotFoundError(`no run ${runId} in ${backend.label}`);
  return view;
}

/** A line of `corpus runs`. */
export interface RunSummary {
  readonly runId: string;
  readonly status: string;
  readonly mode: RunMode | null;
  /** Distinct valid records (null until Plan has run). */
  readonly records: number | null;
  /** Records to process after the ledger's skips (null until Plan has run). */
  readonly toProcess: number | null;
  readonly succeeded: number | null;
  readonly failed: number | null;
  /** Bad lines. */
  readonly invalid: number | null;
  readonly startedAt: string | null;
  readonly durationMs: number | null;
}

function summaryOf(view: RunView): RunSummary {
  const m = view.manifest;
  const p = view.plan;
  const started = view.startedAt ? Date.parse(view.startedAt) : NaN;
  const ended = view.finishedAt ? Date.parse(view.finishedAt) : NaN;
  return {
    runId: view.runId,
    status: view.status,
    mode: view.mode,
    records: m?.counts.records ?? p?.counts.records ?? null,
    toProcess: p?.counts.toProcess ?? null,
    succeeded: m?.counts.succeeded ?? null,
    failed: m?.counts.failed ?? null,
    invalid: m?.counts.invalid ?? p?.counts.invalid ?? null,
    startedAt: view.startedAt,
    durationMs: m?.durationMs ?? (Number.isNaN(started) || Number.isNaN(ended) ? null : ended - started),
  };
}

/**
 * The most recent runs, newest first: Step Functions' executions where the backend keeps them (AWS), else every run
 * folder in the output bucket (local), each with its plan and manifest counts.
 */
export async function listRuns(backend: Backend, store: RunStore, limit: number): Promise<RunSummary[]> {
  const executions = await backend.listExecutions(limit);
  if (executions) {
    const views = await mapWithConcurrency(executions, 8, async (e) => {
      const [plan, manifest] = await Promise.all([store.plan(e.runId), store.manifest(e.runId)]);
      return runViewOf(e.runId, e, plan, manifest)!;
    });
    return views.map(summaryOf);
  }
  const ids = await store.listRunIds();
  const views = await mapWithConcurrency(ids, 8, async (runId) => {
    const [plan, manifest] = await Promise.all([store.plan(runId), store.manifest(runId)]);
    return runViewOf(runId, undefined, plan, manifest);
  });
  return views
    .filter((v): v is RunView => v !== undefined)
    .sort((a, b) => (b.startedAt ?? '').localeCompare(a.startedAt ?? ''))
    .slice(0, limit)
    .map(summaryOf);
}

/** A batch job (shard) row of `corpus status`. */
export interface JobRow {
  readonly shard: number;
  readonly jobArn: string | null;
  /** Bedrock's status; `Pending` before the job is submitted. */
  readonly status: string;
  /** Records in the shard. */
  readonly records: number | null;
  /** Records with an output line so far (Bedrock's processed counter, or what Collect found). */
  readonly processed: number | null;
  readonly succeeded: number | null;
  readonly failed: number | null;
  /** Records the job left without output, re-driven through Converse. */
  readonly redriven: number | null;
  readonly submittedAt: string | null;
  readonly endedAt: string | null;
  readonly message?: string;
  readonly liveError?: string;
}

/** A Distributed Map Run row of `corpus status`. */
export interface MapRunRow {
  readonly stateName: string;
  /** What the Map's items are: shards (BatchJobs) or records (FanOut). */
  readonly unit: 'shards' | 'segments' | 'records';
  readonly status: string;
  readonly total: number;
  /** Items that ended (succeeded, failed, timed out or aborted). */
  readonly done: number;
  /** Items that failed, timed out or were aborted. */
  readonly failed: number;
  readonly running: number;
  readonly pending: number;
}

/** How far along a run is. */
export interface RunProgress {
  readonly runId: string;
  readonly status: string;
  readonly finished: boolean;
  readonly mode: RunMode | null;
  readonly modelId: string | null;
  /** Records to process (after the ledger's skips); 0 until Plan has run. */
  readonly total: number;
  /** Records that have an outcome. */
  readonly done: number;
  /** Records that failed so far. */
  readonly failed: number;
  /** Records that succeeded (known once the run is finalized). */
  readonly succeeded: number | null;
  /** Records the ledger already held when the run was planned (not part of `total`). */
  readonly skippedByPlan: number;
  readonly startedAt: string | null;
  readonly elapsedMs: number | null;
  /** Records per second. */
  readonly ratePerSecond: number | null;
  /** Seconds left at the current rate. */
  readonly etaSeconds: number | null;
  /** failed / done. */
  readonly errorRate: number | null;
  readonly jobs: readonly JobRow[];
  readonly mapRuns: readonly MapRunRow[];
}

/** What {@link computeProgress} works from. */
export interface ProgressInputs {
  readonly view: RunView;
  /** Batch mode's shard list. */
  readonly shards?: readonly ShardItem[];
  /** Batch mode's collect markers. */
  readonly markers?: readonly CollectShardSummary[];
  /** Batch mode's jobs (jobs table, Bedrock). */
  readonly jobs?: readonly JobInfo[];
  /** The execution's Map Runs (AWS). */
  readonly mapRuns?: readonly MapRunInfo[];
  /** Epoch milliseconds. */
  readonly now: number;
  /** A rate measured over a window (`--watch`); the average since the start otherwise. */
  readonly ratePerSecond?: number | null;
}

function mapRunRow(run: MapRunInfo): MapRunRow {
  const i = run.items;
  const failed = i.failed + i.timedOut + i.aborted;
  return {
    stateName: run.stateName,
    unit: mapItemUnit(run.stateName),
    status: run.status,
    total: i.total,
    done: i.succeeded + failed,
    failed,
    running: i.running,
    pending: i.pending,
  };
}

/** The job rows: the manifest's once finalized, else shards joined with collect markers and the jobs table. */
function jobRows(inputs: ProgressInputs): JobRow[] {
  const manifestJobs = inputs.view.manifest?.jobs;
  if (manifestJobs) {
    return manifestJobs.map((j) => ({
      shard: j.shard,
      jobArn: j.jobArn,
      status: j.status,
      records: j.records,
      processed: j.succeeded + j.failed + j.skipped,
      succeeded: j.succeeded,
      failed: j.failed,
      redriven: j.redriven,
      submittedAt: j.submittedAt,
      endedAt: j.endedAt,
      ...(j.message ? { message: j.message } : {}),
    }));
  }
  const markers = new Map((inputs.markers ?? []).map((m) => [m.shard, m]));
  // A retried submit may have registered a second job for a shard: the latest one is the shard's.
  const jobs = new Map<number, JobInfo>();
  for (const j of inputs.jobs ?? []) {
    const seen = jobs.get(j.shard);
    if (!seen || seen.submittedAt < j.submittedAt) jobs.set(j.shard, j);
  }
  const shardCount = Math.max(
    inputs.shards?.length ?? inputs.view.plan?.batch?.shards ?? 0,
    ...[...jobs.keys()].map((s) => s + 1),
  );
  const shards = new Map((inputs.shards ?? []).map((s) => [s.shard, s]));
  return Array.from({ length: shardCount }, (_, shard): JobRow => {
    const marker = markers.get(shard);
    const job = jobs.get(shard);
    if (marker) {
      return {
        shard,
        jobArn: marker.jobArn,
        status: marker.status,
        records: marker.records,
        processed: marker.succeeded + marker.failed + marker.skipped,
        succeeded: marker.succeeded,
        failed: marker.failed,
        redriven: marker.missing,
        submittedAt: marker.submittedAt ?? job?.submittedAt ?? null,
        endedAt: marker.endedAt ?? job?.endedAt ?? null,
        ...(marker.message ? { message: marker.message } : {}),
      };
    }
    return {
      shard,
      jobArn: job?.jobArn ?? null,
      status: job?.status ?? 'Pending',
      records: shards.get(shard)?.records ?? job?.counts?.total ?? null,
      processed: job?.counts?.processed ?? null,
      succeeded: job?.counts?.success ?? null,
      failed: job?.counts?.error ?? null,
      redriven: null,
      submittedAt: job?.submittedAt ?? null,
      endedAt: job?.endedAt ?? null,
      ...(job?.message ? { message: job.message } : {}),
      ...(job?.liveError ? { liveError: job.liveError } : {}),
    };
  });
}

/**
 * Records done of total, rate, ETA and error rate. Finalized runs are read from the manifest. While a run goes on:
 * batch mode counts each shard's collected records (or Bedrock's processed counter while its job runs) plus the Converse
 * fan-out's Map Run; converse mode counts the fan-out's Map Run (whose failures are the records of failed child batches:
 * records the model rejected one by one show in the manifest at the end).
 */
export function computeProgress(inputs: ProgressInputs): RunProgress {
  const { view, now } = inputs;
  const jobs = view.mode === 'batch' || view.manifest?.jobs ? jobRows(inputs) : [];
  const mapRuns = (inputs.mapRuns ?? []).map(mapRunRow);
  const plan = view.plan;
  const manifest = view.manifest;
  const skippedByPlan = plan?.counts.skipped ?? 0;
  const total = plan?.counts.toProcess ?? (manifest ? manifest.counts.records - manifest.counts.skipped : 0);
  let done: number;
  let failed: number;
  if (manifest) {
    done = total;
    failed = manifest.counts.failed;
  } else {
    const fanOut = mapRuns.filter((r) => r.unit === 'records');
    done = fanOut.reduce((sum, r) => sum + r.done, 0);
    failed = fanOut.reduce((sum, r) => sum + r.failed, 0);
    for (const j of jobs) {
      done += j.processed ?? 0;
      failed += j.failed ?? 0;
    }
    done = Math.min(done, total);
  }
  const started = view.startedAt ? Date.parse(view.startedAt) : NaN;
  const ended = view.finished && view.finishedAt ? Date.parse(view.finishedAt) : now;
  const elapsedMs = Number.isNaN(started) ? null : Math.max(0, ended - started);
  const averageRate = elapsedMs && elapsedMs > 0 ? done / (elapsedMs / 1000) : null;
  const ratePerSecond = view.finished ? averageRate : (inputs.ratePerSecond ?? averageRate);
  const remaining = total - done;
  let etaSeconds: number | null = null;
  if (!view.finished && total > 0) {
    if (remaining <= 0) etaSeconds = 0;
    else if (ratePerSecond && ratePerSecond > 0) etaSeconds = remaining / ratePerSecond;
  }
  return {
    runId: view.runId,
    status: view.status,
    finished: view.finished,
    mode: view.mode,
    modelId: view.modelId,
    total,
    done,
    failed,
    succeeded: manifest?.counts.succeeded ?? null,
    skippedByPlan,
    startedAt: view.startedAt,
    elapsedMs,
    ratePerSecond,
    etaSeconds,
    errorRate: done > 0 ? failed / done : null,
    jobs,
    mapRuns,
  };
}

/** The progress with a rate measured elsewhere (over a window while watching), and the ETA it gives. */
export function withRate(progress: RunProgress, ratePerSecond: number): RunProgress {
  if (progress.finished) return progress;
  const remaining = progress.total - progress.done;
  return {
    ...progress,
    ratePerSecond,
    etaSeconds: remaining <= 0 ? 0 : ratePerSecond > 0 ? remaining / ratePerSecond : null,
  };
}

/**
 * Gathers a run's progress from the backend and the run files: the jobs (live from Bedrock on AWS while the run
 * goes on) and the Map Runs.
 * @throws NotFoundError when the run does not exist
 */
export async function gatherProgress(
  backend: Backend,
  store: RunStore,
  runId: string,
  now: () => number,
): Promise<{ view: RunView; progress: RunProgress }> {
  const view = await loadRun(backend, store, runId);
  const batch = view.mode === 'batch' && !view.manifest?.jobs;
  const [shards, markers, jobs, mapRuns] = await Promise.all([
    batch ? store.shards(runId) : undefined,
    batch ? store.collectMarkers(runId) : [],
    batch ? backend.listJobs(runId, !view.finished) : [],
    // A finalized run's manifest has the final counts; without one the Map Runs are the best account there is.
    view.execution && (!view.finished || !view.manifest)
      ? backend.listMapRuns(view.execution.executionArn)
      : [],
  ]);
  const progress = computeProgress({
    view,
    ...(shards ? { shards } : {}),
    markers,
    jobs,
    mapRuns,
    now: now(),
  });
  return { view, progress };
}
