import { DeleteObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import * as z from 'zod';
import {
  batchEventSchema,
  runKeys,
  type BatchEvent,
  type BatchSummary,
  type FailureLine,
  type ResultLine,
  type Usage,
  type WorkItem,
} from './shared/contracts';
import { readEnv, positiveInt, required } from './shared/env';
import { batchIdOf } from './shared/batches';
import { callDependency, InvalidEventError } from './shared/errors';
import { FailureLaneSender } from './shared/failure-lane';
import { Ledger } from './shared/ledger';
import { contentHashOf } from './shared/records';
import { logger, metrics } from './shared/observability';
import { pacedCaller, QuotaPacer } from './shared/pacing';
import { publishingContext } from './shared/publishing-context';
import { classifyModelError, type ModelCaller } from './shared/model-caller';
import { mapWithConcurrency } from './shared/pool';
import type { ResultsPublisher } from './shared/results-queue';
import { putJsonl, readResultsFile } from './shared/s3-jsonl';

// The model call moved to shared/model-caller (the failure-lane consumer uses it too); re-exported for existing callers.
export { bedrockCaller, throttleBackoffMs, toConverseInput, type ModelCaller } from './shared/model-caller';

/** What the Converse child talks to. */
export interface ConverseBatchDeps {
  s3: S3Client;
  ledger: Ledger;
  failureLane: FailureLaneSender;
  callModel: ModelCaller;
  /** The results queue, when one is configured: each record this batch publishes is sent to it. */
  resultsPublisher?: Pick<ResultsPublisher, 'publish'>;
  outputBucket: string;
  itemConcurrency: number;
  /** Milliseconds left in this invocation. */
  remainingMs: () => number;
}

/** Time kept back at the end of an invocation to write results and publish claims. */
const SAFETY_MARGIN_MS = 30_000;

type Outcome =
  | { ok: true; item: WorkItem; modelOutput: unknown; usage: Usage }
  | { ok: false; item: WorkItem; code: string; message: string; retryable: boolean };

/**
 * Runs the model over one batch and publishes each success through the ledger. A record that fails is written to the
 * failures file and sent to the failure lane; it never fails the batch. Only a dependency failure (S3, DynamoDB, SQS)
 * throws, and the workflow retries the batch: records this run already claimed are published again into the same
 * file, and answers an earlier attempt wrote are kept as they are, so nothing is published twice or dropped.
 */
export async function processBatch(event: BatchEvent, deps: ConverseBatchDeps): Promise<BatchSummary> {
  const { runId, ledgerScope } = event.BatchInput;
  const batchId = batchIdOf(
    runId,
    event.Items.map((i) => i.recordId),
  );
  // A retried batch rewrites its results file: the answers an earlier attempt wrote (and may already have marked
  // published) must stay in it, even if the model fails this time, and need no second model call.
  const earlier = await readResultsFile(deps.s3, deps.outputBucket, runKeys.results(runId, batchId));
  let throttled = 0;
  const outcomes = await mapWithConcurrency(
    event.Items,
    deps.itemConcurrency,
    async (item): Promise<Outcome> => {
      const answered = earlier.get(item.recordId);
      if (answered) return { ok: true, item, modelOutput: answered.modelOutput, usage: answered.usage };
      if (deps.remainingMs() < SAFETY_MARGIN_MS) {
        return {
          ok: false,
          item,
          code: 'NotAttempted',
          message: 'the batch ran out of time before this record was sent; retry it',
          retryable: true,
        };
      }
      const controller = new AbortController();
      const timer = setTimeout(
        () => controller.abort(),
        Math.max(1_000, deps.remainingMs() - SAFETY_MARGIN_MS),
      );
      try {
        const { modelOutput, usage } = await deps.callModel(item, controller.signal);
        return { ok: true, item, modelOutput, usage };
      } catch (err) {
        const failure = classifyModelError(err, controller.signal.aborted);
        if (failure.code === 'ThrottlingException') throttled++;
        return { ok: false, item, ...failure };
      } finally {
        clearTimeout(timer);
      }
    },
  );

  const results: ResultLine[] = [];
  const failures: FailureLine[] = [];
  let skipped = 0;
  const claimed = await mapWithConcurrency(outcomes, 16, async (o) => {
    if (!o.ok) return false;
    return (
      (await deps.ledger.claim(ledgerScope, o.item.recordId, runId, contentHashOf(o.item.modelInput))) ===
      'claimed'
    );
  });
  const usageTotals = { inputTokens: 0, outputTokens: 0 };
  outcomes.forEach((o, i) => {
    if (o.ok) {
      if (!claimed[i]) {
        skipped++;
        return;
      }
      results.push({ recordId: o.item.recordId, modelOutput: o.modelOutput, usage: o.usage });
      usageTotals.inputTokens += o.usage.inputTokens;
      usageTotals.outputTokens += o.usage.outputTokens;
    } else {
      failures.push({
        recordId: o.item.recordId,
        line: o.item.line,
        stage: 'converse',
        error: { code: o.code, message: o.message, retryable: o.retryable },
      });
    }
  });

  // Results first, then the results queue, then the ledger says published: a crash in between leaves claims this run
  // re-publishes on retry, into the same file and with the same queue deduplication ids.
  const resultKey = runKeys.results(runId, batchId);
  if (results.length > 0) {
    await putJsonl(deps.s3, deps.outputBucket, resultKey, results);
    // Answers an earlier attempt wrote may have been marked published (and sent) by it already.
    await deps.resultsPublisher?.publish(
      results.map((r) => ({ runId, recordId: r.recordId, ledgerScope, resultKey, usage: r.usage })),
      { skipPublished: earlier.size > 0 },
    );
  }
  if (failures.length > 0) {
    await putJsonl(deps.s3, deps.outputBucket, runKeys.failures(runId, batchId), failures);
    const byId = new Map(event.Items.map((i) => [i.recordId, i]));
    for (const f of failures) {
      const item = byId.get(f.recordId!);
      await deps.failureLane.add({
        ...f,
        runId,
        ledgerScope,
        ...(f.error.retryable && item ? { format: item.format, modelInput: item.modelInput } : {}),
      });
    }
    await deps.failureLane.flush();
  } else {
    // A failed earlier attempt of this batch may have left a failures file that this attempt supersedes.
    const key = runKeys.failures(runId, batchId);
    await callDependency('S3 DeleteObject', () =>
      deps.s3.send(new DeleteObjectCommand({ Bucket: deps.outputBucket, Key: key })),
    );
  }
  await mapWithConcurrency(results, 16, (r) => deps.ledger.markPublished(ledgerScope, r.recordId, runId));

  metrics.addMetric('RecordsSucceeded', 'Count', results.length);
  metrics.addMetric('RecordsFailed', 'Count', failures.length);
  metrics.addMetric('Throttles', 'Count', throttled);
  metrics.addMetric('InputTokens', 'Count', usageTotals.inputTokens);
  metrics.addMetric('OutputTokens', 'Count', usageTotals.outputTokens);
  return {
    batchId,
    records: event.Items.length,
    succeeded: results.length,
    failed: failures.length,
    skipped,
    throttled,
    ...usageTotals,
  };
}

const env = readEnv(
  z.object({
    OUTPUT_BUCKET: required,
    LEDGER_TABLE: required,
    IDEMPOTENCY_TABLE: required,
    FAILURE_QUEUE_URL: required,
    FAILURE_DLQ_URL: required,
    MODEL_ID: required,
    ITEM_CONCURRENCY: positiveInt,
    MAX_ATTEMPTS: positiveInt,
    LEDGER_TTL_DAYS: positiveInt,
    REQUESTS_PER_MINUTE: positiveInt,
    TOKENS_PER_MINUTE: positiveInt,
    CONVERSE_MAP_CONCURRENCY: positiveInt,
  }),
);

const { s3, ddb, sqs, ledger, callModel: unpaced, resultsPublisher } = publishingContext(env);
// Each Map child takes its share of the model's per-minute quotas, so children do not throttle each other.
const callModel = pacedCaller(
  unpaced,
  QuotaPacer.forMapChild(env.REQUESTS_PER_MINUTE, env.TOKENS_PER_MINUTE, env.CONVERSE_MAP_CONCURRENCY),
);
const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: ddb,
});

/** Lambda entry: one Distributed Map child batch; idempotent per (run, records). */
export const handler = makeIdempotent(
  async (event: unknown, context: Context): Promise<BatchSummary> => {
    const parsed = batchEventSchema.safeParse(event);
    if (!parsed.success) {
      throw new InvalidEventError(
        `ConverseBatch expects {BatchInput: {runId, ledgerScope}, Items: [...]}: ${parsed.error.message}`,
      );
    }
    logger.appendKeys({ runId: parsed.data.BatchInput.runId });
    try {
      return await processBatch(parsed.data, {
        s3,
        ledger,
        failureLane: new FailureLaneSender(sqs, env.FAILURE_QUEUE_URL, env.FAILURE_DLQ_URL),
        callModel,
        ...(resultsPublisher ? { resultsPublisher } : {}),
        outputBucket: env.OUTPUT_BUCKET,
        itemConcurrency: env.ITEM_CONCURRENCY,
        remainingMs: () => context.getRemainingTimeInMillis(),
      });
    } finally {
      metrics.publishStoredMetrics();
    }
  },
  {
    persistenceStore,
    config: new IdempotencyConfig({
      eventKeyJmesPath: '[BatchInput.runId, Items[*].recordId]',
      expiresAfterSeconds: 3600,
    }),
  },
);
