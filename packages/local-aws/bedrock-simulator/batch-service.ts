import { S3Client } from '@aws-sdk/client-s3';

import {
  checkConcurrentJobs,
  checkJobNameFree,
  jobOfSameToken,
  type JobNameUniqueness,
} from './batch-admission';
import { systemClock, type BatchClock } from './batch-clock';
import { BatchJobFailure, BatchServiceError } from './batch-errors';
import { BatchEventDelivery, type BatchEventStats } from './batch-event-delivery';
import type { BatchJobEventListener } from './batch-events';
import { BatchFaultInjector, INJECTED_JOB_FAILURE_MESSAGE, type BatchFaultOptions } from './batch-faults';
import { checkJobInput } from './batch-input-check';
import type { BatchInputFile } from './batch-io';
import { describeJob, listJobPage, newJobId, type BatchJobDescription, type JobRecord } from './batch-job';
import { writeJobOutput } from './batch-output';
import {
  batchLimitsFor,
  checkBatchLimitOptions,
  isTerminalStatus,
  STOPPABLE_STATUSES,
  type BatchJobStatus,
  type BatchLimitOptions,
  type BatchLimits,
} from './batch-status';
import { parseJobIdentifier, validateCreateJobRequest } from './batch-validation';
import type { OutputLengthOptions } from './engine';
import { FaultInjector } from './faults';
import {
  getFoundationModel,
  getFoundationModelAvailability,
  getInferenceProfile,
  type ModelAccessAnswer,
  type ModelControlContext,
} from './model-control';
import { ModelTable, type ResolvedModel } from './models';

export type { BatchEventStats } from './batch-event-delivery';
export type { BatchJobCounts, BatchJobDescription, BatchManifest } from './batch-job';

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
  readonly uniqueJobNames?: JobNameUniqueness;
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

function errorText(err: unknown): string {
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
  readonly eventStats: BatchEventStats;
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
  private readonly events: BatchEventDelivery;
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
    this.events = new BatchEventDelivery(
      { accountId: this.accountId, region: this.region },
      this.faults,
      deps,
    );
    this.eventStats = this.events.stats;
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
      const same = jobOfSameToken(existing, input, fingerprint);
      if (same) return { jobArn: same.jobArn };
    }
    checkJobNameFree(this.jobs.values(), input.jobName, this.options.uniqueJobNames ?? 'all');
    const model = input.model.spec;
    checkConcurrentJobs(this.jobs.values(), model.modelId, this.limitsFor(model.modelId).maxConcurrentJobs);

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
    this.events.emit(job);
    job.cancelExpiry = this.clock.schedule(timeoutHours * hourMs, () => this.expire(job));
    job.done = this.run(job);
    return { jobArn: job.jobArn };
  }

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

  /**
   * GetModelInvocationJob.
   * @param identifier job id or job ARN (URL-decoded)
   * @throws BatchServiceError ValidationException, ResourceNotFoundException
   */
  get(identifier: string): BatchJobDescription {
    return describeJob(this.find(identifier));
  }

  /**
   * ListModelInvocationJobs.
   * @param query the request's query string
   * @throws BatchServiceError ValidationException
   */
  list(query: URLSearchParams): { invocationJobSummaries: BatchJobDescription[]; nextToken?: string } {
    return listJobPage(this.jobs.values(), query);
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
    return describeJob(job);
  }

  /** Waits until every event emitted so far has been delivered to the listener. */
  eventsDelivered(): Promise<void> {
    return this.events.delivered();
  }

  /** Every job, oldest first. */
  describeAll(): BatchJobDescription[] {
    return [...this.jobs.values()].sort((a, b) => a.seq - b.seq).map(describeJob);
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
      this.finish(job, 'Failed', `Simulator internal error: ${errorText(err)}`);
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
    const { files, total } = await checkJobInput(
      this.s3Client(),
      job.input.inputDataConfig.s3InputDataConfig.s3Uri,
      job.model.modelId,
      this.limitsFor(job.model.modelId),
    );
    job.counts.total = total;
    return files;
  }

  /** Answers every record into the output files and the manifest; returns how many the partialJob fault dropped. */
  private process(job: JobRecord, files: readonly BatchInputFile[]): Promise<number> {
    return writeJobOutput(job, files, {
      s3: this.s3Client(),
      shuffleWindow: this.options.shuffleWindow ?? 1024,
      recordMs: this.options.recordMs ?? 0,
      faults: this.faults,
      runtimeFaults: this.runtimeFaults,
      ...(this.deps.outputLength === undefined ? {} : { outputLength: this.deps.outputLength }),
      sleep: (ms) => this.sleep(job, ms),
      closed: () => this.closed,
    });
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
    this.events.emit(job);
  }

  private finish(job: JobRecord, status: BatchJobStatus, message?: string): void {
    if (this.closed || isTerminalStatus(job.status)) return;
    job.cancelExpiry?.();
    if (message !== undefined) job.message = message;
    job.endTime = this.clock.now();
    this.transition(job, status);
  }

  // ---------------------------------------------------------------- helpers

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
