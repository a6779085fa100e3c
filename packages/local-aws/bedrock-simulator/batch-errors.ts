/** Error names the batch control plane answers with, as they appear in `x-amzn-errortype` and the SDK's `err.name`. */
export type BatchErrorName =
  | 'ValidationException'
  | 'ResourceNotFoundException'
  | 'ConflictException'
  | 'ServiceQuotaExceededException'
  | 'InternalServerException'
  | 'UnknownOperationException';

/** HTTP status the Bedrock control plane pairs with each error name (from the SDK's error shapes). */
export const BATCH_ERROR_STATUS: Readonly<Record<BatchErrorName, number>> = {
  ValidationException: 400,
  ResourceNotFoundException: 404,
  ConflictException: 400,
  ServiceQuotaExceededException: 400,
  InternalServerException: 500,
  UnknownOperationException: 404,
};

/**
 * A control-plane error as Bedrock would return it: thrown by the batch job service, turned into a restJson1
 * error response (status, `x-amzn-errortype`, `{"message"}`) by the HTTP server.
 */
export class BatchServiceError extends Error {
  /** HTTP status code of the error response. */
  readonly statusCode: number;

  /**
   * @param errorName the AWS error shape name (becomes `err.name` in the SDK)
   * @param message the human-readable message
   */
  constructor(
    readonly errorName: BatchErrorName,
    message: string,
  ) {
    super(message);
    this.name = 'BatchServiceError';
    this.statusCode = BATCH_ERROR_STATUS[errorName];
  }
}

/**
 * Why a job could not use its input or output location (missing input, limits exceeded, an S3 error). The job
 * ends Failed with this message; it is never an API error.
 */
export class BatchJobFailure extends Error {
  /** @param message the job's failure message, as GetModelInvocationJob reports it */
  constructor(message: string) {
    super(message);
    this.name = 'BatchJobFailure';
  }
}
