/**
 * Runs Lambda handlers locally, each function in its own pool of worker threads (one worker = one execution
 * environment: one invocation at a time, warm between invocations), with the function's own environment,
 * Lambda's timeout, error and payload semantics, and its console output in a log file.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';

import { LOCAL_CREDENTIALS } from './local-credentials';
import type { LambdaFunctionDescription } from './template';

/** Lambda's limit on a synchronous invocation's request payload, in bytes. */
export const MAX_REQUEST_PAYLOAD_BYTES = 6_291_456;

/** Lambda's limit on a synchronous invocation's response payload, in bytes. */
export const MAX_RESPONSE_PAYLOAD_BYTES = 6_291_556;

const WORKER_BOOTSTRAP = path.join(__dirname, 'lambda-worker.cjs');

/** Options of a {@link LocalFunction}. */
export interface LocalFunctionOptions {
  /** Function name (`AWS_LAMBDA_FUNCTION_NAME`, `context.functionName`). */
  name: string;
  /** Function ARN (`context.invokedFunctionArn`). */
  arn: string;
  /** Absolute path of the handler's TypeScript (or JavaScript) entry. */
  entry: string;
  /** The export to call. @default 'handler' */
  handlerExport?: string;
  /** The function's Handler setting (`_HANDLER`). @default `index.<handlerExport>` */
  handler?: string;
  /** The function's resolved Environment.Variables. */
  environment?: Record<string, string>;
  /**
   * Settings of the local services, e.g. `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_DYNAMODB`, ... They override
   * same-named function variables so a handler can never reach a real endpoint.
   */
  serviceEnvironment?: Record<string, string>;
  /** `AWS_REGION` / `AWS_DEFAULT_REGION`. @default 'us-east-1' */
  region?: string;
  /** Invocation timeout (fractions allowed locally). @default 3 */
  timeoutSeconds?: number;
  /** `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` and `context.memoryLimitInMB`. @default 128 */
  memoryMb?: number;
  /**
   * Cap the worker's V8 heap at memoryMb. Off by default: handlers run from TypeScript through tsx, which needs
   * more memory than the bundled code the real function runs.
   */
  enforceMemoryLimit?: boolean;
  /** Execution environments (workers) at most; invocations beyond queue. @default 4 */
  maxConcurrency?: number;
  /** Time allowed for loading the entry (init phase) of a new worker. @default 30 */
  initTimeoutSeconds?: number;
  /** File the workers' console output is appended to (created with its directory). */
  logFile?: string;
  /** Echo the workers' console output on this process' stdout/stderr. @default true when no logFile */
  echo?: boolean;
  /**
   * The name crash faults address this function by (`crash=HANDLER@STEP:N`). @default the entry's file name without
   * its extension, e.g. `collect` for lambda/collect.ts
   */
  faultHandler?: string;
  /**
   * Crash faults: those naming this function's {@link faultHandler} apply, the others are ignored. See
   * {@link CrashFault}.
   */
  crashes?: readonly CrashFault[];
}

/**
 * A `crash` fault: the next `times` invocations that reach `step` die there, as a Lambda killed by a timeout or an
 * out-of-memory error: no further code of the invocation runs (no catch, no finally), the invocation fails as
 * {@link INJECTED_CRASH_ERROR_TYPE} and its execution environment (worker) is replaced. `times` is counted over every
 * worker of the function. Steps are the fault points of lambda/shared/fault-points.ts, reached when the handler calls
 * `faultPoint(handler, step)`, or `return`: after the handler returned (its work done), before its answer is sent;
 * an invocation that fails on its own never reaches `return`.
 */
export interface CrashFault {
  /** The handler it addresses: an entry file name under lambda/, e.g. `collect`. */
  handler: string;
  /** A fault point of that handler, or `return`. */
  step: string;
  /** How many invocations die there. */
  times: number;
  /** The fault as it was asked for, for messages. @default `crash=<handler>@<step>:<times>` */
  fault?: string;
}

/** A crash fault of a function and how many times it fired so far. */
export interface FiredCrash {
  handler: string;
  step: string;
  /** The fault as it was asked for. */
  fault: string;
  /** How many invocations it was asked to kill. */
  times: number;
  /** How many it killed. */
  fired: number;
}

/**
 * The errorType of an invocation the `crash` fault ended: what Lambda reports when the runtime dies before answering,
 * so the workflow's Retry treats the injected crash exactly as a real one.
 */
export const INJECTED_CRASH_ERROR_TYPE = 'Runtime.ExitError';

/** Options of one invocation. */
export interface InvokeOptions {
  /** `context.awsRequestId`. @default a random UUID */
  requestId?: string;
}

/** Counters of a function's pool. */
export interface LocalFunctionStats {
  /** Live workers. */
  workers: number;
  /** Workers running an invocation. */
  busy: number;
  /** Invocations waiting for a worker. */
  queued: number;
  /** Workers started so far (cold starts). */
  coldStarts: number;
  /** Invocations completed (successfully or not). */
  invocations: number;
  /** Invocations a crash fault killed. */
  crashes: number;
}

/** A Lambda error: `name` is Lambda's errorType (the thrown error's name, or `Sandbox.Timedout`, `Runtime.*`...). */
export class LocalLambdaError extends Error {
  override name: string;
  /** Lambda's errorType (same as name). */
  readonly errorType: string;
  /** Lambda's errorMessage. */
  readonly errorMessage: string;
  /** The handler's stack trace lines, when it threw. */
  readonly trace: string[];
  /** The invocation's request id. */
  readonly requestId: string;
  /** The function that failed. */
  readonly functionName: string;

  constructor(init: {
    errorType: string;
    errorMessage: string;
    trace?: string[];
    requestId: string;
    functionName: string;
  }) {
    super(init.errorMessage);
    this.name = init.errorType;
    this.errorType = init.errorType;
    this.errorMessage = init.errorMessage;
    this.trace = init.trace ?? [];
    this.requestId = init.requestId;
    this.functionName = init.functionName;
  }

  /** The error payload Lambda returns (what Step Functions puts in a failed task's Cause). */
  toJSON(): { errorType: string; errorMessage: string; trace: string[] } {
    return { errorType: this.errorType, errorMessage: this.errorMessage, trace: this.trace };
  }
}

/** The function was stopped before or while the invocation ran. */
export class LocalFunctionStoppedError extends Error {
  override readonly name = 'LocalFunctionStoppedError';
}

interface SerializedError {
  name: string;
  message: string;
  stack: string[];
}

type WorkerMessage =
  | { type: 'ready'; initError?: SerializedError }
  | { type: 'result'; requestId: string; ok: true; payload: string }
  | { type: 'result'; requestId: string; ok: false; error: SerializedError };

interface Job {
  requestId: string;
  payload: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

interface Slot {
  worker: Worker;
  state: 'starting' | 'idle' | 'busy' | 'dead';
  job: Job | undefined;
  timer: NodeJS.Timeout | undefined;
  startedAt: number;
  uncaught: Error | undefined;
  exited: Promise<void>;
  outputDone: Promise<void>;
  logStreamName: string;
  /** Set by the worker, before it dies of a crash fault, to the crash's index + 1. */
  deathNote: Int32Array;
}

/** A Lambda function run locally in a pool of worker threads. */
export class LocalFunction {
  /** Function name. */
  readonly name: string;
  /** Function ARN. */
  readonly arn: string;
  /** The name crash faults address this function by. */
  readonly faultHandler: string;
  private readonly options: Required<
    Pick<
      LocalFunctionOptions,
      'handlerExport' | 'region' | 'timeoutSeconds' | 'memoryMb' | 'maxConcurrency' | 'initTimeoutSeconds'
    >
  > &
    LocalFunctionOptions;
  private readonly slots = new Set<Slot>();
  private readonly queue: Job[] = [];
  private readonly log: WriteStream | undefined;
  private readonly echo: boolean;
  private stopped: Promise<void> | undefined;
  private coldStarts = 0;
  private invocations = 0;
  /** The crash faults that address this function. */
  private readonly crashes: Required<CrashFault>[];
  /**
   * Per crash, how many are left and how many fired (`[left0, fired0, left1, fired1, ...]`), in memory shared with
   * every worker: the workers take from it atomically, so `times` holds across workers and invocations.
   */
  private readonly crashCounters: Int32Array;

  constructor(options: LocalFunctionOptions) {
    this.name = options.name;
    this.arn = options.arn;
    this.options = {
      handlerExport: 'handler',
      region: 'us-east-1',
      timeoutSeconds: 3,
      memoryMb: 128,
      maxConcurrency: 4,
      initTimeoutSeconds: 30,
      ...options,
    };
    if (!Number.isInteger(this.options.maxConcurrency) || this.options.maxConcurrency < 1) {
      throw new RangeError(`maxConcurrency must be a positive integer, got ${this.options.maxConcurrency}`);
    }
    if (!(this.options.timeoutSeconds > 0)) throw new RangeError(`timeoutSeconds must be positive`);
    if (options.logFile !== undefined) {
      mkdirSync(path.dirname(options.logFile), { recursive: true });
      this.log = createWriteStream(options.logFile, { flags: 'a' });
    }
    this.echo = options.echo ?? options.logFile === undefined;
    const faultHandler = options.faultHandler ?? path.basename(options.entry).replace(/\.[^.]+$/, '');
    this.crashes = (options.crashes ?? [])
      .filter((crash) => crash.handler === faultHandler)
      .map((crash) => {
        if (!Number.isInteger(crash.times) || crash.times < 0) {
          throw new RangeError(`crash times must be a non-negative integer, got ${crash.times}`);
        }
        return { ...crash, fault: crash.fault ?? `crash=${crash.handler}@${crash.step}:${crash.times}` };
      });
    this.crashCounters = new Int32Array(new SharedArrayBuffer(Math.max(1, this.crashes.length) * 8));
    this.crashes.forEach((crash, i) => Atomics.store(this.crashCounters, 2 * i, crash.times));
    this.faultHandler = faultHandler;
  }

  /** The crash faults that address this function, with how many times each fired so far. */
  faultsFired(): FiredCrash[] {
    return this.crashes.map((crash, i) => ({
      handler: crash.handler,
      step: crash.step,
      fault: crash.fault,
      times: crash.times,
      fired: Atomics.load(this.crashCounters, 2 * i + 1),
    }));
  }

  /**
   * A LocalFunction for a function of a provisioned stack: its entry, handler export, environment, timeout and
   * memory from the template; concurrency capped by its reserved concurrency, if any.
   */
  static fromDescription(
    description: LambdaFunctionDescription,
    options: {
      /** The local services' settings (see {@link LocalFunctionOptions.serviceEnvironment}). */
      serviceEnvironment: Record<string, string>;
      region: string;
      /** Directory for the function's log file (`<name>.log`). */
      logDirectory?: string;
      /** @default 4 */
      maxConcurrency?: number;
      echo?: boolean;
    },
  ): LocalFunction {
    const maxConcurrency = Math.max(
      1,
      Math.min(options.maxConcurrency ?? 4, description.reservedConcurrency ?? Infinity),
    );
    return new LocalFunction({
      name: description.name,
      arn: description.arn,
      entry: description.entryPath,
      handlerExport: description.handlerExport,
      handler: description.handler,
      environment: description.environment,
      serviceEnvironment: options.serviceEnvironment,
      region: options.region,
      timeoutSeconds: description.timeoutSeconds,
      memoryMb: description.memoryMb,
      maxConcurrency,
      ...(options.logDirectory
        ? { logFile: path.join(options.logDirectory, `${description.name}.log`) }
        : {}),
      ...(options.echo === undefined ? {} : { echo: options.echo }),
    });
  }

  /**
   * Invokes the handler with `event` (deep-copied through JSON, as Lambda does) and resolves with its
   * JSON-copied result. Rejects with a {@link LocalLambdaError} for handler errors, timeouts (`Sandbox.Timedout`),
   * crashed workers (`Runtime.ExitError`), init failures and oversized payloads.
   */
  invoke(event: unknown, options: InvokeOptions = {}): Promise<unknown> {
    const requestId = options.requestId ?? randomUUID();
    if (this.stopped)
      return Promise.reject(new LocalFunctionStoppedError(`function ${this.name} is stopped`));
    const payload = JSON.stringify(event === undefined ? null : event) ?? 'null';
    if (Buffer.byteLength(payload) > MAX_REQUEST_PAYLOAD_BYTES) {
      return Promise.reject(
        this.error(
          requestId,
          'RequestEntityTooLargeException',
          `Request must be smaller than ${MAX_REQUEST_PAYLOAD_BYTES} bytes for the InvokeFunction operation`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ requestId, payload, resolve, reject });
      this.pump();
    });
  }

  /** Pool counters. */
  stats(): LocalFunctionStats {
    const slots = [...this.slots];
    return {
      workers: slots.length,
      busy: slots.filter((slot) => slot.state === 'busy').length,
      queued: this.queue.length,
      coldStarts: this.coldStarts,
      invocations: this.invocations,
      crashes: this.faultsFired().reduce((sum, crash) => sum + crash.fired, 0),
    };
  }

  /** Rejects queued and running invocations, terminates the workers and closes the log file. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      const stoppedError = () => new LocalFunctionStoppedError(`function ${this.name} was stopped`);
      for (const job of this.queue.splice(0)) job.reject(stoppedError());
      const slots = [...this.slots];
      for (const slot of slots) {
        const job = slot.job;
        this.retire(slot);
        job?.reject(stoppedError());
      }
      await Promise.all(slots.map((slot) => slot.exited));
      await Promise.all(slots.map((slot) => slot.outputDone));
      if (this.log) await new Promise<void>((resolve) => this.log!.end(resolve));
    })();
    return this.stopped;
  }

  /** Hands queued invocations to idle workers and starts workers while below maxConcurrency. */
  private pump(): void {
    if (this.stopped) return;
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.state === 'idle') this.dispatch(slot, this.queue.shift()!);
    }
    const starting = [...this.slots].filter((slot) => slot.state === 'starting').length;
    let waiting = this.queue.length - starting;
    while (waiting > 0 && this.slots.size < this.options.maxConcurrency) {
      this.spawn();
      waiting -= 1;
    }
  }

  private spawn(): void {
    const { options } = this;
    const logStreamName = `${new Date().toISOString().slice(0, 10).replace(/-/g, '/')}/[$LATEST]${randomBytes(16).toString('hex')}`;
    const logGroupName = `/aws/lambda/${this.name}`;
    const environment: Record<string, string> = {
      ...options.environment,
      ...options.serviceEnvironment,
      AWS_REGION: options.region,
      AWS_DEFAULT_REGION: options.region,
      AWS_LAMBDA_FUNCTION_NAME: this.name,
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(options.memoryMb),
      AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
      AWS_LAMBDA_LOG_GROUP_NAME: logGroupName,
      AWS_LAMBDA_LOG_STREAM_NAME: logStreamName,
      _HANDLER: options.handler ?? `index.${options.handlerExport}`,
      AWS_ACCESS_KEY_ID: LOCAL_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: LOCAL_CREDENTIALS.secretAccessKey,
    };
    const deathNote = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(WORKER_BOOTSTRAP, {
      env: environment,
      execArgv: [],
      stdout: true,
      stderr: true,
      workerData: {
        entry: options.entry,
        handlerExport: options.handlerExport,
        functionName: this.name,
        functionVersion: '$LATEST',
        invokedFunctionArn: this.arn,
        memoryLimitInMB: options.memoryMb,
        logGroupName,
        logStreamName,
        faultHandler: this.faultHandler,
        crashes: this.crashes.map(({ handler, step }) => ({ handler, step })),
        crashCounters: this.crashCounters.buffer,
        deathNote: deathNote.buffer,
      },
      ...(options.enforceMemoryLimit ? { resourceLimits: { maxOldGenerationSizeMb: options.memoryMb } } : {}),
    });
    const slot: Slot = {
      worker,
      state: 'starting',
      job: undefined,
      timer: undefined,
      startedAt: Date.now(),
      uncaught: undefined,
      exited: new Promise((resolve) => worker.once('exit', () => resolve())),
      outputDone: Promise.all([
        this.route(worker.stdout, process.stdout),
        this.route(worker.stderr, process.stderr),
      ]).then(() => undefined),
      logStreamName,
      deathNote,
    };
    this.slots.add(slot);
    this.coldStarts += 1;
    slot.timer = setTimeout(() => this.onInitTimeout(slot), options.initTimeoutSeconds * 1000);
    worker.on('message', (message: WorkerMessage) => this.onMessage(slot, message));
    worker.on('error', (error) => {
      slot.uncaught = error;
    });
    worker.on('exit', (code) => this.onExit(slot, code));
  }

  /** Sends a worker's output stream to the log file and/or this process' stream; resolves when it ends. */
  private route(source: Readable, echoTarget: NodeJS.WriteStream): Promise<void> {
    if (this.log) source.pipe(this.log, { end: false });
    if (this.echo) source.pipe(echoTarget, { end: false });
    if (!this.log && !this.echo) source.resume();
    return new Promise((resolve) => source.once('close', resolve));
  }

  private write(line: string): void {
    if (this.log) this.log.write(`${line}\n`);
  }

  private dispatch(slot: Slot, job: Job): void {
    slot.state = 'busy';
    slot.job = job;
    slot.startedAt = Date.now();
    slot.worker.ref();
    const timeoutMs = this.options.timeoutSeconds * 1000;
    slot.timer = setTimeout(() => this.onTimeout(slot), timeoutMs);
    this.write(`START RequestId: ${job.requestId} Version: $LATEST`);
    slot.worker.postMessage({
      type: 'invoke',
      requestId: job.requestId,
      payload: job.payload,
      deadline: Date.now() + timeoutMs,
    });
  }

  private onMessage(slot: Slot, message: WorkerMessage): void {
    if (slot.state === 'dead') return;
    if (message.type === 'ready') {
      clearTimeout(slot.timer);
      slot.timer = undefined;
      if (message.initError) {
        // As in Lambda, a failed init fails the invocation it was started for and the environment is discarded.
        const job = this.queue.shift();
        this.retire(slot);
        job?.reject(
          this.error(
            job.requestId,
            message.initError.name,
            message.initError.message,
            message.initError.stack,
          ),
        );
        if (job) this.invocations += 1;
        this.pump();
        return;
      }
      slot.state = 'idle';
      slot.worker.unref();
      this.pump();
      return;
    }
    const job = slot.job;
    if (job === undefined || message.requestId !== job.requestId) return;
    clearTimeout(slot.timer);
    slot.timer = undefined;
    slot.job = undefined;
    slot.state = 'idle';
    slot.worker.unref();
    this.invocations += 1;
    const duration = Date.now() - slot.startedAt;
    this.write(`END RequestId: ${job.requestId}`);
    this.write(
      `REPORT RequestId: ${job.requestId}\tDuration: ${duration.toFixed(2)} ms\tMemory Size: ${this.options.memoryMb} MB`,
    );
    if (message.ok) this.settleSuccess(job, message.payload);
    else
      job.reject(this.error(job.requestId, message.error.name, message.error.message, message.error.stack));
    this.pump();
  }

  private settleSuccess(job: Job, payload: string): void {
    const size = Buffer.byteLength(payload);
    if (size > MAX_RESPONSE_PAYLOAD_BYTES) {
      job.reject(
        this.error(
          job.requestId,
          'Function.ResponseSizeTooLarge',
          `Response payload size (${size} bytes) exceeded maximum allowed payload size (${MAX_RESPONSE_PAYLOAD_BYTES} bytes).`,
        ),
      );
      return;
    }
    job.resolve(JSON.parse(payload));
  }

  private onTimeout(slot: Slot): void {
    const job = slot.job;
    this.retire(slot);
    if (job === undefined) return;
    this.invocations += 1;
    const seconds = this.options.timeoutSeconds.toFixed(2);
    this.write(`END RequestId: ${job.requestId}`);
    this.write(
      `REPORT RequestId: ${job.requestId}\tDuration: ${(this.options.timeoutSeconds * 1000).toFixed(2)} ms\tStatus: timeout`,
    );
    job.reject(this.error(job.requestId, 'Sandbox.Timedout', `Task timed out after ${seconds} seconds`));
    this.pump();
  }

  private onInitTimeout(slot: Slot): void {
    if (slot.state !== 'starting') return;
    const job = this.queue.shift();
    this.retire(slot);
    if (job) {
      this.invocations += 1;
      job.reject(
        this.error(
          job.requestId,
          'Sandbox.Timedout',
          `Init timed out after ${this.options.initTimeoutSeconds.toFixed(2)} seconds`,
        ),
      );
    }
    this.pump();
  }

  private onExit(slot: Slot, code: number): void {
    if (slot.state === 'dead') return;
    // The worker ended on its own: process.exit(), an uncaught exception or an unhandled rejection.
    const wasStarting = slot.state === 'starting';
    const job = slot.job ?? (wasStarting ? this.queue.shift() : undefined);
    this.retire(slot);
    if (job) {
      this.invocations += 1;
      const uncaught = slot.uncaught;
      const outOfMemory =
        (uncaught as NodeJS.ErrnoException | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY';
      const reason = uncaught ? `${uncaught.name}: ${uncaught.message}` : `exit status ${code}`;
      const crash = this.crashes[Atomics.load(slot.deathNote, 0) - 1];
      const fault = crash ? ` (injected fault ${crash.fault}: killed at ${crash.handler}@${crash.step})` : '';
      this.write(`END RequestId: ${job.requestId}`);
      this.write(
        `REPORT RequestId: ${job.requestId}\tStatus: error\tError Type: Runtime.ExitError (${reason})${fault}`,
      );
      job.reject(
        this.error(
          job.requestId,
          outOfMemory ? 'Runtime.OutOfMemory' : INJECTED_CRASH_ERROR_TYPE,
          `RequestId: ${job.requestId} Error: Runtime exited with error: ${reason}${fault}`,
          uncaught?.stack?.split('\n'),
        ),
      );
    }
    this.pump();
  }

  /** Takes a worker out of the pool and terminates it. */
  private retire(slot: Slot): void {
    if (slot.state === 'dead') return;
    slot.state = 'dead';
    slot.job = undefined;
    clearTimeout(slot.timer);
    slot.timer = undefined;
    this.slots.delete(slot);
    // The 'exit' listener sees state 'dead' and knows the pool ended this worker on purpose.
    slot.worker.terminate().catch((error: unknown) => {
      const detail = error instanceof Error ? error.message : String(error);
      process.emitWarning(`local function ${this.name}: terminating a worker failed: ${detail}`);
    });
  }

  private error(
    requestId: string,
    errorType: string,
    errorMessage: string,
    trace?: string[],
  ): LocalLambdaError {
    return new LocalLambdaError({
      errorType,
      errorMessage,
      requestId,
      functionName: this.name,
      ...(trace ? { trace } : {}),
    });
  }
}
