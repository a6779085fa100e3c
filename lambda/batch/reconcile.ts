import {
  BedrockClient,
  GetModelInvocationJobCommand,
  StopModelInvocationJobCommand,
  type GetModelInvocationJobCommandOutput,
} from '@aws-sdk/client-bedrock';
import { SendTaskHeartbeatCommand, SFNClient } from '@aws-sdk/client-sfn';
import {
  ABANDONED_STATUS,
  countsOf,
  IN_FLIGHT,
  isClosedWaitError,
  isTerminalStatus,
  JobStore,
  resumeWait,
  type StoredJob,
} from '../shared/batch-jobs';
import { callDependency, errorMessage, errorName } from '../shared/errors';
import { logger, metrics } from '../shared/observability';
import { mapWithConcurrency } from '../shared/pool';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';

/** What the reconciler talks to. */
export interface ReconcileDeps {
  bedrock: BedrockClient;
  sfn: SFNClient;
  store: JobStore;
  /** Jobs looked at in parallel. */
  concurrency: number;
  now?: () => number;
}

/** What one reconciler run did. */
export interface ReconcileSummary {
  /** Jobs whose wait was open. */
  checked: number;
  /** Ended jobs whose wait this run resumed (their state-change event was lost or is late). */
  resumed: number;
  /** Ended jobs whose wait turned out to be closed already (the item is closed too). */
  closed: number;
  /** Running jobs whose wait was kept alive. */
  heartbeats: number;
  /** Running jobs whose execution had gone away: stopped and closed as `Abandoned`. */
  abandoned: number;
}

/** What happened to one job. */
export type JobReconciliation = 'resumed' | 'closed' | 'heartbeat' | 'abandoned' | 'deferred';

/** One or more jobs could not be reconciled; the others were. Names each job and its error. */
export class ReconcileError extends Error {
  override readonly name = 'ReconcileError';
  constructor(
    message: string,
    /** Each job that failed and why. */
    readonly failures: { jobArn: string; error: unknown }[],
  ) {
    super(message);
  }
}

/** How often the heartbeat is retried with a token a retried submit registered meanwhile, before leaving it. */
const TOKEN_REFRESHES = 3;

/**
 * Looks at every job whose wait is open: an ended job's wait is resumed (covers lost state-change events); a running
 * job's progress is recorded and its wait heartbeated (keeps long jobs within the wait's HeartbeatSeconds); a running
 * job whose execution is gone (the heartbeat answers TaskTimedOut, TaskDoesNotExist or InvalidToken) is stopped, to
 * stop paying for it, and closed as `Abandoned`. A failure on one job does not stop the others.
 * @throws ReconcileError after processing all jobs, naming each job that failed
 */
export async function reconcileJobs(deps: ReconcileDeps): Promise<ReconcileSummary> {
  const jobs = await deps.store.listInFlight();
  // The job SLA alarm reads this; 0 when nothing is in flight, so the alarm sees data every run.
  const now = (deps.now ?? Date.now)();
  metrics.addMetric(
    PIPELINE_METRICS.oldestJobInFlightSeconds,
    'Seconds',
    Math.max(0, ...jobs.map((j) => (now - Date.parse(j.submittedAt)) / 1000).filter(Number.isFinite)),
  );
  const results = await mapWithConcurrency(jobs, deps.concurrency, async (stored) => {
    try {
      return { jobArn: stored.jobArn, done: await reconcileJob(deps, stored) };
    } catch (error) {
      logger.error('Could not reconcile the batch job', {
        jobArn: stored.jobArn,
        runId: stored.runId,
        shard: stored.shard,
        error,
      });
      return { jobArn: stored.jobArn, error };
    }
  });
  const summary: ReconcileSummary = {
    checked: jobs.length,
    resumed: 0,
    closed: 0,
    heartbeats: 0,
    abandoned: 0,
  };
  const failures: { jobArn: string; error: unknown }[] = [];
  for (const r of results) {
    if ('error' in r) failures.push({ jobArn: r.jobArn, error: r.error });
    else if (r.done === 'resumed') summary.resumed++;
    else if (r.done === 'closed') summary.closed++;
    else if (r.done === 'heartbeat') summary.heartbeats++;
    else if (r.done === 'abandoned') summary.abandoned++;
  }
  metrics.addMetric(PIPELINE_METRICS.batchJobsInFlight, 'Count', summary.checked);
  metrics.addMetric(PIPELINE_METRICS.batchJobsResumedByReconciler, 'Count', summary.resumed);
  metrics.addMetric(PIPELINE_METRICS.batchJobsAbandoned, 'Count', summary.abandoned);
  metrics.addMetric(PIPELINE_METRICS.batchJobReconcileErrors, 'Count', failures.length);
  logger.info('Reconciled the batch jobs in flight', { ...summary, failed: failures.length });
  if (failures.length > 0) {
    const list = failures
      .map((f) => `${f.jobArn} (${errorName(f.error)}: ${errorMessage(f.error)})`)
      .join('; ');
    throw new ReconcileError(
      `${failures.length} of ${jobs.length} batch jobs could not be reconciled: ${list}`,
      failures,
    );
  }
  return summary;
}

/** Reconciles one job whose wait is open. */
export async function reconcileJob(deps: ReconcileDeps, stored: StoredJob): Promise<JobReconciliation> {
  const job = await callDependency('Bedrock GetModelInvocationJob', () =>
    deps.bedrock.send(new GetModelInvocationJobCommand({ jobIdentifier: stored.jobArn })),
  );
  if (isTerminalStatus(job.status)) {
    const { delivered } = await resumeWait({ sfn: deps.sfn, store: deps.store, now: deps.now }, stored, job);
    if (delivered) {
      logger.info('Resumed the wait of a job whose state-change event never came', {
        jobArn: stored.jobArn,
        runId: stored.runId,
        shard: stored.shard,
        status: job.status,
      });
    }
    return delivered ? 'resumed' : 'closed';
  }
  if (job.status) await deps.store.recordStatus(stored.jobArn, job.status, countsOf(job));
  return heartbeatOrAbandon(deps, stored, job);
}

async function heartbeatOrAbandon(
  deps: ReconcileDeps,
  stored: StoredJob,
  job: GetModelInvocationJobCommandOutput,
): Promise<JobReconciliation> {
  let current = stored;
  for (let refresh = 0; refresh < TOKEN_REFRESHES; refresh++) {
    try {
      await callDependency('Step Functions SendTaskHeartbeat', () =>
        deps.sfn.send(new SendTaskHeartbeatCommand({ taskToken: current.taskToken })),
      );
      return 'heartbeat';
    } catch (err) {
      if (!isClosedWaitError(err)) throw err;
    }
    // The listing is eventually consistent and a retried submit may have registered a newer token since: only the
    // token the item holds now says whether anyone still waits on this job.
    const fresh = await deps.store.get(stored.jobArn);
    if (!fresh || fresh.inFlight !== IN_FLIGHT) return 'closed';
    if (fresh.taskToken !== current.taskToken) {
      current = fresh;
      continue;
    }
    await stopJob(deps, stored, job);
    const endedAt = new Date((deps.now ?? Date.now)()).toISOString();
    await deps.store.markEnded(stored.jobArn, ABANDONED_STATUS, endedAt, current.taskToken);
    logger.warn('The execution waiting on this job is gone: stopped the job and closed it as Abandoned', {
      jobArn: stored.jobArn,
      runId: stored.runId,
      shard: stored.shard,
      status: job.status,
    });
    return 'abandoned';
  }
  logger.info('The job item kept changing token during this run; looked at again next run', {
    jobArn: stored.jobArn,
  });
  return 'deferred';
}

async function stopJob(
  deps: ReconcileDeps,
  stored: StoredJob,
  job: GetModelInvocationJobCommandOutput,
): Promise<void> {
  try {
    await callDependency('Bedrock StopModelInvocationJob', () =>
      deps.bedrock.send(new StopModelInvocationJobCommand({ jobIdentifier: stored.jobArn })),
    );
  } catch (err) {
    // Bedrock answers ValidationException for a job that can no longer be stopped (it ended or is stopping).
    if (errorName(err) !== 'ValidationException') throw err;
    logger.info('The job could not be stopped (it already ended or is stopping)', {
      jobArn: stored.jobArn,
      status: job.status,
      reason: errorMessage(err),
    });
  }
}
