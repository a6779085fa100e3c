/**
 * Names the stack gives and other parts look up: the pipeline's name, the Metadata key of a function's entry file,
 * the Map states the CLI and the local runtime report on.
 */

/** The name shared by the stack, the state machine, the event bus and the dashboard of one environment. */
export function pipelineName(envName: string): string {
  return `CorpusPipeline-${envName}`;
}

/** The Metadata key the CDK Lambda construct sets to the handler's repo-relative TypeScript entry (local runtime). */
export const ENTRY_METADATA_KEY = 'corpus:entry';

/** The workflow's Distributed Map states (statemachine/pipeline.asl.json), also their Map Run labels. */
export const MAP_STATES = {
  /** Plan: one item per segment of the corpus. */
  planSegments: 'PlanSegments',
  /** Plan: one item per byte-range part whose lines a later part starts after. */
  countLines: 'CountLines',
  /** Batch mode: one item per shard (batch job). */
  batchJobs: 'BatchJobs',
  /** Converse fan-out: one item per record, batched. */
  fanOut: 'FanOut',
} as const;

/** The jobs table's key, index and TTL attribute names (lib/batch-jobs.ts declares the table with them; lambda/shared/batch-jobs.ts reads and writes by them). */
export const JOBS_TABLE_KEYS = {
  /** Table partition key (S). */
  partitionKey: 'jobArn',
  /** GSI: the jobs of a run, in shard order. */
  byRunIndex: 'by-run',
  /** `by-run` partition key (S). */
  byRunPartitionKey: 'runId',
  /** `by-run` sort key (N). */
  byRunSortKey: 'shard',
  /** Sparse GSI: the jobs whose wait is open, oldest first. */
  inFlightIndex: 'in-flight',
  /** `in-flight` partition key (S, always `'1'`: lambda/shared/batch-jobs.ts IN_FLIGHT). */
  inFlightPartitionKey: 'inFlight',
  /** `in-flight` sort key (S, ISO-8601). */
  inFlightSortKey: 'submittedAt',
  /** TTL attribute (epoch seconds). */
  ttlAttribute: 'expiresAt',
} as const;

/** What the items of a Map state are: shards (one batch job each), corpus segments (Plan's Maps) or records. */
export function mapItemUnit(stateName: string): 'shards' | 'segments' | 'records' {
  if (stateName === MAP_STATES.batchJobs) return 'shards';
  if (stateName === MAP_STATES.planSegments || stateName === MAP_STATES.countLines) return 'segments';
  return 'records';
}
