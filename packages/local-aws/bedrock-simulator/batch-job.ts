/**
 * What the batch control plane knows of one job (its record), and how GetModelInvocationJob and
 * ListModelInvocationJobs describe jobs.
 */
import { randomBytes } from 'node:crypto';

import type { CancelTimer } from './batch-clock';
import { BatchServiceError } from './batch-errors';
import { isTerminalStatus, type BatchInvocationType, type BatchJobStatus } from './batch-status';
import {
  parseListJobsQuery,
  type BatchS3InputConfig,
  type BatchS3OutputConfig,
  type BatchVpcConfig,
  type CreateJobInput,
} from './batch-validation';
import type { ModelSpec } from './models';

/** Record counters of a job. */
export interface BatchJobCounts {
  /** Records in the input, once validation has counted them. */
  total?: number;
  processed: number;
  success: number;
  error: number;
  inputTokens: number;
  outputTokens: number;
}

/** The manifest.json.out Bedrock writes beside the output files. */
export interface BatchManifest {
  readonly totalRecordCount: number;
  readonly processedRecordCount: number;
  readonly successRecordCount: number;
  readonly errorRecordCount: number;
  readonly inputTokenCount: number;
  readonly outputTokenCount: number;
}

/** The job description GetModelInvocationJob returns (and each ListModelInvocationJobs summary). */
export interface BatchJobDescription {
  jobArn: string;
  jobName: string;
  modelId: string;
  clientRequestToken?: string;
  roleArn: string;
  status: BatchJobStatus;
  message?: string;
  submitTime: string;
  lastModifiedTime: string;
  endTime?: string;
  inputDataConfig: { s3InputDataConfig: BatchS3InputConfig };
  outputDataConfig: { s3OutputDataConfig: BatchS3OutputConfig };
  vpcConfig?: BatchVpcConfig;
  timeoutDurationInHours: number;
  jobExpirationTime: string;
  modelInvocationType: BatchInvocationType;
  totalRecordCount?: number;
  processedRecordCount?: number;
  successRecordCount?: number;
  errorRecordCount?: number;
}

/** Why a job leaves its lifecycle early: StopModelInvocationJob, or its timeout. */
export type JobInterrupt = 'stop' | 'expire';

/** One job as the service holds it. */
export interface JobRecord {
  readonly jobId: string;
  readonly jobArn: string;
  readonly input: CreateJobInput;
  readonly model: ModelSpec;
  readonly modelArn: string;
  /** The request without its token and resolved model: what a reused clientRequestToken must match. */
  readonly fingerprint: string;
  /** Creation order, the tie-breaker of listings. */
  readonly seq: number;
  readonly submitTime: number;
  readonly timeoutHours: number;
  readonly expiresAt: number;
  /** The failJobs fault picked this job. */
  readonly failByFault: boolean;
  status: BatchJobStatus;
  message?: string;
  lastModifiedTime: number;
  endTime?: number;
  counts: BatchJobCounts;
  interrupt?: JobInterrupt;
  /** Cuts the job's current sleep short. */
  wake?: () => void;
  cancelExpiry?: CancelTimer;
  /** Settles when the lifecycle has ended. */
  done: Promise<void>;
}

/** Statuses counted against the concurrent-jobs quota. */
export function isActiveStatus(status: BatchJobStatus): boolean {
  return !isTerminalStatus(status);
}

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** A random 12-character job id, as Bedrock's. */
export function newJobId(): string {
  const bytes = randomBytes(12);
  let id = '';
  for (const byte of bytes) id += ID_ALPHABET[byte % ID_ALPHABET.length];
  return id;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** The manifest of a job's counters. */
export function manifestOf(counts: BatchJobCounts): BatchManifest {
  return {
    totalRecordCount: counts.total ?? 0,
    processedRecordCount: counts.processed,
    successRecordCount: counts.success,
    errorRecordCount: counts.error,
    inputTokenCount: counts.inputTokens,
    outputTokenCount: counts.outputTokens,
  };
}

/** GetModelInvocationJob's description of a job (record counts once processing started). */
export function describeJob(job: JobRecord): BatchJobDescription {
  const { input, counts } = job;
  const started = counts.total !== undefined && job.status !== 'Validating' && job.status !== 'Scheduled';
  return {
    jobArn: job.jobArn,
    jobName: input.jobName,
    modelId: input.modelId,
    ...(input.clientRequestToken === undefined ? {} : { clientRequestToken: input.clientRequestToken }),
    roleArn: input.roleArn,
    status: job.status,
    ...(job.message === undefined ? {} : { message: job.message }),
    submitTime: iso(job.submitTime),
    lastModifiedTime: iso(job.lastModifiedTime),
    ...(job.endTime === undefined ? {} : { endTime: iso(job.endTime) }),
    inputDataConfig: input.inputDataConfig,
    outputDataConfig: input.outputDataConfig,
    ...(input.vpcConfig === undefined ? {} : { vpcConfig: input.vpcConfig }),
    timeoutDurationInHours: job.timeoutHours,
    jobExpirationTime: iso(job.expiresAt),
    modelInvocationType: input.modelInvocationType ?? 'InvokeModel',
    ...(counts.total === undefined ? {} : { totalRecordCount: counts.total }),
    ...(started
      ? {
          processedRecordCount: counts.processed,
          successRecordCount: counts.success,
          errorRecordCount: counts.error,
        }
      : {}),
  };
}

/**
 * One page of ListModelInvocationJobs: filtered, sorted by submit time, paged with an offset token.
 * @param jobs every job
 * @param query the request's query string
 * @throws BatchServiceError ValidationException
 */
export function listJobPage(
  jobs: Iterable<JobRecord>,
  query: URLSearchParams,
): { invocationJobSummaries: BatchJobDescription[]; nextToken?: string } {
  const q = parseListJobsQuery(query);
  const matches = [...jobs]
    .filter((j) => q.statusEquals === undefined || j.status === q.statusEquals)
    .filter((j) => q.nameContains === undefined || j.input.jobName.includes(q.nameContains))
    .filter((j) => q.submitTimeAfter === undefined || j.submitTime > q.submitTimeAfter)
    .filter((j) => q.submitTimeBefore === undefined || j.submitTime < q.submitTimeBefore)
    .sort((a, b) => a.submitTime - b.submitTime || a.seq - b.seq);
  if (q.sortOrder === 'Descending') matches.reverse();
  let offset = 0;
  if (q.nextToken !== undefined) {
    const decoded = /^o(\d+)$/.exec(Buffer.from(q.nextToken, 'base64url').toString('utf8'));
    if (!decoded) {
      throw new BatchServiceError('ValidationException', `The nextToken '${q.nextToken}' is not valid.`);
    }
    offset = Number(decoded[1]);
  }
  const page = matches.slice(offset, offset + q.maxResults).map(describeJob);
  const next = offset + q.maxResults;
  return {
    invocationJobSummaries: page,
    ...(next < matches.length ? { nextToken: Buffer.from(`o${next}`).toString('base64url') } : {}),
  };
}
