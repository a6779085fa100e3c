import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { batchJobsContext } from './batch/batch-jobs-context';
import { withObservability } from './shared/observability';
import { type ReconcileSummary, reconcileJobs } from './batch/reconcile';

const env = readEnv(FUNCTION_ENV.reconcile);
const { bedrock, sfn, store } = batchJobsContext(env);

/** Lambda entry: the reconciler's schedule (the scheduled event's content is not used). */
export const handler = withObservability((_event: unknown): Promise<ReconcileSummary> =>
  reconcileJobs({ bedrock, sfn, store, concurrency: env.RECONCILE_CONCURRENCY }),
);
