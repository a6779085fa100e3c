/**
 * Bedrock batch inference quotas: the limits Plan shards by, and the documented defaults that both the stack's
 * configuration (lib/config.ts `batch.quotas`) and the handlers fall back to.
 */

/** The batch inference limits of one model in one Region. Byte limits in bytes. */
export interface BatchQuotas {
  /** "Minimum number of records per batch inference job for <model>" (100 on current models, 1,000 on older). */
  minRecordsPerJob: number;
  /** "Records per batch inference job for <model>". */
  maxRecordsPerJob: number;
  /** "Records per input file per batch inference job for <model>". */
  maxRecordsPerFile: number;
  /** "Batch inference input file size (in GB) for <model>", in bytes. */
  maxBytesPerFile: number;
  /** "Batch inference job size (in GB) for <model>", in bytes. */
  maxBytesPerJob: number;
  /** "Sum of in-progress and submitted batch inference jobs using a base model for <model>". */
  maxConcurrentJobs: number;
}

/** One of the limits. */
export type BatchQuotaKey = keyof BatchQuotas;

/**
 * Bytes in one quota "GB". Decimal, the smaller reading of GB: files sized against it are valid whether Bedrock means
 * 10^9 or 2^30 bytes.
 */
export const BYTES_PER_QUOTA_GB = 1_000_000_000;

/** Documented defaults of current models, for use as the configured fallback when nothing better is set. */
export const DEFAULT_BATCH_QUOTAS: BatchQuotas = {
  minRecordsPerJob: 100,
  maxRecordsPerJob: 50_000,
  maxRecordsPerFile: 50_000,
  maxBytesPerFile: 1 * BYTES_PER_QUOTA_GB,
  maxBytesPerJob: 5 * BYTES_PER_QUOTA_GB,
  maxConcurrentJobs: 10,
};

/** Every limit of {@link BatchQuotas}, in a fixed order. */
export const BATCH_QUOTA_KEYS: readonly BatchQuotaKey[] = [
  'minRecordsPerJob',
  'maxRecordsPerJob',
  'maxRecordsPerFile',
  'maxBytesPerFile',
  'maxBytesPerJob',
  'maxConcurrentJobs',
];
