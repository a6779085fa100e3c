import { BedrockClient, GetModelInvocationJobCommand } from '@aws-sdk/client-bedrock';
import {
  CloudFormationClient,
  DescribeStacksCommand,
  ListStackResourcesCommand,
  type ListStackResourcesCommandOutput,
} from '@aws-sdk/client-cloudformation';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import {
  DescribeExecutionCommand,
  DescribeMapRunCommand,
  ListExecutionsCommand,
  ListMapRunsCommand,
  SFNClient,
  StartExecutionCommand,
  type DescribeExecutionCommandOutput,
  type ListMapRunsCommandOutput,
} from '@aws-sdk/client-sfn';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { PipelineConfig } from '../lib/config';
import { countsOf, isTerminalStatus, JobStore, type StoredJob } from '../lambda/shared/batch-jobs';
import { mapWithConcurrency } from '../lambda/shared/pool';
import type { RunInput } from '../lambda/shared/contracts';
import { pipelineName, STACK_OUTPUTS } from '../lambda/shared/contracts';
import type {
  Backend,
  ExecutionInfo,
  JobInfo,
  MapRunInfo,
  ReconcileOutcome,
  RedriveOptions,
  RedriveOutcome,
  StackOutputs,
} from './backend';
import { BackendError, NotFoundError, describeError } from './errors';
import { redriveDeadLetters } from './redrive';
import { executionArnOf, storedJobInfo } from './run-store';

/** The AWS clients the backend uses; tests pass mocked ones. */
export interface AwsClients {
  cloudFormation: CloudFormationClient;
  sfn: SFNClient;
  s3: S3Client;
  bedrock: BedrockClient;
  dynamodb: DynamoDBDocumentClient;
  sqs: SQSClient;
  lambda: LambdaClient;
}

/** Options of {@link openAwsBackend}. */
export interface AwsBackendOptions {
  /** The environment's validated settings (region, account, pricing). */
  config: PipelineConfig;
  /** Clients to use instead of new ones in `config.region` with the default credential chain. */
  clients?: Partial<AwsClients>;
}

/** The stack outputs the CLI cannot work without, by output key. */
const REQUIRED_OUTPUTS = {
  ingestBucket: STACK_OUTPUTS.ingestBucket,
  ingestPrefix: STACK_OUTPUTS.ingestPrefix,
  outputBucket: STACK_OUTPUTS.outputBucket,
  stateMachineArn: STACK_OUTPUTS.stateMachineArn,
  failureQueueUrl: STACK_OUTPUTS.failureQueueUrl,
  failureDlqUrl: STACK_OUTPUTS.failureDlqUrl,
} as const;

/** Stack statuses in which the stack has no resources to operate (never created, rolled back, or going away). */
const UNUSABLE_STACK_STATUSES = new Set([
  'CREATE_IN_PROGRESS',
  'CREATE_FAILED',
  'ROLLBACK_IN_PROGRESS',
  'ROLLBACK_FAILED',
  'ROLLBACK_COMPLETE',
  'DELETE_IN_PROGRESS',
  'DELETE_COMPLETE',
]);

/** The Reconcile function's logical id in the stack (`Functions/Reconcile/Function` plus CDK's hash). */
const RECONCILE_LOGICAL_ID = /^FunctionsReconcileFunction[0-9A-F]{8}$/;

/** What {@link discoverStack} found. */
export interface DiscoveredStack {
  outputs: StackOutputs;
  /** The account the stack lives in (from its StackId). */
  accountId: string;
  /** Every output by key (for optional ones). */
  raw: Record<string, string>;
}

/**
 * Finds the environment's stack with CloudFormation DescribeStacks and reads its outputs.
 * @throws BackendError when the stack does not exist, is not deployed, or lacks an output the CLI needs
 */
export async function discoverStack(cfn: CloudFormationClient, stackName: string): Promise<DiscoveredStack> {
  let stack;
  try {
    stack = (await cfn.send(new DescribeStacksCommand({ StackName: stackName }))).Stacks?.[0];
  } catch (error) {
    if (isMissingStack(error)) stack = undefined;
    else throw new BackendError(`CloudFormation DescribeStacks ${stackName} failed`, { cause: error });
  }
  if (!stack) {
    throw new BackendError(
      `stack ${stackName} does not exist in this account and Region: deploy it first (npx cdk deploy -c env=<env>)`,
    );
  }
  const status = stack.StackStatus ?? 'UNKNOWN';
  if (UNUSABLE_STACK_STATUSES.has(status)) {
    throw new BackendError(`stack ${stackName} is ${status}: it has nothing to operate`);
  }
  const raw: Record<string, string> = {};
  for (const output of stack.Outputs ?? []) {
    if (output.OutputKey && output.OutputValue !== undefined) raw[output.OutputKey] = output.OutputValue;
  }
  const missing = Object.values(REQUIRED_OUTPUTS).filter((key) => raw[key] === undefined);
  if (missing.length > 0) {
    throw new BackendError(
      `stack ${stackName} lacks the output(s) ${missing.join(', ')}: deploy the current version of the app`,
    );
  }
  const pick = (key: string): string => raw[key]!;
  const outputs: StackOutputs = {
    stackName,
    ingestBucket: pick(REQUIRED_OUTPUTS.ingestBucket),
    ingestPrefix: pick(REQUIRED_OUTPUTS.ingestPrefix),
    outputBucket: pick(REQUIRED_OUTPUTS.outputBucket),
    stateMachineArn: pick(REQUIRED_OUTPUTS.stateMachineArn),
    failureQueueUrl: pick(REQUIRED_OUTPUTS.failureQueueUrl),
    failureDlqUrl: pick(REQUIRED_OUTPUTS.failureDlqUrl),
    ...(raw[STACK_OUTPUTS.jobsTable] ? { jobsTableName: raw[STACK_OUTPUTS.jobsTable] } : {}),
  };
  return { outputs, accountId: stack.StackId?.split(':')[4] ?? '', raw };
}

function isMissingStack(error: unknown): boolean {
  // CloudFormation answers a ValidationError "Stack with id X does not exist" for an unknown stack.
  return error instanceof Error && error.name === 'ValidationError' && /does not exist/.test(error.message);
}

/**
 * Opens the AWS backend for an environment: clients in its Region, the stack `CorpusPipeline-<env>` found with
 * DescribeStacks. When the environment names an account, the stack must be in it (the credentials are for it).
 */
export async function openAwsBackend(options: AwsBackendOptions): Promise<Backend> {
  const { config } = options;
  const region = config.region;
  const given = options.clients ?? {};
  const clients: AwsClients = {
    cloudFormation: given.cloudFormation ?? new CloudFormationClient({ region }),
    sfn: given.sfn ?? new SFNClient({ region }),
    s3: given.s3 ?? new S3Client({ region }),
    bedrock: given.bedrock ?? new BedrockClient({ region }),
    dynamodb: given.dynamodb ?? DynamoDBDocumentClient.from(new DynamoDBClient({ region })),
    sqs: given.sqs ?? new SQSClient({ region }),
    lambda: given.lambda ?? new LambdaClient({ region }),
  };
  const stackName = pipelineName(config.envName);
  const stack = await discoverStack(clients.cloudFormation, stackName);
  if (config.account && stack.accountId && stack.accountId !== config.account) {
    throw new BackendError(
      `environment ${config.envName} deploys to account ${config.account}, but the credentials reach account ${stack.accountId}`,
    );
  }
  return new AwsBackend(config, stack, clients);
}

/** The AWS backend: a deployed environment's stack. */
class AwsBackend implements Backend {
  readonly kind = 'aws';
  readonly label: string;
  readonly outputs: StackOutputs;
  readonly s3: S3Client;

  constructor(
    readonly config: PipelineConfig,
    private readonly stack: DiscoveredStack,
    private readonly clients: AwsClients,
  ) {
    this.outputs = stack.outputs;
    this.s3 = clients.s3;
    this.label = `stack ${stack.outputs.stackName} (${config.region})`;
  }

  async listExecutions(limit: number): Promise<ExecutionInfo[]> {
    const executions: ExecutionInfo[] = [];
    let nextToken: string | undefined;
    do {
      const page = await this.clients.sfn.send(
        new ListExecutionsCommand({
          stateMachineArn: this.outputs.stateMachineArn,
          maxResults: Math.min(1000, limit - executions.length),
          ...(nextToken ? { nextToken } : {}),
        }),
      );
      for (const e of page.executions ?? []) {
        if (!e.name || !e.executionArn) continue;
        executions.push({
          runId: e.name,
          executionArn: e.executionArn,
          status: e.status ?? 'UNKNOWN',
          ...(e.startDate ? { startedAt: e.startDate.toISOString() } : {}),
          ...(e.stopDate ? { stoppedAt: e.stopDate.toISOString() } : {}),
        });
      }
      nextToken = page.nextToken;
    } while (nextToken && executions.length < limit);
    return executions;
  }

  async describeExecution(runId: string): Promise<ExecutionInfo | undefined> {
    const executionArn = executionArnOf(this.outputs.stateMachineArn, runId);
    let out: DescribeExecutionCommandOutput;
    try {
      out = await this.clients.sfn.send(new DescribeExecutionCommand({ executionArn }));
    } catch (error) {
      if (error instanceof Error && error.name === 'ExecutionDoesNotExist') return undefined;
      throw error;
    }
    return {
      runId: out.name ?? runId,
      executionArn,
      status: out.status ?? 'UNKNOWN',
      ...(out.startDate ? { startedAt: out.startDate.toISOString() } : {}),
      ...(out.stopDate ? { stoppedAt: out.stopDate.toISOString() } : {}),
      ...(out.error ? { error: out.error } : {}),
      ...(out.cause ? { cause: out.cause } : {}),
    };
  }

  async listMapRuns(executionArn: string): Promise<MapRunInfo[]> {
    const listed: NonNullable<ListMapRunsCommandOutput['mapRuns']> = [];
    let nextToken: string | undefined;
    do {
      const page = await this.clients.sfn.send(
        new ListMapRunsCommand({ executionArn, ...(nextToken ? { nextToken } : {}) }),
      );
      listed.push(...(page.mapRuns ?? []));
      nextToken = page.nextToken;
    } while (nextToken);
    return mapWithConcurrency(listed, 4, async (run) => {
      const mapRunArn = run.mapRunArn ?? '';
      const d = await this.clients.sfn.send(new DescribeMapRunCommand({ mapRunArn }));
      const c = d.itemCounts;
      return {
        mapRunArn,
        stateName: mapRunStateName(mapRunArn),
        status: d.status ?? 'UNKNOWN',
        ...(d.startDate ? { startedAt: d.startDate.toISOString() } : {}),
        ...(d.stopDate ? { stoppedAt: d.stopDate.toISOString() } : {}),
        items: {
          total: c?.total ?? 0,
          pending: c?.pending ?? 0,
          running: c?.running ?? 0,
          succeeded: c?.succeeded ?? 0,
          failed: c?.failed ?? 0,
          timedOut: c?.timedOut ?? 0,
          aborted: c?.aborted ?? 0,
        },
        ...(d.toleratedFailurePercentage !== undefined
          ? { toleratedFailurePercentage: d.toleratedFailurePercentage }
          : {}),
      };
    });
  }

  async listJobs(runId: string, live: boolean): Promise<JobInfo[]> {
    const store = this.jobStore();
    if (!store) return [];
    const stored = await store.listByRun(runId);
    return live ? mapWithConcurrency(stored, 4, (job) => this.liveJob(job)) : stored.map(storedJobInfo);
  }

  /** A job with Bedrock's current status and counters when its wait is still open. */
  private async liveJob(job: StoredJob): Promise<JobInfo> {
    const recorded = storedJobInfo(job);
    if (job.endedAt && isTerminalStatus(job.lastStatus)) return recorded;
    try {
      const out = await this.clients.bedrock.send(
        new GetModelInvocationJobCommand({ jobIdentifier: job.jobArn }),
      );
      const counts = countsOf(out);
      return {
        ...recorded,
        status: out.status ?? recorded.status,
        ...(counts ? { counts } : {}),
        ...(out.message ? { message: out.message } : {}),
        ...(out.endTime ? { endedAt: out.endTime.toISOString() } : {}),
      };
    } catch (error) {
      // The row keeps the recorded status and says why it is not live; the other jobs still show.
      return { ...recorded, liveError: `Bedrock GetModelInvocationJob: ${describeError(error)}` };
    }
  }

  private jobStore(): JobStore | undefined {
    const tableName = this.outputs.jobsTableName;
    if (!tableName) return undefined;
    return new JobStore({ client: this.clients.dynamodb, tableName, ttlDays: this.config.ledger.ttlDays });
  }

  async startExecution(input: RunInput, name?: string): Promise<ExecutionInfo> {
    const out = await this.clients.sfn.send(
      new StartExecutionCommand({
        stateMachineArn: this.outputs.stateMachineArn,
        input: JSON.stringify(input),
        ...(name ? { name } : {}),
      }),
    );
    const executionArn = out.executionArn ?? '';
    return {
      runId: executionArn.slice(executionArn.lastIndexOf(':') + 1),
      executionArn,
      status: 'RUNNING',
      ...(out.startDate ? { startedAt: out.startDate.toISOString() } : {}),
    };
  }

  redrive(options: RedriveOptions): Promise<RedriveOutcome> {
    return redriveDeadLetters(
      { sqs: this.clients.sqs, dlqUrl: this.outputs.failureDlqUrl, queueUrl: this.outputs.failureQueueUrl },
      options,
    );
  }

  async reconcile(): Promise<ReconcileOutcome> {
    const functionName = await this.reconcileFunctionName();
    const out = await this.clients.lambda.send(
      new InvokeCommand({ FunctionName: functionName, InvocationType: 'RequestResponse', Payload: '{}' }),
    );
    const text = out.Payload ? Buffer.from(out.Payload).toString('utf8') : '';
    if (out.FunctionError) {
      throw new BackendError(`the Reconcile function ${functionName} failed (${out.FunctionError}): ${text}`);
    }
    return { via: functionName, summary: numericFields(text ? (JSON.parse(text) as unknown) : {}) };
  }

  /** The Reconcile function: the `ReconcileFunctionName` output when the stack has one, else its stack resource. */
  private async reconcileFunctionName(): Promise<string> {
    // The optional output naming the Reconcile function is preferred over the resource lookup.
    const fromOutput = this.stack.raw[STACK_OUTPUTS.reconcileFunction];
    if (fromOutput) return fromOutput;
    let nextToken: string | undefined;
    do {
      const page: ListStackResourcesCommandOutput = await this.clients.cloudFormation.send(
        new ListStackResourcesCommand({
          StackName: this.outputs.stackName,
          ...(nextToken ? { NextToken: nextToken } : {}),
        }),
      );
      const found = page.StackResourceSummaries?.find(
        (r) =>
          r.ResourceType === 'AWS::Lambda::Function' &&
          RECONCILE_LOGICAL_ID.test(r.LogicalResourceId ?? '') &&
          r.PhysicalResourceId,
      );
      if (found?.PhysicalResourceId) return found.PhysicalResourceId;
      nextToken = page.NextToken;
    } while (nextToken);
    throw new NotFoundError(
      `stack ${this.outputs.stackName} has no Reconcile function (deployed before batch mode?)`,
    );
  }

  async close(): Promise<void> {
    for (const client of Object.values(this.clients)) client.destroy();
  }
}

/** The Map state's name (label) in a Map Run ARN: `arn:aws:states:<r>:<a>:mapRun:<machine>/<label>:<id>`. */
export function mapRunStateName(mapRunArn: string): string {
  const resource = mapRunArn.split(':')[6] ?? '';
  return resource.slice(resource.indexOf('/') + 1) || 'Map';
}

function numericFields(value: unknown): Record<string, number> {
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).filter(
      (entry): entry is [string, number] => typeof entry[1] === 'number',
    ),
  );
}
