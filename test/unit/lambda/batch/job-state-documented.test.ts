import { describe, expect, it } from '@jest/globals';
import { BedrockClient } from '@aws-sdk/client-bedrock';
import { SFNClient } from '@aws-sdk/client-sfn';
import { IN_FLIGHT } from '../../../../lambda/shared/batch-jobs';
import { handleJobStateChange, jobStateEventSchema } from '../../../../lambda/batch/job-state';
import {
  AWS_FIXTURES,
  fixtureJson,
  jsonAnswer,
  OFFLINE_CLIENT,
  servingFixture,
  type HttpFixture,
} from '../../aws-shapes/fixtures';
import { useJobsTable } from './jobs-table';

// The job-state handler on the payloads AWS documents, through the real SDK clients: the Bedrock
// "Batch Inference Job State Change" example event, GetModelInvocationJob's documented response (deserialized by
// @aws-sdk/client-bedrock from the fixture's JSON), and Step Functions answering SendTaskSuccess. The jobs table is
// dynalite.

const T0 = Date.parse('2024-08-28T23:00:00.000Z');
const jobs = useJobsTable({ now: () => T0 });

const event = fixtureJson(AWS_FIXTURES.batchJobStateChange);
const detail = event.detail as Record<string, string>;
const JOB_ARN = detail.batchJobArn as string;

/** Clients whose HTTP layer answers with the documented payloads; what Step Functions was sent is kept. */
function documentedClients(getJob: Record<string, unknown>): {
  bedrock: BedrockClient;
  sfn: SFNClient;
  bedrockRequests: string[];
  sendTaskSuccess: Record<string, unknown>[];
} {
  const bedrockHandler = servingFixture(() => jsonAnswer(getJob));
  const sendTaskSuccess: Record<string, unknown>[] = [];
  const sfnHandler = servingFixture(({ body }): HttpFixture => {
    sendTaskSuccess.push(JSON.parse(body) as Record<string, unknown>);
    // SendTaskSuccess answers an empty object (awsJson1_0).
    return {
      status: 200,
      headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': 'fixture' },
      body: '{}',
    };
  });
  return {
    bedrock: new BedrockClient({ ...OFFLINE_CLIENT, requestHandler: bedrockHandler }),
    sfn: new SFNClient({ ...OFFLINE_CLIENT, requestHandler: sfnHandler }),
    bedrockRequests: bedrockHandler.requests,
    sendTaskSuccess,
  };
}

describe('the job-state handler on the documented payloads', () => {
  it('parses the documented state-change event, keeping every detail field', () => {
    const parsed = jobStateEventSchema.parse(event);
    expect(parsed.detail).toEqual({
      version: '0.0',
      accountId: '123456789012',
      batchJobName: 'dummy-batch-job-name',
      batchJobArn: JOB_ARN,
      batchModelId: 'arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-sonnet-20240229-v1:0',
      status: 'Completed',
      failureMessage: '',
      creationTime: 'Aug 28, 2024, 10:47:53 PM',
    });
  });

  it('resumes the wait with what the documented GetModelInvocationJob response says', async () => {
    await jobs.store.register({
      jobArn: JOB_ARN,
      runId: 'run-1',
      shard: 0,
      jobName: 'corpus-run-1-s0',
      taskToken: 'token-1',
      outputPrefix: 'runs/run-1/batch/shard-0/output/abcdefghwxyz/',
    });
    const getJob = { ...fixtureJson(AWS_FIXTURES.getModelInvocationJob), jobArn: JOB_ARN };
    const clients = documentedClients(getJob);

    const result = await handleJobStateChange(jobStateEventSchema.parse(event), {
      bedrock: clients.bedrock,
      sfn: clients.sfn,
      store: jobs.store,
      now: () => T0,
    });

    expect(result).toEqual({ jobArn: JOB_ARN, status: 'Completed', resumed: true, jobStatus: 'Completed' });
    // GetModelInvocationJob by ARN: GET /model-invocation-job/{jobIdentifier}, the ARN URL-encoded.
    expect(clients.bedrockRequests).toEqual([`GET /model-invocation-job/${encodeURIComponent(JOB_ARN)}`]);
    expect(clients.sendTaskSuccess).toHaveLength(1);
    const sent = clients.sendTaskSuccess[0] as { taskToken: string; output: string };
    expect(sent.taskToken).toBe('token-1');
    // The documented counts (JSON numbers) and ISO 8601 times reach the outcome; the empty message is left out.
    expect(JSON.parse(sent.output)).toEqual({
      jobArn: JOB_ARN,
      jobName: 'my-batch-job',
      shard: 0,
      status: 'Completed',
      submittedAt: '2024-08-28T22:47:53.000Z',
      endedAt: '2024-08-28T22:58:30.000Z',
      outputPrefix: 'runs/run-1/batch/shard-0/output/abcdefghwxyz/',
      counts: { total: 2, processed: 2, success: 1, error: 1 },
    });
    const item = await jobs.store.get(JOB_ARN);
    expect(item?.inFlight).toBeUndefined();
    expect(item).toMatchObject({ lastStatus: 'Completed', endedAt: '2024-08-28T22:58:30.000Z' });
    clients.bedrock.destroy();
    clients.sfn.destroy();
  });

  it('records a running status from the documented event shape as progress', async () => {
    await jobs.store.register({
      jobArn: JOB_ARN,
      runId: 'run-1',
      shard: 0,
      jobName: 'corpus-run-1-s0',
      taskToken: 'token-1',
      outputPrefix: 'runs/run-1/batch/shard-0/output/abcdefghwxyz/',
    });
    const clients = documentedClients(fixtureJson(AWS_FIXTURES.getModelInvocationJob));
    const inProgress = { ...event, detail: { ...detail, status: 'InProgress' } };

    const result = await handleJobStateChange(jobStateEventSchema.parse(inProgress), {
      bedrock: clients.bedrock,
      sfn: clients.sfn,
      store: jobs.store,
    });

    expect(result).toEqual({ jobArn: JOB_ARN, status: 'InProgress', progress: true });
    expect(clients.bedrockRequests).toEqual([]);
    expect(await jobs.store.get(JOB_ARN)).toMatchObject({ lastStatus: 'InProgress', inFlight: IN_FLIGHT });
    clients.bedrock.destroy();
    clients.sfn.destroy();
  });
});
