import { randomUUID } from 'node:crypto';
import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import * as z from 'zod';
import {
  RUN_UPDATED,
  runKeys,
  type FailureLaneMessage,
  type FailureLine,
  type ModelCalls,
  type ResultLine,
  type Usage,
} from '../shared/contracts';
import { callDependency, errorMessage } from '../shared/errors';
import { faultPoint } from '../shared/fault-points';
import { unitOwner, type Claimant, type ClaimOutcome, type Ledger } from '../shared/ledger';
import { classifyModelError, type ModelCaller } from '../converse/model-caller';
import { logger, metrics } from '../shared/observability';
import { contentHashOf, sha256 } from '../shared/records';
import type { ResultsPublisher } from '../shared/results-queue';
import { putRunEvent } from '../shared/run-events';
import { RunState, writeManifest } from '../shared/run-state';
import { putJsonl } from '../shared/s3-jsonl';
import { sqsAttributeValue, sqsJsonBody } from '../shared/sqs-text';
import {
  AttemptHistory,
  LostAnswerError,
  type Answer,
  type AttemptLine,
  type Reason,
} from '../converse/unit-of-work';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';

/**
 * The failure lane's consumer: an SQS event source on the failure queue (ReportBatchItemFailures). Each message is a
 * {@link FailureLaneMessage}. A retryable failure is the lane's to settle, as its own unit of work per record: it
 * claims the record (taking over what a batch queued), calls the model, and publishes the answer through the ledger
 * as a batch does; a record it cannot get an answer for (the model rejects it, or it is still failing on its last
 * receive) is failed for good, with its failure line and the DLQ message carrying the reason. Each settled record
 * is recorded in the runs table and the run's manifest gets a new revision. A failure that cannot succeed by
 * retrying (a bad line, a validation failure a batch already recorded) goes to the DLQ at once with its reason. Only
 * a failure worth retrying later (the model throttled again, a dependency failed) is reported as a batch item
 * failure, after the lane handed its claim back: the message returns to the queue.
 */

/** A failure-lane message as it arrives (validated: the queue is fed by this pipeline, but a redrive may carry anything). */
export const failureLaneMessageSchema = z.object({
  recordId: z.string().min(1).optional(),
  source: z.string().min(1).optional(),
  line: z.number().int().positive().optional(),
  stage: z.enum(['source', 'plan', 'converse', 'batch', 'fanout', 'finalize']),
  error: z.object({ code: z.string(), message: z.string(), retryable: z.boolean().optional() }),
  runId: z.string().min(1),
  ledgerScope: z.string().min(1),
  format: z.enum(['converse', 'native']).optional(),
  modelInput: z.record(z.string(), z.unknown()).optional(),
  /** Why an earlier pass of this consumer dead-lettered it (a redriven message carries it). */
  laneReason: z.string().optional(),
});

/** A validated failure-lane message: the contract's message, and the reason of an earlier dead-lettering. */
export type LaneMessage = z.infer<typeof failureLaneMessageSchema>;
// Compile-time check that the schema describes the contract's message.
const schemaMatchesContract = (m: LaneMessage): FailureLaneMessage => m;
void schemaMatchesContract;

/** What the consumer talks to. */
export interface FailureLaneConsumerDeps {
  s3: S3Client;
  sqs: SQSClient;
  ledger: Pick<Ledger, 'claim' | 'commit' | 'fail' | 'queue' | 'markDelivered' | 'get'>;
  /** The runs table: the lane's settled records and the run manifest's revisions. */
  runs: Pick<RunState, 'putLaneOutcome'>;
  callModel: ModelCaller;
  /** The failure queue's dead-letter queue. */
  dlqUrl: string;
  outputBucket: string;
  /** The results queue, when one is configured. */
  resultsPublisher?: Pick<ResultsPublisher, 'publish'> | undefined;
  /** How long the lane's claim on a record holds before another owner may take it over, in ms. */
  leaseMs: number;
  /** Milliseconds left in this invocation. */
  remainingMs: () => number;
  /**
   * The failure queue's maxReceiveCount. When set, a message still failing retryably on its last receive goes to the
   * DLQ with its reason (the redrive policy would move it there without one).
   */
  maxReceiveCount?: number;
  /** A new attempt id. @default randomUUID */
  newAttempt?: () => string;
  now?: () => Date;
}

/** What became of one message. */
export type LaneOutcome =
  /** Answered and published by the lane: the record's line is in its lane results file. */
  | { kind: 'published'; recordId: string; runId: string; resultKey: string; usage: Usage }
  /** A record this run handed over that another run held or published meanwhile: skipped for this run. */
  | { kind: 'skipped'; recordId: string; runId: string }
  /** Nothing to do: the record was already settled (a redelivery, a duplicate message). */
  | { kind: 'already-settled'; recordId: string }
  /** Failed for good by the lane: its line is in its lane failures file, and the message in the DLQ. */
  | { kind: 'failed'; recordId: string; runId: string; code: string; reason: string }
  /** Sent to the DLQ with its reason; the record's outcome was recorded where the failure happened. */
  | { kind: 'dead-lettered'; code: string; reason: string };

/** The message is worth retrying later: the consumer reports it as a batch item failure, and it returns to the queue. */
export class RetryLaterError extends Error {
  override readonly name = 'RetryLaterError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Time kept back at the end of an invocation to write the result and publish it. */
const SAFETY_MARGIN_MS = 10_000;
/** A DLQ message keeps room below SQS's 256 KiB for its attributes. */
const MAX_DLQ_BODY_BYTES = 250 * 1024;
const MAX_REASON_CHARS = 1_000;

/** The lane's files of one record: one of each per record, named by its hash, so every attempt writes the same key. */
export const laneKeys = {
  /** The record's line when the lane published it. */
  results: (runId: string, recordId: string): string => runKeys.results(runId, laneName(recordId)),
  /** The record's line when the lane failed it for good. */
  failures: (runId: string, recordId: string): string => runKeys.failures(runId, laneName(recordId)),
  /** The lane's attempts at the record (answers staged before the ledger commit). */
  attemptsPrefix: (runId: string, recordId: string): string =>
    `runs/${runId}/attempts/${laneName(recordId)}/`,
};

/** Kept for callers of the earlier name. */
export const laneResultKey = laneKeys.results;

function laneName(recordId: string): string {
  return `lane-${sha256(recordId).slice(0, 32)}`;
}

/** Parses a message body: the message, or why it is unusable (and the body as far as it could be read). */
export function parseLaneMessage(
  body: string,
):
  | { ok: true; message: LaneMessage; raw: Record<string, unknown> }
  | { ok: false; reason: string; raw: unknown } {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    return { ok: false, reason: `the message body is not JSON (${errorMessage(err)})`, raw: body };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return { ok: false, reason: 'the message body is not a JSON object', raw };
  }
  const parsed = failureLaneMessageSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`)
      .join('; ');
    return { ok: false, reason: `the message is not a failure-lane message: ${problems}`, raw };
  }
  return { ok: true, message: parsed.data, raw: raw as Record<string, unknown> };
}

/**
 * Whether the consumer gives a message its verdict on this receive: one receive before the queue's maxReceiveCount,
 * so that a consumer killed while handling it (a crash, a timeout) still gets the last receive to settle it. Were it
 * left to the last receive, such a kill would let the redrive policy move the message to the DLQ with no verdict,
 * and its record would stay pending in the run.
 */
export function isLastReceive(
  record: Pick<SQSRecord, 'attributes'>,
  maxReceiveCount: number | undefined,
): boolean {
  if (maxReceiveCount === undefined) return false;
  return receiveCount(record) >= Math.max(1, maxReceiveCount - 1);
}

/** The receive count SQS reports on a record (1 on the first delivery). */
function receiveCount(record: Pick<SQSRecord, 'attributes'>): number {
  const n = Number(record.attributes?.ApproximateReceiveCount);
  return Number.isFinite(n) && n > 0 ? n : 1;
}

/**
 * Handles one failure-lane message. A retryable failure with its recordId is the lane's to settle: the lane claims
 * the record (as its own unit of work, `<runId>/lane/<recordId>`), calls the model, and publishes the answer through
 * the ledger exactly as a batch does (stage the answer, commit, write the line, results queue), or fails it for good
 * (its line in the lane's failures file, the message in the DLQ with the reason). Every other message (a bad line, a
 * validation failure a batch already recorded) goes to the DLQ at once with its reason.
 * @returns what became of it (every outcome counts as processed: the message is deleted)
 * @throws RetryLaterError when the model failed retryably again, or another unit still holds the record
 * @throws TransientDependencyError when S3, DynamoDB or SQS failed transiently (the message returns to the queue)
 */
export async function processLaneRecord(
  record: Pick<SQSRecord, 'messageId' | 'body' | 'attributes'>,
  deps: FailureLaneConsumerDeps,
): Promise<LaneOutcome> {
  const parsed = parseLaneMessage(record.body);
  if (!parsed.ok) return deadLetter(deps, parsed.raw, 'MalformedMessage', parsed.reason);
  const { message, raw } = parsed;
  const { recordId, runId, ledgerScope: scope } = message;
  if (message.error.retryable !== true || recordId === undefined) {
    return deadLetter(
      deps,
      raw,
      message.error.code,
      `not retryable (${message.error.code}: ${message.error.message}); fix the record and run the corpus again`,
    );
  }

  const who: Claimant = {
    runId,
    owner: unitOwner(runId, 'lane', recordId),
    attempt: (deps.newAttempt ?? randomUUID)(),
  };
  const claim = await deps.ledger.claim(scope, recordId, who, {
    ...(message.modelInput ? { contentHash: contentHashOf(message.modelInput) } : {}),
    leaseMs: deps.leaseMs,
    // A redriven message (it carries the lane's earlier reason) retries a record the lane failed for good; a mere
    // redelivery of it (the lane died after failing it) finishes that failure instead of asking the model again.
    reclaimOwn: message.laneReason === undefined ? 'queued' : 'queued-or-failed',
  });
  const lastReceive = isLastReceive(record, deps.maxReceiveCount);
  const settled = await settleByClaim(deps, { record, message, raw, who, lastReceive }, claim);
  if (settled) return settled;
  const called = await callLaneModel(deps, { record, message, raw, who, lastReceive });
  if ('outcome' in called) return called.outcome;
  return publishAnswer(deps, message, who, called.answer);
}

/** One message the lane holds the claim of, as the steps of {@link processLaneRecord} see it. */
interface LaneTurn {
  record: Pick<SQSRecord, 'attributes'>;
  message: LaneMessage;
  raw: Record<string, unknown>;
  who: Claimant;
  /** Whether this is the message's last receive (its verdict is due now). */
  lastReceive: boolean;
}

/**
 * What the claim alone settles: a record this lane decided in an earlier attempt is finished, one published, reused
 * or held elsewhere gets its outcome; undefined when the lane holds the claim and must call the model.
 * @throws RetryLaterError when another unit holds the record and this is not the last receive
 */
async function settleByClaim(
  deps: FailureLaneConsumerDeps,
  turn: LaneTurn,
  claim: ClaimOutcome,
): Promise<LaneOutcome | undefined> {
  const { record, message, raw, who, lastReceive } = turn;
  const { recordId, runId, ledgerScope: scope } = message as LaneMessage & { recordId: string };
  switch (claim.kind) {
    case 'claimed':
      faultPoint('failure-lane-consumer', 'after-claim');
      return undefined;
    case 'mine':
      // Decided by the lane in an earlier attempt that died before finishing: finish it.
      if (claim.entry.status === 'failed') {
        return failForGood(deps, raw, message, undefined, claim.entry.error ?? message.error);
      }
      return finishPublished(deps, message, who, claim.entry.attempt);
    case 'published':
      // A unit of this run published it after handing it over (a repeated hand-over): nothing is the lane's.
      if (claim.entry.runId === runId) return { kind: 'already-settled', recordId };
      await deps.runs.putLaneOutcome(runId, recordId, {
        outcome: 'skipped',
        inputTokens: 0,
        outputTokens: 0,
      });
      return { kind: 'skipped', recordId, runId };
    case 'reused':
      return failForGood(deps, raw, message, undefined, {
        code: 'RecordIdReused',
        message: `recordId ${JSON.stringify(recordId)} was published in ledger scope ${JSON.stringify(scope)} by run ${claim.entry.runId} for a different request; give the record its own recordId`,
      });
    case 'held': {
      const holder = `${claim.entry.status} by ${claim.entry.owner}`;
      if (!lastReceive) {
        throw new RetryLaterError('ClaimHeld', `the record is ${holder}; retried once that claim ends`);
      }
      // Its holder decides it; the record stays pending in this run until a redrive finds it settled.
      return deadLetter(
        deps,
        raw,
        'ClaimHeld',
        `still ${holder} after ${receiveCount(record)} receives; redrive the DLQ once that claim has ended`,
      );
    }
  }
}

/**
 * Calls the model once for the record, within the invocation's time.
 * @returns the answer, or the outcome of a record failed for good
 * @throws RetryLaterError when the call failed retryably (or was not made for lack of time) and this is not the
 *   last receive: the record is given back to the queue
 */
async function callLaneModel(
  deps: FailureLaneConsumerDeps,
  turn: LaneTurn,
): Promise<{ answer: Answer } | { outcome: LaneOutcome }> {
  const { record, message, raw, who, lastReceive } = turn;
  const recordId = message.recordId as string;
  if (message.modelInput === undefined || message.format === undefined) {
    return {
      outcome: await failForGood(deps, raw, message, who, {
        code: message.error.code,
        message:
          `${message.error.message}; it could not be retried here because its request was too large for an SQS ` +
          'message: run the corpus again to retry it',
      }),
    };
  }
  if (deps.remainingMs() < SAFETY_MARGIN_MS) {
    const reason = { code: 'NotAttempted', message: 'the invocation ran out of time before the model call' };
    // On its last receive the redrive policy would move it to the DLQ without a reason and leave it unsettled.
    if (lastReceive) {
      return {
        outcome: await failForGood(deps, raw, message, who, {
          ...reason,
          message: `${reason.message} on its last receive; redrive the DLQ to retry it`,
        }),
      };
    }
    await giveBack(deps, message, who, reason);
    throw new RetryLaterError(reason.code, reason.message);
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), Math.max(1_000, deps.remainingMs() - SAFETY_MARGIN_MS));
  try {
    const answer = await deps.callModel(
      { recordId, format: message.format, modelInput: message.modelInput },
      controller.signal,
    );
    return { answer };
  } catch (err) {
    const failure = classifyModelError(err, controller.signal.aborted);
    const reason = { code: failure.code, message: failure.message };
    if (!failure.retryable) {
      return {
        outcome: await failForGood(deps, raw, message, who, {
          ...reason,
          message: `the model rejected the retried request: ${failure.message}`,
        }),
      };
    }
    if (lastReceive) {
      return {
        outcome: await failForGood(deps, raw, message, who, {
          ...reason,
          message: `still failing after ${receiveCount(record)} receives: ${failure.message}`,
        }),
      };
    }
    await giveBack(deps, message, who, reason);
    throw new RetryLaterError(failure.code, failure.message);
  } finally {
    clearTimeout(timer);
  }
}

/** Stages the answer, commits it in the ledger and writes what the publication leaves behind. */
async function publishAnswer(
  deps: FailureLaneConsumerDeps,
  message: LaneMessage,
  who: Claimant,
  answer: Answer,
): Promise<LaneOutcome> {
  const { runId, ledgerScope: scope } = message;
  const recordId = message.recordId as string;
  // Staged before the commit: an attempt that dies after committing leaves the answer for the next one to write.
  const attemptKey = `${laneKeys.attemptsPrefix(runId, recordId)}${who.attempt}.jsonl`;
  const staged: AttemptLine = {
    recordId,
    attempt: who.attempt,
    at: (deps.now ?? (() => new Date()))().toISOString(),
    outcome: 'answered',
    modelOutput: answer.modelOutput,
    usage: answer.usage,
  };
  await putJsonl(deps.s3, deps.outputBucket, attemptKey, [staged]);
  const committed = await deps.ledger.commit(scope, recordId, who, laneKeys.results(runId, recordId));
  faultPoint('failure-lane-consumer', 'after-commit');
  if (committed.kind === 'lost') {
    // A later attempt of the lane took the record back meanwhile (a duplicate delivery): it settles it.
    return { kind: 'already-settled', recordId };
  }
  return finishPublished(deps, message, who, who.attempt);
}

/**
 * Writes what a lane publication leaves behind, from the attempt that committed it: the record's result line (and
 * no failure line), its outcome in the runs table, its results-queue message.
 */
async function finishPublished(
  deps: FailureLaneConsumerDeps,
  message: LaneMessage,
  who: Claimant,
  committedAttempt: string,
): Promise<LaneOutcome> {
  const { runId, ledgerScope: scope } = message;
  const recordId = message.recordId as string;
  const history = await AttemptHistory.load(
    deps.s3,
    deps.outputBucket,
    `${laneKeys.attemptsPrefix(runId, recordId)}${committedAttempt}.jsonl`,
  );
  const answer = history.answer(recordId);
  if (!answer) {
    throw new LostAnswerError(`the lane published ${recordId} but its staged answer is missing`);
  }
  const resultKey = laneKeys.results(runId, recordId);
  const line: ResultLine = { recordId, modelOutput: answer.modelOutput, usage: answer.usage };
  await putJsonl(deps.s3, deps.outputBucket, resultKey, [line]);
  faultPoint('failure-lane-consumer', 'after-results');
  // A redrive that succeeds replaces the record's earlier final failure.
  await deleteObject(deps, laneKeys.failures(runId, recordId));
  await deps.runs.putLaneOutcome(runId, recordId, {
    outcome: 'succeeded',
    inputTokens: answer.usage.inputTokens,
    outputTokens: answer.usage.outputTokens,
  });
  const entry = await deps.ledger.get(scope, recordId);
  if (deps.resultsPublisher && entry?.delivered !== true) {
    await deps.resultsPublisher.publish([
      { runId, recordId, ledgerScope: scope, resultKey, usage: answer.usage },
    ]);
    faultPoint('failure-lane-consumer', 'after-queue-send');
    await deps.ledger.markDelivered(scope, recordId, who.owner);
  }
  return { kind: 'published', recordId, runId, resultKey, usage: answer.usage };
}

/**
 * The lane gives a record up for good: the ledger says failed (when the lane holds the claim), its failure line is
 * written, its outcome recorded, and the message goes to the DLQ with the reason (a redrive retries it).
 */
async function failForGood(
  deps: FailureLaneConsumerDeps,
  raw: Record<string, unknown>,
  message: LaneMessage,
  who: Claimant | undefined,
  reason: Reason,
): Promise<LaneOutcome> {
  const { runId, ledgerScope: scope } = message;
  const recordId = message.recordId as string;
  if (who) {
    const failed = await deps.ledger.fail(scope, recordId, who, reason);
    if (failed.kind === 'lost') return { kind: 'already-settled', recordId };
  }
  const failure: FailureLine = {
    recordId,
    ...(message.source !== undefined ? { source: message.source } : {}),
    ...(message.line !== undefined ? { line: message.line } : {}),
    stage: message.stage,
    error: { code: reason.code, message: reason.message, retryable: false },
  };
  await putJsonl(deps.s3, deps.outputBucket, laneKeys.failures(runId, recordId), [failure]);
  await deps.runs.putLaneOutcome(runId, recordId, {
    outcome: 'failed',
    inputTokens: 0,
    outputTokens: 0,
    code: reason.code,
  });
  const dead = await deadLetter(deps, raw, reason.code, reason.message);
  faultPoint('failure-lane-consumer', 'after-dead-letter');
  return {
    kind: 'failed',
    recordId,
    runId,
    code: reason.code,
    reason: dead.kind === 'dead-lettered' ? dead.reason : reason.message,
  };
}

/** The lane gives its claim back before the message returns to the queue, so the next receive may take it. */
async function giveBack(
  deps: FailureLaneConsumerDeps,
  message: LaneMessage,
  who: Claimant,
  reason: Reason,
): Promise<void> {
  await deps.ledger.queue(message.ledgerScope, message.recordId as string, who, reason);
}

async function deleteObject(deps: FailureLaneConsumerDeps, key: string): Promise<void> {
  await callDependency('S3 DeleteObject', () =>
    deps.s3.send(new DeleteObjectCommand({ Bucket: deps.outputBucket, Key: key })),
  );
}

/** Sends a message to the DLQ with its reason (`laneReason` in the body and as an attribute). */
async function deadLetter(
  deps: FailureLaneConsumerDeps,
  raw: unknown,
  code: string,
  reason: string,
): Promise<LaneOutcome> {
  // Cut by code points, so no surrogate pair is split.
  const chars = [...reason];
  const laneReason =
    chars.length > MAX_REASON_CHARS ? `${chars.slice(0, MAX_REASON_CHARS - 1).join('')}…` : reason;
  const body = dlqBody(raw, laneReason);
  await callDependency('SQS SendMessage (failure DLQ)', () =>
    deps.sqs.send(
      new SendMessageCommand({
        QueueUrl: deps.dlqUrl,
        MessageBody: body,
        MessageAttributes: {
          errorCode: { DataType: 'String', StringValue: sqsAttributeValue(code) },
          laneReason: { DataType: 'String', StringValue: sqsAttributeValue(laneReason) },
        },
      }),
    ),
  );
  return { kind: 'dead-lettered', code, reason: laneReason };
}

/**
 * The original body plus `laneReason`; a body that is not an object is kept as `originalBody`. Encoded so SQS accepts
 * whatever the record holds (sqs-text.ts).
 */
function dlqBody(raw: unknown, laneReason: string): string {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    const original = typeof raw === 'string' ? raw : JSON.stringify(raw);
    const text = sqsJsonBody({ laneReason, originalBody: original });
    if (Buffer.byteLength(text) <= MAX_DLQ_BODY_BYTES) return text;
    return sqsJsonBody({ laneReason, originalBody: original.slice(0, 200_000), truncated: true });
  }
  const text = sqsJsonBody({ ...raw, laneReason });
  if (Buffer.byteLength(text) <= MAX_DLQ_BODY_BYTES) return text;
  // Only a request body can make it this large; the failures file keeps the record's line number.
  const { modelInput: _dropped, ...rest } = raw as Record<string, unknown>;
  return sqsJsonBody({ ...rest, laneReason: `${laneReason} (request body omitted: too large for SQS)` });
}

/**
 * Processes one SQS batch: each message through {@link processLaneRecord}, in parallel; the ones to retry later are
 * returned as batch item failures (a batch where every message is to retry later is reported as such, not thrown: a
 * throttling storm is not a function error). Then, for each run whose records the lane settled, the run's manifest
 * gets a new revision and a `Corpus Run Updated` event, once Finalize has written it.
 */
export async function processLaneBatch(
  event: SQSEvent,
  deps: FailureLaneConsumerDeps & LaneRunDeps,
  context?: Context,
): Promise<SQSBatchResponse> {
  const tally: Record<LaneOutcome['kind'] | 'retryLater', number> = {
    published: 0,
    skipped: 0,
    'already-settled': 0,
    failed: 0,
    'dead-lettered': 0,
    retryLater: 0,
  };
  const settledRuns = new Set<string>();
  const callsAtStart = deps.modelCalls?.() ?? { total: 0, throttled: 0, retried: 0 };
  const recordHandler = async (record: SQSRecord): Promise<LaneOutcome> => {
    try {
      const outcome = await processLaneRecord(record, deps);
      tally[outcome.kind]++;
      if (outcome.kind === 'published' || outcome.kind === 'failed' || outcome.kind === 'skipped') {
        settledRuns.add(outcome.runId);
      }
      if (outcome.kind === 'dead-lettered' || outcome.kind === 'failed') {
        logger.warn('failure-lane message dead-lettered', {
          messageId: record.messageId,
          code: outcome.code,
          reason: outcome.reason,
        });
      }
      return outcome;
    } catch (err) {
      tally.retryLater++;
      logger.warn('failure-lane message returned to the queue', {
        messageId: record.messageId,
        error: errorMessage(err),
      });
      throw err;
    }
  };
  const response = await processPartialResponse(event, recordHandler, new BatchProcessor(EventType.SQS), {
    ...(context ? { context } : {}),
    throwOnFullBatchFailure: false,
  });
  const calls = diffCalls(deps.modelCalls?.() ?? callsAtStart, callsAtStart);
  const runsInBatch = new Set<string>();
  for (const record of event.Records) {
    const parsed = parseLaneMessage(record.body);
    if (parsed.ok) runsInBatch.add(parsed.message.runId);
  }
  // The batch's model calls are the run's when the batch holds one run (the usual case); split evenly otherwise.
  for (const runId of runsInBatch) {
    await deps.runs.addLaneModelCalls(runId, shareOf(calls, runsInBatch.size));
  }
  for (const runId of settledRuns) await publishRevision(deps, runId);
  metrics.addMetric(PIPELINE_METRICS.laneRecordsPublished, 'Count', tally.published);
  metrics.addMetric(PIPELINE_METRICS.laneRecordsFailed, 'Count', tally.failed);
  metrics.addMetric(PIPELINE_METRICS.laneRecordsSkipped, 'Count', tally.skipped);
  metrics.addMetric(PIPELINE_METRICS.laneAlreadySettled, 'Count', tally['already-settled']);
  metrics.addMetric(PIPELINE_METRICS.laneDeadLettered, 'Count', tally['dead-lettered'] + tally.failed);
  metrics.addMetric(PIPELINE_METRICS.laneRetryLater, 'Count', tally.retryLater);
  logger.info('failure-lane batch processed', { records: event.Records.length, ...tally });
  return response;
}

/** What the consumer needs beyond one message: the run's manifest and event, and the model-call count. */
export interface LaneRunDeps {
  runs: Pick<RunState, 'putLaneOutcome' | 'addLaneModelCalls' | 'nextRevision' | 'getRun' | 'laneTotals'>;
  events: Pick<EventBridgeClient, 'send'>;
  eventBusName: string;
  /** The model calls this environment made so far. */
  modelCalls?: () => ModelCalls;
}

/** A new manifest revision for a run the lane settled records of, and its `Corpus Run Updated` event. */
async function publishRevision(deps: FailureLaneConsumerDeps & LaneRunDeps, runId: string): Promise<void> {
  const revision = await deps.runs.nextRevision(runId);
  if (revision === undefined) return;
  faultPoint('failure-lane-consumer', 'before-revision');
  const manifest = await writeManifest(deps.runs, deps.s3, deps.outputBucket, runId, revision);
  await putRunEvent(deps.events, deps.eventBusName, manifest, RUN_UPDATED);
  logger.info('run manifest revised', { runId, revision: manifest.revision, counts: manifest.counts });
}

function diffCalls(end: ModelCalls, start: ModelCalls): ModelCalls {
  return {
    total: end.total - start.total,
    throttled: end.throttled - start.throttled,
    retried: end.retried - start.retried,
  };
}

function shareOf(calls: ModelCalls, parts: number): ModelCalls {
  return {
    total: Math.round(calls.total / parts),
    throttled: Math.round(calls.throttled / parts),
    retried: Math.round(calls.retried / parts),
  };
}
