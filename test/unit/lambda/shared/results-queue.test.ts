import { createHash } from 'node:crypto';
import { describe, expect, it } from '@jest/globals';
import { SendMessageBatchCommand, SQSClient, type SendMessageBatchCommandInput } from '@aws-sdk/client-sqs';
import { TransientDependencyError } from '../../../../lambda/shared/errors';
import {
  RESULTS_GROUP_BUCKETS,
  resultsDedupeId,
  resultsGroupId,
  ResultsPublisher,
  resultsPublisherFromEnv,
  ResultsQueueRejectedError,
  type PublishedRecord,
} from '../../../../lambda/shared/results-queue';
import { useClientMocks } from '../../../support/aws-mocks';

const [sqsMock] = useClientMocks(SQSClient);
const QUEUE = 'https://sqs.us-east-1.amazonaws.com/123456789012/results.fifo';

function record(recordId: string, scope = 'scope-a'): PublishedRecord {
  return {
    runId: 'run-1',
    recordId,
    ledgerScope: scope,
    resultKey: 'runs/run-1/results/abc.jsonl',
    usage: { inputTokens: 4, outputTokens: 2, totalTokens: 6 },
  };
}

function publisher(): ResultsPublisher {
  return new ResultsPublisher(new SQSClient({}), QUEUE, { sleep: async () => undefined });
}

function calls(): SendMessageBatchCommandInput[] {
  return sqsMock.commandCalls(SendMessageBatchCommand).map((c) => c.args[0].input);
}

function acceptAll(): void {
  sqsMock.on(SendMessageBatchCommand).callsFake(async (input: SendMessageBatchCommandInput) => ({
    Successful: (input.Entries ?? []).map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
    Failed: [],
  }));
}

describe('resultsDedupeId and resultsGroupId', () => {
  it('the dedupe id is sha256 of the scope and the recordId: stable, distinct per scope and record', () => {
    const expected = createHash('sha256').update('scope-a\nr1').digest('hex');
    expect(resultsDedupeId('scope-a', 'r1')).toBe(expected);
    expect(resultsDedupeId('scope-a', 'r1')).toHaveLength(64);
    expect(resultsDedupeId('scope-b', 'r1')).not.toBe(expected);
    // The separator keeps ("a", "b#c") and ("a#b", "c")-style pairs apart.
    expect(resultsDedupeId('ab', 'c')).not.toBe(resultsDedupeId('a', 'bc'));
  });

  it('the group is a hash bucket of the record: the same record always lands in the same group', () => {
    const groups = new Set<string>();
    for (let i = 0; i < 2_000; i++) {
      const g = resultsGroupId('scope-a', `r${i}`);
      expect(g).toMatch(/^results-\d{2}$/);
      expect(resultsGroupId('scope-a', `r${i}`)).toBe(g);
      groups.add(g);
    }
    expect(groups.size).toBe(RESULTS_GROUP_BUCKETS);
  });
});

describe('ResultsPublisher', () => {
  it('encodes a ledger scope holding characters SQS refuses so the body is accepted and parses back', async () => {
    acceptAll();
    const scope = 'tenant \uffff\ufffe 😀';
    await publisher().publish([record('r1', scope)]);
    const body = calls()[0]?.Entries?.[0]?.MessageBody ?? '';
    expect(body).toMatch(/^[\t\n\r\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]*$/u);
    expect(JSON.parse(body)).toEqual(record('r1', scope));
  });

  it('sends ten per SendMessageBatch with the body, group and dedupe id of each record', async () => {
    acceptAll();
    const p = publisher();
    const records = Array.from({ length: 23 }, (_, i) => record(`r${i}`));
    await p.publish(records);
    expect(calls().map((c) => c.Entries?.length)).toEqual([10, 10, 3]);
    expect(p.sent).toBe(23);
    const entries = calls().flatMap((c) => c.Entries ?? []);
    expect(entries.map((e) => JSON.parse(e.MessageBody ?? '') as PublishedRecord)).toEqual(records);
    expect(entries[4]).toMatchObject({
      MessageGroupId: resultsGroupId('scope-a', 'r4'),
      MessageDeduplicationId: resultsDedupeId('scope-a', 'r4'),
    });
    for (const c of calls()) {
      expect(c.QueueUrl).toBe(QUEUE);
      expect(new Set(c.Entries?.map((e) => e.Id)).size).toBe(c.Entries?.length);
    }
  });

  it('sends nothing for no records', async () => {
    acceptAll();
    await publisher().publish([]);
    expect(sqsMock).not.toHaveReceivedCommand(SendMessageBatchCommand);
  });

  it('resends only the entries a batch failed, with the same dedupe ids', async () => {
    sqsMock
      .on(SendMessageBatchCommand)
      .resolvesOnce({
        Successful: [{ Id: 'r0', MessageId: 'm', MD5OfMessageBody: 'x' }],
        Failed: [
          { Id: 'r1', Code: 'InternalError', SenderFault: false, Message: 'try again' },
          { Id: 'r2', Code: 'InternalError', SenderFault: false, Message: 'try again' },
        ],
      })
      .resolvesOnce({
        Successful: [{ Id: 'r1', MessageId: 'm', MD5OfMessageBody: 'x' }],
        Failed: [{ Id: 'r2', Code: 'InternalError', SenderFault: false }],
      })
      .resolves({ Successful: [{ Id: 'r2', MessageId: 'm', MD5OfMessageBody: 'x' }], Failed: [] });
    const p = publisher();
    await p.publish([record('a'), record('b'), record('c')]);
    const sentIds = calls().map((c) => c.Entries?.map((e) => e.MessageDeduplicationId));
    expect(sentIds).toEqual([
      [resultsDedupeId('scope-a', 'a'), resultsDedupeId('scope-a', 'b'), resultsDedupeId('scope-a', 'c')],
      [resultsDedupeId('scope-a', 'b'), resultsDedupeId('scope-a', 'c')],
      [resultsDedupeId('scope-a', 'c')],
    ]);
    expect(p.sent).toBe(3);
  });

  it('gives up after five attempts with a TransientDependencyError', async () => {
    sqsMock
      .on(SendMessageBatchCommand)
      .resolves({ Failed: [{ Id: 'r0', Code: 'InternalError', SenderFault: false }] });
    await expect(publisher().publish([record('a')])).rejects.toBeInstanceOf(TransientDependencyError);
    expect(calls()).toHaveLength(5);
  });

  it('a sender fault is a bug: ResultsQueueRejectedError at once, no resend', async () => {
    sqsMock.on(SendMessageBatchCommand).resolves({
      Failed: [{ Id: 'r0', Code: 'InvalidParameterValue', SenderFault: true, Message: 'bad group id' }],
    });
    await expect(publisher().publish([record('a')])).rejects.toBeInstanceOf(ResultsQueueRejectedError);
    expect(calls()).toHaveLength(1);
  });

  it('a throttled call surfaces as TransientDependencyError', async () => {
    sqsMock.on(SendMessageBatchCommand).rejects(
      Object.assign(new Error('slow down'), {
        name: 'RequestThrottled',
        $metadata: { httpStatusCode: 503 },
      }),
    );
    await expect(publisher().publish([record('a')])).rejects.toBeInstanceOf(TransientDependencyError);
  });
});

describe('resultsPublisherFromEnv', () => {
  it('is off without RESULTS_QUEUE_URL (or with it empty) and on with it', () => {
    const client = new SQSClient({});
    expect(resultsPublisherFromEnv(client, {})).toBeUndefined();
    expect(resultsPublisherFromEnv(client, { RESULTS_QUEUE_URL: '' })).toBeUndefined();
    expect(resultsPublisherFromEnv(client, { RESULTS_QUEUE_URL: QUEUE })).toBeInstanceOf(ResultsPublisher);
  });
});
