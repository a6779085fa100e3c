/**
 * The local run's progress, as the CLI shows it: the local cloud reports each Distributed Map's progress as an event
 * (`{state, unit, done, total, failed}`); the pipeline says what a Map's items are, and how a progress line reads.
 */
import type { MapRunProgress } from '@corpus-pipeline/local-aws/local-cloud';
import { mapItemUnit } from '../../lambda/shared/contracts/names';

export type { MapRunProgress };

export { mapItemUnit };

/** A Map's progress as a line: `  FanOut: 120 of 400 records done (3 failed)`. */
export function formatMapProgress(progress: MapRunProgress): string {
  const what = progress.unit === 'shards' ? 'shards (batch jobs)' : progress.unit;
  return `  ${progress.state}: ${progress.done} of ${progress.total} ${what} done (${progress.failed} failed)`;
}
