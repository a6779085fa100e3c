import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as events from 'aws-cdk-lib/aws-events';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { PipelineConfig } from './config';
import { toRetentionDays } from './log-retention';
import { PipelineFunction } from './pipeline-function';

/** The handler entry files, relative to the project root; each exports `handler`. */
export const FUNCTION_ENTRIES = {
  plan: 'lambda/plan.ts',
  converse: 'lambda/converse-batch.ts',
  finalize: 'lambda/finalize.ts',
} as const;

/** Properties of {@link PipelineFunctions}. */
export interface PipelineFunctionsProps {
  /** The environment's validated settings (model, prompt, quotas, fan-out, ledger, log retention). */
  readonly config: PipelineConfig;
  /** The output bucket (OUTPUT_BUCKET). */
  readonly outputBucket: s3.IBucket;
  /** The record ledger (LEDGER_TABLE). */
  readonly ledgerTable: dynamodb.ITable;
  /** The Powertools idempotency table (IDEMPOTENCY_TABLE). */
  readonly idempotencyTable: dynamodb.ITable;
  /** The failure queue (FAILURE_QUEUE_URL). */
  readonly failureQueue: sqs.IQueue;
  /** The failure dead-letter queue (FAILURE_DLQ_URL). */
  readonly failureDeadLetterQueue: sqs.IQueue;
  /** The pipeline's event bus (EVENT_BUS_NAME). */
  readonly eventBus: events.IEventBus;
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
 * The workflow's three functions with their environment. Permissions are not granted here: the stack grants
 * each one exactly what it uses.
 */
export class PipelineFunctions extends Construct {
  /** Plan: validates and normalises the corpus, skips ledgered records, writes the items file. */
  public readonly plan: PipelineFunction;
  /** ConverseBatch: one Distributed Map child batch, Converse per record, results through the ledger. */
  public readonly converse: PipelineFunction;
  /** Finalize: the run manifest and the completion event. */
  public readonly finalize: PipelineFunction;

  constructor(scope: Construct, id: string, props: PipelineFunctionsProps) {
    super(scope, id);
    const { config } = props;
    const common = {
      logRetention: toRetentionDays(config.logRetentionDays),
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      ...(props.logEncryptionKey ? { logEncryptionKey: props.logEncryptionKey } : {}),
      ...(props.projectRoot ? { projectRoot: props.projectRoot } : {}),
    };

    this.plan = new PipelineFunction(this, 'Plan', {
      ...common,
      entry: FUNCTION_ENTRIES.plan,
      serviceName: 'corpus-plan',
      description:
        'Plans a corpus run: validates, normalises and deduplicates records, writes the items file',
      timeout: Duration.minutes(15),
      memorySize: 1024,
      environment: {
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        LEDGER_TABLE: props.ledgerTable.tableName,
        IDEMPOTENCY_TABLE: props.idempotencyTable.tableName,
        FAILURE_DLQ_URL: props.failureDeadLetterQueue.queueUrl,
        MODEL_ID: config.modelId,
        LEDGER_SCOPE: config.ledgerScope,
        PROMPT_TEMPLATE: config.prompt.template,
        ...(config.prompt.system !== undefined ? { PROMPT_SYSTEM: config.prompt.system } : {}),
        PROMPT_MAX_TOKENS: String(config.prompt.maxTokens),
        CONVERSE_BATCH_SIZE: String(config.converse.batchSize),
        CONVERSE_MAP_CONCURRENCY: String(config.converse.mapConcurrency),
        TOLERATED_FAILURE_PERCENTAGE: String(config.converse.toleratedFailurePercentage),
      },
    });

    this.converse = new PipelineFunction(this, 'ConverseBatch', {
      ...common,
      entry: FUNCTION_ENTRIES.converse,
      serviceName: 'corpus-converse-batch',
      description:
        'Runs Converse over one batch of records with backoff; publishes each result once via the ledger',
      timeout: Duration.seconds(240),
      memorySize: 512,
      environment: {
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        LEDGER_TABLE: props.ledgerTable.tableName,
        IDEMPOTENCY_TABLE: props.idempotencyTable.tableName,
        FAILURE_QUEUE_URL: props.failureQueue.queueUrl,
        FAILURE_DLQ_URL: props.failureDeadLetterQueue.queueUrl,
        MODEL_ID: config.modelId,
        ITEM_CONCURRENCY: String(config.converse.itemConcurrency),
        MAX_ATTEMPTS: String(config.converse.maxAttempts),
        LEDGER_TTL_DAYS: String(config.ledger.ttlDays),
        REQUESTS_PER_MINUTE: String(config.onDemand.requestsPerMinute),
        TOKENS_PER_MINUTE: String(config.onDemand.tokensPerMinute),
        CONVERSE_MAP_CONCURRENCY: String(config.converse.mapConcurrency),
      },
    });

    this.finalize = new PipelineFunction(this, 'Finalize', {
      ...common,
      entry: FUNCTION_ENTRIES.finalize,
      serviceName: 'corpus-finalize',
      description: 'Writes the run manifest and announces the run outcome on the pipeline event bus',
      timeout: Duration.minutes(15),
      memorySize: 1024,
      environment: {
        OUTPUT_BUCKET: props.outputBucket.bucketName,
        EVENT_BUS_NAME: props.eventBus.eventBusName,
        IDEMPOTENCY_TABLE: props.idempotencyTable.tableName,
      },
    });
  }
}
