import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import type { Context } from 'aws-lambda';
import * as z from 'zod';
import {
  MODES,
  runInputSchema,
  runKeys,
  type FailureLine,
  type BatchPlan,
  type PlanOutput,
  type RecordFormat,
  type RequestedMode,
  type RunMode,
} from './shared/contracts';
import { withInProgressLock } from './shared/idempotency';
import { modelFormat, readEnv, positiveInt, required } from './shared/env';
import {
  callDependency,
  CorpusNotFoundError,
  InvalidEventError,
  InvalidRunInputError,
} from './shared/errors';
import { FailureLaneSender, type RefusalHandler } from './shared/failure-lane';
import { faultPoint } from './shared/fault-points';
import { Ledger, type PublishedEntry } from './shared/ledger';
import { logger, metrics, traced, withObservability } from './shared/observability';
import { defaultParseWorkers, parseCorpus, type RecordOutcome } from './plan/parse-pool';
import { DuplicateTracker, type PromptSettings } from './shared/records';
import { JsonlObjectWriter, openObject, putJson } from './shared/s3-jsonl';
import { ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import { BedrockClient } from '@aws-sdk/client-bedrock';
import { BATCH_QUOTA_KEYS, readBatchQuotas, type BatchQuotaKey, type BatchQuotas } from './batch/quotas';
import { ModelAvailabilityCache } from './plan/model-availability';
import { modelFamily, type ModelFamily } from './shared/model-catalog';
import { writeShards, type FormatTotals } from './batch/shard-writer';
import { autoMode } from './batch/sharding';

/** Mode A settings of Plan. */
export interface PlanBatchSettings {
  /** `auto` picks batch from this many records to process (never below the job minimum). */
  autoThreshold?: number;
  toleratedFailurePercentage: number;
  jobTimeoutHours: number;
  reconcileIntervalMinutes: number;
  /**
   * Shards in flight at once (`batch.mapConcurrency`); the batch Map runs the smaller of this and the concurrent-jobs
   * quota. @default the concurrent-jobs quota
   */
  mapConcurrency?: number;
}

/** The batch quotas to cut shards to, and where each came from. */
export interface QuotaAnswer {
  quotas: BatchQuotas;
  sources: Record<string, string>;
}

/** Where a run's corpus may be. */
export interface InputScope {
  /** The ingest bucket: corpora under `ingestPrefix` in it. */
  ingestBucket: string;
  /** The ingest prefix (`''`: any key of the ingest bucket). */
  ingestPrefix: string;
  /** Other buckets a run may read, any key (`ingest.allowedBuckets`). */
  allowedBuckets: readonly string[];
}

/** Plan's settings, from its environment. */
export interface PlanSettings {
  outputBucket: string;
  /** The buckets (and the ingest prefix) a run's input may name; never the output bucket. */
  input: InputScope;
  modelId: string;
  /**
   * The model's family (model-catalog.ts), which tells its native bodies from Converse requests. Passed to the parse
   * once, never looked up per record.
   */
  family?: ModelFamily;
  ledgerScope: string;
  prompt: PromptSettings;
  batchSize: number;
  mapConcurrency: number;
  toleratedFailurePercentage: number;
  batch: PlanBatchSettings;
  /** Worker threads that parse the corpus (0: parse in the main thread). @default defaultParseWorkers() */
  parseWorkers?: number;
  /** Corpora smaller than this parse in the main thread, whatever `parseWorkers` says. @default 16 MiB */
  parallelParseMinBytes?: number;
}

/** What Plan talks to. */
export interface PlanDeps {
  s3: S3Client;
  ledger: Ledger;
  failureLane: FailureLaneSender;
  settings: PlanSettings;
  /** The model's batch quotas (Service Quotas with the configured fallback, or the configured values). */
  batchQuotas: () => Promise<QuotaAnswer>;
  /**
   * Checks that the model can serve the run, before the corpus is read (model-availability.ts).
   * @throws ModelNotAvailableError when it cannot
   */
  checkModel?: () => Promise<void>;
}

/** The margin the workflow waits beyond a job's own timeout (jobs may queue before their clock starts). */
export const JOB_WAIT_MARGIN_SECONDS = 6 * 3600;

/** Plan's event, built by the workflow from the execution input and context. */
export const planEventSchema = z.object({
  runId: z.string().min(1),
  startedAt: z.string().min(1),
  input: z.unknown(),
});
/** Plan's event. */
export type PlanEvent = z.infer<typeof planEventSchema>;

const LEDGER_LOOKUP_CHUNK = 100;
const PARALLEL_PARSE_MIN_BYTES = 16 * 1024 * 1024;
const LEDGER_LOOKUPS_IN_FLIGHT = 8;

/**
 * Validates the run input, streams the corpus once and writes the items file of records to process, recording every
 * bad line with its reason, dropping identical duplicates and skipping records the ledger holds as published.
 */
export async function planRun(event: PlanEvent, deps: PlanDeps): Promise<PlanOutput> {
  const { settings } = deps;
  const parsed = runInputSchema.safeParse(event.input);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .map((i) => `${i.path.join('.') || 'input'}: ${i.message}`)
      .join('; ');
    throw new InvalidRunInputError(
      `Invalid run input (${problems}). Expected {"bucket": "<ingest bucket>", "key": "<corpus.jsonl>", "mode": "auto|batch|converse", "ledgerScope": "<optional>"}`,
    );
  }
  const input = parsed.data;
  const { runId } = event;
  checkInputScope(input.bucket, input.key, settings);
  // Before anything is read: a model that cannot answer fails the run once, not each record.
  if (deps.checkModel) await deps.checkModel();
  const head = await headCorpus(deps.s3, input.bucket, input.key);
  const requestedMode = resolveRequestedMode(input.mode, head.metadataMode);
  const batchPossible = requestedMode !== 'converse';
  const ledgerScope = resolveLedgerScope(input.ledgerScope, head.metadataLedgerScope, settings.ledgerScope);
  logger.appendKeys({ runId });
  logger.info('planning run', {
    corpus: `s3://${input.bucket}/${input.key}`,
    size: head.size,
    requestedMode,
    ledgerScope,
  });

  const items = new JsonlObjectWriter(deps.s3, settings.outputBucket, runKeys.items(runId));
  let failures: JsonlObjectWriter | undefined;
  const counts = { lines: 0, records: 0, invalid: 0, duplicates: 0, skipped: 0, toProcess: 0 };
  const totals: Record<RecordFormat, FormatTotals> = {
    converse: { records: 0, bytes: 0 },
    native: { records: 0, bytes: 0 },
  };
  const writeFailure = async (failure: FailureLine): Promise<void> => {
    failures ??= new JsonlObjectWriter(deps.s3, settings.outputBucket, runKeys.failures(runId, 'plan'));
    await failures.write(failure);
  };
  // The bad line keeps its own failure line; what SQS refused is only its copy in the DLQ, which this line says.
  const onLaneRefused: RefusalHandler = ({ message, code, reason }) =>
    writeFailure(laneRefusal(message, code, reason));
  const recordFailure = async (failure: FailureLine): Promise<void> => {
    counts.invalid++;
    await writeFailure(failure);
    await deps.failureLane.add({ ...failure, runId, ledgerScope }, onLaneRefused);
  };

  // Ledger lookups run ahead of the writer, several in flight, while items are written in corpus order.
  type Pending = { record: RecordOutcome; items: Buffer };
  const lookups: { chunk: Pending[]; published: Promise<Map<string, PublishedEntry>> }[] = [];
  const writeOldestChunk = async (): Promise<void> => {
    const next = lookups.shift();
    if (!next) return;
    const published = await next.published;
    // Consecutive item lines of one block go to the writer as one slice.
    let run: { items: Buffer; start: number; end: number; lines: number } | undefined;
    const writeRun = async (): Promise<void> => {
      if (run) await items.writeLines(run.items.subarray(run.start, run.end), run.lines);
      run = undefined;
    };
    for (const { record, items: blockItems } of next.chunk) {
      const entry = published.get(record.recordId);
      if (entry?.contentHash !== undefined && entry.contentHash !== record.contentHash) {
        // Another corpus (or an edited one) reuses the id for different content: skipping it would silently drop
        // this record, processing it would overwrite the published answer.
        counts.records--;
        await writeRun();
        await recordFailure({
          recordId: record.recordId,
          line: record.line,
          stage: 'plan',
          error: {
            code: 'RecordIdReused',
            message: `line ${record.line}: recordId ${JSON.stringify(record.recordId)} was already published in ledger scope ${JSON.stringify(ledgerScope)} (run ${entry.runId}) with different content; give this record its own recordId, or run it under another ledgerScope`,
            retryable: false,
          },
        });
      } else if (entry) counts.skipped++;
      else {
        counts.toProcess++;
        if (batchPossible) {
          totals[record.format].records++;
          totals[record.format].bytes += record.batchBytes;
        }
        if (run && run.items === blockItems && run.end === record.start) {
          run.end = record.end;
          run.lines++;
        } else {
          await writeRun();
          run = { items: blockItems, start: record.start, end: record.end, lines: 1 };
        }
      }
    }
    await writeRun();
  };
  let chunk: Pending[] = [];
  const submitChunk = async (): Promise<void> => {
    if (chunk.length === 0) return;
    const ids = chunk.map((p) => p.record.recordId);
    const published = deps.ledger.lookupPublished(ledgerScope, ids);
    published.catch(() => undefined); // awaited in order by writeOldestChunk
    lookups.push({ chunk, published });
    chunk = [];
    if (lookups.length >= LEDGER_LOOKUPS_IN_FLIGHT) await writeOldestChunk();
  };

  const body = await openObject(deps.s3, input.bucket, input.key);
  if (!body)
    throw new CorpusNotFoundError(`s3://${input.bucket}/${input.key} disappeared while the run started`);
  // Small corpora parse in this thread: starting workers would cost more than it saves.
  const parallel = head.size >= (settings.parallelParseMinBytes ?? PARALLEL_PARSE_MIN_BYTES);
  const workers = parallel ? (settings.parseWorkers ?? defaultParseWorkers()) : 0;
  // A function of its own so the duplicate tracker (about 24 bytes a record) is garbage by the second pass.
  const readCorpus = async (): Promise<void> => {
    const tracker = new DuplicateTracker();
    const parseOptions = {
      prompt: settings.prompt,
      workers,
      ...(settings.family ? { family: settings.family } : {}),
    };
    for await (const block of parseCorpus(body, parseOptions)) {
      for (const outcome of block.outcomes) {
        counts.lines++;
        if (!outcome.ok) {
          const { code, message, recordId } = outcome.problem;
          await recordFailure({
            ...(recordId ? { recordId } : {}),
            line: outcome.line,
            stage: 'plan',
            error: { code, message, retryable: false },
          });
          continue;
        }
        const verdict = tracker.check(outcome.recordId, outcome.contentHash, outcome.line);
        if (verdict.kind === 'identical') {
          counts.duplicates++;
          continue;
        }
        if (verdict.kind === 'conflict') {
          // No top-level recordId: the record of the first line keeps that id in the results.
          await recordFailure({
            line: outcome.line,
            stage: 'plan',
            error: {
              code: 'ConflictingRecordId',
              message: `line ${outcome.line} reuses recordId ${JSON.stringify(outcome.recordId)} of line ${verdict.firstLine} with different content; give it its own recordId`,
              retryable: false,
            },
          });
          continue;
        }
        counts.records++;
        chunk.push({ record: outcome, items: block.items });
        if (chunk.length >= LEDGER_LOOKUP_CHUNK) await submitChunk();
      }
    }
  };
  await readCorpus();
  await submitChunk();
  while (lookups.length > 0) await writeOldestChunk();
  await items.close();
  // Before the failures file closes: a message SQS refuses adds a line to it.
  await deps.failureLane.flush();
  if (failures) await failures.close();

  let mode: RunMode = 'converse';
  let batch: BatchPlan | undefined;
  if (batchPossible && counts.toProcess > 0) {
    const { quotas, sources } = await deps.batchQuotas();
    mode = chooseMode(requestedMode, counts.toProcess, quotas, settings.batch.autoThreshold);
    if (mode === 'batch') {
      const written = await writeShards({
        s3: deps.s3,
        bucket: settings.outputBucket,
        runId,
        itemsKey: runKeys.items(runId),
        totals,
        quotas,
      });
      if (written.shards.length === 0) {
        // Nothing can make a job of the minimum size: every record goes through Converse.
        mode = 'converse';
        logger.info('batch requested, but no job of the minimum size can be made: using Converse', {
          toProcess: counts.toProcess,
          minRecordsPerJob: quotas.minRecordsPerJob,
        });
      } else {
        await putJson(deps.s3, settings.outputBucket, runKeys.shards(runId), written.shards);
        batch = {
          shardsKey: runKeys.shards(runId),
          shards: written.shards.length,
          records: written.shards.reduce((n, s) => n + s.records, 0),
          viaConverse: written.viaConverse,
          maxConcurrency: Math.min(
            quotas.maxConcurrentJobs,
            settings.batch.mapConcurrency ?? quotas.maxConcurrentJobs,
          ),
          toleratedFailurePercentage: settings.batch.toleratedFailurePercentage,
          jobWaitSeconds: settings.batch.jobTimeoutHours * 3600 + JOB_WAIT_MARGIN_SECONDS,
          // Three reconciler ticks may be missed before the wait gives up on a heartbeat.
          heartbeatSeconds: settings.batch.reconcileIntervalMinutes * 60 * 3 + 60,
          quotas: { ...quotas },
          quotaSources: sources,
        };
      }
    }
  }

  const output: PlanOutput = {
    runId,
    startedAt: event.startedAt,
    mode,
    requestedMode,
    corpus: {
      bucket: input.bucket,
      key: input.key,
      ...(head.etag ? { etag: head.etag } : {}),
      size: head.size,
    },
    output: { bucket: settings.outputBucket, prefix: runKeys.prefix(runId) },
    itemsKey: runKeys.items(runId),
    ledgerScope,
    modelId: settings.modelId,
    counts,
    fanOut: {
      itemsKey: batch ? runKeys.converseItems(runId) : runKeys.items(runId),
      batchSize: settings.batchSize,
      maxConcurrency: settings.mapConcurrency,
      toleratedFailurePercentage: settings.toleratedFailurePercentage,
    },
    ...(batch ? { batch } : {}),
  };
  faultPoint('plan', 'after-items');
  await putJson(deps.s3, settings.outputBucket, runKeys.plan(runId), output);
  metrics.addMetric('CorpusLines', 'Count', counts.lines);
  metrics.addMetric('InvalidLines', 'Count', counts.invalid);
  metrics.addMetric('RecordsSkipped', 'Count', counts.skipped);
  logger.info('plan written', { counts, mode });
  return output;
}

/** The failure line of a bad line whose failure-lane message SQS refused (the DLQ does not hold it). */
function laneRefusal(message: FailureLine, code: string, reason: string): FailureLine {
  const where = message.line === undefined ? 'a bad line' : `line ${message.line}`;
  return {
    ...(message.recordId ? { recordId: message.recordId } : {}),
    ...(message.line === undefined ? {} : { line: message.line }),
    stage: 'plan',
    error: {
      code: 'FailureLaneRefused',
      message: `${where}: SQS refused its failure-lane message (${code}: ${reason}), so the failure dead-letter queue does not hold it; its reason is the ${message.error.code} failure of the same line in this file`,
      retryable: false,
    },
  };
}

/**
 * Refuses a corpus outside the input scope: runs read the ingest bucket (under its prefix) and the allowed buckets,
 * never the output bucket, whose objects are runs' own files (an items file run as a corpus would process it again).
 */
function checkInputScope(bucket: string, key: string, settings: PlanSettings): void {
  const { input, outputBucket } = settings;
  const where = [
    `s3://${input.ingestBucket}/${input.ingestPrefix}`,
    ...input.allowedBuckets.map((b) => `s3://${b}/`),
  ].join(', ');
  if (bucket === outputBucket) {
    throw new InvalidRunInputError(
      `The run input names s3://${bucket}/${key}, in the pipeline's output bucket, which holds runs' own files and is never read as a corpus; a corpus must be under ${where}`,
    );
  }
  if (bucket === input.ingestBucket) {
    if (key.startsWith(input.ingestPrefix)) return;
    throw new InvalidRunInputError(
      `The run input names s3://${bucket}/${key}, outside the ingest prefix ${input.ingestPrefix}; a corpus must be under ${where}`,
    );
  }
  if (input.allowedBuckets.includes(bucket)) return;
  throw new InvalidRunInputError(
    `The run input names the bucket ${bucket}, which runs may not read; a corpus must be under ${where} (the environment's ingest.allowedBuckets setting allows other buckets)`,
  );
}

/** The longest ledger scope (as the run input allows). */
const MAX_LEDGER_SCOPE_CHARS = 200;
/** Control characters, U+FFFE / U+FFFF and lone surrogates: a ledger scope is a key in DynamoDB and in SQS messages. */
const LEDGER_SCOPE_REFUSED = /[\p{Cc}\uFFFE\uFFFF]|\p{Cs}/u;

/**
 * The ledger scope of a run: the run input's, else the corpus object's metadata `ledger-scope`, else the deployment's.
 * @throws InvalidRunInputError for a scope that is empty, too long, padded with spaces or holds control characters
 */
function resolveLedgerScope(
  fromInput: string | undefined,
  fromMetadata: string | undefined,
  deployed: string,
): string {
  const [scope, source] =
    fromInput !== undefined
      ? [fromInput, "the run input's ledgerScope"]
      : fromMetadata !== undefined
        ? [fromMetadata, "the corpus object's metadata ledger-scope"]
        : [deployed, undefined];
  if (source === undefined) return scope;
  const problem =
    scope.trim() === ''
      ? 'is blank'
      : scope.length > MAX_LEDGER_SCOPE_CHARS
        ? `is longer than ${MAX_LEDGER_SCOPE_CHARS} characters`
        : scope !== scope.trim()
          ? 'starts or ends with a space'
          : LEDGER_SCOPE_REFUSED.test(scope)
            ? 'holds a control character, U+FFFE, U+FFFF or a lone surrogate'
            : undefined;
  if (problem) {
    throw new InvalidRunInputError(
      `${source} ${JSON.stringify(scope.slice(0, 80))} ${problem}; a ledger scope is 1 to ${MAX_LEDGER_SCOPE_CHARS} printable characters`,
    );
  }
  return scope;
}

function resolveRequestedMode(
  fromInput: RequestedMode | undefined,
  fromMetadata: string | undefined,
): RequestedMode {
  if (fromInput) return fromInput;
  if (fromMetadata === undefined) return 'auto';
  const mode = MODES.find((m) => m === fromMetadata.toLowerCase());
  if (!mode) {
    throw new InvalidRunInputError(
      `The corpus object's metadata mode=${fromMetadata} is not one of ${MODES.join(', ')}`,
    );
  }
  return mode;
}

/**
 * Chooses the processing mode: `batch` and `converse` as asked; `auto` picks batch when the records to process reach
 * the batch threshold (at least the minimum records per job), converse otherwise.
 */
export function chooseMode(
  requested: RequestedMode,
  toProcess: number,
  quotas: BatchQuotas,
  autoThreshold?: number,
): RunMode {
  if (requested !== 'auto') return requested;
  return autoMode(toProcess, quotas, autoThreshold);
}

async function headCorpus(
  s3: S3Client,
  bucket: string,
  key: string,
): Promise<{ size: number; etag?: string; metadataMode?: string; metadataLedgerScope?: string }> {
  try {
    const head = await callDependency('S3 HeadObject', () =>
      s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })),
    );
    return {
      size: head.ContentLength ?? 0,
      ...(head.ETag ? { etag: head.ETag.replace(/"/g, '') } : {}),
      ...(head.Metadata?.mode ? { metadataMode: head.Metadata.mode } : {}),
      // User metadata arrives with lower-cased keys (x-amz-meta-ledger-scope).
      ...(head.Metadata?.['ledger-scope'] !== undefined
        ? { metadataLedgerScope: head.Metadata['ledger-scope'] }
        : {}),
    };
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name === 'NotFound' || name === 'NoSuchKey' || name === 'NoSuchBucket' || name === 'Forbidden') {
      throw new CorpusNotFoundError(
        `Cannot read the corpus s3://${bucket}/${key} (${name}): check the bucket and key, and that the pipeline may read it`,
      );
    }
    throw err;
  }
}

const env = readEnv(
  z.object({
    OUTPUT_BUCKET: required,
    INGEST_BUCKET: required,
    INGEST_PREFIX: z.string(),
    /** Comma-separated buckets besides the ingest bucket a run may read. */
    ALLOWED_INPUT_BUCKETS: z.string().optional(),
    LEDGER_TABLE: required,
    IDEMPOTENCY_TABLE: required,
    FAILURE_DLQ_URL: required,
    MODEL_ID: required,
    MODEL_FORMAT: modelFormat,
    /** The model's display name in its batch quota names, for a model the catalog gives none. */
    MODEL_BATCH_QUOTA_NAME: z.string().min(1).optional(),
    /** Whole batch quota names per limit (JSON `{"maxRecordsPerJob": "<name>", ...}`). */
    MODEL_BATCH_QUOTA_NAMES: z
      .string()
      .optional()
      .transform((text, ctx) => {
        if (text === undefined || text === '') return undefined;
        try {
          return z
            .record(z.enum(BATCH_QUOTA_KEYS as [BatchQuotaKey, ...BatchQuotaKey[]]), z.string().min(1))
            .parse(JSON.parse(text)) as Partial<Record<BatchQuotaKey, string>>;
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: `not a JSON object of quota names: ${String(err)}` });
          return z.NEVER;
        }
      }),
    /** The Region the function runs in (set by Lambda). */
    AWS_REGION: required,
    LEDGER_SCOPE: required,
    PROMPT_TEMPLATE: required,
    PROMPT_SYSTEM: z.string().optional(),
    PROMPT_MAX_TOKENS: positiveInt,
    CONVERSE_BATCH_SIZE: positiveInt,
    CONVERSE_MAP_CONCURRENCY: positiveInt,
    TOLERATED_FAILURE_PERCENTAGE: z.coerce.number().min(0).max(100),
    LEDGER_TTL_DAYS: positiveInt.default(90),
    BATCH_READ_SERVICE_QUOTAS: z.enum(['true', 'false']).default('true'),
    BATCH_QUOTA_MIN_RECORDS_PER_JOB: positiveInt,
    BATCH_QUOTA_MAX_RECORDS_PER_JOB: positiveInt,
    BATCH_QUOTA_MAX_RECORDS_PER_FILE: positiveInt,
    BATCH_QUOTA_MAX_BYTES_PER_FILE: positiveInt,
    BATCH_QUOTA_MAX_BYTES_PER_JOB: positiveInt,
    BATCH_QUOTA_MAX_CONCURRENT_JOBS: positiveInt,
    BATCH_MAP_CONCURRENCY: positiveInt.optional(),
    BATCH_AUTO_THRESHOLD: positiveInt.optional(),
    BATCH_TOLERATED_FAILURE_PERCENTAGE: z.coerce.number().min(0).max(100),
    BATCH_JOB_TIMEOUT_HOURS: positiveInt,
    BATCH_RECONCILE_INTERVAL_MINUTES: positiveInt,
    /** Parse worker threads; unset: one per vCPU beyond the first. */
    PLAN_PARSE_WORKERS: z.coerce.number().int().min(0).max(64).optional(),
  }),
);

const configuredQuotas: BatchQuotas = {
  minRecordsPerJob: env.BATCH_QUOTA_MIN_RECORDS_PER_JOB,
  maxRecordsPerJob: env.BATCH_QUOTA_MAX_RECORDS_PER_JOB,
  maxRecordsPerFile: env.BATCH_QUOTA_MAX_RECORDS_PER_FILE,
  maxBytesPerFile: env.BATCH_QUOTA_MAX_BYTES_PER_FILE,
  maxBytesPerJob: env.BATCH_QUOTA_MAX_BYTES_PER_JOB,
  maxConcurrentJobs: env.BATCH_QUOTA_MAX_CONCURRENT_JOBS,
};
const serviceQuotas = traced(new ServiceQuotasClient({}));

/** The quotas to shard with: read from Service Quotas (cached per execution environment), or as configured. */
async function batchQuotas(): Promise<QuotaAnswer> {
  if (env.BATCH_READ_SERVICE_QUOTAS === 'false') {
    return {
      quotas: configuredQuotas,
      sources: Object.fromEntries(BATCH_QUOTA_KEYS.map((k) => [k, 'configured'])),
    };
  }
  const reading = await readBatchQuotas(serviceQuotas, env.MODEL_ID, configuredQuotas, undefined, {
    ...(env.MODEL_BATCH_QUOTA_NAME ? { modelName: env.MODEL_BATCH_QUOTA_NAME } : {}),
    ...(env.MODEL_BATCH_QUOTA_NAMES ? { quotaNames: env.MODEL_BATCH_QUOTA_NAMES } : {}),
  });
  return { quotas: reading.quotas, sources: reading.sources };
}

const bedrock = traced(new BedrockClient({}));
const availability = new ModelAvailabilityCache();

/** Asks Bedrock once per execution environment whether the model can serve runs (cached while it can). */
async function checkModel(): Promise<void> {
  await availability.check(bedrock, env.MODEL_ID, env.AWS_REGION);
}

const family = modelFamily(env.MODEL_ID, env.MODEL_FORMAT);
const s3 = traced(new S3Client({}));
const ddb = traced(new DynamoDBClient({}));
const sqs = traced(new SQSClient({}));
const documentClient = DynamoDBDocumentClient.from(ddb);

const baseDeps: Omit<PlanDeps, 'failureLane'> = {
  s3,
  ledger: new Ledger({ client: documentClient, tableName: env.LEDGER_TABLE, ttlDays: env.LEDGER_TTL_DAYS }),
  settings: {
    outputBucket: env.OUTPUT_BUCKET,
    input: {
      ingestBucket: env.INGEST_BUCKET,
      ingestPrefix: env.INGEST_PREFIX,
      allowedBuckets: (env.ALLOWED_INPUT_BUCKETS ?? '')
        .split(',')
        .map((b) => b.trim())
        .filter(Boolean),
    },
    modelId: env.MODEL_ID,
    ...(family ? { family } : {}),
    ledgerScope: env.LEDGER_SCOPE,
    prompt: {
      template: env.PROMPT_TEMPLATE,
      maxTokens: env.PROMPT_MAX_TOKENS,
      ...(env.PROMPT_SYSTEM ? { system: env.PROMPT_SYSTEM } : {}),
    },
    batchSize: env.CONVERSE_BATCH_SIZE,
    mapConcurrency: env.CONVERSE_MAP_CONCURRENCY,
    toleratedFailurePercentage: env.TOLERATED_FAILURE_PERCENTAGE,
    batch: {
      ...(env.BATCH_AUTO_THRESHOLD ? { autoThreshold: env.BATCH_AUTO_THRESHOLD } : {}),
      toleratedFailurePercentage: env.BATCH_TOLERATED_FAILURE_PERCENTAGE,
      jobTimeoutHours: env.BATCH_JOB_TIMEOUT_HOURS,
      reconcileIntervalMinutes: env.BATCH_RECONCILE_INTERVAL_MINUTES,
      ...(env.BATCH_MAP_CONCURRENCY ? { mapConcurrency: env.BATCH_MAP_CONCURRENCY } : {}),
    },
    ...(env.PLAN_PARSE_WORKERS !== undefined ? { parseWorkers: env.PLAN_PARSE_WORKERS } : {}),
  },
  batchQuotas,
  checkModel,
};

const persistenceStore = new DynamoDBPersistenceLayer({
  tableName: env.IDEMPOTENCY_TABLE,
  awsSdkV3Client: ddb,
});

const idempotent = makeIdempotent(
  async (event: unknown, _context: Context): Promise<PlanOutput> => {
    const parsed = planEventSchema.safeParse(event);
    if (!parsed.success)
      throw new InvalidEventError(`Plan expects {runId, startedAt, input}: ${parsed.error.message}`);
    // Plan only sends non-retryable failures (bad lines): they go straight to the DLQ with their reason.
    const failureLane = new FailureLaneSender(sqs, env.FAILURE_DLQ_URL, env.FAILURE_DLQ_URL);
    return planRun(parsed.data, { ...baseDeps, failureLane });
  },
  {
    persistenceStore,
    config: new IdempotencyConfig({ eventKeyJmesPath: 'runId', expiresAfterSeconds: 3600 }),
  },
);

/**
 * Lambda entry: Plan, idempotent per run (a repeated invocation returns the first answer), its in-progress lock held
 * only as long as a retry waits (lambda/shared/idempotency.ts).
 */
export const handler = withObservability((event: unknown, context: Context): Promise<PlanOutput> =>
  idempotent(event, withInProgressLock(context)),
);
