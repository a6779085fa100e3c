import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import type { Tracer } from '@aws-lambda-powertools/tracer';
import type { Context } from 'aws-lambda';

/** The service name when POWERTOOLS_SERVICE_NAME is not set (tests, scripts). */
export const DEFAULT_SERVICE_NAME = 'corpus-pipeline';
/** The metrics namespace when POWERTOOLS_METRICS_NAMESPACE is not set. */
export const DEFAULT_METRICS_NAMESPACE = 'CorpusPipeline';

// An explicit serviceName/namespace option wins over the environment in Powertools, so the function's own
// POWERTOOLS_SERVICE_NAME (`corpus-plan`, `corpus-converse-batch`, ...) is read here: it is the `service` dimension
// the dashboard and alarms (lib/monitoring/) select each function's metrics by.
const serviceName = process.env.POWERTOOLS_SERVICE_NAME || DEFAULT_SERVICE_NAME;

/** Structured JSON logs; service name from POWERTOOLS_SERVICE_NAME. */
export const logger = new Logger({ serviceName });
/** CloudWatch EMF metrics; namespace from POWERTOOLS_METRICS_NAMESPACE, `service` dimension from POWERTOOLS_SERVICE_NAME. */
export const metrics = new Metrics({
  namespace: process.env.POWERTOOLS_METRICS_NAMESPACE || DEFAULT_METRICS_NAMESPACE,
  serviceName,
});
/**
 * Whether this function records an X-Ray subsegment per AWS SDK call. Off with POWERTOOLS_TRACE_ENABLED=false, which the
 * stack sets unless an environment turns `sdkTracing` on, and the local runtime always sets. Lambda active tracing still records
 * the function's own segment either way.
 */
export const sdkTracingEnabled = process.env.POWERTOOLS_TRACE_ENABLED !== 'false';

let tracer: Tracer | undefined;

/**
 * The client, instrumented with X-Ray subsegments when {@link sdkTracingEnabled}, else unchanged. The Tracer (and the
 * X-Ray SDK under it) is only loaded then: loading it creates a cls-hooked namespace whose async hooks run on every
 * promise of the process, tracing or not, which made a promise-bound loop 12x slower (bench/README.md).
 */
export function traced<T>(client: T): T {
  if (!sdkTracingEnabled) return client;
  if (!tracer) {
    type TracerModule = typeof import('@aws-lambda-powertools/tracer');
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when enabled, see above
    const powertools = require('@aws-lambda-powertools/tracer') as TracerModule;
    tracer = new powertools.Tracer({ serviceName });
  }
  return tracer.captureAWSv3Client(client);
}

/** A Lambda handler: what {@link withObservability} wraps and returns. */
export type LambdaHandler<E, R> = (event: E, context: Context) => Promise<R>;

/**
 * The one wrapper of every Lambda entry: adds the invocation's Lambda context to every log line (request id, cold
 * start, function name and version), and after the invocation, whatever its outcome, flushes the metrics it stored
 * and drops the keys it appended to the logger (a module-level logger outlives the invocation, so a warm container's
 * next invocation would otherwise log the previous run's keys). Errors pass through unchanged: the workflow's Retry
 * and Catch match their names. Powertools' `injectLambdaContext({ resetKeys: true })` and `logMetrics` do the same
 * as middy middlewares or class decorators; this is the plain-function form, without another dependency.
 */
export function withObservability<E, R>(
  handler: (event: E) => Promise<R>,
): (event: E, context?: Context) => Promise<R>;
export function withObservability<E, R>(handler: LambdaHandler<E, R>): LambdaHandler<E, R>;
export function withObservability<E, R>(handler: LambdaHandler<E, R>): LambdaHandler<E, R> {
  return async (event, context) => {
    // Tests and scripts may call an entry without a context; Lambda always gives one.
    if (context) logger.addContext(context);
    try {
      return await handler(event, context);
    } finally {
      metrics.publishStoredMetrics();
      logger.resetKeys();
    }
  };
}
