import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { Tracer } from '@aws-lambda-powertools/tracer';

/** Structured JSON logs; service name from POWERTOOLS_SERVICE_NAME. */
export const logger = new Logger({ serviceName: 'corpus-pipeline' });
/** CloudWatch EMF metrics; namespace from POWERTOOLS_METRICS_NAMESPACE. */
export const metrics = new Metrics({ namespace: 'CorpusPipeline', serviceName: 'corpus-pipeline' });
/** X-Ray tracing of the SDK clients (disabled with POWERTOOLS_TRACE_ENABLED=false, as the local runtime does). */
export const tracer = new Tracer({ serviceName: 'corpus-pipeline' });
