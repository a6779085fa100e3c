import { createHash } from 'node:crypto';

/**
 * The id of a batch: the same records in the same run always give the same id, hence the same result and failure
 * file names, so a retried batch overwrites its own files instead of adding to them.
 */
export function batchIdOf(runId: string, recordIds: readonly string[]): string {
  const hash = createHash('sha256').update(runId);
  for (const id of recordIds) hash.update('\n').update(id);
  return hash.digest('hex').slice(0, 20);
}
