import 'aws-sdk-client-mock-jest';
import { beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { BedrockRuntimeClient, ConverseCommand, ThrottlingException } from '@aws-sdk/client-bedrock-runtime';
import { S3Client } from '@aws-sdk/client-s3';
import { SendMessageBatchCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { ResultLine } from '../../../lambda/shared/contracts';
import { resultsDedupeId } from '../../../lambda/shared/results-queue';
import { FakeLedgerTable, FakeS3, lambdaContext } from '../handlers/helpers';
import { retryable, sqsEvent, sqsRecord } from './lane-fixtures';

// The Lambda entry as deployed: clients built at import from the environment (test/setup/lambda-env.ts plus a results
// queue), every AWS client mocked.
const s3Mock = mockClient(S3Client);
const ddbMock = mockClient(DynamoDBDocumentClient);
const sqsMock = mockClient(SQSClient);
const bedrockMock = mockClient(BedrockRuntimeClient);

const RESULTS = 'https://sqs.us-east-1.amazonaws.com/123456789012/results.fifo';
const OUT = process.env.OUTPUT_BUCKET ?? '';
const DLQ = process.env.FAILURE_DLQ_URL ?? '';

let consumer: typeof import('../../../lambda/failure-lane-consumer');

beforeAll(() => {
  const saved = { ...process.env };
  Object.assign(process.env, { RESULTS_QUEUE_URL: RESULTS, MAX_RECEIVE_COUNT: '4', MAX_ATTEMPTS: '1' });
  try {
    // Loaded after the environment is set, from the same module registry as the mocks.
    consumer =
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
      require('../../../lambda/failure-lane-consumer') as typeof import('../../../lambda/failure-lane-consumer');
  } finally {
    for (const k of ['RESULTS_QUEUE_URL', 'MAX_RECEIVE_COUNT', 'MAX_ATTEMPTS']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
});

let s3: FakeS3;
let table: FakeLedgerTable;

beforeEach(() => {
  for (const m of [s3Mock, ddbMock, sqsMock, bedrockMock]) m.reset();
  s3 = new FakeS3(s3Mock).install();
  table = new FakeLedgerTable(ddbMock, process.env.LEDGER_TABLE ?? '').install();
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
        if (input.messages[0]?.content[0]?.text === 'question slow')
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
        sqsRecord('m-last', retryable('slow'), 4),
      ),
      lambdaContext(),
    );
    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'm-slow' }] });
    expect(bedrockMock).toHaveReceivedCommandWith(ConverseCommand, { modelId: process.env.MODEL_ID });
    expect(table.publishes).toEqual(['fine']);
    const key = consumer.laneResultKey('run-9', 'fine');
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
        'FAILURE_DLQ_URL',
        'MODEL_ID',
        'MAX_ATTEMPTS',
      ]),
    );
    expect(missing).not.toContain('RESULTS_QUEUE_URL');
    expect(missing).not.toContain('MAX_RECEIVE_COUNT');
  });
});
