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
import { DROP_MARKER } from '../lambda/shared/contracts/keys';

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
 * The key patterns of the ingest trigger (`prefix` is the ingest prefix). A corpus lands in one of two ways: one file
 * directly under the prefix (`<prefix><name>.jsonl`, `.jsonl.gz` or `.gz`) starts a run of that file; a drop folder
 * (`<prefix><folder>/...`) starts a run of the whole folder when its `_SUCCESS` object lands, never file by file.
 *
 * An event pattern ANDs fields but only ORs the conditions of one field, and a wildcard `*` also matches `/`
 * (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html): no single pattern on
 * the key can say "directly under the prefix AND ending in .jsonl". So two rules AND them: `forward` (on the default
 * bus, where S3 sends its events) passes on what is not inside a folder under the prefix, and every `_SUCCESS` under
 * it, to the ingest bus; `start` (on the ingest bus) starts the workflow for corpus names and `_SUCCESS` objects.
 */
export function ingestKeyPatterns(prefix: string): { forward: unknown[]; start: unknown[] } {
  // A literal * in the prefix would be a wildcard: escaped as the wildcard syntax says (\*).
  const p = prefix.replace(/\\/g, '\\\\').replace(/\*/g, '\\*');
  const marker = { wildcard: `${p}*/${DROP_MARKER}` };
  return {
    forward: [{ 'anything-but': { wildcard: `${p}*/*` } }, marker],
    start: [{ wildcard: `${p}*.jsonl` }, { wildcard: `${p}*.gz` }, marker],
  };
}

/**
 * Starts a run when a corpus lands in the ingest bucket (see {@link ingestKeyPatterns}): a rule on the DEFAULT bus
 * forwards the candidate `Object Created` events to the trigger's own bus, whose rule starts the workflow with retries
 * and a dead-letter queue. The run input's key is the object's; Plan reads a `.../_SUCCESS` key as its folder.
 */
export class IngestTrigger extends Construct {
  /** The rule that starts the workflow, on {@link bus}. */
  public readonly rule: events.Rule;
  /** The rule on the default bus that forwards candidate uploads to {@link bus}. */
  public readonly forwardRule: events.Rule;
  /** The trigger's own bus, which only receives the forwarded S3 events. */
  public readonly bus: events.EventBus;
  /** The role EventBridge assumes to start the workflow: only for this rule of this account. */
  public readonly role: iam.Role;
  /** The role EventBridge assumes to put forwarded events on {@link bus}: only for the forward rule of this account. */
  public readonly forwardRole: iam.Role;
  /** Events EventBridge could not deliver to the workflow after its retries. */
  public readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: IngestTriggerProps) {
    super(scope, id);
    this.deadLetterQueue = ruleTargetDeadLetterQueue(this, 'DeadLetterQueue', {
      ...props,
      reason: 'This queue is itself the dead-letter queue of the ingest rule target.',
    });

    const stack = Stack.of(this);
    this.bus = new events.EventBus(this, 'Bus', { eventBusName: props.ruleName });
    // Confused-deputy protection for the target's role: EventBridge may assume it only for this rule of this account
    // (aws:SourceArn is the ARN of the rule that sends the event, aws:SourceAccount its account:
    // https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-conditions.html).
    const ruleArn = stack.formatArn({
      service: 'events',
      resource: 'rule',
      // A rule on a custom bus: rule/<bus name>/<rule name>.
      resourceName: `${props.ruleName}/${props.ruleName}`,
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

    const keys = ingestKeyPatterns(props.keyPrefix);
    const uploads = (key: unknown[]): events.EventPattern => ({
      source: ['aws.s3'],
      detailType: ['Object Created'],
      detail: { bucket: { name: [props.bucket.bucketName] }, object: { key } },
    });
    const forwardRuleName = `${props.ruleName}-forward`.slice(0, 64);
    // The forwarding role gets the same confused-deputy conditions: only the forward rule (on the default bus) of
    // this account may have EventBridge assume it.
    this.forwardRole = new iam.Role(this, 'ForwardRole', {
      description: `Assumed by EventBridge to forward uploads from the ${forwardRuleName} rule to the ingest bus`,
      assumedBy: new iam.ServicePrincipal('events.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnEquals: {
            'aws:SourceArn': stack.formatArn({
              service: 'events',
              resource: 'rule',
              resourceName: forwardRuleName,
              arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
            }),
          },
        },
      }),
    });
    this.forwardRule = new events.Rule(this, 'ForwardRule', {
      ruleName: forwardRuleName,
      description: `Forwards uploads directly under ${props.keyPrefix}, and drops' ${DROP_MARKER} objects, to the ingest bus`,
      eventPattern: uploads(keys.forward),
    });
    this.forwardRule.addTarget(
      new targets.EventBus(this.bus, {
        role: this.forwardRole,
        deadLetterQueue: this.deadLetterQueue,
      }),
    );
    this.rule = new events.Rule(this, 'Rule', {
      ruleName: props.ruleName,
      eventBus: this.bus,
      description: `Starts a corpus run for each .jsonl, .jsonl.gz or .gz file directly under ${props.keyPrefix} and each drop folder's ${DROP_MARKER}`,
      eventPattern: uploads(keys.start),
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
