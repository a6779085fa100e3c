import * as z from 'zod';
import { batchJobOutcomeSchema, submitJobEventSchema } from '../../shared/contracts';
import { type CollectShardInput } from './collect-contract';
import { InvalidEventError } from '../../shared/errors';

/**
 * Collect's event, as a shard's child execution builds it after the job's wait: the shard (an item of
 * `runs/<runId>/shards.json`) and how its job ended (the wait's output).
 */
export const collectEventSchema = z.object({
  runId: z.string().min(1),
  ledgerScope: z.string().min(1),
  shard: submitJobEventSchema.shape.shard,
  job: batchJobOutcomeSchema,
});
/** Collect's event. */
export type CollectEvent = z.infer<typeof collectEventSchema>;

/** Maps Collect's event to what `collectShard` (collect-shard.ts) takes. */
export function toCollectInput(event: CollectEvent): CollectShardInput {
  const { runId, ledgerScope, shard, job } = event;
  return {
    runId,
    ledgerScope,
    shard: shard.shard,
    jobArn: job.jobArn,
    jobStatus: job.status,
    ...(job.message !== undefined ? { failureMessage: job.message } : {}),
    inputKeys: shard.inputKeys,
    format: shard.format,
    outputPrefix: job.outputPrefix,
    submittedAt: job.submittedAt,
    ...(job.endedAt !== undefined ? { endedAt: job.endedAt } : {}),
  };
}

/**
 * Parses Collect's event.
 * @throws InvalidEventError when the event is not `{runId, ledgerScope, shard, job}`
 */
export function parseCollectEvent(event: unknown): CollectEvent {
  const parsed = collectEventSchema.safeParse(event);
  if (!parsed.success) {
    throw new InvalidEventError(
      `Collect expects {runId, ledgerScope, shard: ShardItem, job: BatchJobOutcome}: ${parsed.error.message}`,
    );
  }
  if (parsed.data.job.shard !== parsed.data.shard.shard) {
    throw new InvalidEventError(
      `Collect was given the job of shard ${parsed.data.job.shard} for shard ${parsed.data.shard.shard}`,
    );
  }
  return parsed.data;
}
