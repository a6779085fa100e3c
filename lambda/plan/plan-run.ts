import type { S3Client } from '@aws-sdk/client-s3';
import * as z from 'zod';
import {
  runKeys,
  type BatchPlan,
  type PlanOutput,
  type RecordFormat,
  type RequestedMode,
  type RunMode,
} from '../shared/contracts';
import { CorpusNotFoundError } from '../shared/errors';
import type { FailureLaneSender } from '../shared/failure-lane';
import { faultPoint } from '../shared/fault-points';
import type { Ledger } from '../shared/ledger';
import type { ModelFamily } from '../shared/model-catalog';
import { logger, metrics } from '../shared/observability';
import type { PromptSettings } from '../shared/records';
import { openObject, putJson } from '../shared/s3-jsonl';
import { corpusKey, listCorpus, SourceReader, skippedEntry, type CorpusListing } from './corpus-sources';
import type { BatchQuotas } from '../batch/quotas';
import { writeShards, type FormatTotals } from '../batch/shard-writer';
import { autoMode } from '../batch/sharding';
import { CorpusPass } from './corpus-pass';
import { defaultParseWorkers } from './parse-pool';
import {
  checkInputScope,
  headCorpus,
  parseRunInput,
  resolveLedgerScope,
  resolveRequestedMode,
  type CorpusHead,
  type InputScope,
} from './run-input';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';

/** Plan's settings for Bedrock batch jobs. */
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

const PARALLEL_PARSE_MIN_BYTES = 16 * 1024 * 1024;

/**
 * Validates the run input, streams the corpus once and writes the items file of records to process, recording every
 * bad line with its reason, dropping identical duplicates and skipping records the ledger holds as published; then
 * chooses the mode and, for batch, cuts the shards.
 */
export async function planRun(event: PlanEvent, deps: PlanDeps): Promise<PlanOutput> {
  const { settings } = deps;
  const { runId } = event;
  const input = parseRunInput(event.input);
  const corpus = corpusKey(input.key);
  checkInputScope(input.bucket, corpus.key, settings.input, settings.outputBucket);
  // Before anything is read: a model that cannot answer fails the run once, not each record.
  if (deps.checkModel) await deps.checkModel();
  // One object: its HeadObject gives its size and the run settings in its metadata. A prefix: its listing, and the
  // settings in the metadata of its _SUCCESS marker, when it has one.
  const single = corpus.prefix ? undefined : await headCorpus(deps.s3, input.bucket, corpus.key);
  const listing = await listCorpus(deps.s3, input.bucket, corpus, single);
  const head: CorpusHead | undefined =
    single ?? (listing.marker ? await headCorpus(deps.s3, input.bucket, listing.marker) : undefined);
  const requestedMode = resolveRequestedMode(input.mode, head?.metadataMode);
  const ledgerScope = resolveLedgerScope(input.ledgerScope, head?.metadataLedgerScope, settings.ledgerScope);
  const size = listing.sources.reduce((n, s) => n + s.size, 0);
  logger.appendKeys({ runId });
  logger.info('planning run', {
    corpus: `s3://${input.bucket}/${corpus.key}`,
    size,
    sources: listing.sources.length,
    skipped: listing.skipped.length,
    requestedMode,
    ledgerScope,
  });

  const pass = await readCorpus(deps, {
    runId,
    ledgerScope,
    bucket: input.bucket,
    listing,
    requestedMode,
  });
  const sources = [...pass.sourceEntries(), ...listing.skipped.map(skippedEntry)].sort((a, b) =>
    a.key < b.key ? -1 : a.key > b.key ? 1 : 0,
  );
  await putJson(deps.s3, settings.outputBucket, runKeys.sources(runId), sources);
  const { mode, batch } = await planMode(deps, runId, requestedMode, pass.counts.toProcess, pass.totals);
  const output: PlanOutput = {
    runId,
    startedAt: event.startedAt,
    mode,
    requestedMode,
    corpus: {
      bucket: input.bucket,
      key: corpus.key,
      ...(single?.etag ? { etag: single.etag } : {}),
      size,
      sources: listing.sources.length,
    },
    output: { bucket: settings.outputBucket, prefix: runKeys.prefix(runId) },
    itemsKey: runKeys.items(runId),
    ledgerScope,
    modelId: settings.modelId,
    counts: pass.counts,
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
  metrics.addMetric(PIPELINE_METRICS.corpusLines, 'Count', pass.counts.lines);
  metrics.addMetric(PIPELINE_METRICS.invalidLines, 'Count', pass.counts.invalid);
  metrics.addMetric(PIPELINE_METRICS.recordsSkipped, 'Count', pass.counts.skipped);
  logger.info('plan written', { counts: pass.counts, mode });
  return output;
}

/** The corpus to read, as Plan resolved it. */
interface CorpusToRead {
  runId: string;
  ledgerScope: string;
  bucket: string;
  listing: CorpusListing;
  requestedMode: RequestedMode;
}

/** Streams the corpus's sources once, in order, through a {@link CorpusPass}: the items file written, its counts. */
async function readCorpus(deps: PlanDeps, corpus: CorpusToRead): Promise<CorpusPass> {
  const { settings } = deps;
  const pass = new CorpusPass({
    s3: deps.s3,
    ledger: deps.ledger,
    failureLane: deps.failureLane,
    outputBucket: settings.outputBucket,
    runId: corpus.runId,
    ledgerScope: corpus.ledgerScope,
    batchPossible: corpus.requestedMode !== 'converse',
  });
  const minParallel = settings.parallelParseMinBytes ?? PARALLEL_PARSE_MIN_BYTES;
  const sources = corpus.listing.sources.map((source) => ({
    source,
    open: async (): Promise<SourceReader> => {
      const body = await openObject(deps.s3, corpus.bucket, source.key);
      if (!body)
        throw new CorpusNotFoundError(
          `s3://${corpus.bucket}/${source.key} disappeared while the run read its corpus`,
        );
      return new SourceReader(body, source);
    },
    // Small sources parse in this thread: starting workers would cost more than it saves.
    workers: source.size >= minParallel ? (settings.parseWorkers ?? defaultParseWorkers()) : 0,
  }));
  await pass.run(sources, {
    prompt: settings.prompt,
    ...(settings.family ? { family: settings.family } : {}),
  });
  return pass;
}

/**
 * The run's mode and, for batch, its Bedrock batch jobs: the shards cut to the model's batch quotas and written with
 * their list. Batch falls back to Converse when no job of the minimum size can be made.
 */
async function planMode(
  deps: PlanDeps,
  runId: string,
  requestedMode: RequestedMode,
  toProcess: number,
  totals: Record<RecordFormat, FormatTotals>,
): Promise<{ mode: RunMode; batch?: BatchPlan }> {
  const { settings } = deps;
  if (requestedMode === 'converse' || toProcess === 0) return { mode: 'converse' };
  const { quotas, sources } = await deps.batchQuotas();
  const mode = chooseMode(requestedMode, toProcess, quotas, settings.batch.autoThreshold);
  if (mode !== 'batch') return { mode };
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
    logger.info('batch requested, but no job of the minimum size can be made: using Converse', {
      toProcess,
      minRecordsPerJob: quotas.minRecordsPerJob,
    });
    return { mode: 'converse' };
  }
  await putJson(deps.s3, settings.outputBucket, runKeys.shards(runId), written.shards);
  return {
    mode,
    batch: {
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
    },
  };
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
