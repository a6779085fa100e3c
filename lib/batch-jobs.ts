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
import { KEY_PATTERNS } from '../lambda/shared/contracts/keys';
import { JOBS_TABLE_KEYS } from '../lambda/shared/contracts/names';
import { grantModelInvoke, modelInvokeResources } from './bedrock-model';
import { ruleTargetDeadLetterQueue } from './events';
import { grantTableKeyUse } from './ledger';
import { acknowledgeWildcardResources } from './nag';

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
  /**
   * The VPC the jobs run in (`vpcConfig` of CreateModelInvocationJob): the service role may then create, tag and delete
   * the jobs' network interfaces in exactly these subnets and security groups.
   * @default no VPC
   */
  readonly vpc?: BatchJobsVpc;
}

/** Subnets and security groups batch jobs run in (they must exist already). */
export interface BatchJobsVpc {
  readonly subnetIds: readonly string[];
  readonly securityGroupIds: readonly string[];
}

/** The tags Bedrock puts on the network interfaces of a batch job in a VPC. */
export const BATCH_ENI_TAGS = { managed: 'BedrockManaged', jobArn: 'BedrockModelInvocationJobArn' } as const;

/**
 * Batch mode's jobs: the table that maps each Bedrock batch job (by ARN) to the task token its shard waits on, and the
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
      partitionKey: { name: JOBS_TABLE_KEYS.partitionKey, type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: JOBS_TABLE_KEYS.ttlAttribute,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      ...(props.encryptionKey
        ? { encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED, encryptionKey: props.encryptionKey }
        : { encryption: dynamodb.TableEncryption.AWS_MANAGED }),
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    this.jobsTable.addGlobalSecondaryIndex({
      indexName: JOBS_TABLE_KEYS.byRunIndex,
      partitionKey: { name: JOBS_TABLE_KEYS.byRunPartitionKey, type: dynamodb.AttributeType.STRING },
      sortKey: { name: JOBS_TABLE_KEYS.byRunSortKey, type: dynamodb.AttributeType.NUMBER },
    });
    // Sparse: only jobs whose wait is open carry `inFlight`, so the reconciler reads a handful of items.
    this.jobsTable.addGlobalSecondaryIndex({
      indexName: JOBS_TABLE_KEYS.inFlightIndex,
      partitionKey: { name: JOBS_TABLE_KEYS.inFlightPartitionKey, type: dynamodb.AttributeType.STRING },
      sortKey: { name: JOBS_TABLE_KEYS.inFlightSortKey, type: dynamodb.AttributeType.STRING },
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
    // The documented service role policy (https://docs.aws.amazon.com/bedrock/latest/userguide/batch-iam-sr.html,
    // "Permissions to access input and output data in Amazon S3") grants s3:GetObject, s3:PutObject and s3:ListBucket on
    // the input and the output location; here each is narrowed to the shard prefixes: read inputs, list inputs and
    // outputs, write outputs.
    this.serviceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [bucket.arnForObjects(KEY_PATTERNS.shardInput)],
      }),
    );
    this.serviceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: {
          StringLike: {
            's3:prefix': [
              KEY_PATTERNS.shardInput,
              'runs/*/shards/*/input/',
              KEY_PATTERNS.shardOutput,
              'runs/*/shards/*/output/',
            ],
          },
        },
      }),
    );
    this.serviceRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:PutObject'],
        resources: [bucket.arnForObjects(KEY_PATTERNS.shardOutput)],
      }),
    );
    // SSE-KMS on the output bucket: the job decrypts its input and encrypts its output with the pipeline's key, and
    // only through S3 (the role's KMS calls are made by S3 as it reads and writes: "Permissions to use a customer
    // managed key", https://docs.aws.amazon.com/bedrock/latest/userguide/batch-iam-sr.html).
    if (props.encryptionKey) {
      this.serviceRole.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
          resources: [props.encryptionKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `s3.${stack.region}.${stack.urlSuffix}` } },
        }),
      );
    }
    if (props.vpc) this.grantVpcAccess(props.vpc, jobArnPattern);
    grantModelInvoke(this.serviceRole, this, props.modelId);
    acknowledgeWildcardResources(
      this.serviceRole,
      [bucket.arnForObjects(KEY_PATTERNS.shardInput), bucket.arnForObjects(KEY_PATTERNS.shardOutput)],
      'Run ids and job ids are chosen at run time: the role may read only shard input files and write only ' +
        'under shard output prefixes of the output bucket, nothing else in it.',
    );
  }

  /**
   * The service role's permissions for jobs in a VPC, as "Protect batch inference jobs using a VPC" documents them
   * (https://docs.aws.amazon.com/bedrock/latest/userguide/batch-vpc.html): describe the network (no resource-level
   * permissions exist for the Describe actions), create network interfaces only in the configured subnets and security
   * groups and only tagged as Bedrock's for a batch job of this account and Region, tag them only on creation with
   * exactly those keys, and manage (permissions, delete) only interfaces in those subnets that carry the job tag.
   */
  private grantVpcAccess(vpc: BatchJobsVpc, jobArnPattern: string): void {
    const stack = Stack.of(this);
    const ec2Arn = (resource: string, name: string): string =>
      stack.formatArn({
        service: 'ec2',
        resource,
        resourceName: name,
        arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
      });
    const networkInterfaces = ec2Arn('network-interface', '*');
    const subnets = vpc.subnetIds.map((id) => ec2Arn('subnet', id));
    const securityGroups = vpc.securityGroupIds.map((id) => ec2Arn('security-group', id));
    const role = this.serviceRole;
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [
          'ec2:DescribeNetworkInterfaces',
          'ec2:DescribeVpcs',
          'ec2:DescribeDhcpOptions',
          'ec2:DescribeSubnets',
          'ec2:DescribeSecurityGroups',
        ],
        resources: ['*'],
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['ec2:CreateNetworkInterface'],
        resources: [networkInterfaces, ...subnets, ...securityGroups],
        conditions: {
          StringEquals: { [`aws:RequestTag/${BATCH_ENI_TAGS.managed}`]: ['true'] },
          ArnEquals: { [`aws:RequestTag/${BATCH_ENI_TAGS.jobArn}`]: [jobArnPattern] },
        },
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: [
          'ec2:CreateNetworkInterfacePermission',
          'ec2:DeleteNetworkInterface',
          'ec2:DeleteNetworkInterfacePermission',
        ],
        resources: ['*'],
        conditions: {
          StringEquals: { 'ec2:Subnet': subnets },
          ArnEquals: { [`ec2:ResourceTag/${BATCH_ENI_TAGS.jobArn}`]: [jobArnPattern] },
        },
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['ec2:CreateTags'],
        resources: [networkInterfaces],
        conditions: {
          StringEquals: { 'ec2:CreateAction': ['CreateNetworkInterface'] },
          'ForAllValues:StringEquals': { 'aws:TagKeys': [BATCH_ENI_TAGS.managed, BATCH_ENI_TAGS.jobArn] },
        },
      }),
    );
    acknowledgeWildcardResources(
      role,
      ['*'],
      'The EC2 Describe actions support no resource-level permissions; the network-interface permissions on "*" ' +
        '(CreateNetworkInterfacePermission, DeleteNetworkInterface, DeleteNetworkInterfacePermission) are held to ' +
        "the configured subnets and to interfaces tagged with a batch job of this account, as Bedrock's VPC guide " +
        'documents them.',
    );
    acknowledgeWildcardResources(
      role,
      [networkInterfaces],
      'Bedrock creates one network interface per job in the VPC, named by EC2 at creation: only with the Bedrock ' +
        'tags of a batch job of this account and Region, in the configured subnets and security groups.',
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
      [JOBS_TABLE_KEYS.inFlightIndex],
    );
  }

  /** Lets `grantee` (an operator's tooling) list a run's jobs: Query on the by-run index, GetItem. */
  public grantReadJobs(grantee: iam.IGrantable): void {
    this.grantJobsTable(grantee, ['dynamodb:GetItem'], [JOBS_TABLE_KEYS.byRunIndex]);
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
    if (this.encryptionKey) grantTableKeyUse(this.encryptionKey, grantee);
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
