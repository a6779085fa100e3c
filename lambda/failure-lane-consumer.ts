import { S3Client } from '@aws-sdk/client-s3';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import * as z from 'zod';
import { runKeys, type FailureLaneMessage, type ResultLine, type Usage } from './shared/contracts';
import { readEnv, positiveInt, required } from './shared/env';
import { callDependency, errorMessage } from './shared/errors';
import { Ledger } from './shared/ledger';
import { classifyModelError, type ModelCaller } from './shared/model-caller';
import { logger, metrics } from './shared/observability';
import { publishingContext } from './shared/publishing-context';
import { contentHashOf, sha256 } from './shared/records';
import type { ResultsPublisher } from './shared/results-queue';
import { putJsonl } from './shared/s3-jsonl';

/**
 * The failure lane's consumer: an SQS event source on the failure queue (ReportBatchItemFailures). Each message is a
 * {@link FailureLaneMessage}. A retryable failure that carries its request is sent to the model again and, when it
 * is answered, published through the ledger exactly as ConverseBatch publishes (claim, results file, results queue,
 * mark published). A failure that cannot succeed by retrying (not retryable, no request, a malformed message, a
 * request the model rejects) goes to the DLQ at once with its reason, and the message is reported processed, so it
 * does not burn receives. A record the ledger already holds as published (a redrive after a re-run) is dropped
 * without a model call. Only a failure worth retrying later (the model throttled again, a dependency failed) is
 * reported as a batch item failure: the message returns to the queue, and maxReceiveCount moves it to the DLQ.
 */

/** A failure-lane message as it arrives (validated: the queue is fed by this pipeline, but a redrive may carry anything). */
export const failureLaneMessageSchema = z.object({
  recordId: z.string().min(1).optional(),
  line: z.number().int().positive().optional(),
  stage: z.enum(['plan', 'converse', 'batch', 'fanout', 'finalize']),
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
  ledger: Pick<Ledger, 'findPublished' | 'claim' | 'markPublished'>;
  callModel: ModelCaller;
  /** The failure queue's dead-letter queue. */
  dlqUrl: string;
  outputBucket: string;
  /** The results queue, when one is configured. */
  resultsPublisher?: Pick<ResultsPublisher, 'publish'>;
  /** Milliseconds left in this invocation. */
  remainingMs: () => number;
  /**
   * The failure queue's maxReceiveCount. When set, a message still failing retryably on its last receive goes to the
   * DLQ with its reason (the redrive policy would move it there without one).
   */
  maxReceiveCount?: number;
}

/** What became of one message. */
export type LaneOutcome =
  /** Answered and published by this consumer. */
  | { kind: 'published'; recordId: string; resultKey: string; usage: Usage }
  /** Answered, but another run holds or published the record: nothing written (counted as skipped). */
  | { kind: 'skipped'; recordId: string }
  /** The ledger already holds the record as published: dropped without a model call. */
  | { kind: 'already-published'; recordId: string }
  /** Sent to the DLQ with its reason. */
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

/**
 * The results file of a record answered through the lane: one file per record, named by its hash, so a redelivery or
 * a redrive overwrites the same file instead of adding a second line.
 */
export function laneResultKey(runId: string, recordId: string): string {
  return runKeys.results(runId, `lane-${sha256(recordId).slice(0, 32)}`);
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

/** The receive count SQS reports on a record (1 on the first delivery). */
function receiveCount(record: Pick<SQSRecord, 'attributes'>): number {
  const n = Number(record.attributes?.ApproximateReceiveCount);
  return Number.isFinite(n) && n > 0 ? n : 1;
}

/**
 * Handles one failure-lane message.
 * @returns what became of it (every outcome counts as processed: the message is deleted)
 * @throws RetryLaterError when the model failed retryably again (the message returns to the queue)
 * @throws TransientDependencyError when S3, DynamoDB or SQS failed transiently (the message returns to the queue)
 */
export async function processLaneRecord(
  record: Pick<SQSRecord, 'messageId' | 'body' | 'attributes'>,
  deps: FailureLaneConsumerDeps,
): Promise<LaneOutcome> {
  const parsed = parseLaneMessage(record.body);
  if (!parsed.ok) return deadLetter(deps, parsed.raw, 'MalformedMessage', parsed.reason);
  const { message, raw } = parsed;
  const { recordId, runId, ledgerScope } = message;

  if (recordId !== undefined) {
    const published = await deps.ledger.findPublished(ledgerScope, [recordId]);
    if (published.has(recordId)) return { kind: 'already-published', recordId };
  }
  if (message.error.retryable !== true) {
    return deadLetter(
      deps,
      raw,
      message.error.code,
      `not retryable (${message.error.code}: ${message.error.message}); fix the record and run the corpus again`,
    );
  }
  if (recordId === undefined || message.modelInput === undefined || message.format === undefined) {
    return deadLetter(
      deps,
      raw,
      message.error.code,
      'retryable, but the message does not carry the request (recordId, format and modelInput; a request too large ' +
        'for SQS is left out): run the corpus again to retry it',
    );
  }

  const lastReceive = deps.maxReceiveCount !== undefined && receiveCount(record) >= deps.maxReceiveCount;
  if (deps.remainingMs() < SAFETY_MARGIN_MS) {
    throw new RetryLaterError('NotAttempted', 'the invocation ran out of time before this message was sent');
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), Math.max(1_000, deps.remainingMs() - SAFETY_MARGIN_MS));
  let answer: { modelOutput: unknown; usage: Usage };
  try {
    answer = await deps.callModel(
      { recordId, format: message.format, modelInput: message.modelInput },
      controller.signal,
    );
  } catch (err) {
    const failure = classifyModelError(err, controller.signal.aborted);
    if (!failure.retryable) {
      return deadLetter(
        deps,
        raw,
        failure.code,
        `the model rejected the retried request: ${failure.message}`,
      );
    }
    if (lastReceive) {
      return deadLetter(
        deps,
        raw,
        failure.code,
        `still failing after ${receiveCount(record)} receives: ${failure.message}`,
      );
    }
    throw new RetryLaterError(failure.code, failure.message);
  } finally {
    clearTimeout(timer);
  }

  if ((await deps.ledger.claim(ledgerScope, recordId, runId, contentHashOf(message.modelInput))) === 'held') {
    return { kind: 'skipped', recordId };
  }
  // Results file, then results queue, then the ledger says published: a crash in between re-publishes on the next
  // receive into the same file and with the same queue deduplication id.
  const resultKey = laneResultKey(runId, recordId);
  const line: ResultLine = { recordId, modelOutput: answer.modelOutput, usage: answer.usage };
  await putJsonl(deps.s3, deps.outputBucket, resultKey, [line]);
  await deps.resultsPublisher?.publish([{ runId, recordId, ledgerScope, resultKey, usage: answer.usage }]);
  await deps.ledger.markPublished(ledgerScope, recordId, runId);
  return { kind: 'published', recordId, resultKey, usage: answer.usage };
}

/** Sends a message to the DLQ with its reason (`laneReason` in the body and as an attribute). */
async function deadLetter(
  deps: FailureLaneConsumerDeps,
  raw: unknown,
  code: string,
  reason: string,
): Promise<LaneOutcome> {
  const laneReason = reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS - 1)}…` : reason;
  const body = dlqBody(raw, laneReason);
  await callDependency('SQS SendMessage (failure DLQ)', () =>
    deps.sqs.send(
      new SendMessageCommand({
        QueueUrl: deps.dlqUrl,
        MessageBody: body,
        MessageAttributes: {
          errorCode: { DataType: 'String', StringValue: code || 'Unknown' },
          laneReason: { DataType: 'String', StringValue: laneReason },
        },
      }),
    ),
  );
  return { kind: 'dead-lettered', code, reason: laneReason };
}

/** The original body plus `laneReason`; a body that is not an object is kept as `originalBody`. */
function dlqBody(raw: unknown, laneReason: string): string {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    const original = typeof raw === 'string' ? raw : JSON.stringify(raw);
    const text = JSON.stringify({ laneReason, originalBody: original });
    if (Buffer.byteLength(text) <= MAX_DLQ_BODY_BYTES) return text;
    return JSON.stringify({ laneReason, originalBody: original.slice(0, 200_000), truncated: true });
  }
  const text = JSON.stringify({ ...raw, laneReason });
  if (Buffer.byteLength(text) <= MAX_DLQ_BODY_BYTES) return text;
  // Only a request body can make it this large; the failures file keeps the record's line number.
  const { modelInput: _dropped, ...rest } = raw as Record<string, unknown>;
  return JSON.stringify({ ...rest, laneReason: `${laneReason} (request body omitted: too large for SQS)` });
}

/**
 * Processes one SQS batch: each message through {@link processLaneRecord}, in parallel; the ones to retry later are
 * returned as batch item failures. A batch where every message is to retry later is reported as such, not thrown:
 * a throttling storm is not a function error.
 */
export async function processLaneBatch(
  event: SQSEvent,
  deps: FailureLaneConsumerDeps,
  context?: Context,
): Promise<SQSBatchResponse> {
  const tally: Record<LaneOutcome['kind'] | 'retryLater', number> = {
    published: 0,
    skipped: 0,
    'already-published': 0,
    'dead-lettered': 0,
    retryLater: 0,
  };
  const recordHandler = async (record: SQSRecord): Promise<LaneOutcome> => {
    try {
      const outcome = await processLaneRecord(record, deps);
      tally[outcome.kind]++;
      if (outcome.kind === 'dead-lettered') {
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
  metrics.addMetric('LaneRecordsPublished', 'Count', tally.published);
  metrics.addMetric('LaneRecordsSkipped', 'Count', tally.skipped);
  metrics.addMetric('LaneAlreadyPublished', 'Count', tally['already-published']);
  metrics.addMetric('LaneDeadLettered', 'Count', tally['dead-lettered']);
  metrics.addMetric('LaneRetryLater', 'Count', tally.retryLater);
  logger.info('failure-lane batch processed', { records: event.Records.length, ...tally });
  return response;
}

const optionalPositiveInt = z.preprocess((v) => (v === '' ? undefined : v), positiveInt.optional());

/** The consumer's environment. */
export const failureLaneConsumerEnvSchema = z.object({
  OUTPUT_BUCKET: required,
  LEDGER_TABLE: required,
  FAILURE_DLQ_URL: required,
  MODEL_ID: required,
  MAX_ATTEMPTS: positiveInt,
  LEDGER_TTL_DAYS: positiveInt,
  MAX_RECEIVE_COUNT: optionalPositiveInt,
  RESULTS_QUEUE_URL: z.string().optional(),
});

const env = readEnv(failureLaneConsumerEnvSchema);

const { s3, sqs, ledger, callModel, resultsPublisher } = publishingContext(env);

/** Lambda entry: the failure queue's event source (FunctionResponseTypes: ReportBatchItemFailures). */
export async function handler(event: SQSEvent, context: Context): Promise<SQSBatchResponse> {
  try {
    return await processLaneBatch(
      event,
      {
        s3,
        sqs,
        ledger,
        callModel,
        dlqUrl: env.FAILURE_DLQ_URL,
        outputBucket: env.OUTPUT_BUCKET,
        ...(resultsPublisher ? { resultsPublisher } : {}),
        remainingMs: () => context.getRemainingTimeInMillis(),
        ...(env.MAX_RECEIVE_COUNT !== undefined ? { maxReceiveCount: env.MAX_RECEIVE_COUNT } : {}),
      },
      context,
    );
  } finally {
    metrics.publishStoredMetrics();
  }
}
