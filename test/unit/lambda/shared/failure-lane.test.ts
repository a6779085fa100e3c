import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { SendMessageBatchCommand, SQSClient, type SendMessageBatchCommandInput } from '@aws-sdk/client-sqs';
import type { FailureLaneMessage } from '../../../../lambda/shared/contracts';
import { FailureLaneSender } from '../../../../lambda/shared/failure-lane';
import { sqsAccepts } from '../../../../lambda/shared/sqs-text';
import { awsError, recordSqs } from '../helpers';
import { useClientMocks } from '../../../support/aws-mocks';
import { FAILURE_DLQ_URL as DLQ, FAILURE_QUEUE_URL as QUEUE } from '../../../support/names';

const [sqsMock] = useClientMocks(SQSClient);
/** SendMessageBatch's limit on the sum of a batch's message sizes. */
const BATCH_PAYLOAD_LIMIT = 256 * 1024;

function message(
  recordId: string,
  retryable: boolean,
  modelInput?: Record<string, unknown>,
): FailureLaneMessage {
  return {
    recordId,
    line: 1,
    stage: 'converse',
    runId: 'run-1',
    ledgerScope: 'scope',
    error: { code: retryable ? 'ThrottlingException' : 'ValidationException', message: 'x', retryable },
    ...(modelInput ? { format: 'converse' as const, modelInput } : {}),
  };
}

function sender(): FailureLaneSender {
  return new FailureLaneSender(new SQSClient({}), QUEUE, DLQ);
}

function calls(): SendMessageBatchCommandInput[] {
  return sqsMock.commandCalls(SendMessageBatchCommand).map((c) => c.args[0].input);
}

beforeEach(() => {
  // Backoff between resends: no waiting in tests.
  jest.spyOn(Math, 'random').mockReturnValue(0);
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('FailureLaneSender', () => {
  it('sends in batches of ten: retryable to the failure queue, the rest to the DLQ', async () => {
    const sent = recordSqs(sqsMock);
    const lane = sender();
    for (let i = 0; i < 23; i++) await lane.add(message(`q${i}`, true));
    for (let i = 0; i < 4; i++) await lane.add(message(`d${i}`, false));
    await lane.flush();
    expect(sent.map((b) => [b.queueUrl, b.messages.length])).toEqual([
      [QUEUE, 10],
      [QUEUE, 10],
      [QUEUE, 3],
      [DLQ, 4],
    ]);
    expect(sent.flatMap((b) => b.messages).map((m) => m.recordId)).toEqual([
      ...Array.from({ length: 23 }, (_, i) => `q${i}`),
      ...Array.from({ length: 4 }, (_, i) => `d${i}`),
    ]);
    expect(lane.sent).toEqual({ queue: 23, dlq: 4 });
    for (const input of calls()) {
      const ids = input.Entries?.map((e) => e.Id) ?? [];
      expect(new Set(ids).size).toBe(ids.length);
      for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{1,80}$/);
    }
  });

  it('tags each message with its error code', async () => {
    recordSqs(sqsMock);
    const lane = sender();
    await lane.add(message('a', false));
    await lane.flush();
    expect(sqsMock).toHaveReceivedCommandWith(SendMessageBatchCommand, {
      QueueUrl: DLQ,
      Entries: [
        expect.objectContaining({
          MessageAttributes: { errorCode: { DataType: 'String', StringValue: 'ValidationException' } },
        }),
      ],
    });
  });

  it('sends nothing when nothing was added', async () => {
    await sender().flush();
    expect(sqsMock).not.toHaveReceivedAnyCommand();
  });

  it('resends only the entries that failed for a reason not of the sender', async () => {
    let call = 0;
    sqsMock.on(SendMessageBatchCommand).callsFake((input: SendMessageBatchCommandInput) => {
      call++;
      const entries = input.Entries ?? [];
      if (call === 1) {
        return {
          Successful: entries.slice(0, 3).map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
          Failed: entries.slice(3).map((e) => ({ Id: e.Id, SenderFault: false, Code: 'InternalError' })),
        };
      }
      return {
        Successful: entries.map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
        Failed: [],
      };
    });
    const lane = sender();
    for (let i = 0; i < 5; i++) await lane.add(message(`r${i}`, true));
    await lane.flush();
    const [first, second] = calls();
    expect(first?.Entries).toHaveLength(5);
    expect(
      second?.Entries?.map((e) => (JSON.parse(e.MessageBody ?? '{}') as FailureLaneMessage).recordId),
    ).toEqual(['r3', 'r4']);
    expect(second?.Entries?.map((e) => e.Id)).toEqual(first?.Entries?.slice(3).map((e) => e.Id));
    expect(lane.sent.queue).toBe(5);
  });

  it('gives up with TransientDependencyError when entries keep failing', async () => {
    sqsMock.on(SendMessageBatchCommand).callsFake((input: SendMessageBatchCommandInput) => ({
      Failed: (input.Entries ?? []).map((e) => ({ Id: e.Id, SenderFault: false, Code: 'InternalError' })),
    }));
    const lane = sender();
    await lane.add(message('r', true));
    await expect(lane.flush()).rejects.toMatchObject({
      name: 'TransientDependencyError',
      message: `failure lane: 1 messages could not be sent to ${QUEUE}`,
    });
    expect(sqsMock).toHaveReceivedCommandTimes(SendMessageBatchCommand, 5);
  });

  it('reports an entry SQS refuses as the sender fault without failing the batch or resending it', async () => {
    sqsMock.on(SendMessageBatchCommand).callsFake((input: SendMessageBatchCommandInput) => {
      const entries = input.Entries ?? [];
      const refused = (e: (typeof entries)[number]): boolean =>
        (JSON.parse(e.MessageBody ?? '{}') as FailureLaneMessage).recordId === 'r1';
      return {
        Successful: entries
          .filter((e) => !refused(e))
          .map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
        Failed: entries.filter(refused).map((e) => ({
          Id: e.Id,
          SenderFault: true,
          Code: 'InvalidMessageContents',
          Message: 'bad char',
        })),
      };
    });
    const lane = sender();
    for (let i = 0; i < 3; i++) await lane.add(message(`r${i}`, false));
    const refused = await lane.flush();
    expect(refused).toEqual([
      { message: message('r1', false), code: 'InvalidMessageContents', reason: 'bad char' },
    ]);
    expect(sqsMock).toHaveReceivedCommandTimes(SendMessageBatchCommand, 1);
    expect(lane.sent).toEqual({ queue: 0, dlq: 2 });
    expect(lane.refused).toBe(1);
    // Reported once: the next flush has nothing new.
    expect(await lane.flush()).toEqual([]);
  });

  it("tells the message's own refusal handler instead, and resends only what failed on SQS's side", async () => {
    let call = 0;
    sqsMock.on(SendMessageBatchCommand).callsFake((input: SendMessageBatchCommandInput) => {
      call++;
      const entries = input.Entries ?? [];
      const id = (e: (typeof entries)[number]): string | undefined =>
        (JSON.parse(e.MessageBody ?? '{}') as FailureLaneMessage).recordId;
      return {
        Successful: entries
          .filter((e) => call > 1 || id(e) === 'sent')
          .map((e) => ({ Id: e.Id, MessageId: 'm', MD5OfMessageBody: 'x' })),
        Failed:
          call > 1
            ? []
            : entries
                .filter((e) => id(e) !== 'sent')
                .map((e) =>
                  id(e) === 'refused'
                    ? { Id: e.Id, SenderFault: true, Code: 'InvalidParameterValue', Message: 'no' }
                    : { Id: e.Id, SenderFault: false, Code: 'InternalError' },
                ),
      };
    });
    const told: string[] = [];
    const lane = sender();
    const onRefused = (r: { message: FailureLaneMessage; code: string }): void => {
      told.push(`${r.message.recordId}:${r.code}`);
    };
    await lane.add(message('sent', true), onRefused);
    await lane.add(message('refused', true), onRefused);
    await lane.add(message('resent', true), onRefused);
    expect(await lane.flush()).toEqual([]);
    expect(told).toEqual(['refused:InvalidParameterValue']);
    const [, second] = calls();
    expect(
      second?.Entries?.map((e) => (JSON.parse(e.MessageBody ?? '{}') as FailureLaneMessage).recordId),
    ).toEqual(['resent']);
    expect(lane.sent.queue).toBe(2);
  });

  it('encodes any record content as a body and attribute SQS accepts, and the body parses back unchanged', async () => {
    recordSqs(sqsMock);
    const text =
      'nul \u0000 bel \u0007 nonchars \uffff\ufffe lone \ud800 and \udfff emoji 😀 𝐀 👩‍👩‍👧 مرحبا 你好 \u0085';
    const original: FailureLaneMessage = {
      ...message(`id-${text}`, false, { messages: [{ role: 'user', content: [{ text }] }] }),
      error: { code: `Code${text}`, message: text, retryable: false },
    };
    const lane = sender();
    await lane.add(original);
    await lane.add({ ...original, error: { ...original.error, code: '' } });
    expect(await lane.flush()).toEqual([]);
    const entries = calls().flatMap((c) => c.Entries ?? []);
    expect(entries).toHaveLength(2);
    const withoutCode = { ...original, error: { ...original.error, code: '' } };
    expect(entries.map((e) => JSON.parse(e.MessageBody ?? ''))).toEqual([original, withoutCode]);
    for (const e of entries) {
      expect(sqsAccepts(e.MessageBody ?? '')).toBe(true);
      expect(sqsAccepts(e.MessageAttributes?.errorCode?.StringValue ?? '')).toBe(true);
    }
    // The emoji and the rest of the valid text are kept as they are; refused characters became U+FFFD.
    expect(entries[0]?.MessageAttributes?.errorCode?.StringValue).toBe(
      'Codenul \ufffd bel \ufffd nonchars \ufffd\ufffd lone \ufffd and \ufffd emoji 😀 𝐀 👩‍👩‍👧 مرحبا 你好 \u0085',
    );
    expect(entries[1]?.MessageAttributes?.errorCode?.StringValue).toBe('Unknown');
    // Against the rule itself, not only against the helper that implements it.
    const rule = /^[\t\n\r\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]*$/u;
    for (const e of entries) expect(rule.test(e.MessageBody ?? '')).toBe(true);
  });

  it('maps a throttled SendMessageBatch call to TransientDependencyError', async () => {
    sqsMock.on(SendMessageBatchCommand).rejects(awsError('RequestThrottled', 503));
    const lane = sender();
    await lane.add(message('r', true));
    await expect(lane.flush()).rejects.toMatchObject({ name: 'TransientDependencyError' });
  });

  it('drops the request body of a message too large for SQS and says so', async () => {
    const sent = recordSqs(sqsMock);
    const lane = sender();
    await lane.add(
      message('big', true, { messages: [{ role: 'user', content: [{ text: 'x'.repeat(300 * 1024) }] }] }),
    );
    await lane.add(message('small', true, { messages: [] }));
    await lane.flush();
    const [big, small] = sent.flatMap((b) => b.messages);
    expect(big?.modelInput).toBeUndefined();
    expect(big?.format).toBe('converse');
    expect(big?.error.message).toBe('x (request body omitted: too large for SQS)');
    expect(small?.modelInput).toEqual({ messages: [] });
    for (const input of calls()) {
      for (const e of input.Entries ?? [])
        expect(Buffer.byteLength(e.MessageBody ?? '')).toBeLessThanOrEqual(BATCH_PAYLOAD_LIMIT);
    }
  });

  it('keeps each batch under the SendMessageBatch payload limit (256 KiB for all its messages together)', async () => {
    const sent = recordSqs(sqsMock);
    const lane = sender();
    const body = { messages: [{ role: 'user', content: [{ text: 'y'.repeat(100 * 1024) }] }] };
    for (let i = 0; i < 7; i++) await lane.add(message(`r${i}`, true, body));
    await lane.flush();
    expect(sent.flatMap((b) => b.messages).map((m) => m.recordId)).toEqual([
      'r0',
      'r1',
      'r2',
      'r3',
      'r4',
      'r5',
      'r6',
    ]);
    expect(sent.flatMap((b) => b.messages).every((m) => m.modelInput !== undefined)).toBe(true);
    for (const input of calls()) {
      const bytes = (input.Entries ?? []).reduce(
        (sum, e) =>
          sum +
          Buffer.byteLength(e.MessageBody ?? '') +
          Object.entries(e.MessageAttributes ?? {}).reduce(
            (s, [name, v]) =>
              s +
              Buffer.byteLength(name) +
              Buffer.byteLength(v.DataType ?? '') +
              Buffer.byteLength(v.StringValue ?? ''),
            0,
          ),
        0,
      );
      expect(bytes).toBeLessThanOrEqual(BATCH_PAYLOAD_LIMIT);
    }
  });
});
