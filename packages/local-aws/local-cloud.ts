/**
 * A CloudFormation template brought to life on one machine: emulators for S3, DynamoDB and SQS, the Bedrock
 * simulator, the EventBridge buses with the template's rules and schedules, the functions in worker threads with
 * their template environment, SQS event source mappings, and the state machine on the workflow runner behind a Step
 * Functions endpoint. Nothing here knows what the template builds: the wiring is read from the template, and what
 * only the caller knows (the model table, extra function environment, how many execution environments a function
 * gets) comes in as options.
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import {
  startBedrockSimulator,
  type BedrockSimulator,
  type BedrockSimulatorOptions,
} from './bedrock-simulator';
import { LOCAL_CREDENTIALS, startEmulators, type Emulators } from './cloud/emulators';
import { LocalFunction, type CrashFault } from './cloud/lambda-runner';
import { startEventSourcePollers, type EventSourcePollers } from './cloud/sqs-poller';
import {
  provision,
  type CfnTemplate,
  type LambdaFunctionDescription,
  type ProvisionedStack,
} from './cloud/template';
import {
  LocalEventBus,
  s3ObjectCreatedEventFor,
  startEventBridgeServer,
  startScheduler,
  type EventBridgeServer,
  type LocalTarget,
} from './eventbridge';
import { startStepFunctionsServer, type StepFunctionsServer } from './stepfunctions';
import {
  EXPRESS_EXECUTION_TIMEOUT_MS,
  LocalWorkflow,
  s3ObjectStore,
  type ExecutionDescription,
  type MapRunDescription,
  type TaskCall,
} from './workflow';

/** The account and Region the local cloud pretends to be. */
export interface CloudLocation {
  readonly region: string;
  readonly accountId: string;
}

/** Where the local cloud is, unless told otherwise. */
export const DEFAULT_LOCATION: CloudLocation = { region: 'us-east-1', accountId: '000000000000' };

/** Settings of {@link startLocalCloud}. */
export interface LocalCloudOptions {
  /** The synthesized template to run. */
  template: CfnTemplate;
  /** The stack's name (physical names are derived from it). */
  stackName: string;
  /** State directory: buckets, tables, queues and `logs/<LogicalId>.log` persist here. */
  stateDir: string;
  /** Root that the functions' `corpus:entry` source paths are relative to. */
  projectRoot: string;
  /** @default {@link DEFAULT_LOCATION} */
  location?: CloudLocation;
  /** The Bedrock simulator's options (its model table at least), given the provisioned stack. */
  simulator: (stack: ProvisionedStack, location: CloudLocation) => BedrockSimulatorOptions;
  /** Added to every function's environment, over the service endpoints. */
  functionEnvironment?: Readonly<Record<string, string>>;
  /** How many execution environments a function may run at once. @default 4 */
  functionConcurrency?: number | ((fn: LambdaFunctionDescription) => number);
  /** Echo function logs to the console instead of `<stateDir>/logs/`. @default false */
  echoLogs?: boolean;
  /** Every scheduled rule fires at this interval instead of its own rate. @default 2000 */
  scheduleIntervalMs?: number;
  /** A failed SQS message is visible again after this many ms (instead of the queue's visibility timeout). @default 1000 */
  sqsRetryAfterMs?: number;
  /** Every SQS message is delivered twice (as after a lapsed visibility timeout). @default false */
  redeliver?: boolean;
  /** Crash faults of the functions (see {@link CrashFault}). */
  crashes?: readonly CrashFault[];
  /** How long an EXPRESS child execution may run before it times out with `States.Timeout`. @default 300000 */
  expressTimeoutMs?: number;
  /** The unit of a Distributed Map's items in progress events, by Map state name. @default 'items' */
  itemUnit?: (stateName: string) => string;
}

/** One Distributed Map's progress in an execution. */
export interface MapRunProgress {
  /** The Map state's name. */
  readonly state: string;
  /** What its items are (see {@link LocalCloudOptions.itemUnit}). */
  readonly unit: string;
  /** Items finished, succeeded or not. */
  readonly done: number;
  readonly total: number;
  /** Items that failed, timed out or were aborted. */
  readonly failed: number;
}

/** The running local cloud. */
export interface LocalCloud {
  readonly stack: ProvisionedStack;
  readonly location: CloudLocation;
  /** Clients of the emulators, for the caller's own calls. */
  readonly s3: S3Client;
  readonly sqs: SQSClient;
  readonly emulators: Emulators;
  readonly bedrock: BedrockSimulator;
  readonly workflow: LocalWorkflow;
  /** The functions, by name and by ARN. */
  readonly functions: ReadonlyMap<string, LocalFunction>;
  /** The SQS event source pollers (their redelivery counters). */
  readonly pollers: EventSourcePollers;
  /** Resolves with the first execution started from now on that matches. */
  nextExecution(
    match: (e: ExecutionDescription) => boolean,
    timeoutMs: number,
  ): Promise<ExecutionDescription>;
  /** Waits for an execution to end (stopping it after `timeoutMs`), reporting its Distributed Maps' progress. */
  waitForExecution(
    executionArn: string,
    timeoutMs: number,
    onProgress?: (progress: MapRunProgress) => void,
  ): Promise<ExecutionDescription>;
  stop(): Promise<void>;
}

const LAMBDA_INVOKE = 'arn:aws:states:::lambda:invoke';
const LAMBDA_INVOKE_WAIT = 'arn:aws:states:::lambda:invoke.waitForTaskToken';

/** Stops what was started, last started first. */
class Stoppers {
  private readonly stops: (() => Promise<void>)[] = [];

  add(stop: () => Promise<void>): void {
    this.stops.push(stop);
  }

  async stopAll(): Promise<void> {
    for (const stop of this.stops.splice(0).reverse()) await stop().catch(() => undefined);
  }
}

/** Starts the local cloud for a template (see the module comment). */
export async function startLocalCloud(options: LocalCloudOptions): Promise<LocalCloud> {
  const stateDir = resolve(options.stateDir);
  const location = options.location ?? DEFAULT_LOCATION;
  await mkdir(join(stateDir, 'logs'), { recursive: true });
  const stoppers = new Stoppers();
  try {
    const emulators = await startEmulators({ stateDir, region: location.region });
    stoppers.add(() => emulators.stop());
    // Rules are added once the template is provisioned; until then nothing can match.
    const router = new TargetRouter();
    const bus = new LocalEventBus({
      region: location.region,
      account: location.accountId,
      deliver: (target, input) => router.deliver(target, input),
    });
    const eventsServer = await startEventBridgeServer(bus);
    stoppers.add(() => eventsServer.stop());

    const clients = emulatorClients(emulators, location.region);
    const stack = await provision(options.template, {
      stackName: options.stackName,
      region: location.region,
      accountId: location.accountId,
      projectRoot: options.projectRoot,
      clients,
    });

    const bedrock = await startBedrockSimulator({
      ...options.simulator(stack, location),
      s3Client: clients.s3,
      // Batch job state changes go to the default bus, as Bedrock's do.
      onJobEvent: (event) => {
        bus.emit({ ...event, resources: [...event.resources], detail: { ...event.detail } });
      },
    });
    stoppers.add(() => bedrock.stop());

    const functions = new Map<string, LocalFunction>();
    const workflow = startWorkflow(stack, functions, clients.s3, options);
    const sfnServer = await startStepFunctionsServer(workflow);
    stoppers.add(() => sfnServer.stop());

    const environment = serviceEnvironment(emulators, eventsServer, bedrock, sfnServer, options);
    for (const fn of startFunctions(stack, environment, stateDir, location, options)) {
      functions.set(fn.arn, fn);
      functions.set(fn.name, fn);
      stoppers.add(() => fn.stop());
    }

    addRules(bus, stack);
    router.route(stack, workflow, functions, clients.sqs, bus);

    // Added after the functions, so stopped before them.
    const pollers = await startPollers(stack, functions, clients.sqs, location, options);
    stoppers.add(() => pollers.stop());
    const scheduler = startScheduler(
      stack.schedules,
      async (_schedule, input, target) => {
        if (target) await router.deliver(target as LocalTarget, input);
      },
      { intervalMs: options.scheduleIntervalMs ?? 2000 },
    );
    // Stopped first: a tick must not start a function that is being stopped.
    stoppers.add(() => scheduler.stop());

    forwardObjectCreated(emulators, bus, stack, location);

    return {
      stack,
      location,
      s3: clients.s3,
      sqs: clients.sqs,
      emulators,
      bedrock,
      workflow,
      functions,
      pollers,
      nextExecution: (match, timeoutMs) => nextExecution(workflow, match, timeoutMs),
      waitForExecution: (executionArn, timeoutMs, onProgress) =>
        waitForExecution(workflow, executionArn, timeoutMs, options.itemUnit ?? (() => 'items'), onProgress),
      stop: () => stoppers.stopAll(),
    };
  } catch (err) {
    await stoppers.stopAll();
    throw err;
  }
}

/** SDK clients of the emulators. */
function emulatorClients(
  emulators: Emulators,
  region: string,
): { s3: S3Client; dynamodb: DynamoDBClient; sqs: SQSClient } {
  const config = { region, credentials: LOCAL_CREDENTIALS };
  return {
    s3: new S3Client({ ...config, endpoint: emulators.s3.endpoint, forcePathStyle: true }),
    dynamodb: new DynamoDBClient({ ...config, endpoint: emulators.dynamodb.endpoint }),
    sqs: new SQSClient({ ...config, endpoint: emulators.sqs.endpoint }),
  };
}

/** The workflow runner for the template's (first) state machine, its Lambda tasks run by `functions`. */
function startWorkflow(
  stack: ProvisionedStack,
  functions: ReadonlyMap<string, LocalFunction>,
  s3: S3Client,
  options: LocalCloudOptions,
): LocalWorkflow {
  const machine = stack.stateMachines[0];
  if (!machine) throw new Error('the template declares no state machine');
  const invokeTask = async (call: TaskCall): Promise<unknown> => {
    if (call.resource !== LAMBDA_INVOKE && call.resource !== LAMBDA_INVOKE_WAIT) {
      throw Object.assign(
        new Error(`the local runtime cannot run Task resource ${call.resource} (state ${call.stateName})`),
        { name: 'States.Runtime' },
      );
    }
    const params = call.parameters as { FunctionName?: string; Payload?: unknown };
    const fn = params.FunctionName ? functions.get(params.FunctionName) : undefined;
    if (!fn) {
      throw Object.assign(new Error(`no local function ${params.FunctionName}`), {
        name: 'Lambda.ResourceNotFoundException',
      });
    }
    // For .waitForTaskToken the result is ignored: the task ends when SendTask* names its token.
    const payload = await fn.invoke(params.Payload ?? {});
    return { StatusCode: 200, ExecutedVersion: '$LATEST', Payload: payload };
  };
  return new LocalWorkflow({
    stateMachineArn: machine.arn,
    name: machine.name,
    definition: machine.definition,
    invokeTask,
    objectStore: s3ObjectStore(s3),
    expressTimeoutMs: options.expressTimeoutMs ?? EXPRESS_EXECUTION_TIMEOUT_MS,
  });
}

/** What every function's environment gets besides the template's: the local endpoints and the caller's additions. */
function serviceEnvironment(
  emulators: Emulators,
  events: EventBridgeServer,
  bedrock: BedrockSimulator,
  sfn: StepFunctionsServer,
  options: LocalCloudOptions,
): Record<string, string> {
  return {
    ...emulators.environment(),
    AWS_ENDPOINT_URL_EVENTBRIDGE: events.endpoint,
    AWS_ENDPOINT_URL_BEDROCK_RUNTIME: bedrock.runtimeEndpoint,
    AWS_ENDPOINT_URL_BEDROCK: bedrock.controlEndpoint,
    AWS_ENDPOINT_URL_SFN: sfn.endpoint,
    // No X-Ray daemon offline; logs and EMF metrics go to the function's log file.
    POWERTOOLS_TRACE_ENABLED: 'false',
    ...options.functionEnvironment,
  };
}

/** The template's functions, each in its worker threads. */
function startFunctions(
  stack: ProvisionedStack,
  environment: Record<string, string>,
  stateDir: string,
  location: CloudLocation,
  options: LocalCloudOptions,
): LocalFunction[] {
  const concurrency = options.functionConcurrency ?? 4;
  return stack.functions.map(
    (fn) =>
      new LocalFunction({
        name: fn.name,
        arn: fn.arn,
        entry: fn.entryPath,
        handlerExport: fn.handlerExport,
        handler: fn.handler,
        environment: fn.environment,
        serviceEnvironment: environment,
        region: location.region,
        timeoutSeconds: fn.timeoutSeconds,
        memoryMb: fn.memoryMb,
        maxConcurrency: typeof concurrency === 'number' ? concurrency : concurrency(fn),
        crashes: [...(options.crashes ?? [])],
        ...(options.echoLogs ? { echo: true } : { logFile: join(stateDir, 'logs', `${fn.logicalId}.log`) }),
      }),
  );
}

/** The template's buses and rules on the local bus. */
function addRules(bus: LocalEventBus, stack: ProvisionedStack): void {
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
}

/**
 * Delivers rule and schedule targets: the state machine, a queue, a function or another event bus (the event passed
 * on as it is, as a rule targeting a bus does). Delivers nothing until routed.
 */
class TargetRouter {
  private deliverTo: (target: LocalTarget, inputJson: string) => Promise<void> = () => Promise.resolve();

  deliver(target: LocalTarget, inputJson: string): Promise<void> {
    return this.deliverTo(target, inputJson);
  }

  route(
    stack: ProvisionedStack,
    workflow: LocalWorkflow,
    functions: ReadonlyMap<string, LocalFunction>,
    sqs: SQSClient,
    bus: LocalEventBus,
  ): void {
    const machineArn = stack.stateMachines[0]?.arn;
    this.deliverTo = async (target, inputJson) => {
      if (target.arn === machineArn) {
        workflow.start({ input: JSON.parse(inputJson) });
        return;
      }
      const busMarker = target.arn.indexOf(':event-bus/');
      if (busMarker !== -1) {
        bus.emit(
          JSON.parse(inputJson) as Parameters<LocalEventBus['emit']>[0],
          target.arn.slice(busMarker + 11),
        );
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
  }
}

/** The template's SQS event source mappings. */
function startPollers(
  stack: ProvisionedStack,
  functions: ReadonlyMap<string, LocalFunction>,
  sqs: SQSClient,
  location: CloudLocation,
  options: LocalCloudOptions,
): Promise<EventSourcePollers> {
  return startEventSourcePollers(stack.eventSourceMappings, {
    sqs,
    region: location.region,
    account: location.accountId,
    resolveQueueUrl: (arn) => stack.queues.find((q) => q.arn === arn)?.url,
    invoke: async (functionArn, event) => {
      const fn = functions.get(functionArn);
      if (!fn) throw new Error(`no local function ${functionArn}`);
      return fn.invoke(event);
    },
    redeliver: options.redeliver ?? false,
    redeliverAfterMs: 200,
    retryAfterMs: options.sqsRetryAfterMs ?? 1000,
  });
}

/** S3 `Object Created` events of the buckets with EventBridge notifications go to the default bus. */
function forwardObjectCreated(
  emulators: Emulators,
  bus: LocalEventBus,
  stack: ProvisionedStack,
  location: CloudLocation,
): void {
  const buckets = new Set(stack.buckets.filter((b) => b.eventBridgeEnabled).map((b) => b.name));
  emulators.onObjectCreated((object) => {
    if (!buckets.has(object.bucket)) return;
    bus.emit(s3ObjectCreatedEventFor(object, { account: location.accountId, region: location.region }));
  });
}

function nextExecution(
  workflow: LocalWorkflow,
  match: (e: ExecutionDescription) => boolean,
  timeoutMs: number,
): Promise<ExecutionDescription> {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      workflow.off('execution', listener);
      reject(new Error(`no matching execution within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const listener = (e: ExecutionDescription): void => {
      if (e.status !== 'RUNNING' || !match(e)) return;
      clearTimeout(timer);
      workflow.off('execution', listener);
      resolvePromise(e);
    };
    workflow.on('execution', listener);
  });
}

async function waitForExecution(
  workflow: LocalWorkflow,
  executionArn: string,
  timeoutMs: number,
  itemUnit: (stateName: string) => string,
  onProgress?: (progress: MapRunProgress) => void,
): Promise<ExecutionDescription> {
  let lastReport = 0;
  const onMapRun = (run: MapRunDescription): void => {
    if (run.executionArn !== executionArn) return;
    const c = run.itemCounts;
    const finished = run.status !== 'RUNNING';
    if (!finished && (c.total === 0 || Date.now() - lastReport < 1000)) return;
    lastReport = Date.now();
    // Timed-out (an Express child over its cap) and aborted children are done, and did not succeed.
    const failed = c.failed + c.timedOut + c.aborted;
    onProgress?.({
      state: run.stateName,
      unit: itemUnit(run.stateName),
      done: c.succeeded + failed,
      total: c.total,
      failed,
    });
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
}
