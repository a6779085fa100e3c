import 'aws-sdk-client-mock-jest';
import { afterAll, beforeAll, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { S3Client } from '@aws-sdk/client-s3';
import { SendMessageBatchCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import {
  laneResultKey,
  parseLaneMessage,
  processLaneBatch,
  processLaneRecord,
  type FailureLaneConsumerDeps,
} from '../../../lambda/failure-lane-consumer';
import type { ResultLine } from '../../../lambda/shared/contracts';
import type { Ledger } from '../../../lambda/shared/ledger';
import type { ModelCaller } from '../../../lambda/shared/model-caller';
import { resultsDedupeId, ResultsPublisher } from '../../../lambda/shared/results-queue';
import { awsError, FakeS3 } from '../handlers/helpers';
import {
  freshLedger,
  ledgerItem,
  retryable,
  sqsEvent,
  sqsRecord,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from './lane-fixtures';

// S3 and SQS are in-memory fakes behind aws-sdk-client-mock; the ledger is a real table on dynalite, so claims and
// publishes are the real conditional writes.
const s3Mock = mockClient(S3Client);
const sqsMock = mockClient(SQSClient);

const OUT = 'output-bucket';
const DLQ = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures-dlq';
const RESULTS = 'https://sqs.us-east-1.amazonaws.com/123456789012/results.fifo';
const SCOPE = 'scope-a';
const RUN = 'run-9';

let server: LedgerServer;
let tables = 0;
let table: string;
let ledger: Ledger;
let s3: FakeS3;
/** DLQ messages: body and attributes. */
let dlq: { body: Record<string, unknown>; code: string | undefined; reason: string | undefined }[];
/** Results-queue messages: parsed bodies with their dedupe ids. */
let resultsSent: { body: Record<string, unknown>; dedupeId: string | undefined }[];

beforeAll(async () => {
  server = await startLedgerServer();
});

afterAll(async () => {
  await stopLedgerServer(server);
});

beforeEach(async () => {
  s3Mock.reset();
  sqsMock.reset();
  s3 = new FakeS3(s3Mock).install();
  ({ table, ledger } = await freshLedger(server, `ledger-${++tables}`));
  dlq = [];
  resultsSent = [];
  sqsMock
    .on(SendMessageCommand)
    .callsFake(
      async (input: {
        QueueUrl: string;
        MessageBody: string;
        MessageAttributes?: Record<string, { StringValue?: string }>;
      }) => {
        expect(input.QueueUrl).toBe(DLQ);
        dlq.push({
          body: JSON.parse(input.MessageBody) as Record<string, unknown>,
          code: input.MessageAttributes?.errorCode?.StringValue,
          reason: input.MessageAttributes?.laneReason?.StringValue,
        });
        return { MessageId: `dlq-${dlq.length}` };
      },
    );
  sqsMock
    .on(SendMessageBatchCommand)
    .callsFake(
      async (input: {
        QueueUrl: string;
        Entries: { Id: string; MessageBody: string; MessageDeduplicationId?: string }[];
      }) => {
        expect(input.QueueUrl).toBe(RESULTS);
        for (const e of input.Entries) {
          resultsSent.push({
            body: JSON.parse(e.MessageBody) as Record<string, unknown>,
            dedupeId: e.MessageDeduplicationId,
          });
        }
        return {
          Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
        };
      },
    );
});

function answer(recordId: string): { modelOutput: unknown; usage: ResultLine['usage'] } {
  return {
    modelOutput: { output: { message: { role: 'assistant', content: [{ text: `answer ${recordId}` }] } } },
    usage: { inputTokens: 7, outputTokens: 3, totalTokens: 10 },
  };
}

/** A model answering every record but those given an error. */
function model(errors: Record<string, Error> = {}): jest.Mock<ModelCaller> {
  return jest.fn<ModelCaller>(async (item) => {
    const err = errors[item.recordId];
    if (err) throw err;
    return answer(item.recordId);
  });
}

function deps(
  callModel: ModelCaller,
  overrides: Partial<FailureLaneConsumerDeps> = {},
): FailureLaneConsumerDeps {
  const sqs = new SQSClient({});
  return {
    s3: new S3Client({}),
    sqs,
    ledger,
    callModel,
    dlqUrl: DLQ,
    outputBucket: OUT,
    resultsPublisher: new ResultsPublisher(sqs, RESULTS, ledger, { sleep: async () => undefined }),
    remainingMs: () => 120_000,
    ...overrides,
  };
}

describe('a retryable failure answered on retry', () => {
  it('is published once: results file, results queue, ledger; a redelivery makes no second model call', async () => {
    const callModel = model();
    const msg = retryable('r1');
    const first = await processLaneBatch(sqsEvent(sqsRecord('m1', msg)), deps(callModel));
    expect(first.batchItemFailures).toEqual([]);
    expect(callModel).toHaveBeenCalledTimes(1);
    expect(callModel.mock.calls[0]?.[0]).toEqual({
      recordId: 'r1',
      format: 'converse',
      modelInput: msg.modelInput,
    });

    const key = laneResultKey(RUN, 'r1');
    expect(key).toMatch(/^runs\/run-9\/results\/lane-[0-9a-f]{32}\.jsonl$/);
    expect(s3.lines<ResultLine>(OUT, key)).toEqual([{ recordId: 'r1', ...answer('r1') }]);
    expect(await ledgerItem(server, table, SCOPE, 'r1')).toMatchObject({ status: 'published', runId: RUN });
    expect(resultsSent).toEqual([
      {
        body: { runId: RUN, recordId: 'r1', ledgerScope: SCOPE, resultKey: key, usage: answer('r1').usage },
        dedupeId: resultsDedupeId(SCOPE, 'r1'),
      },
    ]);

    // The same message again (a redelivery, or a redrive after it succeeded): dropped, no model call.
    const again = await processLaneRecord(sqsRecord('m1', msg, 2), deps(callModel));
    expect(again).toEqual({ kind: 'already-published', recordId: 'r1' });
    expect(callModel).toHaveBeenCalledTimes(1);
    expect(resultsSent).toHaveLength(1);
    expect(dlq).toEqual([]);
  });

  it('calls native records through the caller with their format', async () => {
    const callModel = model();
    const native = retryable('n1', {
      format: 'native',
      modelInput: { anthropic_version: 'bedrock-2023-05-31', max_tokens: 5, messages: [] },
    });
    expect((await processLaneRecord(sqsRecord('m1', native), deps(callModel))).kind).toBe('published');
    expect(callModel.mock.calls[0]?.[0].format).toBe('native');
  });

  it('a crash between the results write and the ledger publish re-publishes into the same file, same dedupe id', async () => {
    const callModel = model();
    let failOnce = true;
    const flaky: FailureLaneConsumerDeps['ledger'] = {
      findPublished: (scope, ids) => ledger.findPublished(scope, ids),
      claim: (scope, id, run, hash) => ledger.claim(scope, id, run, hash),
      markPublished: async (scope, id, run) => {
        if (failOnce) {
          failOnce = false;
          throw awsError('InternalServerError', 500);
        }
        return ledger.markPublished(scope, id, run);
      },
    };
    const msg = retryable('r2');
    const first = await processLaneBatch(sqsEvent(sqsRecord('m2', msg)), deps(callModel, { ledger: flaky }));
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: 'm2' }]);
    expect(await ledgerItem(server, table, SCOPE, 'r2')).toMatchObject({ status: 'claimed' });

    const second = await processLaneBatch(
      sqsEvent(sqsRecord('m2', msg, 2)),
      deps(callModel, { ledger: flaky }),
    );
    expect(second.batchItemFailures).toEqual([]);
    expect(await ledgerItem(server, table, SCOPE, 'r2')).toMatchObject({ status: 'published' });
    expect(s3.keys(OUT, `runs/${RUN}/results/`)).toEqual([laneResultKey(RUN, 'r2')]);
    expect(s3.lines(OUT, laneResultKey(RUN, 'r2'))).toHaveLength(1);
    // Sent twice with one deduplication id: the FIFO queue delivers it once.
    expect(resultsSent.map((r) => r.dedupeId)).toEqual([
      resultsDedupeId(SCOPE, 'r2'),
      resultsDedupeId(SCOPE, 'r2'),
    ]);
  });

  it('works without a results queue', async () => {
    const outcome = await processLaneRecord(
      sqsRecord('m1', retryable('r3')),
      deps(model(), { resultsPublisher: undefined }),
    );
    expect(outcome.kind).toBe('published');
    expect(sqsMock).not.toHaveReceivedCommand(SendMessageBatchCommand);
  });
});

describe('a record another run holds', () => {
  it('is answered but not written or sent when another run published it meanwhile (counted skipped)', async () => {
    // Another run's live claim: findPublished says not published, the claim then fails its condition.
    expect(await ledger.claim(SCOPE, 'r4', 'other-run')).toBe('claimed');
    const callModel = model();
    const outcome = await processLaneRecord(sqsRecord('m4', retryable('r4')), deps(callModel));
    expect(outcome).toEqual({ kind: 'skipped', recordId: 'r4' });
    expect(callModel).toHaveBeenCalledTimes(1);
    expect(s3.keys(OUT)).toEqual([]);
    expect(resultsSent).toEqual([]);
    expect(await ledgerItem(server, table, SCOPE, 'r4')).toMatchObject({
      runId: 'other-run',
      status: 'claimed',
    });
  });

  it('already published (a redrive after a re-run): no model call, processed, nothing sent anywhere', async () => {
    await ledger.claim(SCOPE, 'r5', 'rerun');
    await ledger.markPublished(SCOPE, 'r5', 'rerun');
    const callModel = model();
    const batch = sqsEvent(
      sqsRecord('m5', retryable('r5')),
      sqsRecord(
        'm6',
        retryable('r5', { error: { code: 'ValidationException', message: 'x', retryable: false } }),
      ),
    );
    const response = await processLaneBatch(batch, deps(callModel));
    expect(response.batchItemFailures).toEqual([]);
    expect(callModel).not.toHaveBeenCalled();
    expect(dlq).toEqual([]);
    expect(resultsSent).toEqual([]);
  });
});

describe('a retryable failure that fails again', () => {
  it('throttled again: returned to the queue as a batch item failure, the rest of the batch processed', async () => {
    const callModel = model({ t1: awsError('ThrottlingException', 429, 'Too many requests', true) });
    const response = await processLaneBatch(
      sqsEvent(sqsRecord('m-t1', retryable('t1')), sqsRecord('m-ok', retryable('ok1'))),
      deps(callModel),
    );
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: 'm-t1' }]);
    expect(await ledgerItem(server, table, SCOPE, 't1')).toBeUndefined();
    expect(await ledgerItem(server, table, SCOPE, 'ok1')).toMatchObject({ status: 'published' });
    expect(dlq).toEqual([]);
  });

  it('a batch where every message is throttled is reported, not thrown', async () => {
    const throttle = awsError('ThrottlingException', 429);
    const callModel = model({ a: throttle, b: throttle });
    const response = await processLaneBatch(
      sqsEvent(sqsRecord('m-a', retryable('a')), sqsRecord('m-b', retryable('b'))),
      deps(callModel),
    );
    expect(response.batchItemFailures.map((f) => f.itemIdentifier).sort()).toEqual(['m-a', 'm-b']);
  });

  it('5xx and timeouts are retried later too; a deadline abort is a TimeoutError', async () => {
    const callModel = model({ s: awsError('ServiceUnavailableException', 503) });
    await expect(processLaneRecord(sqsRecord('m-s', retryable('s')), deps(callModel))).rejects.toMatchObject({
      name: 'RetryLaterError',
      code: 'ServiceUnavailableException',
    });
    const hang: ModelCaller = (_item, signal) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () =>
          reject(Object.assign(new Error('aborted'), { name: 'AbortError' })),
        );
      });
    await expect(
      processLaneRecord(sqsRecord('m-h', retryable('h')), deps(hang, { remainingMs: () => 10_500 })),
    ).rejects.toMatchObject({ name: 'RetryLaterError', code: 'TimeoutError' });
  });

  it('with too little time left the model is not called and the message returns to the queue', async () => {
    const callModel = model();
    await expect(
      processLaneRecord(sqsRecord('m-x', retryable('x')), deps(callModel, { remainingMs: () => 2_000 })),
    ).rejects.toMatchObject({ name: 'RetryLaterError', code: 'NotAttempted' });
    expect(callModel).not.toHaveBeenCalled();
  });

  it('on its last receive it goes to the DLQ with the reason instead of silently', async () => {
    const callModel = model({ t2: awsError('ThrottlingException', 429, 'slow down') });
    const msg = retryable('t2');
    const outcome = await processLaneRecord(
      sqsRecord('m-t2', msg, 5),
      deps(callModel, { maxReceiveCount: 5 }),
    );
    expect(outcome).toMatchObject({ kind: 'dead-lettered', code: 'ThrottlingException' });
    expect(dlq).toHaveLength(1);
    expect(dlq[0]?.body).toMatchObject({
      ...msg,
      laneReason: expect.stringContaining('still failing after 5 receives'),
    });
  });

  it('rejected by the model (validation): to the DLQ at once with the reason, processed, nothing published', async () => {
    const callModel = model({ v1: awsError('ValidationException', 400, 'messages: too long') });
    const msg = retryable('v1');
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-v1', msg)), deps(callModel));
    expect(response.batchItemFailures).toEqual([]);
    expect(dlq).toEqual([
      {
        body: {
          ...msg,
          laneReason:
            'the model rejected the retried request: the model API rejected the request: messages: too long',
        },
        code: 'ValidationException',
        reason:
          'the model rejected the retried request: the model API rejected the request: messages: too long',
      },
    ]);
    expect(await ledgerItem(server, table, SCOPE, 'v1')).toBeUndefined();
    expect(s3.keys(OUT)).toEqual([]);
  });

  it('a DLQ send that fails transiently returns the message to the queue (never dropped)', async () => {
    sqsMock.on(SendMessageCommand).rejects(awsError('ServiceUnavailable', 503));
    const callModel = model({ v2: awsError('ValidationException', 400) });
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-v2', retryable('v2'))), deps(callModel));
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: 'm-v2' }]);
  });
});

describe('messages that cannot succeed by retrying go to the DLQ at once', () => {
  it('a bad line (no recordId, not retryable): DLQ with its reason, no model call, no ledger entry', async () => {
    const callModel = model();
    const badLine = {
      line: 12,
      stage: 'plan',
      runId: RUN,
      ledgerScope: SCOPE,
      error: { code: 'InvalidJson', message: 'line 12 is not valid JSON' },
    };
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-bad', badLine)), deps(callModel));
    expect(response.batchItemFailures).toEqual([]);
    expect(callModel).not.toHaveBeenCalled();
    expect(dlq).toHaveLength(1);
    expect(dlq[0]).toMatchObject({
      body: { ...badLine, laneReason: expect.stringContaining('not retryable (InvalidJson') },
    });
    expect(dlq[0]?.code).toBe('InvalidJson');
  });

  it('a non-retryable model failure from ConverseBatch: DLQ, no model call', async () => {
    const callModel = model();
    const msg = {
      recordId: 'v3',
      line: 4,
      stage: 'converse',
      runId: RUN,
      ledgerScope: SCOPE,
      error: { code: 'ValidationException', message: 'bad request', retryable: false },
    };
    await processLaneRecord(sqsRecord('m-v3', msg), deps(callModel));
    expect(callModel).not.toHaveBeenCalled();
    expect(dlq[0]?.code).toBe('ValidationException');
  });

  it('a retryable failure without its request (too large for SQS): DLQ, with what to do', async () => {
    const { modelInput: _omitted, format: _format, ...withoutInput } = retryable('big');
    const outcome = await processLaneRecord(sqsRecord('m-big', withoutInput), deps(model()));
    expect(outcome).toMatchObject({
      kind: 'dead-lettered',
      reason: expect.stringContaining('run the corpus again'),
    });
  });

  it('a body that is not JSON: DLQ with the reason and the original body', async () => {
    const response = await processLaneBatch(sqsEvent(sqsRecord('m-junk', 'not json {')), deps(model()));
    expect(response.batchItemFailures).toEqual([]);
    expect(dlq).toEqual([
      {
        body: { laneReason: expect.stringContaining('not JSON'), originalBody: 'not json {' },
        code: 'MalformedMessage',
        reason: expect.stringContaining('the message body is not JSON'),
      },
    ]);
  });

  it('JSON that is not a failure-lane message: DLQ naming the fields', async () => {
    const body = { recordId: 'r9', stage: 'converse', error: { code: 'X', message: 'y', retryable: true } };
    await processLaneRecord(sqsRecord('m-partial', body), deps(model()));
    expect(dlq[0]?.body).toMatchObject(body);
    expect(dlq[0]?.reason).toMatch(/runId: .*ledgerScope: /);
  });
});

describe('parseLaneMessage', () => {
  it('accepts a redriven message carrying an earlier laneReason and keeps the raw body', () => {
    const parsed = parseLaneMessage(JSON.stringify({ ...retryable('r1'), laneReason: 'earlier', extra: 1 }));
    expect(parsed.ok).toBe(true);
    if (parsed.ok) {
      expect(parsed.message.laneReason).toBe('earlier');
      expect(parsed.raw.extra).toBe(1);
    }
  });

  it('refuses arrays and scalars', () => {
    expect(parseLaneMessage('[1]')).toMatchObject({
      ok: false,
      reason: 'the message body is not a JSON object',
    });
    expect(parseLaneMessage('3')).toMatchObject({ ok: false });
  });
});
