import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { PIPELINE_METRICS } from '../../lambda/shared/contracts/metrics';
import type { MonitoredFunction } from './props';

export { PIPELINE_METRICS } from '../../lambda/shared/contracts/metrics';

/** The error rate alarm's window. */
export const ERROR_RATE_PERIOD = Duration.minutes(15);

/** The Powertools metrics of the pipeline's functions, in one namespace, selected by their `service` dimension. */
export class ServiceMetrics {
  /** @param namespace the functions' POWERTOOLS_METRICS_NAMESPACE */
  constructor(readonly namespace: string) {}

  /** A Powertools metric of one function's service. */
  metric(
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

  /** Failed / (succeeded + failed) x 100 of `processors` over 15-minute windows, 0 when nothing was processed. */
  errorRate(processors: readonly MonitoredFunction[]): cloudwatch.MathExpression {
    const failedIds: string[] = [];
    const allIds: string[] = [];
    const usingMetrics: Record<string, cloudwatch.IMetric> = {};
    processors.forEach((fn, i) => {
      usingMetrics[`failed${i}`] = this.metric(
        PIPELINE_METRICS.recordsFailed,
        fn,
        cloudwatch.Stats.SUM,
        ERROR_RATE_PERIOD,
      );
      usingMetrics[`succeeded${i}`] = this.metric(
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
}
