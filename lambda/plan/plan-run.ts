import type { S3Client } from '@aws-sdk/client-s3';
import * as z from 'zod';
import {
  planKeys,
  runKeys,
  type BatchPlan,
  type CorpusSourceEntry,
  type PlanCounts,
  type PlanOutput,
  type PlanPrepared,
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
import { concatenateObjects, type ConcatPiece } from '../shared/s3-concat';
import { mapWithConcurrency } from '../shared/pool';
import { getJson, openObject, putJson } from '../shared/s3-jsonl';
import {
  binaryReason,
  corpusKey,
  listCorpus,
  SourceReader,
  skippedEntry,
  type CorpusListing,
  type CorpusSource,
} from './corpus-sources';
import type { BatchQuotas } from '../batch/quotas';
import {
  assignShards,
  joinConverseTail,
  writeSegmentSlices,
  type AssignShardsOptions,
} from '../batch/shard-slices';
import { autoMode } from '../batch/sharding';
import { resolveIds, type IdResolution, type ItemDrop } from './id-merge';
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
import {
  SegmentPass,
  type PartInput,
  type PlannedPart,
  type PlannedSegment,
  type SegmentSummary,
} from './segment-pass';
import {
  countLines,
  cutSegments,
  DEFAULT_SEGMENT_BYTES,
  openRangeFromS3,
  ownedBytes,
  type PlanSegment,
} from './segments';
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
  /** Parts smaller than this parse in the main thread, whatever `parseWorkers` says. @default 16 MiB */
  parallelParseMinBytes?: number;
  /** Bytes of corpus per Plan segment (one Plan Map item). @default DEFAULT_SEGMENT_BYTES (256 MiB) */
  segmentBytes?: number;
  /** Segments planned at once (the Plan Map's MaxConcurrency). @default DEFAULT_PLAN_MAP_CONCURRENCY */
  planMapConcurrency?: number;
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

/** The corpus's first 8 KiB, read to tell whether a large uncompressed source may be cut in byte ranges. */
const SNIFF_RANGE = 'bytes=0-8191';
const PARALLEL_PARSE_MIN_BYTES = 16 * 1024 * 1024;
/** Segments whose summaries and line counts the merge and the segments read at once. */
const SMALL_READS_IN_FLIGHT = 16;

/**
 * Plan's first step: validates the run input, checks the model, lists the corpus and cuts it into segments (whole
 * small sources, byte ranges of large uncompressed ones, one segment per gzip source), written for the Plan Map with
 * the byte-range parts whose lines must be counted first.
 */
export async function preparePlan(event: PlanEvent, deps: PlanDeps): Promise<PlanPrepared> {
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
  const segmentBytes = settings.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  const splittable = await splittableSources(deps.s3, input.bucket, listing.sources, segmentBytes);
  const segments = withLineCounts(cutSegments(listing.sources, segmentBytes, splittable));
  const counting = countParts(segments);
  logger.appendKeys({ runId });
  logger.info('planning run', {
    corpus: `s3://${input.bucket}/${corpus.key}`,
    size,
    sources: listing.sources.length,
    skipped: listing.skipped.length,
    segments: segments.length,
    countParts: counting.length,
    requestedMode,
    ledgerScope,
  });
  await Promise.all([
    putJson(deps.s3, settings.outputBucket, planKeys.listing(runId), listing),
    putJson(deps.s3, settings.outputBucket, planKeys.segments(runId), segments),
    putJson(deps.s3, settings.outputBucket, planKeys.countParts(runId), counting),
  ]);
  return {
    runId,
    startedAt: event.startedAt,
    requestedMode,
    ledgerScope,
    corpus: {
      bucket: input.bucket,
      key: corpus.key,
      ...(single?.etag ? { etag: single.etag } : {}),
      size,
      sources: listing.sources.length,
    },
    segments: {
      key: planKeys.segments(runId),
      count: segments.length,
      maxConcurrency: settings.planMapConcurrency ?? DEFAULT_PLAN_MAP_CONCURRENCY,
    },
    counting: { key: planKeys.countParts(runId), parts: counting.length },
  };
}

/** The Plan Map's concurrency when none is configured (lib/config.ts `plan.mapConcurrency`). */
export const DEFAULT_PLAN_MAP_CONCURRENCY = 4;

/**
 * The sources that may be cut in byte ranges: uncompressed ones larger than a segment whose first 8 KiB are text.
 * Gzip data (named .gz or not) and binary data are read whole, so their SourceReader refuses them as one bad source.
 */
async function splittableSources(
  s3: S3Client,
  bucket: string,
  sources: readonly CorpusSource[],
  segmentBytes: number,
): Promise<Set<number>> {
  const splittable = new Set<number>();
  const large = sources.flatMap((s, i) => (!s.gzip && s.size > segmentBytes ? [i] : []));
  await mapWithConcurrency(large, SMALL_READS_IN_FLIGHT, async (i) => {
    const source = sources[i]!;
    const head = await readRange(s3, bucket, source.key, SNIFF_RANGE);
    const gzip = head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
    if (!gzip && binaryReason(head) === undefined) splittable.add(i);
  });
  return splittable;
}

/** Each byte-range part with the starts of the earlier parts of its source (whose line counts it starts after). */
function withLineCounts(segments: readonly PlanSegment[]): PlannedSegment[] {
  const starts = new Map<number, number[]>();
  for (const segment of segments)
    for (const part of segment.parts) {
      if (part.start === 0 && part.end === part.size) continue;
      const list = starts.get(part.source) ?? [];
      list.push(part.start);
      starts.set(part.source, list);
    }
  return segments.map((segment) => ({
    ...segment,
    parts: segment.parts.map((part) => {
      const earlier = (starts.get(part.source) ?? []).filter((s) => s < part.start);
      return earlier.length > 0 ? { ...part, countedBefore: earlier } : { ...part };
    }),
  }));
}

/** One byte-range part whose lines a later part of its source needs counted: an item of the line-count Map. */
export interface CountPart {
  source: number;
  key: string;
  size: number;
  etag?: string;
  start: number;
  end: number;
}

/** The parts some later part starts after: every byte-range part but the last of its source. */
function countParts(segments: readonly PlannedSegment[]): CountPart[] {
  const needed = new Set<string>();
  for (const segment of segments)
    for (const part of segment.parts)
      for (const start of part.countedBefore ?? []) needed.add(`${part.source}:${start}`);
  const parts: CountPart[] = [];
  for (const segment of segments)
    for (const { source, key, size, etag, start, end } of segment.parts)
      if (needed.has(`${source}:${start}`))
        parts.push({ source, key, size, ...(etag ? { etag } : {}), start, end });
  return parts;
}

/** The line-count Map's event: one byte-range part. */
export const countEventSchema = z.object({
  runId: z.string().min(1),
  bucket: z.string().min(1),
  part: z.object({
    source: z.number().int().min(0),
    key: z.string().min(1),
    size: z.number().int().min(0),
    etag: z.string().optional(),
    start: z.number().int().min(0),
    end: z.number().int().min(0),
  }),
});
/** The line-count Map's event. */
export type CountEvent = z.infer<typeof countEventSchema>;

/** Counts the lines a byte-range part owns (blank ones included, as the parse numbers them) and writes the count. */
export async function countPartLines(
  event: CountEvent,
  deps: Pick<PlanDeps, 's3' | 'settings'>,
): Promise<number> {
  const { runId, bucket, part } = event;
  const lines = await countLines(ownedBytes(openRangeFromS3(deps.s3, bucket, part.key, part.etag), part));
  await putJson(deps.s3, deps.settings.outputBucket, planKeys.lineCount(runId, part.source, part.start), {
    lines,
  });
  return lines;
}

/** The Plan Map's event: one segment. */
export const segmentEventSchema = z.object({
  runId: z.string().min(1),
  bucket: z.string().min(1),
  ledgerScope: z.string().min(1),
  /** The corpus's number of sources (several: line messages name theirs). */
  sources: z.number().int().min(0),
  segment: z.custom<PlannedSegment>(
    (v) => typeof v === 'object' && v !== null && Array.isArray((v as PlannedSegment).parts),
    'a Plan segment {index, parts, bytes}',
  ),
});
/** The Plan Map's event. */
export type SegmentEvent = z.infer<typeof segmentEventSchema>;

/**
 * Plans one segment: reads its parts (a whole source through its SourceReader; a byte range from where the earlier
 * parts' lines end), records every bad line, looks its records up in the ledger and writes its items, index and
 * summary (segment-pass.ts).
 */
export async function planSegment(event: SegmentEvent, deps: PlanDeps): Promise<SegmentSummary> {
  const { settings } = deps;
  const { runId, bucket, segment } = event;
  logger.appendKeys({ runId, segment: segment.index });
  const minParallel = settings.parallelParseMinBytes ?? PARALLEL_PARSE_MIN_BYTES;
  const pass = new SegmentPass({
    s3: deps.s3,
    ledger: deps.ledger,
    failureLane: deps.failureLane,
    outputBucket: settings.outputBucket,
    runId,
    ledgerScope: event.ledgerScope,
    segment,
    multiSource: event.sources > 1,
  });
  const inputs = (async function* (): AsyncGenerator<PartInput> {
    for (const part of segment.parts) {
      // Small parts parse in this thread: starting workers would cost more than it saves.
      const workers =
        part.end - part.start >= minParallel ? (settings.parseWorkers ?? defaultParseWorkers()) : 0;
      if (part.start === 0 && part.end === part.size) {
        const body = await openObject(deps.s3, bucket, part.key);
        if (!body)
          throw new CorpusNotFoundError(
            `s3://${bucket}/${part.key} disappeared while the run read its corpus`,
          );
        const reader = new SourceReader(body, part);
        yield { bytes: reader.bytes(), reader, firstLine: 1, workers };
      } else {
        const before = await linesBefore(deps, runId, part);
        yield {
          bytes: ownedBytes(openRangeFromS3(deps.s3, bucket, part.key, part.etag), part),
          firstLine: before + 1,
          workers,
        };
      }
    }
  })();
  const summary = await pass.run(inputs, {
    prompt: settings.prompt,
    ...(settings.family ? { family: settings.family } : {}),
  });
  logger.info('segment planned', { segment: segment.index, lines: summary.lines, invalid: summary.invalid });
  return summary;
}

/** The lines of a byte-range part's source before it: the line-count Map's counts of its earlier parts. */
async function linesBefore(deps: PlanDeps, runId: string, part: PlannedPart): Promise<number> {
  let total = 0;
  await mapWithConcurrency(part.countedBefore ?? [], SMALL_READS_IN_FLIGHT, async (start) => {
    const key = planKeys.lineCount(runId, part.source, start);
    const count = await getJson<{ lines: number }>(deps.s3, deps.settings.outputBucket, key);
    if (count === undefined)
      throw new PlanSegmentMissingError(
        `the line count of s3://${deps.settings.outputBucket}/${key} is missing`,
      );
    total += count.lines;
  });
  return total;
}

/**
 * Plan's last step: joins the segments. Resolves recordIds across them (id-merge.ts), writes the run's items file
 * (the segments' items, concatenated in S3, without the work items of records an earlier segment already holds) and
 * plan failures file, the sources, then chooses the mode and, for batch, cuts the shards, and writes the plan.
 */
export async function mergePlan(prepared: PlanPrepared, deps: PlanDeps): Promise<PlanOutput> {
  const { settings } = deps;
  const { runId } = prepared;
  logger.appendKeys({ runId });
  const segments = await requireJson<PlannedSegment[]>(deps, planKeys.segments(runId));
  const listing = await requireJson<CorpusListing>(deps, planKeys.listing(runId));
  const summaries: SegmentSummary[] = new Array<SegmentSummary>(segments.length);
  await mapWithConcurrency(segments, SMALL_READS_IN_FLIGHT, async (segment) => {
    summaries[segment.index] = await requireJson<SegmentSummary>(
      deps,
      planKeys.segmentSummary(runId, segment.index),
    );
  });
  const resolution = await resolveIds({
    s3: deps.s3,
    failureLane: deps.failureLane,
    outputBucket: settings.outputBucket,
    runId,
    ledgerScope: prepared.ledgerScope,
    segments,
    multiSource: prepared.corpus.sources > 1,
    batchPossible: prepared.requestedMode !== 'converse',
  });
  faultPoint('plan', 'before-items');
  await concatenateObjects(
    deps.s3,
    settings.outputBucket,
    runKeys.items(runId),
    segments.flatMap((segment) =>
      keptRanges(
        planKeys.segmentItems(runId, segment.index),
        summaries[segment.index]!.items.bytes,
        resolution.drops.get(segment.index),
      ),
    ),
  );
  const failurePieces = [
    ...segments
      .filter((segment) => summaries[segment.index]!.failures.bytes > 0)
      .map((segment) => ({
        key: planKeys.segmentFailures(runId, segment.index),
        size: summaries[segment.index]!.failures.bytes,
      })),
    ...(resolution.failures ? [{ key: resolution.failures.key, size: resolution.failures.bytes }] : []),
  ];
  if (failurePieces.length > 0)
    await concatenateObjects(deps.s3, settings.outputBucket, runKeys.failures(runId, 'plan'), failurePieces);
  const counts: PlanCounts = {
    lines: summaries.reduce((n, s) => n + s.lines, 0),
    records: resolution.records,
    invalid: summaries.reduce((n, s) => n + s.invalid, 0) + resolution.invalid,
    duplicates: resolution.duplicates,
    skipped: resolution.skipped,
    toProcess: resolution.toProcess,
  };
  const sources = [
    ...sourceEntries(listing, segments, summaries, resolution),
    ...listing.skipped.map(skippedEntry),
  ].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  await putJson(deps.s3, settings.outputBucket, runKeys.sources(runId), sources);
  const { mode, batch } = await planMode(deps, runId, prepared.requestedMode, counts.toProcess, {
    totals: resolution.totals,
    segments: segments.map((segment) => ({
      index: segment.index,
      items: summaries[segment.index]!.items.lines,
    })),
    drops: new Map(
      [...resolution.drops].map(([segment, drops]) => [segment, new Set(drops.map((d) => d.ordinal))]),
    ),
  });
  const output: PlanOutput = {
    runId,
    startedAt: prepared.startedAt,
    mode,
    requestedMode: prepared.requestedMode,
    corpus: prepared.corpus,
    output: { bucket: settings.outputBucket, prefix: runKeys.prefix(runId) },
    itemsKey: runKeys.items(runId),
    ledgerScope: prepared.ledgerScope,
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
  metrics.addMetric(PIPELINE_METRICS.corpusLines, 'Count', counts.lines);
  metrics.addMetric(PIPELINE_METRICS.invalidLines, 'Count', counts.invalid);
  metrics.addMetric(PIPELINE_METRICS.recordsSkipped, 'Count', counts.skipped);
  logger.info('plan written', { counts, mode, segments: segments.length, dropped: resolution.drops.size });
  return output;
}

/** Items left out of a segment less often than once per this many bytes are cut around (see {@link keptRanges}). */
const SPARSE_DROP_BYTES = 16 * 1024 * 1024;

/**
 * A segment's items file as pieces of the run's items file, leaving out the items an earlier segment holds. Few such
 * items: the byte ranges around them, each of which S3 copies server-side when it is at least a part (5 MiB), so a
 * rare duplicate costs a cut, not a rewrite. Many: the whole file streamed without those lines (ranges under 5 MiB
 * would be streamed anyway, one GET each).
 */
export function keptRanges(key: string, size: number, drops: readonly ItemDrop[] | undefined): ConcatPiece[] {
  if (!drops || drops.length === 0) return [{ key, size }];
  if ((drops.length + 1) * SPARSE_DROP_BYTES > size)
    return [{ key, size, dropLines: new Set(drops.map((d) => d.ordinal)) }];
  const pieces: ConcatPiece[] = [];
  let from = 0;
  for (const drop of [...drops].sort((a, b) => a.offset - b.offset)) {
    if (drop.offset > from) pieces.push({ key, offset: from, size: drop.offset - from });
    from = drop.offset + drop.bytes;
  }
  if (size > from) pieces.push({ key, offset: from, size: size - from });
  return pieces;
}

/** The manifest's entry of each source read: its lines and bad lines from the segments, its records from the merge. */
function sourceEntries(
  listing: CorpusListing,
  segments: readonly PlannedSegment[],
  summaries: readonly SegmentSummary[],
  resolution: IdResolution,
): CorpusSourceEntry[] {
  const entries: CorpusSourceEntry[] = listing.sources.map((source, i) => ({
    key: source.key,
    size: source.size,
    ...(source.etag ? { etag: source.etag } : {}),
    lines: 0,
    records: resolution.sourceRecords.get(i) ?? 0,
  }));
  for (const segment of segments)
    segment.parts.forEach((part, p) => {
      const tally = summaries[segment.index]!.parts[p];
      const entry = entries[part.source]!;
      if (!tally) return;
      entry.lines = (entry.lines ?? 0) + tally.lines;
      if (tally.error && !entry.error) entry.error = tally.error;
    });
  return entries;
}

/** Raised when a step of Plan finds a file an earlier step should have written missing. */
export class PlanSegmentMissingError extends Error {
  override readonly name = 'PlanSegmentMissingError';
}

async function requireJson<T>(deps: Pick<PlanDeps, 's3' | 'settings'>, key: string): Promise<T> {
  const value = await getJson<T>(deps.s3, deps.settings.outputBucket, key);
  if (value === undefined)
    throw new PlanSegmentMissingError(
      `s3://${deps.settings.outputBucket}/${key} is missing: an earlier step of Plan did not finish`,
    );
  return value;
}

/** A small ranged read of an object, as bytes. */
async function readRange(s3: S3Client, bucket: string, key: string, range: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await openRangeFromS3(s3, bucket, key)(range)) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/**
 * All of Plan in this process, step after step as the workflow runs them (prepare, line counts, segments, merge): for
 * tests and benchmarks, which check one invocation's work against the whole.
 */
export async function planInProcess(event: PlanEvent, deps: PlanDeps): Promise<PlanOutput> {
  const prepared = await preparePlan(event, deps);
  const { runId, corpus } = prepared;
  const counting = await requireJson<CountPart[]>(deps, prepared.counting.key);
  for (const part of counting) await countPartLines({ runId, bucket: corpus.bucket, part }, deps);
  const segments = await requireJson<PlannedSegment[]>(deps, prepared.segments.key);
  for (const segment of segments)
    await planSegment(
      { runId, bucket: corpus.bucket, ledgerScope: prepared.ledgerScope, sources: corpus.sources, segment },
      deps,
    );
  const output = await mergePlan(prepared, deps);
  if (output.batch) {
    const slices = await requireJson<{ segment: number }[]>(deps, output.batch.slicesKey);
    for (const { segment } of slices) await planSlices({ runId, segment }, deps);
    await joinTail({ runId, slicesKey: output.batch.slicesKey }, deps);
  }
  return output;
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
  cut: Pick<AssignShardsOptions, 'totals' | 'segments' | 'drops'>,
): Promise<{ mode: RunMode; batch?: BatchPlan }> {
  const { settings } = deps;
  if (requestedMode === 'converse' || toProcess === 0) return { mode: 'converse' };
  const { quotas, sources } = await deps.batchQuotas();
  const mode = chooseMode(requestedMode, toProcess, quotas, settings.batch.autoThreshold);
  if (mode !== 'batch') return { mode };
  const written = await assignShards({ s3: deps.s3, bucket: settings.outputBucket, runId, quotas, ...cut });
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
      slicesKey: written.slicesKey,
      slices: written.slices,
      sliceConcurrency: settings.planMapConcurrency ?? DEFAULT_PLAN_MAP_CONCURRENCY,
    },
  };
}

/** The WriteShardSlices Map's event: one segment whose slices of the shard files and the Converse tail to write. */
export const sliceEventSchema = z.object({ runId: z.string().min(1), segment: z.number().int().min(0) });
/** The WriteShardSlices Map's event. */
export type SliceEvent = z.infer<typeof sliceEventSchema>;

/** Writes one segment's slices of the shard files and its part of the Converse tail (batch/shard-slices.ts). */
export async function planSlices(
  event: SliceEvent,
  deps: Pick<PlanDeps, 's3' | 'settings'>,
): Promise<{ records: number; tail: number }> {
  return writeSegmentSlices(deps.s3, deps.settings.outputBucket, event.runId, event.segment);
}

/** The tail step's event: the run whose segments' tail parts to join. */
export const tailEventSchema = z.object({ runId: z.string().min(1), slicesKey: z.string().min(1) });
/** The tail step's event. */
export type TailEvent = z.infer<typeof tailEventSchema>;

/** Joins the segments' parts of the Converse tail into the run's tail file, after the WriteShardSlices Map. */
export async function joinTail(
  event: TailEvent,
  deps: Pick<PlanDeps, 's3' | 'settings'>,
): Promise<{ bytes: number }> {
  const slices = await requireJson<{ segment: number }[]>(deps, event.slicesKey);
  const bytes = await joinConverseTail(
    deps.s3,
    deps.settings.outputBucket,
    event.runId,
    slices.map((s) => s.segment),
  );
  return { bytes };
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
