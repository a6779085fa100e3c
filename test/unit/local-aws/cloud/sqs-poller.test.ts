// fauxqs (SQS) is ESM-only and jest cannot load it: the scenario (event source pollers and message move tasks with
// the real SDK client against the real fauxqs) runs in a child process and reports what it observed as one JSON
// line, which this test checks.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

jest.setTimeout(90_000);

const repoRoot = path.resolve(__dirname, '../../../..');
const dlqArn = 'arn:aws:sqs:us-east-1:000000000000:Dlq';

describe('SQS event source pollers and message move tasks (child process)', () => {
  let stateDir: string;
  let seen: Record<string, unknown>;

  beforeAll(async () => {
    stateDir = mkdtempSync(path.join(tmpdir(), 'corpus-sqs-poller-'));
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join(__dirname, 'fixtures', 'sqs-poller-scenario.ts'), stateDir],
      { cwd: repoRoot, timeout: 80_000 },
    );
    seen = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
  });

  afterAll(() => {
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('builds the SQS event Lambda sends and skips disabled mappings', () => {
    expect(seen['pollerCount']).toBe(3);
    expect(seen['record']).toEqual({
      messageId: 'string',
      receiptHandle: 'string',
      body: 'ok-1',
      attributes: [
        'ApproximateFirstReceiveTimestamp',
        'ApproximateReceiveCount',
        'SenderId',
        'SentTimestamp',
      ],
      receiveCount: '1',
      messageAttributes: {
        kind: { stringValue: 'ok', stringListValues: [], binaryListValues: [], dataType: 'String' },
      },
      md5OfBody: expect.stringMatching(/^[0-9a-f]{32}$/),
      md5Matches: true,
      md5OfMessageAttributes: expect.stringMatching(/^[0-9a-f]{32}$/),
      eventSource: 'aws:sqs',
      eventSourceARN: 'arn:aws:sqs:us-east-1:000000000000:Partial',
      awsRegion: 'us-east-1',
    });
  });

  it('with ReportBatchItemFailures deletes all but the reported items', () => {
    expect(seen['partialStats']).toMatchObject({ messages: 4, failedItems: 2, deleted: 2 });
    expect(seen['counts']).toMatchObject({ partial: { visible: 0, inFlight: 2 } });
    expect(seen['partialLeft']).toEqual(['fail-2', 'fail-4']);
  });

  it('deletes nothing when the function throws or names an invalid item identifier', () => {
    expect(seen['throwingStats']).toMatchObject({ messages: 3, failedInvocations: 1, deleted: 0 });
    expect(seen['badResponseStats']).toMatchObject({ messages: 3, failedItems: 3, deleted: 0 });
    expect(seen['counts']).toMatchObject({
      throwing: { visible: 0, inFlight: 3 },
      badResponse: { visible: 0, inFlight: 3 },
    });
  });

  it('lets the queue RedrivePolicy move a message that keeps failing to the DLQ after maxReceiveCount', () => {
    expect(seen['receiveCounts']).toEqual({ 'poison-lane': ['1', '2'], 'poison-other': ['1', '2'] });
    expect(seen['laneAfterRedrive']).toEqual({ visible: 0, inFlight: 0 });
  });

  it('refuses a move task from a queue that is no DLQ, a missing queue and a bad rate, as the service does', () => {
    expect(seen['refusals']).toEqual({
      notDlq: expect.stringMatching(
        /^InvalidParameterValue: Source queue .*:Lane is not a dead-letter queue/,
      ),
      missing: expect.stringMatching(/^ResourceNotFoundException: .*SourceArn.*:Nope$/),
      badRate: expect.stringMatching(/^InvalidParameterValue: .*MaxNumberOfMessagesPerSecond/),
    });
    expect(seen['deadLetterSources']).toEqual(seen['expectedSources']);
  });

  it('moves each DLQ message back to its own source queue and lists the task as COMPLETED with counts', () => {
    expect(seen['taskHandle']).toBe('string');
    expect(seen['moveTask']).toEqual([
      {
        Status: 'COMPLETED',
        SourceArn: dlqArn,
        ApproximateNumberOfMessagesMoved: 2,
        ApproximateNumberOfMessagesToMove: 2,
        StartedTimestamp: expect.any(Number),
      },
    ]);
    expect(seen['afterMove']).toEqual({
      lane: ['poison-lane'],
      other: ['poison-other'],
      dlq: { visible: 0, inFlight: 0 },
    });
  });

  it('allows one running task per source and cancels one without losing messages', () => {
    expect(seen['secondWhileRunning']).toMatch(
      /^UnsupportedOperation: A message move task is already running/,
    );
    const cancelled = seen['cancelled'] as Record<string, number | string>;
    expect(cancelled).toMatchObject({
      status: 'CANCELLED',
      toMove: 3,
      destination: 'arn:aws:sqs:us-east-1:000000000000:Lane',
    });
    // Rate 1/s: the cancel lands before the second message; whatever moved is on the destination, the rest stayed.
    expect(cancelled['moved']).toBeLessThanOrEqual(1);
    expect(cancelled['lane']).toBe(cancelled['moved']);
    expect(cancelled['dlq']).toBe(3 - Number(cancelled['moved']));
  });

  it('with the redeliver fault delivers every message twice, then deletes it', () => {
    expect(seen['deliveries']).toEqual({ r1: ['1', '2'], r2: ['1', '2'], r3: ['1', '2'] });
    expect(seen['redeliverStats']).toMatchObject({ messages: 6, redelivered: 3, deleted: 3 });
    expect(seen['redeliverLeft']).toEqual({ visible: 0, inFlight: 0 });
  });
});
