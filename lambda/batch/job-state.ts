import { BedrockClient, GetModelInvocationJobCommand } from '@aws-sdk/client-bedrock';
import { SFNClient } from '@aws-sdk/client-sfn';
import * as z from 'zod';
import { countsOf, IN_FLIGHT, isTerminalStatus, JobStore, resumeWait } from '../shared/batch-jobs';
import { callDependency } from '../shared/errors';
import { logger, metrics } from '../shared/observability';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';

/** Bedrock's `Batch Inference Job State Change` event (EventBridge, source `aws.bedrock`). */
export const jobStateEventSchema = z.object({
  source: z.literal('aws.bedrock'),
  'detail-type': z.literal('Batch Inference Job State Change'),
  detail: z.object({
    version: z.string().optional(),
    accountId: z.string().optional(),
    batchJobName: z.string().optional(),
    batchJobArn: z.string().min(1),
    batchModelId: z.string().optional(),
    status: z.string().min(1),
    failureMessage: z.string().optional(),
    creationTime: z.string().optional(),
  }),
});
/** A job state-change event. */
export type JobStateEvent = z.infer<typeof jobStateEventSchema>;

/** What the job-state handler talks to. */
export interface JobStateDeps {
  bedrock: BedrockClient;
  sfn: SFNClient;
  store: JobStore;
  now?: () => number;
}

/** What the job-state handler did with one event. */
export interface JobStateResult {
  jobArn: string;
  /** The status the event reported. */
  status: string;
  /** Why nothing was done: not one of this pipeline's jobs, or its wait was already resumed. */
  ignored?: 'unknown job' | 'already resumed';
  /** A running job: its status was recorded (progress). */
  progress?: boolean;
  /** A terminal job: whether the SendTaskSuccess reached an open wait (false: a duplicate or late resume). */
  resumed?: boolean;
  /** The status GetModelInvocationJob reported, when it was asked. */
  jobStatus?: string;
}

/**
 * Handles one state change. Unknown jobs (another team's) and jobs whose wait was already resumed are ignored, so
 * duplicate and late events are harmless. A running status is recorded as progress. A terminal one resumes the
 * shard's wait with the details GetModelInvocationJob reports (authoritative: end time, counters, message).
 */
export async function handleJobStateChange(
  event: JobStateEvent,
  deps: JobStateDeps,
): Promise<JobStateResult> {
  const { batchJobArn: jobArn, status } = event.detail;
  const stored = await deps.store.get(jobArn);
  if (!stored) {
    logger.info('Not a job of this pipeline (no jobs table item): ignored', { jobArn, status });
    return { jobArn, status, ignored: 'unknown job' };
  }
  const keys = { jobArn, runId: stored.runId, shard: stored.shard, status };
  if (stored.inFlight !== IN_FLIGHT) {
    logger.info('The job wait was already resumed: duplicate or late event ignored', keys);
    return { jobArn, status, ignored: 'already resumed' };
  }
  if (!isTerminalStatus(status)) {
    await deps.store.recordStatus(jobArn, status);
    logger.info('Batch job progress', keys);
    return { jobArn, status, progress: true };
  }

  const job = await callDependency('Bedrock GetModelInvocationJob', () =>
    deps.bedrock.send(new GetModelInvocationJobCommand({ jobIdentifier: jobArn })),
  );
  if (!isTerminalStatus(job.status)) {
    // GetModelInvocationJob is the authority; the reconciler resumes the wait once it reports the end too.
    logger.warn(
      'The event says the job ended but GetModelInvocationJob does not yet; left to the reconciler',
      {
        ...keys,
        jobStatus: job.status,
      },
    );
    if (job.status) await deps.store.recordStatus(jobArn, job.status, countsOf(job));
    return { jobArn, status, progress: true, ...(job.status ? { jobStatus: job.status } : {}) };
  }
  const { delivered } = await resumeWait({ sfn: deps.sfn, store: deps.store, now: deps.now }, stored, job);
  if (delivered) metrics.addMetric(PIPELINE_METRICS.batchJobsResumed, 'Count', 1);
  logger.info('Batch job ended: resumed the shard wait', { ...keys, jobStatus: job.status, delivered });
  return { jobArn, status, resumed: delivered, jobStatus: job.status };
}
