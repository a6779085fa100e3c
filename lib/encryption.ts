import { ArnFormat, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

/** Properties of {@link PipelineEncryption}. */
export interface PipelineEncryptionProps {
  /**
   * Create a customer managed KMS key (rotated yearly) for the buckets, queues, tables and log groups.
   * When false, each service's own encryption is used (S3-managed, SQS-managed, DynamoDB AWS managed key,
   * CloudWatch Logs default encryption).
   * @default false
   */
  readonly customerManagedKey?: boolean;
  /**
   * What happens to the key on stack deletion. A destroyed key is only scheduled for deletion (30-day window).
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Alias for the key (without the `alias/` prefix).
   * @default no alias
   */
  readonly aliasName?: string;
}

/**
 * Encryption at rest for the pipeline: an optional customer managed key. Every other construct takes
 * `key` as an optional prop and falls back to its service-managed encryption when it is undefined.
 */
export class PipelineEncryption extends Construct {
  /** The customer managed key, when one was requested. */
  public readonly key?: kms.Key;

  constructor(scope: Construct, id: string, props: PipelineEncryptionProps = {}) {
    super(scope, id);
    if (!props.customerManagedKey) {
      return;
    }
    const stack = Stack.of(this);
    const key = new kms.Key(this, 'Key', {
      description: `Encrypts the corpus pipeline's data at rest (${stack.stackName})`,
      enableKeyRotation: true,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      ...(props.aliasName ? { alias: props.aliasName } : {}),
    });
    // CloudWatch Logs encrypts log groups with the key itself (not through the caller's role); it may use the key
    // only for log groups of this account and Region (the encryption context names the log group).
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowCloudWatchLogsForThisAccountsLogGroups',
        principals: [new iam.ServicePrincipal(`logs.${stack.region}.${stack.urlSuffix}`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        conditions: {
          ArnLike: {
            'kms:EncryptionContext:aws:logs:arn': stack.formatArn({
              service: 'logs',
              resource: 'log-group',
              resourceName: '*',
              arnFormat: ArnFormat.COLON_RESOURCE_NAME,
            }),
          },
        },
      }),
    );
    // EventBridge sends undeliverable ingest events to an encrypted dead-letter queue with its own identity;
    // only rules of this account may use the key for that.
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowEventBridgeDeadLetteringFromThisAccountsRules',
        principals: [new iam.ServicePrincipal('events.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
        resources: ['*'],
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: {
            'aws:SourceArn': stack.formatArn({
              service: 'events',
              resource: 'rule',
              resourceName: '*',
              arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
            }),
          },
        },
      }),
    );
    this.key = key;
  }
}
