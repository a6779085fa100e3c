import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { METRICS_NAMESPACE } from '../pipeline-function';
import { alarmSettings, createAlarms, createAlarmTopic } from './alarms';
import { addDashboardWidgets } from './dashboard';
import { ServiceMetrics } from './metrics';
import type { PipelineMonitoringProps } from './props';

export { ERROR_RATE_PERIOD, PIPELINE_METRICS, ServiceMetrics } from './metrics';
export {
  MonitoringConfigError,
  type MonitoredFunction,
  type PipelineMonitoringFunctions,
  type PipelineMonitoringProps,
  type WatchedDeadLetterQueue,
} from './props';

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

  constructor(scope: Construct, id: string, props: PipelineMonitoringProps) {
    super(scope, id);
    const settings = alarmSettings(props);
    const metrics = new ServiceMetrics(props.metricsNamespace ?? METRICS_NAMESPACE);

    this.alarmTopic = createAlarmTopic(this, props);
    const created = createAlarms(this, props, this.alarmTopic, metrics, settings);
    this.deadLetterAlarms = created.deadLetterAlarms;
    this.runFailedAlarm = created.runFailedAlarm;
    this.jobSlaAlarm = created.jobSlaAlarm;
    this.errorRateAlarm = created.errorRateAlarm;
    this.errorRate = created.errorRate;
    this.alarms = [
      ...Object.values(this.deadLetterAlarms),
      this.runFailedAlarm,
      this.jobSlaAlarm,
      this.errorRateAlarm,
    ];

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: props.pipelineName,
      defaultInterval: Duration.hours(6),
    });
    addDashboardWidgets(this.dashboard, props, {
      metrics,
      alarms: this.alarms,
      errorRate: this.errorRate,
      jobSla: settings.jobSla,
    });
  }
}
