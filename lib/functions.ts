import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { lambdaVcpus, PLAN_RUNTIME_ENV, type PipelineConfig } from './config';
import { toRetentionDays } from './log-retention';
import { PipelineFunction, type PipelineFunctionProps } from './pipeline-function';
import { BATCH_QUOTA_ENV, envFor, ON_DEMAND_QUOTA_ENV } from '../lambda/shared/contracts/env';

/** The handler entry files, relative to the project root; each exports `handler`. */
export const FUNCTION_ENTRIES = {
  plan: 'lambda/plan.ts',
  converse: 'lambda/converse-batch.ts',
  finalize: 'lambda/finalize.ts',
  submitJob: 'lambda/submit-job.ts',
  jobState: 'lambda/job-state.ts',
  reconcile: 'lambda/reconcile.ts',
  collect: 'lambda/collect.ts',
  converseItems: 'lambda/converse-items.ts',
  failureLaneConsumer: 'lambda/failure-lane-consumer.ts',
} as const;

/**
 * The failure-lane consumer's timeout: the failure queue's visibility timeout is derived from it (six times), and
 * kept under the results queue's five-minute deduplication window, so a message whose consumer died after sending
 * a result is redelivered, and the result resent, while FIFO still drops the copy.
 */
export const FAILURE_LANE_CONSUMER_TIMEOUT = Duration.seconds(45);

/**
 * ConverseBatch's timeout. An EXPRESS child has five minutes in all (every attempt and retry wait included): two
 * full attempts fit, and each attempt also stops calling the model by the child's own deadline.
 */
export const CONVERSE_BATCH_TIMEOUT = Duration.seconds(120);

/** How long an EXPRESS execution may run (AWS Step Functions quota: five minutes, not adjustable). */
export const EXPRESS_CHILD_BUDGET = Duration.minutes(5);

/** The claim lease of a function that publishes through the ledger: the configured one, or its timeout + 60 s. */
function claimLease(config: PipelineConfig, timeout: Duration): { CLAIM_LEASE_SECONDS: string } {
  return { CLAIM_LEASE_SECONDS: String(config.ledger.staleClaimSeconds ?? timeout.toSeconds() + 60) };
}

/** The settings every function shares (log group, removal, tracing, entry root). */
type CommonFunctionProps = Pick<
  PipelineFunctionProps,
  'logRetention' | 'removalPolicy' | 'sdkTracing' | 'logEncryptionKey' | 'projectRoot'
>;

/** Properties of {@link PipelineFunctions}. */
export interface PipelineFunctionsProps {
  /** The environment's validated settings (model, prompt, quotas, fan-out, ledger, log retention). */
  readonly config: PipelineConfig;
  /** The output bucket (OUTPUT_BUCKET). */
  readonly outputBucket: s3.IBucket;
  /** The ingest bucket (INGEST_BUCKET): Plan reads corpora under `ingestPrefix` in it. */
  readonly ingestBucket: s3.IBucket;
  /** The ingest prefix (INGEST_PREFIX), ending with `/`. */
  readonly ingestPrefix: string;
  /** The record ledger (LEDGER_TABLE). */
  readonly ledgerTable: dynamodb.ITable;
  /** The runs table (RUNS_TABLE): manifest revisions, records the failure lane settled. */
  readonly runsTable: dynamodb.ITable;
  /** The Powertools idempotency table (IDEMPOTENCY_TABLE). */
  readonly idempotencyTable: dynamodb.ITable;
  /** The failure queue (FAILURE_QUEUE_URL). */
  readonly failureQueue: sqs.IQueue;
  /** The failure dead-letter queue (FAILURE_DLQ_URL). */
  readonly failureDeadLetterQueue: sqs.IQueue;
  /** The pipeline's event bus (EVENT_BUS_NAME). */
  readonly eventBus: events.IEventBus;
  /**
   * The results queue (RESULTS_QUEUE_URL) of the functions that publish records.
   * @default no results queue
   */
  readonly resultsQueue?: sqs.IQueue;
  /** The batch jobs table (JOBS_TABLE). */
  readonly jobsTable: dynamodb.ITable;
  /** The role Bedrock runs batch jobs with (BATCH_ROLE_ARN). */
  readonly batchServiceRole: iam.IRole;
  /**
   * Customer managed key the batch jobs encrypt their output with (BATCH_OUTPUT_KMS_KEY_ARN).
   * @default the bucket's default encryption
   */
  readonly batchOutputKey?: kms.IKey;
  /**
   * Customer managed key for the log groups.
   * @default CloudWatch Logs default encryption
   */
  readonly logEncryptionKey?: kms.IKey;
  /**
   * What happens to the log groups on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * The directory the entry files are relative to.
   * @default the repository root
   */
  readonly projectRoot?: string;
}

/**
 * The workflow's functions with their environment. Permissions are not granted here: the stack grants
 * each one exactly what it uses.
 */
export class PipelineFunctions extends Construct {
  /**
   * Plan, all four steps (`phase`): prepare (input, model, listing, segments), a segment's line count, a segment (one
   * Plan Map child: validates, normalises, looks up the ledger, writes its items) and the merge (items file, mode,
   * shards).
   */
  public readonly plan: PipelineFunction;
  /** ConverseBatch: one Distributed Map child batch, Converse per record, results through the ledger. */
  public readonly converse: PipelineFunction;
  /** Finalize: the run manifest and the completion event. */
  public readonly finalize: PipelineFunction;
  /** Batch mode SubmitJob: one CreateModelInvocationJob per shard; records the shard's task token by job ARN. */
  public readonly submitJob: PipelineFunction;
  /** Batch mode job-state handler: resumes a shard's wait when its job ends (EventBridge). */
  public readonly jobState: PipelineFunction;
  /** Batch mode reconciler: resumes jobs whose event never came, heartbeats long waits (schedule). */
  public readonly reconcile: PipelineFunction;
  /** Batch mode Collect: streams a job's output through the ledger. */
  public readonly collect: PipelineFunction;
  /** Batch mode ConverseItems: gathers the records that go through Converse after the jobs. */
  public readonly converseItems: PipelineFunction;
  /** The failure-lane consumer: retries retryable failures through Converse, dead-letters the rest with a reason. */
  public readonly failureLaneConsumer: PipelineFunction;

  private readonly props: PipelineFunctionsProps;
  private readonly common: CommonFunctionProps;
  /** RESULTS_QUEUE_URL of the functions that publish records, when the results queue is on. */
  private readonly results: { RESULTS_QUEUE_URL?: string };
  /** MODEL_FORMAT for a model the catalog does not know (model-catalog.ts knows the rest by MODEL_ID). */
  private readonly modelFormat: { MODEL_FORMAT?: string };

  constructor(scope: Construct, id: string, props: PipelineFunctionsProps) {
    super(scope, id);
    const { config } = props;
    this.props = props;
    this.results = props.resultsQueue ? { RESULTS_QUEUE_URL: props.resultsQueue.queueUrl } : {};
    this.modelFormat = config.model.format ? { MODEL_FORMAT: config.model.format } : {};
    this.common = {
      logRetention: toRetentionDays(config.logRetentionDays),
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      sdkTracing: config.sdkTracing,
      ...(props.logEncryptionKey ? { logEncryptionKey: props.logEncryptionKey } : {}),
      ...(props.projectRoot ? { projectRoot: props.projectRoot } : {}),
    };

    this.plan = this.createPlan();
    this.converse = this.createConverseBatch();
    this.finalize = this.createFinalize();
    this.submitJob = this.createSubmitJob();
    this.jobState = this.createJobState();
    this.reconcile = this.createReconcile();
    this.collect = this.createCollect();
    this.converseItems = this.createConverseItems();
    this.failureLaneConsumer = this.createFailureLaneConsumer();
  }

  private createPlan(): PipelineFunction {
    const { config, ...props } = this.props;
    const quotas = config.batch.quotas;
    return new PipelineFunction(this, 'Plan', {
      ...this.common,
      entry: FUNCTION_ENTRIES.plan,
      serviceName: 'corpus-plan',
      description:
        'Plans a corpus run: validates, normalises and deduplicates records, writes the items file',
      timeout: Duration.minutes(15),
      memorySize: config.plan.memorySize,
      environment: envFor('plan', {
        // One parse worker per vCPU beyond the main thread's (lambda/plan/parse-pool.ts). Inside Lambda the CPU count
        // Node sees does not follow the memory size, so the stack says it.
        PLAN_PARSE_WORKERS: String(lambdaVcpus(config.plan.memorySize) - 1),
        PLAN_SEGMENT_BYTES: String(config.plan.segmentBytes),
        PLAN_MAP_CONCURRENCY: String(config.plan.mapConcurrency),
        ...PLAN_RUNTIME_ENV,
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        // The buckets a run's input may name (lambda/plan.ts refuses any other, and the output bucket always).
        INGEST_BUCKET: props.ingestBucket.bucketName,
        INGEST_PREFIX: props.ingestPrefix,
        ...(config.ingest.allowedBuckets.length > 0
          ? { ALLOWED_INPUT_BUCKETS: config.ingest.allowedBuckets.join(',') }
          : {}),
        LEDGER_TABLE: props.ledgerTable.tableName,
        IDEMPOTENCY_TABLE: props.idempotencyTable.tableName,
        FAILURE_DLQ_URL: props.failureDeadLetterQueue.queueUrl,
        MODEL_ID: config.modelId,
        ...this.modelFormat,
        ...(config.model.batchQuotaModelName
          ? { MODEL_BATCH_QUOTA_NAME: config.model.batchQuotaModelName }
          : {}),
        ...(config.model.batchQuotaNames
          ? { MODEL_BATCH_QUOTA_NAMES: JSON.stringify(config.model.batchQuotaNames) }
          : {}),
        LEDGER_SCOPE: config.ledgerScope,
        PROMPT_TEMPLATE: config.prompt.template,
        ...(config.prompt.system !== undefined ? { PROMPT_SYSTEM: config.prompt.system } : {}),
        PROMPT_MAX_TOKENS: String(config.prompt.maxTokens),
        CONVERSE_BATCH_SIZE: String(config.converse.batchSize),
        CONVERSE_MAP_CONCURRENCY: String(config.converse.mapConcurrency),
        TOLERATED_FAILURE_PERCENTAGE: String(config.converse.toleratedFailurePercentage),
        LEDGER_TTL_DAYS: String(config.ledger.ttlDays),
        BATCH_READ_SERVICE_QUOTAS: String(config.batch.readServiceQuotas),
        [BATCH_QUOTA_ENV.minRecordsPerJob]: String(quotas.minRecordsPerJob),
        [BATCH_QUOTA_ENV.maxRecordsPerJob]: String(quotas.maxRecordsPerJob),
        [BATCH_QUOTA_ENV.maxRecordsPerFile]: String(quotas.maxRecordsPerFile),
        [BATCH_QUOTA_ENV.maxBytesPerFile]: String(quotas.maxBytesPerFile),
        [BATCH_QUOTA_ENV.maxBytesPerJob]: String(quotas.maxBytesPerJob),
        [BATCH_QUOTA_ENV.maxConcurrentJobs]: String(quotas.maxConcurrentJobs),
        BATCH_MAP_CONCURRENCY: String(config.batch.mapConcurrency),
        ...(config.batch.autoThreshold !== undefined
          ? { BATCH_AUTO_THRESHOLD: String(config.batch.autoThreshold) }
          : {}),
        BATCH_TOLERATED_FAILURE_PERCENTAGE: String(config.batch.toleratedFailurePercentage),
        BATCH_JOB_TIMEOUT_HOURS: String(config.batch.jobTimeoutHours),
        BATCH_RECONCILE_INTERVAL_MINUTES: String(config.batch.reconcileIntervalMinutes),
      }),
    });
  }

  private createConverseBatch(): PipelineFunction {
    const { config, ...props } = this.props;
    return new PipelineFunction(this, 'ConverseBatch', {
      ...this.common,
      entry: FUNCTION_ENTRIES.converse,
      serviceName: 'corpus-converse-batch',
      description:
        'Runs Converse over one batch of records with backoff; publishes each result once via the ledger',
      timeout: CONVERSE_BATCH_TIMEOUT,
      memorySize: 512,
      environment: envFor('converse', {
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        LEDGER_TABLE: props.ledgerTable.tableName,
        ...claimLease(config, CONVERSE_BATCH_TIMEOUT),
        EXPRESS_CHILD_BUDGET_SECONDS: String(EXPRESS_CHILD_BUDGET.toSeconds()),
        FAILURE_QUEUE_URL: props.failureQueue.queueUrl,
        FAILURE_DLQ_URL: props.failureDeadLetterQueue.queueUrl,
        MODEL_ID: config.modelId,
        ...this.modelFormat,
        ITEM_CONCURRENCY: String(config.converse.itemConcurrency),
        MAX_ATTEMPTS: String(config.converse.maxAttempts),
        LEDGER_TTL_DAYS: String(config.ledger.ttlDays),
        ...(config.onDemand.requestsPerMinute === undefined
          ? {}
          : { [ON_DEMAND_QUOTA_ENV.requestsPerMinute]: String(config.onDemand.requestsPerMinute) }),
        [ON_DEMAND_QUOTA_ENV.tokensPerMinute]: String(config.onDemand.tokensPerMinute),
        CONVERSE_MAP_CONCURRENCY: String(config.converse.mapConcurrency),
        ...this.results,
      }),
    });
  }

  private createFinalize(): PipelineFunction {
    const { config, ...props } = this.props;
    return new PipelineFunction(this, 'Finalize', {
      ...this.common,
      entry: FUNCTION_ENTRIES.finalize,
      serviceName: 'corpus-finalize',
      description: 'Writes the run manifest and announces the run outcome on the pipeline event bus',
      timeout: Duration.minutes(15),
      memorySize: 1024,
      environment: envFor('finalize', {
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        EVENT_BUS_NAME: props.eventBus.eventBusName,
        IDEMPOTENCY_TABLE: props.idempotencyTable.tableName,
        LEDGER_TABLE: props.ledgerTable.tableName,
        RUNS_TABLE: props.runsTable.tableName,
        FAILURE_QUEUE_URL: props.failureQueue.queueUrl,
        FAILURE_DLQ_URL: props.failureDeadLetterQueue.queueUrl,
        LEDGER_TTL_DAYS: String(config.ledger.ttlDays),
        ...claimLease(config, Duration.minutes(15)),
        ...this.results,
      }),
    });
  }

  /** The jobs table of the batch-mode functions that record and follow batch jobs. */
  private jobsEnvironment(): { JOBS_TABLE: string; JOBS_TTL_DAYS: string } {
    return {
      JOBS_TABLE: this.props.jobsTable.tableName,
      JOBS_TTL_DAYS: String(this.props.config.ledger.ttlDays),
    };
  }

  private createSubmitJob(): PipelineFunction {
    const { config, ...props } = this.props;
    return new PipelineFunction(this, 'SubmitJob', {
      ...this.common,
      entry: FUNCTION_ENTRIES.submitJob,
      serviceName: 'corpus-submit-job',
      description: 'Submits one Bedrock batch inference job per shard and records its task token by job ARN',
      timeout: Duration.seconds(60),
      memorySize: 256,
      environment: envFor('submitJob', {
        ...this.jobsEnvironment(),
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        MODEL_ID: config.modelId,
        BATCH_ROLE_ARN: props.batchServiceRole.roleArn,
        BATCH_JOB_TIMEOUT_HOURS: String(config.batch.jobTimeoutHours),
        BATCH_JOB_NAME_PREFIX: config.batchJobNamePrefix,
        BATCH_JOB_TAGS: JSON.stringify({ ...config.batch.tags, environment: config.envName }),
        ...(config.batch.vpc
          ? {
              BATCH_VPC_SUBNET_IDS: config.batch.vpc.subnetIds.join(','),
              BATCH_VPC_SECURITY_GROUP_IDS: config.batch.vpc.securityGroupIds.join(','),
            }
          : {}),
        ...(props.batchOutputKey ? { BATCH_OUTPUT_KMS_KEY_ARN: props.batchOutputKey.keyArn } : {}),
      }),
    });
  }

  private createJobState(): PipelineFunction {
    return new PipelineFunction(this, 'JobState', {
      ...this.common,
      entry: FUNCTION_ENTRIES.jobState,
      serviceName: 'corpus-job-state',
      description: 'Resumes the shard waiting on a Bedrock batch job when the job reaches a terminal status',
      timeout: Duration.seconds(60),
      memorySize: 256,
      environment: envFor('jobState', this.jobsEnvironment()),
    });
  }

  private createReconcile(): PipelineFunction {
    return new PipelineFunction(this, 'Reconcile', {
      ...this.common,
      entry: FUNCTION_ENTRIES.reconcile,
      serviceName: 'corpus-reconcile',
      description:
        'Resumes batch jobs whose state-change event never came; heartbeats the waits of running jobs',
      timeout: Duration.minutes(5),
      memorySize: 256,
      environment: envFor('reconcile', this.jobsEnvironment()),
    });
  }

  private createCollect(): PipelineFunction {
    const { config, ...props } = this.props;
    return new PipelineFunction(this, 'Collect', {
      ...this.common,
      entry: FUNCTION_ENTRIES.collect,
      serviceName: 'corpus-collect',
      description: 'Streams a batch job output through the ledger; error lines to the failure lane',
      timeout: Duration.minutes(15),
      memorySize: 1024,
      environment: envFor('collect', {
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        LEDGER_TABLE: props.ledgerTable.tableName,
        FAILURE_QUEUE_URL: props.failureQueue.queueUrl,
        FAILURE_DLQ_URL: props.failureDeadLetterQueue.queueUrl,
        LEDGER_TTL_DAYS: String(config.ledger.ttlDays),
        ...claimLease(config, Duration.minutes(15)),
        ...this.results,
      }),
    });
  }

  private createConverseItems(): PipelineFunction {
    return new PipelineFunction(this, 'ConverseItems', {
      ...this.common,
      entry: FUNCTION_ENTRIES.converseItems,
      serviceName: 'corpus-converse-items',
      description: 'Gathers the records that go through Converse after the batch jobs',
      timeout: Duration.minutes(15),
      memorySize: 512,
      environment: envFor('converseItems', { OUTPUT_BUCKET: this.props.outputBucket.bucketName }),
    });
  }

  private createFailureLaneConsumer(): PipelineFunction {
    const { config, ...props } = this.props;
    return new PipelineFunction(this, 'FailureLaneConsumer', {
      ...this.common,
      entry: FUNCTION_ENTRIES.failureLaneConsumer,
      serviceName: 'corpus-failure-lane',
      description:
        'Retries retryable failures through Converse and publishes them once via the ledger; dead-letters the rest',
      timeout: FAILURE_LANE_CONSUMER_TIMEOUT,
      memorySize: 512,
      environment: envFor('failureLaneConsumer', {
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        LEDGER_TABLE: props.ledgerTable.tableName,
        RUNS_TABLE: props.runsTable.tableName,
        EVENT_BUS_NAME: props.eventBus.eventBusName,
        ...claimLease(config, FAILURE_LANE_CONSUMER_TIMEOUT),
        FAILURE_DLQ_URL: props.failureDeadLetterQueue.queueUrl,
        MODEL_ID: config.modelId,
        ...this.modelFormat,
        // The queue is the retry loop: short retries inside one call.
        MAX_ATTEMPTS: '2',
        LEDGER_TTL_DAYS: String(config.ledger.ttlDays),
        MAX_RECEIVE_COUNT: String(config.failureLane.maxReceiveCount),
        ...this.results,
      }),
    });
  }
}
