import { BedrockClient } from '@aws-sdk/client-bedrock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { JobStore } from '../shared/batch-jobs';
import { traced } from '../shared/observability';

/** The settings {@link batchJobsContext} needs, from the handler's environment. */
export interface BatchJobsSettings {
  JOBS_TABLE: string;
  JOBS_TTL_DAYS: number;
}

/** The clients of a handler that follows Bedrock batch jobs: the control plane, task-token calls and the jobs table. */
export interface BatchJobsContext {
  bedrock: BedrockClient;
  sfn: SFNClient;
  store: JobStore;
}

/**
 * Creates, once per execution environment (call it at module scope), what SubmitJob, JobState and Reconcile share:
 * traced Bedrock and Step Functions clients and the jobs table's store.
 */
export function batchJobsContext(env: BatchJobsSettings): BatchJobsContext {
  return {
    bedrock: traced(new BedrockClient({})),
    sfn: traced(new SFNClient({})),
    store: new JobStore({
      client: DynamoDBDocumentClient.from(traced(new DynamoDBClient({}))),
      tableName: env.JOBS_TABLE,
      ttlDays: env.JOBS_TTL_DAYS,
    }),
  };
}
