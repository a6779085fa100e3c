/**
 * Task tokens for `.waitForTaskToken` tasks: issued once per attempt, completed by
 * SendTaskSuccess / SendTaskFailure, kept alive by SendTaskHeartbeat, expired by
 * HeartbeatSeconds, TimeoutSeconds, or the end of their execution.
 */
import { randomBytes } from 'node:crypto';

import { InvalidOutput, InvalidToken, StatesError, TaskTimedOut } from './errors';
import type { WaitingTask } from './types';

/** ASL error name of a missed heartbeat. */
export const HEARTBEAT_TIMEOUT = 'States.HeartbeatTimeout';

interface Entry {
  task: WaitingTask;
  resolve: (output: unknown) => void;
  reject: (error: Error) => void;
  heartbeatTimer?: NodeJS.Timeout;
  timeoutTimer?: NodeJS.Timeout;
}

/** Registration of a waiting task. */
export interface WaitRegistration {
  executionArn: string;
  stateName: string;
  resource: string;
  parameters: unknown;
  timeoutSeconds?: number;
  heartbeatSeconds?: number;
}

/** Why a token stopped waiting, for the caller's history. */
export type TokenClosedReason = 'heartbeat-timeout' | 'timeout' | 'execution-ended' | 'integration-failed';

/** Issues tokens and routes SendTask* calls to the waiting task. */
export class TaskTokenRegistry {
  private readonly waitingByToken = new Map<string, Entry>();
  private readonly issued = new Set<string>();

  constructor(
    private readonly now: () => Date,
    private readonly onClosed: (task: WaitingTask, reason: TokenClosedReason) => void = () => undefined,
  ) {}

  /** A new token, unique to this registry. Its shape mimics the service's opaque base64 tokens. */
  issue(): string {
    const token = `AQB${randomBytes(96).toString('base64')}`;
    this.issued.add(token);
    return token;
  }

  /**
   * Starts waiting on a token. The promise resolves with the SendTaskSuccess output, or rejects
   * with the SendTaskFailure error or `States.HeartbeatTimeout`. When TimeoutSeconds elapses the
   * token is closed without settling: the library's own timer fails the state with its
   * `States.Timeout` (an instance it recognises, so `States.TaskFailed` does not catch it).
   */
  wait(token: string, registration: WaitRegistration): Promise<unknown> {
    this.issued.add(token);
    return new Promise((resolve, reject) => {
      const task: WaitingTask = { taskToken: token, startDate: this.now(), ...registration };
      const entry: Entry = { task, resolve, reject };
      this.waitingByToken.set(token, entry);
      if (registration.heartbeatSeconds !== undefined)
        this.armHeartbeat(entry, registration.heartbeatSeconds);
      if (registration.timeoutSeconds !== undefined) {
        entry.timeoutTimer = setTimeout(
          () => this.close(token, 'timeout'),
          registration.timeoutSeconds * 1000,
        );
      }
    });
  }

  private armHeartbeat(entry: Entry, seconds: number): void {
    if (entry.heartbeatTimer !== undefined) clearTimeout(entry.heartbeatTimer);
    entry.heartbeatTimer = setTimeout(() => {
      if (this.close(entry.task.taskToken, 'heartbeat-timeout')) {
        entry.reject(new StatesError(HEARTBEAT_TIMEOUT, `No heartbeat received for ${seconds} s`));
      }
    }, seconds * 1000);
  }

  private take(token: string): Entry {
    const entry = this.waitingByToken.get(token);
    if (entry !== undefined) return entry;
    if (this.issued.has(token))
      throw new TaskTimedOut('Task Timed Out: the task of this token is no longer running');
    throw new InvalidToken('Invalid Token: this token was not issued by the local runner');
  }

  /** Stops waiting without settling. Returns false when the token was not waiting. */
  close(token: string, reason: TokenClosedReason): boolean {
    const entry = this.waitingByToken.get(token);
    if (entry === undefined) return false;
    this.waitingByToken.delete(token);
    if (entry.heartbeatTimer !== undefined) clearTimeout(entry.heartbeatTimer);
    if (entry.timeoutTimer !== undefined) clearTimeout(entry.timeoutTimer);
    this.onClosed(entry.task, reason);
    return true;
  }

  /**
   * SendTaskSuccess.
   *
   * @param output The task result as JSON text.
   * @throws InvalidOutput, InvalidToken, TaskTimedOut
   */
  succeed(token: string, output: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(output);
    } catch (err) {
      throw new InvalidOutput(`output is not JSON: ${(err as Error).message}`);
    }
    const entry = this.take(token);
    this.settle(entry);
    entry.resolve(parsed);
  }

  /**
   * SendTaskFailure. The task fails with `error` as its ASL error name (`States.TaskFailed` when
   * omitted) and `cause` as its cause.
   *
   * @throws InvalidToken, TaskTimedOut
   */
  fail(token: string, error?: string, cause?: string): void {
    const entry = this.take(token);
    this.settle(entry);
    entry.reject(new StatesError(error ?? 'States.TaskFailed', cause ?? ''));
  }

  /**
   * SendTaskHeartbeat: restarts the HeartbeatSeconds clock.
   *
   * @throws InvalidToken, TaskTimedOut
   */
  heartbeat(token: string): void {
    const entry = this.take(token);
    entry.task.lastHeartbeat = this.now();
    if (entry.task.heartbeatSeconds !== undefined) this.armHeartbeat(entry, entry.task.heartbeatSeconds);
  }

  private settle(entry: Entry): void {
    this.waitingByToken.delete(entry.task.taskToken);
    if (entry.heartbeatTimer !== undefined) clearTimeout(entry.heartbeatTimer);
    if (entry.timeoutTimer !== undefined) clearTimeout(entry.timeoutTimer);
  }

  /** Closes every token of an execution (it ended or was stopped). */
  closeExecution(executionArn: string): void {
    for (const [token, entry] of [...this.waitingByToken]) {
      if (entry.task.executionArn === executionArn) this.close(token, 'execution-ended');
    }
  }

  /** The tasks currently waiting, oldest first. */
  waiting(): WaitingTask[] {
    return [...this.waitingByToken.values()].map((entry) => ({ ...entry.task }));
  }
}
