import type { Context } from 'aws-lambda';

/**
 * How long a workflow task's Powertools in-progress record blocks a second invocation of the same run. Powertools
 * would hold it until the invocation's own deadline (up to 15 minutes): after a crash (an out-of-memory kill, a
 * process exit) the workflow's retry would then be refused until the crashed invocation's deadline, longer than its
 * retry policy waits. Step Functions never starts a retry while an attempt runs (every Task's TimeoutSeconds is above
 * its function's timeout), so the lock only has to outlive a retry interval, and the task's own work is idempotent
 * (Plan rewrites the same files; Finalize finishes units through the ledger and announces each run once): what
 * Powertools adds is the cached answer of a finished invocation.
 */
export const IN_PROGRESS_LOCK_MS = 10_000;

/**
 * The Lambda context Powertools idempotency sees: the same, but for the remaining time, capped at `lockMs`, from
 * which Powertools sets the in-progress record's expiry (see {@link IN_PROGRESS_LOCK_MS}).
 */
export function withInProgressLock(context: Context, lockMs = IN_PROGRESS_LOCK_MS): Context {
  return {
    ...context,
    getRemainingTimeInMillis: () => Math.min(lockMs, context.getRemainingTimeInMillis()),
  };
}
