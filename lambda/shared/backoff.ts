/**
 * Full-jitter exponential backoff: a random wait from 0 up to `baseMs * 2^attempt`, capped at `capMs`. Randomness
 * spreads the retries of many callers that failed together, so they do not collide again.
 */
export function jitteredBackoffMs(attempt: number, baseMs: number, capMs = Number.POSITIVE_INFINITY): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
