// The CLI against a deployed environment, every AWS call answered by aws-sdk-client-mock: outputs discovery, runs,
// status (batch mode jobs with Bedrock's live counters, converse mode Map Run counters), failures, report, start, redrive,
// reconcile, with the exit codes and JSON each command promises.
import { BedrockClient, GetModelInvocationJobCommand } from '@aws-sdk/client-bedrock';
import {
  CloudFormationClient,
  CloudFormationServiceException,
  DescribeStacksCommand,
  ListStackResourcesCommand,
} from '@aws-sdk/client-cloudformation';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import {
  DescribeExecutionCommand,
  DescribeMapRunCommand,
  ExecutionDoesNotExist,
  ListExecutionsCommand,
  ListMapRunsCommand,
  SFNClient,
  StartExecutionCommand,
} from '@aws-sdk/client-sfn';
import {
  GetQueueAttributesCommand,
  ListMessageMoveTasksCommand,
  SQSClient,
  StartMessageMoveTaskCommand,
} from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { discoverStack, openAwsBackend, type AwsClients } from '../../../cli/aws-backend';
import { BackendError } from '../../../cli/errors';
import { runCli } from '../../../cli/program';
import {
  Capture,
  jobArn,
  jsonl,
  manifest,
  manifestJob,
  marker,
  OUTPUT_BUCKET,
  plan,
  serveBucket,
  shard,
  STATE_MACHINE_ARN,
  T0,
  testConfig,
} from './helpers';
import { useClientMocks } from '../../support/aws-mocks';

const [cfnMock, sfnMock, s3Mock, bedrockMock, ddbMock, sqsMock, lambdaMock] = useClientMocks(
  CloudFormationClient,
  SFNClient,
  S3Client,
  BedrockClient,
  DynamoDBDocumentClient,
  SQSClient,
  LambdaClient,
);

const STACK_ID = 'arn:aws:cloudformation:us-east-1:123456789012:stack/CorpusPipeline-dev/abc';
const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures';
const DLQ_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures-dlq';
const QUEUE_ARN = 'arn:aws:sqs:us-east-1:123456789012:failures';
const DLQ_ARN = 'arn:aws:sqs:us-east-1:123456789012:failures-dlq';

const OUTPUTS: Record<string, string> = {
  IngestBucketName: 'corpus-ingest',
  IngestPrefix: 'corpora/',
  OutputBucketName: OUTPUT_BUCKET,
  StateMachineArn: STATE_MACHINE_ARN,
  FailureQueueUrl: QUEUE_URL,
  FailureDlqUrl: DLQ_URL,
  JobsTableName: 'corpus-jobs',
  LedgerTableName: 'corpus-ledger',
};

function describeStacks(outputs: Record<string, string> = OUTPUTS, status = 'UPDATE_COMPLETE') {
  return {
    Stacks: [
      {
        StackName: 'CorpusPipeline-dev',
        StackId: STACK_ID,
        StackStatus: status,
        CreationTime: new Date(T0),
        Outputs: Object.entries(outputs).map(([OutputKey, OutputValue]) => ({ OutputKey, OutputValue })),
      },
    ],
  } as never;
}

function clients(): AwsClients {
  return {
    cloudFormation: new CloudFormationClient({ region: 'us-east-1' }),
    sfn: new SFNClient({ region: 'us-east-1' }),
    s3: new S3Client({ region: 'us-east-1' }),
    bedrock: new BedrockClient({ region: 'us-east-1' }),
    dynamodb: DynamoDBDocumentClient.from(new DynamoDBClient({ region: 'us-east-1' })),
    sqs: new SQSClient({ region: 'us-east-1' }),
    lambda: new LambdaClient({ region: 'us-east-1' }),
  };
}

let files: Map<string, string>;

beforeEach(() => {
  cfnMock.on(DescribeStacksCommand).resolves(describeStacks());
  files = new Map();
  serveBucket(s3Mock, files);
  ddbMock.on(QueryCommand).resolves({ Items: [] });
});

const put = (key: string, value: unknown): void => {
  files.set(key, typeof value === 'string' ? value : JSON.stringify(value));
};

/** Runs the CLI against the mocked environment; returns the exit code and what it printed. */
async function cli(
  args: string[],
  options: { config?: ReturnType<typeof testConfig>; now?: number; tty?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string; json: () => unknown }> {
  const stdout = new Capture();
  const stderr = new Capture({ tty: options.tty ?? false });
  let now = options.now ?? T0 + 100_000;
  const code = await runCli(args, {
    openBackend: () => openAwsBackend({ config: options.config ?? testConfig(), clients: clients() }),
    stdout,
    stderr,
    now: () => now,
    sleep: (ms) => {
      now += ms;
      return Promise.resolve();
    },
  });
  return {
    code,
    stdout: stdout.text(),
    stderr: stderr.text(),
    json: () => JSON.parse(stdout.text()) as unknown,
  };
}

describe('stack outputs discovery', () => {
  it('reads every output the CLI needs from DescribeStacks on CorpusPipeline-<env>', async () => {
    const found = await discoverStack(
      new CloudFormationClient({ region: 'us-east-1' }),
      'CorpusPipeline-dev',
    );
    expect(cfnMock).toHaveReceivedCommandWith(DescribeStacksCommand, { StackName: 'CorpusPipeline-dev' });
    expect(found.accountId).toBe('123456789012');
    expect(found.outputs).toEqual({
      stackName: 'CorpusPipeline-dev',
      ingestBucket: 'corpus-ingest',
      ingestPrefix: 'corpora/',
      outputBucket: OUTPUT_BUCKET,
      stateMachineArn: STATE_MACHINE_ARN,
      failureQueueUrl: QUEUE_URL,
      failureDlqUrl: DLQ_URL,
      jobsTableName: 'corpus-jobs',
    });
  });

  it('says to deploy when the stack does not exist (exit 3)', async () => {
    cfnMock.on(DescribeStacksCommand).rejects(
      new CloudFormationServiceException({
        name: 'ValidationError',
        message: 'Stack with id CorpusPipeline-dev does not exist',
        $fault: 'client',
        $metadata: {},
      }),
    );
    const res = await cli(['runs', '--env', 'dev']);
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(/stack CorpusPipeline-dev does not exist.*cdk deploy/);
  });

  it('names the outputs an old stack lacks, and refuses a stack that never finished creating', async () => {
    const { FailureDlqUrl: _dlq, ...withoutDlq } = OUTPUTS;
    cfnMock.on(DescribeStacksCommand).resolves(describeStacks(withoutDlq));
    await expect(discoverStack(new CloudFormationClient({}), 'CorpusPipeline-dev')).rejects.toThrow(
      /lacks the output\(s\) FailureDlqUrl/,
    );
    cfnMock.on(DescribeStacksCommand).resolves(describeStacks(OUTPUTS, 'ROLLBACK_COMPLETE'));
    await expect(discoverStack(new CloudFormationClient({}), 'CorpusPipeline-dev')).rejects.toThrow(
      BackendError,
    );
  });

  it("refuses credentials of another account than the environment's", async () => {
    const res = await cli(['runs', '--env', 'dev'], { config: testConfig({ account: '999999999999' }) });
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(
      /deploys to account 999999999999, but the credentials reach account 123456789012/,
    );
  });
});

describe('corpus runs', () => {
  it('lists executions newest first with mode and counts from plan.json and manifest.json', async () => {
    sfnMock.on(ListExecutionsCommand).resolves({
      executions: [
        {
          executionArn: `${STATE_MACHINE_ARN.replace('stateMachine', 'execution')}:run-2`,
          stateMachineArn: STATE_MACHINE_ARN,
          name: 'run-2',
          status: 'RUNNING',
          startDate: new Date(T0 + 60_000),
        },
        {
          executionArn: `${STATE_MACHINE_ARN.replace('stateMachine', 'execution')}:run-1`,
          stateMachineArn: STATE_MACHINE_ARN,
          name: 'run-1',
          status: 'SUCCEEDED',
          startDate: new Date(T0),
          stopDate: new Date(T0 + 600_000),
        },
      ],
    });
    put('runs/run-2/plan.json', plan('run-2', 'converse', { records: 500 }));
    put('runs/run-1/plan.json', plan('run-1', 'batch', { records: 1000 }));
    put(
      'runs/run-1/manifest.json',
      manifest('run-1', 'batch', { records: 1000, succeeded: 990, failed: 10 }, { input: 1, output: 2 }),
    );

    const res = await cli(['runs', '--env', 'dev', '--limit', '5', '--json']);
    expect(res.code).toBe(0);
    expect(sfnMock).toHaveReceivedCommandWith(ListExecutionsCommand, {
      stateMachineArn: STATE_MACHINE_ARN,
      maxResults: 5,
    });
    const { runs } = res.json() as { runs: Record<string, unknown>[] };
    expect(runs.map((r) => [r.runId, r.status, r.mode, r.records, r.succeeded, r.failed])).toEqual([
      ['run-2', 'RUNNING', 'converse', 500, null, null],
      ['run-1', 'SUCCEEDED', 'batch', 1000, 990, 10],
    ]);

    const text = await cli(['runs', '--env', 'dev']);
    expect(text.stdout).toMatch(/^Runs in stack CorpusPipeline-dev \(us-east-1\), newest first:/);
    expect(text.stdout).toMatch(/run-1\s+SUCCEEDED\s+batch\s+1,000\s+990\s+10/);
  });
});

describe('corpus status', () => {
  const executionArn = `${STATE_MACHINE_ARN.replace('stateMachine', 'execution')}:run-b`;

  it('converse mode: records done of total, rate, ETA and error rate from the Map Run counters', async () => {
    put('runs/run-b/plan.json', plan('run-b', 'converse', { records: 1000 }));
    sfnMock.on(DescribeExecutionCommand).resolves({
      executionArn,
      name: 'run-b',
      status: 'RUNNING',
      startDate: new Date(T0),
    } as never);
    const mapRunArn = 'arn:aws:states:us-east-1:123456789012:mapRun:CorpusPipeline-dev/FanOut:0b1c';
    sfnMock.on(ListMapRunsCommand).resolves({
      mapRuns: [{ executionArn, mapRunArn, stateMachineArn: STATE_MACHINE_ARN, startDate: new Date(T0) }],
    });
    sfnMock.on(DescribeMapRunCommand).resolves({
      mapRunArn,
      executionArn,
      status: 'RUNNING',
      startDate: new Date(T0),
      maxConcurrency: 10,
      toleratedFailurePercentage: 5,
      toleratedFailureCount: 0,
      itemCounts: {
        pending: 560,
        running: 40,
        succeeded: 380,
        failed: 20,
        timedOut: 0,
        aborted: 0,
        total: 1000,
        resultsWritten: 0,
      },
      executionCounts: undefined as never,
    });

    const res = await cli(['status', 'run-b', '--env', 'dev', '--json'], { now: T0 + 100_000 });
    expect(res.code).toBe(0);
    expect(sfnMock).toHaveReceivedCommandWith(DescribeExecutionCommand, { executionArn });
    expect(sfnMock).toHaveReceivedCommandWith(DescribeMapRunCommand, { mapRunArn });
    const p = res.json() as Record<string, unknown>;
    expect(p).toMatchObject({
      runId: 'run-b',
      status: 'RUNNING',
      finished: false,
      total: 1000,
      done: 400,
      failed: 20,
      ratePerSecond: 4,
      etaSeconds: 150,
      errorRate: 0.05,
      executionArn,
    });
    expect(p.mapRuns).toEqual([
      {
        stateName: 'FanOut',
        unit: 'records',
        status: 'RUNNING',
        total: 1000,
        done: 400,
        failed: 20,
        running: 40,
        pending: 560,
      },
    ]);

    const text = await cli(['status', 'run-b', '--env', 'dev'], { now: T0 + 100_000 });
    expect(text.stdout).toMatch(/400 of 1,000 records \(40\.0%\)\s+rate 4\.0\/s\s+ETA 2m 30s\s+errors 5\.0%/);
    expect(text.stdout).toMatch(/FanOut\s+RUNNING\s+1,000 records\s+400\s+20\s+40\s+560/);
  });

  it("batch mode: a job table from the jobs table, Bedrock's live counters and the collect markers", async () => {
    put('runs/run-a/plan.json', plan('run-a', 'batch', { records: 1000 }, {}));
    put('runs/run-a/shards.json', [shard('run-a', 0, 400), shard('run-a', 1, 400), shard('run-a', 2, 200)]);
    put(
      'runs/run-a/collect/shard-0.json',
      marker(0, { records: 400, succeeded: 390, failed: 5, missing: 5 }, { input: 1, output: 1 }),
    );
    sfnMock
      .on(DescribeExecutionCommand)
      .resolves({ executionArn: 'x', name: 'run-a', status: 'RUNNING', startDate: new Date(T0) } as never);
    sfnMock.on(ListMapRunsCommand).resolves({ mapRuns: [] });
    ddbMock.on(QueryCommand).resolves({
      Items: [
        {
          jobArn: jobArn('job0'),
          runId: 'run-a',
          shard: 0,
          jobName: 'corpus-dev-run-a-s0',
          taskToken: 't0',
          submittedAt: new Date(T0 + 1000).toISOString(),
          endedAt: new Date(T0 + 61_000).toISOString(),
          lastStatus: 'PartiallyCompleted',
          outputPrefix: 'runs/run-a/shards/00000/output/job0/',
        },
        {
          jobArn: jobArn('job1'),
          runId: 'run-a',
          shard: 1,
          jobName: 'corpus-dev-run-a-s1',
          taskToken: 't1',
          submittedAt: new Date(T0 + 2000).toISOString(),
          lastStatus: 'Scheduled',
          inFlight: '1',
          outputPrefix: 'runs/run-a/shards/00001/output/job1/',
        },
      ],
    });
    bedrockMock.on(GetModelInvocationJobCommand, { jobIdentifier: jobArn('job1') }).resolves({
      jobArn: jobArn('job1'),
      status: 'InProgress',
      totalRecordCount: 400,
      processedRecordCount: 100,
      successRecordCount: 98,
      errorRecordCount: 2,
    } as never);

    const res = await cli(['status', 'run-a', '--env', 'dev', '--json'], { now: T0 + 99_000 });
    expect(res.code).toBe(0);
    expect(ddbMock).toHaveReceivedCommandWith(QueryCommand, {
      TableName: 'corpus-jobs',
      IndexName: 'by-run',
      ExpressionAttributeValues: { ':pk': 'run-a' },
    });
    // Only the job still waited on is asked of Bedrock.
    expect(bedrockMock).toHaveReceivedCommandTimes(GetModelInvocationJobCommand, 1);
    const p = res.json() as { done: number; failed: number; total: number; jobs: Record<string, unknown>[] };
    expect({ total: p.total, done: p.done, failed: p.failed }).toEqual({ total: 1000, done: 495, failed: 7 });
    expect(
      p.jobs.map((j) => [j.shard, j.status, j.records, j.processed, j.succeeded, j.failed, j.redriven]),
    ).toEqual([
      [0, 'PartiallyCompleted', 400, 395, 390, 5, 5],
      [1, 'InProgress', 400, 100, 98, 2, null],
      [2, 'Pending', 200, null, null, null, null],
    ]);

    const text = await cli(['status', 'run-a', '--env', 'dev'], { now: T0 + 99_000 });
    expect(text.stdout).toMatch(/Batch jobs \(3\):/);
    expect(text.stdout).toMatch(/1\s+InProgress\s+400\s+100\s+98\s+2\s+-/);
    expect(text.stdout).toMatch(/2\s+Pending\s+200\s+-/);
  });

  it('shows a job whose live look-up failed with its recorded status and the reason', async () => {
    put('runs/run-a/plan.json', plan('run-a', 'batch', { records: 400 }));
    sfnMock
      .on(DescribeExecutionCommand)
      .resolves({ executionArn: 'x', name: 'run-a', status: 'RUNNING', startDate: new Date(T0) } as never);
    sfnMock.on(ListMapRunsCommand).resolves({ mapRuns: [] });
    ddbMock.on(QueryCommand).resolves({
      Items: [
        {
          jobArn: jobArn('job0'),
          runId: 'run-a',
          shard: 0,
          jobName: 'n',
          taskToken: 't',
          submittedAt: new Date(T0).toISOString(),
          lastStatus: 'Validating',
          outputPrefix: 'o/',
        },
      ],
    });
    bedrockMock
      .on(GetModelInvocationJobCommand)
      .rejects(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' }));
    const res = await cli(['status', 'run-a', '--env', 'dev']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/0\s+Validating/);
    expect(res.stdout).toMatch(/shard 0: not live \(Bedrock GetModelInvocationJob: Rate exceeded\)/);
  });

  it('exit 1 for a run that does not exist, and for a failed run', async () => {
    sfnMock.on(DescribeExecutionCommand).rejects(new ExecutionDoesNotExist({ message: 'no', $metadata: {} }));
    const missing = await cli(['status', 'nope', '--env', 'dev']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no run nope in stack CorpusPipeline-dev/);

    put('runs/run-f/plan.json', plan('run-f', 'converse', { records: 10 }));
    put(
      'runs/run-f/manifest.json',
      manifest(
        'run-f',
        'converse',
        { records: 10, succeeded: 5, failed: 5 },
        { input: 1, output: 1 },
        {
          status: 'FAILED',
          error: { code: 'States.ExceedToleratedFailureThreshold', message: 'too many failed batches' },
        },
      ),
    );
    const failed = await cli(['status', 'run-f', '--env', 'dev']);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/error: States\.ExceedToleratedFailureThreshold: too many failed batches/);
  });

  it('--watch polls until the run ends, then prints the final status', async () => {
    put('runs/run-w/plan.json', plan('run-w', 'converse', { records: 100 }));
    sfnMock
      .on(DescribeExecutionCommand)
      .resolvesOnce({ executionArn: 'x', name: 'run-w', status: 'RUNNING', startDate: new Date(T0) } as never)
      .resolves({
        executionArn: 'x',
        name: 'run-w',
        status: 'SUCCEEDED',
        startDate: new Date(T0),
        stopDate: new Date(T0 + 200_000),
      } as never);
    sfnMock.on(ListMapRunsCommand).resolves({ mapRuns: [] });
    const res = await cli(['status', 'run-w', '--env', 'dev', '--watch', '--interval', '5']);
    expect(res.code).toBe(0);
    expect(sfnMock).toHaveReceivedCommandTimes(DescribeExecutionCommand, 2);
    // Not a terminal: one line per poll on stderr, then the final status on stdout.
    expect(res.stderr.trim().split('\n')).toHaveLength(2);
    expect(res.stderr).toMatch(/RUNNING\s+0 of 100 records/);
    expect(res.stdout).toMatch(/^Run run-w: SUCCEEDED/);
  });
});

describe('corpus failures', () => {
  beforeEach(() => {
    put('runs/run-1/plan.json', plan('run-1', 'converse', { records: 20 }));
    put(
      'runs/run-1/failures/plan.jsonl',
      jsonl([
        {
          line: 4,
          stage: 'plan',
          error: { code: 'InvalidJson', message: 'line 4 is not valid JSON', retryable: false },
        },
        { line: 9, stage: 'plan', error: { code: 'MissingModelInput', message: 'line 9 has no modelInput' } },
      ]),
    );
    put(
      'runs/run-1/failures/batch-0001.jsonl',
      jsonl([
        {
          recordId: 'r1',
          stage: 'converse',
          error: { code: 'ValidationException', message: 'maxTokens too big' },
        },
        {
          recordId: 'r2',
          stage: 'converse',
          error: { code: 'ValidationException', message: 'empty messages' },
        },
        {
          recordId: 'r3',
          stage: 'converse',
          error: { code: 'ThrottlingException', message: 'slow down', retryable: true },
        },
      ]),
    );
    sfnMock
      .on(DescribeExecutionCommand)
      .rejects(new ExecutionDoesNotExist({ message: 'gone', $metadata: {} }));
  });

  it('streams every failure file and filters by code (case-insensitive) and stage, counting all matches', async () => {
    const all = await cli(['failures', 'run-1', '--env', 'dev', '--json']);
    expect(all.code).toBe(0);
    const every = all.json() as {
      total: number;
      matched: number;
      byCode: Record<string, number>;
      failures: unknown[];
    };
    expect(every.total).toBe(5);
    expect(every.byCode).toEqual({
      ValidationException: 2,
      InvalidJson: 1,
      MissingModelInput: 1,
      ThrottlingException: 1,
    });

    const byCode = await cli([
      'failures',
      'run-1',
      '--env',
      'dev',
      '--code',
      'validationexception',
      '--limit',
      '1',
      '--json',
    ]);
    const filtered = byCode.json() as { matched: number; failures: { recordId: string; file: string }[] };
    expect(filtered.matched).toBe(2);
    expect(filtered.failures).toEqual([
      expect.objectContaining({
        recordId: 'r1',
        stage: 'converse',
        file: 'runs/run-1/failures/batch-0001.jsonl',
      }),
    ]);

    const byStage = await cli(['failures', 'run-1', '--env', 'dev', '--stage', 'plan', '--json']);
    expect((byStage.json() as { matched: number }).matched).toBe(2);
  });

  it('refuses an unknown stage (exit 2) and an unknown run (exit 1)', async () => {
    expect((await cli(['failures', 'run-1', '--env', 'dev', '--stage', 'nowhere'])).code).toBe(2);
    const missing = await cli(['failures', 'run-9', '--env', 'dev']);
    expect(missing.code).toBe(1);
  });
});

describe('corpus report', () => {
  it('prices Converse tokens on demand and batch tokens at the batch discount, with the saving of batch mode', async () => {
    put('runs/run-a/plan.json', plan('run-a', 'batch', { records: 3000 }));
    put(
      'runs/run-a/manifest.json',
      manifest(
        'run-a',
        'batch',
        { records: 3000, succeeded: 2990, failed: 10 },
        { input: 3_000_000, output: 1_000_000 },
        { jobs: [manifestJob(0, 1500), manifestJob(1, 1500, 'PartiallyCompleted')] },
      ),
    );
    put(
      'runs/run-a/collect/shard-0.json',
      marker(0, { records: 1500, succeeded: 1500, failed: 0 }, { input: 1_200_000, output: 500_000 }),
    );
    put(
      'runs/run-a/collect/shard-1.json',
      marker(1, { records: 1500, succeeded: 1490, failed: 10 }, { input: 800_000, output: 300_000 }),
    );
    sfnMock
      .on(DescribeExecutionCommand)
      .resolves({ executionArn: 'x', name: 'run-a', status: 'SUCCEEDED', startDate: new Date(T0) } as never);

    const res = await cli(['report', 'run-a', '--env', 'dev', '--json']);
    expect(res.code).toBe(0);
    const report = res.json() as Record<string, unknown>;
    expect(report.tokens).toEqual({
      input: 3_000_000,
      output: 1_000_000,
      total: 4_000_000,
      batch: { input: 2_000_000, output: 800_000 },
      onDemand: { input: 1_000_000, output: 200_000 },
    });
    // Nova Lite (the catalog's list prices, cdk.json sets none): $0.06 in, $0.24 out per million; batch $0.03, $0.12.
    expect(report.cost).toEqual({
      currency: 'USD',
      modelId: 'us.amazon.nova-lite-v1:0',
      priced: true,
      pricingKey: 'us.amazon.nova-lite-v1:0',
      prices: {
        inputPerMillion: 0.06,
        outputPerMillion: 0.24,
        batchInputPerMillion: 0.03,
        batchOutputPerMillion: 0.12,
        batchDiscount: 0.5,
      },
      onDemand: 0.108,
      batch: 0.156,
      total: 0.264,
      allOnDemand: 0.42,
      saving: 0.156,
      savingPercent: 37.14,
    });
    expect(report.jobs).toEqual({ total: 2, byStatus: { Completed: 1, PartiallyCompleted: 1 } });

    const text = await cli(['report', 'run-a', '--env', 'dev']);
    expect(text.stdout).toMatch(/cost\s+\$0\.2640: on demand \$0\.1080 \+ batch \$0\.1560/);
    expect(text.stdout).toMatch(/\$0\.06 in, \$0\.24 out, batch \$0\.03 in, \$0\.12 out/);
    expect(text.stdout).toMatch(/batch mode saved \$0\.1560 \(37\.14%\)/);
  });

  it('exit 1 for a run without a manifest yet', async () => {
    put('runs/run-r/plan.json', plan('run-r', 'converse', { records: 10 }));
    sfnMock
      .on(DescribeExecutionCommand)
      .resolves({ executionArn: 'x', name: 'run-r', status: 'RUNNING', startDate: new Date(T0) } as never);
    const res = await cli(['report', 'run-r', '--env', 'dev']);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/no manifest yet \(RUNNING\)/);
  });
});

describe('corpus start', () => {
  it('starts an execution with a validated input and prints the runId', async () => {
    sfnMock.on(StartExecutionCommand).resolves({
      executionArn: `${STATE_MACHINE_ARN.replace('stateMachine', 'execution')}:my-run`,
      startDate: new Date(T0),
    });
    const res = await cli([
      'start',
      '--env',
      'dev',
      '--corpus',
      's3://corpus-ingest/corpora/c.jsonl',
      '--mode',
      'batch',
      '--name',
      'my-run',
      '--json',
    ]);
    expect(res.code).toBe(0);
    expect(sfnMock).toHaveReceivedCommandWith(StartExecutionCommand, {
      stateMachineArn: STATE_MACHINE_ARN,
      name: 'my-run',
      input: JSON.stringify({
        bucket: 'corpus-ingest',
        key: 'corpora/c.jsonl',
        mode: 'batch',
        trigger: 'cli',
      }),
    });
    expect(res.json()).toMatchObject({ runId: 'my-run', status: 'RUNNING' });
  });

  it('starts the run of a prefix: its key is passed on as it is', async () => {
    sfnMock.on(StartExecutionCommand).resolves({
      executionArn: `${STATE_MACHINE_ARN.replace('stateMachine', 'execution')}:drop-run`,
      startDate: new Date(T0),
    });
    const res = await cli([
      'start',
      '--env',
      'dev',
      '--corpus',
      's3://corpus-ingest/corpora/drop-1/',
      '--json',
    ]);
    expect(res.code).toBe(0);
    expect(sfnMock).toHaveReceivedCommandWith(StartExecutionCommand, {
      input: JSON.stringify({
        bucket: 'corpus-ingest',
        key: 'corpora/drop-1/',
        mode: 'auto',
        trigger: 'cli',
      }),
    });
  });

  it('refuses a bad input before calling AWS (exit 2)', async () => {
    for (const args of [
      ['--corpus', 'corpus-ingest/c.jsonl'],
      ['--corpus', 's3://corpus-ingest/'],
      ['--corpus', 's3://ab/c.jsonl'],
      ['--corpus', 's3://corpus-ingest/c.jsonl', '--mode', 'fast'],
    ]) {
      const res = await cli(['start', '--env', 'dev', ...args]);
      expect(res.code).toBe(2);
    }
    expect(sfnMock).toHaveReceivedCommandTimes(StartExecutionCommand, 0);
    expect(cfnMock).toHaveReceivedCommandTimes(DescribeStacksCommand, 0);
  });
});

describe('corpus redrive', () => {
  beforeEach(() => {
    sqsMock.on(GetQueueAttributesCommand, { QueueUrl: DLQ_URL }).resolves({
      Attributes: { QueueArn: DLQ_ARN, ApproximateNumberOfMessages: '42' },
    });
    sqsMock.on(GetQueueAttributesCommand, { QueueUrl: QUEUE_URL }).resolves({
      Attributes: { QueueArn: QUEUE_ARN, ApproximateNumberOfMessages: '0' },
    });
    sqsMock.on(StartMessageMoveTaskCommand).resolves({ TaskHandle: 'handle-1' });
  });

  it('moves the DLQ to the failure queue with StartMessageMoveTask and polls ListMessageMoveTasks to the end', async () => {
    sqsMock
      .on(ListMessageMoveTasksCommand)
      .resolvesOnce({
        Results: [
          {
            TaskHandle: 'handle-1',
            Status: 'RUNNING',
            SourceArn: DLQ_ARN,
            ApproximateNumberOfMessagesMoved: 10,
            ApproximateNumberOfMessagesToMove: 42,
          },
        ],
      })
      .resolves({
        Results: [
          {
            Status: 'COMPLETED',
            SourceArn: DLQ_ARN,
            DestinationArn: QUEUE_ARN,
            ApproximateNumberOfMessagesMoved: 42,
            ApproximateNumberOfMessagesToMove: 42,
          },
        ],
      });
    const res = await cli(['redrive', '--env', 'dev', '--max-per-second', '50', '--json']);
    expect(res.code).toBe(0);
    expect(sqsMock).toHaveReceivedCommandWith(StartMessageMoveTaskCommand, {
      SourceArn: DLQ_ARN,
      DestinationArn: QUEUE_ARN,
      MaxNumberOfMessagesPerSecond: 50,
    });
    expect(sqsMock).toHaveReceivedCommandWith(ListMessageMoveTasksCommand, {
      SourceArn: DLQ_ARN,
      MaxResults: 1,
    });
    expect(res.json()).toEqual({
      sourceArn: DLQ_ARN,
      destinationArn: QUEUE_ARN,
      waiting: 42,
      status: 'COMPLETED',
      taskHandle: 'handle-1',
      moved: 42,
      toMove: 42,
      stillRunning: false,
    });
  });

  it('exit 1 when the move task fails, with its reason', async () => {
    sqsMock.on(ListMessageMoveTasksCommand).resolves({
      Results: [
        {
          Status: 'FAILED',
          SourceArn: DLQ_ARN,
          ApproximateNumberOfMessagesMoved: 3,
          FailureReason: 'AccessDenied on the destination',
        },
      ],
    });
    const res = await cli(['redrive', '--env', 'dev']);
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/Redrive FAILED: 3 of 42 messages moved/);
    expect(res.stdout).toMatch(/reason: AccessDenied on the destination/);
  });

  it('stops waiting at --timeout and says the task is still running', async () => {
    sqsMock.on(ListMessageMoveTasksCommand).resolves({
      Results: [
        {
          TaskHandle: 'handle-1',
          Status: 'RUNNING',
          SourceArn: DLQ_ARN,
          ApproximateNumberOfMessagesMoved: 7,
        },
      ],
    });
    const res = await cli(['redrive', '--env', 'dev', '--timeout', '10', '--poll-interval', '2']);
    expect(res.code).toBe(0);
    expect(sqsMock).toHaveReceivedCommandTimes(ListMessageMoveTasksCommand, 6);
    expect(res.stdout).toMatch(/Redrive RUNNING: 7 of 42 messages moved/);
    expect(res.stdout).toMatch(/still running/);
  });

  it('starts nothing when the DLQ is empty, and returns at once with --no-wait', async () => {
    sqsMock.on(GetQueueAttributesCommand, { QueueUrl: DLQ_URL }).resolves({
      Attributes: { QueueArn: DLQ_ARN, ApproximateNumberOfMessages: '0' },
    });
    const empty = await cli(['redrive', '--env', 'dev']);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toMatch(/empty: nothing to redrive/);
    expect(sqsMock).toHaveReceivedCommandTimes(StartMessageMoveTaskCommand, 0);

    sqsMock.on(GetQueueAttributesCommand, { QueueUrl: DLQ_URL }).resolves({
      Attributes: { QueueArn: DLQ_ARN, ApproximateNumberOfMessages: '5' },
    });
    const started = await cli(['redrive', '--env', 'dev', '--no-wait', '--json']);
    expect(started.json()).toMatchObject({ status: 'RUNNING', taskHandle: 'handle-1', stillRunning: true });
    expect(sqsMock).toHaveReceivedCommandTimes(ListMessageMoveTasksCommand, 0);
  });
});

describe('corpus reconcile', () => {
  it("invokes the stack's Reconcile function, found among the stack resources", async () => {
    cfnMock.on(ListStackResourcesCommand).resolves({
      StackResourceSummaries: [
        {
          LogicalResourceId: 'FunctionsPlanFunctionBD0235D8',
          PhysicalResourceId: 'plan-fn',
          ResourceType: 'AWS::Lambda::Function',
          ResourceStatus: 'CREATE_COMPLETE',
          LastUpdatedTimestamp: new Date(T0),
        },
        {
          LogicalResourceId: 'FunctionsReconcileFunction0A1B2C3D',
          PhysicalResourceId: 'CorpusPipeline-dev-Reconcile-xyz',
          ResourceType: 'AWS::Lambda::Function',
          ResourceStatus: 'CREATE_COMPLETE',
          LastUpdatedTimestamp: new Date(T0),
        },
      ],
    });
    lambdaMock.on(InvokeCommand).resolves({
      StatusCode: 200,
      Payload: Buffer.from(
        JSON.stringify({ checked: 3, resumed: 1, closed: 0, heartbeats: 2, abandoned: 0 }),
      ) as never,
    });
    const res = await cli(['reconcile', '--env', 'dev', '--json']);
    expect(res.code).toBe(0);
    expect(lambdaMock).toHaveReceivedCommandWith(InvokeCommand, {
      FunctionName: 'CorpusPipeline-dev-Reconcile-xyz',
      InvocationType: 'RequestResponse',
    });
    expect(res.json()).toEqual({
      via: 'CorpusPipeline-dev-Reconcile-xyz',
      summary: { checked: 3, resumed: 1, closed: 0, heartbeats: 2, abandoned: 0 },
    });
  });

  it('exit 3 with the error when the function fails', async () => {
    cfnMock
      .on(DescribeStacksCommand)
      .resolves(describeStacks({ ...OUTPUTS, ReconcileFunctionName: 'reconcile-fn' }));
    lambdaMock.on(InvokeCommand).resolves({
      StatusCode: 200,
      FunctionError: 'Unhandled',
      Payload: Buffer.from(
        '{"errorType":"ReconcileError","errorMessage":"1 job could not be reconciled"}',
      ) as never,
    });
    const res = await cli(['reconcile', '--env', 'dev']);
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(
      /Reconcile function reconcile-fn failed \(Unhandled\).*1 job could not be reconciled/,
    );
    expect(cfnMock).toHaveReceivedCommandTimes(ListStackResourcesCommand, 0);
  });
});
