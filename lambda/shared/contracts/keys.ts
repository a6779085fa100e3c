/**
 * The S3 layout of the output bucket: every key a function writes or reads, and the key patterns the stack grants
 * access by. Builders only; callers validate their inputs (sharding.ts checks run ids and shard numbers).
 */

/**
 * The object that closes a drop folder under the ingest prefix (`<ingestPrefix><folder>/_SUCCESS`): its upload starts
 * the run of the whole folder, whose other objects start nothing on their own.
 */
export const DROP_MARKER = '_SUCCESS';

/** The S3 layout of one run in the output bucket. */
export const runKeys = {
  prefix: (runId: string): string => `runs/${runId}/`,
  items: (runId: string): string => `runs/${runId}/items.jsonl`,
  plan: (runId: string): string => `runs/${runId}/plan.json`,
  /** The corpus's objects as Plan read them (JSON array of CorpusSourceEntry). */
  sources: (runId: string): string => `runs/${runId}/sources.json`,
  manifest: (runId: string): string => `runs/${runId}/manifest.json`,
  resultsPrefix: (runId: string): string => `runs/${runId}/results/`,
  failuresPrefix: (runId: string): string => `runs/${runId}/failures/`,
  results: (runId: string, part: string): string => `runs/${runId}/results/${part}.jsonl`,
  failures: (runId: string, part: string): string => `runs/${runId}/failures/${part}.jsonl`,
  /** Batch mode: the shard list (JSON array of ShardItem). */
  shards: (runId: string): string => `runs/${runId}/shards.json`,
  /** Batch mode: the records Plan sends through Converse (too few for another job). */
  converseTail: (runId: string): string => `runs/${runId}/converse-tail.jsonl`,
  /** Batch mode: what the Converse fan-out reads after the jobs (the tail plus records jobs left without output). */
  converseItems: (runId: string): string => `runs/${runId}/converse-items.jsonl`,
  /** Batch mode: per-shard records without output (written by Collect). */
  redrivePrefix: (runId: string): string => `runs/${runId}/redrive/`,
  /** Staged model answers of one unit of work (a Converse batch, a failure-lane record), before the ledger commit. */
  attemptsPrefix: (runId: string, unit: string): string => `runs/${runId}/attempts/${unit}/`,
  /** One staged attempt of a unit of work. */
  attempt: (runId: string, unit: string, attempt: string): string =>
    `runs/${runId}/attempts/${unit}/${attempt}.jsonl`,
};

/**
 * Plan's working files of one run (`runs/<runId>/plan/`): the segments and what each wrote before the merge joined
 * them into the run's items and failures files.
 */
export const planKeys = {
  prefix: (runId: string): string => `runs/${runId}/plan/`,
  /** The corpus listing the prepare step made (sources read and objects skipped). */
  listing: (runId: string): string => `runs/${runId}/plan/listing.json`,
  /** The Plan Map's items (JSON array of PlanSegment). */
  segments: (runId: string): string => `runs/${runId}/plan/segments.json`,
  /** The line-count Map's items (JSON array of CountPart). */
  countParts: (runId: string): string => `runs/${runId}/plan/count-parts.json`,
  /** The lines of one byte-range part (`{"lines": n}`), from the line-count Map. */
  lineCount: (runId: string, source: number, start: number): string =>
    `runs/${runId}/plan/line-counts/${source}-${start}.json`,
  /** One segment's work item lines (its records to process as far as it can tell). */
  segmentItems: (runId: string, segment: number): string =>
    `runs/${runId}/plan/segments/${pad(segment)}/items.jsonl`,
  /** One segment's bad lines (final: a line's own problem does not depend on other segments). */
  segmentFailures: (runId: string, segment: number): string =>
    `runs/${runId}/plan/segments/${pad(segment)}/failures.jsonl`,
  /** One segment's records by recordId (sorted TSV), for the merge to resolve ids across segments. */
  segmentIndex: (runId: string, segment: number): string =>
    `runs/${runId}/plan/segments/${pad(segment)}/index.tsv`,
  /** One segment's summary (JSON SegmentSummary), written last: the segment is done when it exists. */
  segmentSummary: (runId: string, segment: number): string =>
    `runs/${runId}/plan/segments/${pad(segment)}/summary.json`,
  /** One segment's records to process in items order, a size line each (`c<bytes>`/`n<bytes>`), for the shard cut. */
  segmentSizes: (runId: string, segment: number): string =>
    `runs/${runId}/plan/segments/${pad(segment)}/sizes.txt`,
  /** Batch mode: where each run of a segment's items goes (JSON array of SliceRoute, lambda/batch/shard-slices.ts). */
  segmentRoutes: (runId: string, segment: number): string =>
    `runs/${runId}/plan/segments/${pad(segment)}/routes.json`,
  /** Batch mode: a segment's part of the Converse tail, joined into `runKeys.converseTail`. */
  segmentTail: (runId: string, segment: number): string =>
    `runs/${runId}/plan/segments/${pad(segment)}/tail.jsonl`,
  /** Batch mode: the WriteShardSlices Map's items (JSON array of `{segment}`). */
  slices: (runId: string): string => `runs/${runId}/plan/slices.json`,
  /** The merge's failures: records whose recordId the merge found reused (across segments or in the ledger). */
  mergeFailures: (runId: string): string => `runs/${runId}/plan/merge-failures.jsonl`,
};

/** A shard number as it appears in its keys: five digits, zero-padded. */
const pad = (n: number): string => String(n).padStart(5, '0');

/** Batch mode: the S3 layout of one shard (batch job), unvalidated (sharding.ts validates run and shard first). */
export const shardKeys = {
  /** The prefix holding a shard's input files (the job's inputDataConfig s3Uri). */
  inputPrefix: (runId: string, shard: number): string => `runs/${runId}/shards/${pad(shard)}/input/`,
  /** One input file of a shard: `runs/<runId>/shards/<shard>/input/part-<file>.jsonl`. */
  inputFile: (runId: string, shard: number, file: number): string =>
    `${shardKeys.inputPrefix(runId, shard)}part-${pad(file)}.jsonl`,
  /** One segment's slice of a shard's input file: `runs/<runId>/shards/<shard>/input/part-<file>-<segment>.jsonl`. */
  inputSlice: (runId: string, shard: number, file: number, segment: number): string =>
    `${shardKeys.inputPrefix(runId, shard)}part-${pad(file)}-${pad(segment)}.jsonl`,
  /** The prefix a shard's job writes to (outputDataConfig s3Uri); Bedrock adds `<jobId>/`. */
  outputPrefix: (runId: string, shard: number): string => `runs/${runId}/shards/${pad(shard)}/output/`,
};

/** The keys Collect writes besides the results parts. */
export const collectKeys = {
  /** Results of one output file of the shard: `runs/<runId>/results/shard-<n>-<part>.jsonl`. */
  results: (runId: string, shard: number, part: number): string =>
    runKeys.results(runId, `shard-${shard}-${part}`),
  /** The shard's failures file. */
  failures: (runId: string, shard: number): string => runKeys.failures(runId, `shard-${shard}`),
  /** The shard's records without output, as WorkItems for converse mode. */
  redrive: (runId: string, shard: number): string => `${runKeys.redrivePrefix(runId)}shard-${shard}.jsonl`,
  /** The summary of a finished collect: a repeated collect of the same job returns it unchanged. */
  marker: (runId: string, shard: number): string => `runs/${runId}/collect/shard-${shard}.json`,
};

/** The S3 keys of one Converse batch (unit). */
export const converseUnitKeys = {
  results: (runId: string, batchId: string): string => runKeys.results(runId, batchId),
  failures: (runId: string, batchId: string): string => runKeys.failures(runId, batchId),
  attemptsPrefix: (runId: string, batchId: string): string => runKeys.attemptsPrefix(runId, batchId),
  attempt: (runId: string, batchId: string, attempt: string): string =>
    runKeys.attempt(runId, batchId, attempt),
};

/** The key patterns of the output bucket the stack grants each function by (IAM resource suffixes). */
export const KEY_PATTERNS = {
  /** Every run's objects (`runs/<runId>/...`). */
  runs: 'runs/*',
  /** The failure files of every run (`runs/<runId>/failures/<part>.jsonl`). */
  runFailures: 'runs/*/failures/*',
  /** The results files of every run (`runs/<runId>/results/<part>.jsonl`). */
  runResults: 'runs/*/results/*',
  /** Batch mode's re-drive files of every run (`runs/<runId>/redrive/shard-<n>.jsonl`). */
  runRedrive: 'runs/*/redrive/*',
  /** Batch mode: every shard's input files, which Bedrock's batch role reads. */
  shardInput: 'runs/*/shards/*/input/*',
  /** Batch mode: every shard's job output, which Bedrock's batch role writes. */
  shardOutput: 'runs/*/shards/*/output/*',
} as const;
