import { z } from 'zod';
import { DEFAULT_BATCH_QUOTAS } from '../lambda/shared/contracts/quotas';
import { MODEL_FAMILIES } from '../lambda/shared/model-catalog';
import { defaultPricing, modelConfigProblems } from './model-config';

/**
 * The most memory a function of a new AWS account may have: new accounts are held to 3,008 MB (a larger MemorySize
 * fails the deploy with "'MemorySize' value failed to satisfy constraint: Member must have value less than or equal
 * to 3008") until AWS raises the quota. The Lambda quotas page says only that "new AWS accounts have reduced
 * concurrency and memory quotas" (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); the
 * 3,008 MB figure is the constraint's own message, as reported on new accounts (for example
 * https://github.com/awslabs/genai-bedrock-agent-chatbot/issues/4). No API reads this quota.
 */
export const NEW_ACCOUNT_MAX_MEMORY_MB = 3_008;

/** The largest memory a Lambda function may have once the account's quota allows it (six vCPUs). */
export const LAMBDA_MAX_MEMORY_MB = 10_240;

/**
 * Plan's memory unless an environment sets `plan.memorySize`: what a new account accepts (two vCPUs, one parse
 * worker). `plan.memorySize: 10240` buys six vCPUs and five parse workers where the account allows it (bench/README.md
 * has what each plans in one invocation).
 */
export const DEFAULT_PLAN_MEMORY_MB = NEW_ACCOUNT_MAX_MEMORY_MB;

/**
 * The Lambda concurrency a new account may get. The quotas page says new accounts have "reduced concurrency" without
 * a number (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); new accounts have been reported
 * with a full and unreserved account concurrency of 10
 * (https://github.com/awslabs/fhir-works-on-aws-deployment/issues/691). The default concurrency settings fit in it
 * ({@link runLambdaConcurrency}); `corpus doctor --env E` reads the account's real limit (Lambda GetAccountSettings).
 */
export const NEW_ACCOUNT_CONCURRENT_EXECUTIONS = 10;

/** The default `converse.mapConcurrency` and `batch.mapConcurrency`: fits {@link NEW_ACCOUNT_CONCURRENT_EXECUTIONS}. */
export const DEFAULT_MAP_CONCURRENCY = 4;

/**
 * The least `failureLane.consumerConcurrency` may be: an SQS event source's MaximumConcurrency is 2 to 1,000
 * (ScalingConfig MaximumConcurrency, https://docs.aws.amazon.com/lambda/latest/dg/API_ScalingConfig.html).
 */
export const MIN_LANE_CONSUMER_CONCURRENCY = 2;

/**
 * Process settings of the Plan function, which the plan benchmark runs Plan with (bench/README.md has the figures):
 * two glibc malloc arenas instead of one per thread, which with parse workers kept freed memory from going back
 * (+24 MB peak at 1 GiB). No V8 heap flags: Lambda's Node.js bootstrap puts its own on the command line (a tenth of
 * the memory for the new space), where they win over NODE_OPTIONS; with them a segment costs a third less CPU than with
 * the 4 MiB semi-space this once asked for (bench/README.md, "Plan's heap as deployed").
 */
export const PLAN_RUNTIME_ENV = {
  MALLOC_ARENA_MAX: '2',
} as const;

/**
 * Lambda allocates CPU in proportion to memory: one vCPU's worth at 1,769 MB, up to six vCPUs at 10,240 MB
 * (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html).
 */
export const MB_PER_VCPU = 1_769;

/**
 * The vCPUs (rounded, at least one) a Lambda function of `memoryMb` gets: Plan runs one parse worker per vCPU beyond
 * the main thread (`PLAN_PARSE_WORKERS`, lib/functions.ts). 3,008 MB gives 2 (one worker), 10,240 MB gives 6 (five).
 */
export function lambdaVcpus(memoryMb: number): number {
  return Math.min(6, Math.max(1, Math.round(memoryMb / MB_PER_VCPU)));
}

/**
 * The CPU time a function of `memoryMb` gets per second of wall clock, in vCPUs (memory / 1,769 MB, at most 6):
 * 3,008 MB gives 1.7, so two threads busy at once share 1.7 vCPU-seconds a second.
 */
export function lambdaCpuShare(memoryMb: number): number {
  return Math.min(6, memoryMb / MB_PER_VCPU);
}

/**
 * The Lambda invocations one run of an environment can hold at once, at most: the widest of its Distributed Maps
 * (each Plan segment or line count, each ConverseBatch child, or each shard's SubmitJob / Collect, is one
 * invocation; they never run at the same time), the failure lane's consumers, and two for the rest (Plan's prepare or
 * merge, Finalize or ConverseItems, and the job-state handler or the reconciler). Invocations beyond the account's
 * concurrency are throttled: Step Functions retries them (Lambda.TooManyRequestsException), but throttled children
 * spend their five minutes waiting.
 */
export function runLambdaConcurrency(config: {
  plan: { mapConcurrency: number };
  converse: { mapConcurrency: number };
  batch: { mapConcurrency: number };
  failureLane: { consumerConcurrency: number };
}): number {
  return (
    Math.max(config.plan.mapConcurrency, config.converse.mapConcurrency, config.batch.mapConcurrency) +
    config.failureLane.consumerConcurrency +
    2
  );
}

/**
 * The per-environment settings, validated once in bin/ from cdk.json context (`environments.<name>`),
 * then passed down as typed props. Every field has a safe default except the model.
 */
export const environmentConfigSchema = z
  .object({
    /** AWS account to deploy into. @default the CLI's current account (CDK_DEFAULT_ACCOUNT) */
    account: z
      .string()
      .regex(/^\d{12}$/, 'account must be a 12-digit AWS account id')
      .optional(),
    /** AWS Region to deploy into. */
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'region must look like us-east-1'),
    /**
     * Bedrock model id or system-defined inference profile id the pipeline invokes, checked against the model catalog
     * (lambda/shared/model-catalog.ts, lib/model-config.ts): a retired model is refused with its date and a
     * replacement; a model the catalog does not know needs `model.format`, its batch quota names or values, and its
     * `pricing`.
     */
    modelId: z.string().min(1),
    /** What the pipeline must be told about a model the catalog does not know. @default the catalog's */
    model: z
      .object({
        /** The native InvokeModel body format family of the model (records.ts tells native bodies by it). */
        format: z.enum(MODEL_FAMILIES).optional(),
        /** The model's display name in its Service Quotas batch quota names ("... for <name>"). */
        batchQuotaModelName: z.string().min(1).optional(),
        /** Whole Service Quotas names of the batch quotas, per limit, where they do not follow the usual pattern. */
        batchQuotaNames: z
          .object({
            minRecordsPerJob: z.string().min(1).optional(),
            maxRecordsPerJob: z.string().min(1).optional(),
            maxRecordsPerFile: z.string().min(1).optional(),
            maxBytesPerFile: z.string().min(1).optional(),
            maxBytesPerJob: z.string().min(1).optional(),
            maxConcurrentJobs: z.string().min(1).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** On-demand (Converse) quotas for the model in this account and Region. */
    onDemand: z
      .object({
        /**
         * Requests per minute the account may send to the model, where it has such a quota: the bedrock-runtime
         * endpoint governs inference by per-model token quotas
         * (https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-runtime.html), so most models have none and
         * ConverseBatch paces by tokens alone. @default none
         */
        requestsPerMinute: z.number().int().positive().optional(),
        /**
         * Input + output tokens per minute the account may use ("On-demand InvokeModel tokens per minute for <model>",
         * or "Cross-Region InvokeModel tokens per minute" for an inference profile, in Service Quotas). @default 200000
         */
        tokensPerMinute: z.number().int().positive().default(200_000),
      })
      .strict()
      .prefault({}),
    /** Converse mode: the Distributed Map that fans Converse calls out. */
    converse: z
      .object({
        /**
         * Child executions in flight at once (Map MaxConcurrency): each holds one ConverseBatch invocation, so this
         * counts against the account's Lambda concurrency ({@link runLambdaConcurrency}). The default fits a new
         * account (10 concurrent executions); raise it with the account's quota (Service Quotas: AWS Lambda,
         * Concurrent executions). @default 4
         */
        mapConcurrency: z.number().int().min(1).max(10_000).default(DEFAULT_MAP_CONCURRENCY),
        /** Records per child execution (ItemBatcher MaxItemsPerBatch). @default 25 */
        batchSize: z.number().int().min(1).max(1_000).default(25),
        /** Share of failed child executions the run tolerates before it fails. @default 5 */
        toleratedFailurePercentage: z.number().min(0).max(100).default(5),
        /** Converse calls in flight inside one child batch. @default 4 */
        itemConcurrency: z.number().int().min(1).max(64).default(4),
        /** Attempts per record on throttling and transient errors, before it goes to the failure lane. @default 6 */
        maxAttempts: z.number().int().min(1).max(20).default(6),
      })
      .strict()
      .prefault({}),
    /** Batch mode: Bedrock batch inference jobs. */
    batch: z
      .object({
        /**
         * `auto` mode picks batch when the records to process reach this many (never below the job minimum).
         * @default the minimum records per job
         */
        autoThreshold: z.number().int().min(1).optional(),
        /**
         * Read the per-model batch quotas from Service Quotas at run time (cached), falling back to `quotas`.
         * Off only where no Service Quotas API exists (the offline runtime). @default true
         */
        readServiceQuotas: z.boolean().default(true),
        /**
         * Shards (batch jobs) in flight at once (the batch Map's MaxConcurrency), never more than the model's
         * concurrent-jobs quota: each shard's SubmitJob and, when its job ends, its Collect (up to 15 minutes) is one
         * Lambda invocation, so this counts against the account's Lambda concurrency like `converse.mapConcurrency`.
         * The default fits a new account; raise it to the concurrent-jobs quota once the account's concurrency allows.
         * @default 4
         */
        mapConcurrency: z.number().int().min(1).max(1000).default(DEFAULT_MAP_CONCURRENCY),
        /** Configured quotas: the fallback when Service Quotas does not answer. @default the documented defaults */
        quotas: z
          .object({
            /** @default 100 */
            minRecordsPerJob: z.number().int().min(1).default(DEFAULT_BATCH_QUOTAS.minRecordsPerJob),
            /** @default 50000 */
            maxRecordsPerJob: z.number().int().min(1).default(DEFAULT_BATCH_QUOTAS.maxRecordsPerJob),
            /** @default 50000 */
            maxRecordsPerFile: z.number().int().min(1).default(DEFAULT_BATCH_QUOTAS.maxRecordsPerFile),
            /** @default 1 GB */
            maxBytesPerFile: z.number().int().min(1).default(DEFAULT_BATCH_QUOTAS.maxBytesPerFile),
            /** @default 5 GB */
            maxBytesPerJob: z.number().int().min(1).default(DEFAULT_BATCH_QUOTAS.maxBytesPerJob),
            /** Submitted plus in-progress jobs per model: caps `batch.mapConcurrency`. @default 10 */
            maxConcurrentJobs: z
              .number()
              .int()
              .min(1)
              .max(1000)
              .default(DEFAULT_BATCH_QUOTAS.maxConcurrentJobs),
          })
          .strict()
          .prefault({})
          .refine((q) => q.minRecordsPerJob <= q.maxRecordsPerJob, {
            message: 'minRecordsPerJob must not exceed maxRecordsPerJob',
          }),
        /** The job's timeoutDurationInHours (24 to 168). @default 72 */
        jobTimeoutHours: z.number().int().min(24).max(168).default(72),
        /** Share of failed shards (jobs) the run tolerates before it fails. @default 0 */
        toleratedFailurePercentage: z.number().min(0).max(100).default(0),
        /** How often the reconciler checks jobs in flight (lost events, heartbeats). @default 5 */
        reconcileIntervalMinutes: z.number().int().min(1).max(60).default(5),
        /** Tags put on every batch job (cost allocation). @default {} */
        tags: z.record(z.string().min(1).max(128), z.string().max(256)).default({}),
        /** Run the jobs inside a VPC (the subnets and security groups must already exist). */
        vpc: z
          .object({
            subnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]+$/)).min(1),
            securityGroupIds: z.array(z.string().regex(/^sg-[0-9a-f]+$/)).min(1),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /**
     * Model prices for the cost report, USD per million tokens, by model id (or inference profile id). On-demand
     * prices, and batch prices (`batchInputPerMillion` / `batchOutputPerMillion`, else `batchDiscount` of on demand).
     * @default the model catalog's list prices of `modelId`
     */
    pricing: z
      .record(
        z.string().min(1),
        z
          .object({
            inputPerMillion: z.number().nonnegative(),
            outputPerMillion: z.number().nonnegative(),
            /** Batch price per million input tokens. @default inputPerMillion x batchDiscount */
            batchInputPerMillion: z.number().nonnegative().optional(),
            /** Batch price per million output tokens. @default outputPerMillion x batchDiscount */
            batchOutputPerMillion: z.number().nonnegative().optional(),
            /** Batch price as a fraction of the on-demand price, where no batch price is given. @default 0.5 */
            batchDiscount: z.number().min(0).max(1).default(0.5),
          })
          .strict(),
      )
      .optional(),
    /** The Plan function. */
    plan: z
      .object({
        /**
         * Plan's memory in MB. Lambda gives a function one vCPU per 1,769 MB and Plan parses the corpus on all of them
         * (one parse worker per vCPU beyond the main thread: {@link lambdaVcpus}, `PLAN_PARSE_WORKERS`). The default,
         * 3,008 MB (two vCPUs, one worker), is what a new account accepts; 10,240 MB (six vCPUs, five workers) plans
         * about twice as much per invocation and is the opt-in once the account's memory quota allows it
         * (bench/README.md has what each plans in 15 minutes). @default 3008
         */
        memorySize: z.number().int().min(512).max(LAMBDA_MAX_MEMORY_MB).default(DEFAULT_PLAN_MEMORY_MB),
        /**
         * Bytes of corpus per Plan segment, one invocation of the Plan Map each: whole small files packed together,
         * larger uncompressed objects cut in byte ranges at line ends, a gzip file whole. 256 MiB takes about 10 s of
         * CPU at 3,008 MB (bench/README.md); a segment must stay well inside one 15-minute invocation.
         * @default 268435456 (256 MiB)
         */
        segmentBytes: z
          .number()
          .int()
          .min(1)
          .default(256 * 1024 * 1024),
        /**
         * Segments planned at once (the Plan Maps' MaxConcurrency). Like the Converse and batch Maps' 4, so a run
         * holds at most 8 invocations (README "Before the first deploy"). @default 4
         */
        mapConcurrency: z.number().int().min(1).max(1000).default(4),
      })
      .strict()
      .prefault({}),
    /** Dashboard and alarms. */
    monitoring: z
      .object({
        /** Email subscribed to the alarm topic (a confirmation mail is sent on deploy). @default none */
        alarmEmail: z.email().optional(),
        /** A batch job in flight longer than this raises the job SLA alarm. @default 24 */
        jobSlaHours: z.number().positive().max(168).default(24),
        /** Records failed as a percentage of records processed, over 15 minutes, that raises an alarm. @default 5 */
        errorRatePercent: z.number().min(0).max(100).default(5),
      })
      .strict()
      .prefault({}),
    /** How plain `{id, text}` lines become model requests. */
    prompt: z
      .object({
        /** Template for the user message; `{{text}}` is replaced by the line's text. @default '{{text}}' */
        template: z
          .string()
          .includes('{{text}}', { message: 'prompt.template must contain {{text}}' })
          .default('{{text}}'),
        /** Optional system prompt added to templated requests. */
        system: z.string().optional(),
        /** maxTokens for templated requests. @default 512 */
        maxTokens: z.number().int().min(1).max(200_000).default(512),
      })
      .strict()
      .prefault({}),
    /** Encryption at rest. */
    kms: z
      .object({
        /** Create a customer managed key (rotated) for buckets, queues, table and logs; else AWS managed keys. @default false */
        customerManagedKey: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /** The idempotency ledger. */
    ledger: z
      .object({
        /** Days a ledger entry is kept (DynamoDB TTL); a record older than that is processed again. @default 90 */
        ttlDays: z.number().int().min(1).max(3650).default(90),
        /** Ledger scope: records are deduplicated per scope. @default `<env>/<modelId>` */
        scope: z.string().min(1).optional(),
        /**
         * How long a claim on a record holds before another unit of work may take it over, in seconds. A takeover is
         * safe whenever it happens (only one commit wins), but taking over a live holder wastes its model call, so
         * the default outlasts each function: its timeout plus a minute. Lower it where takeovers must happen fast
         * (the offline runtime's tests). @default each publishing function's timeout + 60
         */
        staleClaimSeconds: z.number().int().min(1).max(86_400).optional(),
      })
      .strict()
      .prefault({}),
    /** Where runs may read corpora from. */
    ingest: z
      .object({
        /**
         * Buckets besides the ingest bucket a run's input may name (any key in them); Plan gets read access to
         * exactly these. Never the output bucket: a run never reads another run's files. @default none
         */
        allowedBuckets: z
          .array(
            z
              .string()
              .regex(
                /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
                'ingest.allowedBuckets: each entry must be an S3 bucket name (3 to 63 of a-z, 0-9, . and -)',
              ),
          )
          .default([])
          .refine((names) => new Set(names).size === names.length, {
            message: 'ingest.allowedBuckets lists a bucket twice',
          }),
      })
      .strict()
      .prefault({}),
    /** Object key prefix in the ingest bucket whose uploads start a run. @default 'corpora/' */
    ingestPrefix: z
      .string()
      .regex(/^[^/].*\/$/, 'ingestPrefix must be relative and end with /')
      .default('corpora/'),
    /** The failure lane: messages move to the dead-letter queue after this many receives. @default 5 */
    failureLane: z
      .object({
        maxReceiveCount: z.number().int().min(1).max(1000).default(5),
        /** Messages the consumer takes per invocation. @default 10 */
        consumerBatchSize: z.number().int().min(1).max(100).default(10),
        /**
         * Consumer invocations in flight at once (the SQS event source's MaximumConcurrency, 2 to 1,000): few, so the
         * lane does not compete with live runs for the model's quota or the account's Lambda concurrency. @default 2
         */
        consumerConcurrency: z
          .number()
          .int()
          .min(MIN_LANE_CONSUMER_CONCURRENCY)
          .max(1000)
          .default(MIN_LANE_CONSUMER_CONCURRENCY),
      })
      .strict()
      .prefault({}),
    /**
     * A FIFO queue that receives each successfully published record once (`{runId, recordId, ledgerScope,
     * resultKey, usage}`), for a downstream stage that wants records rather than the run-completed event.
     */
    resultsQueue: z
      .object({ enabled: z.boolean().default(false) })
      .strict()
      .prefault({}),
    /**
     * X-Ray subsegments for every AWS SDK call of the functions (Powertools Tracer); Lambda active tracing and the
     * workflow's tracing stay on either way. Costs CPU on every promise (bench/README.md). @default false
     */
    sdkTracing: z.boolean().default(false),
    /** CloudWatch Logs retention for the functions and the workflow. @default 30 */
    logRetentionDays: z.number().int().positive().default(30),
    /** What happens to stateful resources on stack deletion. @default 'retain' */
    removalPolicy: z.enum(['retain', 'destroy']).default('retain'),
  })
  .strict();

/** One environment's validated settings. */
export type EnvironmentConfig = z.infer<typeof environmentConfigSchema>;

/** An environment's price table: model id -> prices (USD per million tokens). */
export type PriceTable = NonNullable<EnvironmentConfig['pricing']>;
/** One model's prices. */
export type ModelPrice = PriceTable[string];

/** The validated settings plus the environment's name. */
export interface PipelineConfig extends Omit<EnvironmentConfig, 'pricing'> {
  /** The price table: the environment's, else the catalog's prices of the model. */
  readonly pricing: PriceTable;
  /** The environment name (`dev`, `prod`, `local`, ...). */
  readonly envName: string;
  /** The ledger scope, resolved. */
  readonly ledgerScope: string;
  /** Batch job names start with `<batchJobNamePrefix>-` (`corpus-<env>`, at most 20 characters). */
  readonly batchJobNamePrefix: string;
}

/** Thrown when cdk.json context does not describe a valid environment. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/**
 * Validates one environment's raw context into a PipelineConfig.
 * @throws ConfigError naming every invalid field
 */
export function parseEnvironmentConfig(envName: string, raw: unknown): PipelineConfig {
  if (raw === undefined) {
    throw new ConfigError(`No environment "${envName}" in cdk.json context.environments`);
  }
  const parsed = environmentConfigSchema.safeParse(raw);
  const issues = parsed.success
    ? modelConfigProblems(parsed.data, raw)
    : parsed.error.issues.flatMap((issue) => {
        const at = issue.path.map(String);
        // A misspelt key is named by its full path (`converse.mapConcurency`), not only the object it sits in.
        if (issue.code === 'unrecognized_keys') {
          return issue.keys.map((key) => ({ path: [...at, key].join('.'), message: 'unknown setting' }));
        }
        return [{ path: at.join('.'), message: issue.message }];
      });
  if (!parsed.success || issues.length > 0) {
    const problems = issues.map((i) => `  - ${i.path || '(root)'}: ${i.message}`);
    throw new ConfigError(`Invalid settings for environment "${envName}":\n${problems.join('\n')}`);
  }
  const batchJobNamePrefix = `corpus-${envName}`
    .replace(/[^a-zA-Z0-9-]+/g, '-')
    .slice(0, 20)
    .replace(/-+$/, '');
  return {
    ...parsed.data,
    pricing: parsed.data.pricing ?? defaultPricing(parsed.data.modelId),
    envName,
    ledgerScope: parsed.data.ledger.scope ?? `${envName}/${parsed.data.modelId}`,
    batchJobNamePrefix,
  };
}
