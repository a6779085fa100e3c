import type { S3Client } from '@aws-sdk/client-s3';
import { planKeys, type PlanPrepared } from '../shared/contracts';
import { logger } from '../shared/observability';
import { mapWithConcurrency } from '../shared/pool';
import { putJson } from '../shared/s3-jsonl';
import { binaryReason, corpusKey, listCorpus, type CorpusSource } from './corpus-sources';
import {
  checkInputScope,
  headCorpus,
  parseRunInput,
  resolveLedgerScope,
  resolveRequestedMode,
  type CorpusHead,
} from './run-input';
import type { PlannedSegment } from './segment-pass';
import { cutSegments, DEFAULT_SEGMENT_BYTES, openRangeFromS3, type PlanSegment } from './segments';
import type { PlanDeps, PlanEvent } from './plan-run';
import { SMALL_READS_IN_FLIGHT } from './plan-files';

/** Plan's first step (the workflow's `Plan` state): the run input, the model check, the listing, the segments. */

/** The corpus's first 8 KiB, read to tell whether a large uncompressed source may be cut in byte ranges. */
const SNIFF_RANGE = 'bytes=0-8191';

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

/** A small ranged read of an object, as bytes. */
async function readRange(s3: S3Client, bucket: string, key: string, range: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await openRangeFromS3(s3, bucket, key)(range)) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}
