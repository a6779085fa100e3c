import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { BedrockRuntimeClient, ConverseCommand, ThrottlingException } from '@aws-sdk/client-bedrock-runtime';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { S3Client } from '@aws-sdk/client-s3';
import { SendMessageBatchCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { ResultLine } from '../../../../lambda/shared/contracts';
import { Ledger } from '../../../../lambda/shared/ledger';
import { resultsDedupeId } from '../../../../lambda/shared/results-queue';
import { laneResultKey } from '../../../../lambda/failure-lane/consumer';
import { FakeS3, lambdaContext } from '../helpers';
import {
  createRunsTable,
  freshLedger,
  retryable,
  sqsEvent,
  sqsRecord,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from './lane-fixtures';
import { useClientMocks } from '../../../support/aws-mocks';
import { FAILURE_DLQ_URL as DLQ, OUTPUT_BUCKET as OUT } from '../../../support/names';

// The Lambda entry as deployed: clients built at import from the environment (test/setup/lambda-env.ts plus a results
// queue); S3, SQS, EventBridge and Bedrock mocked, DynamoDB a real dynalite (the ledger and runs tables).
const [s3Mock, sqsMock, bedrockMock, eventsMock] = useClientMocks(
  S3Client,
  SQSClient,
  BedrockRuntimeClient,
  EventBridgeClient,
);
let server: LedgerServer;
let ledger: Ledger;
let tables = 0;

const RESULTS = 'https://sqs.us-east-1.amazonaws.com/123456789012/results.fifo';

let consumer: typeof import('../../../../lambda/failure-lane-consumer');

beforeAll(async () => {
  server = await startLedgerServer();
  const ledgerTable = `ledger-entry-${++tables}`;
  const runsTable = `runs-entry-${tables}`;
  ({ ledger } = await freshLedger(server, ledgerTable));
  await createRunsTable(server, runsTable);
  const saved = { ...process.env };
  const env = {
    RESULTS_QUEUE_URL: RESULTS,
    MAX_RECEIVE_COUNT: '4',
    MAX_ATTEMPTS: '1',
    LEDGER_TABLE: ledgerTable,
    RUNS_TABLE: runsTable,
    AWS_ENDPOINT_URL_DYNAMODB: server.dynamodb.endpoint,
  };
  Object.assign(process.env, env);
  try {
    // Loaded after the environment is set, from the same module registry as the mocks.
    consumer =
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
      require('../../../../lambda/failure-lane-consumer') as typeof import('../../../../lambda/failure-lane-consumer');
  } finally {
    // The SDK resolves its endpoint at the first request: the DynamoDB endpoint stays set until afterAll.
    for (const k of Object.keys(env).filter((key) => key !== 'AWS_ENDPOINT_URL_DYNAMODB')) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
});

afterAll(async () => {
  delete process.env.AWS_ENDPOINT_URL_DYNAMODB;
  await stopLedgerServer(server);
});

let s3: FakeS3;

beforeEach(() => {
  s3 = new FakeS3(s3Mock).install();
  eventsMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
  sqsMock.on(SendMessageCommand).resolves({ MessageId: 'd1' });
  sqsMock.on(SendMessageBatchCommand).callsFake(async (input: { Entries: { Id: string }[] }) => ({
    Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
  }));
});

describe('failure-lane consumer handler', () => {
  it('retries through Converse with the configured model, publishes, and reports throttled ones as item failures', async () => {
    bedrockMock
      .on(ConverseCommand)
      .callsFake(async (input: { messages: { content: { text: string }[] }[] }) => {
        if (['question slow', 'question last'].includes(input.messages[0]?.content[0]?.text ?? ''))
          throw new ThrottlingException({ message: 'Too many requests', $metadata: { httpStatusCode: 429 } });
        return {
          output: { message: { role: 'assistant', content: [{ text: 'ok' }] } },
          stopReason: 'end_turn',
          usage: { inputTokens: 5, outputTokens: 1, totalTokens: 6 },
        };
      });
    const response = await consumer.handler(
      sqsEvent(
        sqsRecord('m-ok', retryable('fine')),
        sqsRecord('m-slow', retryable('slow')),
        sqsRecord('m-last', retryable('last'), 4),
      ),
      lambdaContext(),
    );
    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'm-slow' }] });
    expect(bedrockMock).toHaveReceivedCommandWith(ConverseCommand, { modelId: process.env.MODEL_ID });
    expect((await ledger.get('scope-a', 'fine'))?.status).toBe('published');
    // Handed back for the next receive; on its last receive failed for good.
    expect((await ledger.get('scope-a', 'slow'))?.status).toBe('queued');
    expect((await ledger.get('scope-a', 'last'))?.status).toBe('failed');
    const key = laneResultKey('run-9', 'fine');
    expect(s3.lines<ResultLine>(OUT, key)).toEqual([
      {
        recordId: 'fine',
        modelOutput: {
          output: { message: { role: 'assistant', content: [{ text: 'ok' }] } },
          stopReason: 'end_turn',
        },
        usage: { inputTokens: 5, outputTokens: 1, totalTokens: 6 },
      },
    ]);
    expect(sqsMock).toHaveReceivedCommandWith(SendMessageBatchCommand, {
      QueueUrl: RESULTS,
      Entries: [expect.objectContaining({ MessageDeduplicationId: resultsDedupeId('scope-a', 'fine') })],
    });
    // Its last receive (MAX_RECEIVE_COUNT): to the DLQ with the reason rather than by the redrive policy.
    expect(sqsMock).toHaveReceivedCommandTimes(SendMessageCommand, 1);
    expect(sqsMock).toHaveReceivedCommandWith(SendMessageCommand, {
      QueueUrl: DLQ,
      MessageAttributes: expect.objectContaining({
        errorCode: { DataType: 'String', StringValue: 'ThrottlingException' },
      }),
    });
  });

  it('the environment schema names what is missing', () => {
    const parsed = consumer.failureLaneConsumerEnvSchema.safeParse({});
    expect(parsed.success).toBe(false);
    const missing = parsed.success ? [] : parsed.error.issues.map((i) => i.path.join('.'));
    expect(missing).toEqual(
      expect.arrayContaining([
        'OUTPUT_BUCKET',
        'LEDGER_TABLE',
        'RUNS_TABLE',
        'EVENT_BUS_NAME',
        'CLAIM_LEASE_SECONDS',
        'FAILURE_DLQ_URL',
        'MODEL_ID',
        'MAX_ATTEMPTS',
      ]),
    );
    expect(missing).not.toContain('RESULTS_QUEUE_URL');
    expect(missing).not.toContain('MAX_RECEIVE_COUNT');
  });
});
