import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import * as z from 'zod';
import { runKeys, workItemSchema, type WorkItem } from '../shared/contracts';
import { callDependency } from '../shared/errors';
import { logger, metrics } from '../shared/observability';
import { JsonlObjectWriter, objectLines } from '../shared/s3-jsonl';
import { PIPELINE_METRICS } from '../shared/contracts/metrics';

/** ConverseItems' event: the run whose leftovers to gather. */
export const converseItemsEventSchema = z.object({ runId: z.string().min(1) });
/** ConverseItems' event. */
export type ConverseItemsEvent = z.infer<typeof converseItemsEventSchema>;

/** What ConverseItems returns: the items file the Converse fan-out reads and how many records it holds. */
export interface ConverseItemsOutput {
  itemsKey: string;
  records: number;
}

/** What ConverseItems talks to. */
export interface ConverseItemsDeps {
  s3: S3Client;
  outputBucket: string;
}

/** A tail or redrive file holds a line that is not a WorkItem (a wiring bug, not bad data). */
export class InvalidConverseItemError extends Error {
  override readonly name = 'InvalidConverseItemError';
}

/**
 * Gathers what goes through Converse after a batch-mode run's batch jobs into `runs/<runId>/converse-items.jsonl`:
 * Plan's tail (records too few for another job), then each shard's redrive file (records a job left without output)
 * in key order. A record id seen before is dropped. The file is always written, even empty, and a retry rewrites the
 * same bytes. Lines are streamed; only the record ids are held.
 * @throws InvalidConverseItemError when a line is not a WorkItem
 * @throws TransientDependencyError when S3 fails in a way worth retrying
 */
export async function gatherConverseItems(
  event: ConverseItemsEvent,
  deps: ConverseItemsDeps,
): Promise<ConverseItemsOutput> {
  const { runId } = event;
  const itemsKey = runKeys.converseItems(runId);
  const sources = [runKeys.converseTail(runId), ...(await listKeys(deps, runKeys.redrivePrefix(runId)))];
  const writer = new JsonlObjectWriter(deps.s3, deps.outputBucket, itemsKey);
  const seen = new Set<string>();
  let duplicates = 0;
  // The tail is absent when every record fitted into a job.
  for await (const { key, lineNo, text } of objectLines(deps.s3, deps.outputBucket, sources)) {
    const item = parseItem(text, key, lineNo);
    if (seen.has(item.recordId)) {
      duplicates++;
      continue;
    }
    seen.add(item.recordId);
    await writer.write(item);
  }
  await writer.close();
  metrics.addMetric(PIPELINE_METRICS.converseItems, 'Count', seen.size);
  logger.info('converse items gathered', {
    itemsKey,
    records: seen.size,
    sources: sources.length,
    duplicates,
  });
  return { itemsKey, records: seen.size };
}

function parseItem(text: string, key: string, lineNo: number): WorkItem {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidConverseItemError(`${key} line ${lineNo} is not JSON`);
  }
  const parsed = workItemSchema.safeParse(value);
  if (!parsed.success) {
    throw new InvalidConverseItemError(`${key} line ${lineNo} is not a WorkItem: ${parsed.error.message}`);
  }
  return parsed.data;
}

async function listKeys(deps: ConverseItemsDeps, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const out = await callDependency('S3 ListObjectsV2', () =>
      deps.s3.send(
        new ListObjectsV2Command({ Bucket: deps.outputBucket, Prefix: prefix, ContinuationToken: token }),
      ),
    );
    for (const o of out.Contents ?? []) if (o.Key && o.Key.endsWith('.jsonl')) keys.push(o.Key);
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}
