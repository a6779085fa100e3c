/**
 * Public types of the local workflow runner.
 */
import type { Readable } from 'node:stream';

/** Source of "now" for every timestamp the runner records (dates, `$$` times, history). */
export interface Clock {
  /** The current time. */
  now(): Date;
}

/** What the runner hands to `invokeTask` for each Task state attempt. */
export interface TaskCall {
  /** Name of the Task state (unique within its state machine). */
  stateName: string;
  /** The state's `Resource`, e.g. `arn:aws:states:::lambda:invoke` or `...:sqs:sendMessage.waitForTaskToken`. */
  resource: string;
  /** The effective task input: the state input after InputPath and Parameters. */
  parameters: unknown;
  /** For `.waitForTaskToken` resources: the token of this attempt, also what `$$.Task.Token` resolved to. */
  taskToken?: string;
  /** The execution running the task (a Distributed Map child has its own). */
  execution: { arn: string; name: string };
  /** The task's TimeoutSeconds (or the value TimeoutSecondsPath resolved to), when it has one. */
  timeoutSeconds?: number;
  /** The task's HeartbeatSeconds (or HeartbeatSecondsPath value), when it has one. */
  heartbeatSeconds?: number;
}

/**
 * Runs one Task state attempt. Returns the task result, or throws an Error whose `name` is the
 * ASL error name (Retry and Catch match on it) and whose message becomes the Cause. For
 * `.waitForTaskToken` resources the return value is ignored: the result is what
 * `sendTaskSuccess` delivers.
 */
export type InvokeTask = (call: TaskCall) => Promise<unknown>;

/** One object of a listing, in the shape S3 ListObjectsV2 gives. */
export interface ObjectSummary {
  Key: string;
  Size: number;
  ETag: string;
  LastModified: Date;
  StorageClass: string;
}

/**
 * The object storage the Distributed Map emulation reads items from and writes results to.
 * `s3ObjectStore(client)` implements it with the real SDK; tests can use `InMemoryObjectStore`.
 */
export interface ObjectStore {
  /** A stream of the object's bytes; rejects when the object does not exist. */
  getObjectStream(bucket: string, key: string): Promise<Readable>;
  /** Writes (replaces) an object. */
  putObject(bucket: string, key: string, body: string): Promise<void>;
  /** Every object under the prefix, in key order, across pages. */
  listObjects(bucket: string, prefix: string): AsyncIterable<ObjectSummary>;
}

/** Execution statuses, as DescribeExecution reports them. */
export type ExecutionStatus = 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'ABORTED' | 'TIMED_OUT';

/** Map Run statuses, as DescribeMapRun reports them. */
export type MapRunStatus = 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'ABORTED';

/** Item or child-execution counters of a Map Run (DescribeMapRun's itemCounts / executionCounts). */
export interface MapRunCounts {
  /** Read but not started yet (items the reader has not reached are not counted until read). */
  pending: number;
  running: number;
  succeeded: number;
  failed: number;
  timedOut: number;
  aborted: number;
  /** Read so far; final once the reader is exhausted. */
  total: number;
  /** Written by the ResultWriter. */
  resultsWritten: number;
}

/** A Map Run's state, emitted on every change (`mapRun` event) and kept on the execution. */
export interface MapRunDescription {
  mapRunArn: string;
  /** Name of the Distributed Map state. */
  stateName: string;
  /** The execution whose Map state started this run. */
  executionArn: string;
  status: MapRunStatus;
  /** MaxConcurrency as declared; 0 means unlimited, as in DescribeMapRun. */
  maxConcurrency: number;
  /** The concurrency the emulation actually uses (unlimited is capped, 1,000 by default). */
  effectiveConcurrency: number;
  toleratedFailurePercentage: number;
  toleratedFailureCount: number;
  /** Counts of items (with an ItemBatcher, a child processes several items). */
  itemCounts: MapRunCounts;
  /** Counts of child executions. */
  executionCounts: MapRunCounts;
  startDate: Date;
  stopDate?: Date;
  /** Set when the run failed. */
  error?: string;
  cause?: string;
}

/** What DescribeExecution would say, plus the Map Runs the execution started. */
export interface ExecutionDescription {
  executionArn: string;
  stateMachineArn: string;
  name: string;
  status: ExecutionStatus;
  startDate: Date;
  stopDate?: Date;
  /** The execution input as JSON text. */
  input: string;
  /** The execution output as JSON text, when it succeeded. */
  output?: string;
  error?: string;
  cause?: string;
  /** Map Runs started by this execution (including those of its Distributed Map children). */
  mapRuns: MapRunDescription[];
}

/** One entry of an execution's history. */
export interface HistoryEvent {
  /** 1-based, in the order the runner recorded them. */
  id: number;
  timestamp: Date;
  type:
    | 'ExecutionStarted'
    | 'ExecutionSucceeded'
    | 'ExecutionFailed'
    | 'ExecutionAborted'
    | 'ExecutionTimedOut'
    | 'StateEntered'
    | 'StateExited'
    | 'StateFailed'
    | 'StateRetried'
    | 'StateCaught'
    | 'MapIterationStarted'
    | 'MapIterationSucceeded'
    | 'MapIterationFailed'
    | 'ParallelBranchStarted'
    | 'ParallelBranchSucceeded'
    | 'ParallelBranchFailed'
    | 'TaskScheduled'
    | 'TaskSubmitted'
    | 'TaskSucceeded'
    | 'TaskFailed'
    | 'TaskTimedOut'
    | 'MapRunStarted'
    | 'MapRunSucceeded'
    | 'MapRunFailed'
    | 'MapRunAborted';
  /** The state concerned, for state, task and Map Run events. */
  stateName?: string;
  /** Iteration index for events inside an inline Map. */
  index?: number;
  /** Input or output of the state or execution, when the event carries one. */
  input?: unknown;
  output?: unknown;
  error?: string;
  cause?: string;
  /** Task token (TaskSubmitted), Map Run ARN (MapRun*), retry attempt... */
  details?: Record<string, unknown>;
}

/** A `.waitForTaskToken` task waiting for SendTaskSuccess / SendTaskFailure. */
export interface WaitingTask {
  taskToken: string;
  executionArn: string;
  stateName: string;
  resource: string;
  parameters: unknown;
  startDate: Date;
  timeoutSeconds?: number;
  heartbeatSeconds?: number;
  lastHeartbeat?: Date;
}

/** Events a LocalWorkflow emits. */
export interface LocalWorkflowEventMap {
  /** An execution started or reached a final status. Distributed Map children are not reported. */
  execution: [ExecutionDescription];
  /** A Map Run started, progressed (child started or finished) or finished. */
  mapRun: [MapRunDescription];
  /** A history event was recorded for a (top-level) execution. */
  history: [{ executionArn: string; event: HistoryEvent }];
}
