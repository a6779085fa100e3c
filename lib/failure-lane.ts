import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** Properties of {@link FailureLane}. */
export interface FailureLaneProps {
  /**
   * Customer managed key for both queues.
   * @default SQS-managed server-side encryption (SSE-SQS)
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * Receives of one message before it moves to the dead-letter queue.
   * @default 5
   */
  readonly maxReceiveCount?: number;
  /**
   * Timeout of the function that will consume the failure queue. The queue's visibility timeout is six times
   * this, as AWS recommends for a Lambda event source, so a batch being retried is not handed out twice.
   * @default Duration.seconds(60)
   */
  readonly consumerTimeout?: Duration;
  /**
   * How long a failure waits in the queue.
   * @default Duration.days(7)
   */
  readonly retentionPeriod?: Duration;
  /**
   * How long a message waits in the dead-letter queue for a redrive. Longer than the queue's retention because a
   * standard queue keeps a message's original enqueue time when it moves to its dead-letter queue.
   * @default Duration.days(14) (the SQS maximum)
   */
  readonly deadLetterRetentionPeriod?: Duration;
  /**
   * What happens to the queues on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** How many consumer timeouts fit in the failure queue's visibility timeout. */
export const VISIBILITY_TIMEOUT_FACTOR = 6;

/**
 * The failure lane: retryable failures wait in `queue` for a consumer that retries them through Converse;
 * after `maxReceiveCount` receives (or straight away, for non-retryable failures) they land in `deadLetterQueue`,
 * from which an operator redrives them with SQS's native move task.
 */
export class FailureLane extends Construct {
  /** Retryable failures. */
  public readonly queue: sqs.Queue;
  /** Failures that exhausted their retries or can never succeed. */
  public readonly deadLetterQueue: sqs.Queue;
  /** The queue's maxReceiveCount. */
  public readonly maxReceiveCount: number;
  /** The consumer timeout the visibility timeout was derived from. */
  public readonly consumerTimeout: Duration;
  private readonly encryptionKey?: kms.IKey;

  constructor(scope: Construct, id: string, props: FailureLaneProps = {}) {
    super(scope, id);
    this.encryptionKey = props.encryptionKey;
    this.maxReceiveCount = props.maxReceiveCount ?? 5;
    this.consumerTimeout = props.consumerTimeout ?? Duration.seconds(60);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const encryption: Pick<sqs.QueueProps, 'encryption' | 'encryptionMasterKey'> = props.encryptionKey
      ? { encryption: sqs.QueueEncryption.KMS, encryptionMasterKey: props.encryptionKey }
      : { encryption: sqs.QueueEncryption.SQS_MANAGED };

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      ...encryption,
      enforceSSL: true,
      retentionPeriod: props.deadLetterRetentionPeriod ?? Duration.days(14),
      removalPolicy,
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      ...encryption,
      enforceSSL: true,
      retentionPeriod: props.retentionPeriod ?? Duration.days(7),
      visibilityTimeout: Duration.seconds(this.consumerTimeout.toSeconds() * VISIBILITY_TIMEOUT_FACTOR),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: this.maxReceiveCount },
      removalPolicy,
    });
  }

  /** Lets `grantee` send retryable failures to the queue. */
  public grantSendToQueue(grantee: iam.IGrantable): iam.Grant {
    return this.grantSend(this.queue, grantee);
  }

  /** Lets `grantee` send non-retryable failures straight to the dead-letter queue. */
  public grantSendToDeadLetterQueue(grantee: iam.IGrantable): iam.Grant {
    return this.grantSend(this.deadLetterQueue, grantee);
  }

  private grantSend(queue: sqs.IQueue, grantee: iam.IGrantable): iam.Grant {
    // sqs:SendMessage also authorises SendMessageBatch; the URL comes from the environment, so no GetQueueUrl.
    const grant = queue.grant(grantee, 'sqs:SendMessage');
    // The documented producer permissions for an SSE-KMS queue.
    this.encryptionKey?.grant(grantee, 'kms:GenerateDataKey', 'kms:Decrypt');
    return grant;
  }
}
