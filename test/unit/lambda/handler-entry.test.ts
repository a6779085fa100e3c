import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import {
  BedrockRuntimeClient,
  ConverseCommand,
  InvokeModelCommand,
  type InvokeModelCommandOutput,
} from '@aws-sdk/client-bedrock-runtime';
import {
  BedrockClient,
  GetFoundationModelAvailabilityCommand,
  GetFoundationModelCommand,
  GetInferenceProfileCommand,
} from '@aws-sdk/client-bedrock';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { handler as converseHandler } from '../../../lambda/converse-batch';
import { handler as finalizeHandler } from '../../../lambda/finalize';
import { handler as planHandler } from '../../../lambda/plan';
import { batchIdOf } from '../../../lambda/converse/item-batch-id';
import type {
  ItemBatchEvent,
  FailureLine,
  PlanOutput,
  PlanPrepared,
  ResultLine,
} from '../../../lambda/shared/contracts';
import { Ledger } from '../../../lambda/shared/ledger';
import {
  createRunsTable,
  freshLedger,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from './failure-lane/lane-fixtures';
import { FakeS3, fixture, lambdaContext, recordSqs, type SentBatch } from './helpers';
import { useClientMocks } from '../../support/aws-mocks';
import {
  FAILURE_DLQ_URL as DLQ,
  FAILURE_QUEUE_URL as QUEUE,
  LEDGER_TABLE,
  MODEL_ID as MODEL,
  OUTPUT_BUCKET as OUT,
  RUNS_TABLE,
} from '../../support/names';

// The handlers build their clients at import from the environment test/setup/lambda-env.ts gives them; mocking the
// client classes reaches those instances, and DynamoDB is a real dynalite (the SDK resolves the endpoint at its first
// request). Idempotency is disabled there (POWERTOOLS_IDEMPOTENCY_DISABLED).
const [s3Mock, sqsMock, bedrockMock, ebMock, controlMock] = useClientMocks(
  S3Client,
  SQSClient,
  BedrockRuntimeClient,
  EventBridgeClient,
  BedrockClient,
);

let s3: FakeS3;
let sent: SentBatch[];
let server: LedgerServer;
let ledger: Ledger;

beforeAll(async () => {
  server = await startLedgerServer();
  process.env.AWS_ENDPOINT_URL_DYNAMODB = server.dynamodb.endpoint;
  ({ ledger } = await freshLedger(server, LEDGER_TABLE));
  await createRunsTable(server, RUNS_TABLE);
});

afterAll(async () => {
  delete process.env.AWS_ENDPOINT_URL_DYNAMODB;
  await stopLedgerServer(server);
});

beforeEach(() => {
  s3 = new FakeS3(s3Mock).install();
  sent = recordSqs(sqsMock);
});

describe('ConverseBatch handler, end to end with mocked AWS', () => {
  const event: ItemBatchEvent = {
    BatchInput: { runId: 'exec-1', ledgerScope: 'scope' },
    Items: [
      {
        recordId: 'c1',
        line: 1,
        format: 'converse',
        modelInput: {
          messages: [{ role: 'user', content: [{ text: 'Hi' }] }],
          inferenceConfig: { maxTokens: 20 },
        },
      },
      {
        recordId: 'n1',
        line: 2,
        format: 'native',
        // An Amazon Nova native body, MODEL_ID's family: its answer's tokens count too.
        modelInput: {
          schemaVersion: 'messages-v1',
          messages: [{ role: 'user', content: [{ text: 'Hi' }] }],
          inferenceConfig: { max_new_tokens: 20 },
        },
      },
      {
        recordId: 'x1',
        line: 3,
        format: 'converse',
        modelInput: { messages: [{ role: 'user', content: [{ text: 'Hi' }] }], max_tokens: 20 },
      },
    ],
  };

  it('calls Converse and InvokeModel, writes results and failures, and returns the summary', async () => {
    bedrockMock.on(ConverseCommand).resolves({
      output: { message: { role: 'assistant', content: [{ text: 'Hello!' }] } },
      stopReason: 'end_turn',
      usage: { inputTokens: 8, outputTokens: 3, totalTokens: 11 },
      metrics: { latencyMs: 5 },
    });
    const nativeBody = {
      output: { message: { role: 'assistant', content: [{ text: 'Hey' }] } },
      stopReason: 'end_turn',
      usage: { inputTokens: 6, outputTokens: 2, totalTokens: 8 },
    };
    bedrockMock.on(InvokeModelCommand).resolves({
      body: new TextEncoder().encode(JSON.stringify(nativeBody)),
      contentType: 'application/json',
    } as unknown as InvokeModelCommandOutput);

    const summary = await converseHandler(event, lambdaContext());

    expect(summary).toEqual({
      batchId: batchIdOf('exec-1', ['c1', 'n1', 'x1']),
      records: 3,
      succeeded: 2,
      failed: 1,
      skipped: 0,
      queued: 0,
      inputTokens: 14,
      outputTokens: 5,
      // The mocked client answers below the SDK's middleware: no HTTP attempt reaches the counter.
      modelCalls: { total: 0, throttled: 0, retried: 0 },
    });
    expect(bedrockMock).toHaveReceivedCommandWith(ConverseCommand, {
      modelId: MODEL,
      messages: [{ role: 'user', content: [{ text: 'Hi' }] }],
      inferenceConfig: { maxTokens: 20 },
    });
    expect(bedrockMock).toHaveReceivedCommandTimes(ConverseCommand, 1); // x1 never reached the API
    expect(bedrockMock).toHaveReceivedCommandWith(InvokeModelCommand, {
      modelId: MODEL,
      body: JSON.stringify(event.Items[1]?.modelInput),
      contentType: 'application/json',
      accept: 'application/json',
    });
    expect(s3.lines<ResultLine>(OUT, `runs/exec-1/results/${summary.batchId}.jsonl`)).toEqual([
      {
        recordId: 'c1',
        modelOutput: {
          output: { message: { role: 'assistant', content: [{ text: 'Hello!' }] } },
          stopReason: 'end_turn',
        },
        usage: { inputTokens: 8, outputTokens: 3, totalTokens: 11 },
      },
      { recordId: 'n1', modelOutput: nativeBody, usage: { inputTokens: 6, outputTokens: 2, totalTokens: 8 } },
    ]);
    expect(s3.lines<FailureLine>(OUT, `runs/exec-1/failures/${summary.batchId}.jsonl`)).toEqual([
      {
        recordId: 'x1',
        line: 3,
        stage: 'converse',
        error: {
          code: 'ValidationException',
          message: expect.stringMatching(
            /^the model API rejected the request: modelInput has fields Converse does not accept: max_tokens; us\.amazon\.nova-lite-v1:0 takes a Converse request or a native Amazon Nova body/,
          ),
          retryable: false,
        },
      },
    ]);
    expect(sent.map((b) => b.queueUrl)).toEqual([DLQ]);
    const entries = await ledger.getMany('scope', ['c1', 'n1', 'x1']);
    expect([...entries.values()].map((e) => [e.recordId, e.status]).sort()).toEqual([
      ['c1', 'published'],
      ['n1', 'published'],
      ['x1', 'failed'],
    ]);
  });

  it('rejects an event that is not a Map batch with InvalidEventError', async () => {
    await expect(converseHandler({ Items: [] }, lambdaContext())).rejects.toMatchObject({
      name: 'InvalidEventError',
      message: expect.stringContaining(
        'ConverseBatch expects {BatchInput: {runId, ledgerScope}, Items: [...], childStartedAt?}',
      ),
    });
    expect(bedrockMock).not.toHaveReceivedAnyCommand();
  });
});

/** The control plane's answers for MODEL_ID (us.amazon.nova-lite-v1:0): a profile of an active model, access on. */
function modelAvailable(access: 'AVAILABLE' | 'NOT_AVAILABLE' = 'AVAILABLE'): void {
  controlMock.on(GetInferenceProfileCommand).resolves({
    inferenceProfileId: MODEL,
    inferenceProfileArn: `arn:aws:bedrock:us-east-1:123456789012:inference-profile/${MODEL}`,
    inferenceProfileName: 'US Nova Lite',
    models: [{ modelArn: 'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0' }],
    status: 'ACTIVE',
    type: 'SYSTEM_DEFINED',
  });
  controlMock.on(GetFoundationModelCommand).resolves({
    modelDetails: {
      modelArn: 'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0',
      modelId: 'amazon.nova-lite-v1:0',
      inferenceTypesSupported: ['ON_DEMAND'],
      modelLifecycle: { status: 'ACTIVE' },
    },
  });
  controlMock.on(GetFoundationModelAvailabilityCommand).resolves({
    modelId: 'amazon.nova-lite-v1:0',
    agreementAvailability: { status: 'AVAILABLE' },
    authorizationStatus: 'AUTHORIZED',
    entitlementAvailability: access,
    regionAvailability: 'AVAILABLE',
  });
}

/** Plan through its handler, step by step as the workflow invokes it: prepare, line counts, segments, merge. */
async function planThroughHandler(event: {
  runId: string;
  startedAt: string;
  input: unknown;
}): Promise<PlanOutput> {
  const prepared = (await planHandler({ phase: 'prepare', ...event }, lambdaContext())) as PlanPrepared;
  const read = <T>(key: string): T => JSON.parse(s3.text(OUT, key) ?? 'null') as T;
  const bucket = prepared.corpus.bucket;
  for (const part of read<unknown[]>(prepared.counting.key))
    await planHandler({ phase: 'count', runId: event.runId, bucket, part }, lambdaContext());
  for (const segment of read<unknown[]>(prepared.segments.key))
    await planHandler(
      {
        phase: 'segment',
        runId: event.runId,
        bucket,
        ledgerScope: prepared.ledgerScope,
        sources: prepared.corpus.sources,
        segment,
      },
      lambdaContext(),
    );
  return (await planHandler({ phase: 'merge', runId: event.runId, prepared }, lambdaContext())) as PlanOutput;
}

describe('Plan and Finalize handlers', () => {
  it('Plan fails fast, before reading the corpus, when model access is not enabled', async () => {
    modelAvailable('NOT_AVAILABLE');
    s3.put('ingest-bucket', 'corpora/c.jsonl', fixture('bad-input-corpus.jsonl'));
    await expect(
      planHandler(
        {
          phase: 'prepare',
          runId: 'exec-6',
          startedAt: '2025-01-01T00:00:00Z',
          input: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl' },
        },
        lambdaContext(),
      ),
    ).rejects.toMatchObject({
      name: 'ModelNotAvailableError',
      message: expect.stringContaining('model access is not enabled for the account'),
    });
    expect(controlMock).toHaveReceivedCommandWith(GetInferenceProfileCommand, {
      inferenceProfileIdentifier: MODEL,
    });
    expect(s3Mock.commandCalls(GetObjectCommand)).toHaveLength(0);
    expect(sent).toHaveLength(0);
  });

  it('Plan sends every bad line to the DLQ of its environment and returns the plan', async () => {
    modelAvailable();
    s3.put('ingest-bucket', 'corpora/c.jsonl', fixture('bad-input-corpus.jsonl'));
    const out = await planThroughHandler({
      runId: 'exec-2',
      startedAt: '2025-01-01T00:00:00Z',
      input: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl' },
    });
    expect(out.counts).toMatchObject({ lines: 24, records: 17, invalid: 6, toProcess: 17 });
    expect(out).toMatchObject({
      modelId: MODEL,
      ledgerScope: process.env.LEDGER_SCOPE,
      fanOut: { batchSize: 10, maxConcurrency: 4, toleratedFailurePercentage: 10 },
    });
    expect(sent.every((b) => b.queueUrl === DLQ)).toBe(true);
    expect(sqsMock).not.toHaveReceivedCommandWith(SendMessageBatchCommand, { QueueUrl: QUEUE });
  });

  it('Plan reads where its environment says corpora are: the ingest prefix, never the output bucket', async () => {
    s3.put('output-bucket', 'runs/exec-0/items.jsonl', fixture('bad-input-corpus.jsonl'));
    s3.put('ingest-bucket', 'elsewhere/c.jsonl', fixture('bad-input-corpus.jsonl'));
    for (const [runId, input] of [
      ['exec-4', { bucket: 'output-bucket', key: 'runs/exec-0/items.jsonl' }],
      ['exec-5', { bucket: 'ingest-bucket', key: 'elsewhere/c.jsonl' }],
    ] as const) {
      await expect(
        planHandler({ phase: 'prepare', runId, startedAt: '2025-01-01T00:00:00Z', input }, lambdaContext()),
      ).rejects.toMatchObject({
        name: 'InvalidRunInputError',
        message: expect.stringContaining('a corpus must be under s3://ingest-bucket/corpora/'),
      });
    }
  });

  it('Finalize puts its event on the bus of its environment', async () => {
    ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e' }] });
    const out = await finalizeHandler(
      {
        runId: 'exec-3',
        startedAt: '2025-01-01T00:00:00Z',
        state: { bucket: 'b', key: 'k', error: { Error: 'States.Runtime', Cause: 'bad path' } },
      },
      lambdaContext(),
    );
    expect(out).toMatchObject({
      status: 'FAILED',
      manifestKey: 'runs/exec-3/manifest.json',
      error: { code: 'States.Runtime', message: 'bad path' },
    });
    expect(ebMock).toHaveReceivedCommandWith(PutEventsCommand, {
      Entries: [
        expect.objectContaining({
          EventBusName: process.env.EVENT_BUS_NAME,
          DetailType: 'Corpus Run Failed',
        }),
      ],
    });
  });
});
