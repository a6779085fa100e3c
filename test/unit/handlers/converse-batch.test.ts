import 'aws-sdk-client-mock-jest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeEach, describe, expect, it, jest } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import {
  processBatch,
  toConverseInput,
  type ConverseBatchDeps,
  type ModelCaller,
} from '../../../lambda/converse-batch';
import { batchIdOf } from '../../../lambda/shared/batches';
import type { BatchEvent, FailureLine, ResultLine, Usage, WorkItem } from '../../../lambda/shared/contracts';
import { FailureLaneSender } from '../../../lambda/shared/failure-lane';
import { Ledger } from '../../../lambda/shared/ledger';
import { awsError, FakeLedgerTable, FakeS3, recordSqs, type SentBatch } from './helpers';

const s3Mock = mockClient(S3Client);
const ddbMock = mockClient(DynamoDBDocumentClient);
const sqsMock = mockClient(SQSClient);

const OUT = 'output-bucket';
const TABLE = 'ledger-table';
const QUEUE = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures';
const DLQ = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures-dlq';
const RUN = 'run-7';
const SCOPE = 'test/model';

let s3: FakeS3;
let table: FakeLedgerTable;
let sent: SentBatch[];

function item(recordId: string, line: number): WorkItem {
  return {
    recordId,
    line,
    format: 'converse',
    modelInput: { messages: [{ role: 'user', content: [{ text: `question ${recordId}` }] }] },
  };
}

function batch(...items: WorkItem[]): BatchEvent {
  return { BatchInput: { runId: RUN, ledgerScope: SCOPE }, Items: items };
}

function usage(input: number, output: number): Usage {
  return { inputTokens: input, outputTokens: output, totalTokens: input + output };
}

/** A model that answers every record, except the ones given an error. */
function model(errors: Record<string, Error> = {}): jest.Mock<ModelCaller> {
  return jest.fn<ModelCaller>(async (work) => {
    const err = errors[work.recordId];
    if (err) throw err;
    return {
      modelOutput: {
        output: { message: { role: 'assistant', content: [{ text: `answer ${work.recordId}` }] } },
      },
      usage: usage(10, 5),
    };
  });
}

function deps(callModel: ModelCaller, remainingMs = 280_000): ConverseBatchDeps {
  return {
    s3: new S3Client({}),
    ledger: new Ledger({
      client: DynamoDBDocumentClient.from(new DynamoDBClient({})),
      tableName: TABLE,
      ttlDays: 30,
      now: () => 1_000_000_000,
    }),
    failureLane: new FailureLaneSender(new SQSClient({}), QUEUE, DLQ),
    callModel,
    outputBucket: OUT,
    itemConcurrency: 4,
    remainingMs: () => remainingMs,
  };
}

function resultsKey(ev: BatchEvent): string {
  return `runs/${RUN}/results/${batchIdOf(
    RUN,
    ev.Items.map((i) => i.recordId),
  )}.jsonl`;
}

function failuresKey(ev: BatchEvent): string {
  return `runs/${RUN}/failures/${batchIdOf(
    RUN,
    ev.Items.map((i) => i.recordId),
  )}.jsonl`;
}

beforeEach(() => {
  s3Mock.reset();
  ddbMock.reset();
  sqsMock.reset();
  s3 = new FakeS3(s3Mock).install();
  table = new FakeLedgerTable(ddbMock, TABLE).install();
  sent = recordSqs(sqsMock);
});

describe('processBatch: a clean batch', () => {
  const ev = batch(item('r1', 1), item('r2', 2), item('r3', 5));

  it('writes every answer to runs/<runId>/results/<batchId>.jsonl in item order', async () => {
    const summary = await processBatch(ev, deps(model()));
    expect(resultsKey(ev)).toMatch(/^runs\/run-7\/results\/[0-9a-f]{20}\.jsonl$/);
    const lines = s3.lines<ResultLine>(OUT, resultsKey(ev));
    expect(lines.map((l) => l.recordId)).toEqual(['r1', 'r2', 'r3']);
    expect(lines[0]).toEqual({
      recordId: 'r1',
      modelOutput: { output: { message: { role: 'assistant', content: [{ text: 'answer r1' }] } } },
      usage: { inputTokens: 10, outputTokens: 5, totalTokens: 15 },
    });
    expect(summary).toEqual({
      batchId: batchIdOf(RUN, ['r1', 'r2', 'r3']),
      records: 3,
      succeeded: 3,
      failed: 0,
      skipped: 0,
      throttled: 0,
      inputTokens: 30,
      outputTokens: 15,
    });
  });

  it('names the batch deterministically from the run and its records', () => {
    expect(batchIdOf(RUN, ['r1', 'r2'])).toBe(batchIdOf(RUN, ['r1', 'r2']));
    expect(batchIdOf(RUN, ['r1', 'r2'])).not.toBe(batchIdOf(RUN, ['r2', 'r1']));
    expect(batchIdOf(RUN, ['r1', 'r2'])).not.toBe(batchIdOf('run-8', ['r1', 'r2']));
    expect(batchIdOf(RUN, ['r1r2'])).not.toBe(batchIdOf(RUN, ['r1', 'r2']));
  });

  it('claims each record conditionally, then marks it published after the results are written', async () => {
    const resultsDurable: boolean[] = [];
    table.onPublish = () => resultsDurable.push(s3.lines(OUT, resultsKey(ev)).length === 3);
    await processBatch(ev, deps(model()));
    expect(ddbMock).toHaveReceivedCommandTimes(UpdateCommand, 6);
    expect(ddbMock).toHaveReceivedCommandWith(UpdateCommand, {
      TableName: TABLE,
      Key: { pk: `${SCOPE}#r1` },
      ConditionExpression:
        'attribute_not_exists(pk) OR runId = :run OR (#s = :claimed AND claimedAt < :stale)',
      ExpressionAttributeValues: expect.objectContaining({ ':run': RUN, ':rid': 'r1', ':scope': SCOPE }),
    });
    expect(ddbMock).toHaveReceivedCommandWith(UpdateCommand, {
      Key: { pk: `${SCOPE}#r3` },
      UpdateExpression: 'SET #s = :published, publishedAt = :now',
      ConditionExpression: 'runId = :run',
      ExpressionAttributeValues: expect.objectContaining({ ':published': 'published', ':run': RUN }),
    });
    expect(table.claims.sort()).toEqual(['r1', 'r2', 'r3']);
    expect(table.publishes.sort()).toEqual(['r1', 'r2', 'r3']);
    // The results file held every answer before the first record was marked published.
    expect(resultsDurable).toEqual([true, true, true]);
  });

  it('deletes a failures file an earlier attempt of the same batch left behind', async () => {
    s3.putLines(OUT, failuresKey(ev), [
      { recordId: 'r2', stage: 'converse', error: { code: 'ThrottlingException', message: 'x' } },
    ]);
    await processBatch(ev, deps(model()));
    expect(s3Mock).toHaveReceivedCommandWith(DeleteObjectCommand, { Bucket: OUT, Key: failuresKey(ev) });
    expect(s3.text(OUT, failuresKey(ev))).toBeUndefined();
    expect(sqsMock).not.toHaveReceivedAnyCommand();
  });
});

describe('processBatch: records that fail never fail the batch', () => {
  const throttle = Object.assign(awsError('ThrottlingException', 429, 'Too many requests', true), {
    $metadata: { httpStatusCode: 429, attempts: 3 },
  });
  const invalid = awsError('ValidationException', 400, 'messages: first turn must be user');
  const ev = batch(item('ok', 1), item('slow', 2), item('bad', 3), item('theirs', 4));

  let summary: Awaited<ReturnType<typeof processBatch>>;
  let callModel: jest.Mock<ModelCaller>;
  beforeEach(async () => {
    table.heldByOthers.add('theirs');
    callModel = model({ slow: throttle, bad: invalid });
    summary = await processBatch(ev, deps(callModel));
  });

  it('counts each outcome and the tokens of the published answers only', () => {
    expect(summary).toMatchObject({
      records: 4,
      succeeded: 1,
      failed: 2,
      skipped: 1,
      throttled: 1,
      inputTokens: 10,
      outputTokens: 5,
    });
    expect(summary.succeeded + summary.failed + summary.skipped).toBe(summary.records);
  });

  it('leaves a record claimed by another run out of the results and unpublished', () => {
    expect(s3.lines<ResultLine>(OUT, resultsKey(ev)).map((l) => l.recordId)).toEqual(['ok']);
    expect(table.publishes).toEqual(['ok']);
  });

  it('writes a failure line per failed record, saying whether a retry may help', () => {
    expect(s3.lines<FailureLine>(OUT, failuresKey(ev))).toEqual([
      {
        recordId: 'slow',
        line: 2,
        stage: 'converse',
        error: {
          code: 'ThrottlingException',
          message: "throttled by the model's quota (after 3 attempts): Too many requests",
          retryable: true,
        },
      },
      {
        recordId: 'bad',
        line: 3,
        stage: 'converse',
        error: {
          code: 'ValidationException',
          message: 'the model API rejected the request: messages: first turn must be user',
          retryable: false,
        },
      },
    ]);
    expect(s3Mock).not.toHaveReceivedCommand(DeleteObjectCommand);
  });

  it('sends the throttled record with its request to the failure queue, the invalid one to the DLQ without it', () => {
    const toQueue = sent.filter((b) => b.queueUrl === QUEUE).flatMap((b) => b.messages);
    const toDlq = sent.filter((b) => b.queueUrl === DLQ).flatMap((b) => b.messages);
    expect(toQueue).toEqual([
      {
        recordId: 'slow',
        line: 2,
        stage: 'converse',
        error: expect.objectContaining({ code: 'ThrottlingException', retryable: true }),
        runId: RUN,
        ledgerScope: SCOPE,
        format: 'converse',
        modelInput: item('slow', 2).modelInput,
      },
    ]);
    expect(toDlq).toEqual([
      expect.objectContaining({ recordId: 'bad', error: expect.objectContaining({ retryable: false }) }),
    ]);
    expect(toDlq[0]?.modelInput).toBeUndefined();
    expect(sqsMock).toHaveReceivedCommandWith(SendMessageBatchCommand, {
      QueueUrl: DLQ,
      Entries: [
        expect.objectContaining({
          MessageAttributes: { errorCode: { DataType: 'String', StringValue: 'ValidationException' } },
        }),
      ],
    });
  });

  it('calls the model once per record', () => {
    expect(callModel.mock.calls.map(([w]) => w.recordId).sort()).toEqual(['bad', 'ok', 'slow', 'theirs']);
  });
});

describe('processBatch: time and dependencies', () => {
  it('marks records NotAttempted (retryable) when the invocation has no time left for them', async () => {
    const callModel = model();
    const ev = batch(item('a', 1), item('b', 2));
    const summary = await processBatch(ev, deps(callModel, 10_000));
    expect(callModel).not.toHaveBeenCalled();
    expect(summary).toMatchObject({ succeeded: 0, failed: 2, skipped: 0 });
    const failures = s3.lines<FailureLine>(OUT, failuresKey(ev));
    expect(failures.map((f) => f.error)).toEqual([
      {
        code: 'NotAttempted',
        message: 'the batch ran out of time before this record was sent; retry it',
        retryable: true,
      },
      {
        code: 'NotAttempted',
        message: 'the batch ran out of time before this record was sent; retry it',
        retryable: true,
      },
    ]);
    expect(sent.every((b) => b.queueUrl === QUEUE)).toBe(true);
    expect(sent.flatMap((b) => b.messages).map((m) => m.modelInput)).toEqual([
      item('a', 1).modelInput,
      item('b', 2).modelInput,
    ]);
    expect(s3.text(OUT, resultsKey(ev))).toBeUndefined();
    expect(ddbMock).not.toHaveReceivedAnyCommand();
  });

  it('aborts a model call that outlives the invocation and records it as a retryable TimeoutError', async () => {
    // Only the timers: streams and the SDK mocks still need the real microtask and immediate queues.
    jest.useFakeTimers({
      doNotFake: [
        'nextTick',
        'setImmediate',
        'clearImmediate',
        'queueMicrotask',
        'Date',
        'hrtime',
        'performance',
      ],
    });
    try {
      const hang: ModelCaller = (_work, signal) =>
        new Promise((_resolve, reject) =>
          signal.addEventListener('abort', () => reject(awsError('AbortError', 0, 'aborted'))),
        );
      const ev = batch(item('a', 1));
      const running = processBatch(ev, deps(hang, 31_000));
      await jest.advanceTimersByTimeAsync(1_000);
      jest.useRealTimers();
      const summary = await running;
      expect(summary).toMatchObject({ failed: 1 });
      expect(s3.lines<FailureLine>(OUT, failuresKey(ev))[0]?.error).toMatchObject({
        code: 'TimeoutError',
        retryable: true,
      });
    } finally {
      jest.useRealTimers();
    }
  });

  it('surfaces a throttled S3 write (503) as TransientDependencyError, the name the workflow retries', async () => {
    s3Mock.on(PutObjectCommand).rejects(awsError('SlowDown', 503, 'Please reduce your request rate.'));
    const err = processBatch(batch(item('a', 1)), deps(model()));
    await expect(err).rejects.toMatchObject({ name: 'TransientDependencyError' });
    await expect(err).rejects.toThrow('S3 PutObject failed transiently: Please reduce your request rate.');
    expect(table.publishes).toEqual([]);

    const definition = JSON.parse(
      readFileSync(join(__dirname, '..', '..', '..', 'statemachine', 'pipeline.asl.json'), 'utf8'),
    ) as {
      States: {
        FanOut: { ItemProcessor: { States: { ConverseBatch: { Retry: { ErrorEquals: string[] }[] } } } };
      };
    };
    const retried = definition.States.FanOut.ItemProcessor.States.ConverseBatch.Retry.flatMap(
      (r) => r.ErrorEquals,
    );
    expect(retried).toContain('TransientDependencyError');
  });

  it('surfaces a throttled ledger claim as TransientDependencyError', async () => {
    ddbMock.on(UpdateCommand).rejects(awsError('ProvisionedThroughputExceededException', 400));
    await expect(processBatch(batch(item('a', 1)), deps(model()))).rejects.toMatchObject({
      name: 'TransientDependencyError',
    });
  });

  it('keeps, on a retry, the answers an earlier attempt already published, without asking the model again', async () => {
    const ev = batch(item('a', 1), item('b', 2));
    const earlier: ResultLine = { recordId: 'a', modelOutput: { text: 'first answer' }, usage: usage(7, 3) };
    s3.putLines(OUT, resultsKey(ev), [earlier]);
    // This time the model is throttled for the record the earlier attempt already answered and published.
    const callModel = model({ a: awsError('ThrottlingException', 429, 'slow down', true) });
    const summary = await processBatch(ev, deps(callModel));
    expect(callModel.mock.calls.map(([w]) => w.recordId)).toEqual(['b']);
    expect(s3.lines<ResultLine>(OUT, resultsKey(ev))).toEqual([
      earlier,
      expect.objectContaining({ recordId: 'b' }),
    ]);
    expect(summary).toMatchObject({ succeeded: 2, failed: 0, inputTokens: 17, outputTokens: 8 });
    expect(table.publishes.sort()).toEqual(['a', 'b']);
  });
});

describe('toConverseInput', () => {
  it('passes the Converse fields through with the model id', () => {
    const input = toConverseInput('model-x', {
      messages: [{ role: 'user', content: [{ text: 'hi' }] }],
      system: [{ text: 's' }],
      inferenceConfig: { maxTokens: 5 },
    });
    expect(input).toEqual({
      modelId: 'model-x',
      messages: [{ role: 'user', content: [{ text: 'hi' }] }],
      system: [{ text: 's' }],
      inferenceConfig: { maxTokens: 5 },
    });
  });

  it('rejects fields Converse does not have as a ValidationException naming them', () => {
    let thrown: unknown;
    try {
      toConverseInput('model-x', { messages: [], max_tokens: 5, temperature: 0 });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(Error);
    expect(thrown).toMatchObject({
      name: 'ValidationException',
      message: 'modelInput has fields Converse does not accept: max_tokens, temperature',
    });
  });
});
