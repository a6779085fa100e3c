/**
 * Typed errors. Their `name` is what the workflow's Retry and Catch match on (Step Functions surfaces a Lambda
 * function error by its errorType, which is the thrown error's name).
 */

/** A dependency (S3, DynamoDB, SQS, EventBridge) failed in a way worth retrying; the workflow retries the task. */
export class TransientDependencyError extends Error {
  override readonly name = 'TransientDependencyError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The execution input is not a valid run request; the run fails at once with this message. */
export class InvalidRunInputError extends Error {
  override readonly name = 'InvalidRunInputError';
}

/** The corpus object named by the run input does not exist or cannot be read. */
export class CorpusNotFoundError extends Error {
  override readonly name = 'CorpusNotFoundError';
}

/**
 * The configured model cannot serve this run: it reached end of life, is not offered to the account in this Region,
 * needs an inference profile, or model access is not enabled. Plan raises it before reading the corpus, so a run
 * fails once with what to do instead of record by record; the workflow does not retry it (its Retry lists only
 * transient errors) and Finalize records it as the run's error.
 */
export class ModelNotAvailableError extends Error {
  override readonly name = 'ModelNotAvailableError';
}

/** The requested processing mode is not available in this deployment. */
export class UnsupportedModeError extends Error {
  override readonly name = 'UnsupportedModeError';
}

/** A handler received an event that does not match its contract (a wiring bug, not bad data). */
export class InvalidEventError extends Error {
  override readonly name = 'InvalidEventError';
}

/** Lambda environment variables are missing or invalid (a deployment bug). */
export class ConfigurationError extends Error {
  override readonly name = 'ConfigurationError';
}

interface AwsLikeError {
  name?: string;
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: number };
}

const TRANSIENT_NAMES = new Set([
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'SlowDown',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'InternalServerError',
  'InternalServerException',
  'InternalError',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
]);

/** True when an AWS SDK error (after the SDK's own retries) is still worth retrying later. */
export function isTransientAwsError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as AwsLikeError & { code?: string };
  if (e.$retryable) return true;
  if (e.name && TRANSIENT_NAMES.has(e.name)) return true;
  if (e.code && TRANSIENT_NAMES.has(e.code)) return true;
  const status = e.$metadata?.httpStatusCode;
  return status !== undefined && (status >= 500 || status === 429);
}

/**
 * Runs a dependency call and rethrows a transient failure as TransientDependencyError (so the workflow's Retry
 * matches it); any other error is rethrown as it is.
 */
export async function callDependency<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isTransientAwsError(err)) {
      throw new TransientDependencyError(`${what} failed transiently: ${errorMessage(err)}`, { cause: err });
    }
    throw err;
  }
}

/** The message of anything thrown. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** The name (error code) of anything thrown. */
export function errorName(err: unknown): string {
  if (err instanceof Error) return err.name;
  if (typeof err === 'object' && err !== null && 'name' in err && typeof err.name === 'string')
    return err.name;
  return 'Error';
}
