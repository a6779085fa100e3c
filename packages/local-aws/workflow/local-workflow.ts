/**
 * LocalWorkflow: runs the real (JSONPath) state machine definition on one machine with
 * aws-local-stepfunctions 3.0.0, plus what that library lacks: Distributed Map semantics
 * (ItemReader, ItemSelector, ItemBatcher, MaxConcurrency, tolerated failures, ResultWriter, Map
 * Runs), task tokens (`.waitForTaskToken`, `$$.Task.Token`, SendTask* with heartbeats and
 * timeouts), a faithful context object, execution bookkeeping in the shape of the Step Functions
 * API (StartExecution / DescribeExecution / ListExecutions / StopExecution) and a history.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';

import {
  ExecutionAbortedError,
  ExecutionError,
  ExecutionTimeoutError,
  StateMachine,
  createLibraryStateMachine,
  type JsonValue,
} from './asl-runtime';
import {
  LOCAL_CONTEXT_KEY,
  buildStateContexts,
  type LocalContextObject,
  type StateContext,
} from './context-paths';
import {
  EXPRESS_EXECUTION_TIMEOUT_MS,
  type ChildExecutionRequest,
  type ChildExecutionResult,
  parseStateMachineArn,
  runDistributedMap,
} from './distributed-map';
import {
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  InvalidExecutionInput,
  InvalidName,
  ResourceNotFound,
  StatesError,
  WorkflowDefinitionError,
} from './errors';
import { PayloadEvaluator } from './payload';
import {
  HIDDEN_HEARTBEAT_KEY,
  HIDDEN_TIMEOUT_KEY,
  type DistributedMapSpec,
  type PreparedDefinition,
  type PreparedScope,
  type TaskStateInfo,
  isRecord,
  parseDefinition,
  prepareDefinition,
} from './prepare-definition';
import { TaskTokenRegistry, type TokenClosedReason } from './task-tokens';
import type {
  Clock,
  ExecutionDescription,
  ExecutionStatus,
  HistoryEvent,
  InvokeTask,
  LocalWorkflowEventMap,
  MapRunDescription,
  ObjectStore,
  TaskCall,
  WaitingTask,
} from './types';

/** Default cap on Distributed Map concurrency when MaxConcurrency is 0 (unlimited) or larger. */
export const DEFAULT_DISTRIBUTED_CONCURRENCY_CAP = 1000;

/** Options of a LocalWorkflow. */
export interface LocalWorkflowOptions {
  /** `arn:aws:states:REGION:ACCOUNT:stateMachine:NAME`; execution and Map Run ARNs derive from it. */
  stateMachineArn: string;
  /** State machine name (`$$.StateMachine.Name`); defaults to the ARN's. */
  name?: string;
  /** The ASL definition (JSONPath), as an object or JSON text. */
  definition: object | string;
  /** Runs every Task state (at any depth, Distributed Map children included). */
  invokeTask: InvokeTask;
  /** Where ItemReaders read and ResultWriters write. */
  objectStore: ObjectStore;
  /** Time source for dates, `$$` times and history (timers still run on real time). */
  clock?: Clock;
  /** `$$.Execution.RoleArn`; defaults to a role in the state machine's account. */
  roleArn?: string;
  /** Cap for unlimited Distributed Map concurrency (default 1,000; the service allows 10,000). */
  maxDistributedConcurrency?: number;
  /**
   * How long an EXPRESS child of a Distributed Map may run before it ends TIMED_OUT with `States.Timeout` (tasks it
   * started run on). Tests shrink it to see an overrun. @default 300,000 (AWS's 5 minutes)
   */
  expressTimeoutMs?: number;
  /** Library passthrough: Retry pause per state name, in milliseconds (tests use 0). */
  retryIntervalOverrides?: Record<string, number | number[]>;
  /** Library passthrough: Wait state duration per state name, in milliseconds. */
  waitTimeOverrides?: Record<string, number>;
}

/** StartExecution arguments. */
export interface StartExecutionOptions {
  /** Execution name; a UUID when omitted. */
  name?: string;
  /** The execution input (any JSON value); `{}` when omitted. */
  input?: unknown;
}

/** What start() returns. */
export interface ExecutionHandle {
  executionArn: string;
  name: string;
  startDate: Date;
  /** Resolves with the final description once the execution ends. */
  wait(): Promise<ExecutionDescription>;
}

/** One running execution, top-level or a Distributed Map child. */
interface ExecutionScope {
  arn: string;
  name: string;
  stateMachineArn: string;
  prepared: PreparedScope;
  local: LocalContextObject;
  /** Token issued by `$$.Task.Token` and not yet claimed by the Task handler. */
  pendingToken?: string;
  abort: AbortController;
  /** The top-level execution this scope belongs to. */
  root: ExecutionRecord;
  isChild: boolean;
}

interface ExecutionRecord {
  description: ExecutionDescription;
  inputJson: string;
  history: HistoryEvent[];
  /** Distributed Map runs still going (including those of its children). */
  activeMapRuns: Set<Promise<JsonValue>>;
  /** Runner events not yet placed in the history (see appendTaskEvent). */
  pendingEvents: (Omit<HistoryEvent, 'id'> & { timestamp: Date })[];
  done: Promise<ExecutionDescription>;
  scope?: ExecutionScope;
  stopRequest?: { error?: string; cause?: string; stopDate: Date };
}

interface RunOutcome {
  status: Exclude<ExecutionStatus, 'RUNNING'>;
  output?: JsonValue;
  error?: string;
  cause?: string;
}

type LibraryEvent = ReturnType<StateMachine['run']>['eventLogs'] extends AsyncGenerator<infer E> ? E : never;

/** Library events that open a state: runner events queued before them happened after them. */
const OPENING_EVENTS = new Set<string>([
  'ExecutionStarted',
  'StateEntered',
  'MapIterationStarted',
  'ParallelBranchStarted',
]);

const INVALID_NAME_CHARS = /[\s<>{}[\]?*"#%\\^|~`$&,;:/]/;

/** StartExecution's name rule: 1-80 characters, no whitespace, brackets, wildcards, specials or controls. */
function isValidExecutionName(name: string): boolean {
  if (name.length < 1 || name.length > 80 || INVALID_NAME_CHARS.test(name)) return false;
  return ![...name].some((char) => {
    const code = char.codePointAt(0) ?? 0;
    return code <= 0x1f || (code >= 0x7f && code <= 0x9f);
  });
}

function causeText(cause: unknown): string | undefined {
  if (cause === undefined || cause === null) return undefined;
  return typeof cause === 'string' ? cause : cause instanceof Error ? cause.message : JSON.stringify(cause);
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new StatesError('States.TaskFailed', String(err));
}

function toJson(value: unknown, what: string): JsonValue {
  if (value === undefined) return null;
  try {
    return JSON.parse(JSON.stringify(value)) as JsonValue;
  } catch (err) {
    throw new StatesError('States.Runtime', `${what} is not JSON-serialisable: ${(err as Error).message}`);
  }
}

/** Rejects a pending task once its execution ended, so the library's task timer is cleared. */
class ExecutionStoppedError extends Error {
  override readonly name = 'States.Aborted';
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) reject(new ExecutionStoppedError('the execution ended'));
    const onAbort = (): void => reject(new ExecutionStoppedError('the execution ended'));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : toError(error));
      },
    );
  });
}

function numberFrom(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/**
 * A state machine running locally. Start executions, watch them (events, descriptions,
 * history), complete their task tokens, stop them.
 */
export class LocalWorkflow extends EventEmitter<LocalWorkflowEventMap> {
  /** The ARN executions and Map Runs derive from. */
  readonly stateMachineArn: string;
  /** The state machine name. */
  readonly stateMachineName: string;
  /** The definition as prepared for the library (Distributed Maps replaced, `$$` rewritten). */
  readonly prepared: PreparedDefinition;

  private readonly arnPrefix: string;
  private readonly roleArn: string;
  private readonly clock: Clock;
  private readonly invokeTask: InvokeTask;
  private readonly objectStore: ObjectStore;
  private readonly concurrencyCap: number;
  private readonly expressTimeoutMs: number;
  private readonly retryIntervalOverrides?: Record<string, number | number[]>;
  private readonly waitTimeOverrides?: Record<string, number>;
  private readonly machines = new Map<PreparedScope, StateMachine>();
  private readonly stateContexts: StateContext[];
  private readonly evaluator = new PayloadEvaluator();
  private readonly tokens: TaskTokenRegistry;
  private readonly executions = new Map<string, ExecutionRecord>();
  private readonly arnsByName = new Map<string, string>();
  private readonly mapRuns = new Map<string, MapRunDescription>();

  /**
   * @throws WorkflowDefinitionError when the definition is invalid or uses what the runner cannot run faithfully.
   */
  constructor(options: LocalWorkflowOptions) {
    super();
    let parsedArn: { prefix: string; name: string };
    try {
      parsedArn = parseStateMachineArn(options.stateMachineArn);
    } catch (err) {
      throw new WorkflowDefinitionError((err as Error).message);
    }
    this.stateMachineArn = options.stateMachineArn;
    this.stateMachineName = options.name ?? parsedArn.name;
    this.arnPrefix = parsedArn.prefix;
    const account = parsedArn.prefix.split(':')[4] ?? '000000000000';
    this.roleArn = options.roleArn ?? `arn:aws:iam::${account}:role/LocalWorkflowRole`;
    this.clock = options.clock ?? { now: () => new Date() };
    this.invokeTask = options.invokeTask;
    this.objectStore = options.objectStore;
    this.concurrencyCap = options.maxDistributedConcurrency ?? DEFAULT_DISTRIBUTED_CONCURRENCY_CAP;
    this.expressTimeoutMs = options.expressTimeoutMs ?? EXPRESS_EXECUTION_TIMEOUT_MS;
    if (!(this.expressTimeoutMs > 0)) {
      throw new RangeError(`expressTimeoutMs must be positive, got ${this.expressTimeoutMs}`);
    }
    this.retryIntervalOverrides = options.retryIntervalOverrides;
    this.waitTimeOverrides = options.waitTimeOverrides;
    this.prepared = prepareDefinition(parseDefinition(options.definition));
    this.buildMachines(this.prepared.root);
    this.stateContexts = buildStateContexts(this.prepared.stateNames, () => this.clock.now());
    this.tokens = new TaskTokenRegistry(
      () => this.clock.now(),
      (task, reason) => this.onTokenClosed(task, reason),
    );
  }

  private buildMachines(scope: PreparedScope): void {
    try {
      this.machines.set(scope, createLibraryStateMachine(scope.definition, true));
    } catch (err) {
      throw new WorkflowDefinitionError((err as Error).message);
    }
    for (const spec of scope.distributedMaps.values()) this.buildMachines(spec.processor);
  }

  // ---------------------------------------------------------------- executions

  /**
   * StartExecution. Returns at once; the execution runs in the background.
   *
   * @throws InvalidName, InvalidExecutionInput, ExecutionAlreadyExists (a name reused, unless the
   *   same name and input as a running execution, which returns that execution like the service).
   */
  start(options: StartExecutionOptions = {}): ExecutionHandle {
    const name = options.name ?? randomUUID();
    if (!isValidExecutionName(name)) {
      throw new InvalidName(`Invalid Name: '${name}'`);
    }
    const inputJson = JSON.stringify(options.input ?? {});
    if (inputJson === undefined)
      throw new InvalidExecutionInput('the execution input is not JSON-serialisable');
    const existingArn = this.arnsByName.get(name);
    if (existingArn !== undefined) {
      const existing = this.getRecord(existingArn);
      if (existing.description.status === 'RUNNING' && existing.inputJson === inputJson) {
        return this.handleFor(existing);
      }
      throw new ExecutionAlreadyExists(`Execution Already Exists: '${existingArn}'`);
    }
    const arn = `${this.arnPrefix}:execution:${this.stateMachineName}:${name}`;
    const startDate = this.clock.now();
    const input = JSON.parse(inputJson) as JsonValue;
    const record: ExecutionRecord = {
      description: {
        executionArn: arn,
        stateMachineArn: this.stateMachineArn,
        name,
        status: 'RUNNING',
        startDate,
        input: inputJson,
        mapRuns: [],
      },
      inputJson,
      history: [],
      pendingEvents: [],
      activeMapRuns: new Set(),
      done: Promise.resolve(undefined as unknown as ExecutionDescription),
    };
    this.executions.set(arn, record);
    this.arnsByName.set(name, arn);
    const scope = this.createScope({
      arn,
      name,
      stateMachineArn: this.stateMachineArn,
      stateMachineName: this.stateMachineName,
      prepared: this.prepared.root,
      input,
      startDate,
      root: record,
      isChild: false,
    });
    record.scope = scope;
    record.done = this.runTopLevel(record, scope, input);
    this.emit('execution', structuredClone(record.description));
    return this.handleFor(record);
  }

  private handleFor(record: ExecutionRecord): ExecutionHandle {
    const { executionArn, name, startDate } = record.description;
    return { executionArn, name, startDate, wait: () => record.done };
  }

  private async runTopLevel(
    record: ExecutionRecord,
    scope: ExecutionScope,
    input: JsonValue,
  ): Promise<ExecutionDescription> {
    const outcome = await this.runScope(scope, input);
    // The execution ended (its signal aborted whatever it left running): let its Map Runs settle
    // so the final description shows their final state.
    await Promise.allSettled([...record.activeMapRuns]);
    this.flushTaskEvents(record);
    const description = record.description;
    description.status = outcome.status;
    description.stopDate = record.stopRequest?.stopDate ?? this.clock.now();
    if (outcome.output !== undefined) description.output = JSON.stringify(outcome.output);
    const error = outcome.status === 'ABORTED' ? record.stopRequest?.error : outcome.error;
    const cause = outcome.status === 'ABORTED' ? record.stopRequest?.cause : outcome.cause;
    if (error !== undefined) description.error = error;
    if (cause !== undefined) description.cause = cause;
    const snapshot = structuredClone(description);
    this.emit('execution', snapshot);
    return snapshot;
  }

  private createScope(args: {
    arn: string;
    name: string;
    stateMachineArn: string;
    stateMachineName: string;
    prepared: PreparedScope;
    input: JsonValue;
    startDate: Date;
    root: ExecutionRecord;
    isChild: boolean;
  }): ExecutionScope {
    const tokens = this.tokens;
    const scope: ExecutionScope = {
      arn: args.arn,
      name: args.name,
      stateMachineArn: args.stateMachineArn,
      prepared: args.prepared,
      abort: new AbortController(),
      root: args.root,
      isChild: args.isChild,
      local: {
        Execution: {
          Id: args.arn,
          Name: args.name,
          Input: args.input,
          StartTime: args.startDate.toISOString(),
          RoleArn: this.roleArn,
          RedriveCount: 0,
        },
        StateMachine: { Id: args.stateMachineArn, Name: args.stateMachineName },
        States: this.stateContexts,
        Task: {
          // Parameters are evaluated synchronously right before the library calls the Task
          // handler, which claims the token; a token nobody claimed is dropped after that turn.
          get Token(): string {
            if (scope.pendingToken === undefined) {
              const token = tokens.issue();
              scope.pendingToken = token;
              queueMicrotask(() => {
                if (scope.pendingToken === token) scope.pendingToken = undefined;
              });
            }
            return scope.pendingToken;
          },
        },
      },
    };
    return scope;
  }

  /** Runs one execution (top-level or child) to its end. Never rejects. */
  private async runScope(scope: ExecutionScope, input: JsonValue): Promise<RunOutcome> {
    const machine = this.machines.get(scope.prepared);
    if (machine === undefined) throw new Error('internal: no state machine for scope');
    const run = machine.run(input, {
      context: { [LOCAL_CONTEXT_KEY]: scope.local },
      overrides: {
        taskResourceLocalHandlers: this.handlersFor(scope),
        ...(this.retryIntervalOverrides !== undefined && {
          retryIntervalOverrides: this.retryIntervalOverrides,
        }),
        ...(this.waitTimeOverrides !== undefined && { waitTimeOverrides: this.waitTimeOverrides }),
      },
    });
    const onAbort = (): void => run.abort();
    scope.abort.signal.addEventListener('abort', onAbort);
    const historyDone = scope.isChild ? Promise.resolve() : this.consumeHistory(run.eventLogs, scope.root);
    let outcome: RunOutcome;
    try {
      outcome = { status: 'SUCCEEDED', output: await run.result };
    } catch (err) {
      if (err instanceof ExecutionAbortedError) {
        outcome = { status: 'ABORTED' };
      } else if (err instanceof ExecutionTimeoutError) {
        outcome = { status: 'TIMED_OUT', error: 'States.Timeout' };
      } else {
        const cause = err instanceof ExecutionError && err.cause instanceof Error ? err.cause : toError(err);
        outcome = { status: 'FAILED', error: cause.name, cause: cause.message };
      }
    } finally {
      scope.abort.signal.removeEventListener('abort', onAbort);
      // Ends whatever the execution left running: Map Runs, children, waiting tokens.
      scope.abort.abort();
      this.tokens.closeExecution(scope.arn);
    }
    await historyDone;
    return outcome;
  }

  private async runChild(
    request: ChildExecutionRequest,
    parent: ExecutionScope,
  ): Promise<ChildExecutionResult> {
    const startDate = this.clock.now();
    const scope = this.createScope({
      arn: request.arn,
      name: request.name,
      stateMachineArn: request.stateMachineArn,
      stateMachineName: parseStateMachineArn(request.stateMachineArn).name,
      prepared: request.processor,
      input: request.input,
      startDate,
      root: parent.root,
      isChild: true,
    });
    const onAbort = (): void => scope.abort.abort();
    if (request.signal.aborted) onAbort();
    request.signal.addEventListener('abort', onAbort);
    try {
      const outcome = await this.runScope(scope, request.input);
      return { ...outcome, startDate, stopDate: this.clock.now() };
    } finally {
      request.signal.removeEventListener('abort', onAbort);
    }
  }

  // ---------------------------------------------------------------- tasks

  private handlersFor(scope: ExecutionScope): Record<string, (input: JsonValue) => Promise<JsonValue>> {
    const handlers: Record<string, (input: JsonValue) => Promise<JsonValue>> = {};
    for (const [name, info] of scope.prepared.tasks) {
      handlers[name] = (input) => {
        // Claim synchronously: the Parameters that issued it were evaluated in this same turn.
        const token = scope.pendingToken;
        scope.pendingToken = undefined;
        return this.runTask(scope, info, input, token);
      };
    }
    for (const [name, spec] of scope.prepared.distributedMaps) {
      handlers[name] = (input) => this.runDistributedMapState(scope, spec, input);
    }
    return handlers;
  }

  /** The seconds value of a task: static, from a hidden parameter, or from a path (async). */
  private secondsFor(
    scope: ExecutionScope,
    input: JsonValue,
    value: number | undefined,
    hidden: boolean,
    hiddenKey: string,
    path: string | undefined,
  ): number | undefined | Promise<number | undefined> {
    if (value !== undefined) return value;
    if (hidden) return isRecord(input) ? numberFrom(input[hiddenKey]) : undefined;
    if (path === undefined) return undefined;
    return this.evaluator.path(path, input, { [LOCAL_CONTEXT_KEY]: scope.local }).then(numberFrom);
  }

  private async runTask(
    scope: ExecutionScope,
    info: TaskStateInfo,
    input: JsonValue,
    claimedToken: string | undefined,
  ): Promise<JsonValue> {
    let parameters: JsonValue = input;
    if ((info.hiddenTimeout || info.hiddenHeartbeat) && isRecord(input)) {
      const { [HIDDEN_TIMEOUT_KEY]: _timeout, [HIDDEN_HEARTBEAT_KEY]: _heartbeat, ...rest } = input;
      parameters = rest;
    }
    // No await unless a path must be evaluated: the token's timers are then armed before the
    // library arms its own task timer, so a timeout is recorded (TaskTimedOut) before it fails the state.
    const timeoutOrPromise = this.secondsFor(
      scope,
      input,
      info.timeoutSeconds,
      info.hiddenTimeout,
      HIDDEN_TIMEOUT_KEY,
      info.timeoutSecondsPath,
    );
    const timeoutSeconds = timeoutOrPromise instanceof Promise ? await timeoutOrPromise : timeoutOrPromise;
    const heartbeatOrPromise = this.secondsFor(
      scope,
      input,
      info.heartbeatSeconds,
      info.hiddenHeartbeat,
      HIDDEN_HEARTBEAT_KEY,
      info.heartbeatSecondsPath,
    );
    const heartbeatSeconds =
      heartbeatOrPromise instanceof Promise ? await heartbeatOrPromise : heartbeatOrPromise;
    const call: TaskCall = {
      stateName: info.stateName,
      resource: info.resource,
      parameters,
      execution: { arn: scope.arn, name: scope.name },
      ...(timeoutSeconds !== undefined && { timeoutSeconds }),
      ...(heartbeatSeconds !== undefined && { heartbeatSeconds }),
    };
    this.appendTaskEvent(scope, {
      type: 'TaskScheduled',
      stateName: info.stateName,
      input: parameters,
      details: { resource: info.resource },
    });
    if (scope.abort.signal.aborted) throw new ExecutionStoppedError('the execution ended');
    let result: unknown;
    if (info.waitForTaskToken) {
      const taskToken = claimedToken ?? this.tokens.issue();
      call.taskToken = taskToken;
      const outcome = this.tokens
        .wait(taskToken, {
          executionArn: scope.arn,
          stateName: info.stateName,
          resource: info.resource,
          parameters,
          ...(timeoutSeconds !== undefined && { timeoutSeconds }),
          ...(heartbeatSeconds !== undefined && { heartbeatSeconds }),
        })
        .then(
          (value) => ({ ok: true as const, value }),
          (error: unknown) => ({ ok: false as const, error: toError(error) }),
        );
      try {
        await untilAborted(this.invokeTask(call), scope.abort.signal);
      } catch (err) {
        this.tokens.close(taskToken, 'integration-failed');
        throw this.taskFailed(scope, info, toError(err));
      }
      this.appendTaskEvent(scope, {
        type: 'TaskSubmitted',
        stateName: info.stateName,
        details: { taskToken },
      });
      const settled = await untilAborted(outcome, scope.abort.signal).catch((error: unknown) => ({
        ok: false as const,
        error: toError(error),
      }));
      if (!settled.ok) throw this.taskFailed(scope, info, settled.error);
      result = settled.value;
    } else {
      try {
        result = await untilAborted(this.invokeTask(call), scope.abort.signal);
      } catch (err) {
        throw this.taskFailed(scope, info, toError(err));
      }
    }
    const output = toJson(result, `the result of task ${info.stateName}`);
    this.appendTaskEvent(scope, { type: 'TaskSucceeded', stateName: info.stateName, output });
    return output;
  }

  private taskFailed(scope: ExecutionScope, info: TaskStateInfo, error: Error): Error {
    if (error instanceof ExecutionStoppedError) return error;
    this.appendTaskEvent(scope, {
      type: 'TaskFailed',
      stateName: info.stateName,
      error: error.name,
      cause: error.message,
    });
    return error;
  }

  private onTokenClosed(task: WaitingTask, reason: TokenClosedReason): void {
    if (reason !== 'timeout' && reason !== 'heartbeat-timeout') return;
    const record = this.executions.get(task.executionArn);
    const scope = record?.scope;
    if (scope === undefined) return;
    this.appendTaskEvent(scope, {
      type: 'TaskTimedOut',
      stateName: task.stateName,
      error: reason === 'timeout' ? 'States.Timeout' : 'States.HeartbeatTimeout',
      details: { taskToken: task.taskToken },
    });
  }

  private runDistributedMapState(
    scope: ExecutionScope,
    spec: DistributedMapSpec,
    input: JsonValue,
  ): Promise<JsonValue> {
    let started = false;
    const active = scope.root.activeMapRuns;
    const run = this.startDistributedMap(scope, spec, input, () => {
      if (started) return false;
      started = true;
      return true;
    });
    active.add(run);
    // Bookkeeping only: the caller awaits `run` itself; both outcomes are handled here.
    void run.then(
      () => active.delete(run),
      () => active.delete(run),
    );
    return run;
  }

  private startDistributedMap(
    scope: ExecutionScope,
    spec: DistributedMapSpec,
    input: JsonValue,
    firstReport: () => boolean,
  ): Promise<JsonValue> {
    return runDistributedMap({
      spec,
      input,
      context: { [LOCAL_CONTEXT_KEY]: scope.local },
      executionArn: scope.arn,
      stateMachineArn: scope.stateMachineArn,
      signal: scope.abort.signal,
      evaluator: this.evaluator,
      objectStore: this.objectStore,
      now: () => this.clock.now(),
      concurrencyCap: this.concurrencyCap,
      expressTimeoutMs: this.expressTimeoutMs,
      runChild: (request) => this.runChild(request, scope),
      report: (description) => {
        this.mapRuns.set(description.mapRunArn, description);
        const runs = scope.root.description.mapRuns;
        const at = runs.findIndex((r) => r.mapRunArn === description.mapRunArn);
        if (at === -1) runs.push(description);
        else runs[at] = description;
        if (firstReport()) {
          this.appendTaskEvent(scope, {
            type: 'MapRunStarted',
            stateName: spec.stateName,
            details: { mapRunArn: description.mapRunArn },
          });
        }
        if (description.status !== 'RUNNING') {
          const type =
            description.status === 'SUCCEEDED'
              ? 'MapRunSucceeded'
              : description.status === 'ABORTED'
                ? 'MapRunAborted'
                : 'MapRunFailed';
          this.appendTaskEvent(scope, {
            type,
            stateName: spec.stateName,
            ...(description.error !== undefined && { error: description.error }),
            ...(description.cause !== undefined && { cause: description.cause }),
            details: { mapRunArn: description.mapRunArn },
          });
        }
        this.emit('mapRun', structuredClone(description));
      },
    });
  }

  // ---------------------------------------------------------------- history

  private appendHistory(
    record: ExecutionRecord,
    event: Omit<HistoryEvent, 'id' | 'timestamp'> & { timestamp?: Date },
  ): void {
    const full: HistoryEvent = {
      ...event,
      id: record.history.length + 1,
      timestamp: event.timestamp ?? this.clock.now(),
    };
    record.history.push(full);
    this.emit('history', { executionArn: record.description.executionArn, event: full });
  }

  /**
   * Records a runner event for a top-level execution. The library's own events reach us through
   * an async generator a few microtasks late, so runner events wait in a queue: it is flushed
   * on the next macrotask, or just before a library event that closes a state (StateExited,
   * StateFailed...) is recorded. That keeps StateEntered before TaskScheduled, and
   * TaskSucceeded or MapRunSucceeded before StateExited.
   */
  private appendTaskEvent(scope: ExecutionScope, event: Omit<HistoryEvent, 'id' | 'timestamp'>): void {
    if (scope.isChild) return;
    const record = scope.root;
    record.pendingEvents.push({ ...event, timestamp: this.clock.now() });
    if (record.pendingEvents.length === 1) setImmediate(() => this.flushTaskEvents(record));
  }

  private flushTaskEvents(record: ExecutionRecord): void {
    const pending = record.pendingEvents.splice(0);
    for (const event of pending) this.appendHistory(record, event);
  }

  private async consumeHistory(events: AsyncGenerator<LibraryEvent>, record: ExecutionRecord): Promise<void> {
    for await (const event of events) {
      if (!OPENING_EVENTS.has(event.type)) this.flushTaskEvents(record);
      this.appendHistory(record, this.fromLibraryEvent(event));
    }
  }

  private fromLibraryEvent(event: LibraryEvent): Omit<HistoryEvent, 'id' | 'timestamp'> {
    switch (event.type) {
      case 'ExecutionStarted':
        return { type: 'ExecutionStarted', input: event.input };
      case 'ExecutionSucceeded':
        return { type: 'ExecutionSucceeded', output: event.output };
      case 'ExecutionFailed':
        return { type: 'ExecutionFailed', error: event.Error, cause: causeText(event.Cause) };
      case 'ExecutionAborted':
        return { type: 'ExecutionAborted' };
      case 'ExecutionTimeout':
        return { type: 'ExecutionTimedOut' };
      case 'StateEntered':
        return {
          type: 'StateEntered',
          stateName: event.state.name,
          input: event.state.input,
          index: event.index,
        };
      case 'StateExited':
        return {
          type: 'StateExited',
          stateName: event.state.name,
          output: event.state.output,
          index: event.index,
        };
      case 'StateFailed':
        return {
          type: 'StateFailed',
          stateName: event.state.name,
          index: event.index,
          error: event.Error,
          cause: causeText(event.Cause),
        };
      case 'StateRetried':
        return {
          type: 'StateRetried',
          stateName: event.state.name,
          index: event.index,
          details: { attempt: event.retry.attempt, retrier: event.retry.retrier },
        };
      case 'StateCaught':
        return {
          type: 'StateCaught',
          stateName: event.state.name,
          index: event.index,
          details: { catcher: event.catch.catcher },
        };
      case 'MapIterationStarted':
      case 'MapIterationSucceeded':
        return { type: event.type, stateName: event.parentState.name, index: event.index };
      case 'MapIterationFailed':
        return {
          type: event.type,
          stateName: event.parentState.name,
          index: event.index,
          error: event.Error,
          cause: causeText(event.Cause),
        };
      case 'ParallelBranchStarted':
      case 'ParallelBranchSucceeded':
        return { type: event.type, stateName: event.parentState.name };
      case 'ParallelBranchFailed':
        return {
          type: event.type,
          stateName: event.parentState.name,
          error: event.Error,
          cause: causeText(event.Cause),
        };
    }
  }

  // ---------------------------------------------------------------- API

  private getRecord(arnOrName: string): ExecutionRecord {
    const record =
      this.executions.get(arnOrName) ?? this.executions.get(this.arnsByName.get(arnOrName) ?? '');
    if (record === undefined) throw new ExecutionDoesNotExist(`Execution Does Not Exist: '${arnOrName}'`);
    return record;
  }

  /**
   * DescribeExecution (plus the execution's Map Runs).
   *
   * @throws ExecutionDoesNotExist
   */
  describe(arnOrName: string): ExecutionDescription {
    return structuredClone(this.getRecord(arnOrName).description);
  }

  /** ListExecutions, newest first. */
  list(options: { statusFilter?: ExecutionStatus } = {}): ExecutionDescription[] {
    return [...this.executions.values()]
      .map((record) => record.description)
      .filter((d) => options.statusFilter === undefined || d.status === options.statusFilter)
      .sort((a, b) => b.startDate.getTime() - a.startDate.getTime())
      .map((d) => structuredClone(d));
  }

  /**
   * Resolves with the final description once the execution ends.
   *
   * @throws ExecutionDoesNotExist
   */
  wait(arnOrName: string): Promise<ExecutionDescription> {
    return this.getRecord(arnOrName).done;
  }

  /**
   * StopExecution: aborts a running execution (its Map Runs, children and waiting tokens too).
   * A finished execution is left as it is.
   *
   * @throws ExecutionDoesNotExist
   */
  stop(arnOrName: string, error?: string, cause?: string): { stopDate: Date } {
    const record = this.getRecord(arnOrName);
    if (record.description.status !== 'RUNNING') {
      return { stopDate: record.description.stopDate ?? this.clock.now() };
    }
    if (record.stopRequest === undefined) {
      record.stopRequest = {
        stopDate: this.clock.now(),
        ...(error !== undefined && { error }),
        ...(cause !== undefined && { cause }),
      };
      record.scope?.abort.abort();
    }
    return { stopDate: record.stopRequest.stopDate };
  }

  /**
   * GetExecutionHistory, oldest first.
   *
   * @throws ExecutionDoesNotExist
   */
  history(arnOrName: string): HistoryEvent[] {
    return structuredClone(this.getRecord(arnOrName).history);
  }

  /**
   * DescribeMapRun.
   *
   * @throws ResourceNotFound
   */
  describeMapRun(mapRunArn: string): MapRunDescription {
    const run = this.mapRuns.get(mapRunArn);
    if (run === undefined) throw new ResourceNotFound(`Map Run Does Not Exist: '${mapRunArn}'`);
    return structuredClone(run);
  }

  /** The `.waitForTaskToken` tasks currently waiting, oldest first. */
  waitingTasks(): WaitingTask[] {
    return this.tokens.waiting();
  }

  /**
   * SendTaskSuccess.
   *
   * @param output The task result as JSON text.
   * @throws InvalidToken (never issued), TaskTimedOut (no longer waiting), InvalidOutput (not JSON)
   */
  sendTaskSuccess(taskToken: string, output: string): void {
    this.tokens.succeed(taskToken, output);
  }

  /**
   * SendTaskFailure: the task fails with `error` (default `States.TaskFailed`) and `cause`.
   *
   * @throws InvalidToken, TaskTimedOut
   */
  sendTaskFailure(taskToken: string, error?: string, cause?: string): void {
    this.tokens.fail(taskToken, error, cause);
  }

  /**
   * SendTaskHeartbeat: restarts the task's HeartbeatSeconds clock.
   *
   * @throws InvalidToken, TaskTimedOut
   */
  sendTaskHeartbeat(taskToken: string): void {
    this.tokens.heartbeat(taskToken);
  }
}
