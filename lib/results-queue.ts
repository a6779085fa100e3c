import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** Properties of {@link ResultsQueue}. */
export interface ResultsQueueProps {
  /**
   * Customer managed key for the queue.
   * @default SQS-managed server-side encryption (SSE-SQS)
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * How long a result waits for the downstream consumer.
   * @default Duration.days(14) (the SQS maximum)
   */
  readonly retentionPeriod?: Duration;
  /**
   * Receives of one result by the downstream consumer before it moves to the dead-letter queue.
   * @default 10
   */
  readonly maxReceiveCount?: number;
  /**
   * What happens to the queue on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * Results published downstream: a FIFO queue that receives each successfully published record once
 * (`{runId, recordId, ledgerScope, resultKey, usage}`). Producers set MessageDeduplicationId from the ledger scope
 * and recordId, so a publish retried between sending and marking the record published is dropped by SQS (within its
 * five-minute deduplication window); the ledger keeps any later run from publishing the record again.
 */
export class ResultsQueue extends Construct {
  /** The FIFO queue downstream stages consume. */
  public readonly queue: sqs.Queue;
  /** Results a downstream consumer failed on `maxReceiveCount` times. */
  public readonly deadLetterQueue: sqs.Queue;
  private readonly encryptionKey?: kms.IKey;

  constructor(scope: Construct, id: string, props: ResultsQueueProps = {}) {
    super(scope, id);
    this.encryptionKey = props.encryptionKey;
    const encryption: Pick<sqs.QueueProps, 'encryption' | 'encryptionMasterKey'> = props.encryptionKey
      ? { encryption: sqs.QueueEncryption.KMS, encryptionMasterKey: props.encryptionKey }
      : { encryption: sqs.QueueEncryption.SQS_MANAGED };
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      fifo: true,
      ...encryption,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      removalPolicy,
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      fifo: true,
      // Deduplication ids come from the producer (scope + recordId), not from the body: the body of a resend
      // may differ (its usage or result key), the record does not.
      contentBasedDeduplication: false,
      // Ordering only matters per record: many message groups let consumers read in parallel.
      deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      ...encryption,
      enforceSSL: true,
      retentionPeriod: props.retentionPeriod ?? Duration.days(14),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: props.maxReceiveCount ?? 10 },
      removalPolicy,
    });
  }

  /** Lets `grantee` publish results (sqs:SendMessage, which also authorises SendMessageBatch). */
  public grantPublish(grantee: iam.IGrantable): iam.Grant {
    const grant = this.queue.grant(grantee, 'sqs:SendMessage');
    this.encryptionKey?.grant(grantee, 'kms:GenerateDataKey', 'kms:Decrypt');
    return grant;
  }

  /** Lets `grantee` consume results (receive, delete, change visibility). */
  public grantConsume(grantee: iam.IGrantable): iam.Grant {
    return this.queue.grantConsumeMessages(grantee);
  }
}
