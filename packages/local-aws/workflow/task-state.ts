/**
 * Task states: the call handed to `invokeTask` (hidden timer parameters stripped, TimeoutSeconds and
 * HeartbeatSeconds resolved), `.waitForTaskToken` waits on the token registry, and the task events of the
 * history (TaskScheduled, TaskSubmitted, TaskSucceeded, TaskFailed).
 */
import type { JsonValue } from './asl-runtime';
import { LOCAL_CONTEXT_KEY } from './context-paths';
import { StatesError } from './errors';
import type { ExecutionHistory } from './execution-history';
import type { ExecutionScope } from './execution-scope';
import type { PayloadEvaluator } from './payload';
import { HIDDEN_HEARTBEAT_KEY, HIDDEN_TIMEOUT_KEY, type TaskStateInfo, isRecord } from './prepare-definition';
import type { TaskTokenRegistry } from './task-tokens';
import type { InvokeTask, TaskCall } from './types';

/** An Error as it is, anything else as `States.TaskFailed`. */
export function toError(err: unknown): Error {
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

/** The task input without the hidden parameters that carried TimeoutSecondsPath / HeartbeatSecondsPath values. */
function withoutHiddenTimers(info: TaskStateInfo, input: JsonValue): JsonValue {
  if ((info.hiddenTimeout || info.hiddenHeartbeat) && isRecord(input)) {
    const { [HIDDEN_TIMEOUT_KEY]: _timeout, [HIDDEN_HEARTBEAT_KEY]: _heartbeat, ...rest } = input;
    return rest;
  }
  return input;
}

/** What running Task states needs from the workflow. */
export interface TaskStateDeps {
  readonly invokeTask: InvokeTask;
  readonly tokens: TaskTokenRegistry;
  readonly evaluator: PayloadEvaluator;
  readonly history: ExecutionHistory;
}

/** Runs the Task states of every scope of one workflow. */
export class TaskStateRunner {
  /** @param deps the task invoker, token registry, path evaluator and history */
  constructor(private readonly deps: TaskStateDeps) {}

  /**
   * Runs one Task state attempt to its result.
   * @param claimedToken the token `$$.Task.Token` issued for this attempt's Parameters, if any
   */
  async run(
    scope: ExecutionScope,
    info: TaskStateInfo,
    input: JsonValue,
    claimedToken: string | undefined,
  ): Promise<JsonValue> {
    const parameters = withoutHiddenTimers(info, input);
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
    this.deps.history.appendTaskEvent(scope, {
      type: 'TaskScheduled',
      stateName: info.stateName,
      input: parameters,
      details: { resource: info.resource },
    });
    if (scope.abort.signal.aborted) throw new ExecutionStoppedError('the execution ended');
    const result = info.waitForTaskToken
      ? await this.invokeAndWaitForToken(scope, info, call, claimedToken)
      : await this.invoke(scope, info, call);
    const output = toJson(result, `the result of task ${info.stateName}`);
    this.deps.history.appendTaskEvent(scope, { type: 'TaskSucceeded', stateName: info.stateName, output });
    return output;
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
    return this.deps.evaluator.path(path, input, { [LOCAL_CONTEXT_KEY]: scope.local }).then(numberFrom);
  }

  /** A request-response task: its result is what `invokeTask` returns. */
  private async invoke(scope: ExecutionScope, info: TaskStateInfo, call: TaskCall): Promise<unknown> {
    try {
      return await untilAborted(this.deps.invokeTask(call), scope.abort.signal);
    } catch (err) {
      throw this.taskFailed(scope, info, toError(err));
    }
  }

  /** A `.waitForTaskToken` task: `invokeTask` hands the token out, SendTask* settles it. */
  private async invokeAndWaitForToken(
    scope: ExecutionScope,
    info: TaskStateInfo,
    call: TaskCall,
    claimedToken: string | undefined,
  ): Promise<unknown> {
    const { tokens } = this.deps;
    const taskToken = claimedToken ?? tokens.issue();
    call.taskToken = taskToken;
    const outcome = tokens
      .wait(taskToken, {
        executionArn: scope.arn,
        stateName: info.stateName,
        resource: info.resource,
        parameters: call.parameters,
        ...(call.timeoutSeconds !== undefined && { timeoutSeconds: call.timeoutSeconds }),
        ...(call.heartbeatSeconds !== undefined && { heartbeatSeconds: call.heartbeatSeconds }),
      })
      .then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error: toError(error) }),
      );
    try {
      await untilAborted(this.deps.invokeTask(call), scope.abort.signal);
    } catch (err) {
      tokens.close(taskToken, 'integration-failed');
      throw this.taskFailed(scope, info, toError(err));
    }
    this.deps.history.appendTaskEvent(scope, {
      type: 'TaskSubmitted',
      stateName: info.stateName,
      details: { taskToken },
    });
    const settled = await untilAborted(outcome, scope.abort.signal).catch((error: unknown) => ({
      ok: false as const,
      error: toError(error),
    }));
    if (!settled.ok) throw this.taskFailed(scope, info, settled.error);
    return settled.value;
  }

  private taskFailed(scope: ExecutionScope, info: TaskStateInfo, error: Error): Error {
    if (error instanceof ExecutionStoppedError) return error;
    this.deps.history.appendTaskEvent(scope, {
      type: 'TaskFailed',
      stateName: info.stateName,
      error: error.name,
      cause: error.message,
    });
    return error;
  }
}
