// fauxqs (SQS) is ESM-only and jest cannot load it: the scenario runs in a child process with tsx and reports
// what it observed as one JSON line, which this test checks.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

jest.setTimeout(60_000);

const repoRoot = path.resolve(__dirname, '../../../..');

describe('SQS emulator and queue provisioning (child process)', () => {
  let stateDir: string;
  let observations: Record<string, unknown>;

  beforeAll(async () => {
    stateDir = mkdtempSync(path.join(tmpdir(), 'corpus-sqs-'));
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join(__dirname, 'fixtures', 'sqs-scenario.ts'), stateDir],
      { cwd: repoRoot, timeout: 50_000 },
    );
    observations = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
  });

  afterAll(() => {
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('starts two runtimes side by side on distinct free ports and locks the state directory', () => {
    const ports = observations['ports'] as number[];
    expect(ports).toHaveLength(6);
    expect(new Set(ports).size).toBe(6);
    expect(observations['secondOnSameDir']).toBe('EmulatorError');
  });

  it('gives dialable queue URLs on 127.0.0.1 and creates the DLQ before the queue that redrives to it', () => {
    expect(observations['laneUrl']).toBe(`${observations['sqsEndpoint']}/000000000000/Corpus-Lane`);
    expect(observations['dlqArn']).toBe('arn:aws:sqs:eu-west-1:000000000000:Corpus-Dlq');
    expect(observations['fifoName']).toBe('Corpus-Ordered.fifo');
    expect(observations['laneAttributes']).toEqual({
      VisibilityTimeout: '30',
      RedrivePolicy: {
        deadLetterTargetArn: 'arn:aws:sqs:eu-west-1:000000000000:Corpus-Dlq',
        maxReceiveCount: 2,
      },
    });
    expect(observations['consumerEnvironment']).toEqual({
      LANE_URL: observations['laneUrl'],
      DLQ_ARN: 'arn:aws:sqs:eu-west-1:000000000000:Corpus-Dlq',
    });
  });

  it('moves a message to the DLQ after maxReceiveCount receives', () => {
    expect(observations['laneReceives']).toEqual([1, 1, 0]);
    expect(observations['dlqBodies']).toEqual(['poison']);
    expect(observations['secondProvisionSameUrl']).toBe(true);
  });

  it('restores queues and messages (ready and in flight) after a restart, on the new port', () => {
    expect(observations['restoredQueues']).toBe(3);
    expect(observations['restartedLaneUrl']).toBe(
      `${observations['restartedSqsEndpoint']}/000000000000/Corpus-Lane`,
    );
    expect(observations['restartedCounts']).toEqual({ visible: '1', inFlight: '1' });
    // Standard queues do not promise order: whichever message was in flight at shutdown is still invisible.
    const inFlight = observations['inflightBody'];
    expect(['survivor', 'in-flight']).toContain(inFlight);
    expect(observations['restartedBodies']).toEqual(
      ['survivor', 'in-flight'].filter((body) => body !== inFlight),
    );
    expect(observations['restartedRedrive']).toEqual({
      deadLetterTargetArn: 'arn:aws:sqs:eu-west-1:000000000000:Corpus-Dlq',
      maxReceiveCount: 2,
    });
  });
});
