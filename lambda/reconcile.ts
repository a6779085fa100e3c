import { BedrockClient } from '@aws-sdk/client-bedrock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { JobStore } from './shared/batch-jobs';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { traced, withObservability } from './shared/observability';
import { type ReconcileSummary, reconcileJobs } from './batch/reconcile';

const env = readEnv(FUNCTION_ENV.reconcile);
const bedrock = traced(new BedrockClient({}));
const sfn = traced(new SFNClient({}));
const ddb = traced(new DynamoDBClient({}));
const store = new JobStore({
  client: DynamoDBDocumentClient.from(ddb),
  tableName: env.JOBS_TABLE,
  ttlDays: env.JOBS_TTL_DAYS,
});

/** Lambda entry: the reconciler's schedule (the scheduled event's content is not used). */
export const handler = withObservability((_event: unknown): Promise<ReconcileSummary> =>
  reconcileJobs({ bedrock, sfn, store, concurrency: env.RECONCILE_CONCURRENCY }),
);
