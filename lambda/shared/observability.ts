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

/**
 * The keys that tie a log line to a run, a batch job and a record, so one CloudWatch Logs Insights query
 * (`filter runId = "..."`) finds every line of a run across functions.
 */
export interface CorrelationKeys {
  /** The run (the workflow execution's name). */
  readonly runId?: string;
  /** Mode A: the shard (batch job) index. */
  readonly shard?: number;
  /** Mode A: the Bedrock batch job. */
  readonly jobArn?: string;
  /** One record. */
  readonly recordId?: string;
}

/** The keys that have a value. */
export function definedCorrelationKeys(keys: CorrelationKeys): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [name, value] of Object.entries(keys)) {
    if (value !== undefined) out[name] = value as string | number;
  }
  return out;
}

/**
 * Starts one invocation's logging: drops the keys a previous invocation of this warm container appended (a module-level
 * logger outlives the invocation), adds the Lambda context (request id, cold start, function) when given, then appends
 * `keys` to every line this invocation logs. Call it first in a handler, instead of `logger.appendKeys`.
 */
export function beginInvocation(keys: CorrelationKeys, context?: Context): void {
  logger.resetKeys();
  if (context) logger.addContext(context);
  logger.appendKeys(definedCorrelationKeys(keys));
}

/**
 * A logger whose every line carries `keys`, for work that runs concurrently inside one invocation (records of a batch,
 * jobs of a reconciler pass), where appending keys to the shared logger would label one item's lines with another's.
 * It also carries the keys {@link beginInvocation} appended when it was made.
 */
export function correlatedLogger(keys: CorrelationKeys): Logger {
  return logger.createChild({ persistentKeys: definedCorrelationKeys(keys) });
}
