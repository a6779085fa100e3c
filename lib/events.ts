import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledge } from './nag';

/** Properties of {@link PipelineEventBus}. */
export interface PipelineEventBusProps {
  /** Name of the bus (`CorpusPipeline-<env>`). */
  readonly eventBusName: string;
}

/** The pipeline's own event bus, on which Finalize announces `Corpus Run Completed` / `Corpus Run Failed`. */
export class PipelineEventBus extends Construct {
  /** The bus downstream stages subscribe to. */
  public readonly eventBus: events.EventBus;

  constructor(scope: Construct, id: string, props: PipelineEventBusProps) {
    super(scope, id);
    this.eventBus = new events.EventBus(this, 'Bus', { eventBusName: props.eventBusName });
  }

  /** Lets `grantee` put events on this bus (events:PutEvents on the bus ARN only). */
  public grantPutEvents(grantee: iam.IGrantable): iam.Grant {
    return this.eventBus.grantPutEventsTo(grantee);
  }
}

/** Properties of {@link ruleTargetDeadLetterQueue}. */
export interface RuleTargetDeadLetterQueueProps {
  /**
   * Customer managed key (its key policy must let events.amazonaws.com use it).
   * @default SQS-managed server-side encryption
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * What happens to the queue on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /** What the queue holds, for the cdk-nag acknowledgement. */
  readonly reason: string;
}

/**
 * The dead-letter queue of an EventBridge rule target: events EventBridge could not deliver after its retries,
 * kept 14 days, encrypted, TLS only.
 */
export function ruleTargetDeadLetterQueue(
  scope: Construct,
  id: string,
  props: RuleTargetDeadLetterQueueProps,
): sqs.Queue {
  const queue = new sqs.Queue(scope, id, {
    ...(props.encryptionKey
      ? { encryption: sqs.QueueEncryption.KMS, encryptionMasterKey: props.encryptionKey }
      : { encryption: sqs.QueueEncryption.SQS_MANAGED }),
    enforceSSL: true,
    retentionPeriod: Duration.days(14),
    removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
  });
  acknowledge(
    queue,
    ['AwsSolutions-SQS3'],
    `${props.reason} EventBridge dead-letter queues are attached to the rule target, not through a redrive policy, ` +
      'which is what the rule looks for.',
  );
  return queue;
}

/** Properties of {@link IngestTrigger}. */
export interface IngestTriggerProps {
  /**
   * The rule's name (at most 64 of `A-Za-z0-9._-`): explicit, so the role EventBridge assumes can trust exactly this
   * rule (`aws:SourceArn`) without a reference cycle between the rule and its target's role.
   */
  readonly ruleName: string;
  /** The bucket whose uploads start runs; it must send its events to EventBridge (`eventBridgeEnabled`). */
  readonly bucket: s3.IBucket;
  /** Only objects under this key prefix start a run. */
  readonly keyPrefix: string;
  /** The workflow to start, with `{bucket, key, etag, size, trigger: 's3'}` as its input. */
  readonly stateMachine: sfn.IStateMachine;
  /**
   * Customer managed key for the target's dead-letter queue (its key policy must let events.amazonaws.com use it).
   * @default SQS-managed server-side encryption
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * How often EventBridge retries a failed StartExecution before dead-lettering the event.
   * @default 10
   */
  readonly retryAttempts?: number;
  /**
   * The oldest event EventBridge still tries to deliver.
   * @default Duration.hours(4)
   */
  readonly maxEventAge?: Duration;
  /**
   * What happens to the dead-letter queue on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** The event a corpus upload starts the workflow with. */
export const INGEST_TARGET_INPUT = {
  bucket: events.EventField.fromPath('$.detail.bucket.name'),
  key: events.EventField.fromPath('$.detail.object.key'),
  etag: events.EventField.fromPath('$.detail.object.etag'),
  size: events.EventField.fromPath('$.detail.object.size'),
  trigger: 's3',
};

/**
 * Starts a run when a corpus lands in the ingest bucket: a rule on the DEFAULT bus (where S3 sends its events)
 * matching `Object Created` under the ingest prefix, targeting the workflow with retries and a dead-letter queue.
 */
export class IngestTrigger extends Construct {
  /** The rule on the default bus. */
  public readonly rule: events.Rule;
  /** The role EventBridge assumes to start the workflow: only for this rule of this account. */
  public readonly role: iam.Role;
  /** Events EventBridge could not deliver to the workflow after its retries. */
  public readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: IngestTriggerProps) {
    super(scope, id);
    this.deadLetterQueue = ruleTargetDeadLetterQueue(this, 'DeadLetterQueue', {
      ...props,
      reason: 'This queue is itself the dead-letter queue of the ingest rule target.',
    });

    const stack = Stack.of(this);
    // Confused-deputy protection for the target's role: EventBridge may assume it only for this rule of this account
    // (aws:SourceArn is the ARN of the rule that sends the event, aws:SourceAccount its account:
    // https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-conditions.html).
    const ruleArn = stack.formatArn({
      service: 'events',
      resource: 'rule',
      resourceName: props.ruleName,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
    this.role = new iam.Role(this, 'TargetRole', {
      description: `Assumed by EventBridge to start the corpus workflow from the ${props.ruleName} rule`,
      assumedBy: new iam.ServicePrincipal('events.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnEquals: { 'aws:SourceArn': ruleArn },
        },
      }),
    });

    this.rule = new events.Rule(this, 'Rule', {
      ruleName: props.ruleName,
      description: `Starts a corpus run for each object created under ${props.keyPrefix}`,
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: {
          bucket: { name: [props.bucket.bucketName] },
          object: { key: [{ prefix: props.keyPrefix }] },
        },
      },
    });
    this.rule.addTarget(
      new targets.SfnStateMachine(props.stateMachine, {
        role: this.role,
        input: events.RuleTargetInput.fromObject(INGEST_TARGET_INPUT),
        deadLetterQueue: this.deadLetterQueue,
        retryAttempts: props.retryAttempts ?? 10,
        maxEventAge: props.maxEventAge ?? Duration.hours(4),
      }),
    );
  }
}
