import 'aws-sdk-client-mock-jest';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { mockClient, type AwsClientStub } from 'aws-sdk-client-mock';
import {
  BedrockClient,
  GetModelInvocationJobCommand,
  type GetModelInvocationJobCommandOutput,
} from '@aws-sdk/client-bedrock';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SendTaskSuccessCommand, SFNClient, TaskTimedOut } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { IN_FLIGHT, jobsTableDefinition, JobStore } from '../../../lambda/shared/batch-jobs';
import { InvalidEventError } from '../../../lambda/shared/errors';
import {
  handleJobStateChange,
  handler,
  type JobStateDeps,
  type JobStateEvent,
} from '../../../lambda/job-state';

type Dynalite = (options: {
  createTableMs?: number;
  deleteTableMs?: number;
  updateTableMs?: number;
}) => Server;
// eslint-disable-next-line @typescript-eslint/no-require-imports -- untyped CommonJS package
const dynalite = require('dynalite') as Dynalite;

const bedrockMock = mockClient(BedrockClient);
const sfnMock = mockClient(SFNClient);

const JOB_ARN = 'arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job0001';
const NAME = 'corpus-test-run-1-s2-0123456789ab';
const T0 = Date.parse('2030-01-01T00:00:00.000Z');

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

function deps(): JobStateDeps {
  return {
    bedrock: new BedrockClient({ region: 'us-east-1' }),
    sfn: new SFNClient({ region: 'us-east-1' }),
    store,
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
      batchModelId: 'anthropic.claude-3-haiku-20240307-v1:0',
      status,
      failureMessage: '',
      creationTime: '2030-01-01T00:00:00.000Z',
    },
  };
}

function job(status: string, overrides: Partial<GetModelInvocationJobCommandOutput> = {}) {
  return {
    $metadata: {},
    jobArn: JOB_ARN,
    jobName: NAME,
    modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
    roleArn: 'arn:aws:iam::123456789012:role/corpus-batch',
    status: status as GetModelInvocationJobCommandOutput['status'],
    submitTime: new Date(T0),
    inputDataConfig: undefined,
    outputDataConfig: undefined,
    ...overrides,
  } satisfies GetModelInvocationJobCommandOutput;
}

async function registerJob(): Promise<void> {
  await store.register({
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
    expect(await store.get(JOB_ARN)).toMatchObject({ lastStatus: 'InProgress', inFlight: IN_FLIGHT });
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
    const item = await store.get(JOB_ARN);
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
    const item = await store.get(JOB_ARN);
    expect(item?.inFlight).toBeUndefined();
    expect(item).toMatchObject({ lastStatus: 'Failed', endedAt: new Date(T0 + 1000).toISOString() });
  });

  it('leaves the wait open when GetModelInvocationJob does not report the end yet', async () => {
    await registerJob();
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('InProgress'));

    const result = await handleJobStateChange(stateChange('Completed'), deps());

    expect(result).toMatchObject({ progress: true, jobStatus: 'InProgress' });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 0);
    expect((await store.get(JOB_ARN))?.inFlight).toBe(IN_FLIGHT);
  });
});

describe('JobState entry', () => {
  // The module's clients were built at import; mocking the document client class reaches them. Mocked only here:
  // the tests above use the real client against dynalite.
  let ddbMock: AwsClientStub<DynamoDBDocumentClient>;
  beforeAll(() => {
    ddbMock = mockClient(DynamoDBDocumentClient);
  });
  afterAll(() => ddbMock.restore());

  it('rejects a malformed event with InvalidEventError', async () => {
    await expect(
      handler({ source: 'aws.bedrock', 'detail-type': 'Batch Inference Job State Change', detail: {} }),
    ).rejects.toBeInstanceOf(InvalidEventError);
    await expect(handler({ source: 'aws.s3', detail: { batchJobArn: JOB_ARN } })).rejects.toBeInstanceOf(
      InvalidEventError,
    );
  });

  it('looks the job up in the configured table and ignores an unknown one', async () => {
    ddbMock.on(GetCommand).resolves({});
    const result = await handler({ ...stateChange('Completed'), id: 'e1', time: '2030-01-01T00:00:00Z' });
    expect(result).toEqual({ jobArn: JOB_ARN, status: 'Completed', ignored: 'unknown job' });
    expect(ddbMock).toHaveReceivedCommandWith(GetCommand, {
      TableName: process.env.JOBS_TABLE,
      Key: { jobArn: JOB_ARN },
    });
  });
});
