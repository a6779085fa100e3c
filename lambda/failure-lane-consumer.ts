import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { ModelCallCounter } from './converse/model-caller';
import { traced, withObservability } from './shared/observability';
import { publishingContext } from './shared/publishing-context';
import { RunState } from './shared/run-state';
import { processLaneBatch } from './failure-lane/consumer';

/** The consumer's environment (lambda/shared/contracts/env.ts). */
export const failureLaneConsumerEnvSchema = FUNCTION_ENV.failureLaneConsumer;

const env = readEnv(FUNCTION_ENV.failureLaneConsumer);

const counter = new ModelCallCounter();
const { s3, ddb, sqs, ledger, callModel, resultsPublisher } = publishingContext(env, counter);
const runs = new RunState(DynamoDBDocumentClient.from(ddb), env.RUNS_TABLE, env.LEDGER_TTL_DAYS);
const events = traced(new EventBridgeClient({}));

/** Lambda entry: the failure queue's event source (FunctionResponseTypes: ReportBatchItemFailures). */
export const handler = withObservability((event: SQSEvent, context: Context): Promise<SQSBatchResponse> =>
  processLaneBatch(
    event,
    {
      s3,
      sqs,
      ledger,
      runs,
      events,
      eventBusName: env.EVENT_BUS_NAME,
      callModel,
      dlqUrl: env.FAILURE_DLQ_URL,
      outputBucket: env.OUTPUT_BUCKET,
      resultsPublisher,
      leaseMs: env.CLAIM_LEASE_SECONDS * 1000,
      remainingMs: () => context.getRemainingTimeInMillis(),
      modelCalls: () => counter.snapshot(),
      ...(env.MAX_RECEIVE_COUNT !== undefined ? { maxReceiveCount: env.MAX_RECEIVE_COUNT } : {}),
    },
    context,
  ),
);
