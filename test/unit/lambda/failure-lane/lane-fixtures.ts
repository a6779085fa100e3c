import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { SQSEvent, SQSRecord } from 'aws-lambda';
import type { FailureLaneMessage } from '../../../../lambda/shared/contracts';
import { Ledger } from '../../../../lambda/shared/ledger';
import { startDynamoDbEmulator, type DynamoDbEmulator } from '@corpus-pipeline/local-aws/cloud/emulators';

/**
 * Fixtures for the failure-lane tests: a ledger table on dynalite (real conditional writes), failure-lane messages and
 * SQS events as Lambda's event source mapping delivers them.
 */

/** A DynamoDB emulator (in memory) with a document client bound to it. */
export interface LedgerServer {
  dynamodb: DynamoDbEmulator;
  doc: DynamoDBDocumentClient;
  raw: DynamoDBClient;
}

/** Starts the local runtime's DynamoDB emulator in memory on a free loopback port. */
export async function startLedgerServer(): Promise<LedgerServer> {
  const dynamodb = await startDynamoDbEmulator();
  const raw = new DynamoDBClient({
    endpoint: dynamodb.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  return { dynamodb, raw, doc: DynamoDBDocumentClient.from(raw) };
}

/** Stops the server. */
export async function stopLedgerServer(ledger: LedgerServer): Promise<void> {
  ledger.raw.destroy();
  await ledger.dynamodb.stop();
}

/** Creates a fresh ledger table (`pk` string hash key) and a Ledger on it. */
export async function freshLedger(
  ledger: LedgerServer,
  name: string,
): Promise<{ table: string; ledger: Ledger }> {
  await ledger.raw.send(
    new CreateTableCommand({
      TableName: name,
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
  return { table: name, ledger: new Ledger({ client: ledger.doc, tableName: name, ttlDays: 30 }) };
}

/** Creates a runs table as the stack declares it (`runId` hash, `item` range: lib/ledger.ts RUNS_TABLE_KEYS). */
export async function createRunsTable(ledger: LedgerServer, name: string): Promise<void> {
  await ledger.raw.send(
    new CreateTableCommand({
      TableName: name,
      AttributeDefinitions: [
        { AttributeName: 'runId', AttributeType: 'S' },
        { AttributeName: 'item', AttributeType: 'S' },
      ],
      KeySchema: [
        { AttributeName: 'runId', KeyType: 'HASH' },
        { AttributeName: 'item', KeyType: 'RANGE' },
      ],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
}

/** A retryable failure-lane message that carries its request. */
export function retryable(recordId: string, overrides: Partial<FailureLaneMessage> = {}): FailureLaneMessage {
  return {
    recordId,
    line: 3,
    stage: 'converse',
    runId: 'run-9',
    ledgerScope: 'scope-a',
    error: { code: 'ThrottlingException', message: 'throttled', retryable: true },
    format: 'converse',
    modelInput: { messages: [{ role: 'user', content: [{ text: `question ${recordId}` }] }] },
    ...overrides,
  };
}

/** One SQS record as the event source mapping delivers it. */
export function sqsRecord(messageId: string, body: unknown, receiveCount = 1): SQSRecord {
  return {
    messageId,
    receiptHandle: `rh-${messageId}`,
    body: typeof body === 'string' ? body : JSON.stringify(body),
    attributes: {
      ApproximateReceiveCount: String(receiveCount),
      SentTimestamp: '1700000000000',
      SenderId: 'AIDA',
      ApproximateFirstReceiveTimestamp: '1700000000000',
    },
    messageAttributes: {},
    md5OfBody: 'x',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:us-east-1:123456789012:failures',
    awsRegion: 'us-east-1',
  };
}

/** An SQS event of the given records. */
export function sqsEvent(...records: SQSRecord[]): SQSEvent {
  return { Records: records };
}
