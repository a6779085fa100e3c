import { getJson } from '../shared/s3-jsonl';
import type { PlanDeps } from './plan-run';

/** What Plan's steps share: reading the files an earlier step wrote. */

/** Files whose summaries, line counts and sizes a step reads at once. */
export const SMALL_READS_IN_FLIGHT = 16;

/** Raised when a step of Plan finds a file an earlier step should have written missing. */
export class PlanSegmentMissingError extends Error {
  override readonly name = 'PlanSegmentMissingError';
}

export async function requireJson<T>(deps: Pick<PlanDeps, 's3' | 'settings'>, key: string): Promise<T> {
  const value = await getJson<T>(deps.s3, deps.settings.outputBucket, key);
  if (value === undefined)
    throw new PlanSegmentMissingError(
      `s3://${deps.settings.outputBucket}/${key} is missing: an earlier step of Plan did not finish`,
    );
  return value;
}
