import type { S3Client } from '@aws-sdk/client-s3';
import * as z from 'zod';
import {
  BATCH_JOB_TERMINAL_STATUSES,
  type BatchJobTerminalStatus,
  type FailureLine,
  type FailureStage,
} from '../../shared/contracts';
import type { FailureLaneSender } from '../../shared/failure-lane';
import type { Ledger } from '../../shared/ledger';
import type { ResultsPublisher } from '../../shared/results-queue';

/**
 * Batch mode's Collect step: turns the output of one shard's Bedrock batch job into the pipeline's result and failure
 * files, with the same ledger semantics as converse mode (claim, write the results file, then mark published), and hands the
 * records the job left without output back for re-drive through converse mode.
 *
 * Bedrock writes, under `<outputS3Uri>/<jobId>/`, one `<inputFileName>.out` per input file (lines
 * `{recordId, modelInput, modelOutput}` or `{recordId, modelInput, error: {errorCode, errorMessage}}`, in an order
 * that is not the input order) and a `manifest.json.out` with the job's counts.
 *
 * Memory stays flat whatever the file sizes: lines are streamed, and only the shard's record ids are held (one map
 * entry and one state byte per record; a shard holds at most 50,000 records).
 */

/** The terminal statuses a batch job reaches; Collect runs on each (the contract's list). */
export const BATCH_JOB_END_STATUSES = BATCH_JOB_TERMINAL_STATUSES;
/** A terminal batch job status. */
export type BatchJobEndStatus = BatchJobTerminalStatus;

/** The failure stage of Collect's failure lines. */
export const STAGE = 'batch' satisfies FailureStage;

/** A line of the shard's failures file: a failure at the `batch` stage. */
export type CollectFailureLine = FailureLine & { stage: typeof STAGE };

/** What Collect is given for one shard. */
export const collectShardInputSchema = z.object({
  runId: z.string().min(1),
  ledgerScope: z.string().min(1),
  shard: z.number().int().nonnegative(),
  jobArn: z.string().min(1),
  jobStatus: z.enum(BATCH_JOB_END_STATUSES),
  /** The job's `message` from GetModelInvocationJob (why it failed or stopped). */
  failureMessage: z.string().optional(),
  /** The shard's input files (the batch job's input) in the output bucket, in shard order. */
  inputKeys: z.array(z.string().min(1)).min(1),
  /**
   * The shard's record format (Plan gives every record of a shard the same), which re-driven records keep. Without it
   * the format is detected again without the model's family (only `anthropic_version` marks a native messages body).
   */
  format: z.enum(['converse', 'native']).optional(),
  /** Where the job wrote its output in the output bucket: `<prefix>/<jobId>/`. */
  outputPrefix: z.string().min(1),
  /** When the job was submitted (ISO-8601), kept in the marker for the run manifest. */
  submittedAt: z.string().min(1).optional(),
  /** When the job ended (ISO-8601), kept in the marker for the run manifest. */
  endedAt: z.string().min(1).optional(),
});
/** What Collect is given for one shard. */
export type CollectShardInput = z.infer<typeof collectShardInputSchema>;

/** `manifest.json.out`, the counts Bedrock writes beside a job's output files. */
export interface BatchOutputManifest {
  totalRecordCount?: number;
  processedRecordCount?: number;
  successRecordCount?: number;
  errorRecordCount?: number;
  inputTokenCount?: number;
  outputTokenCount?: number;
}

/** The cross-check of the output lines against `manifest.json.out`. A mismatch is reported, never fatal. */
export interface ManifestCheck {
  /** `processedRecordCount` from the manifest; null when the job wrote no manifest. */
  expected: number | null;
  /** Records of the shard with an output line (success or error). */
  seen: number;
  /** True when the manifest exists and its counts match what was seen. */
  ok: boolean;
  /** Output lines that could not be used: unreadable, a recordId outside the shard, or a repeated recordId. */
  ignoredLines: number;
  /** What did not match, when something did not. */
  detail?: string;
}

/**
 * What Collect returns for one shard (and keeps as its marker). Always `records = succeeded + failed + skipped +
 * missing`; `missing` counts every record the shard hands to the Converse fan-out of the same run (no output line, a
 * retryable error line, or every record of a job that ended `Failed` for a reason a model call could get past).
 */
export interface CollectShardSummary {
  shard: number;
  jobArn: string;
  status: BatchJobEndStatus;
  /** Distinct records in the shard's input files. */
  records: number;
  /** Records published by this run. */
  succeeded: number;
  /** Records with an error line. */
  failed: number;
  /** Records answered but held or published by another run (lost the ledger claim). */
  skipped: number;
  /** Records re-driven through Converse in the same run: written to `redriveKey`. */
  missing: number;
  /** `runs/<runId>/redrive/shard-<n>.jsonl` (WorkItems), when records are missing. */
  redriveKey?: string;
  /** `runs/<runId>/failures/shard-<n>.jsonl`, when records failed. */
  failuresKey?: string;
  /** Tokens of the records published by this run. */
  inputTokens: number;
  outputTokens: number;
  manifestCheck: ManifestCheck;
  /** When the job was submitted (ISO-8601), when known. */
  submittedAt?: string;
  /** When the job ended (ISO-8601), when known. */
  endedAt?: string;
  /** The job's message (why it failed or stopped), when it has one. */
  message?: string;
}

/** What Collect talks to. */
export interface CollectDeps {
  s3: S3Client;
  ledger: Pick<Ledger, 'claim' | 'commit' | 'fail' | 'markDelivered'>;
  failureLane: Pick<FailureLaneSender, 'add' | 'flush'>;
  /** How long Collect's claims hold before another owner may take them over, in ms. */
  leaseMs: number;
  /** A new attempt id. @default randomUUID */
  newAttempt?: () => string;
  /** The results queue, when one is configured: each record this collect publishes is sent to it. */
  resultsPublisher?: Pick<ResultsPublisher, 'publish'>;
  /** The bucket holding the shard's input files, the job's output and the run's files. */
  outputBucket: string;
  /** Ledger calls in flight at once (default 32). */
  concurrency?: number;
}

/**
 * The batch job ended `Failed` for a reason every model call would meet too (access denied, the model not found):
 * its records are recorded as failed with the job's message, and the workflow's Map tolerance decides the run.
 */
export class BatchJobFailedError extends Error {
  override readonly name = 'BatchJobFailedError';
  constructor(
    readonly jobArn: string,
    readonly shard: number,
    readonly failureMessage: string | undefined,
  ) {
    super(
      `Bedrock batch job ${jobArn} (shard ${shard}) failed: ${failureMessage ?? 'Bedrock gave no failure message'}`,
    );
  }
}

/** A shard input file is missing or holds a line Plan could not have written (a wiring bug, not bad data). */
export class InvalidShardInputError extends Error {
  override readonly name = 'InvalidShardInputError';
}

/** The keys Collect writes besides the results parts (kept under this name for its callers). */
export { collectKeys } from '../../shared/contracts';

/** The name Bedrock gives a job's manifest. */
export const MANIFEST_NAME = 'manifest.json.out';
