import { z } from 'zod';

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
    key: z.string().min(1, 'key must name the corpus object (a JSONL file)'),
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
  line: z.number().int().positive(),
});
/** A record to process. */
export type WorkItem = z.infer<typeof workItemSchema>;

/** What the Distributed Map's ItemBatcher hands each child: `BatchInput` from the definition plus the items. */
export const batchEventSchema = z.object({
  BatchInput: z.object({ runId: z.string().min(1), ledgerScope: z.string().min(1) }),
  Items: z.array(workItemSchema).min(1),
});
/** A batch of records for one Converse child execution. */
export type BatchEvent = z.infer<typeof batchEventSchema>;

/** What a Converse child returns (and the ResultWriter keeps): the batch's counts. */
export interface BatchSummary {
  batchId: string;
  records: number;
  succeeded: number;
  failed: number;
  /** Records another run had already published (lost the ledger claim): counted as skipped. */
  skipped: number;
  throttled: number;
  inputTokens: number;
  outputTokens: number;
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

/** Plan's output: the workflow state from Plan on. */
export interface PlanOutput {
  runId: string;
  startedAt: string;
  mode: RunMode;
  requestedMode: RequestedMode;
  corpus: { bucket: string; key: string; etag?: string; size?: number };
  output: { bucket: string; prefix: string };
  itemsKey: string;
  ledgerScope: string;
  modelId: string;
  counts: PlanCounts;
  fanOut: { batchSize: number; maxConcurrency: number; toleratedFailurePercentage: number };
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

/** Where a failure happened. */
export type FailureStage = 'plan' | 'converse' | 'batch' | 'fanout' | 'finalize';

/** One line of `runs/<runId>/failures/*.jsonl`: a failed record or a bad line, with a reason a person can act on. */
export interface FailureLine {
  recordId?: string;
  /** 1-based line number in the corpus. */
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

/** Final run status. */
export type RunStatus = 'SUCCEEDED' | 'FAILED';

/** `runs/<runId>/manifest.json`. Always `lines = records + invalid + duplicates`, `records = succeeded + failed + skipped`. */
export interface RunManifest {
  runId: string;
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
  };
  tokens: { input: number; output: number };
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  corpus: { bucket: string; key: string } | null;
  modelId: string | null;
  ledgerScope: string | null;
  output: { bucket: string; manifestKey: string; resultsPrefix: string; failuresPrefix: string };
  batches?: { total: number; failed: number };
  error?: { code: string; message: string };
}

/** EventBridge `source` of the pipeline's own events. */
export const EVENT_SOURCE = 'corpus.pipeline';
/** EventBridge `detail-type` of a finished run. */
export const RUN_COMPLETED = 'Corpus Run Completed';
/** EventBridge `detail-type` of a failed run. */
export const RUN_FAILED = 'Corpus Run Failed';

/** The S3 layout of one run in the output bucket. */
export const runKeys = {
  prefix: (runId: string): string => `runs/${runId}/`,
  items: (runId: string): string => `runs/${runId}/items.jsonl`,
  plan: (runId: string): string => `runs/${runId}/plan.json`,
  manifest: (runId: string): string => `runs/${runId}/manifest.json`,
  resultsPrefix: (runId: string): string => `runs/${runId}/results/`,
  failuresPrefix: (runId: string): string => `runs/${runId}/failures/`,
  results: (runId: string, part: string): string => `runs/${runId}/results/${part}.jsonl`,
  failures: (runId: string, part: string): string => `runs/${runId}/failures/${part}.jsonl`,
};
