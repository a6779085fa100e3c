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
import { LOCAL_CONTEXT_KEY, buildStateContexts, type StateContext } from './context-paths';
import {
  EXPRESS_EXECUTION_TIMEOUT_MS,
  type ChildExecutionRequest,
  type ChildExecutionResult,
  parseStateMachineArn,
} from './distributed-map';
import {
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  InvalidExecutionInput,
  InvalidName,
  ResourceNotFound,
  WorkflowDefinitionError,
} from './errors';
import { ExecutionHistory } from './execution-history';
import {
  createExecutionScope,
  isValidExecutionName,
  newExecutionRecord,
  type ExecutionRecord,
  type ExecutionScope,
  type RunOutcome,
  type ScopeArgs,
} from './execution-scope';
import { runMapRunState, type MapRunStateContext } from './map-run-state';
import { PayloadEvaluator } from './payload';
import {
  type PreparedDefinition,
  type PreparedScope,
  parseDefinition,
  prepareDefinition,
} from './prepare-definition';
import { TaskStateRunner, toError } from './task-state';
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
  private readonly retryIntervalOverrides?: Record<string, number | number[]>;
  private readonly waitTimeOverrides?: Record<string, number>;
  private readonly machines = new Map<PreparedScope, StateMachine>();
  private readonly stateContexts: StateContext[];
  private readonly evaluator = new PayloadEvaluator();
  private readonly tokens: TaskTokenRegistry;
  private readonly recorder: ExecutionHistory;
  private readonly tasks: TaskStateRunner;
  private readonly mapRunContext: MapRunStateContext;
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
    const expressTimeoutMs = options.expressTimeoutMs ?? EXPRESS_EXECUTION_TIMEOUT_MS;
    if (!(expressTimeoutMs > 0)) {
      throw new RangeError(`expressTimeoutMs must be positive, got ${expressTimeoutMs}`);
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
    this.recorder = new ExecutionHistory(
      () => this.clock.now(),
      (executionArn, event) => this.emit('history', { executionArn, event }),
    );
    this.tasks = new TaskStateRunner({
      invokeTask: options.invokeTask,
      tokens: this.tokens,
      evaluator: this.evaluator,
      history: this.recorder,
    });
    this.mapRunContext = {
      evaluator: this.evaluator,
      objectStore: options.objectStore,
      now: () => this.clock.now(),
      concurrencyCap: options.maxDistributedConcurrency ?? DEFAULT_DISTRIBUTED_CONCURRENCY_CAP,
      expressTimeoutMs,
      history: this.recorder,
      runChild: (request, parent) => this.runChild(request, parent),
      onMapRun: (description) => {
        this.mapRuns.set(description.mapRunArn, description);
        this.emit('mapRun', structuredClone(description));
      },
    };
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
    const record = newExecutionRecord(this.stateMachineArn, arn, name, inputJson, startDate);
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
    this.recorder.flushTaskEvents(record);
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

  private createScope(args: ScopeArgs): ExecutionScope {
    return createExecutionScope(args, {
      roleArn: this.roleArn,
      stateContexts: this.stateContexts,
      tokens: this.tokens,
    });
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
    const historyDone = scope.isChild ? Promise.resolve() : this.recorder.consume(run.eventLogs, scope.root);
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
        return this.tasks.run(scope, info, input, token);
      };
    }
    for (const [name, spec] of scope.prepared.distributedMaps) {
      handlers[name] = (input) => runMapRunState(scope, spec, input, this.mapRunContext);
    }
    return handlers;
  }

  private onTokenClosed(task: WaitingTask, reason: TokenClosedReason): void {
    if (reason !== 'timeout' && reason !== 'heartbeat-timeout') return;
    const record = this.executions.get(task.executionArn);
    const scope = record?.scope;
    if (scope === undefined) return;
    this.recorder.appendTaskEvent(scope, {
      type: 'TaskTimedOut',
      stateName: task.stateName,
      error: reason === 'timeout' ? 'States.Timeout' : 'States.HeartbeatTimeout',
      details: { taskToken: task.taskToken },
    });
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
