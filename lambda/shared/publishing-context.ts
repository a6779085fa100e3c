import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { Ledger } from './ledger';
import { modelFamily, type ModelFamily } from './model-catalog';
import {
  bedrockCaller,
  bedrockRuntimeClient,
  type ModelCallCounter,
  type ModelCaller,
} from '../converse/model-caller';
import { traced } from './observability';
import { resultsPublisherFromEnv, type ResultsPublisher } from './results-queue';

/** The settings {@link publishingContext} needs, from the handler's environment. */
export interface PublishingSettings {
  MAX_ATTEMPTS: number;
  MODEL_ID: string;
  /** The model's family when the catalog does not know MODEL_ID. */
  MODEL_FORMAT?: ModelFamily | undefined;
  LEDGER_TABLE: string;
  LEDGER_TTL_DAYS: number;
}

/** The clients of a handler that calls the model and publishes results through the ledger. */
export interface PublishingContext {
  s3: S3Client;
  ddb: DynamoDBClient;
  sqs: SQSClient;
  ledger: Ledger;
  callModel: ModelCaller;
  /** Present when RESULTS_QUEUE_URL is set. */
  resultsPublisher: ResultsPublisher | undefined;
}

/**
 * Creates, once per execution environment (call it at module scope), what ConverseBatch and the failure-lane
 * consumer share: traced S3, DynamoDB and SQS clients, the ledger, the model caller with its retry strategy, and the
 * optional results-queue publisher. `counter` counts the model calls (every attempt).
 */
export function publishingContext(
  settings: PublishingSettings,
  counter?: ModelCallCounter,
): PublishingContext {
  const bedrock = traced(bedrockRuntimeClient(settings.MAX_ATTEMPTS, counter));
  const s3 = traced(new S3Client({}));
  const ddb = traced(new DynamoDBClient({}));
  const sqs = traced(new SQSClient({}));
  const ledger = new Ledger({
    client: DynamoDBDocumentClient.from(ddb),
    tableName: settings.LEDGER_TABLE,
    ttlDays: settings.LEDGER_TTL_DAYS,
  });
  return {
    s3,
    ddb,
    sqs,
    ledger,
    callModel: bedrockCaller(
      bedrock,
      settings.MODEL_ID,
      modelFamily(settings.MODEL_ID, settings.MODEL_FORMAT),
    ),
    resultsPublisher: resultsPublisherFromEnv(sqs),
  };
}
