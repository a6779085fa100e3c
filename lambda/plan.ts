import { BedrockClient } from '@aws-sdk/client-bedrock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import type { PlanOutput } from './shared/contracts';
import { withInProgressLock } from './shared/idempotency';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { InvalidEventError } from './shared/errors';
import { FailureLaneSender } from './shared/failure-lane';
import { Ledger } from './shared/ledger';
import { traced, withObservability } from './shared/observability';
import { modelFamily } from './shared/model-catalog';
import { BATCH_QUOTA_KEYS, readBatchQuotas, type BatchQuotas } from './batch/quotas';
import { ModelAvailabilityCache } from './plan/model-availability';
import { planEventSchema, planRun, type PlanDeps, type QuotaAnswer } from './plan/plan-run';

const env = readEnv(FUNCTION_ENV.plan);

const configuredQuotas: BatchQuotas = {
  minRecordsPerJob: env.BATCH_QUOTA_MIN_RECORDS_PER_JOB,
  maxRecordsPerJob: env.BATCH_QUOTA_MAX_RECORDS_PER_JOB,
  maxRecordsPerFile: env.BATCH_QUOTA_MAX_RECORDS_PER_FILE,
  maxBytesPerFile: env.BATCH_QUOTA_MAX_BYTES_PER_FILE,
  maxBytesPerJob: env.BATCH_QUOTA_MAX_BYTES_PER_JOB,
  maxConcurrentJobs: env.BATCH_QUOTA_MAX_CONCURRENT_JOBS,
};
const serviceQuotas = traced(new ServiceQuotasClient({}));

/** The quotas to shard with: read from Service Quotas (cached per execution environment), or as configured. */
async function batchQuotas(): Promise<QuotaAnswer> {
  if (env.BATCH_READ_SERVICE_QUOTAS === 'false') {
    return {
      quotas: configuredQuotas,
      sources: Object.fromEntries(BATCH_QUOTA_KEYS.map((k) => [k, 'configured'])),
    };
  }
  const reading = await readBatchQuotas(serviceQuotas, env.MODEL_ID, configuredQuotas, undefined, {
    ...(env.MODEL_BATCH_QUOTA_NAME ? { modelName: env.MODEL_BATCH_QUOTA_NAME } : {}),
    ...(env.MODEL_BATCH_QUOTA_NAMES ? { quotaNames: env.MODEL_BATCH_QUOTA_NAMES } : {}),
  });
  return { quotas: reading.quotas, sources: reading.sources };
}

const bedrock = traced(new BedrockClient({}));
const availability = new ModelAvailabilityCache();

/** Asks Bedrock once per execution environment whether the model can serve runs (cached while it can). */
async function checkModel(): Promise<void> {
  await availability.check(bedrock, env.MODEL_ID, env.AWS_REGION);
}

const family = modelFamily(env.MODEL_ID, env.MODEL_FORMAT);
const s3 = traced(new S3Client({}));
const ddb = traced(new DynamoDBClient({}));
const sqs = traced(new SQSClient({}));
const documentClient = DynamoDBDocumentClient.from(ddb);

const baseDeps: Omit<PlanDeps, 'failureLane'> = {
  s3,
  ledger: new Ledger({ client: documentClient, tableName: env.LEDGER_TABLE, ttlDays: env.LEDGER_TTL_DAYS }),
  settings: {
    outputBucket: env.OUTPUT_BUCKET,
    input: {
      ingestBucket: env.INGEST_BUCKET,
      ingestPrefix: env.INGEST_PREFIX,
      allowedBuckets: (env.ALLOWED_INPUT_BUCKETS ?? '')
        .split(',')
        .map((b) => b.trim())
        .filter(Boolean),
    },
    modelId: env.MODEL_ID,
    ...(family ? { family } : {}),
    ledgerScope: env.LEDGER_SCOPE,
    prompt: {
      template: env.PROMPT_TEMPLATE,
      maxTokens: env.PROMPT_MAX_TOKENS,
      ...(env.PROMPT_SYSTEM ? { system: env.PROMPT_SYSTEM } : {}),
    },
    batchSize: env.CONVERSE_BATCH_SIZE,
    mapConcurrency: env.CONVERSE_MAP_CONCURRENCY,
    toleratedFailurePercentage: env.TOLERATED_FAILURE_PERCENTAGE,
    batch: {
      ...(env.BATCH_AUTO_THRESHOLD ? { autoThreshold: env.BATCH_AUTO_THRESHOLD } : {}),
      toleratedFailurePercentage: env.BATCH_TOLERATED_FAILURE_PERCENTAGE,
      jobTimeoutHours: env.BATCH_JOB_TIMEOUT_HOURS,
      reconcileIntervalMinutes: env.BATCH_RECONCILE_INTERVAL_MINUTES,
      ...(env.BATCH_MAP_CONCURRENCY ? { mapConcurrency: env.BATCH_MAP_CONCURRENCY } : {}),
    },
    ...(env.PLAN_PARSE_WORKERS !== undefined ? { parseWorkers: env.PLAN_PARSE_WORKERS } : {}),
  },
  batchQuotas,
  checkModel,
};

const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: ddb,
});

const idempotent = makeIdempotent(
  async (event: unknown, _context: Context): Promise<PlanOutput> => {
    const parsed = planEventSchema.safeParse(event);
    if (!parsed.success)
      throw new InvalidEventError(`Plan expects {runId, startedAt, input}: ${parsed.error.message}`);
    // Plan only sends non-retryable failures (bad lines): they go straight to the DLQ with their reason.
    const failureLane = new FailureLaneSender(sqs, env.FAILURE_DLQ_URL, env.FAILURE_DLQ_URL);
    return planRun(parsed.data, { ...baseDeps, failureLane });
  },
  {
    persistenceStore,
    config: new IdempotencyConfig({ eventKeyJmesPath: 'runId', expiresAfterSeconds: 3600 }),
  },
);

/**
 * Lambda entry: Plan, idempotent per run (a repeated invocation returns the first answer), its in-progress lock held
 * only as long as a retry waits (lambda/shared/idempotency.ts).
 */
export const handler = withObservability((event: unknown, context: Context): Promise<PlanOutput> =>
  idempotent(event, withInProgressLock(context)),
);
