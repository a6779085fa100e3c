import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import { PIPELINE_METRICS, type ServiceMetrics } from './metrics';
import { MonitoringConfigError, type PipelineMonitoringProps } from './props';

/** The alarms of one environment. */
export interface PipelineAlarms {
  /** One "not empty" alarm per dead-letter queue, by the queue's name in the props. */
  readonly deadLetterAlarms: Readonly<Record<string, cloudwatch.Alarm>>;
  /** A workflow execution failed. */
  readonly runFailedAlarm: cloudwatch.Alarm;
  /** The oldest batch job in flight passed the SLA. */
  readonly jobSlaAlarm: cloudwatch.Alarm;
  /** Records failed above the threshold percentage over 15 minutes. */
  readonly errorRateAlarm: cloudwatch.Alarm;
  /** The error rate the error rate alarm watches. */
  readonly errorRate: cloudwatch.MathExpression;
}

/** The checked alarm settings. */
export interface AlarmSettings {
  /** The error rate alarm's threshold, 0 to 100. */
  readonly errorRatePercent: number;
  /** A batch job in flight longer than this raises the job SLA alarm. */
  readonly jobSla: Duration;
}

/**
 * The alarm settings of `props`, checked.
 * @throws MonitoringConfigError when they cannot make working alarms
 */
export function alarmSettings(props: PipelineMonitoringProps): AlarmSettings {
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
  return { errorRatePercent, jobSla };
}

/**
 * The topic every alarm is sent to (TLS only, encrypted with `props.encryptionKey` when given, optional email
 * subscription), with a policy that lets only this pipeline's alarms publish.
 * @throws MonitoringConfigError when the key is imported (its policy cannot let CloudWatch use it)
 */
export function createAlarmTopic(scope: Construct, props: PipelineMonitoringProps): sns.Topic {
  const stack = Stack.of(scope);
  const topic = new sns.Topic(scope, 'AlarmTopic', {
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

/**
 * The alarms, each sent to `topic` when it fires and when it returns to OK: a dead-letter queue not empty, a run
 * failed, a batch job in flight past its SLA, the record error rate above its threshold.
 */
export function createAlarms(
  scope: Construct,
  props: PipelineMonitoringProps,
  topic: sns.ITopic,
  metrics: ServiceMetrics,
  settings: AlarmSettings,
): PipelineAlarms {
  const { functions, pipelineName } = props;
  const { errorRatePercent, jobSla } = settings;
  const alarmAction = new actions.SnsAction(topic);
  const alarm = (alarmId: string, alarmProps: cloudwatch.AlarmProps): cloudwatch.Alarm => {
    const created = new cloudwatch.Alarm(scope, alarmId, alarmProps);
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

  const runFailedAlarm = alarm('RunFailedAlarm', {
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
    namespace: metrics.namespace,
    metricName: PIPELINE_METRICS.oldestJobInFlightSeconds,
    dimensionsMap: { service: functions.reconcile.serviceName },
    statistic: cloudwatch.Stats.MAXIMUM,
    period: Duration.minutes(Math.max(15, 2 * reconcileMinutes)),
  });
  const jobSlaAlarm = alarm('JobSlaAlarm', {
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

  const errorRate = metrics.errorRate([functions.converse, functions.collect]);
  const errorRateAlarm = alarm('ErrorRateAlarm', {
    alarmName: `${pipelineName}-ErrorRate`,
    alarmDescription:
      `More than ${errorRatePercent}% of the records processed in 15 minutes failed. corpus failures RUN ` +
      '--code X lists them by error code.',
    metric: errorRate,
    threshold: errorRatePercent,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  return { deadLetterAlarms, runFailedAlarm, jobSlaAlarm, errorRateAlarm, errorRate };
}
