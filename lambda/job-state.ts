import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { batchJobsContext } from './batch/batch-jobs-context';
import { InvalidEventError } from './shared/errors';
import { logger, withObservability } from './shared/observability';
import { jobStateEventSchema, type JobStateResult, handleJobStateChange } from './batch/job-state';

const env = readEnv(FUNCTION_ENV.jobState);
const { bedrock, sfn, store } = batchJobsContext(env);

/** Lambda entry: target of the `aws.bedrock` / `Batch Inference Job State Change` rule. */
export const handler = withObservability(async (event: unknown): Promise<JobStateResult> => {
  const parsed = jobStateEventSchema.safeParse(event);
  if (!parsed.success) {
    logger.error('Malformed batch job state-change event', { event, problems: parsed.error.issues });
    throw new InvalidEventError(
      `JobState expects a Bedrock "Batch Inference Job State Change" event with detail.batchJobArn and detail.status: ${parsed.error.message}`,
    );
  }
  logger.appendKeys({ jobArn: parsed.data.detail.batchJobArn });
  return handleJobStateChange(parsed.data, { bedrock, sfn, store });
});
