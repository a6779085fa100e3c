/** Every status a batch inference job can have (the SDK's `ModelInvocationJobStatus`). */
export const BATCH_JOB_STATUSES = [
  'Submitted',
  'Validating',
  'Scheduled',
  'InProgress',
  'Completed',
  'PartiallyCompleted',
  'Failed',
  'Stopping',
  'Stopped',
  'Expired',
] as const;

/** A batch inference job status. */
export type BatchJobStatus = (typeof BATCH_JOB_STATUSES)[number];

/** Statuses a job never leaves. */
export const TERMINAL_STATUSES: ReadonlySet<BatchJobStatus> = new Set<BatchJobStatus>([
  'Completed',
  'PartiallyCompleted',
  'Failed',
  'Stopped',
  'Expired',
]);

/** Statuses StopModelInvocationJob accepts (a Stopping job accepts it again as a no-op). */
export const STOPPABLE_STATUSES: ReadonlySet<BatchJobStatus> = new Set<BatchJobStatus>([
  'Submitted',
  'Validating',
  'Scheduled',
  'InProgress',
]);

/** True for a status a job never leaves. */
export function isTerminalStatus(status: BatchJobStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

/** True when `value` names a job status. */
export function isBatchJobStatus(value: unknown): value is BatchJobStatus {
  return typeof value === 'string' && (BATCH_JOB_STATUSES as readonly string[]).includes(value);
}

/** How the job's records are written: native InvokeModel bodies or Converse request bodies. */
export type BatchInvocationType = 'InvokeModel' | 'Converse';

/** Per-model batch inference limits, each one a Bedrock service quota. */
export interface BatchLimits {
  /** "Minimum number of records per batch inference job" (100 on current models, 1,000 on older ones). */
  readonly minRecordsPerJob: number;
  /** "Records per batch inference job". */
  readonly maxRecordsPerJob: number;
  /** "Records per input file per batch inference job". */
  readonly maxRecordsPerFile: number;
  /** "Batch inference input file size (in GB)", in bytes. */
  readonly maxBytesPerFile: number;
  /** "Batch inference job size (in GB)", in bytes. */
  readonly maxBytesPerJob: number;
  /** "Sum of in-progress and submitted batch inference jobs using a base model": jobs not yet ended, per model. */
  readonly maxConcurrentJobs: number;
}

/** The default limits (current models in us-east-1). */
export const DEFAULT_BATCH_LIMITS: BatchLimits = {
  minRecordsPerJob: 100,
  maxRecordsPerJob: 50_000,
  maxRecordsPerFile: 50_000,
  maxBytesPerFile: 1024 ** 3,
  maxBytesPerJob: 5 * 1024 ** 3,
  maxConcurrentJobs: 10,
};

/** Limit configuration: a default for every model plus overrides by foundation model id. */
export interface BatchLimitOptions {
  /** Applies to models without an override. */
  readonly default?: Partial<BatchLimits>;
  /** Overrides keyed by foundation model id (inference profiles share their model's limits). */
  readonly models?: Readonly<Record<string, Partial<BatchLimits>>>;
}

/**
 * Checks a limit configuration: every value a positive integer.
 * @throws RangeError naming the bad entry
 */
export function checkBatchLimitOptions(options: BatchLimitOptions): void {
  const entries = [['default', options.default], ...Object.entries(options.models ?? {})] as const;
  for (const [name, limits] of entries) {
    for (const [key, value] of Object.entries(limits ?? {})) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
        throw new RangeError(`batch limit ${name}.${key} must be a positive integer, got ${String(value)}`);
      }
    }
  }
}

/** The effective limits of one foundation model. */
export function batchLimitsFor(options: BatchLimitOptions, modelId: string): BatchLimits {
  return { ...DEFAULT_BATCH_LIMITS, ...options.default, ...options.models?.[modelId] };
}
