import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { GetQueueUrlCommand, SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { PipelineConfig } from '../lib/config';
import { JobStore } from '../lambda/shared/batch-jobs';
import type { RunInput } from '../lambda/shared/contracts';
import { pipelineName, STACK_OUTPUTS } from '../lambda/shared/contracts';
import {
  DEFAULT_LOCAL_REGION,
  EmulatorError,
  LOCAL_CREDENTIALS,
  LOCAL_SQS_ACCOUNT_ID,
  startEmulators,
  type Emulators,
} from '@corpus-pipeline/local-aws/cloud/emulators';
import {
  describeStack,
  loadTemplate,
  TemplateResolutionError,
  type ProvisionedStack,
} from '@corpus-pipeline/local-aws/cloud/template';
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
import { BackendError, CliUsageError } from './errors';
import { redriveDeadLetters } from './redrive';
import { storedJobInfo } from './run-store';

/** Options of {@link openLocalBackend}. */
export interface LocalBackendOptions {
  /** The `local` environment's settings. */
  config: PipelineConfig;
  /** The local runtime's state directory (`--state-dir`). */
  stateDir: string;
  /** The repository root (handler entries in the template are relative to it). */
  projectRoot: string;
  /** Receives emulator warnings (DynamoDB fell back to memory). */
  onWarning?: (message: string) => void;
}

/**
 * Opens the local backend: starts the same emulators the local runtime uses on the state directory (taking its
 * lock, so never while a `corpus local run` holds it) and reads the stack outputs from the template that run
 * synthesized into `<state-dir>/cdk.out`, resolved exactly as the runtime resolves them. Nothing is provisioned: the
 * buckets, tables and queues are the ones the earlier runs created.
 */
export async function openLocalBackend(options: LocalBackendOptions): Promise<Backend> {
  const stateDir = path.resolve(options.stateDir);
  const cdkOut = path.join(stateDir, 'cdk.out');
  if (!existsSync(path.join(cdkOut, 'manifest.json'))) {
    throw new BackendError(
      `no local pipeline state in ${stateDir}: run \`corpus local run --corpus FILE --state-dir ${options.stateDir}\` first`,
    );
  }
  const stackName = pipelineName(options.config.envName);
  const loaded = loadTemplate(cdkOut, { stackName });
  const stack = describeStack(loaded.template, {
    stackName,
    region: DEFAULT_LOCAL_REGION,
    accountId: LOCAL_SQS_ACCOUNT_ID,
    projectRoot: options.projectRoot,
    assetDirectory: loaded.assetDirectory,
  });
  const outputs = localOutputs(stack);

  let emulators: Emulators;
  try {
    emulators = await startEmulators({
      stateDir,
      region: DEFAULT_LOCAL_REGION,
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    });
  } catch (error) {
    if (error instanceof EmulatorError && error.service === 'state') {
      throw new BackendError(
        `${error.message}: a \`corpus local run\` is using it; run this command when it has finished (its own output shows the progress)`,
        { cause: error },
      );
    }
    throw new BackendError(`the local emulators did not start on ${stateDir}`, { cause: error });
  }
  const clientConfig = { region: DEFAULT_LOCAL_REGION, credentials: LOCAL_CREDENTIALS };
  const s3 = new S3Client({ ...clientConfig, endpoint: emulators.s3.endpoint, forcePathStyle: true });
  const dynamodb = DynamoDBDocumentClient.from(
    new DynamoDBClient({ ...clientConfig, endpoint: emulators.dynamodb.endpoint }),
  );
  const sqs = new SQSClient({ ...clientConfig, endpoint: emulators.sqs.endpoint });
  return new LocalBackend(options.config, stateDir, outputs, emulators, { s3, dynamodb, sqs });
}

/** The outputs the CLI needs, resolved from the synthesized template (as the local runtime resolves them). */
function localOutputs(stack: ProvisionedStack): StackOutputs {
  const optional = (name: string): string | undefined => {
    try {
      return stack.output(name);
    } catch (error) {
      // A template from before the output existed.
      if (error instanceof TemplateResolutionError) return undefined;
      throw error;
    }
  };
  const jobsTableName = optional(STACK_OUTPUTS.jobsTable);
  return {
    stackName: stack.stackName,
    ingestBucket: stack.output(STACK_OUTPUTS.ingestBucket),
    ingestPrefix: stack.output(STACK_OUTPUTS.ingestPrefix),
    outputBucket: stack.output(STACK_OUTPUTS.outputBucket),
    stateMachineArn: stack.output(STACK_OUTPUTS.stateMachineArn),
    failureQueueUrl: stack.output(STACK_OUTPUTS.failureQueueUrl),
    failureDlqUrl: stack.output(STACK_OUTPUTS.failureDlqUrl),
    ...(jobsTableName ? { jobsTableName } : {}),
  };
}

/** The local backend: the emulators on a state directory, no workflow running. */
class LocalBackend implements Backend {
  readonly kind = 'local';
  readonly label: string;
  readonly s3: S3Client;

  constructor(
    readonly config: PipelineConfig,
    private readonly stateDir: string,
    readonly outputs: StackOutputs,
    private readonly emulators: Emulators,
    private readonly clients: { s3: S3Client; dynamodb: DynamoDBDocumentClient; sqs: SQSClient },
  ) {
    this.s3 = clients.s3;
    this.label = `local state ${stateDir}`;
  }

  /** No execution history survives a local run: runs are listed from the output bucket. */
  listExecutions(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  describeExecution(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  /** The workflow runner is not running (a local run holds the state directory while it is). */
  listMapRuns(): Promise<MapRunInfo[]> {
    return Promise.resolve([]);
  }

  async listJobs(runId: string): Promise<JobInfo[]> {
    const store = this.jobStore();
    return store ? (await store.listByRun(runId)).map(storedJobInfo) : [];
  }

  startExecution(input: RunInput): Promise<ExecutionInfo> {
    return Promise.reject(
      new CliUsageError(
        `runs start offline with \`corpus local run --corpus FILE [--mode ${input.mode ?? 'auto'}] --state-dir ${this.stateDir}\`, ` +
          'which puts the file into the local ingest bucket and shows the run live',
      ),
    );
  }

  async redrive(options: RedriveOptions): Promise<RedriveOutcome> {
    const [dlqUrl, queueUrl] = await Promise.all([
      this.localQueueUrl(this.outputs.failureDlqUrl),
      this.localQueueUrl(this.outputs.failureQueueUrl),
    ]);
    return redriveDeadLetters({ sqs: this.clients.sqs, dlqUrl, queueUrl }, options);
  }

  /**
   * The reconciler runs on its schedule (every 2 s) inside `corpus local run`; outside one no workflow waits on a
   * job, so this lists the jobs whose wait the table still holds open.
   */
  async reconcile(): Promise<ReconcileOutcome> {
    const store = this.jobStore();
    const inFlight = store ? (await store.listInFlight()).map(storedJobInfo) : [];
    return {
      via: 'local',
      inFlight,
      note:
        'offline, the reconciler runs every 2 s inside `corpus local run`; no local run is going on, so no wait ' +
        'can be resumed now' +
        (inFlight.length > 0 ? ' (the jobs listed belong to an interrupted local run)' : ''),
    };
  }

  async close(): Promise<void> {
    for (const client of Object.values(this.clients)) client.destroy();
    await this.emulators.stop();
  }

  private jobStore(): JobStore | undefined {
    const tableName = this.outputs.jobsTableName;
    if (!tableName) return undefined;
    return new JobStore({ client: this.clients.dynamodb, tableName, ttlDays: this.config.ledger.ttlDays });
  }

  /** The emulator's URL of a queue the template names by its AWS-style URL (same queue name). */
  private async localQueueUrl(templateUrl: string): Promise<string> {
    const name = templateUrl.slice(templateUrl.lastIndexOf('/') + 1);
    const out = await this.clients.sqs.send(new GetQueueUrlCommand({ QueueName: name }));
    if (!out.QueueUrl) throw new BackendError(`the local SQS has no queue ${name}`);
    return out.QueueUrl;
  }
}
