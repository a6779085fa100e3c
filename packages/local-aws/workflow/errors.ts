/**
 * Typed errors of the local workflow runner. Each has a `name` matching the Step Functions
 * API error or ASL error it stands for, so callers and Retry/Catch match on it.
 */

/** The definition uses something the local runner cannot execute faithfully. */
export class WorkflowDefinitionError extends Error {
  override readonly name = 'WorkflowDefinitionError';
}

/** StartExecution with a name already used by another execution (or with different input). */
export class ExecutionAlreadyExists extends Error {
  override readonly name = 'ExecutionAlreadyExists';
}

/** No execution with that ARN or name. */
export class ExecutionDoesNotExist extends Error {
  override readonly name = 'ExecutionDoesNotExist';
}

/** No Map Run with that ARN. */
export class ResourceNotFound extends Error {
  override readonly name = 'ResourceNotFound';
}

/** An execution name that StartExecution would reject. */
export class InvalidName extends Error {
  override readonly name = 'InvalidName';
}

/** SendTask* with a token this runner never issued. */
export class InvalidToken extends Error {
  override readonly name = 'InvalidToken';
}

/** SendTask* with a token whose task is no longer waiting (completed, timed out, or its execution ended). */
export class TaskTimedOut extends Error {
  override readonly name = 'TaskTimedOut';
}

/** SendTaskSuccess with an output that is not JSON. */
export class InvalidOutput extends Error {
  override readonly name = 'InvalidOutput';
}

/** StartExecution input that is not JSON-serialisable. */
export class InvalidExecutionInput extends Error {
  override readonly name = 'InvalidExecutionInput';
}

/**
 * An ASL runtime error raised by the runner itself (for example `States.ItemReaderFailed`,
 * `States.ExceedToleratedFailureThreshold`, `States.HeartbeatTimeout`). Its `name` is the ASL
 * error name, which is what Retry and Catch match on; its message becomes the Cause.
 */
export class StatesError extends Error {
  constructor(errorName: string, cause: string) {
    super(cause);
    this.name = errorName;
  }
}
