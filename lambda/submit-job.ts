import { BedrockClient } from '@aws-sdk/client-bedrock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import * as z from 'zod';
import { JobStore } from './shared/batch-jobs';
import { submitJobEventSchema } from './shared/contracts';
import { positiveInt, readEnv, required } from './shared/env';
import { errorMessage, InvalidEventError } from './shared/errors';
import { logger, traced, withObservability } from './shared/observability';
import { type SubmitSettings, type SubmitJobResult, submitShardJob } from './batch/submit-job';

const commaList = z
  .string()
  .optional()
  .transform((s) =>
    (s ?? '')
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v.length > 0),
  );

const tagsJson = z
  .string()
  .default('{}')
  .transform((s, ctx) => {
    try {
      return JSON.parse(s) as unknown;
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `must be a JSON object: ${errorMessage(err)}` });
      return z.NEVER;
    }
  })
  .pipe(z.record(z.string().min(1), z.string()));

/** SubmitJob's environment. */
export const submitJobEnvSchema = z
  .object({
    OUTPUT_BUCKET: required,
    JOBS_TABLE: required,
    MODEL_ID: required,
    BATCH_ROLE_ARN: required,
    BATCH_JOB_TIMEOUT_HOURS: z.coerce.number().int().min(24).max(168),
    BATCH_JOB_NAME_PREFIX: required,
    BATCH_JOB_TAGS: tagsJson,
    BATCH_VPC_SUBNET_IDS: commaList,
    BATCH_VPC_SECURITY_GROUP_IDS: commaList,
    BATCH_OUTPUT_KMS_KEY_ARN: z.string().optional(),
    JOBS_TTL_DAYS: positiveInt.default(30),
  })
  .refine((e) => e.BATCH_VPC_SUBNET_IDS.length > 0 === e.BATCH_VPC_SECURITY_GROUP_IDS.length > 0, {
    message: 'BATCH_VPC_SUBNET_IDS and BATCH_VPC_SECURITY_GROUP_IDS must be set together',
  });

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

const env = readEnv(submitJobEnvSchema);
const bedrock = traced(new BedrockClient({}));
const sfn = traced(new SFNClient({}));
const ddb = traced(new DynamoDBClient({}));
const store = new JobStore({
  client: DynamoDBDocumentClient.from(ddb),
  tableName: env.JOBS_TABLE,
  ttlDays: env.JOBS_TTL_DAYS,
});
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
