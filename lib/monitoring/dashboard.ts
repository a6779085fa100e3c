import type { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { PIPELINE_METRICS, type ServiceMetrics } from './metrics';
import { DISPLAY_NAMES, type PipelineMonitoringFunctions, type PipelineMonitoringProps } from './props';

/** What the dashboard shows besides the props: the alarms, the error rate, the job SLA. */
export interface DashboardInputs {
  /** The functions' Powertools metrics. */
  readonly metrics: ServiceMetrics;
  /** Every alarm, for the alarm status row. */
  readonly alarms: readonly cloudwatch.IAlarm[];
  /** The records' error rate (%). */
  readonly errorRate: cloudwatch.IMetric;
  /** The batch job SLA, drawn on the oldest-job graph. */
  readonly jobSla: Duration;
}

const SUM = cloudwatch.Stats.SUM;
const MAX = cloudwatch.Stats.MAXIMUM;
/** Three graphs to a row. */
const WIDTH = 8;

/**
 * Fills the environment's dashboard, row by row: header and alarms; runs; Map Runs; records, tokens, throttling;
 * batch jobs; functions; queues and failure-lane retries.
 */
export function addDashboardWidgets(
  dashboard: cloudwatch.Dashboard,
  props: PipelineMonitoringProps,
  inputs: DashboardInputs,
): void {
  dashboard.addWidgets(headerWidget(props.pipelineName));
  dashboard.addWidgets(
    new cloudwatch.AlarmStatusWidget({ title: 'Alarms', width: 24, height: 3, alarms: [...inputs.alarms] }),
  );
  dashboard.addWidgets(...runWidgets(props, inputs.metrics));
  const mapRuns = mapRunWidgets(props);
  if (mapRuns.length > 0) dashboard.addWidgets(...mapRuns);
  dashboard.addWidgets(...recordWidgets(props.functions, inputs));
  dashboard.addWidgets(...batchJobWidgets(props.functions, inputs));
  dashboard.addWidgets(...functionWidgets(props.functions));
  dashboard.addWidgets(...queueWidgets(props, inputs.metrics));
}

function headerWidget(pipelineName: string): cloudwatch.IWidget {
  return new cloudwatch.TextWidget({
    width: 24,
    height: 2,
    markdown:
      `# ${pipelineName}\n` +
      'How far along: `corpus status RUN --watch` · what failed: `corpus failures RUN --code X` · cost: ' +
      '`corpus report RUN` · redrive: `corpus redrive --env E` (README, Operate).',
  });
}

/** Runs (workflow executions), their duration, and what Plan and Finalize count. */
function runWidgets(props: PipelineMonitoringProps, metrics: ServiceMetrics): cloudwatch.IWidget[] {
  const { functions, stateMachine } = props;
  return [
    new cloudwatch.GraphWidget({
      title: 'Runs (workflow executions)',
      width: WIDTH,
      left: [
        stateMachine.metricStarted({ statistic: SUM, label: 'started' }),
        stateMachine.metricSucceeded({ statistic: SUM, label: 'succeeded' }),
        stateMachine.metricFailed({ statistic: SUM, label: 'failed' }),
        stateMachine.metricTimedOut({ statistic: SUM, label: 'timed out' }),
        stateMachine.metricAborted({ statistic: SUM, label: 'aborted' }),
      ],
    }),
    new cloudwatch.GraphWidget({
      title: 'Run duration',
      width: WIDTH,
      left: [stateMachine.metricTime({ statistic: MAX, label: 'longest run (ms)' })],
    }),
    new cloudwatch.GraphWidget({
      title: 'Runs finalized, bad lines, ledger skips',
      width: WIDTH,
      left: [
        metrics.metric(PIPELINE_METRICS.runsSucceeded, functions.finalize, SUM),
        metrics.metric(PIPELINE_METRICS.runsFailed, functions.finalize, SUM),
      ],
      right: [
        metrics.metric(PIPELINE_METRICS.invalidLines, functions.plan, SUM),
        metrics.metric(PIPELINE_METRICS.recordsSkipped, functions.plan, SUM),
      ],
    }),
  ];
}

/** One graph per labelled Distributed Map: its child executions (`<state machine ARN>/<label>`). */
function mapRunWidgets(props: PipelineMonitoringProps): cloudwatch.IWidget[] {
  const labels = props.mapRunLabels ?? [];
  return labels.map(
    (label) =>
      new cloudwatch.GraphWidget({
        title: `Map Run ${label}: child executions`,
        width: Math.max(6, Math.floor(24 / labels.length)),
        left: ['ExecutionsStarted', 'ExecutionsSucceeded', 'ExecutionsFailed', 'ExecutionsTimedOut'].map(
          (metricName) =>
            new cloudwatch.Metric({
              namespace: 'AWS/States',
              metricName,
              dimensionsMap: { StateMachineArn: `${props.stateMachine.stateMachineArn}/${label}` },
              statistic: SUM,
              label: metricName.replace(/^Executions/, '').toLowerCase(),
            }),
        ),
      }),
  );
}

/** Records and their error rate, tokens, throttling (of the functions that call the model). */
function recordWidgets(
  functions: PipelineMonitoringFunctions,
  inputs: DashboardInputs,
): cloudwatch.IWidget[] {
  const { metrics } = inputs;
  const processors = [functions.converse, functions.collect];
  return [
    new cloudwatch.GraphWidget({
      title: 'Records',
      width: WIDTH,
      left: processors.flatMap((fn) => [
        metrics.metric(PIPELINE_METRICS.recordsSucceeded, fn, SUM),
        metrics.metric(PIPELINE_METRICS.recordsFailed, fn, SUM),
      ]),
      right: [inputs.errorRate],
      rightYAxis: { min: 0, max: 100, label: '%' },
    }),
    new cloudwatch.GraphWidget({
      title: 'Tokens',
      width: WIDTH,
      left: processors.flatMap((fn) => [
        metrics.metric(PIPELINE_METRICS.inputTokens, fn, SUM),
        metrics.metric(PIPELINE_METRICS.outputTokens, fn, SUM),
      ]),
    }),
    new cloudwatch.GraphWidget({
      title: 'Throttling and quota back-off',
      width: WIDTH,
      left: [
        metrics.metric(PIPELINE_METRICS.throttles, functions.converse, SUM, undefined, 'Converse throttles'),
        metrics.metric(
          PIPELINE_METRICS.batchQuotaBusy,
          functions.submitJob,
          SUM,
          undefined,
          'batch submits over quota (backing off)',
        ),
      ],
    }),
  ];
}

/** Batch jobs in flight, the oldest one against the SLA, job durations. */
function batchJobWidgets(
  functions: PipelineMonitoringFunctions,
  inputs: DashboardInputs,
): cloudwatch.IWidget[] {
  const { metrics, jobSla } = inputs;
  return [
    new cloudwatch.GraphWidget({
      title: 'Batch jobs in flight',
      width: WIDTH,
      left: [
        metrics.metric(PIPELINE_METRICS.batchJobsInFlight, functions.reconcile, MAX, undefined, 'in flight'),
        metrics.metric(PIPELINE_METRICS.batchJobsSubmitted, functions.submitJob, SUM, undefined, 'submitted'),
      ],
    }),
    new cloudwatch.GraphWidget({
      title: 'Oldest batch job in flight',
      width: WIDTH,
      left: [
        metrics.metric(
          PIPELINE_METRICS.oldestJobInFlightSeconds,
          functions.reconcile,
          MAX,
          undefined,
          'age (s)',
        ),
      ],
      leftAnnotations: [{ value: jobSla.toSeconds(), label: `SLA ${jobSla.toHumanString()}` }],
    }),
    new cloudwatch.GraphWidget({
      title: 'Batch job durations (submit to end)',
      width: WIDTH,
      left: [functions.jobState, functions.reconcile].flatMap((fn) => [
        metrics.metric(PIPELINE_METRICS.batchJobDurationSeconds, fn, cloudwatch.Stats.AVERAGE),
        metrics.metric(PIPELINE_METRICS.batchJobDurationSeconds, fn, MAX),
      ]),
    }),
  ];
}

/** Errors, throttles and duration of every function. */
function functionWidgets(functions: PipelineMonitoringFunctions): cloudwatch.IWidget[] {
  // By role, not Object.entries: `functions` may be the PipelineFunctions construct, which has more properties.
  const monitored = (Object.keys(DISPLAY_NAMES) as (keyof PipelineMonitoringFunctions)[]).flatMap((role) => {
    const fn = functions[role];
    return fn ? [[role, fn] as const] : [];
  });
  return [
    new cloudwatch.GraphWidget({
      title: 'Function errors',
      width: WIDTH,
      left: monitored.map(([role, fn]) =>
        fn.lambdaFunction.metricErrors({ statistic: SUM, label: DISPLAY_NAMES[role] }),
      ),
    }),
    new cloudwatch.GraphWidget({
      title: 'Function throttles',
      width: WIDTH,
      left: monitored.map(([role, fn]) =>
        fn.lambdaFunction.metricThrottles({ statistic: SUM, label: DISPLAY_NAMES[role] }),
      ),
    }),
    new cloudwatch.GraphWidget({
      title: 'Function duration (max, ms)',
      width: WIDTH,
      left: monitored.map(([role, fn]) =>
        fn.lambdaFunction.metricDuration({ statistic: MAX, label: DISPLAY_NAMES[role] }),
      ),
    }),
  ];
}

/** The failure queue and every dead-letter queue; the failure lane's retries when it has a consumer. */
function queueWidgets(props: PipelineMonitoringProps, metrics: ServiceMetrics): cloudwatch.IWidget[] {
  const queues = new cloudwatch.GraphWidget({
    title: 'Failure queue and dead-letter queues',
    width: 12,
    left: [
      props.failureQueue.metricApproximateNumberOfMessagesVisible({ statistic: MAX, label: 'failure queue' }),
      ...Object.entries(props.deadLetterQueues).map(([name, watched]) =>
        watched.queue.metricApproximateNumberOfMessagesVisible({ statistic: MAX, label: `${name} DLQ` }),
      ),
    ],
    right: [
      props.failureQueue.metricApproximateAgeOfOldestMessage({
        statistic: MAX,
        label: 'failure queue oldest (s)',
      }),
    ],
  });
  const lane = props.functions.failureLaneConsumer;
  if (!lane) return [queues];
  return [
    queues,
    new cloudwatch.GraphWidget({
      title: 'Failure-lane retries',
      width: 12,
      left: [
        metrics.metric(PIPELINE_METRICS.laneRecordsPublished, lane, SUM, undefined, 'published on retry'),
        metrics.metric(PIPELINE_METRICS.laneDeadLettered, lane, SUM, undefined, 'dead-lettered'),
      ],
    }),
  ];
}
