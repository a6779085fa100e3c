/**
 * What CreateModelInvocationJob refuses before a job exists: a clientRequestToken reused with other parameters,
 * a job name already taken, and the concurrent-jobs quota of the model.
 */
import { BatchServiceError } from './batch-errors';
import { isActiveStatus, type JobRecord } from './batch-job';
import type { CreateJobInput } from './batch-validation';

/** Which existing jobs a new job's name must differ from. */
export type JobNameUniqueness = 'all' | 'active' | 'none';

/**
 * The job an earlier request with the same clientRequestToken created, if any (the request is then idempotent).
 * @throws BatchServiceError ConflictException when that job was created with different parameters
 */
export function jobOfSameToken(
  existing: JobRecord | undefined,
  input: CreateJobInput,
  fingerprint: string,
): JobRecord | undefined {
  if (existing === undefined) return undefined;
  if (existing.fingerprint === fingerprint) return existing;
  throw new BatchServiceError(
    'ConflictException',
    `The clientRequestToken '${input.clientRequestToken}' was already used to create job ${existing.jobArn} with different parameters. Use a new token for a different request.`,
  );
}

/** @throws BatchServiceError ConflictException when a job counted by `uniqueness` already has the name */
export function checkJobNameFree(
  jobs: Iterable<JobRecord>,
  jobName: string,
  uniqueness: JobNameUniqueness,
): void {
  if (uniqueness === 'none') return;
  for (const job of jobs) {
    if (job.input.jobName !== jobName) continue;
    if (uniqueness === 'active' && !isActiveStatus(job.status)) continue;
    throw new BatchServiceError(
      'ConflictException',
      `A batch inference job named '${jobName}' already exists (${job.jobArn}, ${job.status}). Job names must be unique; use a different jobName.`,
    );
  }
}

/** @throws BatchServiceError ServiceQuotaExceededException when the model already has `limit` jobs not yet ended */
export function checkConcurrentJobs(jobs: Iterable<JobRecord>, modelId: string, limit: number): void {
  const active = [...jobs].filter((j) => j.model.modelId === modelId && isActiveStatus(j.status));
  if (active.length >= limit) {
    throw new BatchServiceError(
      'ServiceQuotaExceededException',
      `You have reached the service quota 'Sum of in-progress and submitted batch inference jobs using a base model for ${modelId}' (${limit}): ${active.length} jobs are submitted or in progress. Wait for a job to end, or stop one, and try again.`,
    );
  }
}
