import type { Context } from 'aws-lambda';
import { itemBatchEventSchema, type ItemBatchSummary } from './shared/contracts';
import { converseUnitDeadline, processBatch, safetyMarginFor } from './converse/converse-unit';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { InvalidEventError } from './shared/errors';
import { FailureLaneSender } from './shared/failure-lane';
import { ModelCallCounter } from './converse/model-caller';
import { logger, metrics, withObservability } from './shared/observability';
import { pacedCaller, QuotaPacer } from './converse/pacing';
import { publishingContext } from './shared/publishing-context';
import { PIPELINE_METRICS } from './shared/contracts/metrics';

const env = readEnv(FUNCTION_ENV.converse);

const counter = new ModelCallCounter();
const { s3, sqs, ledger, callModel: unpaced, resultsPublisher } = publishingContext(env, counter);
// Each Map child takes its share of the model's per-minute quotas, so children do not throttle each other.
const callModel = pacedCaller(
  unpaced,
  QuotaPacer.forMapChild(env.REQUESTS_PER_MINUTE, env.TOKENS_PER_MINUTE, env.CONVERSE_MAP_CONCURRENCY),
);

/**
 * Lambda entry: one child batch of the Converse fan-out. Not wrapped in Powertools idempotency: the ledger makes a
 * repeated batch safe and cheap (every claim answers with the batch's own earlier decision), and Step Functions
 * never runs two attempts of a task at once (its timeout is above the function's); an in-progress idempotency
 * record would instead hold a crashed attempt's retry off until the crashed invocation's deadline.
 */
export const handler = withObservability(
  async (event: unknown, context: Context): Promise<ItemBatchSummary> => {
    const parsed = itemBatchEventSchema.safeParse(event);
    if (!parsed.success) {
      throw new InvalidEventError(
        `ConverseBatch expects {BatchInput: {runId, ledgerScope}, Items: [...], childStartedAt?}: ${parsed.error.message}`,
      );
    }
    logger.appendKeys({ runId: parsed.data.BatchInput.runId });
    const deadline = converseUnitDeadline(
      Date.now(),
      context.getRemainingTimeInMillis(),
      parsed.data.childStartedAt,
      env.EXPRESS_CHILD_BUDGET_SECONDS,
    );
    const summary = await processBatch(parsed.data, {
      s3,
      ledger,
      failureLane: new FailureLaneSender(sqs, env.FAILURE_QUEUE_URL, env.FAILURE_DLQ_URL),
      callModel,
      resultsPublisher,
      outputBucket: env.OUTPUT_BUCKET,
      itemConcurrency: env.ITEM_CONCURRENCY,
      leaseMs: env.CLAIM_LEASE_SECONDS * 1000,
      remainingMs: () => deadline - Date.now(),
      safetyMarginMs: safetyMarginFor(env.EXPRESS_CHILD_BUDGET_SECONDS),
      modelCalls: () => counter.snapshot(),
    });
    metrics.addMetric(PIPELINE_METRICS.recordsSucceeded, 'Count', summary.succeeded);
    metrics.addMetric(PIPELINE_METRICS.recordsFailed, 'Count', summary.failed);
    metrics.addMetric(PIPELINE_METRICS.recordsQueued, 'Count', summary.queued);
    metrics.addMetric(PIPELINE_METRICS.throttles, 'Count', summary.modelCalls.throttled);
    metrics.addMetric(PIPELINE_METRICS.inputTokens, 'Count', summary.inputTokens);
    metrics.addMetric(PIPELINE_METRICS.outputTokens, 'Count', summary.outputTokens);
    return summary;
  },
);
