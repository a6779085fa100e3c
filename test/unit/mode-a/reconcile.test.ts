import 'aws-sdk-client-mock-jest';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { mockClient, type AwsClientStub } from 'aws-sdk-client-mock';
import {
  AccessDeniedException,
  BedrockClient,
  GetModelInvocationJobCommand,
  StopModelInvocationJobCommand,
  ValidationException,
  type GetModelInvocationJobCommandOutput,
} from '@aws-sdk/client-bedrock';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  SFNClient,
  TaskDoesNotExist,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { IN_FLIGHT, jobsTableDefinition, JobStore } from '../../../lambda/shared/batch-jobs';
import { handler, reconcileJobs, ReconcileError, type ReconcileDeps } from '../../../lambda/reconcile';

type Dynalite = (options: {
  createTableMs?: number;
  deleteTableMs?: number;
  updateTableMs?: number;
}) => Server;
// eslint-disable-next-line @typescript-eslint/no-require-imports -- untyped CommonJS package
const dynalite = require('dynalite') as Dynalite;

const bedrockMock = mockClient(BedrockClient);
const sfnMock = mockClient(SFNClient);

const T0 = Date.parse('2030-01-01T00:00:00.000Z');
const arn = (id: string): string => `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/${id}`;

let server: Server;
let raw: DynamoDBClient;
let store: JobStore;
let tables = 0;

beforeAll(async () => {
  server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  raw = new DynamoDBClient({
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1,
  });
});

afterAll(async () => {
  raw.destroy();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(async () => {
  bedrockMock.reset();
  sfnMock.reset();
  const tableName = `jobs-${++tables}`;
  await raw.send(new CreateTableCommand(jobsTableDefinition(tableName)));
  store = new JobStore({ client: DynamoDBDocumentClient.from(raw), tableName, ttlDays: 30, now: () => T0 });
});

function deps(): ReconcileDeps {
  return {
    bedrock: new BedrockClient({ region: 'us-east-1' }),
    sfn: new SFNClient({ region: 'us-east-1' }),
    store,
    concurrency: 4,
    now: () => T0 + 60_000,
  };
}

async function registerJob(id: string, shard: number, token = `token-${id}`): Promise<void> {
  await store.register({
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

function job(id: string, status: string, overrides: Partial<GetModelInvocationJobCommandOutput> = {}) {
  return {
    $metadata: {},
    jobArn: arn(id),
    jobName: `corpus-${id}`,
    modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
    roleArn: 'arn:aws:iam::123456789012:role/corpus-batch',
    status: status as GetModelInvocationJobCommandOutput['status'],
    submitTime: new Date(T0),
    inputDataConfig: undefined,
    outputDataConfig: undefined,
    ...overrides,
  } satisfies GetModelInvocationJobCommandOutput;
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
    expect((await store.get(arn('ended')))?.inFlight).toBeUndefined();
    expect(await store.get(arn('running'))).toMatchObject({
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
    expect(await store.get(arn('late'))).toMatchObject({ lastStatus: 'Expired' });
    expect((await store.get(arn('late')))?.inFlight).toBeUndefined();
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
    const item = await store.get(arn('orphan'));
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
    expect(await store.get(arn('retried'))).toMatchObject({ taskToken: 'token-new', inFlight: IN_FLIGHT });
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
    expect((await store.get(arn('ended')))?.inFlight).toBeUndefined();
    expect((await store.get(arn('broken')))?.inFlight).toBe(IN_FLIGHT);
  });
});

describe('Reconcile entry', () => {
  // The module's clients were built at import; mocking the document client class reaches them. Mocked only here:
  // the tests above use the real client against dynalite.
  let ddbMock: AwsClientStub<DynamoDBDocumentClient>;
  beforeAll(() => {
    ddbMock = mockClient(DynamoDBDocumentClient);
  });
  afterAll(() => ddbMock.restore());

  it('queries the in-flight index of the configured table', async () => {
    ddbMock.on(QueryCommand).resolves({ Items: [] });
    expect(await handler({ 'detail-type': 'Scheduled Event', source: 'aws.events' })).toEqual({
      checked: 0,
      resumed: 0,
      closed: 0,
      heartbeats: 0,
      abandoned: 0,
    });
    expect(ddbMock).toHaveReceivedCommandWith(QueryCommand, {
      TableName: process.env.JOBS_TABLE,
      IndexName: 'in-flight',
    });
  });
});
