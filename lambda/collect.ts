import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { collectShard } from './batch/collect/collect-shard';
import { type CollectShardSummary } from './batch/collect/collect-contract';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { FailureLaneSender } from './shared/failure-lane';
import { Ledger } from './shared/ledger';
import { logger, traced, withObservability } from './shared/observability';
import { resultsPublisherFromEnv } from './shared/results-queue';
import { toCollectInput, parseCollectEvent } from './batch/collect/collect-event';

const env = readEnv(FUNCTION_ENV.collect);

const s3 = traced(new S3Client({}));
const ddb = traced(new DynamoDBClient({}));
const sqs = traced(new SQSClient({}));
const ledger = new Ledger({
  client: DynamoDBDocumentClient.from(ddb),
  tableName: env.LEDGER_TABLE,
  ttlDays: env.LEDGER_TTL_DAYS,
});
const resultsPublisher = resultsPublisherFromEnv(sqs);

/**
 * Lambda entry: collects one shard's batch job output. A repeat is safe and cheap: the collect marker returns the
 * summary of a finished collect, and an interrupted one finds its own decisions in the ledger. Not wrapped in
 * Powertools idempotency: Step Functions never runs two attempts of the task at once (its timeout is above the
 * function's), and an in-progress idempotency record would hold a crashed attempt's retry off for up to the
 * function's 15 minutes. A job that failed for a reason no retry can get past throws BatchJobFailedError (after
 * recording its records as failed).
 */
export const handler = withObservability(async (event: unknown): Promise<CollectShardSummary> => {
  const parsed = parseCollectEvent(event);
  logger.appendKeys({ runId: parsed.runId, shard: parsed.shard.shard });
  return collectShard(toCollectInput(parsed), {
    s3,
    ledger,
    failureLane: new FailureLaneSender(sqs, env.FAILURE_QUEUE_URL, env.FAILURE_DLQ_URL),
    ...(resultsPublisher ? { resultsPublisher } : {}),
    outputBucket: env.OUTPUT_BUCKET,
    leaseMs: env.CLAIM_LEASE_SECONDS * 1000,
  });
});
