import { beforeEach, describe, expect, it } from '@jest/globals';
import type { GetModelInvocationJobCommandOutput } from '@aws-sdk/client-bedrock';
import {
  InvalidToken,
  SendTaskSuccessCommand,
  SFNClient,
  SFNServiceException,
  TaskDoesNotExist,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import {
  BatchJobNotEndedError,
  IN_FLIGHT,
  jobIdOf,
  JobRecordError,
  jobOutputPrefix,
  JobStore,
  outcomeOf,
  resumeWait,
  type JobRegistration,
  type StoredJob,
} from '../../../../lambda/shared/batch-jobs';
import { batchJobOutcomeSchema } from '../../../../lambda/shared/contracts';
import { TransientDependencyError } from '../../../../lambda/shared/errors';
import { useJobsTable, type JobStoreSettings } from '../batch/jobs-table';
import { useClientMocks } from '../../../support/aws-mocks';

// The store runs against dynalite (a real DynamoDB emulator): its conditions, if_not_exists and sparse index are
// what these tests check. Step Functions is mocked.
const [sfnMock] = useClientMocks(SFNClient);
const ARN = 'arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123xyz';
const T0 = Date.parse('2030-01-01T00:00:00.000Z');

const jobs = useJobsTable();
let clock: number;

beforeEach(() => {
  clock = T0;
});

function store(settings: JobStoreSettings = {}): JobStore {
  return jobs.newStore(() => clock, settings);
}

function registration(overrides: Partial<JobRegistration> = {}): JobRegistration {
  return {
    jobArn: ARN,
    runId: 'run-1',
    shard: 3,
    jobName: 'corpus-run-1-s3-0123456789ab',
    taskToken: 'token-1',
    outputPrefix: `runs/run-1/shards/00003/output/abc123xyz/`,
    ...overrides,
  };
}

async function rawItem(jobArn = ARN): Promise<Record<string, unknown> | undefined> {
  return (await jobs.docClient.send(new GetCommand({ TableName: jobs.tableName, Key: { jobArn } }))).Item;
}

function completedJob(
  overrides: Partial<GetModelInvocationJobCommandOutput> = {},
): GetModelInvocationJobCommandOutput {
  return {
    $metadata: {},
    jobArn: ARN,
    jobName: 'corpus-run-1-s3-0123456789ab',
    modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
    roleArn: 'arn:aws:iam::123456789012:role/corpus-batch',
    status: 'PartiallyCompleted',
    message: '2 records failed',
    submitTime: new Date('2030-01-01T00:00:05.000Z'),
    endTime: new Date('2030-01-01T03:00:00.000Z'),
    inputDataConfig: undefined,
    outputDataConfig: undefined,
    totalRecordCount: 120,
    processedRecordCount: 120,
    successRecordCount: 118,
    errorRecordCount: 2,
    ...overrides,
  };
}

describe('job ids and output prefixes', () => {
  it('takes the job id from the last path segment of the ARN', () => {
    expect(jobIdOf(ARN)).toBe('abc123xyz');
    expect(() => jobIdOf('not-an-arn')).toThrow(JobRecordError);
  });

  it('puts the job id under the shard output prefix with one slash', () => {
    expect(jobOutputPrefix('runs/r/shards/00000/output/', ARN)).toBe('runs/r/shards/00000/output/abc123xyz/');
    expect(jobOutputPrefix('runs/r/out', ARN)).toBe('runs/r/out/abc123xyz/');
  });
});

describe('outcomeOf', () => {
  const stored: StoredJob = {
    ...registration(),
    submittedAt: '2030-01-01T00:00:00.000Z',
  } as StoredJob;

  it('maps status, message, times, counters and the output prefix into a valid outcome', () => {
    const outcome = outcomeOf(completedJob(), stored);
    expect(outcome).toEqual({
      jobArn: ARN,
      jobName: 'corpus-run-1-s3-0123456789ab',
      shard: 3,
      status: 'PartiallyCompleted',
      message: '2 records failed',
      submittedAt: '2030-01-01T00:00:05.000Z',
      endedAt: '2030-01-01T03:00:00.000Z',
      outputPrefix: 'runs/run-1/shards/00003/output/abc123xyz/',
      counts: { total: 120, processed: 120, success: 118, error: 2 },
    });
    expect(batchJobOutcomeSchema.safeParse(outcome).success).toBe(true);
  });

  it('falls back to the stored submit time and leaves out what Bedrock does not report', () => {
    const outcome = outcomeOf(
      completedJob({
        status: 'Failed',
        message: undefined,
        submitTime: undefined,
        endTime: undefined,
        totalRecordCount: undefined,
        processedRecordCount: undefined,
        successRecordCount: undefined,
        errorRecordCount: undefined,
      }),
      stored,
    );
    expect(outcome).toEqual({
      jobArn: ARN,
      jobName: 'corpus-run-1-s3-0123456789ab',
      shard: 3,
      status: 'Failed',
      submittedAt: '2030-01-01T00:00:00.000Z',
      outputPrefix: 'runs/run-1/shards/00003/output/abc123xyz/',
    });
  });

  it('refuses a job that has not ended', () => {
    expect(() => outcomeOf(completedJob({ status: 'InProgress' }), stored)).toThrow(BatchJobNotEndedError);
  });
});

describe('JobStore', () => {
  it('registers a job with an open wait, a submit time and a TTL', async () => {
    const stored = await store().register(registration());
    expect(stored).toMatchObject({
      jobArn: ARN,
      runId: 'run-1',
      shard: 3,
      taskToken: 'token-1',
      inFlight: IN_FLIGHT,
      submittedAt: '2030-01-01T00:00:00.000Z',
      expiresAt: T0 / 1000 + 30 * 86_400,
    });
    expect(await store().get(ARN)).toEqual(stored);
  });

  it('a second registration replaces the token but keeps the first submittedAt', async () => {
    await store().register(registration());
    await store().markEnded(ARN, 'Completed', '2030-01-01T01:00:00.000Z');
    clock = T0 + 3_600_000;
    const again = await store().register(registration({ taskToken: 'token-2' }));
    expect(again.taskToken).toBe('token-2');
    expect(again.submittedAt).toBe('2030-01-01T00:00:00.000Z');
    expect(again.registeredAt).toBe('2030-01-01T01:00:00.000Z');
    // The new attempt's wait is open again, and closed again only by its own resume.
    expect(again.inFlight).toBe(IN_FLIGHT);
    expect(again.endedAt).toBeUndefined();
  });

  it('records progress only while the wait is open', async () => {
    const s = store();
    expect(await s.recordStatus(ARN, 'InProgress')).toBe(false);
    expect(await rawItem()).toBeUndefined();

    await s.register(registration());
    expect(await s.recordStatus(ARN, 'InProgress', { total: 120, processed: 40, success: undefined })).toBe(
      true,
    );
    expect(await s.get(ARN)).toMatchObject({
      lastStatus: 'InProgress',
      counts: { total: 120, processed: 40 },
    });

    await s.markEnded(ARN, 'Completed', '2030-01-01T02:00:00.000Z');
    expect(await s.recordStatus(ARN, 'InProgress')).toBe(false);
    expect((await s.get(ARN))?.lastStatus).toBe('Completed');
  });

  it('marks a job ended idempotently, and only while it holds the given token', async () => {
    const s = store();
    expect(await s.markEnded(ARN, 'Completed', '2030-01-01T02:00:00.000Z')).toBe(false);
    expect(await rawItem()).toBeUndefined();

    await s.register(registration({ taskToken: 'token-2' }));
    expect(await s.markEnded(ARN, 'Completed', '2030-01-01T02:00:00.000Z', 'token-1')).toBe(false);
    expect((await s.get(ARN))?.inFlight).toBe(IN_FLIGHT);

    expect(await s.markEnded(ARN, 'Completed', '2030-01-01T02:00:00.000Z', 'token-2')).toBe(true);
    expect(await s.markEnded(ARN, 'Completed', '2030-01-01T02:00:00.000Z', 'token-2')).toBe(true);
    const ended = await s.get(ARN);
    expect(ended).toMatchObject({ lastStatus: 'Completed', endedAt: '2030-01-01T02:00:00.000Z' });
    expect(ended?.inFlight).toBeUndefined();
  });

  it('lists the open waits (sparse index, across pages) and the jobs of a run in shard order', async () => {
    const s = store({ queryPageSize: 2 });
    const arn = (run: string, shard: number): string =>
      `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/${run}x${shard}`;
    for (const shard of [4, 0, 2, 1, 3]) {
      clock = T0 + shard * 1000;
      await s.register(
        registration({ jobArn: arn('a', shard), shard, taskToken: `t${shard}`, outputPrefix: 'p/' }),
      );
    }
    clock = T0 + 500;
    await s.register(registration({ jobArn: arn('b', 0), runId: 'run-2', shard: 0, outputPrefix: 'p/' }));
    await s.markEnded(arn('a', 2), 'Completed', '2030-01-02T00:00:00.000Z');

    const inFlight = await s.listInFlight();
    expect(inFlight.map((j) => j.jobArn)).toEqual([
      arn('a', 0),
      arn('b', 0),
      arn('a', 1),
      arn('a', 3),
      arn('a', 4),
    ]);
    const run = await s.listByRun('run-1');
    expect(run.map((j) => j.shard)).toEqual([0, 1, 2, 3, 4]);
    expect(run[2]?.lastStatus).toBe('Completed');
    expect(await s.listByRun('run-none')).toEqual([]);
  });

  it('reports an item it did not write as malformed', async () => {
    await jobs.docClient.send(
      new PutCommand({ TableName: jobs.tableName, Item: { jobArn: ARN, runId: 'r' } }),
    );
    await expect(store().get(ARN)).rejects.toThrow(JobRecordError);
  });
});

describe('resumeWait', () => {
  async function registered(token = 'token-1'): Promise<StoredJob> {
    return store().register(registration({ taskToken: token }));
  }

  it('sends the outcome with the stored token, then closes the wait', async () => {
    const stored = await registered();
    let openWhenSent: unknown;
    sfnMock.on(SendTaskSuccessCommand).callsFake(async () => {
      openWhenSent = (await rawItem())?.inFlight;
      return {};
    });
    const result = await resumeWait(
      { sfn: new SFNClient({}), store: store(), now: () => clock },
      stored,
      completedJob(),
    );

    expect(result).toMatchObject({ delivered: true, marked: true });
    expect(openWhenSent).toBe(IN_FLIGHT);
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 1);
    const input = sfnMock.commandCalls(SendTaskSuccessCommand)[0]?.args[0].input;
    expect(input?.taskToken).toBe('token-1');
    expect(JSON.parse(input?.output ?? '{}')).toEqual(result.outcome);
    const item = await rawItem();
    expect(item?.inFlight).toBeUndefined();
    expect(item).toMatchObject({ lastStatus: 'PartiallyCompleted', endedAt: '2030-01-01T03:00:00.000Z' });
  });

  it.each([
    ['TaskTimedOut', new TaskTimedOut({ message: 'Task Timed Out', $metadata: {} })],
    ['TaskDoesNotExist', new TaskDoesNotExist({ message: 'Task does not exist', $metadata: {} })],
    ['InvalidToken', new InvalidToken({ message: 'Invalid token', $metadata: {} })],
  ])('treats %s as a wait already closed and still closes the item', async (_name, error) => {
    const stored = await registered();
    sfnMock.on(SendTaskSuccessCommand).rejects(error);
    const result = await resumeWait(
      { sfn: new SFNClient({}), store: store(), now: () => clock },
      stored,
      completedJob({ endTime: undefined }),
    );
    expect(result).toMatchObject({ delivered: false, marked: true });
    // No end time from Bedrock: the time of the resume.
    expect(await rawItem()).toMatchObject({
      lastStatus: 'PartiallyCompleted',
      endedAt: '2030-01-01T00:00:00.000Z',
    });
  });

  it('propagates other errors (transient ones typed) and leaves the wait open for a retry', async () => {
    const stored = await registered();
    sfnMock.on(SendTaskSuccessCommand).rejects(
      new SFNServiceException({
        name: 'ServiceUnavailable',
        $fault: 'server',
        message: 'try again',
        $metadata: { httpStatusCode: 503 },
      }),
    );
    await expect(
      resumeWait({ sfn: new SFNClient({}), store: store(), now: () => clock }, stored, completedJob()),
    ).rejects.toBeInstanceOf(TransientDependencyError);
    expect((await rawItem())?.inFlight).toBe(IN_FLIGHT);
  });

  it('leaves the wait open when a retried submit registered a newer token meanwhile', async () => {
    const stale = await registered('token-1');
    await registered('token-2');
    sfnMock.on(SendTaskSuccessCommand).rejects(new InvalidToken({ message: 'Invalid token', $metadata: {} }));
    const result = await resumeWait(
      { sfn: new SFNClient({}), store: store(), now: () => clock },
      stale,
      completedJob(),
    );
    expect(result).toMatchObject({ delivered: false, marked: false });
    expect(await rawItem()).toMatchObject({ taskToken: 'token-2', inFlight: IN_FLIGHT });
  });
});
