import { BedrockClient } from '@aws-sdk/client-bedrock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import * as z from 'zod';
import type { PlanOutput, PlanPrepared } from './shared/contracts';
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
import { planEventSchema, type PlanDeps, type QuotaAnswer } from './plan/plan-run';
import { preparePlan } from './plan/prepare';
import { countEventSchema, countPartLines, planSegment, segmentEventSchema } from './plan/segment-step';
import { joinTail, mergePlan, planSlices, sliceEventSchema, tailEventSchema } from './plan/merge-plan';

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
    ...(env.PLAN_SEGMENT_BYTES !== undefined ? { segmentBytes: env.PLAN_SEGMENT_BYTES } : {}),
    ...(env.PLAN_MAP_CONCURRENCY !== undefined ? { planMapConcurrency: env.PLAN_MAP_CONCURRENCY } : {}),
  },
  batchQuotas,
  checkModel,
};

const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: ddb,
});

/** Plan's event: the workflow's Plan task names the step (prepare, count, segment, merge, slice, tail) it runs. */
const phaseSchema = z
  .object({ phase: z.enum(['prepare', 'count', 'segment', 'merge', 'slice', 'tail']) })
  .passthrough();

// Plan only sends non-retryable failures (bad lines): they go straight to the DLQ with their reason.
const laneSender = (): FailureLaneSender =>
  new FailureLaneSender(sqs, env.FAILURE_DLQ_URL, env.FAILURE_DLQ_URL);

/** Prepare and merge are idempotent per run and step (a repeated invocation returns the first answer). */
const idempotency = new IdempotencyConfig({ eventKeyJmesPath: '[phase, runId]', expiresAfterSeconds: 3600 });

const prepare = makeIdempotent(
  async (event: unknown, _context: Context): Promise<PlanPrepared> => {
    const parsed = planEventSchema.safeParse(event);
    if (!parsed.success)
      throw new InvalidEventError(`Plan expects {phase, runId, startedAt, input}: ${parsed.error.message}`);
    return preparePlan(parsed.data, { ...baseDeps, failureLane: laneSender() });
  },
  { persistenceStore, config: idempotency },
);

const merge = makeIdempotent(
  async (event: unknown, _context: Context): Promise<PlanOutput> => {
    const parsed = preparedSchema.safeParse(event);
    if (!parsed.success)
      throw new InvalidEventError(`Plan's merge expects {phase, prepared}: ${parsed.error.message}`);
    // The workflow hands the prepare step's own output back.
    return mergePlan(parsed.data.prepared as unknown as PlanPrepared, {
      ...baseDeps,
      failureLane: laneSender(),
    });
  },
  { persistenceStore, config: idempotency },
);

const preparedSchema = z.object({
  runId: z.string().min(1),
  prepared: z.object({ runId: z.string().min(1), segments: z.object({ key: z.string() }) }).passthrough(),
});

/**
 * Lambda entry: one step of Plan, by `phase`. Prepare and merge are idempotent per run (their in-progress lock held
 * only as long as a retry waits, lambda/shared/idempotency.ts); a line count and a segment write the same objects
 * whenever they run, so a retry simply redoes them.
 */
export const handler = withObservability(async (event: unknown, context: Context): Promise<unknown> => {
  const step = phaseSchema.safeParse(event);
  if (!step.success) throw new InvalidEventError(`Plan expects a phase: ${step.error.message}`);
  switch (step.data.phase) {
    case 'prepare':
      return prepare(event, withInProgressLock(context));
    case 'merge':
      return merge(event, withInProgressLock(context));
    case 'count': {
      const parsed = countEventSchema.safeParse(event);
      if (!parsed.success)
        throw new InvalidEventError(
          `Plan's line count expects {runId, bucket, part}: ${parsed.error.message}`,
        );
      return { lines: await countPartLines(parsed.data, baseDeps) };
    }
    case 'segment': {
      const parsed = segmentEventSchema.safeParse(event);
      if (!parsed.success)
        throw new InvalidEventError(
          `Plan's segment expects {runId, bucket, ledgerScope, sources, segment}: ${parsed.error.message}`,
        );
      const summary = await planSegment(parsed.data, { ...baseDeps, failureLane: laneSender() });
      return { segment: summary.segment, lines: summary.lines };
    }
    case 'slice': {
      const parsed = sliceEventSchema.safeParse(event);
      if (!parsed.success)
        throw new InvalidEventError(`Plan's slice step expects {runId, segment}: ${parsed.error.message}`);
      const written = await planSlices(parsed.data, baseDeps);
      return { lines: written.records + written.tail };
    }
    case 'tail': {
      const parsed = tailEventSchema.safeParse(event);
      if (!parsed.success)
        throw new InvalidEventError(`Plan's tail step expects {runId, slicesKey}: ${parsed.error.message}`);
      return joinTail(parsed.data, baseDeps);
    }
  }
});
