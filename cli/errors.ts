/**
 * The CLI's typed errors and the exit code each maps to: 0 ok, 1 not found, a failed run or a failed doctor check,
 * 2 bad usage, 3 the backend (AWS or the local emulators) could not answer.
 */

/** Exit codes of every `corpus` command. */
export const EXIT = {
  /** The command did what was asked. */
  ok: 0,
  /** The run (or stack resource) asked for does not exist, the run failed, or a `corpus doctor` check failed. */
  notFoundOrFailed: 1,
  /** The command was called wrongly (unknown option, bad value, a command the backend cannot do). */
  usage: 2,
  /** AWS or the local runtime could not answer (credentials, a missing stack, emulators, an API error). */
  backend: 3,
} as const;

/** A mistake in how a command was called: exit code 2, no stack trace. */
export class CliUsageError extends Error {
  override readonly name = 'CliUsageError';
}

/** The run (or another named thing) does not exist: exit code 1. */
export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
}

/** The backend could not answer: exit code 3. The message says what was asked and what to check. */
export class BackendError extends Error {
  override readonly name = 'BackendError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The exit code for an error thrown by a command. */
export function exitCodeOf(error: unknown): number {
  if (error instanceof CliUsageError) return EXIT.usage;
  if (error instanceof NotFoundError) return EXIT.notFoundOrFailed;
  return EXIT.backend;
}

/** The message of anything thrown, with the cause's message when it adds one. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const own = error.message || error.name;
  const cause = error.cause;
  if (cause instanceof Error && cause.message && !own.includes(cause.message)) {
    return `${own}: ${cause.name}: ${cause.message}`;
  }
  return own;
}
