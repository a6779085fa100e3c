import type { Duration } from 'aws-cdk-lib';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';

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

/** The dashboard's name of each function role. */
export const DISPLAY_NAMES: Record<keyof PipelineMonitoringFunctions, string> = {
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
