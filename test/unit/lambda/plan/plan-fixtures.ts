import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { PlanDeps, PlanSettings } from '../../../../lambda/plan/plan-run';
import { FailureLaneSender } from '../../../../lambda/shared/failure-lane';
import { Ledger } from '../../../../lambda/shared/ledger';
import { FAILURE_DLQ_URL, FAILURE_QUEUE_URL, LEDGER_TABLE } from '../../../support/names';

/**
 * Plan's dependencies on new SDK clients, for a test file that mocks the S3Client, DynamoDBDocumentClient and
 * SQSClient classes (useClientMocks): the ledger on LEDGER_TABLE, the failure lane on the test queues.
 */
export function mockedPlanDeps(settings: PlanSettings, batchQuotas: PlanDeps['batchQuotas']): PlanDeps {
  return {
    s3: new S3Client({}),
    ledger: new Ledger({
      client: DynamoDBDocumentClient.from(new DynamoDBClient({})),
      tableName: LEDGER_TABLE,
      ttlDays: 30,
    }),
    failureLane: new FailureLaneSender(new SQSClient({}), FAILURE_QUEUE_URL, FAILURE_DLQ_URL),
    settings,
    batchQuotas,
  };
}
