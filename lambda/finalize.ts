import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import { finalizeEventSchema, finalizeRun, type FinalizeOutput } from './finalize/finalize-run';
import { withInProgressLock } from './shared/idempotency';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { InvalidEventError } from './shared/errors';
import { FailureLaneSender } from './shared/failure-lane';
import { Ledger } from './shared/ledger';
import { logger, traced, withObservability } from './shared/observability';
import { resultsPublisherFromEnv } from './shared/results-queue';
import { RunState } from './shared/run-state';

const env = readEnv(FUNCTION_ENV.finalize);
const s3 = traced(new S3Client({}));
const events = traced(new EventBridgeClient({}));
const ddb = traced(new DynamoDBClient({}));
const sqs = traced(new SQSClient({}));
const documentClient = DynamoDBDocumentClient.from(ddb);
const ledger = new Ledger({
  client: documentClient,
  tableName: env.LEDGER_TABLE,
  ttlDays: env.LEDGER_TTL_DAYS,
});
const runs = new RunState(documentClient, env.RUNS_TABLE, env.LEDGER_TTL_DAYS);
const resultsPublisher = resultsPublisherFromEnv(sqs);
const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: ddb,
});

const idempotent = makeIdempotent(
  async (event: unknown, _context: Context): Promise<FinalizeOutput> => {
    const parsed = finalizeEventSchema.safeParse(event);
    if (!parsed.success)
      throw new InvalidEventError(`Finalize expects {runId, startedAt, state}: ${parsed.error.message}`);
    logger.appendKeys({ runId: parsed.data.runId });
    return finalizeRun(parsed.data, {
      s3,
      events,
      ledger,
      runs,
      failureLane: new FailureLaneSender(sqs, env.FAILURE_QUEUE_URL, env.FAILURE_DLQ_URL),
      resultsPublisher,
      outputBucket: env.OUTPUT_BUCKET,
      eventBusName: env.EVENT_BUS_NAME,
      leaseMs: env.CLAIM_LEASE_SECONDS * 1000,
    });
  },
  {
    persistenceStore,
    config: new IdempotencyConfig({ eventKeyJmesPath: 'runId', expiresAfterSeconds: 3600 }),
  },
);

/**
 * Lambda entry: Finalize, idempotent per run (a repeated invocation returns the first answer), its in-progress lock held
 * only as long as a retry waits (lambda/shared/idempotency.ts).
 */
export const handler = withObservability((event: unknown, context: Context): Promise<FinalizeOutput> =>
  idempotent(event, withInProgressLock(context)),
);
