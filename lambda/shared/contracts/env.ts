import * as z from 'zod';
import { errorMessage } from '../errors';
import { MODEL_FAMILIES } from '../model-catalog';
import { BATCH_QUOTA_KEYS, type BatchQuotaKey, type BatchQuotas } from './quotas';

/**
 * Every function's environment, as one zod schema per function: the handler parses its variables with it at cold
 * start (lambda/shared/env.ts `readEnv`), and the stack (lib/functions.ts) sets them through {@link envFor}, which
 * the schema types, so a variable the stack misspells, forgets or adds is a compile error.
 */

/** A positive integer environment variable. */
export const positiveInt = z.coerce.number().int().positive();
/** A non-empty string environment variable. */
export const required = z.string().min(1);

/**
 * MODEL_FORMAT: the model's native format family, set by the stack only for a model the catalog does not know
 * (`model.format` in the environment); otherwise the catalog's family of MODEL_ID applies.
 */
export const modelFormat = z.enum(MODEL_FAMILIES).optional();

/** RESULTS_QUEUE_URL: the results queue of a function that publishes records; unset or empty when it is off. */
const resultsQueueUrl = z.string().optional();

/** A comma-separated list; unset is empty. */
const commaList = z
  .string()
  .optional()
  .transform((s) =>
    (s ?? '')
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v.length > 0),
  );

/** A JSON object of string tags; unset is `{}`. */
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

/** An optional positive integer where an empty string means unset. */
const optionalPositiveInt = z.preprocess((v) => (v === '' ? undefined : v), positiveInt.optional());

/** Plan's environment names of the configured batch quotas (`batch.quotas`), by limit. */
export const BATCH_QUOTA_ENV = {
  minRecordsPerJob: 'BATCH_QUOTA_MIN_RECORDS_PER_JOB',
  maxRecordsPerJob: 'BATCH_QUOTA_MAX_RECORDS_PER_JOB',
  maxRecordsPerFile: 'BATCH_QUOTA_MAX_RECORDS_PER_FILE',
  maxBytesPerFile: 'BATCH_QUOTA_MAX_BYTES_PER_FILE',
  maxBytesPerJob: 'BATCH_QUOTA_MAX_BYTES_PER_JOB',
  maxConcurrentJobs: 'BATCH_QUOTA_MAX_CONCURRENT_JOBS',
} as const satisfies Record<keyof BatchQuotas, string>;

/** ConverseBatch's environment names of the configured on-demand quotas (`onDemand.*`). */
export const ON_DEMAND_QUOTA_ENV = {
  requestsPerMinute: 'REQUESTS_PER_MINUTE',
  tokensPerMinute: 'TOKENS_PER_MINUTE',
} as const;

/** Plan's environment. */
const planEnv = z.object({
  OUTPUT_BUCKET: required,
  INGEST_BUCKET: required,
  INGEST_PREFIX: z.string(),
  /** Comma-separated buckets besides the ingest bucket a run may read. */
  ALLOWED_INPUT_BUCKETS: z.string().optional(),
  LEDGER_TABLE: required,
  IDEMPOTENCY_TABLE: required,
  FAILURE_DLQ_URL: required,
  MODEL_ID: required,
  MODEL_FORMAT: modelFormat,
  /** The model's display name in its batch quota names, for a model the catalog gives none. */
  MODEL_BATCH_QUOTA_NAME: z.string().min(1).optional(),
  /** Whole batch quota names per limit (JSON `{"maxRecordsPerJob": "<name>", ...}`). */
  MODEL_BATCH_QUOTA_NAMES: z
    .string()
    .optional()
    .transform((text, ctx) => {
      if (text === undefined || text === '') return undefined;
      try {
        // partialRecord: zod 4's record with enum keys demands every key, and `model.batchQuotaNames` may name a few.
        return z
          .partialRecord(z.enum(BATCH_QUOTA_KEYS as [BatchQuotaKey, ...BatchQuotaKey[]]), z.string().min(1))
          .parse(JSON.parse(text)) as Partial<Record<BatchQuotaKey, string>>;
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `not a JSON object of quota names: ${String(err)}` });
        return z.NEVER;
      }
    }),
  /** The Region the function runs in (set by Lambda). */
  AWS_REGION: required,
  LEDGER_SCOPE: required,
  PROMPT_TEMPLATE: required,
  PROMPT_SYSTEM: z.string().optional(),
  PROMPT_MAX_TOKENS: positiveInt,
  CONVERSE_BATCH_SIZE: positiveInt,
  CONVERSE_MAP_CONCURRENCY: positiveInt,
  TOLERATED_FAILURE_PERCENTAGE: z.coerce.number().min(0).max(100),
  LEDGER_TTL_DAYS: positiveInt.default(90),
  BATCH_READ_SERVICE_QUOTAS: z.enum(['true', 'false']).default('true'),
  [BATCH_QUOTA_ENV.minRecordsPerJob]: positiveInt,
  [BATCH_QUOTA_ENV.maxRecordsPerJob]: positiveInt,
  [BATCH_QUOTA_ENV.maxRecordsPerFile]: positiveInt,
  [BATCH_QUOTA_ENV.maxBytesPerFile]: positiveInt,
  [BATCH_QUOTA_ENV.maxBytesPerJob]: positiveInt,
  [BATCH_QUOTA_ENV.maxConcurrentJobs]: positiveInt,
  BATCH_MAP_CONCURRENCY: positiveInt.optional(),
  BATCH_AUTO_THRESHOLD: positiveInt.optional(),
  BATCH_TOLERATED_FAILURE_PERCENTAGE: z.coerce.number().min(0).max(100),
  BATCH_JOB_TIMEOUT_HOURS: positiveInt,
  BATCH_RECONCILE_INTERVAL_MINUTES: positiveInt,
  /** Parse worker threads; unset: one per vCPU beyond the first. */
  PLAN_PARSE_WORKERS: z.coerce.number().int().min(0).max(64).optional(),
  /** Bytes of corpus per Plan segment (`plan.segmentBytes`); unset: 256 MiB. */
  PLAN_SEGMENT_BYTES: z.coerce.number().int().min(1).optional(),
  /** Segments planned at once (`plan.mapConcurrency`); unset: 4. */
  PLAN_MAP_CONCURRENCY: positiveInt.optional(),
});

/** ConverseBatch's environment. */
const converseEnv = z.object({
  OUTPUT_BUCKET: required,
  LEDGER_TABLE: required,
  FAILURE_QUEUE_URL: required,
  FAILURE_DLQ_URL: required,
  MODEL_ID: required,
  MODEL_FORMAT: modelFormat,
  ITEM_CONCURRENCY: positiveInt,
  MAX_ATTEMPTS: positiveInt,
  LEDGER_TTL_DAYS: positiveInt,
  CLAIM_LEASE_SECONDS: positiveInt,
  /** Absent where the model has no requests-per-minute quota (most models: tokens only). */
  [ON_DEMAND_QUOTA_ENV.requestsPerMinute]: positiveInt.optional(),
  [ON_DEMAND_QUOTA_ENV.tokensPerMinute]: positiveInt,
  CONVERSE_MAP_CONCURRENCY: positiveInt,
  /** How long an EXPRESS child may run (AWS: five minutes); the local runtime may shrink it for its tests. */
  EXPRESS_CHILD_BUDGET_SECONDS: z.coerce.number().positive().default(300),
  RESULTS_QUEUE_URL: resultsQueueUrl,
});

/** Finalize's environment. */
const finalizeEnv = z.object({
  OUTPUT_BUCKET: required,
  EVENT_BUS_NAME: required,
  IDEMPOTENCY_TABLE: required,
  LEDGER_TABLE: required,
  RUNS_TABLE: required,
  FAILURE_QUEUE_URL: required,
  FAILURE_DLQ_URL: required,
  LEDGER_TTL_DAYS: positiveInt,
  CLAIM_LEASE_SECONDS: positiveInt,
  RESULTS_QUEUE_URL: resultsQueueUrl,
});

/** SubmitJob's environment. */
const submitJobEnv = z
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

/** The job-state handler's environment. */
const jobStateEnv = z.object({ JOBS_TABLE: required, JOBS_TTL_DAYS: positiveInt.default(30) });

/** The reconciler's environment. */
const reconcileEnv = z.object({
  JOBS_TABLE: required,
  JOBS_TTL_DAYS: positiveInt.default(30),
  RECONCILE_CONCURRENCY: positiveInt.default(4),
});

/** Collect's environment. */
const collectEnv = z.object({
  OUTPUT_BUCKET: required,
  LEDGER_TABLE: required,
  FAILURE_QUEUE_URL: required,
  FAILURE_DLQ_URL: required,
  LEDGER_TTL_DAYS: positiveInt,
  CLAIM_LEASE_SECONDS: positiveInt,
  RESULTS_QUEUE_URL: resultsQueueUrl,
});

/** ConverseItems' environment. */
const converseItemsEnv = z.object({ OUTPUT_BUCKET: required });

/** The failure-lane consumer's environment. */
const failureLaneConsumerEnv = z.object({
  OUTPUT_BUCKET: required,
  LEDGER_TABLE: required,
  RUNS_TABLE: required,
  EVENT_BUS_NAME: required,
  FAILURE_DLQ_URL: required,
  MODEL_ID: required,
  MODEL_FORMAT: modelFormat,
  MAX_ATTEMPTS: positiveInt,
  LEDGER_TTL_DAYS: positiveInt,
  CLAIM_LEASE_SECONDS: positiveInt,
  MAX_RECEIVE_COUNT: optionalPositiveInt,
  RESULTS_QUEUE_URL: resultsQueueUrl,
});

/**
 * Each function's environment schema, by the function's key in lib/functions.ts (`FUNCTION_ENTRIES`). The handler
 * reads exactly these names; the stack sets them (less {@link LAMBDA_PROVIDED_ENV}).
 */
export const FUNCTION_ENV = {
  plan: planEnv,
  converse: converseEnv,
  finalize: finalizeEnv,
  submitJob: submitJobEnv,
  jobState: jobStateEnv,
  reconcile: reconcileEnv,
  collect: collectEnv,
  converseItems: converseItemsEnv,
  failureLaneConsumer: failureLaneConsumerEnv,
} as const;

/** A function of the pipeline, by its key in lib/functions.ts. */
export type FunctionKey = keyof typeof FUNCTION_ENV;

/** The parsed environment of one function, as its handler sees it. */
export type FunctionEnv<F extends FunctionKey> = z.output<(typeof FUNCTION_ENV)[F]>;

/** Variables a handler's schema reads that Lambda itself sets: the stack never does. */
export const LAMBDA_PROVIDED_ENV = ['AWS_REGION'] as const;

/**
 * Variables every function gets from lib/pipeline-function.ts (Powertools and Node.js settings), besides its own
 * schema's; read by Powertools, lambda/shared/observability.ts and Node.js, not by the handler's schema.
 */
export const PLATFORM_ENV = [
  'POWERTOOLS_SERVICE_NAME',
  'POWERTOOLS_METRICS_NAMESPACE',
  'NODE_OPTIONS',
  'POWERTOOLS_TRACE_ENABLED',
] as const;

/** Process settings a function may add to its environment (Plan's, lib/config.ts `PLAN_RUNTIME_ENV`). */
export const PROCESS_ENV = ['NODE_OPTIONS', 'MALLOC_ARENA_MAX'] as const;

type SchemaInput<F extends FunctionKey> = Omit<
  z.input<(typeof FUNCTION_ENV)[F]>,
  (typeof LAMBDA_PROVIDED_ENV)[number]
>;
type OptionalKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? K : never }[keyof T];

/**
 * What the stack must set for function `F`: every variable its schema requires, as a string, and those it may leave
 * unset (optional or defaulted in the schema) optionally; plus {@link PROCESS_ENV} settings.
 */
export type StackEnvironment<F extends FunctionKey> = {
  [K in Exclude<keyof SchemaInput<F>, OptionalKeys<SchemaInput<F>>>]: string;
} & { [K in OptionalKeys<SchemaInput<F>>]?: string } & { [K in (typeof PROCESS_ENV)[number]]?: string };

/**
 * Function `F`'s environment as the stack sets it, checked against `F`'s schema at compile time: a missing required
 * variable, or any variable the schema does not read (a misspelt one, even from a spread), does not compile.
 */
export function envFor<F extends FunctionKey, E extends StackEnvironment<F>>(
  _fn: F,
  environment: E & Record<Exclude<keyof E, keyof StackEnvironment<F>>, never>,
): Record<string, string> {
  return environment as Record<string, string>;
}
