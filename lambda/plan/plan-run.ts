import type { S3Client } from '@aws-sdk/client-s3';
import * as z from 'zod';
import type { PlanOutput } from '../shared/contracts';
import type { FailureLaneSender } from '../shared/failure-lane';
import type { Ledger } from '../shared/ledger';
import type { ModelFamily } from '../shared/model-catalog';
import type { PromptSettings } from '../shared/records';
import type { BatchQuotas } from '../batch/quotas';
import type { InputScope } from './run-input';
import type { PlannedSegment } from './segment-pass';
import { requireJson } from './plan-files';
import { preparePlan, type CountPart } from './prepare';
import { countPartLines, planSegment } from './segment-step';
import { joinTail, mergePlan, planSlices } from './merge-plan';

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

/** Plan's event, built by the workflow from the execution input and context. */
export const planEventSchema = z.object({
  runId: z.string().min(1),
  startedAt: z.string().min(1),
  input: z.unknown(),
});
/** Plan's event. */
export type PlanEvent = z.infer<typeof planEventSchema>;

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
