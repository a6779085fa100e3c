import 'aws-sdk-client-mock-jest';
import { describe, expect, it } from '@jest/globals';
import {
  GetModelInvocationJobCommand,
  type GetModelInvocationJobCommandOutput,
} from '@aws-sdk/client-bedrock';
import { SendTaskSuccessCommand, TaskTimedOut } from '@aws-sdk/client-sfn';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { IN_FLIGHT } from '../../../../lambda/shared/batch-jobs';
import { InvalidEventError } from '../../../../lambda/shared/errors';
import { handler } from '../../../../lambda/job-state';
import {
  handleJobStateChange,
  type JobStateDeps,
  type JobStateEvent,
} from '../../../../lambda/batch/job-state';
import { AWS_FIXTURES, fixtureJson } from '../../aws-shapes/fixtures';
import { invocationJob, useDocumentClientMock, useJobsTable, useServiceMocks } from './jobs-table';

const { bedrockMock, sfnMock, clients } = useServiceMocks();

const JOB_ARN = 'arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job0001';
const NAME = 'corpus-test-run-1-s2-0123456789ab';
const T0 = Date.parse('2030-01-01T00:00:00.000Z');

const jobs = useJobsTable({ now: () => T0 });

function deps(): JobStateDeps {
  return {
    ...clients(),
    store: jobs.store,
    now: () => T0 + 1000,
  };
}

function stateChange(status: string, jobArn = JOB_ARN): JobStateEvent {
  return {
    source: 'aws.bedrock',
    'detail-type': 'Batch Inference Job State Change',
    detail: {
      version: '0.0',
      accountId: '123456789012',
      batchJobName: NAME,
      batchJobArn: jobArn,
      batchModelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
      status,
      failureMessage: '',
      creationTime: '2030-01-01T00:00:00.000Z',
    },
  };
}

function job(
  status: string,
  overrides: Partial<GetModelInvocationJobCommandOutput> = {},
): GetModelInvocationJobCommandOutput {
  return invocationJob(JOB_ARN, NAME, status, new Date(T0), overrides);
}

async function registerJob(): Promise<void> {
  await jobs.store.register({
    jobArn: JOB_ARN,
    runId: 'run-1',
    shard: 2,
    jobName: NAME,
    taskToken: 'token-1',
    outputPrefix: 'runs/run-1/shards/00002/output/job0001/',
  });
}

describe('handleJobStateChange', () => {
  it('ignores jobs this pipeline does not know (another team’s)', async () => {
    const result = await handleJobStateChange(stateChange('Completed'), deps());
    expect(result).toEqual({ jobArn: JOB_ARN, status: 'Completed', ignored: 'unknown job' });
    expect(bedrockMock).toHaveReceivedCommandTimes(GetModelInvocationJobCommand, 0);
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 0);
  });

  it('records a running status as progress and leaves the wait open', async () => {
    await registerJob();
    const result = await handleJobStateChange(stateChange('InProgress'), deps());
    expect(result).toEqual({ jobArn: JOB_ARN, status: 'InProgress', progress: true });
    expect(await jobs.store.get(JOB_ARN)).toMatchObject({ lastStatus: 'InProgress', inFlight: IN_FLIGHT });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 0);
  });

  it('resumes the wait with GetModelInvocationJob’s details on a terminal event, once for duplicates', async () => {
    await registerJob();
    bedrockMock.on(GetModelInvocationJobCommand).resolves(
      job('PartiallyCompleted', {
        message: '3 records failed',
        endTime: new Date(T0 + 3_600_000),
        totalRecordCount: 200,
        successRecordCount: 197,
        errorRecordCount: 3,
      }),
    );
    sfnMock.on(SendTaskSuccessCommand).resolves({});

    const first = await handleJobStateChange(stateChange('PartiallyCompleted'), deps());
    const duplicate = await handleJobStateChange(stateChange('PartiallyCompleted'), deps());
    const late = await handleJobStateChange(stateChange('InProgress'), deps());

    expect(first).toEqual({
      jobArn: JOB_ARN,
      status: 'PartiallyCompleted',
      resumed: true,
      jobStatus: 'PartiallyCompleted',
    });
    expect(duplicate).toEqual({ jobArn: JOB_ARN, status: 'PartiallyCompleted', ignored: 'already resumed' });
    expect(late).toEqual({ jobArn: JOB_ARN, status: 'InProgress', ignored: 'already resumed' });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 1);
    const sent = sfnMock.commandCalls(SendTaskSuccessCommand)[0]?.args[0].input;
    expect(sent?.taskToken).toBe('token-1');
    expect(JSON.parse(sent?.output ?? '{}')).toEqual({
      jobArn: JOB_ARN,
      jobName: NAME,
      shard: 2,
      status: 'PartiallyCompleted',
      message: '3 records failed',
      submittedAt: new Date(T0).toISOString(),
      endedAt: new Date(T0 + 3_600_000).toISOString(),
      outputPrefix: 'runs/run-1/shards/00002/output/job0001/',
      counts: { total: 200, success: 197, error: 3 },
    });
    const item = await jobs.store.get(JOB_ARN);
    expect(item?.inFlight).toBeUndefined();
    expect(item?.lastStatus).toBe('PartiallyCompleted');
  });

  it('treats TaskTimedOut from SendTaskSuccess as harmless and closes the item', async () => {
    await registerJob();
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('Failed', { message: 'bad input' }));
    sfnMock
      .on(SendTaskSuccessCommand)
      .rejects(new TaskTimedOut({ message: 'Task Timed Out', $metadata: {} }));

    const result = await handleJobStateChange(stateChange('Failed'), deps());

    expect(result).toEqual({ jobArn: JOB_ARN, status: 'Failed', resumed: false, jobStatus: 'Failed' });
    const item = await jobs.store.get(JOB_ARN);
    expect(item?.inFlight).toBeUndefined();
    expect(item).toMatchObject({ lastStatus: 'Failed', endedAt: new Date(T0 + 1000).toISOString() });
  });

  it('leaves the wait open when GetModelInvocationJob does not report the end yet', async () => {
    await registerJob();
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('InProgress'));

    const result = await handleJobStateChange(stateChange('Completed'), deps());

    expect(result).toMatchObject({ progress: true, jobStatus: 'InProgress' });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 0);
    expect((await jobs.store.get(JOB_ARN))?.inFlight).toBe(IN_FLIGHT);
  });
});

describe('JobState entry', () => {
  const ddbMock = useDocumentClientMock();

  it('rejects a malformed event with InvalidEventError', async () => {
    await expect(
      handler({ source: 'aws.bedrock', 'detail-type': 'Batch Inference Job State Change', detail: {} }),
    ).rejects.toBeInstanceOf(InvalidEventError);
    await expect(handler({ source: 'aws.s3', detail: { batchJobArn: JOB_ARN } })).rejects.toBeInstanceOf(
      InvalidEventError,
    );
  });

  it('accepts the state-change event exactly as the Bedrock documentation shows it', async () => {
    ddbMock().on(GetCommand).resolves({});
    const documented = fixtureJson(AWS_FIXTURES.batchJobStateChange);
    const arn = (documented.detail as Record<string, unknown>).batchJobArn;
    await expect(handler(documented)).resolves.toEqual({
      jobArn: arn,
      status: 'Completed',
      ignored: 'unknown job',
    });
    expect(ddbMock()).toHaveReceivedCommandWith(GetCommand, { Key: { jobArn: arn } });
  });

  it('looks the job up in the configured table and ignores an unknown one', async () => {
    ddbMock().on(GetCommand).resolves({});
    const result = await handler({ ...stateChange('Completed'), id: 'e1', time: '2030-01-01T00:00:00Z' });
    expect(result).toEqual({ jobArn: JOB_ARN, status: 'Completed', ignored: 'unknown job' });
    expect(ddbMock()).toHaveReceivedCommandWith(GetCommand, {
      TableName: process.env.JOBS_TABLE,
      Key: { jobArn: JOB_ARN },
    });
  });
});
