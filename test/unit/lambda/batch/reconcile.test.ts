import 'aws-sdk-client-mock-jest';
import { describe, expect, it } from '@jest/globals';
import {
  AccessDeniedException,
  GetModelInvocationJobCommand,
  StopModelInvocationJobCommand,
  ValidationException,
  type GetModelInvocationJobCommandOutput,
} from '@aws-sdk/client-bedrock';
import {
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  TaskDoesNotExist,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import { QueryCommand } from '@aws-sdk/lib-dynamodb';
import { IN_FLIGHT } from '../../../../lambda/shared/batch-jobs';
import { handler } from '../../../../lambda/reconcile';
import { reconcileJobs, ReconcileError, type ReconcileDeps } from '../../../../lambda/batch/reconcile';
import { invocationJob, useDocumentClientMock, useJobsTable, useServiceMocks } from './jobs-table';

const { bedrockMock, sfnMock, clients } = useServiceMocks();

const T0 = Date.parse('2030-01-01T00:00:00.000Z');
const arn = (id: string): string => `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/${id}`;

const jobs = useJobsTable({ now: () => T0 });

function deps(): ReconcileDeps {
  return {
    ...clients(),
    store: jobs.store,
    concurrency: 4,
    now: () => T0 + 60_000,
  };
}

async function registerJob(id: string, shard: number, token = `token-${id}`): Promise<void> {
  await jobs.store.register({
    jobArn: arn(id),
    runId: 'run-1',
    shard,
    jobName: `corpus-test-run-1-s${shard}-0123456789ab`,
    taskToken: token,
    outputPrefix: `runs/run-1/shards/0000${shard}/output/${id}/`,
    // Listed oldest first: shard order.
    submittedAt: new Date(T0 + shard * 1000).toISOString(),
  });
}

function job(
  id: string,
  status: string,
  overrides: Partial<GetModelInvocationJobCommandOutput> = {},
): GetModelInvocationJobCommandOutput {
  return invocationJob(arn(id), `corpus-${id}`, status, new Date(T0), overrides);
}

function onGet(id: string, output: GetModelInvocationJobCommandOutput): void {
  bedrockMock.on(GetModelInvocationJobCommand, { jobIdentifier: arn(id) }).resolves(output);
}

describe('reconcileJobs', () => {
  it('does nothing when no wait is open', async () => {
    expect(await reconcileJobs(deps())).toEqual({
      checked: 0,
      resumed: 0,
      closed: 0,
      heartbeats: 0,
      abandoned: 0,
    });
    expect(bedrockMock).toHaveReceivedCommandTimes(GetModelInvocationJobCommand, 0);
  });

  it('resumes ended jobs whose event was lost, heartbeats running ones and records their progress', async () => {
    await registerJob('ended', 0);
    await registerJob('running', 1);
    onGet('ended', job('ended', 'Completed', { endTime: new Date(T0 + 30_000), successRecordCount: 100 }));
    onGet('running', job('running', 'InProgress', { totalRecordCount: 300, processedRecordCount: 120 }));
    sfnMock.on(SendTaskSuccessCommand).resolves({});
    sfnMock.on(SendTaskHeartbeatCommand).resolves({});

    const summary = await reconcileJobs(deps());

    expect(summary).toEqual({ checked: 2, resumed: 1, closed: 0, heartbeats: 1, abandoned: 0 });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 1);
    const sent = sfnMock.commandCalls(SendTaskSuccessCommand)[0]?.args[0].input;
    expect(sent?.taskToken).toBe('token-ended');
    expect(JSON.parse(sent?.output ?? '{}')).toMatchObject({
      jobArn: arn('ended'),
      status: 'Completed',
      shard: 0,
      endedAt: new Date(T0 + 30_000).toISOString(),
      counts: { success: 100 },
    });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskHeartbeatCommand, 1);
    expect(sfnMock).toHaveReceivedCommandWith(SendTaskHeartbeatCommand, { taskToken: 'token-running' });
    expect((await jobs.store.get(arn('ended')))?.inFlight).toBeUndefined();
    expect(await jobs.store.get(arn('running'))).toMatchObject({
      inFlight: IN_FLIGHT,
      lastStatus: 'InProgress',
      counts: { total: 300, processed: 120 },
    });
    expect(bedrockMock).toHaveReceivedCommandTimes(StopModelInvocationJobCommand, 0);
  });

  it('closes an ended job whose wait had already timed out without failing', async () => {
    await registerJob('late', 0);
    onGet('late', job('late', 'Expired'));
    sfnMock
      .on(SendTaskSuccessCommand)
      .rejects(new TaskTimedOut({ message: 'Task Timed Out', $metadata: {} }));

    expect(await reconcileJobs(deps())).toMatchObject({ checked: 1, resumed: 0, closed: 1 });
    expect(await jobs.store.get(arn('late'))).toMatchObject({ lastStatus: 'Expired' });
    expect((await jobs.store.get(arn('late')))?.inFlight).toBeUndefined();
  });

  it.each([
    ['stops', undefined],
    [
      'tolerates a ValidationException from stopping',
      new ValidationException({ message: 'job is already stopping', $metadata: {} }),
    ],
  ])('%s a running job whose execution is gone and closes it as Abandoned', async (_what, stopError) => {
    await registerJob('orphan', 0);
    onGet('orphan', job('orphan', 'InProgress'));
    sfnMock
      .on(SendTaskHeartbeatCommand)
      .rejects(new TaskDoesNotExist({ message: 'Task does not exist', $metadata: {} }));
    if (stopError) bedrockMock.on(StopModelInvocationJobCommand).rejects(stopError);
    else bedrockMock.on(StopModelInvocationJobCommand).resolves({});

    expect(await reconcileJobs(deps())).toMatchObject({ checked: 1, abandoned: 1, heartbeats: 0 });
    expect(bedrockMock).toHaveReceivedCommandWith(StopModelInvocationJobCommand, {
      jobIdentifier: arn('orphan'),
    });
    const item = await jobs.store.get(arn('orphan'));
    expect(item).toMatchObject({ lastStatus: 'Abandoned', endedAt: new Date(T0 + 60_000).toISOString() });
    expect(item?.inFlight).toBeUndefined();
  });

  it('heartbeats the newer token a retried submit registered instead of stopping the job', async () => {
    await registerJob('retried', 0, 'token-old');
    onGet('retried', job('retried', 'Scheduled'));
    sfnMock.on(SendTaskHeartbeatCommand, { taskToken: 'token-old' }).callsFake(async () => {
      // The workflow retried SubmitJob after a heartbeat timeout; it found the job and registered its own token.
      await registerJob('retried', 0, 'token-new');
      throw new TaskTimedOut({ message: 'Task Timed Out', $metadata: {} });
    });
    sfnMock.on(SendTaskHeartbeatCommand, { taskToken: 'token-new' }).resolves({});

    expect(await reconcileJobs(deps())).toMatchObject({ checked: 1, heartbeats: 1, abandoned: 0 });
    expect(bedrockMock).toHaveReceivedCommandTimes(StopModelInvocationJobCommand, 0);
    expect(await jobs.store.get(arn('retried'))).toMatchObject({
      taskToken: 'token-new',
      inFlight: IN_FLIGHT,
    });
  });

  it('processes every job when one fails, then throws an error naming the failed job', async () => {
    await registerJob('broken', 0);
    await registerJob('ended', 1);
    await registerJob('running', 2);
    bedrockMock
      .on(GetModelInvocationJobCommand, { jobIdentifier: arn('broken') })
      .rejects(new AccessDeniedException({ message: 'not authorized', $metadata: {} }));
    onGet('ended', job('ended', 'Stopped'));
    onGet('running', job('running', 'InProgress'));
    sfnMock.on(SendTaskSuccessCommand).resolves({});
    sfnMock.on(SendTaskHeartbeatCommand).resolves({});

    // One at a time, the failing job first: the others must still be processed after it.
    const err = await reconcileJobs({ ...deps(), concurrency: 1 }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(ReconcileError);
    const error = err as ReconcileError;
    expect(error.failures.map((f) => f.jobArn)).toEqual([arn('broken')]);
    expect(error.message).toContain(arn('broken'));
    expect(error.message).toContain('AccessDeniedException');
    expect(sfnMock).toHaveReceivedCommandWith(SendTaskSuccessCommand, { taskToken: 'token-ended' });
    expect(sfnMock).toHaveReceivedCommandWith(SendTaskHeartbeatCommand, { taskToken: 'token-running' });
    expect((await jobs.store.get(arn('ended')))?.inFlight).toBeUndefined();
    expect((await jobs.store.get(arn('broken')))?.inFlight).toBe(IN_FLIGHT);
  });
});

describe('Reconcile entry', () => {
  const ddbMock = useDocumentClientMock();

  it('queries the in-flight index of the configured table', async () => {
    ddbMock().on(QueryCommand).resolves({ Items: [] });
    expect(await handler({ 'detail-type': 'Scheduled Event', source: 'aws.events' })).toEqual({
      checked: 0,
      resumed: 0,
      closed: 0,
      heartbeats: 0,
      abandoned: 0,
    });
    expect(ddbMock()).toHaveReceivedCommandWith(QueryCommand, {
      TableName: process.env.JOBS_TABLE,
      IndexName: 'in-flight',
    });
  });
});
