import type { GetModelInvocationJobCommandOutput } from '@aws-sdk/client-bedrock';
import { ConditionalCheckFailedException, type CreateTableCommandInput } from '@aws-sdk/client-dynamodb';
import { SendTaskSuccessCommand, type SFNClient } from '@aws-sdk/client-sfn';
import {
  GetCommand,
  QueryCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
  type QueryCommandOutput,
} from '@aws-sdk/lib-dynamodb';
import * as z from 'zod';
import {
  BATCH_JOB_TERMINAL_STATUSES,
  batchJobOutcomeSchema,
  type BatchJobOutcome,
  type BatchJobTerminalStatus,
} from './contracts';
import { callDependency, errorMessage, errorName } from './errors';
import { PIPELINE_METRICS } from './contracts/metrics';
import { JOBS_TABLE_KEYS } from './contracts/names';
import { logger, metrics } from './observability';

/**
 * Batch mode's job bookkeeping: the jobs table that maps each Bedrock batch inference job (by ARN) to the task token its
 * shard's child execution waits on, and the one way a wait is resumed ({@link resumeWait}), shared by SubmitJob, the
 * job-state handler and the reconciler.
 *
 * Item: `{jobArn, runId, shard, jobName, taskToken, submittedAt, outputPrefix, lastStatus?, counts?, endedAt?,
 * inFlight?, registeredAt, updatedAt, expiresAt}`. `inFlight` is `'1'` while the shard waits and removed when the
 * wait is resumed: the `in-flight` index is sparse, so the reconciler reads only jobs still waited on.
 */

/** The jobs table's key, index and TTL attribute names (kept under this name for its callers). */
export { JOBS_TABLE_KEYS } from './contracts/names';

/**
 * The jobs table as a CreateTable request (on-demand), for tools and tests that make one outside CloudFormation; the
 * CDK construct declares the same keys and indexes.
 */
export function jobsTableDefinition(tableName: string): CreateTableCommandInput {
  const k = JOBS_TABLE_KEYS;
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [
      { AttributeName: k.partitionKey, AttributeType: 'S' },
      { AttributeName: k.byRunPartitionKey, AttributeType: 'S' },
      { AttributeName: k.byRunSortKey, AttributeType: 'N' },
      { AttributeName: k.inFlightPartitionKey, AttributeType: 'S' },
      { AttributeName: k.inFlightSortKey, AttributeType: 'S' },
    ],
    KeySchema: [{ AttributeName: k.partitionKey, KeyType: 'HASH' }],
    GlobalSecondaryIndexes: [
      {
        IndexName: k.byRunIndex,
        KeySchema: [
          { AttributeName: k.byRunPartitionKey, KeyType: 'HASH' },
          { AttributeName: k.byRunSortKey, KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
      {
        IndexName: k.inFlightIndex,
        KeySchema: [
          { AttributeName: k.inFlightPartitionKey, KeyType: 'HASH' },
          { AttributeName: k.inFlightSortKey, KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'ALL' },
      },
    ],
  };
}

/** The value of `inFlight` while a job's wait is open. */
export const IN_FLIGHT = '1';

/** The status recorded for a job whose execution went away while it ran (the reconciler stopped it). */
export const ABANDONED_STATUS = 'Abandoned';

/** Step Functions errors that mean the wait is already closed: a duplicate or late resume, harmless. */
export const CLOSED_WAIT_ERRORS: ReadonlySet<string> = new Set([
  'TaskTimedOut',
  'TaskDoesNotExist',
  'InvalidToken',
]);

/**
 * CreateModelInvocationJob answered ServiceQuotaExceededException: the model's submitted + in-progress job slots are
 * held by other jobs. Not a fault: the workflow retries the submit with backoff until a slot frees up.
 */
export class BatchQuotaBusyError extends Error {
  override readonly name = 'BatchQuotaBusyError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * CreateModelInvocationJob rejected the request (ValidationException, AccessDeniedException): a configuration or
 * permission problem a retry cannot fix. The message says what Bedrock said and what to check.
 */
export class BatchJobRejectedError extends Error {
  override readonly name = 'BatchJobRejectedError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A job's outcome was asked for while the job is still running (a caller bug). */
export class BatchJobNotEndedError extends Error {
  override readonly name = 'BatchJobNotEndedError';
}

/** An item of the jobs table does not have the shape this code writes (written by something else, or corrupted). */
export class JobRecordError extends Error {
  override readonly name = 'JobRecordError';
}

/** Bedrock's record counters of a job, when it reports them. */
export interface JobCounts {
  total?: number;
  processed?: number;
  success?: number;
  error?: number;
}

const countsSchema = z.object({
  total: z.number().int().nonnegative().optional(),
  processed: z.number().int().nonnegative().optional(),
  success: z.number().int().nonnegative().optional(),
  error: z.number().int().nonnegative().optional(),
});

const storedJobSchema = z.object({
  jobArn: z.string().min(1),
  runId: z.string().min(1),
  shard: z.number().int().nonnegative(),
  jobName: z.string().min(1),
  taskToken: z.string().min(1),
  submittedAt: z.string().min(1),
  outputPrefix: z.string().min(1),
  lastStatus: z.string().optional(),
  counts: countsSchema.optional(),
  endedAt: z.string().optional(),
  inFlight: z.string().optional(),
  registeredAt: z.string().optional(),
  updatedAt: z.string().optional(),
  expiresAt: z.number().optional(),
});

/** One item of the jobs table. */
export type StoredJob = z.infer<typeof storedJobSchema>;

/** What SubmitJob records about a job it created or found. */
export interface JobRegistration {
  jobArn: string;
  runId: string;
  shard: number;
  jobName: string;
  /** The task token of the current attempt (a retried submit replaces the previous attempt's). */
  taskToken: string;
  /** `<shard outputPrefix><jobId>/` (see {@link jobOutputPrefix}). */
  outputPrefix: string;
  /** ISO-8601; kept from the first registration when the job is registered again. Default: now. */
  submittedAt?: string;
}

/** Where the jobs table is and how long its items last. */
export interface JobStoreOptions {
  client: DynamoDBDocumentClient;
  tableName: string;
  /** Items expire this many days after they were last registered or ended. */
  ttlDays: number;
  /** Items per Query page of the listings. Default: DynamoDB's (up to 1 MB a page). */
  queryPageSize?: number;
  now?: () => number;
}

/** The jobs table. Every write is idempotent; reads of one item are strongly consistent. */
export class JobStore {
  private readonly now: () => number;

  constructor(private readonly options: JobStoreOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * Records a job and the task token its shard now waits with, and opens the wait (`inFlight`). Registering a job
   * again (a retried submit) replaces the token and reopens the wait but keeps the first `submittedAt` (an earlier
   * `endedAt` is removed: the new attempt closes the wait again when it resumes it).
   * @returns the item as stored
   */
  async register(job: JobRegistration): Promise<StoredJob> {
    const now = this.now();
    const out = await callDependency('jobs table UpdateItem (register)', () =>
      this.options.client.send(
        new UpdateCommand({
          TableName: this.options.tableName,
          Key: { [JOBS_TABLE_KEYS.partitionKey]: job.jobArn },
          UpdateExpression:
            'SET runId = :run, #shard = :shard, jobName = :name, taskToken = :token, outputPrefix = :out, ' +
            'submittedAt = if_not_exists(submittedAt, :submitted), inFlight = :inFlight, registeredAt = :now, ' +
            'updatedAt = :now, expiresAt = :exp REMOVE endedAt',
          ExpressionAttributeNames: { '#shard': 'shard' },
          ExpressionAttributeValues: {
            ':run': job.runId,
            ':shard': job.shard,
            ':name': job.jobName,
            ':token': job.taskToken,
            ':out': job.outputPrefix,
            ':submitted': job.submittedAt ?? new Date(now).toISOString(),
            ':inFlight': IN_FLIGHT,
            ':now': new Date(now).toISOString(),
            ':exp': this.expiresAt(now),
          },
          ReturnValues: 'ALL_NEW',
        }),
      ),
    );
    return parseStoredJob(out.Attributes, job.jobArn);
  }

  /** The item of a job, or undefined when the table does not know it (another team's job). */
  async get(jobArn: string): Promise<StoredJob | undefined> {
    const out = await callDependency('jobs table GetItem', () =>
      this.options.client.send(
        new GetCommand({
          TableName: this.options.tableName,
          Key: { [JOBS_TABLE_KEYS.partitionKey]: jobArn },
          ConsistentRead: true,
        }),
      ),
    );
    return out.Item === undefined ? undefined : parseStoredJob(out.Item, jobArn);
  }

  /**
   * Records a running job's status and counters (progress for the CLI). Only while its wait is open, so a late event
   * never overwrites the final status.
   * @returns false when the job is unknown or its wait already ended (nothing written)
   */
  async recordStatus(jobArn: string, status: string, counts?: JobCounts): Promise<boolean> {
    const cleanCounts = definedCounts(counts);
    try {
      await callDependency('jobs table UpdateItem (status)', () =>
        this.options.client.send(
          new UpdateCommand({
            TableName: this.options.tableName,
            Key: { [JOBS_TABLE_KEYS.partitionKey]: jobArn },
            UpdateExpression: `SET lastStatus = :status, updatedAt = :now${cleanCounts ? ', #counts = :counts' : ''}`,
            ConditionExpression: 'attribute_exists(inFlight)',
            ...(cleanCounts ? { ExpressionAttributeNames: { '#counts': 'counts' } } : {}),
            ExpressionAttributeValues: {
              ':status': status,
              ':now': new Date(this.now()).toISOString(),
              ...(cleanCounts ? { ':counts': cleanCounts } : {}),
            },
          }),
        ),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }

  /**
   * Closes a job's wait: records its final status and end time and removes `inFlight`. Idempotent. With
   * `taskToken`, only when the item still holds that token: a retried submit that registered a newer token owns the
   * wait from then on (and checks the job itself right after registering).
   * @returns false when the job is unknown or holds another token (nothing written)
   */
  async markEnded(jobArn: string, status: string, endedAt: string, taskToken?: string): Promise<boolean> {
    const now = this.now();
    try {
      await callDependency('jobs table UpdateItem (ended)', () =>
        this.options.client.send(
          new UpdateCommand({
            TableName: this.options.tableName,
            Key: { [JOBS_TABLE_KEYS.partitionKey]: jobArn },
            UpdateExpression:
              'SET lastStatus = :status, endedAt = :ended, updatedAt = :now, expiresAt = :exp REMOVE inFlight',
            ConditionExpression:
              taskToken === undefined
                ? 'attribute_exists(jobArn)'
                : 'attribute_exists(jobArn) AND taskToken = :token',
            ExpressionAttributeValues: {
              ':status': status,
              ':ended': endedAt,
              ':now': new Date(now).toISOString(),
              ':exp': this.expiresAt(now),
              ...(taskToken === undefined ? {} : { ':token': taskToken }),
            },
          }),
        ),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }

  /** Every job whose wait is open, oldest first (the sparse `in-flight` index; eventually consistent). */
  listInFlight(): Promise<StoredJob[]> {
    return this.queryAll('in-flight', {
      IndexName: JOBS_TABLE_KEYS.inFlightIndex,
      KeyConditionExpression: '#pk = :pk',
      ExpressionAttributeNames: { '#pk': JOBS_TABLE_KEYS.inFlightPartitionKey },
      ExpressionAttributeValues: { ':pk': IN_FLIGHT },
    });
  }

  /** Every job of a run, in shard order (the `by-run` index; eventually consistent). */
  listByRun(runId: string): Promise<StoredJob[]> {
    return this.queryAll('by-run', {
      IndexName: JOBS_TABLE_KEYS.byRunIndex,
      KeyConditionExpression: '#pk = :pk',
      ExpressionAttributeNames: { '#pk': JOBS_TABLE_KEYS.byRunPartitionKey },
      ExpressionAttributeValues: { ':pk': runId },
    });
  }

  private async queryAll(
    what: string,
    query: {
      IndexName: string;
      KeyConditionExpression: string;
      ExpressionAttributeNames: Record<string, string>;
      ExpressionAttributeValues: Record<string, unknown>;
    },
  ): Promise<StoredJob[]> {
    const jobs: StoredJob[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const out: QueryCommandOutput = await callDependency(`jobs table Query (${what})`, () =>
        this.options.client.send(
          new QueryCommand({
            TableName: this.options.tableName,
            ...query,
            ...(this.options.queryPageSize ? { Limit: this.options.queryPageSize } : {}),
            ...(startKey ? { ExclusiveStartKey: startKey } : {}),
          }),
        ),
      );
      for (const item of out.Items ?? []) jobs.push(parseStoredJob(item, String(item.jobArn)));
      startKey = out.LastEvaluatedKey;
    } while (startKey);
    return jobs;
  }

  private expiresAt(now: number): number {
    return Math.floor(now / 1000) + this.options.ttlDays * 86_400;
  }
}

function parseStoredJob(item: Record<string, unknown> | undefined, jobArn: string): StoredJob {
  const parsed = storedJobSchema.safeParse(item);
  if (!parsed.success) {
    throw new JobRecordError(`The jobs table item of ${jobArn} is malformed: ${parsed.error.message}`);
  }
  return parsed.data;
}

function definedCounts(counts: JobCounts | undefined): JobCounts | undefined {
  if (!counts) return undefined;
  const entries = Object.entries(counts).filter(([, v]) => typeof v === 'number');
  return entries.length > 0 ? (Object.fromEntries(entries) as JobCounts) : undefined;
}

/** True for a status after which a batch job never changes again. */
export function isTerminalStatus(status: string | undefined): status is BatchJobTerminalStatus {
  return (BATCH_JOB_TERMINAL_STATUSES as readonly string[]).includes(status ?? '');
}

/** The job id: the last path segment of `arn:aws:bedrock:<region>:<account>:model-invocation-job/<jobId>`. */
export function jobIdOf(jobArn: string): string {
  const id = jobArn.slice(jobArn.lastIndexOf('/') + 1);
  if (!id || !jobArn.includes('/')) throw new JobRecordError(`Not a batch job ARN: ${jobArn}`);
  return id;
}

/** Where Bedrock writes a job's output: `<shard outputPrefix>/<jobId>/` (one slash between the parts). */
export function jobOutputPrefix(shardOutputPrefix: string, jobArn: string): string {
  const base = shardOutputPrefix.endsWith('/') ? shardOutputPrefix : `${shardOutputPrefix}/`;
  return `${base}${jobIdOf(jobArn)}/`;
}

/** Bedrock's counters of a job (only those it reports), or undefined when it reports none. */
export function countsOf(job: GetModelInvocationJobCommandOutput): JobCounts | undefined {
  return definedCounts({
    total: job.totalRecordCount,
    processed: job.processedRecordCount,
    success: job.successRecordCount,
    error: job.errorRecordCount,
  });
}

/**
 * How a job ended, from GetModelInvocationJob (authoritative: status, message, times, counters) and its item.
 * @throws BatchJobNotEndedError when the job is not in a terminal status
 */
export function outcomeOf(job: GetModelInvocationJobCommandOutput, stored: StoredJob): BatchJobOutcome {
  if (!isTerminalStatus(job.status)) {
    throw new BatchJobNotEndedError(`Job ${stored.jobArn} has not ended (status ${String(job.status)})`);
  }
  const counts = countsOf(job);
  return batchJobOutcomeSchema.parse({
    jobArn: stored.jobArn,
    jobName: job.jobName ?? stored.jobName,
    shard: stored.shard,
    status: job.status,
    ...(job.message ? { message: job.message } : {}),
    submittedAt: job.submitTime ? job.submitTime.toISOString() : stored.submittedAt,
    ...(job.endTime ? { endedAt: job.endTime.toISOString() } : {}),
    outputPrefix: stored.outputPrefix,
    ...(counts ? { counts } : {}),
  });
}

/** True when Step Functions says the task token's wait is already closed (resumed, timed out, or gone). */
export function isClosedWaitError(err: unknown): boolean {
  return CLOSED_WAIT_ERRORS.has(errorName(err));
}

/** What {@link resumeWait} talks to. */
export interface ResumeDeps {
  sfn: SFNClient;
  store: JobStore;
  now?: () => number;
}

/** What {@link resumeWait} did. */
export interface ResumeResult {
  outcome: BatchJobOutcome;
  /** False when Step Functions said the wait was already closed (a duplicate or late resume). */
  delivered: boolean;
  /**
   * False when the item held a newer token by then (a retried submit registered again: it resumes its own wait) or
   * was gone; the item keeps `inFlight` and the reconciler looks at it again.
   */
  marked: boolean;
}

/**
 * Resumes a shard's wait with how its job ended (SendTaskSuccess with the outcome as output), then closes the wait
 * in the table. In that order: a crash in between leads to a second, harmless send, never to a lost resume. A wait
 * already closed (TaskTimedOut, TaskDoesNotExist, InvalidToken) is the documented duplicate case: logged, and the
 * item is closed all the same. Other errors propagate (transient ones as TransientDependencyError).
 * @throws BatchJobNotEndedError when the job has not ended
 */
export async function resumeWait(
  deps: ResumeDeps,
  stored: StoredJob,
  job: GetModelInvocationJobCommandOutput,
): Promise<ResumeResult> {
  const outcome = outcomeOf(job, stored);
  let delivered = true;
  try {
    await callDependency('Step Functions SendTaskSuccess', () =>
      deps.sfn.send(
        new SendTaskSuccessCommand({ taskToken: stored.taskToken, output: JSON.stringify(outcome) }),
      ),
    );
  } catch (err) {
    if (!isClosedWaitError(err)) throw err;
    delivered = false;
    logger.info('The shard wait was already closed; nothing to resume', {
      jobArn: stored.jobArn,
      runId: stored.runId,
      shard: stored.shard,
      status: outcome.status,
      reason: `${errorName(err)}: ${errorMessage(err)}`,
    });
  }
  const endedAt = outcome.endedAt ?? new Date((deps.now ?? Date.now)()).toISOString();
  if (delivered) {
    const seconds = (Date.parse(endedAt) - Date.parse(outcome.submittedAt)) / 1000;
    if (Number.isFinite(seconds))
      metrics.addMetric(PIPELINE_METRICS.batchJobDurationSeconds, 'Seconds', Math.max(0, seconds));
  }
  const marked = await deps.store.markEnded(stored.jobArn, outcome.status, endedAt, stored.taskToken);
  if (!marked) {
    logger.info(
      'The job item holds a newer task token (a retried submit); that attempt resumes its own wait',
      {
        jobArn: stored.jobArn,
        runId: stored.runId,
        shard: stored.shard,
      },
    );
  }
  return { outcome, delivered, marked };
}
