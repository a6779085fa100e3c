import * as z from 'zod';
import { submitJobEventSchema } from './shared/contracts';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { batchJobsContext } from './batch/batch-jobs-context';
import { InvalidEventError } from './shared/errors';
import { logger, withObservability } from './shared/observability';
import { type SubmitSettings, type SubmitJobResult, submitShardJob } from './batch/submit-job';

/** SubmitJob's environment (lambda/shared/contracts/env.ts). */
export const submitJobEnvSchema = FUNCTION_ENV.submitJob;

/** The settings SubmitJob's environment describes. */
export function settingsFromEnv(env: z.infer<typeof submitJobEnvSchema>): SubmitSettings {
  return {
    outputBucket: env.OUTPUT_BUCKET,
    modelId: env.MODEL_ID,
    roleArn: env.BATCH_ROLE_ARN,
    jobTimeoutHours: env.BATCH_JOB_TIMEOUT_HOURS,
    jobNamePrefix: env.BATCH_JOB_NAME_PREFIX,
    tags: env.BATCH_JOB_TAGS,
    ...(env.BATCH_VPC_SUBNET_IDS.length > 0
      ? { vpc: { subnetIds: env.BATCH_VPC_SUBNET_IDS, securityGroupIds: env.BATCH_VPC_SECURITY_GROUP_IDS } }
      : {}),
    ...(env.BATCH_OUTPUT_KMS_KEY_ARN ? { outputKmsKeyArn: env.BATCH_OUTPUT_KMS_KEY_ARN } : {}),
  };
}

const env = readEnv(FUNCTION_ENV.submitJob);
const { bedrock, sfn, store } = batchJobsContext(env);
const settings = settingsFromEnv(env);

/**
 * Lambda entry: the shard child's `lambda:invoke.waitForTaskToken` task. No Powertools idempotency: every retry
 * carries a new task token, and the submit itself is idempotent (lookup by name, deterministic token).
 */
export const handler = withObservability(async (event: unknown): Promise<SubmitJobResult> => {
  const parsed = submitJobEventSchema.safeParse(event);
  if (!parsed.success) {
    throw new InvalidEventError(`SubmitJob expects {taskToken, runId, shard}: ${parsed.error.message}`);
  }
  logger.appendKeys({ runId: parsed.data.runId, shard: parsed.data.shard.shard });
  return submitShardJob(parsed.data, { bedrock, sfn, store, settings });
});
