import { randomUUID } from 'node:crypto';

import type { BatchJobStatus } from './batch-status';

/** `source` of Bedrock's events. */
export const BATCH_EVENT_SOURCE = 'aws.bedrock';

/** `detail-type` of a batch inference job's state-change event. */
export const BATCH_EVENT_DETAIL_TYPE = 'Batch Inference Job State Change';

/** The `detail` of a "Batch Inference Job State Change" event, as Bedrock sends it. */
export interface BatchJobStateChangeDetail {
  /** Always `0.0`. */
  readonly version: '0.0';
  /** The account that owns the job. */
  readonly accountId: string;
  /** The job's name. */
  readonly batchJobName: string;
  /** The job's ARN. */
  readonly batchJobArn: string;
  /** The model, as an ARN (foundation model or inference profile). */
  readonly batchModelId: string;
  /** The new status. */
  readonly status: BatchJobStatus;
  /** The job's message (why it failed), or an empty string. */
  readonly failureMessage: string;
  /** The submit time, in the service's format: `Aug 28, 2024, 10:47:53 PM` (UTC). */
  readonly creationTime: string;
}

/** A state-change event, exactly as EventBridge hands it to a rule's target. */
export interface BatchJobStateChangeEvent {
  readonly version: '0';
  readonly id: string;
  readonly 'detail-type': typeof BATCH_EVENT_DETAIL_TYPE;
  readonly source: typeof BATCH_EVENT_SOURCE;
  readonly account: string;
  /** When the status changed, ISO 8601 without milliseconds. */
  readonly time: string;
  readonly region: string;
  /** `[jobArn]`. */
  readonly resources: readonly string[];
  readonly detail: BatchJobStateChangeDetail;
}

/** Receives state-change events in the order they happened; may be async (the next waits for it). */
export type BatchJobEventListener = (event: BatchJobStateChangeEvent) => void | Promise<void>;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Formats a time the way the event's `creationTime` shows it: `Aug 28, 2024, 10:47:53 PM` (UTC). */
export function formatEventCreationTime(ms: number): string {
  const d = new Date(ms);
  const hours = d.getUTCHours();
  const pad = (n: number): string => String(n).padStart(2, '0');
  const clock = `${hours % 12 === 0 ? 12 : hours % 12}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  return `${MONTHS[d.getUTCMonth()]} ${d.getUTCDate()}, ${d.getUTCFullYear()}, ${clock} ${hours < 12 ? 'AM' : 'PM'}`;
}

/** ISO 8601 without milliseconds, as EventBridge writes `time`. */
export function eventTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** What a state-change event says about a job. */
export interface BatchEventJobFacts {
  readonly jobArn: string;
  readonly jobName: string;
  /** The model as an ARN. */
  readonly modelArn: string;
  readonly status: BatchJobStatus;
  readonly message?: string;
  readonly submitTime: number;
}

/**
 * Builds the event Bedrock publishes when a job changes status.
 * @param job the job after the change
 * @param where account and region of the job
 * @param at when the change happened, in ms
 */
export function buildStateChangeEvent(
  job: BatchEventJobFacts,
  where: { accountId: string; region: string },
  at: number,
): BatchJobStateChangeEvent {
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': BATCH_EVENT_DETAIL_TYPE,
    source: BATCH_EVENT_SOURCE,
    account: where.accountId,
    time: eventTime(at),
    region: where.region,
    resources: [job.jobArn],
    detail: {
      version: '0.0',
      accountId: where.accountId,
      batchJobName: job.jobName,
      batchJobArn: job.jobArn,
      batchModelId: job.modelArn,
      status: job.status,
      failureMessage: job.message ?? '',
      creationTime: formatEventCreationTime(job.submitTime),
    },
  };
}
