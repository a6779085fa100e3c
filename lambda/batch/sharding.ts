import { createHash } from 'node:crypto';
import { shardKeys } from '../shared/contracts';
import { assertBatchQuotas, type BatchQuotas } from './quotas';

/**
 * Batch mode (Bedrock batch inference) sharding: how many CreateModelInvocationJob calls a run needs, which records go
 * in which job and input file, and the deterministic names, tokens and S3 keys of each shard. Pure: no I/O.
 *
 * How Plan uses it (two passes, exact totals):
 * 1. First pass (already there): Plan streams the corpus and writes the items file. While doing so it counts the
 *    records to process and the bytes each will take in a shard file (the serialized batch line plus its newline),
 *    leaving out, with a failure line, any record {@link recordBatchProblem} rejects.
 * 2. {@link planShards} turns the exact totals into balanced per-shard record targets (and says how many records go
 *    through Converse when the quotas cannot be met for all of them).
 * 3. Second pass: Plan streams the items file again and asks a {@link ShardAssigner} where each record goes
 *    (`assign(bytes)` -> shard and file, or Converse). Records differ in size, so the assigner enforces the byte
 *    limits record by record: it starts a new file inside a shard when the file is full (records or bytes) and
 *    closes a shard early when the next record would push it over the job's byte limit, then spreads the records
 *    still to come over the shards still to come.
 */

/** Sharding was called with impossible numbers, or the records streamed do not match the declared totals. */
export class ShardingInputError extends Error {
  override readonly name = 'ShardingInputError';
}

/**
 * One record cannot go in any batch input file (larger than the per-file or per-job byte limit). The caller turns
 * it into a failure line with {@link RecordNotShardableError.code} and the message.
 */
export class RecordNotShardableError extends Error {
  override readonly name = 'RecordNotShardableError';
  /** Failure-line code. */
  readonly code = 'RecordTooLargeForBatch';
  /**
   * @param recordBytes the record's size in a shard file
   * @param limitBytes the limit it exceeds
   */
  constructor(
    message: string,
    readonly recordBytes: number,
    readonly limitBytes: number,
  ) {
    super(message);
  }
}

/** What a run's records become in batch mode. */
export interface ShardPlan {
  /** Number of batch jobs. */
  shards: number;
  /** Records per job, in shard order; each between the job minimum and maximum. */
  recordsPerShard: number[];
  /** Records that cannot go in a valid job and are processed through Converse instead. */
  viaConverse: number;
}

function assertCount(value: number, what: string, min = 0): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ShardingInputError(`${what} must be an integer >= ${min}, got ${String(value)}`);
  }
}

/**
 * Why a record of this size cannot go in a batch input file, or undefined when it can. Plan calls it in its first
 * pass so that rejected records stay out of the totals.
 * @param recordBytes the record's size in a shard file (serialized line plus newline)
 */
export function recordBatchProblem(
  recordBytes: number,
  quotas: BatchQuotas,
): RecordNotShardableError | undefined {
  const limit = Math.min(quotas.maxBytesPerFile, quotas.maxBytesPerJob);
  if (recordBytes <= limit) return undefined;
  const which = limit === quotas.maxBytesPerFile ? 'input file' : 'job';
  return new RecordNotShardableError(
    `The record takes ${recordBytes} bytes in a batch input file, more than the batch inference ${which} size limit of ${limit} bytes: it cannot be processed by a batch job`,
    recordBytes,
    limit,
  );
}

/** Records per shard when split as evenly as possible: the first `records % shards` get one more. */
function splitEvenly(records: number, shards: number): number[] {
  const base = Math.floor(records / shards);
  const extra = records % shards;
  return Array.from({ length: shards }, (_, i) => base + (i < extra ? 1 : 0));
}

/**
 * The core of {@link planShards}, with a preferred shard count so a re-plan mid-stream keeps its balance.
 * A job holds at most `cap` records, where cap is the record limit or, when records are large, the number of
 * average-sized records that fit in the job byte limit (whole records: this can take one shard more than
 * ceil(bytes / maxBytesPerJob)).
 */
function distribute(records: number, bytes: number, quotas: BatchQuotas, preferredShards: number): ShardPlan {
  if (records === 0) return { shards: 0, recordsPerShard: [], viaConverse: 0 };
  if (records < quotas.minRecordsPerJob) return { shards: 0, recordsPerShard: [], viaConverse: records };
  // floor(maxBytesPerJob / (bytes / records)) in exact integer arithmetic (the product passes 2^53 at scale).
  const fitByBytes =
    bytes === 0
      ? quotas.maxRecordsPerJob
      : Number((BigInt(quotas.maxBytesPerJob) * BigInt(records)) / BigInt(bytes));
  const cap = Math.min(quotas.maxRecordsPerJob, fitByBytes);
  // Records so large that a minimum-size job would not fit the byte limit: no valid job exists.
  if (cap < quotas.minRecordsPerJob) return { shards: 0, recordsPerShard: [], viaConverse: records };
  const needed = Math.ceil(records / cap);
  const mostWithMinimum = Math.floor(records / quotas.minRecordsPerJob);
  if (needed <= mostWithMinimum) {
    const shards = Math.min(Math.max(needed, preferredShards), mostWithMinimum);
    return { shards, recordsPerShard: splitEvenly(records, shards), viaConverse: 0 };
  }
  // Limits and minimum cannot all hold (the minimum is close to the cap): fill as many full jobs as keep the
  // minimum, which batches the most records, and send the rest through Converse.
  const shards = mostWithMinimum;
  return {
    shards,
    recordsPerShard: Array.from({ length: shards }, () => cap),
    viaConverse: records - shards * cap,
  };
}

/**
 * Plans the batch jobs of a run from its exact totals: as few jobs as the limits allow
 * (at least max(ceil(records / maxRecordsPerJob), ceil(bytes / maxBytesPerJob))), records spread evenly
 * (100,050 records with a 50,000 cap make three jobs of 33,350), none under the job minimum. Fewer records than the
 * minimum make no job: all go through Converse. When the limits force jobs under the minimum, it plans fewer, full
 * jobs and reports the records left over in `viaConverse`.
 * @param recordCount records to process
 * @param totalBytes their total size in shard files (serialized lines plus newlines)
 * @throws InvalidBatchQuotasError, ShardingInputError
 */
export function planShards(recordCount: number, totalBytes: number, quotas: BatchQuotas): ShardPlan {
  assertBatchQuotas(quotas);
  assertCount(recordCount, 'recordCount');
  assertCount(totalBytes, 'totalBytes');
  if (recordCount > 0 && totalBytes < recordCount) {
    throw new ShardingInputError(
      `totalBytes (${totalBytes}) is less than recordCount (${recordCount}): every record takes at least one byte (its newline)`,
    );
  }
  return distribute(recordCount, totalBytes, quotas, 0);
}

/**
 * Chooses the mode of a run with `auto`: batch when the records to process reach the threshold (default and floor:
 * the job minimum, below which no job can be created), Converse otherwise. Plan should still use Converse when
 * {@link planShards} plans no shard (records too large for the byte limits).
 */
export function autoMode(recordCount: number, quotas: BatchQuotas, threshold?: number): 'batch' | 'converse' {
  assertCount(recordCount, 'recordCount');
  if (threshold !== undefined) assertCount(threshold, 'threshold', 1);
  const floor = Math.max(threshold ?? quotas.minRecordsPerJob, quotas.minRecordsPerJob);
  return recordCount >= floor ? 'batch' : 'converse';
}

/** Where the {@link ShardAssigner} puts one record. */
export type ShardAssignment =
  | {
      mode: 'batch';
      /** 0-based shard (job) index. */
      shard: number;
      /** 0-based input file index within the shard. */
      file: number;
      /** First record of this shard: open its first file. */
      newShard: boolean;
      /** First record of this file: close the previous file of the shard, if any, and open this one. */
      newFile: boolean;
    }
  | {
      /**
       * The record goes through Converse: the shards are full. Always a tail of the stream: once a record goes to
       * Converse, every later one does too.
       */
      mode: 'converse';
    };

/** One input file of a shard, as written. */
export interface ShardFileSummary {
  file: number;
  records: number;
  bytes: number;
}

/** One shard (job), as written. */
export interface ShardSummary {
  shard: number;
  records: number;
  bytes: number;
  files: ShardFileSummary[];
}

/** The outcome of a second pass. */
export interface ShardingSummary {
  shards: ShardSummary[];
  /**
   * Records assigned to Converse: the plan's `viaConverse`, plus, when the byte limit closed shards early, any tail
   * too small for another valid job (fewer than the minimum, or limits close to the minimum).
   */
  viaConverse: number;
  /** Records rejected with {@link RecordNotShardableError}. */
  rejected: number;
  /**
   * Shards the byte limit closed under the job minimum. Never happens when minRecordsPerJob x the largest record
   * <= maxBytesPerJob, which always holds with real quotas (100 x 200 KiB records is far under 5 GB). The caller
   * must not submit these shards and processes their records through Converse instead.
   */
  underMinimum: number[];
}

/** What a {@link ShardAssigner} needs. */
export interface ShardAssignerOptions {
  quotas: BatchQuotas;
  /** Exact number of records the second pass will assign (or reject). */
  totalRecords: number;
  /** Exact total of their sizes. */
  totalBytes: number;
  /** The plan to follow; computed from the totals when omitted. */
  plan?: ShardPlan;
}

/**
 * Streams records into shards and files during Plan's second pass: call {@link assign} with each record's size in
 * order, then {@link finish}. Shards fill in order up to their record target; a new file starts when the next
 * record would pass maxRecordsPerFile or maxBytesPerFile; a shard closes early when the next record would pass
 * maxBytesPerJob, and the shards still to come are re-planned from the exact records and bytes still to come
 * (keeping their number where the limits allow, so they stay balanced).
 */
export class ShardAssigner {
  /** The plan the assigner started from. */
  readonly plan: ShardPlan;
  private readonly quotas: BatchQuotas;
  private readonly totalRecords: number;
  private readonly totalBytes: number;
  private readonly targets: number[];
  private readonly done: ShardSummary[] = [];
  private open: ShardSummary | undefined;
  private seenRecords = 0;
  private seenBytes = 0;
  private converse = 0;
  private rejected = 0;
  private finished = false;

  /** @throws InvalidBatchQuotasError, ShardingInputError (bad totals, or a plan that does not fit them) */
  constructor(options: ShardAssignerOptions) {
    this.quotas = options.quotas;
    this.totalRecords = options.totalRecords;
    this.totalBytes = options.totalBytes;
    const computed = planShards(options.totalRecords, options.totalBytes, options.quotas);
    const plan = options.plan ?? computed;
    const planned = plan.recordsPerShard.reduce((a, b) => a + b, 0);
    if (
      plan.shards !== plan.recordsPerShard.length ||
      planned + plan.viaConverse !== options.totalRecords ||
      plan.recordsPerShard.some(
        (n) =>
          !Number.isSafeInteger(n) ||
          n < options.quotas.minRecordsPerJob ||
          n > options.quotas.maxRecordsPerJob,
      )
    ) {
      throw new ShardingInputError(
        `The shard plan (${plan.shards} shards, ${planned} records + ${plan.viaConverse} via Converse) does not fit ${options.totalRecords} records and the job limits`,
      );
    }
    this.plan = { ...plan, recordsPerShard: [...plan.recordsPerShard] };
    this.targets = [...plan.recordsPerShard];
  }

  /** Current record targets per shard (shards already closed hold their actual counts). */
  get currentTargets(): readonly number[] {
    return this.targets;
  }

  /**
   * Places the next record.
   * @param recordBytes its size in a shard file (serialized line plus newline), as counted in the totals
   * @throws RecordNotShardableError when the record fits no input file (it is left out and the targets adjusted:
   *   record a failure and carry on); ShardingInputError when the stream passes the declared totals
   */
  assign(recordBytes: number): ShardAssignment {
    if (this.finished) throw new ShardingInputError('assign() called after finish()');
    assertCount(recordBytes, 'recordBytes', 1);
    if (this.seenRecords + 1 > this.totalRecords || this.seenBytes + recordBytes > this.totalBytes) {
      throw new ShardingInputError(
        `More records or bytes than declared: record ${this.seenRecords + 1} of ${recordBytes} bytes after ${this.seenBytes} of ${this.totalBytes} bytes (${this.totalRecords} records declared)`,
      );
    }
    const problem = recordBatchProblem(recordBytes, this.quotas);
    if (problem) {
      this.consume(recordBytes);
      this.rejected++;
      this.replan();
      throw problem;
    }

    if (this.open && this.open.records >= (this.targets[this.open.shard] ?? 0)) this.close();
    if (this.open && this.open.bytes + recordBytes > this.quotas.maxBytesPerJob) {
      this.targets[this.open.shard] = this.open.records;
      this.close();
      this.replan();
    }

    let newShard = false;
    if (!this.open) {
      const next = this.done.length;
      if (next >= this.targets.length) {
        this.consume(recordBytes);
        this.converse++;
        return { mode: 'converse' };
      }
      this.open = { shard: next, records: 0, bytes: 0, files: [] };
      newShard = true;
    }
    const shard = this.open;
    let file = shard.files[shard.files.length - 1];
    let newFile = false;
    if (
      !file ||
      file.records + 1 > this.quotas.maxRecordsPerFile ||
      file.bytes + recordBytes > this.quotas.maxBytesPerFile
    ) {
      file = { file: shard.files.length, records: 0, bytes: 0 };
      shard.files.push(file);
      newFile = true;
    }
    file.records++;
    file.bytes += recordBytes;
    shard.records++;
    shard.bytes += recordBytes;
    this.consume(recordBytes);
    return { mode: 'batch', shard: shard.shard, file: file.file, newShard, newFile };
  }

  /**
   * Ends the stream and reports what was written.
   * @throws ShardingInputError when fewer records or bytes came than declared
   */
  finish(): ShardingSummary {
    if (this.seenRecords !== this.totalRecords || this.seenBytes !== this.totalBytes) {
      throw new ShardingInputError(
        `The stream ended after ${this.seenRecords} records and ${this.seenBytes} bytes; ${this.totalRecords} records and ${this.totalBytes} bytes were declared`,
      );
    }
    if (this.open) this.close();
    this.finished = true;
    return {
      shards: this.done.map((s) => ({ ...s, files: s.files.map((f) => ({ ...f })) })),
      viaConverse: this.converse,
      rejected: this.rejected,
      underMinimum: this.done.filter((s) => s.records < this.quotas.minRecordsPerJob).map((s) => s.shard),
    };
  }

  private consume(recordBytes: number): void {
    this.seenRecords++;
    this.seenBytes += recordBytes;
  }

  private close(): void {
    if (!this.open) return;
    this.done.push(this.open);
    this.open = undefined;
  }

  /**
   * Re-plans the shards not yet started from the records and bytes still to come, after anything the plan did not
   * foresee (an early close, a rejected record). The open shard keeps its target, capped by what is left; later
   * shards keep their count where the limits and the minimum allow.
   */
  private replan(): void {
    const remainingRecords = this.totalRecords - this.seenRecords;
    const remainingBytes = this.totalBytes - this.seenBytes;
    let stillOpenNeeds = 0;
    let firstFuture = this.done.length;
    if (this.open) {
      const target = this.targets[this.open.shard] ?? this.open.records;
      stillOpenNeeds = Math.min(target - this.open.records, remainingRecords);
      this.targets[this.open.shard] = this.open.records + stillOpenNeeds;
      firstFuture = this.open.shard + 1;
    }
    const pool = remainingRecords - stillOpenNeeds;
    // Bytes of the records the open shard will still take are unknown in advance: assume average-sized ones.
    const poolBytes = remainingRecords === 0 ? 0 : Math.round((remainingBytes * pool) / remainingRecords);
    const preferred = Math.max(0, this.targets.length - firstFuture);
    const future = distribute(pool, Math.max(poolBytes, pool), this.quotas, preferred);
    this.targets.splice(firstFuture, this.targets.length - firstFuture, ...future.recordsPerShard);
  }
}

/** CreateModelInvocationJob's clientRequestToken pattern (the API also limits its length to 256). */
export const CLIENT_REQUEST_TOKEN_PATTERN = /^[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}$/;
/** CreateModelInvocationJob's jobName pattern (the API also limits its length to 63). */
export const JOB_NAME_PATTERN = /^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9+\-.]){0,63}$/;

function assertRunAndShard(runId: string, shard: number, attempt = 0): void {
  if (typeof runId !== 'string' || runId.length === 0)
    throw new ShardingInputError('runId must be non-empty');
  assertCount(shard, 'shard');
  assertCount(attempt, 'attempt');
}

/** runId reduced to letters, digits and single hyphens (for readability only: uniqueness comes from a hash). */
function slug(runId: string): string {
  return runId.replace(/[^a-zA-Z0-9]+/g, '-').replace(/^-+|-+$/g, '');
}

function digest(runId: string, shard: number, attempt: number): string {
  return createHash('sha256')
    .update(JSON.stringify([runId, shard, attempt]))
    .digest('hex');
}

/** The S3 prefix holding a shard's input files (the job's inputDataConfig s3Uri). */
export function shardInputPrefix(runId: string, shard: number): string {
  assertRunAndShard(runId, shard);
  return shardKeys.inputPrefix(runId, shard);
}

/** The S3 key of one input file of a shard: `runs/<runId>/shards/<shard>/input/part-<file>.jsonl`. */
export function shardFileKey(runId: string, shard: number, file: number): string {
  assertCount(file, 'file');
  assertRunAndShard(runId, shard);
  return shardKeys.inputFile(runId, shard, file);
}

/**
 * The S3 prefix a shard's job writes to (outputDataConfig s3Uri); Bedrock adds `<jobId>/`. Kept outside the input
 * prefix so output files are never read as input.
 */
export function shardOutputPrefix(runId: string, shard: number): string {
  assertRunAndShard(runId, shard);
  return shardKeys.outputPrefix(runId, shard);
}

/**
 * The clientRequestToken of a shard's CreateModelInvocationJob: deterministic, so a retried submit returns the same
 * job instead of starting a second one, and different for every run, shard and attempt (a deliberate resubmission
 * after a failed job passes `attempt` > 0). Matches `[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}`, at most 256 chars.
 */
export function clientRequestToken(runId: string, shard: number, attempt = 0): string {
  assertRunAndShard(runId, shard, attempt);
  const readable = slug(runId).slice(0, 64).replace(/-+$/, '');
  const suffix = `s${shard}${attempt > 0 ? `-a${attempt}` : ''}-${digest(runId, shard, attempt).slice(0, 32)}`;
  const token = readable ? `${readable}-${suffix}` : suffix;
  if (token.length > 256 || !CLIENT_REQUEST_TOKEN_PATTERN.test(token)) {
    throw new ShardingInputError(
      `Cannot build a valid clientRequestToken for shard ${shard} of run ${runId}`,
    );
  }
  return token;
}

/**
 * The jobName of a shard's job: `<prefix>-<runId, shortened>-s<shard>[-a<attempt>]-<hash>`, at most 63 chars,
 * matching `[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}`; deterministic and unique per run, shard and attempt
 * (job names must be unique in the account and Region).
 * @param prefix letters, digits and hyphens, at most 20 chars
 */
export function jobName(runId: string, shard: number, attempt = 0, prefix = 'corpus'): string {
  assertRunAndShard(runId, shard, attempt);
  if (!/^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,18}[a-zA-Z0-9])?$/.test(prefix)) {
    throw new ShardingInputError(
      `jobName prefix ${JSON.stringify(prefix)} must be 1 to 20 letters, digits and inner hyphens`,
    );
  }
  const suffix = `-s${shard}${attempt > 0 ? `-a${attempt}` : ''}-${digest(runId, shard, attempt).slice(0, 12)}`;
  const room = 63 - prefix.length - 1 - suffix.length;
  const readable = room > 0 ? slug(runId).slice(0, room).replace(/-+$/, '') : '';
  const name = readable ? `${prefix}-${readable}${suffix}` : `${prefix}${suffix}`;
  if (name.length > 63 || !JOB_NAME_PATTERN.test(name)) {
    throw new ShardingInputError(`Cannot build a valid jobName for shard ${shard} of run ${runId}`);
  }
  return name;
}
