/**
 * The local runtime's progress lines, read back as data. `startLocalRuntime().waitForExecution` reports each
 * Distributed Map's progress as a line (`  FanOut: 120 of 400 records done (3 failed)`); the CLI draws them as bars.
 */

/** One Map's progress in a local run. */
export interface LocalMapProgress {
  /** The Map state: `BatchJobs` (items are shards, one batch job each) or `FanOut` (items are records). */
  readonly stateName: string;
  readonly unit: 'shards' | 'records';
  readonly done: number;
  readonly total: number;
  readonly failed: number;
}

const MAP_PROGRESS = /^\s*(\S+): (\d+) of (\d+) (shards \(batch jobs\)|records) done \((\d+) failed\)$/;

/** The Map progress a runtime progress line reports, or undefined for any other line. */
export function parseMapProgressLine(line: string): LocalMapProgress | undefined {
  const match = MAP_PROGRESS.exec(line);
  if (!match) return undefined;
  const [, stateName, done, total, what, failed] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  return {
    stateName,
    unit: what === 'records' ? 'records' : 'shards',
    done: Number(done),
    total: Number(total),
    failed: Number(failed),
  };
}
