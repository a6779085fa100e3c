import { ArnFormat, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { grantModelInvoke, modelInvokeResources } from './bedrock-model';
import { ruleTargetDeadLetterQueue } from './events';
import { KMS_WILDCARD_ACTIONS, KMS_WILDCARD_REASON } from './ledger';
import { acknowledgeWildcardActions, acknowledgeWildcardResources } from './nag';

/** Key patterns of a shard's job input and output in the output bucket (see lambda/shared/sharding.ts). */
export const SHARD_INPUT_KEY_PATTERN = 'runs/*/shards/*/input/*';
/** The job writes under `<outputPrefix><jobId>/`. */
export const SHARD_OUTPUT_KEY_PATTERN = 'runs/*/shards/*/output/*';

/** The jobs table's key and index names (lambda/shared/batch-jobs.ts reads the same). */
export const JOBS_TABLE_SCHEMA = {
  partitionKey: 'jobArn',
  byRunIndex: 'by-run',
  inFlightIndex: 'in-flight',
  ttlAttribute: 'expiresAt',
} as const;

/** The EventBridge `source` and `detail-type` of Bedrock's batch job events. */
export const BATCH_JOB_EVENT = { source: 'aws.bedrock', detailType: 'Batch Inference Job State Change' };

/** Properties of {@link BatchJobs}. */
export interface BatchJobsProps {
  /** The model (or inference profile) the jobs run. */
  readonly modelId: string;
  /** The bucket holding the shards' input files and the jobs' output. */
  readonly outputBucket: s3.IBucket;
  /** Job names start with `<jobNamePrefix>-`: the state-change rule matches only this environment's jobs. */
  readonly jobNamePrefix: string;
  /**
   * Customer managed key of the bucket and table.
   * @default AWS managed keys
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * What happens to the jobs table on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * Mode A's jobs: the table that maps each Bedrock batch job (by ARN) to the task token its shard waits on, and the
 * service role Bedrock assumes to run the jobs: it reads only shard input files, writes only shard output
 * prefixes, and invokes only the configured model.
 */
export class BatchJobs extends Construct {
  /** One item per job: run, shard, task token, status; indexes by run and for jobs still waited on. */
  public readonly jobsTable: dynamodb.Table;
  /** The role passed to CreateModelInvocationJob. */
  public readonly serviceRole: iam.Role;
  /** The prefix of this environment's job names. */
  public readonly jobNamePrefix: string;
  private readonly modelId: string;
  private readonly encryptionKey: kms.IKey | undefined;

  constructor(scope: Construct, id: string, props: BatchJobsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.modelId = props.modelId;
    this.encryptionKey = props.encryptionKey;
    this.jobNamePrefix = props.jobNamePrefix;
    this.jobsTable = new dynamodb.Table(this, 'JobsTable', {
      partitionKey: { name: JOBS_TABLE_SCHEMA.partitionKey, type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: JOBS_TABLE_SCHEMA.ttlAttribute,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      ...(props.encryptionKey
        ? { encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED, encryptionKey: props.encryptionKey }
        : { encryption: dynamodb.TableEncryption.AWS_MANAGED }),
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    this.jobsTable.addGlobalSecondaryIndex({
      indexName: JOBS_TABLE_SCHEMA.byRunIndex,
      partitionKey: { name: 'runId', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'shard', type: dynamodb.AttributeType.NUMBER },
    });
    // Sparse: only jobs whose wait is open carry `inFlight`, so the reconciler reads a handful of items.
    this.jobsTable.addGlobalSecondaryIndex({
      indexName: JOBS_TABLE_SCHEMA.inFlightIndex,
      partitionKey: { name: 'inFlight', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'submittedAt', type: dynamodb.AttributeType.STRING },
    });

    const jobArnPattern = stack.formatArn({
      service: 'bedrock',
      resource: 'model-invocation-job',
      resourceName: '*',
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
    this.serviceRole = new iam.Role(this, 'ServiceRole', {
      description: 'Assumed by Amazon Bedrock to run the corpus pipeline batch inference jobs',
      // Confused-deputy protection: only Bedrock jobs of this account and Region may assume it.
      assumedBy: new iam.ServicePrincipal('bedrock.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: { 'aws:SourceArn': jobArnPattern },
        },
      }),
    });
    const bucket = props.outputBucket;
    this.serviceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [bucket.arnForObjects(SHARD_INPUT_KEY_PATTERN)],
      }),
    );
    this.serviceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [SHARD_INPUT_KEY_PATTERN, 'runs/*/shards/*/input/'] } },
      }),
    );
    this.serviceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:PutObject'],
        resources: [bucket.arnForObjects(SHARD_OUTPUT_KEY_PATTERN)],
      }),
    );
    // SSE-KMS on the output bucket: the job decrypts its input and encrypts its output with the pipeline's key.
    props.encryptionKey?.grant(this.serviceRole, 'kms:Decrypt', 'kms:GenerateDataKey');
    grantModelInvoke(this.serviceRole, this, props.modelId);
    acknowledgeWildcardResources(
      this.serviceRole,
      [bucket.arnForObjects(SHARD_INPUT_KEY_PATTERN), bucket.arnForObjects(SHARD_OUTPUT_KEY_PATTERN)],
      'Run ids and job ids are chosen at run time: the role may read only shard input files and write only ' +
        'under shard output prefixes of the output bucket, nothing else in it.',
    );
  }

  /**
   * Lets `grantee` (SubmitJob) create, find and tag this environment's jobs with the service role, and record them:
   * bedrock:CreateModelInvocationJob on job ARNs and the model, GetModelInvocationJob / TagResource on job ARNs,
   * ListModelInvocationJobs (no resource-level permissions exist for it), iam:PassRole to Bedrock only, and
   * UpdateItem on the jobs table.
   */
  public grantSubmit(grantee: iam.IGrantable): void {
    const jobArns = this.jobArnPattern();
    const model = modelInvokeResources(this, this.modelId);
    const principal = grantee.grantPrincipal;
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['bedrock:CreateModelInvocationJob'],
        resources: [jobArns, ...model.arns],
      }),
    );
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['bedrock:GetModelInvocationJob', 'bedrock:TagResource'],
        resources: [jobArns],
      }),
    );
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['bedrock:ListModelInvocationJobs'], resources: ['*'] }),
    );
    principal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['iam:PassRole'],
        resources: [this.serviceRole.roleArn],
        conditions: { StringEquals: { 'iam:PassedToService': 'bedrock.amazonaws.com' } },
      }),
    );
    this.grantJobsTable(grantee, ['dynamodb:UpdateItem'], []);
    acknowledgeWildcardResources(
      grantee,
      [jobArns, ...model.wildcardArns],
      'Bedrock names batch jobs by id at creation: the wildcard covers only batch job ARNs of this account and ' +
        'Region (and, for a cross-Region inference profile, the one model in the Regions it routes to).',
    );
    acknowledgeWildcardResources(
      grantee,
      ['*'],
      'bedrock:ListModelInvocationJobs supports no resource-level permissions; SubmitJob lists by job name to ' +
        'find the job a retried submit already created.',
    );
  }

  /** Lets `grantee` (the job-state handler) read jobs: GetModelInvocationJob, jobs table GetItem / UpdateItem. */
  public grantFollow(grantee: iam.IGrantable): void {
    this.grantJobActions(grantee, ['bedrock:GetModelInvocationJob']);
    this.grantJobsTable(grantee, ['dynamodb:GetItem', 'dynamodb:UpdateItem'], []);
  }

  /**
   * Lets `grantee` (the reconciler) read and stop jobs (GetModelInvocationJob, StopModelInvocationJob) and list the
   * jobs in flight (Query on the in-flight index, GetItem / UpdateItem on the table).
   */
  public grantReconcile(grantee: iam.IGrantable): void {
    this.grantJobActions(grantee, ['bedrock:GetModelInvocationJob', 'bedrock:StopModelInvocationJob']);
    this.grantJobsTable(
      grantee,
      ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
      [JOBS_TABLE_SCHEMA.inFlightIndex],
    );
  }

  /** Lets `grantee` (an operator's tooling) list a run's jobs: Query on the by-run index, GetItem. */
  public grantReadJobs(grantee: iam.IGrantable): void {
    this.grantJobsTable(grantee, ['dynamodb:GetItem'], [JOBS_TABLE_SCHEMA.byRunIndex]);
  }

  private grantJobActions(grantee: iam.IGrantable, actions: string[]): void {
    const jobArns = this.jobArnPattern();
    grantee.grantPrincipal.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources: [jobArns] }));
    acknowledgeWildcardResources(
      grantee,
      [jobArns],
      'Batch job ids are chosen by Bedrock at creation: the wildcard covers only batch job ARNs of this account ' +
        'and Region.',
    );
  }

  /** `actions` on the jobs table, and Query on the named indexes: nothing wider. */
  private grantJobsTable(grantee: iam.IGrantable, actions: string[], queryIndexes: string[]): void {
    const table = this.jobsTable.tableArn;
    iam.Grant.addToPrincipal({ grantee, actions, resourceArns: [table] });
    if (queryIndexes.length > 0) {
      iam.Grant.addToPrincipal({
        grantee,
        actions: ['dynamodb:Query'],
        resourceArns: queryIndexes.map((index) => `${table}/index/${index}`),
      });
    }
    if (this.encryptionKey) {
      this.encryptionKey.grantEncryptDecrypt(grantee);
      acknowledgeWildcardActions(grantee, KMS_WILDCARD_ACTIONS, KMS_WILDCARD_REASON);
    }
  }

  private jobArnPattern(): string {
    return Stack.of(this).formatArn({
      service: 'bedrock',
      resource: 'model-invocation-job',
      resourceName: '*',
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
  }
}

/** Properties of {@link BatchJobTracking}. */
export interface BatchJobTrackingProps {
  /** Job names start with `<jobNamePrefix>-`. */
  readonly jobNamePrefix: string;
  /** Resumes a shard's wait on a terminal state-change event. */
  readonly jobStateHandler: lambda.IFunction;
  /** Resumes jobs whose event never came and heartbeats the others. */
  readonly reconciler: lambda.IFunction;
  /** How often the reconciler runs. */
  readonly reconcileInterval: Duration;
  /**
   * Customer managed key for the dead-letter queue.
   * @default SQS-managed server-side encryption
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * What happens to the dead-letter queue on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * Completion without polling: an EventBridge rule on the default bus (where Bedrock publishes) for this environment's
 * `Batch Inference Job State Change` events, targeting the job-state handler with retries and a dead-letter queue;
 * and a schedule for the reconciler, because event delivery is best effort.
 */
export class BatchJobTracking extends Construct {
  /** The state-change rule. */
  public readonly stateChangeRule: events.Rule;
  /** The reconciler's schedule. */
  public readonly reconcileSchedule: events.Rule;
  /** Events that could not be delivered to the handler. */
  public readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: BatchJobTrackingProps) {
    super(scope, id);
    this.deadLetterQueue = ruleTargetDeadLetterQueue(this, 'DeadLetterQueue', {
      ...props,
      reason:
        'This queue is itself the dead-letter queue of the job-state rule target (the reconciler also covers any ' +
        'event that lands here).',
    });
    this.stateChangeRule = new events.Rule(this, 'StateChangeRule', {
      description: `Resumes the shard waiting on a Bedrock batch job named ${props.jobNamePrefix}-* when it ends`,
      eventPattern: {
        source: [BATCH_JOB_EVENT.source],
        detailType: [BATCH_JOB_EVENT.detailType],
        detail: {
          batchJobName: [{ prefix: `${props.jobNamePrefix}-` }],
          status: ['Completed', 'PartiallyCompleted', 'Failed', 'Stopped', 'Expired'],
        },
      },
    });
    this.stateChangeRule.addTarget(
      new targets.LambdaFunction(props.jobStateHandler, {
        deadLetterQueue: this.deadLetterQueue,
        retryAttempts: 10,
        maxEventAge: Duration.hours(6),
      }),
    );
    this.reconcileSchedule = new events.Rule(this, 'ReconcileSchedule', {
      description: 'Resumes batch jobs whose state-change event never came, and keeps long waits alive',
      schedule: events.Schedule.rate(props.reconcileInterval),
    });
    this.reconcileSchedule.addTarget(new targets.LambdaFunction(props.reconciler, { retryAttempts: 2 }));
  }
}
