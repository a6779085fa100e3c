import { Aws, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { acknowledge, acknowledgeWildcardResources, managedPolicyFindingId } from './nag';

/** Properties of {@link PipelineStorage}. */
export interface PipelineStorageProps {
  /**
   * Customer managed key for the ingest and output buckets (SSE-KMS with an S3 Bucket Key). The access-logs
   * bucket always uses SSE-S3: S3 server access logging cannot deliver to an SSE-KMS bucket.
   * @default SSE-S3 (S3-managed keys)
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * What happens to the buckets on stack deletion; DESTROY also empties them first (autoDeleteObjects).
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Key prefix in the ingest bucket whose objects start runs and which the planner may read.
   * @default 'corpora/'
   */
  readonly ingestPrefix?: string;
  /**
   * How long Distributed Map result files (`map-runs/`) are kept in the output bucket.
   * @default Duration.days(30)
   */
  readonly mapRunsExpiration?: Duration;
  /**
   * How long overwritten or deleted object versions are kept in the versioned buckets.
   * @default Duration.days(30)
   */
  readonly noncurrentVersionExpiration?: Duration;
  /**
   * How long server access logs are kept.
   * @default Duration.days(365)
   */
  readonly accessLogsExpiration?: Duration;
}

/** Options of {@link PipelineStorage.grantOutputRead}. */
export interface OutputReadOptions {
  /**
   * Also allow s3:ListBucket on the bucket, so that reading a missing key fails with NoSuchKey (404) rather than
   * AccessDenied (403), which handlers that probe for files rely on.
   * @default true
   */
  readonly listBucket?: boolean;
}

/** Thrown when a construct CDK is expected to create is not there (an aws-cdk-lib upgrade changed it). */
export class MissingConstructError extends Error {
  override readonly name = 'MissingConstructError';
}

// The id of the stack-wide singleton aws-cdk-lib creates for bucket notifications (stable across releases).
const BUCKET_NOTIFICATIONS_HANDLER_ID = 'BucketNotificationsHandler050a0587b7544547bf325f094a3db834';
const BASIC_EXECUTION_POLICY_ARN = `arn:${Aws.PARTITION}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole`;

/** The key prefix of Distributed Map ResultWriter output in the output bucket. */
export const MAP_RUNS_PREFIX = 'map-runs/';

/**
 * The pipeline's buckets: the ingest bucket (uploads under the ingest prefix start runs through EventBridge),
 * the output bucket (`runs/<runId>/...` results, failures and manifests; `map-runs/` Distributed Map results)
 * and the server access-logs bucket both write to. Grants are prefix-scoped.
 */
export class PipelineStorage extends Construct {
  /** Receives the server access logs of the other two buckets. */
  public readonly accessLogsBucket: s3.Bucket;
  /** Where corpora are dropped; sends its events to the default EventBridge bus. */
  public readonly ingestBucket: s3.Bucket;
  /** Where runs write items, results, failures and manifests, and the Distributed Map its result files. */
  public readonly outputBucket: s3.Bucket;
  /** The ingest prefix (ends with `/`). */
  public readonly ingestPrefix: string;

  constructor(scope: Construct, id: string, props: PipelineStorageProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const autoDeleteObjects = removalPolicy === RemovalPolicy.DESTROY;
    this.ingestPrefix = props.ingestPrefix ?? 'corpora/';
    const noncurrentVersionExpiration = props.noncurrentVersionExpiration ?? Duration.days(30);
    const baseRule: s3.LifecycleRule = {
      id: 'ExpireOldVersionsAndAbandonedUploads',
      noncurrentVersionExpiration,
      abortIncompleteMultipartUploadAfter: Duration.days(7),
    };

    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogsBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [
        { id: 'ExpireAccessLogs', expiration: props.accessLogsExpiration ?? Duration.days(365) },
      ],
      removalPolicy,
      autoDeleteObjects,
    });

    const dataBucketProps: s3.BucketProps = {
      ...(props.encryptionKey
        ? {
            encryption: s3.BucketEncryption.KMS,
            encryptionKey: props.encryptionKey,
            bucketKeyEnabled: true,
          }
        : { encryption: s3.BucketEncryption.S3_MANAGED }),
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      versioned: true,
      serverAccessLogsBucket: this.accessLogsBucket,
      removalPolicy,
      autoDeleteObjects,
    };

    this.ingestBucket = new s3.Bucket(this, 'IngestBucket', {
      ...dataBucketProps,
      serverAccessLogsPrefix: 'ingest/',
      eventBridgeEnabled: true,
      lifecycleRules: [baseRule],
    });
    this.acknowledgeNotificationsHandler();

    this.outputBucket = new s3.Bucket(this, 'OutputBucket', {
      ...dataBucketProps,
      serverAccessLogsPrefix: 'output/',
      lifecycleRules: [
        baseRule,
        {
          id: 'ExpireMapRunResults',
          prefix: MAP_RUNS_PREFIX,
          expiration: props.mapRunsExpiration ?? Duration.days(30),
        },
      ],
    });
  }

  /**
   * eventBridgeEnabled makes CDK add its stack-wide BucketNotificationsHandler (a custom resource that calls
   * PutBucketNotificationConfiguration once at deploy time), whose role carries AWSLambdaBasicExecutionRole.
   */
  private acknowledgeNotificationsHandler(): void {
    const stack = Stack.of(this);
    const handler = stack.node.tryFindChild(BUCKET_NOTIFICATIONS_HANDLER_ID);
    if (!handler) {
      throw new MissingConstructError(
        `${BUCKET_NOTIFICATIONS_HANDLER_ID} not found: aws-cdk-lib changed how bucket notifications are deployed`,
      );
    }
    acknowledge(
      handler,
      [managedPolicyFindingId(stack, BASIC_EXECUTION_POLICY_ARN)],
      "CDK's own deploy-time handler for S3 -> EventBridge notifications; AWSLambdaBasicExecutionRole only lets it " +
        'write its logs, and CDK offers no way to give it a custom role.',
    );
  }

  /**
   * Lets `grantee` read corpora under the ingest prefix: s3:GetObject on its keys, s3:ListBucket only for listings
   * under it (a corpus may be a prefix of files), and KMS Decrypt.
   */
  public grantIngestRead(grantee: iam.IGrantable): iam.Grant {
    return grantObjectRead(this.ingestBucket, grantee, `${this.ingestPrefix}*`, this.ingestPrefix);
  }

  /**
   * Lets `grantee` read corpora from other buckets (`ingest.allowedBuckets`): s3:GetObject on any key and
   * s3:ListBucket, on exactly these buckets. An SSE-KMS bucket's key must also let the grantee decrypt (its key
   * policy), which a stack cannot grant on a key it does not own.
   */
  public grantAllowedInputRead(grantee: iam.IGrantable, bucketNames: readonly string[]): void {
    bucketNames.forEach((name, i) => {
      const bucket = s3.Bucket.fromBucketName(this, `AllowedInputBucket${i}`, name);
      grantObjectRead(
        bucket,
        grantee,
        '*',
        true,
        `Corpora may be read from any key of ${name}, a bucket the environment allows as run input (ingest.allowedBuckets); the keys are only known at run time.`,
      );
    });
  }

  /** Lets `grantee` read output objects matching `keyPattern` (`runs/*`). */
  public grantOutputRead(
    grantee: iam.IGrantable,
    keyPattern: string,
    options: OutputReadOptions = {},
  ): iam.Grant {
    return grantObjectRead(this.outputBucket, grantee, keyPattern, options.listBucket ?? true);
  }

  /**
   * Lets `grantee` write output objects matching `keyPattern`: s3:PutObject plus the multipart-upload actions a
   * large upload (lib-storage, the Distributed Map ResultWriter) needs. Deleting is a separate grant.
   */
  public grantOutputWrite(grantee: iam.IGrantable, keyPattern: string): iam.Grant {
    const objects = this.outputBucket.arnForObjects(keyPattern);
    const grant = iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
      resourceArns: [objects],
    });
    // SSE-KMS: GenerateDataKey encrypts new objects; Decrypt is needed to complete multipart uploads.
    this.outputBucket.encryptionKey?.grant(grantee, 'kms:GenerateDataKey', 'kms:Decrypt');
    acknowledgeWildcardResources(
      grantee,
      [objects],
      `Writes are confined to the ${keyPattern} key prefix of the output bucket; object keys are generated per run.`,
    );
    return grant;
  }

  /**
   * Lets `grantee` delete output objects matching `keyPattern` (s3:DeleteObject only). In a versioned bucket this
   * adds a delete marker; earlier versions stay until the noncurrent-version lifecycle expires them.
   */
  public grantOutputDelete(grantee: iam.IGrantable, keyPattern: string): iam.Grant {
    const objects = this.outputBucket.arnForObjects(keyPattern);
    const grant = iam.Grant.addToPrincipal({
      grantee,
      actions: ['s3:DeleteObject'],
      resourceArns: [objects],
    });
    acknowledgeWildcardResources(
      grantee,
      [objects],
      `Deletes are confined to the ${keyPattern} keys of the output bucket; object keys are generated per run.`,
    );
    return grant;
  }
}

function grantObjectRead(
  bucket: s3.IBucket,
  grantee: iam.IGrantable,
  keyPattern: string,
  listBucket: boolean | string,
  reason = `Reads are confined to the ${keyPattern} key prefix; the object keys are only known at run time.`,
): iam.Grant {
  const objects = bucket.arnForObjects(keyPattern);
  const grant = iam.Grant.addToPrincipal({ grantee, actions: ['s3:GetObject'], resourceArns: [objects] });
  if (typeof listBucket === 'string') {
    // ListObjectsV2 is authorized by s3:ListBucket on the bucket; the s3:prefix condition key is the request's
    // Prefix, so only listings under this prefix are allowed
    // (https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html).
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${listBucket}*`] } },
      }),
    );
  } else if (listBucket) {
    iam.Grant.addToPrincipal({ grantee, actions: ['s3:ListBucket'], resourceArns: [bucket.bucketArn] });
  }
  bucket.encryptionKey?.grant(grantee, 'kms:Decrypt');
  acknowledgeWildcardResources(grantee, [objects], reason);
  return grant;
}
