import type { S3Client } from '@aws-sdk/client-s3';
import type { PipelineConfig } from '../lib/config';
import type { JobCounts } from '../lambda/shared/batch-jobs';
import type { RunInput } from '../lambda/shared/contracts';

/**
 * What every command talks to: a deployed environment (AWS) or the local runtime's state directory. Both answer the
 * same questions; what only one of them can answer (live Map Run counters, Bedrock's job counters, starting an
 * execution) comes back empty or as a usage error from the other.
 */

/** The stack outputs the CLI needs, discovered (CloudFormation DescribeStacks, or the synthesized template). */
export interface StackOutputs {
  /** `CorpusPipeline-<env>`. */
  readonly stackName: string;
  readonly ingestBucket: string;
  readonly ingestPrefix: string;
  readonly outputBucket: string;
  readonly stateMachineArn: string;
  /** The failure lane's queue URL (the redrive destination). */
  readonly failureQueueUrl: string;
  /** The failure lane's dead-letter queue URL (the redrive source). */
  readonly failureDlqUrl: string;
  /** Batch mode's jobs table; absent on a stack deployed before batch mode. */
  readonly jobsTableName?: string;
}

/** A workflow execution (one run: the execution name is the runId). */
export interface ExecutionInfo {
  readonly runId: string;
  readonly executionArn: string;
  /** Step Functions' status: RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE. */
  readonly status: string;
  /** ISO-8601. */
  readonly startedAt?: string;
  /** ISO-8601. */
  readonly stoppedAt?: string;
  readonly error?: string;
  readonly cause?: string;
}

/** A Distributed Map run's counters (DescribeMapRun). */
export interface MapRunInfo {
  readonly mapRunArn: string;
  /** The Map state (its label): `BatchJobs` (items are shards) or `FanOut` (items are records). */
  readonly stateName: string;
  /** RUNNING, SUCCEEDED, FAILED, ABORTED. */
  readonly status: string;
  readonly startedAt?: string;
  readonly stoppedAt?: string;
  readonly items: {
    readonly total: number;
    readonly pending: number;
    readonly running: number;
    readonly succeeded: number;
    readonly failed: number;
    readonly timedOut: number;
    readonly aborted: number;
  };
  readonly toleratedFailurePercentage?: number;
}

/** A batch mode batch job as the jobs table knows it, with Bedrock's live status and counters when asked for. */
export interface JobInfo {
  readonly shard: number;
  readonly jobArn: string;
  readonly jobName: string;
  /** Bedrock's status (live when asked for and the job is still open, else the last one recorded). */
  readonly status: string;
  readonly submittedAt: string;
  readonly endedAt?: string;
  /** Bedrock's record counters (GetModelInvocationJob's, or the last the job-state handler recorded). */
  readonly counts?: JobCounts;
  readonly message?: string;
  /** Why the live look-up failed, when it did (the row then shows the recorded status). */
  readonly liveError?: string;
}

/** What {@link Backend.redrive} is asked to do. */
export interface RedriveOptions {
  /** Wait for the move task to end, reporting progress. */
  readonly wait: boolean;
  /** SQS MaxNumberOfMessagesPerSecond (1 to 500); SQS picks a rate when absent. */
  readonly maxPerSecond?: number;
  /** Milliseconds between ListMessageMoveTasks polls. */
  readonly pollIntervalMs: number;
  /** Give up waiting after this long (the task goes on). */
  readonly timeoutMs: number;
  /** Receives the task's progress at each poll. */
  readonly onProgress?: (outcome: RedriveOutcome) => void;
  /** The clock to wait with. @default the real one */
  readonly clock?: { readonly now: () => number; readonly sleep: (ms: number) => Promise<void> };
}

/** What a redrive did (the move task's last known state). */
export interface RedriveOutcome {
  /** The dead-letter queue's ARN (the move task's source). */
  readonly sourceArn: string;
  /** The failure queue's ARN (the destination). */
  readonly destinationArn: string;
  /** Messages in the dead-letter queue when the redrive started (ApproximateNumberOfMessages). */
  readonly waiting: number;
  /** NOTHING_TO_MOVE (the DLQ was empty), or the move task's status: RUNNING, COMPLETED, CANCELLING, CANCELLED, FAILED. */
  readonly status: string;
  readonly taskHandle?: string;
  readonly moved: number;
  readonly toMove?: number;
  readonly failureReason?: string;
  /** True when the wait ended before the task did (timeout or `--no-wait`). */
  readonly stillRunning: boolean;
}

/** What a reconcile did. */
export interface ReconcileOutcome {
  /** How it was done: the Lambda function invoked, or `local` (no function runs outside `local run`). */
  readonly via: string;
  /** The reconciler's summary (checked, resumed, closed, heartbeats, abandoned) when it ran. */
  readonly summary?: Record<string, number>;
  /** Jobs whose wait is open, when the backend listed them instead of reconciling. */
  readonly inFlight?: readonly JobInfo[];
  /** What the operator should know. */
  readonly note?: string;
}

/** The backend a command runs against. */
export interface Backend {
  readonly kind: 'aws' | 'local';
  /** For messages: `stack CorpusPipeline-dev (us-east-1)` or `local state in /path`. */
  readonly label: string;
  /** The environment's validated settings (pricing, batch, ...). */
  readonly config: PipelineConfig;
  readonly outputs: StackOutputs;
  /** A client for the output bucket. */
  readonly s3: S3Client;
  /** Recent executions, newest first; undefined when the backend keeps no execution history (local). */
  listExecutions(limit: number): Promise<ExecutionInfo[] | undefined>;
  /** The run's execution, or undefined when there is none (or no history). */
  describeExecution(runId: string): Promise<ExecutionInfo | undefined>;
  /** The Distributed Map runs of an execution with their counters (empty where there are none to ask). */
  listMapRuns(executionArn: string): Promise<MapRunInfo[]>;
  /** The run's batch jobs from the jobs table, shard order; with `live`, open jobs are asked of Bedrock. */
  listJobs(runId: string, live: boolean): Promise<JobInfo[]>;
  /**
   * Starts an execution with a validated input.
   * @throws CliUsageError where runs cannot be started this way (local)
   */
  startExecution(input: RunInput, name?: string): Promise<ExecutionInfo>;
  /** Moves the failure lane's dead-letter queue back to its source queue (SQS message move task). */
  redrive(options: RedriveOptions): Promise<RedriveOutcome>;
  /** Runs the batch job reconciler once. */
  reconcile(): Promise<ReconcileOutcome>;
  /** Releases clients and stops what was started (the local emulators). */
  close(): Promise<void>;
}

/** Which backend a command was asked to use (from `--env` / `--local` / `--state-dir`). */
export type BackendChoice =
  { readonly kind: 'aws'; readonly envName: string } | { readonly kind: 'local'; readonly stateDir: string };

/** Opens a backend; bin/ supplies it (it is the one place that reads cdk.json context). */
export type BackendOpener = (choice: BackendChoice) => Promise<Backend>;
