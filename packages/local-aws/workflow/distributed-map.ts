/**
 * Distributed Map emulation: one Map Run per entry into the state.
 *
 * Items come from the ItemReader (streamed) or ItemsPath; each goes through ItemSelector (with
 * `$$.Map.Item.Value` / `$$.Map.Item.Index`) and the ItemBatcher; each resulting input runs the
 * ItemProcessor as its own child execution. Children are launched lazily, only when one of the
 * MaxConcurrency slots is free, so at most one batch beyond the running children is held in
 * memory. MaxConcurrency 0 (or absent) means unlimited in Step Functions (10,000 children); the
 * emulation caps it (1,000 by default) and reports that as `effectiveConcurrency`.
 *
 * Failures count in items (a failed batch fails all its items). When they exceed
 * ToleratedFailureCount or ToleratedFailurePercentage (zero tolerance when neither is set; the
 * percentage is judged once the reader is exhausted and the total is known), no more children
 * start, the running ones are aborted, the ResultWriter still exports (unstarted inputs go to
 * PENDING_0.json) and the state fails with `States.ExceedToleratedFailureThreshold`.
 *
 * EXPRESS children (ProcessorConfig ExecutionType EXPRESS) are held to the cap AWS puts on an Express execution,
 * 5 minutes by default (`expressTimeoutMs`): a child still running then ends TIMED_OUT with `States.Timeout`, counts
 * in the Map Run's timedOut counts and against the tolerated failures like a failed child, and a task it had started
 * (a Lambda invocation) is not stopped: it runs on to its own timeout, its answer ignored.
 */
import { randomUUID } from 'node:crypto';

import type { JsonValue } from './asl-runtime';
import { StatesError } from './errors';
import { readItems, type ItemReaderRequest } from './item-reader';
import type { PayloadEvaluator } from './payload';
import type { DistributedMapSpec, PreparedScope } from './prepare-definition';
import {
  type ChildOutcome,
  childRecord,
  transformOutputs,
  writeResults,
  writerConfig,
} from './result-writer';
import type { MapRunCounts, MapRunDescription, ObjectStore } from './types';

/** ASL error name when child failures exceed the tolerated threshold. */
export const EXCEED_TOLERATED_FAILURE_THRESHOLD = 'States.ExceedToleratedFailureThreshold';

/** The cause Step Functions gives with it. */
export const EXCEED_TOLERATED_FAILURE_CAUSE = 'The specified tolerated failure threshold was exceeded';

/**
 * The longest an EXPRESS execution runs: 5 minutes. (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-standard-vs-express.html,
 * "Maximum duration"; a child that times out is counted in DescribeMapRun's `timedOut`:
 * https://docs.aws.amazon.com/step-functions/latest/apireference/API_MapRunExecutionCounts.html)
 */
export const EXPRESS_EXECUTION_TIMEOUT_MS = 300_000;

/** Largest MaxInputBytesPerBatch Step Functions accepts (256 KiB). */
export const MAX_INPUT_BYTES_PER_BATCH = 262_144;

/** A child execution to run. */
export interface ChildExecutionRequest {
  arn: string;
  name: string;
  stateMachineArn: string;
  input: JsonValue;
  processor: PreparedScope;
  mapRunArn: string;
  /** Aborts the child (Map Run failed, timed out, or the parent stopped). */
  signal: AbortSignal;
}

/** How a child execution ended. */
export interface ChildExecutionResult {
  status: 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED';
  output?: JsonValue;
  error?: string;
  cause?: string;
  startDate: Date;
  stopDate: Date;
}

/** What the emulation needs from the runner. */
export interface DistributedMapRun {
  spec: DistributedMapSpec;
  /** The state's effective input (after InputPath). */
  input: JsonValue;
  /** The parent execution's context object (`{__local: ...}`), for `$$` paths. */
  context: Record<string, unknown>;
  /** The parent execution. */
  executionArn: string;
  /** The parent's state machine ARN (for a child, `.../Name/Label`). */
  stateMachineArn: string;
  /** Aborted when the parent execution stops or ends. */
  signal: AbortSignal;
  evaluator: PayloadEvaluator;
  objectStore: ObjectStore;
  now: () => Date;
  /** Cap applied to unlimited (and larger) MaxConcurrency. */
  concurrencyCap: number;
  /** How long an EXPRESS child may run before it times out. @default EXPRESS_EXECUTION_TIMEOUT_MS */
  expressTimeoutMs?: number;
  runChild(request: ChildExecutionRequest): Promise<ChildExecutionResult>;
  /** Receives a snapshot on every change of the Map Run. */
  report(description: MapRunDescription): void;
}

interface ChildInput {
  index: number;
  input: JsonValue;
  items: number;
}

type StopReason = 'threshold' | 'parent' | 'timeout' | 'reader' | 'internal';

function zeroCounts(): MapRunCounts {
  return {
    pending: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    timedOut: 0,
    aborted: 0,
    total: 0,
    resultsWritten: 0,
  };
}

function runtimeError(message: string): StatesError {
  return new StatesError('States.Runtime', message);
}

function counterFor(status: ChildExecutionResult['status']): 'succeeded' | 'failed' | 'timedOut' | 'aborted' {
  switch (status) {
    case 'SUCCEEDED':
      return 'succeeded';
    case 'TIMED_OUT':
      return 'timedOut';
    case 'ABORTED':
      return 'aborted';
    default:
      return 'failed';
  }
}

/** Splits `arn:aws:states:REGION:ACCOUNT:stateMachine:NAME` into its prefix and name. */
export function parseStateMachineArn(arn: string): { prefix: string; name: string } {
  const match = /^(arn:[^:]+:states:[^:]*:[^:]*):stateMachine:(.+)$/.exec(arn);
  if (match === null || match[1] === undefined || match[2] === undefined) {
    throw new Error(`not a state machine ARN: ${arn}`);
  }
  return { prefix: match[1], name: match[2] };
}

class MapRunEmulation {
  private readonly mapRunId = randomUUID();
  private readonly description: MapRunDescription;
  private readonly childStateMachineArn: string;
  private readonly childArnPrefix: string;
  private readonly abort = new AbortController();
  private readonly outcomes: ChildOutcome[] = [];
  private stopReason: StopReason | undefined;
  private readerDone = false;
  private failedItems = 0;
  private toleratedCount: number | undefined;
  private toleratedPercentage: number | undefined;
  private internalError: unknown;

  constructor(private readonly run: DistributedMapRun) {
    const { prefix, name } = parseStateMachineArn(run.stateMachineArn);
    const path = `${name}/${run.spec.label}`;
    this.childStateMachineArn = `${prefix}:stateMachine:${path}`;
    this.childArnPrefix = `${prefix}:${run.spec.executionType === 'EXPRESS' ? 'express' : 'execution'}:${path}:`;
    this.description = {
      mapRunArn: `${prefix}:mapRun:${path}:${this.mapRunId}`,
      stateName: run.spec.stateName,
      executionArn: run.executionArn,
      status: 'RUNNING',
      maxConcurrency: 0,
      effectiveConcurrency: run.concurrencyCap,
      toleratedFailurePercentage: 0,
      toleratedFailureCount: 0,
      itemCounts: zeroCounts(),
      executionCounts: zeroCounts(),
      startDate: run.now(),
    };
  }

  private report(): void {
    this.run.report(structuredClone(this.description));
  }

  private async resolveNumber(value: number | undefined, path: string | undefined, field: string) {
    if (value !== undefined) return value;
    if (path === undefined) return undefined;
    const resolved = await this.run.evaluator.path(path, this.run.input, this.run.context);
    if (typeof resolved !== 'number' || !Number.isFinite(resolved)) {
      throw runtimeError(`${field}Path ${path} resolved to ${JSON.stringify(resolved)}, expected a number`);
    }
    return resolved;
  }

  private stop(reason: StopReason): void {
    if (this.stopReason !== undefined) return;
    this.stopReason = reason;
    this.abort.abort();
  }

  async execute(): Promise<JsonValue> {
    const { spec } = this.run;
    const onParentAbort = (): void => this.stop('parent');
    if (this.run.signal.aborted) this.stop('parent');
    this.run.signal.addEventListener('abort', onParentAbort);
    const timer =
      spec.timeoutSeconds === undefined
        ? undefined
        : setTimeout(() => this.stop('timeout'), spec.timeoutSeconds * 1000);
    try {
      return await this.executeRun();
    } catch (err) {
      const e = err as Error;
      this.description.status = this.stopReason === 'parent' ? 'ABORTED' : 'FAILED';
      this.description.error = e.name;
      this.description.cause = e.message;
      throw err;
    } finally {
      this.description.stopDate = this.run.now();
      this.run.signal.removeEventListener('abort', onParentAbort);
      if (timer !== undefined) clearTimeout(timer);
      this.abort.abort();
      this.report();
    }
  }

  private async executeRun(): Promise<JsonValue> {
    const { spec } = this.run;
    const declared = await this.resolveNumber(spec.maxConcurrency, spec.maxConcurrencyPath, 'MaxConcurrency');
    if (declared !== undefined && (!Number.isInteger(declared) || declared < 0)) {
      throw runtimeError(`MaxConcurrency must be an integer >= 0, got ${declared}`);
    }
    this.toleratedCount = await this.resolveNumber(
      spec.toleratedFailureCount,
      spec.toleratedFailureCountPath,
      'ToleratedFailureCount',
    );
    this.toleratedPercentage = await this.resolveNumber(
      spec.toleratedFailurePercentage,
      spec.toleratedFailurePercentagePath,
      'ToleratedFailurePercentage',
    );
    if (
      this.toleratedCount !== undefined &&
      (!Number.isInteger(this.toleratedCount) || this.toleratedCount < 0)
    ) {
      throw runtimeError(`ToleratedFailureCount must be an integer >= 0, got ${this.toleratedCount}`);
    }
    if (
      this.toleratedPercentage !== undefined &&
      (this.toleratedPercentage < 0 || this.toleratedPercentage > 100)
    ) {
      throw runtimeError(
        `ToleratedFailurePercentage must be between 0 and 100, got ${this.toleratedPercentage}`,
      );
    }
    const maxConcurrency = declared ?? 0;
    this.description.maxConcurrency = maxConcurrency;
    this.description.effectiveConcurrency =
      maxConcurrency === 0 ? this.run.concurrencyCap : Math.min(maxConcurrency, this.run.concurrencyCap);
    this.description.toleratedFailureCount = this.toleratedCount ?? 0;
    this.description.toleratedFailurePercentage = this.toleratedPercentage ?? 0;
    this.report();

    const source = this.childInputs();
    const running = new Set<Promise<void>>();
    let readerError: unknown;
    try {
      try {
        while (this.stopReason === undefined) {
          while (running.size >= this.description.effectiveConcurrency && this.stopReason === undefined) {
            await Promise.race(running);
          }
          if (this.stopReason !== undefined) break;
          const next = await source.next();
          if (next.done === true) break;
          this.launch(next.value, running);
        }
      } catch (err) {
        readerError = err;
        this.stop('reader');
      }
      await Promise.all(running);
      if (readerError !== undefined) throw readerError;
      if (this.internalError !== undefined) throw this.internalError;
      // The last failures may only now be decidable against the final total.
      if (this.stopReason === undefined && this.thresholdExceeded()) this.stopReason = 'threshold';
      if (this.stopReason === 'threshold' && spec.resultWriter?.Resource !== undefined) {
        for (let next = await source.next(); next.done !== true; next = await source.next()) {
          this.outcomes.push({ index: next.value.index, status: 'PENDING', input: next.value.input });
        }
      }
    } finally {
      await source.return(undefined);
    }
    if (this.stopReason === 'parent') throw new StatesError('States.Aborted', 'The Map Run was aborted');
    if (this.stopReason === 'timeout') {
      throw new StatesError(
        'States.Timeout',
        `The Map Run exceeded TimeoutSeconds ${spec.timeoutSeconds ?? ''}`,
      );
    }
    const output = await this.results();
    if (this.stopReason === 'threshold') {
      throw new StatesError(EXCEED_TOLERATED_FAILURE_THRESHOLD, EXCEED_TOLERATED_FAILURE_CAUSE);
    }
    this.description.status = 'SUCCEEDED';
    return output;
  }

  private thresholdExceeded(): boolean {
    if (this.failedItems === 0) return false;
    if (this.toleratedCount === undefined && this.toleratedPercentage === undefined) return true;
    if (this.toleratedCount !== undefined && this.failedItems > this.toleratedCount) return true;
    const total = this.description.itemCounts.total;
    return (
      this.toleratedPercentage !== undefined &&
      this.readerDone &&
      total > 0 &&
      this.failedItems * 100 > this.toleratedPercentage * total
    );
  }

  private launch(child: ChildInput, running: Set<Promise<void>>): void {
    const name = randomUUID();
    const arn = `${this.childArnPrefix}${name}`;
    const { itemCounts, executionCounts } = this.description;
    itemCounts.pending -= child.items;
    itemCounts.running += child.items;
    executionCounts.pending -= 1;
    executionCounts.running += 1;
    this.report();
    const task = this.runOneChild(child, arn, name).catch((err: unknown) => {
      // Only a throwing 'mapRun' listener gets here; it fails the Map Run rather than vanish.
      this.internalError ??= err;
      this.stop('internal');
    });
    running.add(task);
    // Bookkeeping only: `task` has its catch above, and the Map Run awaits `running`.
    void task.then(() => running.delete(task));
  }

  private async runOneChild(child: ChildInput, arn: string, name: string): Promise<void> {
    const { itemCounts, executionCounts } = this.description;
    const startDate = this.run.now();
    // Each child has its own signal: the Map Run's abort reaches it, and so does its Express cap.
    const childAbort = new AbortController();
    const onRunAbort = (): void => childAbort.abort();
    if (this.abort.signal.aborted) childAbort.abort();
    else this.abort.signal.addEventListener('abort', onRunAbort, { once: true });
    let capTimer: NodeJS.Timeout | undefined;
    let result: ChildExecutionResult;
    try {
      const running = this.run.runChild({
        arn,
        name,
        stateMachineArn: this.childStateMachineArn,
        input: child.input,
        processor: this.run.spec.processor,
        mapRunArn: this.description.mapRunArn,
        signal: childAbort.signal,
      });
      if (this.run.spec.executionType === 'EXPRESS') {
        const capMs = this.run.expressTimeoutMs ?? EXPRESS_EXECUTION_TIMEOUT_MS;
        const timedOut = new Promise<ChildExecutionResult>((resolve) => {
          capTimer = setTimeout(() => {
            // Ends the child's states; a Lambda invocation it started is not cancelled by this (as in AWS).
            childAbort.abort();
            resolve({
              status: 'TIMED_OUT',
              error: 'States.Timeout',
              cause: `The Express child execution ran longer than the ${capMs / 1000} s an EXPRESS execution may run`,
              startDate,
              stopDate: this.run.now(),
            });
          }, capMs);
        });
        result = await Promise.race([running, timedOut]);
      } else {
        result = await running;
      }
    } catch (err) {
      const e = err as Error;
      result = { status: 'FAILED', error: e.name, cause: e.message, startDate, stopDate: this.run.now() };
    } finally {
      clearTimeout(capTimer);
      this.abort.signal.removeEventListener('abort', onRunAbort);
    }
    this.outcomes.push({
      index: child.index,
      status: result.status,
      input: this.run.spec.resultWriter !== undefined ? child.input : null,
      output: result.output,
      error: result.error,
      cause: result.cause,
      executionArn: arn,
      name,
      startDate: result.startDate,
      stopDate: result.stopDate,
    });
    const counter = counterFor(result.status);
    itemCounts.running -= child.items;
    itemCounts[counter] += child.items;
    executionCounts.running -= 1;
    executionCounts[counter] += 1;
    if (result.status !== 'SUCCEEDED') {
      this.failedItems += child.items;
      if (this.stopReason === undefined && this.thresholdExceeded()) this.stop('threshold');
    }
    this.report();
  }

  private async *selectedItems(): AsyncGenerator<JsonValue> {
    const { spec, input, context, evaluator } = this.run;
    let items: AsyncIterable<JsonValue>;
    if (spec.itemReader !== undefined) {
      const config = spec.itemReader.readerConfig;
      const maxItems = await this.resolveNumber(
        typeof config.MaxItems === 'number' ? config.MaxItems : undefined,
        typeof config.MaxItemsPath === 'string' ? config.MaxItemsPath : undefined,
        'MaxItems',
      );
      const request: ItemReaderRequest = {
        resource: spec.itemReader.resource,
        parameters: await evaluator.template(spec.itemReader.parameters, input, context),
        readerConfig: { ...(config as ItemReaderRequest['readerConfig']), MaxItems: maxItems },
      };
      items = readItems(request, this.run.objectStore);
    } else {
      const array = await evaluator.path(spec.itemsPath ?? '$', input, context);
      if (!Array.isArray(array)) {
        throw runtimeError(`ItemsPath ${spec.itemsPath ?? '$'} must point to an array, got ${typeof array}`);
      }
      items = (async function* () {
        yield* array;
      })();
    }
    let index = 0;
    for await (const item of items) {
      this.description.itemCounts.total += 1;
      this.description.itemCounts.pending += 1;
      yield spec.itemSelector === undefined
        ? item
        : await evaluator.template(spec.itemSelector, input, {
            ...context,
            Map: { Item: { Index: index, Value: item } },
          });
      index += 1;
    }
  }

  private async *childInputs(): AsyncGenerator<ChildInput> {
    const batcher = this.run.spec.itemBatcher;
    let index = 0;
    const emit = (input: JsonValue, items: number): ChildInput => {
      this.description.executionCounts.total += 1;
      this.description.executionCounts.pending += 1;
      return { index: index++, input, items };
    };
    if (batcher === undefined) {
      for await (const item of this.selectedItems()) yield emit(item, 1);
      this.readerDone = true;
      return;
    }
    const { input, context, evaluator } = this.run;
    const maxItems = await this.resolveNumber(
      typeof batcher.MaxItemsPerBatch === 'number' ? batcher.MaxItemsPerBatch : undefined,
      typeof batcher.MaxItemsPerBatchPath === 'string' ? batcher.MaxItemsPerBatchPath : undefined,
      'MaxItemsPerBatch',
    );
    const maxBytes = await this.resolveNumber(
      typeof batcher.MaxInputBytesPerBatch === 'number' ? batcher.MaxInputBytesPerBatch : undefined,
      typeof batcher.MaxInputBytesPerBatchPath === 'string' ? batcher.MaxInputBytesPerBatchPath : undefined,
      'MaxInputBytesPerBatch',
    );
    if (maxItems !== undefined && (!Number.isInteger(maxItems) || maxItems < 1)) {
      throw runtimeError(`MaxItemsPerBatch must be an integer >= 1, got ${maxItems}`);
    }
    if (
      maxBytes !== undefined &&
      (!Number.isInteger(maxBytes) || maxBytes < 1 || maxBytes > MAX_INPUT_BYTES_PER_BATCH)
    ) {
      throw runtimeError(
        `MaxInputBytesPerBatch must be an integer from 1 to ${MAX_INPUT_BYTES_PER_BATCH}, got ${maxBytes}`,
      );
    }
    const batchInput =
      batcher.BatchInput === undefined
        ? undefined
        : await evaluator.template(batcher.BatchInput, input, context);
    // Size of the serialized batch with no items: {"BatchInput":...,"Items":[]}
    const emptyBytes = Buffer.byteLength(
      JSON.stringify(batchInput === undefined ? { Items: [] } : { BatchInput: batchInput, Items: [] }),
    );
    const batchOf = (items: JsonValue[]): JsonValue =>
      batchInput === undefined ? { Items: items } : { BatchInput: batchInput, Items: items };
    let items: JsonValue[] = [];
    let bytes = emptyBytes;
    for await (const item of this.selectedItems()) {
      const itemBytes = Buffer.byteLength(JSON.stringify(item));
      const added = (items.length > 0 ? 1 : 0) + itemBytes;
      if (maxBytes !== undefined && emptyBytes + itemBytes > maxBytes) {
        throw new StatesError(
          'States.ItemReaderFailed',
          `an item of ${itemBytes} bytes does not fit in MaxInputBytesPerBatch ${maxBytes}`,
        );
      }
      if (items.length > 0 && maxBytes !== undefined && bytes + added > maxBytes) {
        yield emit(batchOf(items), items.length);
        items = [];
        bytes = emptyBytes;
      }
      bytes += (items.length > 0 ? 1 : 0) + itemBytes;
      items.push(item);
      if (maxItems !== undefined && items.length >= maxItems) {
        yield emit(batchOf(items), items.length);
        items = [];
        bytes = emptyBytes;
      }
    }
    if (items.length > 0) yield emit(batchOf(items), items.length);
    this.readerDone = true;
  }

  private async results(): Promise<JsonValue> {
    const writer = this.run.spec.resultWriter;
    const exporting = writer?.Resource !== undefined;
    const config = writerConfig(writer?.WriterConfig, exporting);
    if (writer !== undefined && exporting) {
      const parameters = await this.run.evaluator.template(
        writer.Parameters ?? {},
        this.run.input,
        this.run.context,
      );
      const params =
        typeof parameters === 'object' && parameters !== null ? (parameters as Record<string, unknown>) : {};
      if (typeof params.Bucket !== 'string' || params.Bucket === '') {
        throw new StatesError(
          'States.ResultWriterFailed',
          'ResultWriter Parameters.Bucket must be a non-empty string',
        );
      }
      if (params.Prefix !== undefined && typeof params.Prefix !== 'string') {
        throw new StatesError('States.ResultWriterFailed', 'ResultWriter Parameters.Prefix must be a string');
      }
      const written = await writeResults(
        this.run.objectStore,
        {
          bucket: params.Bucket,
          prefix: params.Prefix ?? '',
          mapRunArn: this.description.mapRunArn,
          mapRunId: this.mapRunId,
          childStateMachineArn: this.childStateMachineArn,
          config,
        },
        this.outcomes,
      );
      this.description.itemCounts.resultsWritten = written.resultsWritten;
      this.description.executionCounts.resultsWritten = written.resultsWritten;
      return written.output;
    }
    const ordered = [...this.outcomes].sort((a, b) => a.index - b.index);
    if (config.transformation === 'NONE') {
      return ordered
        .filter((o) => o.status !== 'PENDING')
        .map((o) => childRecord(o, this.childStateMachineArn)) as JsonValue;
    }
    // Tolerated failures contribute no entry.
    return transformOutputs(
      ordered.filter((o) => o.status === 'SUCCEEDED'),
      config.transformation,
    );
  }
}

/**
 * Runs one Distributed Map state: a full Map Run, returning the state's raw result (the child
 * outputs in item order, or `{MapRunArn, ResultWriterDetails}` with a ResultWriter).
 *
 * @throws StatesError with the ASL error the Map state fails with
 *   (States.ExceedToleratedFailureThreshold, States.ItemReaderFailed, States.ResultWriterFailed,
 *   States.Runtime, States.Timeout).
 */
export async function runDistributedMap(run: DistributedMapRun): Promise<JsonValue> {
  return new MapRunEmulation(run).execute();
}
