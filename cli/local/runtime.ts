import { join, resolve } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { SQSClient } from '@aws-sdk/client-sqs';
import type { BedrockSimulator } from '@corpus-pipeline/local-aws/bedrock-simulator';
import type { CrashFault } from '@corpus-pipeline/local-aws/cloud/lambda-runner';
import type { CfnTemplate, ProvisionedStack } from '@corpus-pipeline/local-aws/cloud/template';
import { startLocalCloud, type MapRunProgress } from '@corpus-pipeline/local-aws/local-cloud';
import {
  EXPRESS_EXECUTION_TIMEOUT_MS,
  type ExecutionDescription,
  type LocalWorkflow,
} from '@corpus-pipeline/local-aws/workflow';
import { defaultParseWorkers } from '../../lambda/plan/parse-pool';
import { ENTRY_METADATA_KEY } from '../../lambda/shared/contracts/names';
import { STACK_OUTPUTS } from '../../lambda/shared/contracts/outputs';
import { ENTRY_METADATA_KEY as LOCAL_ENTRY_METADATA_KEY } from '@corpus-pipeline/local-aws/cloud/template-describe';
import { faultReport, type FaultReport } from './fault-report';
import { mapItemUnit } from './progress';
import { expressBudgetEnvironment, simulatorOptionsFor, type SimulatorSettings } from './runtime-settings';
import { synthLocalTemplate } from './synth';

// The local cloud finds each function's TypeScript entry by the metadata key the pipeline's Lambda construct sets: a
// compile error here when the two spell it differently.
const SAME_ENTRY_METADATA_KEY: typeof LOCAL_ENTRY_METADATA_KEY = ENTRY_METADATA_KEY;
void SAME_ENTRY_METADATA_KEY;

/** Where the repository (and so the handler sources) lives. */
export const REPO_ROOT = resolve(__dirname, '..', '..');

/** The local runtime's settings. */
export interface LocalRuntimeOptions {
  /** State directory: buckets, ledger, queues and logs persist here between runs. */
  stateDir: string;
  /** Bedrock simulator settings (quotas, latency, faults). */
  bedrock?: SimulatorSettings;
  /** Echo function logs to the console instead of `<stateDir>/logs/`. @default false */
  echoLogs?: boolean;
  /**
   * Every scheduled rule (the batch reconciler's `rate(...)`) fires at this interval offline, so lost job events
   * are recovered in seconds rather than minutes. @default 2000
   */
  scheduleIntervalMs?: number;
  /** Faults of the runtime itself (the Bedrock simulator's are in `bedrock`). */
  faults?: RuntimeFaults;
  /**
   * A failed SQS message is visible again after this many ms (instead of the queue's visibility timeout), so the
   * failure lane retries in seconds offline. @default 1000
   */
  sqsRetryAfterMs?: number;
  /**
   * How long an EXPRESS child of a Distributed Map (a Converse fan-out child) may run before it times out with
   * `States.Timeout`; a Lambda invocation it started runs on. When it is not AWS's 300 s, every function also gets
   * it (in seconds) as `EXPRESS_CHILD_BUDGET_SECONDS`. Tests shrink it to see an overrun. @default 300000
   */
  expressTimeoutMs?: number;
}

/** Faults the runtime injects. */
export interface RuntimeFaults {
  /** Every SQS message is delivered twice (as after a lapsed visibility timeout). */
  redeliver?: boolean;
  /**
   * Crash faults (`crash=HANDLER@STEP:N`): the handler's invocations that reach STEP die there, N times in all
   * (see {@link CrashFault}).
   */
  crashes?: CrashFault[];
}

/** A workflow execution as the runtime reports it. */
export type ExecutionSummary = ExecutionDescription;

export type { MapRunProgress };

/** The running local pipeline. */
export interface LocalRuntime {
  stack: ProvisionedStack;
  s3: S3Client;
  sqs: SQSClient;
  ingestBucket: string;
  ingestPrefix: string;
  outputBucket: string;
  /** The Bedrock simulator (batch jobs, stats, faults). */
  bedrock: BedrockSimulator;
  /** The workflow runner. */
  workflow: LocalWorkflow;
  /** What the faults did so far: the crashes that fired, by point, and the simulator's throttled and faulted calls. */
  faultReport(): FaultReport;
  /** Resolves with the first execution started from now on that matches. */
  nextExecution(match: (e: ExecutionSummary) => boolean, timeoutMs: number): Promise<ExecutionSummary>;
  /** Waits for an execution to end, reporting its Distributed Maps' progress. */
  waitForExecution(
    executionArn: string,
    timeoutMs: number,
    progress?: (progress: MapRunProgress) => void,
  ): Promise<ExecutionSummary>;
  stop(): Promise<void>;
}

/** Execution environments per function: enough for the fan-out's concurrency on one machine. */
const FUNCTION_CONCURRENCY = 8;

/**
 * Brings the synthesized `local` template to life on the local cloud (@corpus-pipeline/local-aws): emulators, the
 * Bedrock simulator on the pipeline's model catalog and configured quotas, the buses, the functions and the workflow.
 * Nothing here repeats the stack's wiring: it is read from the template.
 */
export async function startLocalRuntime(options: LocalRuntimeOptions): Promise<LocalRuntime> {
  const stateDir = resolve(options.stateDir);
  const { template, stackName } = synthLocalTemplate(join(stateDir, 'cdk.out'));
  const expressTimeoutMs = options.expressTimeoutMs ?? EXPRESS_EXECUTION_TIMEOUT_MS;
  const cloud = await startLocalCloud({
    template: template as unknown as CfnTemplate,
    stackName,
    stateDir,
    projectRoot: REPO_ROOT,
    // The simulator enforces the on-demand quotas (RPM/TPM) and batch quotas the stack was configured with.
    simulator: (stack, location) => simulatorOptionsFor(stack.functions, options.bedrock, location),
    functionEnvironment: {
      // Plan's parse workers follow this machine's CPUs, not the vCPUs of the deployed function's memory size.
      PLAN_PARSE_WORKERS: String(defaultParseWorkers()),
      ...expressBudgetEnvironment(expressTimeoutMs),
    },
    functionConcurrency: FUNCTION_CONCURRENCY,
    ...(options.echoLogs === undefined ? {} : { echoLogs: options.echoLogs }),
    scheduleIntervalMs: options.scheduleIntervalMs ?? 2000,
    sqsRetryAfterMs: options.sqsRetryAfterMs ?? 1000,
    redeliver: options.faults?.redeliver ?? false,
    crashes: options.faults?.crashes ?? [],
    expressTimeoutMs,
    itemUnit: mapItemUnit,
  });
  const { stack } = cloud;
  return {
    stack,
    s3: cloud.s3,
    sqs: cloud.sqs,
    ingestBucket: stack.output(STACK_OUTPUTS.ingestBucket),
    ingestPrefix: stack.output(STACK_OUTPUTS.ingestPrefix),
    outputBucket: stack.output(STACK_OUTPUTS.outputBucket),
    bedrock: cloud.bedrock,
    workflow: cloud.workflow,
    faultReport: () => faultReport(cloud.functions.values(), cloud.bedrock.stats(), cloud.pollers.stats()),
    nextExecution: (match, timeoutMs) => cloud.nextExecution(match, timeoutMs),
    waitForExecution: (executionArn, timeoutMs, progress) =>
      cloud.waitForExecution(executionArn, timeoutMs, progress),
    stop: () => cloud.stop(),
  };
}
