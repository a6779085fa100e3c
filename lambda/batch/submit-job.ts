import {
  BedrockClient,
  CreateModelInvocationJobCommand,
  GetModelInvocationJobCommand,
  ListModelInvocationJobsCommand,
  type CreateModelInvocationJobCommandInput,
  type ListModelInvocationJobsCommandOutput,
} from '@aws-sdk/client-bedrock';
import { SFNClient } from '@aws-sdk/client-sfn';
import {
  BatchJobRejectedError,
  BatchQuotaBusyError,
  countsOf,
  isTerminalStatus,
  jobOutputPrefix,
  JobStore,
  resumeWait,
} from '../shared/batch-jobs';
import { type SubmitJobEvent } from '../shared/contracts';
import { callDependency, errorMessage, errorName, TransientDependencyError } from '../shared/errors';
import { logger, metrics } from '../shared/observability';
import { clientRequestToken, jobName } from './sharding';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';

/** Tag keys SubmitJob puts on every job (after the configured tags, so these win). */
export const JOB_TAG_KEYS = { runId: 'corpus-pipeline:run-id', shard: 'corpus-pipeline:shard' } as const;

/** How this deployment submits jobs. */
export interface SubmitSettings {
  outputBucket: string;
  modelId: string;
  /** The service role Bedrock assumes to read the shard input and write the output. */
  roleArn: string;
  /** The job's timeoutDurationInHours (24 to 168). */
  jobTimeoutHours: number;
  /** Job names start with `<jobNamePrefix>-` (the state-change rule matches on it). */
  jobNamePrefix: string;
  /** Extra tags on every job. */
  tags: Record<string, string>;
  /** Run the job in these subnets and security groups. */
  vpc?: { subnetIds: string[]; securityGroupIds: string[] };
  /** KMS key Bedrock encrypts the job output with. */
  outputKmsKeyArn?: string;
}

/** What SubmitJob talks to. */
export interface SubmitJobDeps {
  bedrock: BedrockClient;
  sfn: SFNClient;
  store: JobStore;
  settings: SubmitSettings;
  now?: () => number;
}

/** What SubmitJob returns (Step Functions ignores it: the wait ends with SendTaskSuccess). */
export interface SubmitJobResult {
  jobArn: string;
  jobName: string;
  /** The job's status right after submitting. */
  status: string;
  /** False when an earlier attempt had already created the job. */
  created: boolean;
  /** True when the job had already ended and this call resumed the wait itself. */
  resumed: boolean;
}

/** The CreateModelInvocationJob request of a shard. */
export function createJobInput(
  event: SubmitJobEvent,
  settings: SubmitSettings,
  name: string,
  token: string,
): CreateModelInvocationJobCommandInput {
  const { runId, shard } = event;
  const tags = { ...settings.tags, [JOB_TAG_KEYS.runId]: runId, [JOB_TAG_KEYS.shard]: String(shard.shard) };
  return {
    jobName: name,
    roleArn: settings.roleArn,
    clientRequestToken: token,
    modelId: settings.modelId,
    inputDataConfig: {
      s3InputDataConfig: {
        s3Uri: `s3://${settings.outputBucket}/${shard.inputPrefix}`,
        s3InputFormat: 'JSONL',
      },
    },
    outputDataConfig: {
      s3OutputDataConfig: {
        s3Uri: `s3://${settings.outputBucket}/${shard.outputPrefix}`,
        ...(settings.outputKmsKeyArn ? { s3EncryptionKeyId: settings.outputKmsKeyArn } : {}),
      },
    },
    timeoutDurationInHours: settings.jobTimeoutHours,
    tags: Object.entries(tags).map(([key, value]) => ({ key, value })),
    ...(settings.vpc
      ? { vpcConfig: { subnetIds: settings.vpc.subnetIds, securityGroupIds: settings.vpc.securityGroupIds } }
      : {}),
    // Native (InvokeModel) bodies are Bedrock's default; Converse bodies need the invocation type said.
    ...(shard.format === 'converse' ? { modelInvocationType: 'Converse' as const } : {}),
  };
}

/** The ARN of the job named exactly `name`, if one exists (ListModelInvocationJobs filters by substring). */
export async function findJobByName(bedrock: BedrockClient, name: string): Promise<string | undefined> {
  let nextToken: string | undefined;
  do {
    const page: ListModelInvocationJobsCommandOutput = await callDependency(
      'Bedrock ListModelInvocationJobs',
      () =>
        bedrock.send(
          new ListModelInvocationJobsCommand({
            nameContains: name,
            maxResults: 100,
            ...(nextToken ? { nextToken } : {}),
          }),
        ),
    );
    const match = page.invocationJobSummaries?.find((j) => j.jobName === name && j.jobArn);
    if (match?.jobArn) return match.jobArn;
    nextToken = page.nextToken;
  } while (nextToken);
  return undefined;
}

/**
 * Creates the shard's batch job, or finds the one an earlier attempt created (a retried submit carries a new task
 * token, so the replay itself is not trusted: the job is looked up by its deterministic name first), records the
 * attempt's task token by job ARN, and resumes the wait at once when the job has already ended.
 * @throws BatchQuotaBusyError (the workflow retries with backoff), BatchJobRejectedError (not retryable),
 *   TransientDependencyError
 */
export async function submitShardJob(event: SubmitJobEvent, deps: SubmitJobDeps): Promise<SubmitJobResult> {
  const { runId, shard } = event;
  const { bedrock, settings } = deps;
  const name = jobName(runId, shard.shard, 0, settings.jobNamePrefix);
  const token = clientRequestToken(runId, shard.shard);

  let jobArn = await findJobByName(bedrock, name);
  const created = jobArn === undefined;
  if (jobArn === undefined) {
    jobArn = await createJob(deps, event, name, token);
    metrics.addMetric(PIPELINE_METRICS.batchJobsSubmitted, 'Count', 1);
    logger.info('Created the batch job', { jobArn, jobName: name, records: shard.records });
  } else {
    metrics.addMetric(PIPELINE_METRICS.batchJobsFoundExisting, 'Count', 1);
    logger.info('An earlier attempt created this shard job; waiting on it with the new token', {
      jobArn,
      jobName: name,
    });
  }

  const stored = await deps.store.register({
    jobArn,
    runId,
    shard: shard.shard,
    jobName: name,
    taskToken: event.taskToken,
    outputPrefix: jobOutputPrefix(shard.outputPrefix, jobArn),
    submittedAt: new Date((deps.now ?? Date.now)()).toISOString(),
  });

  // Checked after the token is stored: a job that ended before (or while) it was stored is resumed here, one that
  // ends later by its state-change event or the reconciler.
  const job = await callDependency('Bedrock GetModelInvocationJob', () =>
    bedrock.send(new GetModelInvocationJobCommand({ jobIdentifier: jobArn })),
  );
  const status = job.status ?? 'Submitted';
  if (isTerminalStatus(job.status)) {
    const { delivered } = await resumeWait({ sfn: deps.sfn, store: deps.store, now: deps.now }, stored, job);
    logger.info('The job had already ended: resumed the wait', { jobArn, status, delivered });
    return { jobArn, jobName: name, status, created, resumed: delivered };
  }
  await deps.store.recordStatus(jobArn, status, countsOf(job));
  return { jobArn, jobName: name, status, created, resumed: false };
}

async function createJob(
  deps: SubmitJobDeps,
  event: SubmitJobEvent,
  name: string,
  token: string,
): Promise<string> {
  const input = createJobInput(event, deps.settings, name, token);
  try {
    const out = await callDependency('Bedrock CreateModelInvocationJob', () =>
      deps.bedrock.send(new CreateModelInvocationJobCommand(input)),
    );
    if (!out.jobArn) {
      throw new TransientDependencyError(`CreateModelInvocationJob for ${name} answered without a jobArn`);
    }
    return out.jobArn;
  } catch (err) {
    const code = errorName(err);
    const message = errorMessage(err);
    const shard = event.shard.shard;
    switch (code) {
      case 'ConflictException': {
        // Another attempt created the job between our lookup and our create: wait on that one.
        const existing = await findJobByName(deps.bedrock, name);
        if (existing) return existing;
        throw new TransientDependencyError(
          `CreateModelInvocationJob for ${name} reported a conflict (${message}) but no job of that name is listed yet`,
          { cause: err },
        );
      }
      case 'ServiceQuotaExceededException':
        metrics.addMetric(PIPELINE_METRICS.batchQuotaBusy, 'Count', 1);
        throw new BatchQuotaBusyError(
          `No batch job slot is free for ${deps.settings.modelId} (shard ${shard} of run ${event.runId}): ${message}`,
          { cause: err },
        );
      case 'ValidationException':
        throw new BatchJobRejectedError(
          `Bedrock rejected the batch job for shard ${shard} of run ${event.runId}: ${message}. Check that the ` +
            `model ${deps.settings.modelId} supports batch inference in this Region, the job settings ` +
            '(timeout, tags, VPC, KMS key) and the shard input files.',
          { cause: err },
        );
      case 'AccessDeniedException':
        throw new BatchJobRejectedError(
          `Not allowed to create the batch job for shard ${shard} of run ${event.runId}: ${message}. Check model ` +
            `access for ${deps.settings.modelId}, the function's bedrock:CreateModelInvocationJob and iam:PassRole ` +
            `permissions for ${deps.settings.roleArn}, and the KMS key policy if one is set.`,
          { cause: err },
        );
      default:
        throw err;
    }
  }
}
