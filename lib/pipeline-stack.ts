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

/** The output bucket prefix each run writes under (`runs/<runId>/...`). */
export const RUNS_KEY_PATTERN = 'runs/*';
/** The failure files of every run (`runs/<runId>/failures/<part>.jsonl`). */
export const RUN_FAILURES_KEY_PATTERN = 'runs/*/failures/*';
/** The results files of every run (`runs/<runId>/results/<part>.jsonl`). */
export const RUN_RESULTS_KEY_PATTERN = 'runs/*/results/*';
/** Mode A's re-drive files of every run (`runs/<runId>/redrive/shard-<n>.jsonl`). */
export const RUN_REDRIVE_KEY_PATTERN = 'runs/*/redrive/*';

/** The name shared by the stack, the state machine and the event bus of one environment. */
export function pipelineName(envName: string): string {
  return `CorpusPipeline-${envName}`;
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
  /** Mode A: the jobs table and Bedrock's service role. */
  public readonly batchJobs: BatchJobs;
  /** Mode A: the job state-change rule and the reconciler's schedule. */
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

    this.functions = new PipelineFunctions(this, 'Functions', {
      config,
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
    const { plan, converse, finalize, submitJob, jobState, reconcile, collect, converseItems } =
      this.functions;
    const laneConsumer = this.functions.failureLaneConsumer;

    this.storage.grantIngestRead(plan);
    this.storage.grantAllowedInputRead(plan, config.ingest.allowedBuckets);
    this.storage.grantOutputRead(plan, RUNS_KEY_PATTERN);
    this.storage.grantOutputWrite(plan, RUNS_KEY_PATTERN);
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

    grantModelInvoke(converse, this, config.modelId);
    // A batch reads its attempts history, and rewrites (or removes) its results and failures files whole.
    this.storage.grantOutputRead(converse, RUNS_KEY_PATTERN);
    this.storage.grantOutputWrite(converse, RUNS_KEY_PATTERN);
    this.storage.grantOutputDelete(converse, RUN_RESULTS_KEY_PATTERN);
    this.storage.grantOutputDelete(converse, RUN_FAILURES_KEY_PATTERN);
    this.ledger.grantLedgerRecord(converse);
    this.failureLane.grantSendToQueue(converse);
    this.failureLane.grantSendToDeadLetterQueue(converse);

    // Finalize finishes the units that did not (as those units: ledger, their files, the failure lane) and keeps the
    // run's manifest revisions.
    this.storage.grantOutputRead(finalize, RUNS_KEY_PATTERN);
    this.storage.grantOutputWrite(finalize, RUNS_KEY_PATTERN);
    this.storage.grantOutputDelete(finalize, RUN_RESULTS_KEY_PATTERN);
    this.storage.grantOutputDelete(finalize, RUN_FAILURES_KEY_PATTERN);
    this.storage.grantOutputDelete(finalize, RUN_REDRIVE_KEY_PATTERN);
    this.storage.grantOutputRead(finalize, `${MAP_RUNS_PREFIX}*`);
    this.bus.grantPutEvents(finalize);
    this.ledger.grantIdempotency(finalize);
    this.ledger.grantLedgerRecord(finalize);
    this.ledger.grantRunState(finalize);
    this.failureLane.grantSendToQueue(finalize);
    this.failureLane.grantSendToDeadLetterQueue(finalize);

    this.batchJobs.grantSubmit(submitJob);
    this.batchJobs.grantFollow(jobState);
    this.batchJobs.grantReconcile(reconcile);

    // Collect reads the shard input files and the job's output, writes results, failures, redrive and marker files.
    this.storage.grantOutputRead(collect, RUNS_KEY_PATTERN);
    this.storage.grantOutputWrite(collect, RUNS_KEY_PATTERN);
    this.storage.grantOutputDelete(collect, RUN_RESULTS_KEY_PATTERN);
    this.storage.grantOutputDelete(collect, RUN_FAILURES_KEY_PATTERN);
    this.storage.grantOutputDelete(collect, RUN_REDRIVE_KEY_PATTERN);
    this.ledger.grantLedgerRecord(collect);
    // Collect sends only final failures (to the DLQ, with their reason): retryable ones go through Converse.
    this.failureLane.grantSendToDeadLetterQueue(collect);

    // The failure-lane consumer: an SQS event source reporting partial batch failures; few invocations at once so
    // the lane does not compete with live runs for the model's quota.
    grantModelInvoke(laneConsumer, this, config.modelId);
    this.storage.grantOutputRead(laneConsumer, RUNS_KEY_PATTERN);
    this.storage.grantOutputWrite(laneConsumer, RUNS_KEY_PATTERN);
    // A redrive that succeeds removes the record's earlier lane failure line.
    this.storage.grantOutputDelete(laneConsumer, RUN_FAILURES_KEY_PATTERN);
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

    if (this.resultsQueue) {
      for (const producer of [converse, collect, laneConsumer, finalize])
        this.resultsQueue.grantPublish(producer);
    }

    this.storage.grantOutputRead(converseItems, RUNS_KEY_PATTERN);
    this.storage.grantOutputWrite(converseItems, RUNS_KEY_PATTERN);

    this.workflow = new PipelineWorkflow(this, 'Workflow', {
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
    const stateMachine = this.workflow.stateMachine;
    plan.grantInvoke(stateMachine);
    converse.grantInvoke(stateMachine);
    finalize.grantInvoke(stateMachine);
    submitJob.grantInvoke(stateMachine);
    collect.grantInvoke(stateMachine);
    converseItems.grantInvoke(stateMachine);
    this.workflow.grantTaskResponse(jobState);
    this.workflow.grantTaskResponse(reconcile);
    this.workflow.grantTaskResponse(submitJob);

    this.batchJobTracking = new BatchJobTracking(this, 'BatchJobTracking', {
      jobNamePrefix: config.batchJobNamePrefix,
      jobStateHandler: jobState.lambdaFunction,
      reconciler: reconcile.lambdaFunction,
      reconcileInterval: Duration.minutes(config.batch.reconcileIntervalMinutes),
      ...(key ? { encryptionKey: key } : {}),
      removalPolicy,
    });
    // ItemReader reads the items file under runs/; ResultWriter writes (and, per its documented policy, reads back)
    // under map-runs/.
    this.storage.grantOutputRead(stateMachine, RUNS_KEY_PATTERN, { listBucket: false });
    this.storage.grantOutputWrite(stateMachine, `${MAP_RUNS_PREFIX}*`);
    this.storage.grantOutputRead(stateMachine, `${MAP_RUNS_PREFIX}*`, { listBucket: false });

    this.ingestTrigger = new IngestTrigger(this, 'IngestTrigger', {
      ruleName: `${name}-ingest`.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64),
      bucket: this.storage.ingestBucket,
      keyPrefix: config.ingestPrefix,
      stateMachine,
      ...(key ? { encryptionKey: key } : {}),
      removalPolicy,
    });

    this.monitoring = new PipelineMonitoring(this, 'Monitoring', {
      pipelineName: name,
      stateMachine,
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
      mapRunLabels: ['BatchJobs', 'FanOut'],
      ...(key ? { encryptionKey: key } : {}),
      ...(config.monitoring.alarmEmail ? { alarmEmail: config.monitoring.alarmEmail } : {}),
      jobSla: Duration.hours(config.monitoring.jobSlaHours),
      errorRatePercent: config.monitoring.errorRatePercent,
      reconcileInterval: Duration.minutes(config.batch.reconcileIntervalMinutes),
    });

    const outputs: Record<string, string> = {
      IngestBucketName: this.storage.ingestBucket.bucketName,
      IngestPrefix: config.ingestPrefix,
      OutputBucketName: this.storage.outputBucket.bucketName,
      StateMachineArn: stateMachine.stateMachineArn,
      WorkflowLogGroupName: this.workflow.logGroup.logGroupName,
      LedgerTableName: this.ledger.ledgerTable.tableName,
      RunsTableName: this.ledger.runsTable.tableName,
      IdempotencyTableName: this.ledger.idempotencyTable.tableName,
      FailureQueueUrl: this.failureLane.queue.queueUrl,
      FailureDlqUrl: this.failureLane.deadLetterQueue.queueUrl,
      EventBusName: this.bus.eventBus.eventBusName,
      JobsTableName: this.batchJobs.jobsTable.tableName,
      BatchServiceRoleArn: this.batchJobs.serviceRole.roleArn,
      ReconcileFunctionName: reconcile.lambdaFunction.functionName,
      AlarmTopicArn: this.monitoring.alarmTopic.topicArn,
    };
    if (this.resultsQueue) outputs.ResultsQueueUrl = this.resultsQueue.queue.queueUrl;
    for (const [outputId, value] of Object.entries(outputs)) {
      new CfnOutput(this, outputId, { value });
    }
  }
}
