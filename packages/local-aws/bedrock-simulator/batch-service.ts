import { randomBytes } from 'node:crypto';

import { S3Client } from '@aws-sdk/client-s3';

import { systemClock, type BatchClock, type CancelTimer } from './batch-clock';
import { BatchJobFailure, BatchServiceError } from './batch-errors';
import {
  buildStateChangeEvent,
  type BatchJobEventListener,
  type BatchJobStateChangeEvent,
} from './batch-events';
import { BatchFaultInjector, INJECTED_JOB_FAILURE_MESSAGE, type BatchFaultOptions } from './batch-faults';
import {
  countRecords,
  joinKey,
  listInputFiles,
  parseS3Uri,
  putJson,
  readInputLines,
  ShuffledJsonlWriter,
  type BatchInputFile,
} from './batch-io';
import { generatedRecordId, processBatchRecord } from './batch-records';
import {
  batchLimitsFor,
  checkBatchLimitOptions,
  isTerminalStatus,
  STOPPABLE_STATUSES,
  type BatchInvocationType,
  type BatchJobStatus,
  type BatchLimitOptions,
  type BatchLimits,
} from './batch-status';
import {
  parseJobIdentifier,
  parseListJobsQuery,
  validateCreateJobRequest,
  type BatchS3InputConfig,
  type BatchS3OutputConfig,
  type BatchVpcConfig,
  type CreateJobInput,
} from './batch-validation';
import { mulberry32, type OutputLengthOptions } from './engine';
import { FaultInjector } from './faults';
import {
  getFoundationModel,
  getFoundationModelAvailability,
  getInferenceProfile,
  type ModelAccessAnswer,
  type ModelControlContext,
} from './model-control';
import { ModelTable, type ModelSpec, type ResolvedModel } from './models';

/** Phases whose length is simulated (the others last as long as their work). */
export type BatchPhase = 'submitted' | 'validating' | 'scheduled' | 'stopping';

/** Behaviour of the batch control plane. */
export interface BatchServiceOptions {
  /** Region in job ARNs and events. @default 'us-east-1' */
  readonly region?: string;
  /** Account in job ARNs and events. @default '000000000000' */
  readonly accountId?: string;
  /** Per-model batch limits (record counts, sizes, concurrent jobs). */
  readonly limits?: BatchLimitOptions;
  /** How long a job stays in each simulated phase, in ms (one number for all). @default 5 */
  readonly phaseMs?: number | Partial<Record<BatchPhase, number>>;
  /** Processing time per record, in ms. @default 0 */
  readonly recordMs?: number;
  /** How many ms one hour of timeoutDurationInHours lasts (shrink it to see timeouts locally). @default 3600000 */
  readonly hourMs?: number;
  /** timeoutDurationInHours of a job that sets none. @default 168 */
  readonly defaultTimeoutHours?: number;
  /** Lines held to shuffle each output file (larger files are shuffled within this window). @default 1024 */
  readonly shuffleWindow?: number;
  /** Initial batch faults (change them later with configureFaults). */
  readonly faults?: BatchFaultOptions;
  /** Clock and timers. @default the system clock */
  readonly clock?: BatchClock;
  /**
   * Which existing jobs a new job's name must differ from (ConflictException otherwise): every job, jobs not
   * yet ended, or none. @default 'all'
   */
  readonly uniqueJobNames?: 'all' | 'active' | 'none';
  /** End a job PartiallyCompleted (not Completed) when some records got error lines. @default false */
  readonly partialWhenRecordErrors?: boolean;
  /**
   * What GetFoundationModelAvailability answers per foundation model id, over "everything available" (to simulate
   * model access not enabled).
   */
  readonly modelAccess?: Readonly<Record<string, Partial<ModelAccessAnswer>>>;
}

/** What the control plane shares with the rest of the simulator. */
export interface BatchServiceDeps {
  /** The model table (the runtime's, so both sides know the same models). */
  readonly models: ModelTable;
  /** The runtime's fault injector, for the reject marker. */
  readonly faults?: FaultInjector;
  /** Where inputs are read and outputs written. @default an S3Client configured from the environment */
  readonly s3Client?: S3Client;
  /** Receives every state-change event, in order. */
  readonly onEvent?: BatchJobEventListener;
  /** Answer length range (the runtime's, so batch answers equal Converse answers). */
  readonly outputLength?: OutputLengthOptions;
}

/** Record counters of a job. */
export interface BatchJobCounts {
  /** Records in the input, once validation has counted them. */
  total?: number;
  processed: number;
  success: number;
  error: number;
  inputTokens: number;
  outputTokens: number;
}

/** The manifest.json.out Bedrock writes beside the output files. */
export interface BatchManifest {
  readonly totalRecordCount: number;
  readonly processedRecordCount: number;
  readonly successRecordCount: number;
  readonly errorRecordCount: number;
  readonly inputTokenCount: number;
  readonly outputTokenCount: number;
}

/** The job description GetModelInvocationJob returns (and each ListModelInvocationJobs summary). */
export interface BatchJobDescription {
  jobArn: string;
  jobName: string;
  modelId: string;
  clientRequestToken?: string;
  roleArn: string;
  status: BatchJobStatus;
  message?: string;
  submitTime: string;
  lastModifiedTime: string;
  endTime?: string;
  inputDataConfig: { s3InputDataConfig: BatchS3InputConfig };
  outputDataConfig: { s3OutputDataConfig: BatchS3OutputConfig };
  vpcConfig?: BatchVpcConfig;
  timeoutDurationInHours: number;
  jobExpirationTime: string;
  modelInvocationType: BatchInvocationType;
  totalRecordCount?: number;
  processedRecordCount?: number;
  successRecordCount?: number;
  errorRecordCount?: number;
}

/** Counters of the state-change event delivery. */
export interface BatchEventStats {
  /** Status changes that produced an event. */
  emitted: number;
  /** Events handed to the listener (duplicates count twice). */
  delivered: number;
  /** Events dropped by the dropEvents fault. */
  dropped: number;
  /** Extra deliveries made by the duplicateEvents fault. */
  duplicated: number;
  /** Deliveries whose listener threw or rejected (logged). */
  listenerErrors: number;
}

type Interrupt = 'stop' | 'expire';

interface JobRecord {
  readonly jobId: string;
  readonly jobArn: string;
  readonly input: CreateJobInput;
  readonly model: ModelSpec;
  readonly modelArn: string;
  readonly fingerprint: string;
  readonly seq: number;
  readonly submitTime: number;
  readonly timeoutHours: number;
  readonly expiresAt: number;
  readonly failByFault: boolean;
  status: BatchJobStatus;
  message?: string;
  lastModifiedTime: number;
  endTime?: number;
  counts: BatchJobCounts;
  interrupt?: Interrupt;
  wake?: () => void;
  cancelExpiry?: CancelTimer;
  done: Promise<void>;
}

/** Statuses counted against the concurrent-jobs quota. */
function isActive(status: BatchJobStatus): boolean {
  return !isTerminalStatus(status);
}

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

function newJobId(): string {
  const bytes = randomBytes(12);
  let id = '';
  for (const byte of bytes) id += ID_ALPHABET[byte % ID_ALPHABET.length];
  return id;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/**
 * The Bedrock batch inference control plane without a transport: CreateModelInvocationJob,
 * GetModelInvocationJob, ListModelInvocationJobs and StopModelInvocationJob, and the job lifecycle
 * (Submitted -> Validating -> Scheduled -> InProgress -> Completed | PartiallyCompleted | Failed, Stopping ->
 * Stopped, Expired) with output files, manifest and state-change events. Records are answered by the same
 * validation and deterministic model as Converse/InvokeModel.
 */
export class BatchJobService {
  /** Batch faults. */
  readonly faults: BatchFaultInjector;
  /** Event delivery counters. */
  readonly eventStats: BatchEventStats = {
    emitted: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    listenerErrors: 0,
  };
  private readonly models: ModelTable;
  private readonly runtimeFaults: FaultInjector;
  private readonly clock: BatchClock;
  private readonly region: string;
  private readonly accountId: string;
  private readonly phases: Record<BatchPhase, number>;
  private readonly jobs = new Map<string, JobRecord>();
  private readonly byToken = new Map<string, string>();
  private s3?: S3Client;
  private readonly ownsS3: boolean;
  private delivery: Promise<void> = Promise.resolve();
  private readonly closeWakers = new Set<() => void>();
  private seq = 0;
  private closed = false;

  /**
   * @param options behaviour
   * @param deps what it shares with the runtime side
   */
  constructor(
    private readonly options: BatchServiceOptions,
    private readonly deps: BatchServiceDeps,
  ) {
    checkBatchLimitOptions(options.limits ?? {});
    for (const key of ['recordMs', 'hourMs', 'shuffleWindow', 'defaultTimeoutHours'] as const) {
      const value = options[key];
      if (value !== undefined && !(value >= 0))
        throw new RangeError(`batch ${key} must be >= 0, got ${value}`);
    }
    const phase = options.phaseMs ?? 5;
    const base = typeof phase === 'number' ? phase : 5;
    this.phases = { submitted: base, validating: base, scheduled: base, stopping: base };
    if (typeof phase !== 'number') Object.assign(this.phases, phase);
    for (const [name, ms] of Object.entries(this.phases)) {
      if (!(ms >= 0)) throw new RangeError(`batch phaseMs.${name} must be >= 0, got ${ms}`);
    }
    this.models = deps.models;
    this.runtimeFaults = deps.faults ?? new FaultInjector();
    this.clock = options.clock ?? systemClock();
    this.region = options.region ?? 'us-east-1';
    this.accountId = options.accountId ?? '000000000000';
    this.faults = new BatchFaultInjector(options.faults);
    this.s3 = deps.s3Client;
    this.ownsS3 = deps.s3Client === undefined;
  }

  /** Replaces every batch fault setting and reseeds the batch fault PRNGs. */
  configureFaults(faults: BatchFaultOptions): void {
    this.faults.configure(faults);
  }

  /** The effective limits of a model (by foundation model id). */
  limitsFor(modelId: string): BatchLimits {
    return batchLimitsFor(this.options.limits ?? {}, modelId);
  }

  // ---------------------------------------------------------------- API operations

  /**
   * CreateModelInvocationJob.
   * @param body the parsed JSON request body
   * @returns the job ARN (the existing job's when the clientRequestToken was seen before)
   * @throws BatchServiceError ValidationException, ConflictException, ServiceQuotaExceededException
   */
  create(body: unknown): { jobArn: string } {
    this.assertOpen();
    const input = validateCreateJobRequest(body, this.models);
    const fingerprint = JSON.stringify({ ...input, clientRequestToken: undefined, model: undefined });
    if (input.clientRequestToken !== undefined) {
      const existing = this.jobs.get(this.byToken.get(input.clientRequestToken) ?? '');
      if (existing) {
        if (existing.fingerprint === fingerprint) return { jobArn: existing.jobArn };
        throw new BatchServiceError(
          'ConflictException',
          `The clientRequestToken '${input.clientRequestToken}' was already used to create job ${existing.jobArn} with different parameters. Use a new token for a different request.`,
        );
      }
    }
    const uniqueness = this.options.uniqueJobNames ?? 'all';
    if (uniqueness !== 'none') {
      for (const job of this.jobs.values()) {
        if (job.input.jobName !== input.jobName) continue;
        if (uniqueness === 'active' && !isActive(job.status)) continue;
        throw new BatchServiceError(
          'ConflictException',
          `A batch inference job named '${input.jobName}' already exists (${job.jobArn}, ${job.status}). Job names must be unique; use a different jobName.`,
        );
      }
    }
    const model = input.model.spec;
    const limit = this.limitsFor(model.modelId).maxConcurrentJobs;
    const active = [...this.jobs.values()].filter(
      (j) => j.model.modelId === model.modelId && isActive(j.status),
    );
    if (active.length >= limit) {
      throw new BatchServiceError(
        'ServiceQuotaExceededException',
        `You have reached the service quota 'Sum of in-progress and submitted batch inference jobs using a base model for ${model.modelId}' (${limit}): ${active.length} jobs are submitted or in progress. Wait for a job to end, or stop one, and try again.`,
      );
    }

    const jobId = this.uniqueJobId();
    const now = this.clock.now();
    const timeoutHours = input.timeoutDurationInHours ?? this.options.defaultTimeoutHours ?? 168;
    const hourMs = this.options.hourMs ?? 3_600_000;
    const job: JobRecord = {
      jobId,
      jobArn: `arn:aws:bedrock:${this.region}:${this.accountId}:model-invocation-job/${jobId}`,
      input,
      model,
      modelArn: this.modelArn(input.model),
      fingerprint,
      seq: (this.seq += 1),
      submitTime: now,
      timeoutHours,
      expiresAt: now + timeoutHours * hourMs,
      failByFault: this.faults.takeJobFailure(),
      status: 'Submitted',
      lastModifiedTime: now,
      counts: { processed: 0, success: 0, error: 0, inputTokens: 0, outputTokens: 0 },
      done: Promise.resolve(),
    };
    this.jobs.set(jobId, job);
    if (input.clientRequestToken !== undefined) this.byToken.set(input.clientRequestToken, jobId);
    this.emit(job);
    job.cancelExpiry = this.clock.schedule(timeoutHours * hourMs, () => this.expire(job));
    job.done = this.run(job);
    return { jobArn: job.jobArn };
  }

  /**
   * GetModelInvocationJob.
   * @param identifier job id or job ARN (URL-decoded)
   * @throws BatchServiceError ValidationException, ResourceNotFoundException
   */
  /** The model questions' context: the shared model table, Region, account and access answers. */
  private get modelControl(): ModelControlContext {
    return {
      models: this.models,
      region: this.region,
      accountId: this.accountId,
      ...(this.options.modelAccess ? { access: this.options.modelAccess } : {}),
    };
  }

  /**
   * GetFoundationModel.
   * @throws BatchServiceError ValidationException (unknown id), ResourceNotFoundException (end of life)
   */
  foundationModel(identifier: string): Record<string, unknown> {
    return getFoundationModel(this.modelControl, identifier);
  }

  /**
   * GetInferenceProfile (system-defined profiles of the table's models).
   * @throws BatchServiceError ResourceNotFoundException
   */
  inferenceProfile(identifier: string): Record<string, unknown> {
    return getInferenceProfile(this.modelControl, identifier);
  }

  /**
   * GetFoundationModelAvailability.
   * @throws BatchServiceError ValidationException (unknown id), ResourceNotFoundException (end of life)
   */
  foundationModelAvailability(identifier: string): Record<string, unknown> {
    return getFoundationModelAvailability(this.modelControl, identifier);
  }

  get(identifier: string): BatchJobDescription {
    return this.describe(this.find(identifier));
  }

  /**
   * ListModelInvocationJobs.
   * @param query the request's query string
   * @throws BatchServiceError ValidationException
   */
  list(query: URLSearchParams): { invocationJobSummaries: BatchJobDescription[]; nextToken?: string } {
    const q = parseListJobsQuery(query);
    const matches = [...this.jobs.values()]
      .filter((j) => q.statusEquals === undefined || j.status === q.statusEquals)
      .filter((j) => q.nameContains === undefined || j.input.jobName.includes(q.nameContains))
      .filter((j) => q.submitTimeAfter === undefined || j.submitTime > q.submitTimeAfter)
      .filter((j) => q.submitTimeBefore === undefined || j.submitTime < q.submitTimeBefore)
      .sort((a, b) => a.submitTime - b.submitTime || a.seq - b.seq);
    if (q.sortOrder === 'Descending') matches.reverse();
    let offset = 0;
    if (q.nextToken !== undefined) {
      const decoded = /^o(\d+)$/.exec(Buffer.from(q.nextToken, 'base64url').toString('utf8'));
      if (!decoded) {
        throw new BatchServiceError('ValidationException', `The nextToken '${q.nextToken}' is not valid.`);
      }
      offset = Number(decoded[1]);
    }
    const page = matches.slice(offset, offset + q.maxResults).map((j) => this.describe(j));
    const next = offset + q.maxResults;
    return {
      invocationJobSummaries: page,
      ...(next < matches.length ? { nextToken: Buffer.from(`o${next}`).toString('base64url') } : {}),
    };
  }

  /**
   * StopModelInvocationJob: the job goes Stopping, then Stopped (an InProgress job first writes the output of
   * the records it processed, and its manifest).
   * @param identifier job id or job ARN (URL-decoded)
   * @throws BatchServiceError ValidationException (job already ended), ResourceNotFoundException
   */
  stop(identifier: string): void {
    const job = this.find(identifier);
    if (job.status === 'Stopping') return;
    if (!STOPPABLE_STATUSES.has(job.status)) {
      throw new BatchServiceError(
        'ValidationException',
        `The batch inference job ${job.jobArn} is ${job.status} and can't be stopped. Only jobs that are Submitted, Validating, Scheduled or InProgress can be stopped.`,
      );
    }
    job.interrupt = 'stop';
    this.transition(job, 'Stopping');
    job.wake?.();
  }

  // ---------------------------------------------------------------- inspection for tests and the local runtime

  /** Waits until the job has reached a final status (and its output is written). */
  async settled(identifier: string): Promise<BatchJobDescription> {
    const job = this.find(identifier);
    await job.done;
    return this.describe(job);
  }

  /** Waits until every event emitted so far has been delivered to the listener. */
  async eventsDelivered(): Promise<void> {
    let current: Promise<void>;
    do {
      current = this.delivery;
      await current;
    } while (current !== this.delivery);
  }

  /** Every job, oldest first. */
  describeAll(): BatchJobDescription[] {
    return [...this.jobs.values()].sort((a, b) => a.seq - b.seq).map((j) => this.describe(j));
  }

  /**
   * Stops every lifecycle where it is (no further status changes or events), waits for in-flight work and
   * event deliveries, and destroys the S3 client if the service created it.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.jobs.values()) {
      job.cancelExpiry?.();
      job.wake?.();
    }
    for (const wake of [...this.closeWakers]) wake();
    await Promise.all([...this.jobs.values()].map((j) => j.done));
    await this.eventsDelivered();
    if (this.ownsS3) this.s3?.destroy();
  }

  // ---------------------------------------------------------------- lifecycle

  private async run(job: JobRecord): Promise<void> {
    try {
      if (!(await this.sleep(job, this.phases.submitted))) return await this.interrupted(job);
      this.transition(job, 'Validating');
      if (!(await this.sleep(job, this.phases.validating))) return await this.interrupted(job);
      let files: BatchInputFile[];
      try {
        files = await this.validateInput(job);
      } catch (err) {
        if (!(err instanceof BatchJobFailure)) throw err;
        if (this.closed) return;
        if (job.interrupt) return await this.interrupted(job);
        return this.finish(job, 'Failed', err.message);
      }
      if (this.closed) return;
      if (job.interrupt) return await this.interrupted(job);
      this.transition(job, 'Scheduled');
      if (!(await this.sleep(job, this.phases.scheduled))) return await this.interrupted(job);
      this.transition(job, 'InProgress');
      if (job.failByFault) return this.finish(job, 'Failed', INJECTED_JOB_FAILURE_MESSAGE);
      const skipped = await this.process(job, files);
      if (this.closed) return;
      this.finishProcessing(job, skipped);
    } catch (err) {
      if (this.closed) return;
      if (err instanceof BatchJobFailure) return this.finish(job, 'Failed', err.message);
      console.error(`bedrock-simulator: batch job ${job.jobArn} failed on a simulator error`, err);
      this.finish(job, 'Failed', `Simulator internal error: ${describe(err)}`);
    }
  }

  /** Ends a job that was stopped or timed out before it reached InProgress. */
  private async interrupted(job: JobRecord): Promise<void> {
    if (this.closed) return;
    if (job.interrupt === 'stop') {
      await this.plainSleep(this.phases.stopping);
      if (this.closed) return;
      this.finish(job, 'Stopped');
    } else {
      this.finish(
        job,
        'Expired',
        `The batch inference job timed out: it did not start within its timeout of ${job.timeoutHours} hours. Submit a new job.`,
      );
    }
  }

  private finishProcessing(job: JobRecord, skipped: number): void {
    const { counts } = job;
    if (job.interrupt === 'stop') return this.finish(job, 'Stopped');
    if (job.interrupt === 'expire') {
      return this.finish(
        job,
        'PartiallyCompleted',
        `The batch inference job reached its timeout of ${job.timeoutHours} hours before every record was processed: ${counts.processed} of ${counts.total ?? 0} records were processed.`,
      );
    }
    if (skipped > 0) {
      return this.finish(
        job,
        'PartiallyCompleted',
        `Not all records could be processed: ${skipped} of ${counts.total ?? 0} records have no output (simulated fault partialJob).`,
      );
    }
    if (counts.error > 0 && this.options.partialWhenRecordErrors) {
      return this.finish(
        job,
        'PartiallyCompleted',
        `${counts.error} of ${counts.total ?? 0} records failed; see the error lines in the output files.`,
      );
    }
    this.finish(job, 'Completed');
  }

  private expire(job: JobRecord): void {
    if (this.closed || !STOPPABLE_STATUSES.has(job.status) || job.interrupt) return;
    job.interrupt = 'expire';
    job.wake?.();
  }

  /** Reads the input location and checks it against the model's limits; returns the input files. */
  private async validateInput(job: JobRecord): Promise<BatchInputFile[]> {
    const s3 = this.s3Client();
    const uri = job.input.inputDataConfig.s3InputDataConfig.s3Uri;
    const limits = this.limitsFor(job.model.modelId);
    const model = job.model.modelId;
    const files = await listInputFiles(s3, uri);
    let bytes = 0;
    for (const file of files) {
      bytes += file.size;
      if (file.size > limits.maxBytesPerFile) {
        throw new BatchJobFailure(
          `The input file ${file.name} is ${file.size} bytes, more than the quota 'Batch inference input file size (in GB)' for ${model} allows (${limits.maxBytesPerFile} bytes).`,
        );
      }
    }
    if (bytes > limits.maxBytesPerJob) {
      throw new BatchJobFailure(
        `The job's input files hold ${bytes} bytes, more than the quota 'Batch inference job size (in GB)' for ${model} allows (${limits.maxBytesPerJob} bytes).`,
      );
    }
    let total = 0;
    for (const file of files) {
      const records = await countRecords(s3, file);
      if (records > limits.maxRecordsPerFile) {
        throw new BatchJobFailure(
          `The input file ${file.name} has ${records} records, more than the quota 'Records per input file per batch inference job for ${model}' allows (${limits.maxRecordsPerFile}).`,
        );
      }
      total += records;
    }
    if (total > limits.maxRecordsPerJob) {
      throw new BatchJobFailure(
        `The job has ${total} records, more than the quota 'Records per batch inference job for ${model}' allows (${limits.maxRecordsPerJob}).`,
      );
    }
    if (total < limits.minRecordsPerJob) {
      throw new BatchJobFailure(
        `The job has ${total} records, fewer than the quota 'Minimum number of records per batch inference job for ${model}' requires (${limits.minRecordsPerJob}). Add records or process them with on-demand inference.`,
      );
    }
    job.counts.total = total;
    return files;
  }

  /**
   * Answers every record, writing one shuffled `.out` file per input file, then the manifest. Stops early
   * (keeping what it wrote) when the job is stopped or times out. Returns how many records the partialJob
   * fault left without output.
   */
  private async process(job: JobRecord, files: readonly BatchInputFile[]): Promise<number> {
    const s3 = this.s3Client();
    const out = parseS3Uri(job.input.outputDataConfig.s3OutputDataConfig.s3Uri);
    const shuffle = mulberry32(Number.parseInt(job.jobId.slice(0, 8), 36) >>> 0);
    const window = Math.max(1, this.options.shuffleWindow ?? 1024);
    const { counts } = job;
    let skipped = 0;
    for (const file of files) {
      if (job.interrupt || this.closed) break;
      const writer = new ShuffledJsonlWriter(
        s3,
        { bucket: out.bucket, key: joinKey(out.key, job.jobId, `${file.name}.out`) },
        window,
        shuffle,
      );
      try {
        skipped += await this.processFile(job, file, writer);
      } catch (err) {
        writer.abort();
        throw err;
      }
      if (this.closed) {
        writer.abort();
        return skipped;
      }
      await writer.close();
    }
    if (this.closed) return skipped;
    const manifest: BatchManifest = {
      totalRecordCount: counts.total ?? 0,
      processedRecordCount: counts.processed,
      successRecordCount: counts.success,
      errorRecordCount: counts.error,
      inputTokenCount: counts.inputTokens,
      outputTokenCount: counts.outputTokens,
    };
    await putJson(
      s3,
      { bucket: out.bucket, key: joinKey(out.key, job.jobId, 'manifest.json.out') },
      manifest,
    );
    return skipped;
  }

  /** Answers the records of one input file into its writer; returns how many the partialJob fault dropped. */
  private async processFile(
    job: JobRecord,
    file: BatchInputFile,
    writer: ShuffledJsonlWriter,
  ): Promise<number> {
    const invocationType = job.input.modelInvocationType ?? 'InvokeModel';
    const { counts } = job;
    let skipped = 0;
    let lineNumber = 0;
    for await (const text of readInputLines(this.s3Client(), file)) {
      lineNumber += 1;
      if (text.trim().length === 0) continue;
      if (this.faults.dropRecord()) {
        skipped += 1;
        continue;
      }
      const at = lineNumber;
      const result = processBatchRecord(text, {
        model: job.model,
        invocationType,
        faults: this.runtimeFaults,
        ...(this.deps.outputLength === undefined ? {} : { outputLength: this.deps.outputLength }),
        fallbackRecordId: () => generatedRecordId(job.jobId, file.name, at),
      });
      await writer.write(JSON.stringify(result.line));
      counts.processed += 1;
      if (result.ok) {
        counts.success += 1;
        counts.inputTokens += result.inputTokens;
        counts.outputTokens += result.outputTokens;
      } else {
        counts.error += 1;
      }
      const delay = (this.options.recordMs ?? 0) + this.faults.slowMs;
      if (delay > 0 && !(await this.sleep(job, delay))) break;
      if (job.interrupt || this.closed) break;
    }
    return skipped;
  }

  /**
   * Waits `ms` on the batch clock. Resolves false at once (or as soon as it happens) when the job is stopped,
   * times out or the service closes.
   */
  private sleep(job: JobRecord, ms: number): Promise<boolean> {
    if (job.interrupt || this.closed) return Promise.resolve(false);
    if (ms <= 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const cancel = this.clock.schedule(ms, () => {
        job.wake = undefined;
        resolve(!job.interrupt && !this.closed);
      });
      job.wake = () => {
        job.wake = undefined;
        cancel();
        resolve(false);
      };
    });
  }

  /** Waits `ms` on the batch clock, whatever happens to the job (only close() cuts it short). */
  private plainSleep(ms: number): Promise<void> {
    if (ms <= 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        this.closeWakers.delete(wake);
        cancel();
        resolve();
      };
      const cancel = this.clock.schedule(ms, wake);
      this.closeWakers.add(wake);
    });
  }

  private transition(job: JobRecord, status: BatchJobStatus): void {
    job.status = status;
    job.lastModifiedTime = this.clock.now();
    this.emit(job);
  }

  private finish(job: JobRecord, status: BatchJobStatus, message?: string): void {
    if (this.closed || isTerminalStatus(job.status)) return;
    job.cancelExpiry?.();
    if (message !== undefined) job.message = message;
    job.endTime = this.clock.now();
    this.transition(job, status);
  }

  // ---------------------------------------------------------------- events

  private emit(job: JobRecord): void {
    const event = buildStateChangeEvent(
      {
        jobArn: job.jobArn,
        jobName: job.input.jobName,
        modelArn: job.modelArn,
        status: job.status,
        ...(job.message === undefined ? {} : { message: job.message }),
        submitTime: job.submitTime,
      },
      { accountId: this.accountId, region: this.region },
      job.lastModifiedTime,
    );
    this.eventStats.emitted += 1;
    const copies = this.faults.eventCopies(job.status);
    if (copies === 0) {
      this.eventStats.dropped += 1;
      return;
    }
    if (copies === 2) this.eventStats.duplicated += 1;
    for (let i = 0; i < copies; i += 1) {
      this.delivery = this.delivery.then(() => this.deliver(event));
    }
  }

  private async deliver(event: BatchJobStateChangeEvent): Promise<void> {
    const listener = this.deps.onEvent;
    if (!listener) return;
    this.eventStats.delivered += 1;
    try {
      await listener(event);
    } catch (err) {
      // A failing target must not stop the job or the events after it; EventBridge would retry and give up.
      this.eventStats.listenerErrors += 1;
      console.error(
        `bedrock-simulator: the job event listener failed on ${event.detail.status} of ${event.detail.batchJobArn}`,
        err,
      );
    }
  }

  // ---------------------------------------------------------------- helpers

  private describe(job: JobRecord): BatchJobDescription {
    const { input, counts } = job;
    const started = counts.total !== undefined && job.status !== 'Validating' && job.status !== 'Scheduled';
    return {
      jobArn: job.jobArn,
      jobName: input.jobName,
      modelId: input.modelId,
      ...(input.clientRequestToken === undefined ? {} : { clientRequestToken: input.clientRequestToken }),
      roleArn: input.roleArn,
      status: job.status,
      ...(job.message === undefined ? {} : { message: job.message }),
      submitTime: iso(job.submitTime),
      lastModifiedTime: iso(job.lastModifiedTime),
      ...(job.endTime === undefined ? {} : { endTime: iso(job.endTime) }),
      inputDataConfig: input.inputDataConfig,
      outputDataConfig: input.outputDataConfig,
      ...(input.vpcConfig === undefined ? {} : { vpcConfig: input.vpcConfig }),
      timeoutDurationInHours: job.timeoutHours,
      jobExpirationTime: iso(job.expiresAt),
      modelInvocationType: input.modelInvocationType ?? 'InvokeModel',
      ...(counts.total === undefined ? {} : { totalRecordCount: counts.total }),
      ...(started
        ? {
            processedRecordCount: counts.processed,
            successRecordCount: counts.success,
            errorRecordCount: counts.error,
          }
        : {}),
    };
  }

  private find(identifier: string): JobRecord {
    const parsed = parseJobIdentifier(identifier);
    const job = this.jobs.get(parsed.jobId);
    const elsewhere =
      parsed.arn !== undefined &&
      (parsed.arn.region !== this.region || parsed.arn.accountId !== this.accountId);
    if (!job || elsewhere) {
      throw new BatchServiceError(
        'ResourceNotFoundException',
        `The batch inference job ${identifier} was not found. Check the job ARN or id and try again.`,
      );
    }
    return job;
  }

  private modelArn(model: ResolvedModel): string {
    const id = model.requestedId;
    if (id.startsWith('arn:')) return id;
    if (model.kind === 'inference-profile') {
      return `arn:aws:bedrock:${this.region}:${this.accountId}:inference-profile/${id}`;
    }
    return `arn:aws:bedrock:${this.region}::foundation-model/${id}`;
  }

  private uniqueJobId(): string {
    for (;;) {
      const id = newJobId();
      if (!this.jobs.has(id)) return id;
    }
  }

  private s3Client(): S3Client {
    this.s3 ??= new S3Client({});
    return this.s3;
  }

  private assertOpen(): void {
    if (this.closed) {
      throw new BatchServiceError('InternalServerException', 'The Bedrock simulator is shutting down.');
    }
  }
}
