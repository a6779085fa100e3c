/**
 * Errors of the local Step Functions endpoint, each carrying the error shape the real service answers
 * with, so the HTTP front end can send a faithful awsJson1_0 error and the SDK raises an error whose
 * `name` is that shape.
 */

/** Error shapes of the Step Functions model (namespace `com.amazonaws.sfn`) this endpoint answers with. */
export type SfnModeledErrorCode =
  | 'InvalidToken'
  | 'TaskDoesNotExist'
  | 'TaskTimedOut'
  | 'InvalidOutput'
  | 'InvalidArn'
  | 'InvalidName'
  | 'InvalidExecutionInput'
  | 'ExecutionAlreadyExists'
  | 'ExecutionDoesNotExist'
  | 'StateMachineDoesNotExist'
  | 'ResourceNotFound'
  | 'ValidationException';

/** Protocol-level error shapes every AWS JSON service answers with (namespace `com.amazon.coral.service`). */
export type SfnProtocolErrorCode = 'UnknownOperationException' | 'SerializationException' | 'InternalFailure';

/** Every error shape the endpoint can answer with. */
export type SfnErrorCode = SfnModeledErrorCode | SfnProtocolErrorCode;

const PROTOCOL_CODES: ReadonlySet<string> = new Set<SfnProtocolErrorCode>([
  'UnknownOperationException',
  'SerializationException',
  'InternalFailure',
]);

/**
 * A request the local Step Functions endpoint refuses, with the service's error shape and HTTP status.
 */
export class StepFunctionsServiceError extends Error {
  override readonly name = 'StepFunctionsServiceError';

  /**
   * @param code the service's error shape (what `err.name` becomes in the SDK)
   * @param message the message, worded like the service's where it is known
   * @param status the HTTP status (400 for client errors)
   */
  constructor(
    readonly code: SfnErrorCode,
    message: string,
    readonly status: number = 400,
  ) {
    super(message);
  }

  /** The `__type` of the JSON error body: `com.amazonaws.sfn#Code` (or the coral namespace for protocol errors). */
  get type(): string {
    return sfnErrorType(this.code);
  }
}

/**
 * The `__type` of a JSON error body for an error shape: `com.amazonaws.sfn#Code`, or
 * `com.amazon.coral.service#Code` for the protocol-level shapes.
 *
 * @param code the error shape
 */
export function sfnErrorType(code: string): string {
  return `${PROTOCOL_CODES.has(code) ? 'com.amazon.coral.service' : 'com.amazonaws.sfn'}#${code}`;
}

/** A `1 validation error detected: ...` ValidationException, worded like the service's. */
export function validationError(message: string): StepFunctionsServiceError {
  return new StepFunctionsServiceError('ValidationException', `1 validation error detected: ${message}`);
}
