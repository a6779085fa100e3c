import * as z from 'zod';

/**
 * The shapes that cross a boundary: the execution input, what Plan hands the workflow, the Map's items and batches,
 * the result and failure lines, the run manifest and the run event. Validated with zod where they enter a handler.
 */

/** Processing modes a run can ask for. `auto` lets Plan choose. */
export const MODES = ['auto', 'batch', 'converse'] as const;
/** A requested processing mode. */
export type RequestedMode = (typeof MODES)[number];
/** The mode Plan chose. */
export type RunMode = 'batch' | 'converse';

/**
 * The execution input, as the S3 ingest rule builds it or as a person types it in the console:
 * `{"bucket": "my-ingest-bucket", "key": "corpora/reviews.jsonl", "mode": "auto"}`.
 */
export const runInputSchema = z
  .object({
    bucket: z.string().min(3, 'bucket must be an S3 bucket name').max(63),
    key: z
      .string()
      .min(
        1,
        'key must name the corpus: a JSONL object, or a prefix ending in / (or its drop marker <prefix>_SUCCESS)',
      ),
    mode: z.enum(MODES, { message: `mode must be one of ${MODES.join(', ')}` }).optional(),
    ledgerScope: z.string().min(1).max(200).optional(),
    etag: z.string().optional(),
    size: z.number().int().nonnegative().optional(),
    trigger: z.enum(['s3', 'cli', 'console']).optional(),
  })
  .strict();
/** The execution input. */
export type RunInput = z.infer<typeof runInputSchema>;

/** The record formats Plan recognises in `modelInput`. */
export type RecordFormat = 'converse' | 'native';

/** One line of the items file Plan writes (`runs/<runId>/items.jsonl`): one record to process. */
export const workItemSchema = z.object({
  recordId: z.string().min(1),
  format: z.enum(['converse', 'native']),
  modelInput: z.record(z.string(), z.unknown()),
  /** The corpus object (key) the record's line is in. */
  source: z.string().optional(),
  line: z.number().int().positive(),
});
/** A record to process. */
export type WorkItem = z.infer<typeof workItemSchema>;

/** What the Distributed Map's ItemBatcher hands each child: `BatchInput` from the definition plus the items. */
export const itemBatchEventSchema = z.object({
  BatchInput: z.object({ runId: z.string().min(1), ledgerScope: z.string().min(1) }),
  Items: z.array(workItemSchema).min(1),
  /** When the child execution started (ISO-8601): an EXPRESS child has five minutes from then. */
  childStartedAt: z.string().min(1).optional(),
});
/** An item batch: the records of one Converse child execution (not a Bedrock batch job). */
export type ItemBatchEvent = z.infer<typeof itemBatchEventSchema>;

/** Model calls as the functions' clients saw them: every HTTP attempt, with the SDK's retries. */
export interface ModelCalls {
  /** Attempts sent to the model. */
  total: number;
  /** Attempts the model answered with ThrottlingException. */
  throttled: number;
  /** Attempts that retried an earlier attempt of the same call. */
  retried: number;
}

/**
 * What a Converse child returns for its item batch (and the ResultWriter keeps): where the batch's records ended. Always
 * `records = succeeded + failed + skipped + queued`.
 */
export interface ItemBatchSummary {
  batchId: string;
  records: number;
  /** Published by this batch (lines in its results file). */
  succeeded: number;
  /** Failed for good (lines in its failures file). */
  failed: number;
  /** Held or published by another run: counted as skipped. */
  skipped: number;
  /** Handed to the failure lane, which settles them. */
  queued: number;
  inputTokens: number;
  outputTokens: number;
  /** This attempt's model calls. */
  modelCalls: ModelCalls;
}

/** Line counts Plan measured. Always `lines = records + invalid + duplicates`. */
export interface PlanCounts {
  /** Non-blank lines in the corpus. */
  lines: number;
  /** Distinct valid records. */
  records: number;
  /** Bad lines (each has a failure line with a reason). */
  invalid: number;
  /** Lines identical to an earlier line (same recordId, same content): dropped. */
  duplicates: number;
  /** Records the ledger already holds as published in this scope. */
  skipped: number;
  /** Records left to process: `records - skipped`. */
  toProcess: number;
}

/**
 * Plan's first step (prepare): the run input checked, the corpus listed and cut into segments, the workflow state
 * until the merge. The Plan Map reads `segmentsKey` (a JSON array of segments); when `counting.parts > 0`, the
 * line-count Map reads `counting.key` first (the byte-range parts whose line counts later parts start from).
 */
export interface PlanPrepared {
  runId: string;
  startedAt: string;
  requestedMode: RequestedMode;
  ledgerScope: string;
  corpus: { bucket: string; key: string; etag?: string; size: number; sources: number };
  segments: {
    /** `runs/<runId>/plan/segments.json`: the Plan Map's items. */
    key: string;
    count: number;
    /** The Plan Map's MaxConcurrency (`plan.mapConcurrency`). */
    maxConcurrency: number;
  };
  counting: {
    /** `runs/<runId>/plan/count-parts.json`: the line-count Map's items. */
    key: string;
    parts: number;
  };
}

/** Plan's output: the workflow state from Plan on. */
export interface PlanOutput {
  runId: string;
  startedAt: string;
  mode: RunMode;
  requestedMode: RequestedMode;
  /** The corpus: one object or a prefix (`key` ends in `/`); `size` sums its sources, `sources` counts them. */
  corpus: { bucket: string; key: string; etag?: string; size?: number; sources?: number };
  output: { bucket: string; prefix: string };
  itemsKey: string;
  ledgerScope: string;
  modelId: string;
  counts: PlanCounts;
  fanOut: FanOutSettings;
  /** Batch mode only: the shards (batch jobs) and the records that go through Converse instead. */
  batch?: BatchPlan;
}

/** Converse mode's Distributed Map settings, and the items it reads. */
export interface FanOutSettings {
  /** The items file the Converse fan-out reads: every record in converse mode, the leftovers of batch mode. */
  itemsKey: string;
  batchSize: number;
  maxConcurrency: number;
  toleratedFailurePercentage: number;
}

/** One shard of a batch mode run: one Bedrock batch inference job. An item of the batch Map (`runs/<runId>/shards.json`). */
export interface ShardItem {
  /** 0-based shard index. */
  shard: number;
  records: number;
  bytes: number;
  /** The records' format: every record of a shard has the same (`converse` makes the job modelInvocationType Converse). */
  format: RecordFormat;
  /** The shard's input files in the output bucket, in order. */
  inputKeys: string[];
  /** The job's input location (inputDataConfig s3Uri is `s3://<output bucket>/<inputPrefix>`). */
  inputPrefix: string;
  /** The job's output location (outputDataConfig s3Uri); Bedrock writes under `<outputPrefix><jobId>/`. */
  outputPrefix: string;
}

/** Batch mode's part of the plan. */
export interface BatchPlan {
  /** JSON array of {@link ShardItem} in the output bucket: the batch Map's ItemReader. */
  shardsKey: string;
  shards: number;
  /** Records in shards. */
  records: number;
  /** Records that go through Converse in the same run (too few for a job of the minimum size). */
  viaConverse: number;
  /** Batch Map MaxConcurrency: `batch.mapConcurrency`, at most the concurrent-jobs quota. */
  maxConcurrency: number;
  toleratedFailurePercentage: number;
  /** How long the workflow waits for one job (the job's own timeout plus a margin): the wait's TimeoutSeconds. */
  jobWaitSeconds: number;
  /** The wait's HeartbeatSeconds: the reconciler beats more often than that. */
  heartbeatSeconds: number;
  /** The limits the shards were cut to, and where each came from. */
  quotas: Record<string, number>;
  quotaSources: Record<string, string>;
  /**
   * The WriteShardSlices Map's items (`runs/<runId>/plan/slices.json`: one `{segment}` per segment with records for
   * the shard files or the Converse tail): each writes its slices before the jobs start.
   */
  slicesKey: string;
  /** How many (0: nothing to write). */
  slices: number;
  /** The WriteShardSlices Map's MaxConcurrency (`plan.mapConcurrency`). */
  sliceConcurrency: number;
}

/** What a shard's child execution hands the SubmitJob function (with `$$.Task.Token`). */
export const submitJobEventSchema = z.object({
  taskToken: z.string().min(1),
  runId: z.string().min(1),
  shard: z.object({
    shard: z.number().int().nonnegative(),
    records: z.number().int().positive(),
    bytes: z.number().int().nonnegative(),
    format: z.enum(['converse', 'native']),
    inputKeys: z.array(z.string().min(1)).min(1),
    inputPrefix: z.string().min(1),
    outputPrefix: z.string().min(1),
  }),
});
/** SubmitJob's event. */
export type SubmitJobEvent = z.infer<typeof submitJobEventSchema>;

/** Terminal statuses of a batch inference job. */
export const BATCH_JOB_TERMINAL_STATUSES = [
  'Completed',
  'PartiallyCompleted',
  'Stopped',
  'Expired',
  'Failed',
] as const;
/** A terminal status. */
export type BatchJobTerminalStatus = (typeof BATCH_JOB_TERMINAL_STATUSES)[number];

/**
 * How a batch job ended: the output a shard's wait resumes with (SendTaskSuccess), sent by the job-state handler, the
 * reconciler, or SubmitJob itself when the job had already ended.
 */
export const batchJobOutcomeSchema = z.object({
  jobArn: z.string().min(1),
  jobName: z.string().min(1),
  shard: z.number().int().nonnegative(),
  status: z.enum(BATCH_JOB_TERMINAL_STATUSES),
  /** The job's message (why it failed or stopped), when it has one. */
  message: z.string().optional(),
  /** ISO-8601. */
  submittedAt: z.string().min(1),
  /** ISO-8601. */
  endedAt: z.string().optional(),
  /** Key prefix of the job's output in the output bucket: `<shard outputPrefix><jobId>/`. */
  outputPrefix: z.string().min(1),
  /** Bedrock's counters, when GetModelInvocationJob reports them. */
  counts: z
    .object({
      total: z.number().int().nonnegative().optional(),
      processed: z.number().int().nonnegative().optional(),
      success: z.number().int().nonnegative().optional(),
      error: z.number().int().nonnegative().optional(),
    })
    .optional(),
});
/** How a batch job ended. */
export type BatchJobOutcome = z.infer<typeof batchJobOutcomeSchema>;

/** One job in the run manifest's `jobs`. */
export interface ManifestJob {
  shard: number;
  jobArn: string | null;
  status: string;
  records: number;
  succeeded: number;
  failed: number;
  /** Records another run had already published (lost the ledger claim). */
  skipped: number;
  /** Records without output, re-driven through Converse. */
  redriven: number;
  submittedAt: string | null;
  endedAt: string | null;
  message?: string;
}

/** Token usage of one model call. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
}

/** One line of `runs/<runId>/results/*.jsonl`: a record the model answered. */
export interface ResultLine {
  recordId: string;
  modelOutput: unknown;
  usage: Usage;
}

/** Where a failure happened: `source` is a corpus file Plan could not read (binary, not gzip as named, corrupt gzip). */
export type FailureStage = 'source' | 'plan' | 'converse' | 'batch' | 'fanout' | 'finalize';

/** One line of `runs/<runId>/failures/*.jsonl`: a failed record or a bad line, with a reason a person can act on. */
export interface FailureLine {
  recordId?: string;
  /** The corpus file (source) the line is in: the object key. Plan's failures always name it. */
  source?: string;
  /** 1-based line number in the corpus file (`source`). */
  line?: number;
  stage: FailureStage;
  error: { code: string; message: string; retryable?: boolean };
}

/** A failure-lane message (SQS): the failure plus what is needed to retry it. */
export interface FailureLaneMessage extends FailureLine {
  runId: string;
  ledgerScope: string;
  format?: RecordFormat;
  modelInput?: Record<string, unknown>;
}

/**
 * One object of the corpus in the manifest's `sources`, in reading order: a source read (its non-blank `lines`, of which
 * `records` distinct valid records, and the `error` that refused it or its rest), or an object under the corpus prefix
 * left unread (`skipped`: why). A refused source counts one invalid line (its failure line).
 */
export interface CorpusSourceEntry {
  key: string;
  size: number;
  etag?: string;
  lines?: number;
  records?: number;
  error?: { code: string; message: string };
  skipped?: string;
}

/** Final run status. */
export type RunStatus = 'SUCCEEDED' | 'FAILED';

/**
 * `runs/<runId>/manifest.json`. Always `lines = records + invalid + duplicates` and
 * `records = succeeded + failed + skipped + pending`; `succeeded` equals the lines of the results files, `failed +
 * invalid` the lines of the failures files. A later revision (the failure lane settling records after the run)
 * replaces it with a higher `revision`.
 */
export interface RunManifest {
  runId: string;
  /** 1 when Finalize wrote it; each later change (the failure lane settling records) adds one. */
  revision: number;
  mode: RunMode | null;
  status: RunStatus;
  counts: {
    lines: number;
    records: number;
    succeeded: number;
    failed: number;
    invalid: number;
    duplicates: number;
    skipped: number;
    /** Records handed to the failure lane that it has not settled yet: in neither results nor failures. */
    pending: number;
    /** Records the failure lane published (included in `succeeded`). */
    recovered: number;
  };
  tokens: { input: number; output: number };
  /** Model calls of the run's functions (the failure lane's included). */
  modelCalls: ModelCalls;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  corpus: { bucket: string; key: string } | null;
  /**
   * The corpus's objects (at most {@link MAX_MANIFEST_SOURCES}; `sourcesFile` holds them all): their `lines` add up to
   * `counts.lines`, their `records` to `counts.records`.
   */
  sources?: CorpusSourceEntry[];
  /** The JSON array of every {@link CorpusSourceEntry} in the output bucket, and how many there are. */
  sourcesFile?: { key: string; count: number };
  modelId: string | null;
  ledgerScope: string | null;
  output: { bucket: string; manifestKey: string; resultsPrefix: string; failuresPrefix: string };
  batches?: { total: number; failed: number };
  /** Batch mode: one entry per shard (batch job), in shard order. */
  jobs?: ManifestJob[];
  error?: { code: string; message: string };
}

/** The most `sources` entries a manifest holds inline (the manifest's base is a DynamoDB item, at most 400 KB). */
export const MAX_MANIFEST_SOURCES = 500;

/** EventBridge `source` of the pipeline's own events. */
export const EVENT_SOURCE = 'corpus.pipeline';
/** EventBridge `detail-type` of a finished run. */
export const RUN_COMPLETED = 'Corpus Run Completed';
/** EventBridge `detail-type` of a failed run. */
export const RUN_FAILED = 'Corpus Run Failed';
/** EventBridge `detail-type` of a finished run whose manifest changed (the failure lane settled records). */
export const RUN_UPDATED = 'Corpus Run Updated';
