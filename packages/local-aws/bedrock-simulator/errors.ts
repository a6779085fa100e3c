/** Error names the simulator answers with, as they appear in `x-amzn-errortype` and the SDK's `err.name`. */
export type SimulatorErrorName =
  | 'ValidationException'
  | 'ResourceNotFoundException'
  | 'ThrottlingException'
  | 'ServiceUnavailableException'
  | 'InternalServerException'
  | 'ModelTimeoutException'
  | 'UnknownOperationException';

/** HTTP status the real service pairs with each error name. */
export const ERROR_STATUS: Readonly<Record<SimulatorErrorName, number>> = {
  ValidationException: 400,
  ResourceNotFoundException: 404,
  ThrottlingException: 429,
  ServiceUnavailableException: 503,
  InternalServerException: 500,
  ModelTimeoutException: 408,
  UnknownOperationException: 404,
};

/**
 * A service error as Bedrock would return it. Thrown by the model logic and validation, turned into a
 * restJson1 error response (status, `x-amzn-errortype`, `{"message"}`) by the transports, or into an
 * error record by the batch control plane.
 */
export class SimulatorError extends Error {
  /** HTTP status code of the error response. */
  readonly statusCode: number;

  /**
   * @param errorName the AWS error shape name (becomes `err.name` in the SDK)
   * @param message the human-readable message
   */
  constructor(
    readonly errorName: SimulatorErrorName,
    message: string,
  ) {
    super(message);
    this.name = 'SimulatorError';
    this.statusCode = ERROR_STATUS[errorName];
  }
}

/** A ValidationException (HTTP 400) with the given message. */
export function validationError(message: string): SimulatorError {
  return new SimulatorError('ValidationException', message);
}

/** Message of the ThrottlingException for the requests-per-minute quota. */
export const TOO_MANY_REQUESTS_MESSAGE = 'Too many requests, please wait before trying again.';
/** Message of the ThrottlingException for the tokens-per-minute quota. */
export const TOO_MANY_TOKENS_MESSAGE = 'Too many tokens, please wait before trying again.';
