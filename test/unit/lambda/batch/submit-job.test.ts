import 'aws-sdk-client-mock-jest';
import { beforeEach, describe, expect, it } from '@jest/globals';
import {
  AccessDeniedException,
  ConflictException,
  CreateModelInvocationJobCommand,
  GetModelInvocationJobCommand,
  ListModelInvocationJobsCommand,
  ServiceQuotaExceededException,
  ValidationException,
  type GetModelInvocationJobCommandOutput,
} from '@aws-sdk/client-bedrock';
import { SendTaskSuccessCommand } from '@aws-sdk/client-sfn';
import { IN_FLIGHT } from '../../../../lambda/shared/batch-jobs';
import type { SubmitJobEvent } from '../../../../lambda/shared/contracts';
import { InvalidEventError } from '../../../../lambda/shared/errors';
import {
  CLIENT_REQUEST_TOKEN_PATTERN,
  clientRequestToken,
  JOB_NAME_PATTERN,
  jobName,
  shardInputPrefix,
  shardOutputPrefix,
} from '../../../../lambda/batch/sharding';
import { handler, settingsFromEnv, submitJobEnvSchema } from '../../../../lambda/submit-job';
import { submitShardJob, type SubmitJobDeps, type SubmitSettings } from '../../../../lambda/batch/submit-job';
import { invocationJob, useJobsTable, useServiceMocks } from './jobs-table';

const { bedrockMock, sfnMock, clients } = useServiceMocks();

const RUN = 'exec-2030-01-01_corpus.reviews';
const REGION_ACCOUNT = 'arn:aws:bedrock:us-east-1:123456789012';
const JOB_ARN = `${REGION_ACCOUNT}:model-invocation-job/job0001`;
const T0 = Date.parse('2030-01-01T00:00:00.000Z');

const SETTINGS: SubmitSettings = {
  outputBucket: 'output-bucket',
  modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
  roleArn: 'arn:aws:iam::123456789012:role/corpus-batch',
  jobTimeoutHours: 48,
  jobNamePrefix: 'corpus-dev',
  tags: { team: 'search', environment: 'dev' },
};

let clock: number;
const jobs = useJobsTable({ now: () => clock });

beforeEach(() => {
  clock = T0;
});

function event(overrides: Partial<SubmitJobEvent['shard']> = {}, taskToken = 'token-1'): SubmitJobEvent {
  return {
    taskToken,
    runId: RUN,
    shard: {
      shard: 7,
      records: 500,
      bytes: 123_456,
      format: 'converse',
      inputKeys: [`${shardInputPrefix(RUN, 7)}part-00000.jsonl`],
      inputPrefix: shardInputPrefix(RUN, 7),
      outputPrefix: shardOutputPrefix(RUN, 7),
      ...overrides,
    },
  };
}

function deps(settings: SubmitSettings = SETTINGS): SubmitJobDeps {
  return {
    ...clients(),
    store: jobs.store,
    settings,
    now: () => clock,
  };
}

function job(
  status: string,
  overrides: Partial<GetModelInvocationJobCommandOutput> = {},
): GetModelInvocationJobCommandOutput {
  return invocationJob(JOB_ARN, jobName(RUN, 7, 0, 'corpus-dev'), status, new Date(T0), overrides);
}

const NAME = jobName(RUN, 7, 0, 'corpus-dev');

describe('job name and request token', () => {
  it('are deterministic, valid for Bedrock and distinct per shard', () => {
    const longRun = `${'x'.repeat(70)}_weird.run:id`;
    for (const run of [RUN, longRun]) {
      const name = jobName(run, 7, 0, 'corpus-dev');
      const token = clientRequestToken(run, 7);
      expect(name.length).toBeLessThanOrEqual(63);
      expect(name).toMatch(JOB_NAME_PATTERN);
      expect(name.startsWith('corpus-dev-')).toBe(true);
      expect(token.length).toBeLessThanOrEqual(256);
      expect(token).toMatch(CLIENT_REQUEST_TOKEN_PATTERN);
      expect(jobName(run, 7, 0, 'corpus-dev')).toBe(name);
      expect(jobName(run, 8, 0, 'corpus-dev')).not.toBe(name);
      expect(clientRequestToken(run, 8)).not.toBe(token);
    }
  });
});

describe('submitShardJob', () => {
  it('creates the job with the full request shape, records the token and leaves the wait open', async () => {
    bedrockMock.on(ListModelInvocationJobsCommand).resolves({ invocationJobSummaries: [] });
    bedrockMock.on(CreateModelInvocationJobCommand).resolves({ jobArn: JOB_ARN });
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('Submitted'));
    const settings: SubmitSettings = {
      ...SETTINGS,
      vpc: { subnetIds: ['subnet-1', 'subnet-2'], securityGroupIds: ['sg-1'] },
      outputKmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/k1',
    };

    const result = await submitShardJob(event(), deps(settings));

    expect(result).toEqual({
      jobArn: JOB_ARN,
      jobName: NAME,
      status: 'Submitted',
      created: true,
      resumed: false,
    });
    expect(bedrockMock).toHaveReceivedCommandWith(ListModelInvocationJobsCommand, { nameContains: NAME });
    expect(bedrockMock).toHaveReceivedCommandTimes(CreateModelInvocationJobCommand, 1);
    expect(bedrockMock.commandCalls(CreateModelInvocationJobCommand)[0]?.args[0].input).toEqual({
      jobName: NAME,
      roleArn: SETTINGS.roleArn,
      clientRequestToken: clientRequestToken(RUN, 7),
      modelId: SETTINGS.modelId,
      inputDataConfig: {
        s3InputDataConfig: {
          s3Uri: `s3://output-bucket/${shardInputPrefix(RUN, 7)}`,
          s3InputFormat: 'JSONL',
        },
      },
      outputDataConfig: {
        s3OutputDataConfig: {
          s3Uri: `s3://output-bucket/${shardOutputPrefix(RUN, 7)}`,
          s3EncryptionKeyId: 'arn:aws:kms:us-east-1:123456789012:key/k1',
        },
      },
      timeoutDurationInHours: 48,
      tags: [
        { key: 'team', value: 'search' },
        { key: 'environment', value: 'dev' },
        { key: 'corpus-pipeline:run-id', value: RUN },
        { key: 'corpus-pipeline:shard', value: '7' },
      ],
      vpcConfig: { subnetIds: ['subnet-1', 'subnet-2'], securityGroupIds: ['sg-1'] },
      modelInvocationType: 'Converse',
    });
    expect(await jobs.store.get(JOB_ARN)).toMatchObject({
      runId: RUN,
      shard: 7,
      jobName: NAME,
      taskToken: 'token-1',
      inFlight: IN_FLIGHT,
      lastStatus: 'Submitted',
      outputPrefix: `${shardOutputPrefix(RUN, 7)}job0001/`,
    });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 0);
  });

  it('leaves out the invocation type for native shards, and VPC and KMS when not configured', async () => {
    bedrockMock.on(ListModelInvocationJobsCommand).resolves({});
    bedrockMock.on(CreateModelInvocationJobCommand).resolves({ jobArn: JOB_ARN });
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('Validating'));

    await submitShardJob(event({ format: 'native' }), deps());

    const input = bedrockMock.commandCalls(CreateModelInvocationJobCommand)[0]?.args[0].input;
    expect(input).toBeDefined();
    expect(input).not.toHaveProperty('modelInvocationType');
    expect(input).not.toHaveProperty('vpcConfig');
    expect(input?.outputDataConfig).toEqual({
      s3OutputDataConfig: { s3Uri: `s3://output-bucket/${shardOutputPrefix(RUN, 7)}` },
    });
  });

  it('on a retried submit finds the job an earlier attempt created (exact name, across pages) instead of creating', async () => {
    bedrockMock.on(ListModelInvocationJobsCommand).resolves({ invocationJobSummaries: [] });
    bedrockMock.on(CreateModelInvocationJobCommand).resolves({ jobArn: JOB_ARN });
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('Submitted'));
    await submitShardJob(event(), deps());

    bedrockMock.reset();
    const similar = { jobName: `${NAME}0`, jobArn: `${REGION_ACCOUNT}:model-invocation-job/other` };
    bedrockMock
      .on(ListModelInvocationJobsCommand)
      .resolvesOnce({ invocationJobSummaries: [similar as never], nextToken: 'page-2' })
      .resolvesOnce({ invocationJobSummaries: [{ jobName: NAME, jobArn: JOB_ARN } as never] });
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('InProgress', { totalRecordCount: 500 }));
    clock = T0 + 60_000;

    const result = await submitShardJob(event({}, 'token-2'), deps());

    expect(result).toMatchObject({ jobArn: JOB_ARN, created: false, resumed: false, status: 'InProgress' });
    expect(bedrockMock).toHaveReceivedCommandTimes(CreateModelInvocationJobCommand, 0);
    expect(bedrockMock).toHaveReceivedNthSpecificCommandWith(2, ListModelInvocationJobsCommand, {
      nameContains: NAME,
      nextToken: 'page-2',
    });
    expect(await jobs.store.get(JOB_ARN)).toMatchObject({
      taskToken: 'token-2',
      submittedAt: new Date(T0).toISOString(),
      inFlight: IN_FLIGHT,
      lastStatus: 'InProgress',
      counts: { total: 500 },
    });
  });

  it('waits on the job a concurrent attempt created when the create reports a conflict', async () => {
    bedrockMock
      .on(ListModelInvocationJobsCommand)
      .resolvesOnce({ invocationJobSummaries: [] })
      .resolves({ invocationJobSummaries: [{ jobName: NAME, jobArn: JOB_ARN } as never] });
    bedrockMock
      .on(CreateModelInvocationJobCommand)
      .rejects(new ConflictException({ message: 'A job with this name already exists', $metadata: {} }));
    bedrockMock.on(GetModelInvocationJobCommand).resolves(job('Submitted'));

    const result = await submitShardJob(event(), deps());

    expect(result).toMatchObject({ jobArn: JOB_ARN, created: true });
    expect(bedrockMock).toHaveReceivedCommandTimes(ListModelInvocationJobsCommand, 2);
    expect((await jobs.store.get(JOB_ARN))?.taskToken).toBe('token-1');
  });

  it('turns ServiceQuotaExceededException into BatchQuotaBusyError and records nothing', async () => {
    bedrockMock.on(ListModelInvocationJobsCommand).resolves({});
    bedrockMock
      .on(CreateModelInvocationJobCommand)
      .rejects(new ServiceQuotaExceededException({ message: '10 jobs in progress', $metadata: {} }));

    const err = await submitShardJob(event(), deps()).catch((e: unknown) => e);

    expect(err).toMatchObject({ name: 'BatchQuotaBusyError' });
    expect((err as Error).message).toContain('10 jobs in progress');
    expect(await jobs.store.listInFlight()).toEqual([]);
    expect(bedrockMock).toHaveReceivedCommandTimes(GetModelInvocationJobCommand, 0);
  });

  it.each([
    [
      'ValidationException',
      new ValidationException({ message: 'model does not support batch', $metadata: {} }),
    ],
    [
      'AccessDeniedException',
      new AccessDeniedException({ message: 'not authorized to PassRole', $metadata: {} }),
    ],
  ])('turns %s into BatchJobRejectedError carrying Bedrock’s message', async (_name, error) => {
    bedrockMock.on(ListModelInvocationJobsCommand).resolves({});
    bedrockMock.on(CreateModelInvocationJobCommand).rejects(error);

    const err = await submitShardJob(event(), deps()).catch((e: unknown) => e);

    expect(err).toMatchObject({ name: 'BatchJobRejectedError' });
    expect((err as Error).message).toContain(error.message);
    expect(await jobs.store.listInFlight()).toEqual([]);
  });

  it('resumes the wait at once when the job has already ended', async () => {
    bedrockMock
      .on(ListModelInvocationJobsCommand)
      .resolves({ invocationJobSummaries: [{ jobName: NAME, jobArn: JOB_ARN } as never] });
    bedrockMock.on(GetModelInvocationJobCommand).resolves(
      job('Completed', {
        endTime: new Date(T0 + 7_200_000),
        totalRecordCount: 500,
        processedRecordCount: 500,
        successRecordCount: 500,
        errorRecordCount: 0,
      }),
    );
    sfnMock.on(SendTaskSuccessCommand).resolves({});

    const result = await submitShardJob(event({}, 'token-3'), deps());

    expect(result).toMatchObject({ jobArn: JOB_ARN, status: 'Completed', created: false, resumed: true });
    expect(sfnMock).toHaveReceivedCommandTimes(SendTaskSuccessCommand, 1);
    const sent = sfnMock.commandCalls(SendTaskSuccessCommand)[0]?.args[0].input;
    expect(sent?.taskToken).toBe('token-3');
    expect(JSON.parse(sent?.output ?? '{}')).toEqual({
      jobArn: JOB_ARN,
      jobName: NAME,
      shard: 7,
      status: 'Completed',
      submittedAt: new Date(T0).toISOString(),
      endedAt: new Date(T0 + 7_200_000).toISOString(),
      outputPrefix: `${shardOutputPrefix(RUN, 7)}job0001/`,
      counts: { total: 500, processed: 500, success: 500, error: 0 },
    });
    const item = await jobs.store.get(JOB_ARN);
    expect(item?.inFlight).toBeUndefined();
    expect(item?.lastStatus).toBe('Completed');
  });
});

describe('SubmitJob environment and entry', () => {
  const base = {
    OUTPUT_BUCKET: 'b',
    JOBS_TABLE: 't',
    MODEL_ID: 'm',
    BATCH_ROLE_ARN: 'arn:aws:iam::1:role/r',
    BATCH_JOB_TIMEOUT_HOURS: '24',
    BATCH_JOB_NAME_PREFIX: 'corpus',
  };

  it('reads tags, VPC lists and the KMS key', () => {
    const settings = settingsFromEnv(
      submitJobEnvSchema.parse({
        ...base,
        BATCH_JOB_TAGS: '{"team":"search"}',
        BATCH_VPC_SUBNET_IDS: 'subnet-1, subnet-2',
        BATCH_VPC_SECURITY_GROUP_IDS: 'sg-1',
        BATCH_OUTPUT_KMS_KEY_ARN: 'arn:aws:kms:us-east-1:1:key/k',
      }),
    );
    expect(settings).toEqual({
      outputBucket: 'b',
      modelId: 'm',
      roleArn: 'arn:aws:iam::1:role/r',
      jobTimeoutHours: 24,
      jobNamePrefix: 'corpus',
      tags: { team: 'search' },
      vpc: { subnetIds: ['subnet-1', 'subnet-2'], securityGroupIds: ['sg-1'] },
      outputKmsKeyArn: 'arn:aws:kms:us-east-1:1:key/k',
    });
    expect(settingsFromEnv(submitJobEnvSchema.parse(base))).toEqual({
      outputBucket: 'b',
      modelId: 'm',
      roleArn: 'arn:aws:iam::1:role/r',
      jobTimeoutHours: 24,
      jobNamePrefix: 'corpus',
      tags: {},
    });
  });

  it.each([
    { BATCH_JOB_TIMEOUT_HOURS: '12' },
    { BATCH_JOB_TIMEOUT_HOURS: '169' },
    { BATCH_JOB_TAGS: 'not json' },
    { BATCH_JOB_TAGS: '{"n": 1}' },
    { BATCH_VPC_SUBNET_IDS: 'subnet-1' },
  ])('rejects %j', (bad) => {
    expect(submitJobEnvSchema.safeParse({ ...base, ...bad }).success).toBe(false);
  });

  it('rejects a malformed event with InvalidEventError before calling anything', async () => {
    await expect(handler({ runId: 'r', shard: { shard: 0 } })).rejects.toBeInstanceOf(InvalidEventError);
    expect(bedrockMock).toHaveReceivedCommandTimes(ListModelInvocationJobsCommand, 0);
  });
});
