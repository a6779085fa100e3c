import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { METRICS_NAMESPACE } from './pipeline-function';

/**
 * The Powertools metrics the dashboard and alarms read, by name (namespace {@link METRICS_NAMESPACE}, dimension
 * `service` = the emitting function's POWERTOOLS_SERVICE_NAME). The handlers emit these exact names.
 */
export const PIPELINE_METRICS = {
  /** Records published (ConverseBatch, Collect). Count. */
  recordsSucceeded: 'RecordsSucceeded',
  /** Records that failed for good in this run (ConverseBatch, Collect). Count. */
  recordsFailed: 'RecordsFailed',
  /** Model input tokens (ConverseBatch, Collect). Count. */
  inputTokens: 'InputTokens',
  /** Model output tokens (ConverseBatch, Collect). Count. */
  outputTokens: 'OutputTokens',
  /** Converse calls answered with throttling (ConverseBatch). Count. */
  throttles: 'Throttles',
  /** CreateModelInvocationJob answered ServiceQuotaExceeded; the shard backs off and retries (SubmitJob). Count. */
  batchQuotaBusy: 'BatchQuotaBusy',
  /** Batch jobs created (SubmitJob). Count. */
  batchJobsSubmitted: 'BatchJobsSubmitted',
  /** Batch jobs whose wait is open, per reconciler pass (Reconcile). Count. */
  batchJobsInFlight: 'BatchJobsInFlight',
  /** Age of the oldest batch job whose wait is open, 0 when none, per reconciler pass (Reconcile). Seconds. */
  oldestJobInFlightSeconds: 'OldestJobInFlightSeconds',
  /** Submit to end of one batch job, when its wait is resumed (JobState, Reconcile). Seconds. */
  batchJobDurationSeconds: 'BatchJobDurationSeconds',
  /** Bad corpus lines (Plan). Count. */
  invalidLines: 'InvalidLines',
  /** Records the ledger already held (Plan). Count. */
  recordsSkipped: 'RecordsSkipped',
  /** Runs finalized as SUCCEEDED / FAILED (Finalize). Count. */
  runsSucceeded: 'RunsSucceeded',
  runsFailed: 'RunsFailed',
  /** Failure-lane retries that published the record / moved it to the DLQ (failure-lane consumer). Count. */
  laneRecordsPublished: 'LaneRecordsPublished',
  laneDeadLettered: 'LaneDeadLettered',
} as const;

/** A function the dashboard shows, with the Powertools service name its metrics carry as the `service` dimension. */
export interface MonitoredFunction {
  /** The Lambda function (errors, throttles, duration). */
  readonly lambdaFunction: lambda.IFunction;
  /** Its POWERTOOLS_SERVICE_NAME. */
  readonly serviceName: string;
}

/** The pipeline's functions, by role: the role says which metrics each one emits. */
export interface PipelineMonitoringFunctions {
  readonly plan: MonitoredFunction;
  readonly converse: MonitoredFunction;
  readonly finalize: MonitoredFunction;
  readonly submitJob: MonitoredFunction;
  readonly jobState: MonitoredFunction;
  readonly reconcile: MonitoredFunction;
  readonly collect: MonitoredFunction;
  readonly converseItems: MonitoredFunction;
  /**
   * The failure lane's consumer.
   * @default none (no failure-lane retry panel)
   */
  readonly failureLaneConsumer?: MonitoredFunction;
}

/** A dead-letter queue to alarm on, and what its messages mean to the operator who gets the alarm. */
export interface WatchedDeadLetterQueue {
  /** The queue. */
  readonly queue: sqs.IQueue;
  /**
   * What messages in it mean and what to do, for the alarm's description.
   * @default a pointer to the README's Operate section
   */
  readonly whatToDo?: string;
}

/** Properties of {@link PipelineMonitoring}. */
export interface PipelineMonitoringProps {
  /** `CorpusPipeline-<env>`: the dashboard's name and the prefix of every alarm name. */
  readonly pipelineName: string;
  /** The workflow (run executions). */
  readonly stateMachine: sfn.IStateMachine;
  /** The pipeline's functions. */
  readonly functions: PipelineMonitoringFunctions;
  /** The failure lane's queue (retryable failures waiting). */
  readonly failureQueue: sqs.IQueue;
  /**
   * Dead-letter queues by a short alphanumeric name (`FailureLane`, `IngestEvents`, `JobStateEvents`): each gets a
   * "not empty" alarm and a dashboard line.
   */
  readonly deadLetterQueues: Readonly<Record<string, WatchedDeadLetterQueue>>;
  /**
   * Powertools metrics namespace of the functions (their POWERTOOLS_METRICS_NAMESPACE).
   * @default 'CorpusPipeline'
   */
  readonly metricsNamespace?: string;
  /**
   * `Label`s of the workflow's Distributed Map states: their child executions report metrics under
   * `<state machine ARN>/<label>`, which the dashboard plots. A Map state without a Label reports under a new UUID
   * per run, which no dashboard can follow.
   * @default none (no Map Run panel)
   */
  readonly mapRunLabels?: readonly string[];
  /**
   * Key for the alarm topic (its key policy gains CloudWatch's use of it for this pipeline's alarms).
   * @default no encryption at rest: CloudWatch cannot publish to a topic under the AWS managed SNS key, and the
   * messages hold alarm names and metric values only, no corpus data
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * Email subscribed to the alarm topic (AWS sends a confirmation mail on deploy).
   * @default no subscription
   */
  readonly alarmEmail?: string;
  /**
   * A batch job in flight longer than this raises the job SLA alarm.
   * @default Duration.hours(24)
   */
  readonly jobSla?: Duration;
  /**
   * Records failed as a percentage of records processed (succeeded + failed) over 15 minutes above which the error
   * rate alarm fires.
   * @default 5
   */
  readonly errorRatePercent?: number;
  /**
   * How often the reconciler runs (it reports the oldest job in flight): the SLA alarm's period is twice this, at
   * least 15 minutes, so every period holds a report.
   * @default Duration.minutes(5)
   */
  readonly reconcileInterval?: Duration;
}

/** Thrown when the monitoring settings cannot make working alarms. */
export class MonitoringConfigError extends Error {
  override readonly name = 'MonitoringConfigError';
}

/** The error rate alarm's window. */
export const ERROR_RATE_PERIOD = Duration.minutes(15);

const DISPLAY_NAMES: Record<keyof PipelineMonitoringFunctions, string> = {
  plan: 'Plan',
  converse: 'ConverseBatch',
  finalize: 'Finalize',
  submitJob: 'SubmitJob',
  jobState: 'JobState',
  reconcile: 'Reconcile',
  collect: 'Collect',
  converseItems: 'ConverseItems',
  failureLaneConsumer: 'FailureLaneConsumer',
};

/**
 * Dashboard and alarms of one environment: an SNS topic (TLS only, encrypted with the pipeline's key when there is
 * one, optional email subscription), the `CorpusPipeline-<env>` dashboard (runs, Map Runs, records, tokens,
 * throttles, batch jobs, functions, queues), and alarms to the topic: a dead-letter queue not empty, a run failed, a
 * batch job in flight past its SLA, the record error rate above its threshold.
 */
export class PipelineMonitoring extends Construct {
  /** Where every alarm (and its return to OK) is sent. */
  public readonly alarmTopic: sns.Topic;
  /** The environment's dashboard. */
  public readonly dashboard: cloudwatch.Dashboard;
  /** One "not empty" alarm per dead-letter queue, by the queue's name in the props. */
  public readonly deadLetterAlarms: Readonly<Record<string, cloudwatch.Alarm>>;
  /** A workflow execution failed. */
  public readonly runFailedAlarm: cloudwatch.Alarm;
  /** The oldest batch job in flight passed the SLA. */
  public readonly jobSlaAlarm: cloudwatch.Alarm;
  /** Records failed above the threshold percentage over 15 minutes. */
  public readonly errorRateAlarm: cloudwatch.Alarm;
  /** Every alarm above. */
  public readonly alarms: readonly cloudwatch.Alarm[];
  /** Failed / (succeeded + failed) x 100 over 15-minute windows, 0 when nothing was processed. */
  public readonly errorRate: cloudwatch.MathExpression;

  private readonly namespace: string;

  constructor(scope: Construct, id: string, props: PipelineMonitoringProps) {
    super(scope, id);
    const errorRatePercent = props.errorRatePercent ?? 5;
    if (!(errorRatePercent >= 0 && errorRatePercent <= 100)) {
      throw new MonitoringConfigError(`errorRatePercent must be 0 to 100, not ${errorRatePercent}`);
    }
    const jobSla = props.jobSla ?? Duration.hours(24);
    if (jobSla.toSeconds() <= 0) {
      throw new MonitoringConfigError('jobSla must be positive');
    }
    for (const name of Object.keys(props.deadLetterQueues)) {
      if (!/^[A-Za-z0-9]+$/.test(name)) {
        throw new MonitoringConfigError(
          `dead-letter queue name "${name}" must be alphanumeric (it names an alarm)`,
        );
      }
    }
    this.namespace = props.metricsNamespace ?? METRICS_NAMESPACE;
    const { functions, pipelineName } = props;

    this.alarmTopic = this.createTopic(props);
    const alarmAction = new actions.SnsAction(this.alarmTopic);
    const alarm = (alarmId: string, alarmProps: cloudwatch.AlarmProps): cloudwatch.Alarm => {
      const created = new cloudwatch.Alarm(this, alarmId, alarmProps);
      created.addAlarmAction(alarmAction);
      created.addOkAction(alarmAction);
      return created;
    };

    const deadLetterAlarms: Record<string, cloudwatch.Alarm> = {};
    for (const [name, watched] of Object.entries(props.deadLetterQueues)) {
      deadLetterAlarms[name] = alarm(`${name}DeadLettersAlarm`, {
        alarmName: `${pipelineName}-${name}-DeadLetters`,
        alarmDescription: `The ${name} dead-letter queue holds messages. ${
          watched.whatToDo ?? 'See the README, Operate: "DLQ growing".'
        }`,
        metric: watched.queue.metricApproximateNumberOfMessagesVisible({
          statistic: cloudwatch.Stats.MAXIMUM,
          period: Duration.minutes(5),
        }),
        threshold: 0,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }
    this.deadLetterAlarms = deadLetterAlarms;

    this.runFailedAlarm = alarm('RunFailedAlarm', {
      alarmName: `${pipelineName}-RunFailed`,
      alarmDescription:
        'A corpus run (workflow execution) failed. corpus runs lists it; corpus report RUN shows the manifest error.',
      metric: props.stateMachine.metricFailed({
        statistic: cloudwatch.Stats.SUM,
        period: Duration.minutes(5),
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    const reconcileMinutes = (props.reconcileInterval ?? Duration.minutes(5)).toMinutes();
    // No label: a labelled metric would render the alarm as metric math instead of a plain metric alarm.
    const oldestJob = new cloudwatch.Metric({
      namespace: this.namespace,
      metricName: PIPELINE_METRICS.oldestJobInFlightSeconds,
      dimensionsMap: { service: functions.reconcile.serviceName },
      statistic: cloudwatch.Stats.MAXIMUM,
      period: Duration.minutes(Math.max(15, 2 * reconcileMinutes)),
    });
    this.jobSlaAlarm = alarm('JobSlaAlarm', {
      alarmName: `${pipelineName}-JobOverSla`,
      alarmDescription:
        `A Bedrock batch job has been in flight longer than ${jobSla.toHumanString()}. corpus status RUN shows ` +
        "each job's Bedrock status; corpus reconcile re-checks the jobs now.",
      metric: oldestJob,
      threshold: jobSla.toSeconds(),
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    this.errorRate = this.createErrorRate([functions.converse, functions.collect]);
    this.errorRateAlarm = alarm('ErrorRateAlarm', {
      alarmName: `${pipelineName}-ErrorRate`,
      alarmDescription:
        `More than ${errorRatePercent}% of the records processed in 15 minutes failed. corpus failures RUN ` +
        '--code X lists them by error code.',
      metric: this.errorRate,
      threshold: errorRatePercent,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.alarms = [
      ...Object.values(deadLetterAlarms),
      this.runFailedAlarm,
      this.jobSlaAlarm,
      this.errorRateAlarm,
    ];

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: pipelineName,
      defaultInterval: Duration.hours(6),
    });
    this.addWidgets(props, jobSla);
  }

  private createTopic(props: PipelineMonitoringProps): sns.Topic {
    const stack = Stack.of(this);
    const topic = new sns.Topic(this, 'AlarmTopic', {
      displayName: `${props.pipelineName} alarms`,
      enforceSSL: true,
      ...(props.encryptionKey ? { masterKey: props.encryptionKey } : {}),
    });
    // Only this pipeline's alarms, in this account and Region, may publish through the CloudWatch service principal.
    const fromThesePipelineAlarms = {
      StringEquals: { 'aws:SourceAccount': stack.account },
      ArnLike: {
        'aws:SourceArn': stack.formatArn({
          service: 'cloudwatch',
          resource: 'alarm',
          resourceName: `${props.pipelineName}-*`,
          arnFormat: ArnFormat.COLON_RESOURCE_NAME,
        }),
      },
    };
    // The TLS-only statement makes CDK write a topic policy, which replaces the default one: say who may publish.
    topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowThisPipelinesAlarmsToPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [topic.topicArn],
        conditions: fromThesePipelineAlarms,
      }),
    );
    if (props.encryptionKey) {
      // CloudWatch publishes to an SSE-KMS topic with its own identity: without this, alarms deploy but never arrive.
      const added = props.encryptionKey.addToResourcePolicy(
        new iam.PolicyStatement({
          sid: `AllowCloudWatchAlarmsOf${props.pipelineName.replace(/[^A-Za-z0-9]/g, '')}`,
          principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
          actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          resources: ['*'],
          conditions: fromThesePipelineAlarms,
        }),
      );
      if (!added.statementAdded) {
        throw new MonitoringConfigError(
          'The alarm topic key is imported: its key policy cannot let CloudWatch publish to the topic. Pass a key ' +
            'defined in this app, or none.',
        );
      }
    }
    if (props.alarmEmail !== undefined) {
      topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    }
    return topic;
  }

  /** A Powertools metric of one function's service. */
  private serviceMetric(
    metricName: string,
    fn: MonitoredFunction,
    statistic: string,
    period: Duration = Duration.minutes(5),
    label?: string,
  ): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: this.namespace,
      metricName,
      dimensionsMap: { service: fn.serviceName },
      statistic,
      period,
      label: label ?? `${metricName} (${fn.serviceName})`,
    });
  }

  private createErrorRate(processors: readonly MonitoredFunction[]): cloudwatch.MathExpression {
    const failedIds: string[] = [];
    const allIds: string[] = [];
    const usingMetrics: Record<string, cloudwatch.IMetric> = {};
    processors.forEach((fn, i) => {
      usingMetrics[`failed${i}`] = this.serviceMetric(
        PIPELINE_METRICS.recordsFailed,
        fn,
        cloudwatch.Stats.SUM,
        ERROR_RATE_PERIOD,
      );
      usingMetrics[`succeeded${i}`] = this.serviceMetric(
        PIPELINE_METRICS.recordsSucceeded,
        fn,
        cloudwatch.Stats.SUM,
        ERROR_RATE_PERIOD,
      );
      failedIds.push(`FILL(failed${i}, 0)`);
      allIds.push(`FILL(failed${i}, 0)`, `FILL(succeeded${i}, 0)`);
    });
    const failed = failedIds.join(' + ');
    const processed = allIds.join(' + ');
    // IF keeps a quiet window at 0 % instead of a division by zero.
    return new cloudwatch.MathExpression({
      expression: `IF((${processed}) > 0, 100 * (${failed}) / (${processed}), 0)`,
      usingMetrics,
      period: ERROR_RATE_PERIOD,
      label: 'Records failed (%)',
    });
  }

  private addWidgets(props: PipelineMonitoringProps, jobSla: Duration): void {
    const { functions, stateMachine } = props;
    const sum = cloudwatch.Stats.SUM;
    const max = cloudwatch.Stats.MAXIMUM;
    const processors = [functions.converse, functions.collect];
    const width = 8;

    const header = new cloudwatch.TextWidget({
      width: 24,
      height: 2,
      markdown:
        `# ${props.pipelineName}\n` +
        'How far along: `corpus status RUN --watch` · what failed: `corpus failures RUN --code X` · cost: ' +
        '`corpus report RUN` · redrive: `corpus redrive --env E` (README, Operate).',
    });
    const alarmStatus = new cloudwatch.AlarmStatusWidget({
      title: 'Alarms',
      width: 24,
      height: 3,
      alarms: [...this.alarms],
    });

    const runs = new cloudwatch.GraphWidget({
      title: 'Runs (workflow executions)',
      width,
      left: [
        stateMachine.metricStarted({ statistic: sum, label: 'started' }),
        stateMachine.metricSucceeded({ statistic: sum, label: 'succeeded' }),
        stateMachine.metricFailed({ statistic: sum, label: 'failed' }),
        stateMachine.metricTimedOut({ statistic: sum, label: 'timed out' }),
        stateMachine.metricAborted({ statistic: sum, label: 'aborted' }),
      ],
    });
    const runTime = new cloudwatch.GraphWidget({
      title: 'Run duration',
      width,
      left: [stateMachine.metricTime({ statistic: max, label: 'longest run (ms)' })],
    });
    const runOutcomes = new cloudwatch.GraphWidget({
      title: 'Runs finalized, bad lines, ledger skips',
      width,
      left: [
        this.serviceMetric(PIPELINE_METRICS.runsSucceeded, functions.finalize, sum),
        this.serviceMetric(PIPELINE_METRICS.runsFailed, functions.finalize, sum),
      ],
      right: [
        this.serviceMetric(PIPELINE_METRICS.invalidLines, functions.plan, sum),
        this.serviceMetric(PIPELINE_METRICS.recordsSkipped, functions.plan, sum),
      ],
    });

    const records = new cloudwatch.GraphWidget({
      title: 'Records',
      width,
      left: processors.flatMap((fn) => [
        this.serviceMetric(PIPELINE_METRICS.recordsSucceeded, fn, sum),
        this.serviceMetric(PIPELINE_METRICS.recordsFailed, fn, sum),
      ]),
      right: [this.errorRate],
      rightYAxis: { min: 0, max: 100, label: '%' },
    });
    const tokens = new cloudwatch.GraphWidget({
      title: 'Tokens',
      width,
      left: processors.flatMap((fn) => [
        this.serviceMetric(PIPELINE_METRICS.inputTokens, fn, sum),
        this.serviceMetric(PIPELINE_METRICS.outputTokens, fn, sum),
      ]),
    });
    const throttling = new cloudwatch.GraphWidget({
      title: 'Throttling and quota back-off',
      width,
      left: [
        this.serviceMetric(
          PIPELINE_METRICS.throttles,
          functions.converse,
          sum,
          undefined,
          'Converse throttles',
        ),
        this.serviceMetric(
          PIPELINE_METRICS.batchQuotaBusy,
          functions.submitJob,
          sum,
          undefined,
          'batch submits over quota (backing off)',
        ),
      ],
    });

    const jobsInFlight = new cloudwatch.GraphWidget({
      title: 'Batch jobs in flight',
      width,
      left: [
        this.serviceMetric(
          PIPELINE_METRICS.batchJobsInFlight,
          functions.reconcile,
          max,
          undefined,
          'in flight',
        ),
        this.serviceMetric(
          PIPELINE_METRICS.batchJobsSubmitted,
          functions.submitJob,
          sum,
          undefined,
          'submitted',
        ),
      ],
    });
    const oldestJob = new cloudwatch.GraphWidget({
      title: 'Oldest batch job in flight',
      width,
      left: [
        this.serviceMetric(
          PIPELINE_METRICS.oldestJobInFlightSeconds,
          functions.reconcile,
          max,
          undefined,
          'age (s)',
        ),
      ],
      leftAnnotations: [{ value: jobSla.toSeconds(), label: `SLA ${jobSla.toHumanString()}` }],
    });
    const jobDurations = new cloudwatch.GraphWidget({
      title: 'Batch job durations (submit to end)',
      width,
      left: [functions.jobState, functions.reconcile].flatMap((fn) => [
        this.serviceMetric(PIPELINE_METRICS.batchJobDurationSeconds, fn, cloudwatch.Stats.AVERAGE),
        this.serviceMetric(PIPELINE_METRICS.batchJobDurationSeconds, fn, max),
      ]),
    });

    // By role, not Object.entries: `functions` may be the PipelineFunctions construct, which has more properties.
    const monitored = (Object.keys(DISPLAY_NAMES) as (keyof PipelineMonitoringFunctions)[]).flatMap(
      (role) => {
        const fn = functions[role];
        return fn ? [[role, fn] as const] : [];
      },
    );
    const lambdaErrors = new cloudwatch.GraphWidget({
      title: 'Function errors',
      width,
      left: monitored.map(([role, fn]) =>
        fn.lambdaFunction.metricErrors({ statistic: sum, label: DISPLAY_NAMES[role] }),
      ),
    });
    const lambdaThrottles = new cloudwatch.GraphWidget({
      title: 'Function throttles',
      width,
      left: monitored.map(([role, fn]) =>
        fn.lambdaFunction.metricThrottles({ statistic: sum, label: DISPLAY_NAMES[role] }),
      ),
    });
    const lambdaDuration = new cloudwatch.GraphWidget({
      title: 'Function duration (max, ms)',
      width,
      left: monitored.map(([role, fn]) =>
        fn.lambdaFunction.metricDuration({ statistic: max, label: DISPLAY_NAMES[role] }),
      ),
    });

    const queues = new cloudwatch.GraphWidget({
      title: 'Failure queue and dead-letter queues',
      width: 12,
      left: [
        props.failureQueue.metricApproximateNumberOfMessagesVisible({
          statistic: max,
          label: 'failure queue',
        }),
        ...Object.entries(props.deadLetterQueues).map(([name, watched]) =>
          watched.queue.metricApproximateNumberOfMessagesVisible({ statistic: max, label: `${name} DLQ` }),
        ),
      ],
      right: [
        props.failureQueue.metricApproximateAgeOfOldestMessage({
          statistic: max,
          label: 'failure queue oldest (s)',
        }),
      ],
    });
    const lane = functions.failureLaneConsumer;
    const laneWidget = lane
      ? new cloudwatch.GraphWidget({
          title: 'Failure-lane retries',
          width: 12,
          left: [
            this.serviceMetric(
              PIPELINE_METRICS.laneRecordsPublished,
              lane,
              sum,
              undefined,
              'published on retry',
            ),
            this.serviceMetric(PIPELINE_METRICS.laneDeadLettered, lane, sum, undefined, 'dead-lettered'),
          ],
        })
      : undefined;

    this.dashboard.addWidgets(header);
    this.dashboard.addWidgets(alarmStatus);
    this.dashboard.addWidgets(runs, runTime, runOutcomes);
    const mapRunLabels = props.mapRunLabels ?? [];
    if (mapRunLabels.length > 0) {
      this.dashboard.addWidgets(
        ...mapRunLabels.map(
          (label) =>
            new cloudwatch.GraphWidget({
              title: `Map Run ${label}: child executions`,
              width: Math.max(6, Math.floor(24 / mapRunLabels.length)),
              left: [
                'ExecutionsStarted',
                'ExecutionsSucceeded',
                'ExecutionsFailed',
                'ExecutionsTimedOut',
              ].map(
                (metricName) =>
                  new cloudwatch.Metric({
                    namespace: 'AWS/States',
                    metricName,
                    dimensionsMap: { StateMachineArn: `${stateMachine.stateMachineArn}/${label}` },
                    statistic: sum,
                    label: metricName.replace(/^Executions/, '').toLowerCase(),
                  }),
              ),
            }),
        ),
      );
    }
    this.dashboard.addWidgets(records, tokens, throttling);
    this.dashboard.addWidgets(jobsInFlight, oldestJob, jobDurations);
    this.dashboard.addWidgets(lambdaErrors, lambdaThrottles, lambdaDuration);
    this.dashboard.addWidgets(...(laneWidget ? [queues, laneWidget] : [queues]));
  }
}
