import * as z from 'zod';
import { planKeys } from '../shared/contracts';
import { CorpusNotFoundError } from '../shared/errors';
import { logger } from '../shared/observability';
import { mapWithConcurrency } from '../shared/pool';
import { getJson, openObject, putJson } from '../shared/s3-jsonl';
import { SourceReader } from './corpus-sources';
import { defaultParseWorkers } from './parse-pool';
import {
  SegmentPass,
  type PartInput,
  type PlannedPart,
  type PlannedSegment,
  type SegmentSummary,
} from './segment-pass';
import { countLines, openRangeFromS3, ownedBytes } from './segments';
import type { PlanDeps } from './plan-run';
import { PlanSegmentMissingError, SMALL_READS_IN_FLIGHT } from './plan-files';

/** The Plan Maps' steps: one byte-range part's line count (CountLines), one segment (PlanSegments). */

const PARALLEL_PARSE_MIN_BYTES = 16 * 1024 * 1024;

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
