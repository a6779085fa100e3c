import { mkdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SQSClient, SendMessageCommand } from '@aws-sdk/client-sqs';
import {
  startBedrockSimulator,
  type BedrockSimulator,
  type BedrockSimulatorOptions,
} from './bedrock-simulator';
import { defaultParseWorkers } from '../lambda/plan/parse-pool';
import { startEmulators, type Emulators } from './cloud/emulators';
import { LocalFunction, type CrashFault } from './cloud/lambda-runner';
import { faultReport, type FaultReport } from './fault-report';
import { expressBudgetEnvironment, simulatorOptionsFor } from './runtime-settings';
import { startEventSourcePollers } from './cloud/sqs-poller';
import { provision, type CfnTemplate, type ProvisionedStack } from './cloud/template';
import {
  LocalEventBus,
  s3ObjectCreatedEventFor,
  startEventBridgeServer,
  startScheduler,
  type LocalTarget,
} from './eventbridge';
import { startStepFunctionsServer } from './stepfunctions';
import { synthLocalTemplate } from './synth';
import {
  EXPRESS_EXECUTION_TIMEOUT_MS,
  LocalWorkflow,
  s3ObjectStore,
  type ExecutionDescription,
  type MapRunDescription,
  type TaskCall,
} from './workflow';

/** Where the repository (and so the handler sources) lives. */
export const REPO_ROOT = resolve(__dirname, '..');

/** The local runtime's settings. */
export interface LocalRuntimeOptions {
  /** State directory: buckets, ledger, queues and logs persist here between runs. */
  stateDir: string;
  /** Bedrock simulator settings (quotas, latency, faults). */
  bedrock?: BedrockSimulatorOptions;
  /** Echo function logs to the console instead of `<stateDir>/logs/`. @default false */
  echoLogs?: boolean;
  /**
   * Every scheduled rule (the batch reconciler's `rate(...)`) fires at this interval offline, so lost job events
   * are recovered in seconds rather than minutes. @default 2000
   */
  scheduleIntervalMs?: number;
  /** Faults of the runtime itself (the Bedrock simulator's are in `bedrock`). */
  faults?: RuntimeFaults;
  /**
   * A failed SQS message is visible again after this many ms (instead of the queue's visibility timeout), so the
   * failure lane retries in seconds offline. @default 1000
   */
  sqsRetryAfterMs?: number;
  /**
   * How long an EXPRESS child of a Distributed Map (a Converse fan-out child) may run before it times out with
   * `States.Timeout`; a Lambda invocation it started runs on. When it is not AWS's 300 s, every function also gets
   * it (in seconds) as `EXPRESS_CHILD_BUDGET_SECONDS`. Tests shrink it to see an overrun. @default 300000
   */
  expressTimeoutMs?: number;
}

/** Faults the runtime injects. */
export interface RuntimeFaults {
  /** Every SQS message is delivered twice (as after a lapsed visibility timeout). */
  redeliver?: boolean;
  /**
   * Crash faults (`crash=HANDLER@STEP:N`): the handler's invocations that reach STEP die there, N times in all
   * (see {@link CrashFault}).
   */
  crashes?: CrashFault[];
}

/** A workflow execution as the runtime reports it. */
export type ExecutionSummary = ExecutionDescription;

/** The running local pipeline. */
export interface LocalRuntime {
  stack: ProvisionedStack;
  s3: S3Client;
  sqs: SQSClient;
  ingestBucket: string;
  ingestPrefix: string;
  outputBucket: string;
  /** The Bedrock simulator (batch jobs, stats, faults). */
  bedrock: BedrockSimulator;
  /** The workflow runner. */
  workflow: LocalWorkflow;
  /** What the faults did so far: the crashes that fired, by point, and the simulator's throttled and faulted calls. */
  faultReport(): FaultReport;
  /** Resolves with the first execution started from now on that matches. */
  nextExecution(match: (e: ExecutionSummary) => boolean, timeoutMs: number): Promise<ExecutionSummary>;
  /** Waits for an execution to end, reporting Map progress. */
  waitForExecution(
    executionArn: string,
    timeoutMs: number,
    progress?: (line: string) => void,
  ): Promise<ExecutionSummary>;
  stop(): Promise<void>;
}

const LAMBDA_INVOKE = 'arn:aws:states:::lambda:invoke';
const LAMBDA_INVOKE_WAIT = 'arn:aws:states:::lambda:invoke.waitForTaskToken';

const REGION = 'us-east-1';
const ACCOUNT = '000000000000';

/**
 * Brings the synthesized `local` template to life: emulators for S3, DynamoDB and SQS, the Bedrock simulator, the
 * EventBridge buses with the template's rules, the functions in worker threads with their template environment,
 * and the state machine on the workflow runner. Nothing here repeats the stack's wiring: it is read from the template.
 */
export async function startLocalRuntime(options: LocalRuntimeOptions): Promise<LocalRuntime> {
  const stateDir = resolve(options.stateDir);
  await mkdir(join(stateDir, 'logs'), { recursive: true });
  const { template, stackName } = synthLocalTemplate(join(stateDir, 'cdk.out'));

  const stoppers: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<void> => {
    for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
  };
  try {
    const emulators: Emulators = await startEmulators({ stateDir, region: REGION });
    stoppers.push(() => emulators.stop());
    // Rules are added once the template is provisioned; until then nothing can match.
    let deliver: (target: LocalTarget, inputJson: string) => Promise<void> = () => Promise.resolve();
    const bus = new LocalEventBus({
      region: REGION,
      account: ACCOUNT,
      deliver: (target, input) => deliver(target, input),
    });
    const eventsServer = await startEventBridgeServer(bus);
    stoppers.push(() => eventsServer.stop());

    const credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
    const clientConfig = { region: REGION, credentials };
    const s3 = new S3Client({ ...clientConfig, endpoint: emulators.s3.endpoint, forcePathStyle: true });
    const dynamodb = new DynamoDBClient({ ...clientConfig, endpoint: emulators.dynamodb.endpoint });
    const sqs = new SQSClient({ ...clientConfig, endpoint: emulators.sqs.endpoint });
    const stack = await provision(template as unknown as CfnTemplate, {
      stackName,
      region: REGION,
      accountId: ACCOUNT,
      projectRoot: REPO_ROOT,
      clients: { s3, dynamodb, sqs },
    });

    // The simulator enforces the on-demand quotas (RPM/TPM) and batch quotas the stack was configured with, reads job
    // input and writes job output in the local S3, and publishes job state changes on the local default bus.
    const bedrock = await startBedrockSimulator({
      ...simulatorOptionsFor(stack.functions, options.bedrock, { region: REGION, accountId: ACCOUNT }),
      s3Client: s3,
      onJobEvent: (event) => {
        bus.emit({ ...event, resources: [...event.resources], detail: { ...event.detail } });
      },
    });
    stoppers.push(() => bedrock.stop());

    const expressTimeoutMs = options.expressTimeoutMs ?? EXPRESS_EXECUTION_TIMEOUT_MS;
    const functions = new Map<string, LocalFunction>();
    const machine = stack.stateMachines[0];
    if (!machine) throw new Error('the template declares no state machine');
    const invokeTask = async (call: TaskCall): Promise<unknown> => {
      if (call.resource === LAMBDA_INVOKE || call.resource === LAMBDA_INVOKE_WAIT) {
        const params = call.parameters as { FunctionName?: string; Payload?: unknown };
        const fn = params.FunctionName ? functions.get(params.FunctionName) : undefined;
        if (!fn)
          throw Object.assign(new Error(`no local function ${params.FunctionName}`), {
            name: 'Lambda.ResourceNotFoundException',
          });
        // For .waitForTaskToken the result is ignored: the task ends when SendTask* names its token.
        const payload = await fn.invoke(params.Payload ?? {});
        return { StatusCode: 200, ExecutedVersion: '$LATEST', Payload: payload };
      }
      throw Object.assign(
        new Error(`the local runtime cannot run Task resource ${call.resource} (state ${call.stateName})`),
        {
          name: 'States.Runtime',
        },
      );
    };
    const workflow = new LocalWorkflow({
      stateMachineArn: machine.arn,
      name: machine.name,
      definition: machine.definition,
      invokeTask,
      objectStore: s3ObjectStore(s3),
      expressTimeoutMs,
    });
    const sfnServer = await startStepFunctionsServer(workflow);
    stoppers.push(() => sfnServer.stop());

    const serviceEnv: Record<string, string> = {
      ...emulators.environment(),
      AWS_ENDPOINT_URL_EVENTBRIDGE: eventsServer.endpoint,
      AWS_ENDPOINT_URL_BEDROCK_RUNTIME: bedrock.runtimeEndpoint,
      AWS_ENDPOINT_URL_BEDROCK: bedrock.controlEndpoint,
      AWS_ENDPOINT_URL_SFN: sfnServer.endpoint,
      // No X-Ray daemon offline; logs and EMF metrics go to the function's log file.
      POWERTOOLS_TRACE_ENABLED: 'false',
      // Plan's parse workers follow this machine's CPUs, not the vCPUs of the deployed function's memory size.
      PLAN_PARSE_WORKERS: String(defaultParseWorkers()),
      ...expressBudgetEnvironment(expressTimeoutMs),
    };
    for (const fn of stack.functions) {
      const local = new LocalFunction({
        name: fn.name,
        arn: fn.arn,
        entry: fn.entryPath,
        handlerExport: fn.handlerExport,
        handler: fn.handler,
        environment: fn.environment,
        serviceEnvironment: serviceEnv,
        region: REGION,
        timeoutSeconds: fn.timeoutSeconds,
        memoryMb: fn.memoryMb,
        maxConcurrency: 8,
        faultHandler: basename(fn.entryPath, '.ts'),
        crashes: options.faults?.crashes ?? [],
        ...(options.echoLogs ? { echo: true } : { logFile: join(stateDir, 'logs', `${fn.logicalId}.log`) }),
      });
      functions.set(fn.arn, local);
      functions.set(fn.name, local);
      stoppers.push(() => local.stop());
    }

    for (const b of stack.eventBuses) if (!bus.hasEventBus(b.name)) bus.createEventBus(b.name);
    for (const rule of stack.rules) {
      bus.addRule({
        name: rule.name,
        arn: rule.arn,
        eventBusName: rule.eventBusName,
        eventPattern: rule.eventPattern,
        state: rule.state === 'DISABLED' ? 'DISABLED' : 'ENABLED',
        targets: rule.targets.map((t) => ({
          id: t.id,
          arn: t.arn,
          ...(t.input !== undefined ? { input: t.input } : {}),
          ...(t.inputPath !== undefined ? { inputPath: t.inputPath } : {}),
          ...(t.inputTransformer ? { inputTransformer: t.inputTransformer } : {}),
        })),
      });
    }
    deliver = async (target: LocalTarget, inputJson: string): Promise<void> => {
      if (target.arn === machine.arn) {
        workflow.start({ input: JSON.parse(inputJson) });
        return;
      }
      const queue = stack.queues.find((q) => q.arn === target.arn);
      if (queue) {
        await sqs.send(new SendMessageCommand({ QueueUrl: queue.url, MessageBody: inputJson }));
        return;
      }
      const fn = functions.get(target.arn);
      if (fn) {
        await fn.invoke(JSON.parse(inputJson));
        return;
      }
      throw new Error(`the local bus cannot deliver to ${target.arn}`);
    };

    // Pushed after the functions, so stopped before them.
    const pollers = await startEventSourcePollers(stack.eventSourceMappings, {
      sqs,
      region: REGION,
      account: ACCOUNT,
      resolveQueueUrl: (arn) => stack.queues.find((q) => q.arn === arn)?.url,
      invoke: async (functionArn, event) => {
        const fn = functions.get(functionArn);
        if (!fn) throw new Error(`no local function ${functionArn}`);
        return fn.invoke(event);
      },
      redeliver: options.faults?.redeliver ?? false,
      redeliverAfterMs: 200,
      retryAfterMs: options.sqsRetryAfterMs ?? 1000,
    });
    stoppers.push(() => pollers.stop());

    const scheduler = startScheduler(
      stack.schedules,
      async (_schedule, input, target) => {
        if (target) await deliver(target as LocalTarget, input);
      },
      { intervalMs: options.scheduleIntervalMs ?? 2000 },
    );
    // Stopped first: a tick must not start a function that is being stopped.
    stoppers.push(() => scheduler.stop());

    const eventBridgeBuckets = new Set(stack.buckets.filter((b) => b.eventBridgeEnabled).map((b) => b.name));
    emulators.onObjectCreated((object) => {
      if (!eventBridgeBuckets.has(object.bucket)) return;
      bus.emit(s3ObjectCreatedEventFor(object, { account: ACCOUNT, region: REGION }));
    });

    const ingest = stack.output('IngestBucketName');
    const output = stack.output('OutputBucketName');

    return {
      stack,
      s3,
      sqs,
      ingestBucket: ingest,
      ingestPrefix: stack.output('IngestPrefix'),
      outputBucket: output,
      bedrock,
      workflow,
      faultReport: () => faultReport(functions.values(), bedrock.stats(), pollers.stats()),
      nextExecution(match, timeoutMs) {
        return new Promise((resolvePromise, reject) => {
          const timer = setTimeout(() => {
            workflow.off('execution', listener);
            reject(new Error(`no matching execution within ${timeoutMs / 1000} s`));
          }, timeoutMs);
          const listener = (e: ExecutionSummary): void => {
            if (e.status !== 'RUNNING' || !match(e)) return;
            clearTimeout(timer);
            workflow.off('execution', listener);
            resolvePromise(e);
          };
          workflow.on('execution', listener);
        });
      },
      async waitForExecution(executionArn, timeoutMs, progress) {
        let lastReport = 0;
        const onMapRun = (run: MapRunDescription): void => {
          if (run.executionArn !== executionArn) return;
          const c = run.itemCounts;
          const finished = run.status !== 'RUNNING';
          if (!finished && (c.total === 0 || Date.now() - lastReport < 1000)) return;
          lastReport = Date.now();
          // The batch Map's items are shards (one job each); the Converse Map's items are records.
          const what = run.stateName === 'BatchJobs' ? 'shards (batch jobs)' : 'records';
          // Timed-out (an Express child over its cap) and aborted children are done, and did not succeed.
          const failed = c.failed + c.timedOut + c.aborted;
          progress?.(
            `  ${run.stateName}: ${c.succeeded + failed} of ${c.total} ${what} done (${failed} failed)`,
          );
        };
        workflow.on('mapRun', onMapRun);
        const timer = setTimeout(
          () => workflow.stop(executionArn, 'States.Timeout', 'the local run timed out'),
          timeoutMs,
        );
        try {
          return await workflow.wait(executionArn);
        } finally {
          clearTimeout(timer);
          workflow.off('mapRun', onMapRun);
        }
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
