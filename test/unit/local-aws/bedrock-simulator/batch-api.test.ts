import {
  BedrockClient,
  CreateModelInvocationJobCommand,
  GetModelInvocationJobCommand,
  ListModelInvocationJobsCommand,
  StopModelInvocationJobCommand,
  paginateListModelInvocationJobs,
  type CreateModelInvocationJobCommandInput,
} from '@aws-sdk/client-bedrock';

import {
  ManualClock,
  startBedrockSimulator,
  type BedrockSimulator,
  type BedrockSimulatorOptions,
} from './catalog-simulator';
import {
  BUCKET,
  EventRecorder,
  ROLE_ARN,
  anthropicLines,
  controlClient,
  expectSdkError,
  freshPrefix,
  jobIdOf,
  jobInput,
  putLines,
  startLocalS3,
  type LocalS3,
} from './batch-helpers';

const HAIKU = 'anthropic.claude-haiku-4-5-20251001-v1:0';
const HOUR = 3_600_000;

let local: LocalS3;
const running: { sim: BedrockSimulator; client: BedrockClient }[] = [];

beforeAll(async () => {
  local = await startLocalS3();
});

afterAll(async () => {
  await local.stop();
});

afterEach(async () => {
  for (const { sim, client } of running.splice(0)) {
    client.destroy();
    await sim.stop();
  }
});

async function start(options: BedrockSimulatorOptions = {}) {
  const events = new EventRecorder();
  const sim = await startBedrockSimulator({ s3Client: local.s3, onJobEvent: events.listener, ...options });
  const client = controlClient(sim.controlEndpoint);
  running.push({ sim, client });
  return { sim, client, events };
}

/** A simulator whose jobs stay Submitted until the test moves its clock. */
async function startHeld(options: BedrockSimulatorOptions = {}) {
  const clock = new ManualClock();
  return {
    clock,
    ...(await start({ ...options, batch: { clock, phaseMs: { submitted: HOUR }, ...options.batch } })),
  };
}

function create(client: BedrockClient, input: CreateModelInvocationJobCommandInput) {
  return client.send(new CreateModelInvocationJobCommand(input));
}

describe('CreateModelInvocationJob and GetModelInvocationJob', () => {
  it('creates a job and describes it by ARN (URL-encoded by the SDK) and by id', async () => {
    const { clock, client } = await startHeld();
    const input = jobInput('in/a.jsonl', 'out', {
      clientRequestToken: 'token-1',
      timeoutDurationInHours: 24,
      vpcConfig: { subnetIds: ['subnet-1'], securityGroupIds: ['sg-1'] },
      modelInvocationType: 'Converse',
      tags: [{ key: 'team', value: 'corpus' }],
    });
    const { jobArn } = await create(client, input);
    expect(jobArn).toMatch(/^arn:aws:bedrock:us-east-1:000000000000:model-invocation-job\/[a-z0-9]{12}$/);

    const byArn = await client.send(new GetModelInvocationJobCommand({ jobIdentifier: jobArn }));
    const byId = await client.send(new GetModelInvocationJobCommand({ jobIdentifier: jobIdOf(jobArn) }));
    expect(byId.jobArn).toBe(jobArn);
    expect(byArn).toMatchObject({
      jobArn,
      jobName: input.jobName,
      modelId: HAIKU,
      clientRequestToken: 'token-1',
      roleArn: ROLE_ARN,
      status: 'Submitted',
      inputDataConfig: input.inputDataConfig,
      outputDataConfig: input.outputDataConfig,
      vpcConfig: { subnetIds: ['subnet-1'], securityGroupIds: ['sg-1'] },
      timeoutDurationInHours: 24,
      modelInvocationType: 'Converse',
    });
    expect(byArn.submitTime).toEqual(new Date(clock.now()));
    expect(byArn.lastModifiedTime).toEqual(new Date(clock.now()));
    expect(byArn.jobExpirationTime).toEqual(new Date(clock.now() + 24 * HOUR));
    expect(byArn.endTime).toBeUndefined();
    expect(byArn.message).toBeUndefined();
  });

  it('answers ResourceNotFoundException (404) for an unknown job and ValidationException for a malformed id', async () => {
    const { client } = await startHeld();
    const missing = await expectSdkError(
      client.send(new GetModelInvocationJobCommand({ jobIdentifier: 'abcdefghijkl' })),
    );
    expect(missing.name).toBe('ResourceNotFoundException');
    expect(missing.$metadata.httpStatusCode).toBe(404);
    const otherAccount = await expectSdkError(
      client.send(
        new GetModelInvocationJobCommand({
          jobIdentifier: 'arn:aws:bedrock:us-east-1:111122223333:model-invocation-job/abcdefghijkl',
        }),
      ),
    );
    expect(otherAccount.name).toBe('ResourceNotFoundException');
    const malformed = await expectSdkError(
      client.send(new GetModelInvocationJobCommand({ jobIdentifier: 'Not_A_Job' })),
    );
    expect(malformed.name).toBe('ValidationException');
    expect(malformed.message).toContain("at 'jobIdentifier' failed to satisfy constraint");
  });

  it('is idempotent on clientRequestToken and refuses a reused token or name for a different job', async () => {
    const { sim, client } = await startHeld();
    const input = jobInput('in/a.jsonl', 'out', { clientRequestToken: 'shard-0007-attempt-1' });
    const first = await create(client, input);
    const again = await create(client, input);
    expect(again.jobArn).toBe(first.jobArn);
    expect(sim.batch.describeAll()).toHaveLength(1);

    const reusedToken = await expectSdkError(create(client, { ...input, timeoutDurationInHours: 48 }));
    expect(reusedToken.name).toBe('ConflictException');
    expect(reusedToken.$metadata.httpStatusCode).toBe(400);
    expect(reusedToken.message).toContain("clientRequestToken 'shard-0007-attempt-1' was already used");

    const sameName = await expectSdkError(create(client, { ...input, clientRequestToken: 'another-token' }));
    expect(sameName.name).toBe('ConflictException');
    expect(sameName.message).toContain(`named '${input.jobName}' already exists`);
    expect(sim.batch.describeAll()).toHaveLength(1);
  });

  it('fills in a clientRequestToken when the caller sends none (the SDK generates one)', async () => {
    const { client } = await startHeld();
    const { jobArn } = await create(client, jobInput('in/a.jsonl', 'out'));
    const job = await client.send(new GetModelInvocationJobCommand({ jobIdentifier: jobArn }));
    expect(job.clientRequestToken).toMatch(/^[0-9a-f-]{36}$/);
    expect(job.timeoutDurationInHours).toBe(168);
    expect(job.modelInvocationType).toBe('InvokeModel');
  });
});

describe('the concurrent-jobs quota', () => {
  it('refuses a job over the per-model quota with ServiceQuotaExceededException, and frees a slot when one ends', async () => {
    const { sim, client } = await startHeld({
      batch: { limits: { default: { maxConcurrentJobs: 2 } }, phaseMs: { submitted: HOUR, stopping: 0 } },
    });
    const a = await create(client, jobInput('in/a.jsonl', 'out'));
    await create(client, jobInput('in/a.jsonl', 'out'));
    const refused = await expectSdkError(create(client, jobInput('in/a.jsonl', 'out')));
    expect(refused.name).toBe('ServiceQuotaExceededException');
    expect(refused.$metadata.httpStatusCode).toBe(400);
    expect(refused.message).toContain(
      `'Sum of in-progress and submitted batch inference jobs using a base model for ${HAIKU}' (2)`,
    );
    // Another model has its own quota; an inference profile shares its model's.
    await create(client, jobInput('in/a.jsonl', 'out', { modelId: 'amazon.nova-micro-v1:0' }));
    const viaProfile = await expectSdkError(
      create(client, jobInput('in/a.jsonl', 'out', { modelId: `us.${HAIKU}` })),
    );
    expect(viaProfile.name).toBe('ServiceQuotaExceededException');

    await client.send(new StopModelInvocationJobCommand({ jobIdentifier: a.jobArn }));
    expect((await sim.batch.settled(a.jobArn as string)).status).toBe('Stopped');
    await expect(create(client, jobInput('in/a.jsonl', 'out'))).resolves.toHaveProperty('jobArn');
  });
});

describe('request validation', () => {
  const cases: [string, Partial<CreateModelInvocationJobCommandInput>, string][] = [
    [
      'a job name with an underscore',
      { jobName: 'my_job' },
      "Value 'my_job' at 'jobName' failed to satisfy constraint: Member must satisfy regular expression pattern",
    ],
    [
      'a job name over 63 characters',
      { jobName: 'j'.repeat(64) },
      "at 'jobName' failed to satisfy constraint: Member must have length less than or equal to 63",
    ],
    [
      'a clientRequestToken with a dot',
      { clientRequestToken: 'shard.1' },
      "Value 'shard.1' at 'clientRequestToken' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}",
    ],
    [
      'a role that is not an IAM role ARN',
      { roleArn: 'arn:aws:iam::123456789012:user/someone' },
      "at 'roleArn' failed to satisfy constraint: Member must satisfy regular expression pattern",
    ],
    ['an unknown model', { modelId: 'anthropic.claude-9-v1:0' }, 'The provided model identifier is invalid.'],
    [
      'an input URI that is not s3://bucket/key',
      { inputDataConfig: { s3InputDataConfig: { s3Uri: 'https://example.com/in.jsonl' } } },
      "at 'inputDataConfig.s3InputDataConfig.s3Uri' failed to satisfy constraint",
    ],
    [
      'an output bucket name of one character',
      { outputDataConfig: { s3OutputDataConfig: { s3Uri: 's3://b/out/' } } },
      "Value 's3://b/out/' at 'outputDataConfig.s3OutputDataConfig.s3Uri' failed to satisfy constraint",
    ],
    [
      'a timeout under 24 hours',
      { timeoutDurationInHours: 23 },
      "Value '23' at 'timeoutDurationInHours' failed to satisfy constraint: Member must have value greater than or equal to 24",
    ],
    [
      'a timeout over 168 hours',
      { timeoutDurationInHours: 169 },
      'Member must have value less than or equal to 168',
    ],
  ];

  it.each(cases)('refuses %s with a ValidationException (400)', async (_label, override, message) => {
    const { sim, client } = await startHeld();
    const error = await expectSdkError(create(client, { ...jobInput('in/a.jsonl', 'out'), ...override }));
    expect(error.name).toBe('ValidationException');
    expect(error.$metadata.httpStatusCode).toBe(400);
    expect(error.message).toContain(message);
    expect(sim.batch.describeAll()).toHaveLength(0);
  });

  it('reports every violation of one request in one message', async () => {
    const { client } = await startHeld();
    const error = await expectSdkError(
      create(client, { ...jobInput('in/a.jsonl', 'out'), jobName: 'bad_name', timeoutDurationInHours: 200 }),
    );
    expect(error.message).toMatch(/^2 validation errors detected: .*jobName.*timeoutDurationInHours/);
  });
});

describe('ListModelInvocationJobs', () => {
  it('filters by status, name and submit time, sorts, and paginates', async () => {
    const { clock, client } = await startHeld();
    const arns: string[] = [];
    for (const name of ['alpha-1', 'beta-1', 'alpha-2', 'alpha-3']) {
      const { jobArn } = await create(client, { ...jobInput('in/a.jsonl', 'out'), jobName: name });
      arns.push(jobArn as string);
      clock.advance(1000);
    }
    await client.send(new StopModelInvocationJobCommand({ jobIdentifier: arns[1] }));
    const t0 = clock.now() - 4000;

    const all = await client.send(new ListModelInvocationJobsCommand({}));
    expect(all.invocationJobSummaries?.map((j) => j.jobName)).toEqual([
      'alpha-3',
      'alpha-2',
      'beta-1',
      'alpha-1',
    ]);
    expect(all.nextToken).toBeUndefined();
    expect(all.invocationJobSummaries?.[0]?.submitTime).toEqual(new Date(t0 + 3000));

    const ascending = await client.send(
      new ListModelInvocationJobsCommand({ sortOrder: 'Ascending', sortBy: 'CreationTime' }),
    );
    expect(ascending.invocationJobSummaries?.map((j) => j.jobName)).toEqual([
      'alpha-1',
      'beta-1',
      'alpha-2',
      'alpha-3',
    ]);

    const stopping = await client.send(new ListModelInvocationJobsCommand({ statusEquals: 'Stopping' }));
    expect(stopping.invocationJobSummaries?.map((j) => j.jobArn)).toEqual([arns[1]]);

    const named = await client.send(new ListModelInvocationJobsCommand({ nameContains: 'alpha' }));
    expect(named.invocationJobSummaries).toHaveLength(3);

    const window = await client.send(
      new ListModelInvocationJobsCommand({
        submitTimeAfter: new Date(t0),
        submitTimeBefore: new Date(t0 + 3000),
      }),
    );
    expect(window.invocationJobSummaries?.map((j) => j.jobName)).toEqual(['alpha-2', 'beta-1']);

    const first = await client.send(new ListModelInvocationJobsCommand({ maxResults: 3 }));
    expect(first.invocationJobSummaries).toHaveLength(3);
    expect(first.nextToken).toBeDefined();
    const names: string[] = [];
    for await (const page of paginateListModelInvocationJobs({ client, pageSize: 3 }, {})) {
      names.push(...(page.invocationJobSummaries ?? []).map((j) => j.jobName ?? ''));
    }
    expect(names).toEqual(['alpha-3', 'alpha-2', 'beta-1', 'alpha-1']);

    const badStatus = await expectSdkError(
      client.send(new ListModelInvocationJobsCommand({ statusEquals: 'Running' as 'Completed' })),
    );
    expect(badStatus.name).toBe('ValidationException');
    const badToken = await expectSdkError(
      client.send(new ListModelInvocationJobsCommand({ nextToken: 'nonsense' })),
    );
    expect(badToken.name).toBe('ValidationException');
  });
});

describe('StopModelInvocationJob', () => {
  it('stops a job before it starts (Stopping, then Stopped) and refuses to stop an ended job', async () => {
    const { clock, sim, client, events } = await startHeld({
      batch: { phaseMs: { submitted: HOUR, stopping: 10 } },
    });
    const { jobArn } = await create(client, jobInput('in/a.jsonl', 'out'));
    await client.send(new StopModelInvocationJobCommand({ jobIdentifier: jobArn }));
    await client.send(new StopModelInvocationJobCommand({ jobIdentifier: jobIdOf(jobArn) }));
    const stopping = await client.send(new GetModelInvocationJobCommand({ jobIdentifier: jobArn }));
    expect(stopping.status).toBe('Stopping');
    clock.advance(10);
    const stopped = await sim.batch.settled(jobArn as string);
    expect(stopped.status).toBe('Stopped');
    expect(stopped.endTime).toBe(new Date(clock.now()).toISOString());
    await sim.batch.eventsDelivered();
    expect(events.statuses(jobArn)).toEqual(['Submitted', 'Stopping', 'Stopped']);

    const again = await expectSdkError(
      client.send(new StopModelInvocationJobCommand({ jobIdentifier: jobArn })),
    );
    expect(again.name).toBe('ValidationException');
    expect(again.message).toContain("is Stopped and can't be stopped");
  });
});

describe('the control-plane endpoint', () => {
  it('answers other operations with UnknownOperationException, and serves AWS_ENDPOINT_URL_BEDROCK clients', async () => {
    const { sim } = await startHeld();
    const response = await fetch(`${sim.controlEndpoint}/foundation-models`);
    expect(response.status).toBe(404);
    expect(response.headers.get('x-amzn-errortype')).toBe('UnknownOperationException');
    const malformed = await fetch(`${sim.controlEndpoint}/model-invocation-job`, {
      method: 'POST',
      body: '{oops',
    });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { message: string }).message).toContain('not valid JSON');

    const previous = process.env.AWS_ENDPOINT_URL_BEDROCK;
    process.env.AWS_ENDPOINT_URL_BEDROCK = sim.controlEndpoint;
    try {
      const viaEnv = new BedrockClient({
        region: 'us-east-1',
        credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
        maxAttempts: 1,
      });
      const listed = await viaEnv.send(new ListModelInvocationJobsCommand({}));
      expect(listed.invocationJobSummaries).toEqual([]);
      viaEnv.destroy();
    } finally {
      if (previous === undefined) delete process.env.AWS_ENDPOINT_URL_BEDROCK;
      else process.env.AWS_ENDPOINT_URL_BEDROCK = previous;
    }
  });
});

describe('input validation while Validating', () => {
  async function failedJob(
    setup: (prefix: string) => Promise<string>,
    options: BedrockSimulatorOptions = {},
  ) {
    const { sim, client } = await start({ batch: { phaseMs: 0, ...options.batch } });
    const prefix = freshPrefix('validate');
    const inputKey = await setup(prefix);
    const { jobArn } = await create(client, jobInput(inputKey, `${prefix}/out`));
    const job = await sim.batch.settled(jobArn as string);
    expect(job.status).toBe('Failed');
    expect(job.endTime).toBeDefined();
    return job.message ?? '';
  }

  it('fails a job whose input location holds no .jsonl file', async () => {
    let inputUri = '';
    const message = await failedJob(async (prefix) => {
      await putLines(local.s3, `${prefix}/in/notes.txt`, ['hello']);
      inputUri = `s3://${BUCKET}/${prefix}/in`;
      return `${prefix}/in`;
    });
    expect(message).toBe(
      `No .jsonl input files were found at ${inputUri}. Point the job at a .jsonl file, or at a prefix that holds .jsonl files.`,
    );
  });

  it('fails a job whose single input file is not .jsonl, or whose bucket does not exist', async () => {
    const notJsonl = await failedJob(async (prefix) => {
      await putLines(local.s3, `${prefix}/in.json`, anthropicLines(100));
      return `${prefix}/in.json`;
    });
    expect(notJsonl).toContain('is not a .jsonl file');
    const { sim, client } = await start({ batch: { phaseMs: 0 } });
    const { jobArn } = await create(client, {
      ...jobInput('x.jsonl', 'out'),
      inputDataConfig: { s3InputDataConfig: { s3Uri: 's3://no-such-bucket/in/' } },
    });
    const job = await sim.batch.settled(jobArn as string);
    expect(job.status).toBe('Failed');
    expect(job.message).toContain('Unable to read the input location s3://no-such-bucket/in/: NoSuchBucket');
  });

  it('fails a job with fewer records than the model minimum (per-model override)', async () => {
    const message = await failedJob(
      async (prefix) => {
        await putLines(local.s3, `${prefix}/in.jsonl`, anthropicLines(99));
        return `${prefix}/in.jsonl`;
      },
      {
        batch: {
          limits: { models: { [HAIKU]: { minRecordsPerJob: 100 } }, default: { minRecordsPerJob: 1 } },
        },
      },
    );
    expect(message).toContain(
      `The job has 99 records, fewer than the quota 'Minimum number of records per batch inference job for ${HAIKU}' requires (100).`,
    );
  });

  it('fails a job over the records-per-file, records-per-job, bytes-per-file and bytes-per-job limits', async () => {
    const twoFiles = async (prefix: string): Promise<string> => {
      await putLines(local.s3, `${prefix}/in/a.jsonl`, anthropicLines(6, 'a'));
      await putLines(local.s3, `${prefix}/in/b.jsonl`, anthropicLines(6, 'b'));
      return `${prefix}/in/`;
    };
    const limits = (extra: object) => ({ batch: { limits: { default: { minRecordsPerJob: 1, ...extra } } } });
    expect(await failedJob(twoFiles, limits({ maxRecordsPerFile: 5 }))).toContain(
      `The input file a.jsonl has 6 records, more than the quota 'Records per input file per batch inference job for ${HAIKU}' allows (5).`,
    );
    expect(await failedJob(twoFiles, limits({ maxRecordsPerJob: 11 }))).toContain(
      `The job has 12 records, more than the quota 'Records per batch inference job for ${HAIKU}' allows (11).`,
    );
    expect(await failedJob(twoFiles, limits({ maxBytesPerFile: 1000 }))).toMatch(
      /^The input file a\.jsonl is \d+ bytes, more than the quota 'Batch inference input file size \(in GB\)'/,
    );
    expect(await failedJob(twoFiles, limits({ maxBytesPerJob: 2000 }))).toMatch(
      /^The job's input files hold \d+ bytes, more than the quota 'Batch inference job size \(in GB\)'/,
    );
  });
});
