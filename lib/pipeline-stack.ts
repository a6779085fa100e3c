import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import * as iam from 'aws-cdk-lib/aws-iam';
import { grantModelAvailabilityRead, grantModelInvoke } from './bedrock-model';
import { BatchJobs, BatchJobTracking } from './batch-jobs';
import type { PipelineConfig } from './config';
import { PipelineEncryption } from './encryption';
import { IngestTrigger, PipelineEventBus } from './events';
import { FailureLane } from './failure-lane';
import { FAILURE_LANE_CONSUMER_TIMEOUT, PipelineFunctions } from './functions';
import { PipelineLedger } from './ledger';
import { toRetentionDays } from './log-retention';
import { acknowledgeWildcardResources } from './nag';
import { MAP_RUNS_PREFIX, PipelineStorage } from './storage';
import { PipelineMonitoring } from './monitoring';
import { ResultsQueue } from './results-queue';
import { PipelineWorkflow } from './workflow';
import { KEY_PATTERNS } from '../lambda/shared/contracts/keys';
import { MAP_STATES, pipelineName } from '../lambda/shared/contracts/names';
import { STACK_OUTPUTS, type StackOutputKey } from '../lambda/shared/contracts/outputs';
import type * as kms from 'aws-cdk-lib/aws-kms';

/** Properties of {@link PipelineStack}. */
export interface PipelineStackProps extends StackProps {
  /** The environment's validated settings. */
  readonly config: PipelineConfig;
  /**
   * The directory the Lambda entry files are relative to.
   * @default the repository root
   */
  readonly projectRoot?: string;
}

/**
 * One environment of the corpus pipeline. It creates the constructs and wires them with grants only; each
 * construct owns its resources' settings.
 */
export class PipelineStack extends Stack {
  /** Optional customer managed key. */
  public readonly encryption: PipelineEncryption;
  /** Ingest, output and access-logs buckets. */
  public readonly storage: PipelineStorage;
  /** Record ledger and idempotency tables. */
  public readonly ledger: PipelineLedger;
  /** Failure queue and its dead-letter queue. */
  public readonly failureLane: FailureLane;
  /** The pipeline's own event bus. */
  public readonly bus: PipelineEventBus;
  /** Plan, ConverseBatch and Finalize. */
  public readonly functions: PipelineFunctions;
  /** The state machine. */
  public readonly workflow: PipelineWorkflow;
  /** The S3 upload -> workflow rule. */
  public readonly ingestTrigger: IngestTrigger;
  /** Each published record, once, for downstream stages (when enabled in config). */
  public readonly resultsQueue: ResultsQueue | undefined;
  /** Dashboard, alarms and their topic. */
  public readonly monitoring: PipelineMonitoring;
  /** Batch mode: the jobs table and Bedrock's service role. */
  public readonly batchJobs: BatchJobs;
  /** Batch mode: the job state-change rule and the reconciler's schedule. */
  public readonly batchJobTracking: BatchJobTracking;

  constructor(scope: Construct, id: string, props: PipelineStackProps) {
    super(scope, id, props);
    const { config } = props;
    const name = pipelineName(config.envName);
    const removalPolicy = config.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;
    Tags.of(this).add('project', 'bedrock-corpus-pipeline');
    Tags.of(this).add('environment', config.envName);

    this.encryption = new PipelineEncryption(this, 'Encryption', {
      customerManagedKey: config.kms.customerManagedKey,
      removalPolicy,
      aliasName: `corpus-pipeline-${config.envName}`,
    });
    const key = this.encryption.key;
    this.storage = new PipelineStorage(this, 'Storage', {
      ...(key ? { encryptionKey: key } : {}),
      removalPolicy,
      ingestPrefix: config.ingestPrefix,
    });
    this.ledger = new PipelineLedger(this, 'Ledger', {
      ...(key ? { encryptionKey: key } : {}),
      removalPolicy,
    });
    this.failureLane = new FailureLane(this, 'FailureLane', {
      ...(key ? { encryptionKey: key } : {}),
      maxReceiveCount: config.failureLane.maxReceiveCount,
      consumerTimeout: FAILURE_LANE_CONSUMER_TIMEOUT,
      removalPolicy,
    });
    this.bus = new PipelineEventBus(this, 'Events', { eventBusName: name });
    this.resultsQueue = config.resultsQueue.enabled
      ? new ResultsQueue(this, 'ResultsQueue', { ...(key ? { encryptionKey: key } : {}), removalPolicy })
      : undefined;
    this.batchJobs = new BatchJobs(this, 'BatchJobs', {
      modelId: config.modelId,
      outputBucket: this.storage.outputBucket,
      jobNamePrefix: config.batchJobNamePrefix,
      ...(key ? { encryptionKey: key } : {}),
      ...(config.batch.vpc ? { vpc: config.batch.vpc } : {}),
      removalPolicy,
    });

    this.functions = this.createFunctions(props, key, removalPolicy);
    this.grantFunctionAccess(config);
    this.workflow = this.createWorkflow(name, config, key, removalPolicy);
    this.batchJobTracking = new BatchJobTracking(this, 'BatchJobTracking', {
      jobNamePrefix: config.batchJobNamePrefix,
      jobStateHandler: this.functions.jobState.lambdaFunction,
      reconciler: this.functions.reconcile.lambdaFunction,
      reconcileInterval: Duration.minutes(config.batch.reconcileIntervalMinutes),
      ...(key ? { encryptionKey: key } : {}),
      removalPolicy,
    });
    // ItemReader reads the items file under runs/; ResultWriter writes (and, per its documented policy, reads back)
    // under map-runs/.
    this.storage.grantOutputRead(this.workflow.stateMachine, KEY_PATTERNS.runs, { listBucket: false });
    this.storage.grantOutputWrite(this.workflow.stateMachine, `${MAP_RUNS_PREFIX}*`);
    this.storage.grantOutputRead(this.workflow.stateMachine, `${MAP_RUNS_PREFIX}*`, { listBucket: false });

    this.ingestTrigger = new IngestTrigger(this, 'IngestTrigger', {
      ruleName: `${name}-ingest`.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64),
      bucket: this.storage.ingestBucket,
      keyPrefix: config.ingestPrefix,
      stateMachine: this.workflow.stateMachine,
      ...(key ? { encryptionKey: key } : {}),
      removalPolicy,
    });

    this.monitoring = this.createMonitoring(name, config, key);
    this.addOutputs(config);
  }

  /** The functions, with the environment each one's handler reads. */
  private createFunctions(
    props: PipelineStackProps,
    key: kms.IKey | undefined,
    removalPolicy: RemovalPolicy,
  ): PipelineFunctions {
    return new PipelineFunctions(this, 'Functions', {
      config: props.config,
      outputBucket: this.storage.outputBucket,
      ingestBucket: this.storage.ingestBucket,
      ingestPrefix: this.storage.ingestPrefix,
      ledgerTable: this.ledger.ledgerTable,
      runsTable: this.ledger.runsTable,
      idempotencyTable: this.ledger.idempotencyTable,
      failureQueue: this.failureLane.queue,
      failureDeadLetterQueue: this.failureLane.deadLetterQueue,
      eventBus: this.bus.eventBus,
      jobsTable: this.batchJobs.jobsTable,
      ...(this.resultsQueue ? { resultsQueue: this.resultsQueue.queue } : {}),
      batchServiceRole: this.batchJobs.serviceRole,
      ...(key ? { batchOutputKey: key, logEncryptionKey: key } : {}),
      removalPolicy,
      ...(props.projectRoot ? { projectRoot: props.projectRoot } : {}),
    });
  }

  /** Grants each function exactly what it uses (in an order the template keeps: policies list grants in call order). */
  private grantFunctionAccess(config: PipelineConfig): void {
    const { submitJob, jobState, reconcile, converseItems } = this.functions;
    this.grantPlanAccess(config);
    this.grantConverseAccess(config);
    this.grantFinalizeAccess();
    this.batchJobs.grantSubmit(submitJob);
    this.batchJobs.grantFollow(jobState);
    this.batchJobs.grantReconcile(reconcile);

    this.grantCollectAccess();
    this.grantFailureLaneAccess(config);
    if (this.resultsQueue) {
      for (const producer of [
        this.functions.converse,
        this.functions.collect,
        this.functions.failureLaneConsumer,
        this.functions.finalize,
      ])
        this.resultsQueue.grantPublish(producer);
    }

    this.storage.grantOutputRead(converseItems, KEY_PATTERNS.runs);
    this.storage.grantOutputWrite(converseItems, KEY_PATTERNS.runs);
  }

  /** Plan reads the corpus, the ledger and the batch quotas, and writes the run's items and plan. */
  private grantPlanAccess(config: PipelineConfig): void {
    const { plan } = this.functions;
    this.storage.grantIngestRead(plan);
    this.storage.grantAllowedInputRead(plan, config.ingest.allowedBuckets);
    this.storage.grantOutputRead(plan, KEY_PATTERNS.runs);
    this.storage.grantOutputWrite(plan, KEY_PATTERNS.runs);
    this.ledger.grantLedgerLookup(plan);
    this.ledger.grantIdempotency(plan);
    this.failureLane.grantSendToDeadLetterQueue(plan);
    if (config.batch.readServiceQuotas) {
      plan.grantPrincipal.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['servicequotas:ListServiceQuotas', 'servicequotas:ListAWSDefaultServiceQuotas'],
          resources: ['*'],
        }),
      );
      acknowledgeWildcardResources(
        plan,
        ['*'],
        'Service Quotas list actions support no resource-level permissions; Plan reads the Bedrock batch quotas ' +
          'of the model to cut shards within them.',
      );
    }

    // Plan asks Bedrock once whether the model can serve the run (retired, unknown in the Region, access not enabled).
    grantModelAvailabilityRead(plan, this, config.modelId);
  }

  /** ConverseBatch calls the model and publishes through the ledger and the run's files. */
  private grantConverseAccess(config: PipelineConfig): void {
    const { converse } = this.functions;
    grantModelInvoke(converse, this, config.modelId);
    // A batch reads its attempts history, and rewrites (or removes) its results and failures files whole.
    this.storage.grantOutputRead(converse, KEY_PATTERNS.runs);
    this.storage.grantOutputWrite(converse, KEY_PATTERNS.runs);
    this.storage.grantOutputDelete(converse, KEY_PATTERNS.runResults);
    this.storage.grantOutputDelete(converse, KEY_PATTERNS.runFailures);
    this.ledger.grantLedgerRecord(converse);
    this.failureLane.grantSendToQueue(converse);
    this.failureLane.grantSendToDeadLetterQueue(converse);
  }

  /** Finalize writes the manifest and announces the run. */
  private grantFinalizeAccess(): void {
    const { finalize } = this.functions;
    // Finalize finishes the units that did not (as those units: ledger, their files, the failure lane) and keeps the
    // run's manifest revisions.
    this.storage.grantOutputRead(finalize, KEY_PATTERNS.runs);
    this.storage.grantOutputWrite(finalize, KEY_PATTERNS.runs);
    this.storage.grantOutputDelete(finalize, KEY_PATTERNS.runResults);
    this.storage.grantOutputDelete(finalize, KEY_PATTERNS.runFailures);
    this.storage.grantOutputDelete(finalize, KEY_PATTERNS.runRedrive);
    this.storage.grantOutputRead(finalize, `${MAP_RUNS_PREFIX}*`);
    this.bus.grantPutEvents(finalize);
    this.ledger.grantIdempotency(finalize);
    this.ledger.grantLedgerRecord(finalize);
    this.ledger.grantRunState(finalize);
    this.failureLane.grantSendToQueue(finalize);
    this.failureLane.grantSendToDeadLetterQueue(finalize);
  }

  /** Collect streams a batch job's output through the ledger. */
  private grantCollectAccess(): void {
    const { collect } = this.functions;
    // Collect reads the shard input files and the job's output, writes results, failures, redrive and marker files.
    this.storage.grantOutputRead(collect, KEY_PATTERNS.runs);
    this.storage.grantOutputWrite(collect, KEY_PATTERNS.runs);
    this.storage.grantOutputDelete(collect, KEY_PATTERNS.runResults);
    this.storage.grantOutputDelete(collect, KEY_PATTERNS.runFailures);
    this.storage.grantOutputDelete(collect, KEY_PATTERNS.runRedrive);
    this.ledger.grantLedgerRecord(collect);
    // Collect sends only final failures (to the DLQ, with their reason): retryable ones go through Converse.
    this.failureLane.grantSendToDeadLetterQueue(collect);
  }

  /** The failure-lane consumer retries failures through Converse; the failure queue is its event source. */
  private grantFailureLaneAccess(config: PipelineConfig): void {
    const laneConsumer = this.functions.failureLaneConsumer;
    // The failure-lane consumer: an SQS event source reporting partial batch failures; few invocations at once so
    // the lane does not compete with live runs for the model's quota.
    grantModelInvoke(laneConsumer, this, config.modelId);
    this.storage.grantOutputRead(laneConsumer, KEY_PATTERNS.runs);
    this.storage.grantOutputWrite(laneConsumer, KEY_PATTERNS.runs);
    // A redrive that succeeds removes the record's earlier lane failure line.
    this.storage.grantOutputDelete(laneConsumer, KEY_PATTERNS.runFailures);
    this.ledger.grantLedgerRecord(laneConsumer);
    this.ledger.grantRunState(laneConsumer);
    this.bus.grantPutEvents(laneConsumer);
    this.failureLane.grantSendToDeadLetterQueue(laneConsumer);
    laneConsumer.lambdaFunction.addEventSource(
      new SqsEventSource(this.failureLane.queue, {
        batchSize: config.failureLane.consumerBatchSize,
        maxBatchingWindow: Duration.seconds(5),
        reportBatchItemFailures: true,
        maxConcurrency: config.failureLane.consumerConcurrency,
      }),
    );
  }

  /** The state machine, allowed to invoke its tasks' functions and answered by the functions that resume waits. */
  private createWorkflow(
    name: string,
    config: PipelineConfig,
    key: kms.IKey | undefined,
    removalPolicy: RemovalPolicy,
  ): PipelineWorkflow {
    const { plan, converse, finalize, submitJob, jobState, reconcile, collect, converseItems } =
      this.functions;
    const workflow = new PipelineWorkflow(this, 'Workflow', {
      stateMachineName: name,
      planFunctionArn: plan.functionArn,
      converseFunctionArn: converse.functionArn,
      finalizeFunctionArn: finalize.functionArn,
      submitJobFunctionArn: submitJob.functionArn,
      collectFunctionArn: collect.functionArn,
      converseItemsFunctionArn: converseItems.functionArn,
      outputBucket: this.storage.outputBucket,
      logRetention: toRetentionDays(config.logRetentionDays),
      ...(key ? { logEncryptionKey: key } : {}),
      removalPolicy,
    });
    const stateMachine = workflow.stateMachine;
    plan.grantInvoke(stateMachine);
    converse.grantInvoke(stateMachine);
    finalize.grantInvoke(stateMachine);
    submitJob.grantInvoke(stateMachine);
    collect.grantInvoke(stateMachine);
    converseItems.grantInvoke(stateMachine);
    workflow.grantTaskResponse(jobState);
    workflow.grantTaskResponse(reconcile);
    workflow.grantTaskResponse(submitJob);
    return workflow;
  }

  /** Dashboard and alarms, with what to do about each dead-letter queue. */
  private createMonitoring(
    name: string,
    config: PipelineConfig,
    key: kms.IKey | undefined,
  ): PipelineMonitoring {
    return new PipelineMonitoring(this, 'Monitoring', {
      pipelineName: name,
      stateMachine: this.workflow.stateMachine,
      functions: this.functions,
      failureQueue: this.failureLane.queue,
      deadLetterQueues: {
        FailureLane: {
          queue: this.failureLane.deadLetterQueue,
          whatToDo:
            'corpus failures RUN names each record and reason; after the fix, corpus redrive --env E.',
        },
        IngestEvents: {
          queue: this.ingestTrigger.deadLetterQueue,
          whatToDo:
            'An upload did not start a run: corpus start --env E --corpus s3://BUCKET/KEY, then purge the queue.',
        },
        JobStateEvents: {
          queue: this.batchJobTracking.deadLetterQueue,
          whatToDo:
            'A batch job event was lost: corpus reconcile --env E resumes its shard; then purge the queue.',
        },
        ...(this.resultsQueue
          ? {
              ResultsQueue: {
                queue: this.resultsQueue.deadLetterQueue,
                whatToDo:
                  'The downstream consumer keeps failing on results: fix it, then redrive from the SQS console.',
              },
            }
          : {}),
      },
      mapRunLabels: [MAP_STATES.batchJobs, MAP_STATES.fanOut],
      ...(key ? { encryptionKey: key } : {}),
      ...(config.monitoring.alarmEmail ? { alarmEmail: config.monitoring.alarmEmail } : {}),
      jobSla: Duration.hours(config.monitoring.jobSlaHours),
      errorRatePercent: config.monitoring.errorRatePercent,
      reconcileInterval: Duration.minutes(config.batch.reconcileIntervalMinutes),
    });
  }

  /** The outputs the CLI and the local runtime read (lambda/shared/contracts/outputs.ts names them). */
  private addOutputs(config: PipelineConfig): void {
    const outputs: Partial<Record<StackOutputKey, string>> = {
      [STACK_OUTPUTS.ingestBucket]: this.storage.ingestBucket.bucketName,
      [STACK_OUTPUTS.ingestPrefix]: config.ingestPrefix,
      [STACK_OUTPUTS.outputBucket]: this.storage.outputBucket.bucketName,
      [STACK_OUTPUTS.stateMachineArn]: this.workflow.stateMachine.stateMachineArn,
      [STACK_OUTPUTS.workflowLogGroup]: this.workflow.logGroup.logGroupName,
      [STACK_OUTPUTS.ledgerTable]: this.ledger.ledgerTable.tableName,
      [STACK_OUTPUTS.runsTable]: this.ledger.runsTable.tableName,
      [STACK_OUTPUTS.idempotencyTable]: this.ledger.idempotencyTable.tableName,
      [STACK_OUTPUTS.failureQueueUrl]: this.failureLane.queue.queueUrl,
      [STACK_OUTPUTS.failureDlqUrl]: this.failureLane.deadLetterQueue.queueUrl,
      [STACK_OUTPUTS.eventBus]: this.bus.eventBus.eventBusName,
      [STACK_OUTPUTS.jobsTable]: this.batchJobs.jobsTable.tableName,
      [STACK_OUTPUTS.batchServiceRole]: this.batchJobs.serviceRole.roleArn,
      [STACK_OUTPUTS.reconcileFunction]: this.functions.reconcile.lambdaFunction.functionName,
      [STACK_OUTPUTS.alarmTopic]: this.monitoring.alarmTopic.topicArn,
    };
    if (this.resultsQueue) outputs[STACK_OUTPUTS.resultsQueueUrl] = this.resultsQueue.queue.queueUrl;
    for (const [outputId, value] of Object.entries(outputs)) {
      new CfnOutput(this, outputId, { value });
    }
  }
}
