/**
 * The InProgress phase of a batch job: every record answered into one shuffled `.out` file per input file under
 * `<output>/<jobId>/`, then `manifest.json.out`, as Bedrock lays them out.
 */
import type { S3Client } from '@aws-sdk/client-s3';

import type { BatchFaultInjector } from './batch-faults';
import {
  joinKey,
  parseS3Uri,
  putJson,
  readInputLines,
  ShuffledJsonlWriter,
  type BatchInputFile,
} from './batch-io';
import { manifestOf, type JobRecord } from './batch-job';
import { generatedRecordId, processBatchRecord } from './batch-records';
import { mulberry32, type OutputLengthOptions } from './engine';
import type { FaultInjector } from './faults';

/** What answering a job's records needs from the service. */
export interface JobOutputContext {
  readonly s3: S3Client;
  /** Lines held to shuffle each output file. */
  readonly shuffleWindow: number;
  /** Processing time per record, in ms (the slowMs fault adds to it). */
  readonly recordMs: number;
  /** Batch faults (dropped records, slowness). */
  readonly faults: BatchFaultInjector;
  /** The runtime's fault injector, for the reject marker. */
  readonly runtimeFaults: FaultInjector;
  readonly outputLength?: OutputLengthOptions;
  /** Waits on the batch clock; false when the job was interrupted or the service closed meanwhile. */
  readonly sleep: (ms: number) => Promise<boolean>;
  /** Whether the service has closed. */
  readonly closed: () => boolean;
}

/**
 * Answers every record, writing one shuffled `.out` file per input file, then the manifest. Stops early
 * (keeping what it wrote) when the job is stopped or times out. Returns how many records the partialJob
 * fault left without output.
 */
export async function writeJobOutput(
  job: JobRecord,
  files: readonly BatchInputFile[],
  ctx: JobOutputContext,
): Promise<number> {
  const out = parseS3Uri(job.input.outputDataConfig.s3OutputDataConfig.s3Uri);
  const shuffle = mulberry32(Number.parseInt(job.jobId.slice(0, 8), 36) >>> 0);
  const window = Math.max(1, ctx.shuffleWindow);
  let skipped = 0;
  for (const file of files) {
    if (job.interrupt || ctx.closed()) break;
    const writer = new ShuffledJsonlWriter(
      ctx.s3,
      { bucket: out.bucket, key: joinKey(out.key, job.jobId, `${file.name}.out`) },
      window,
      shuffle,
    );
    try {
      skipped += await answerFile(job, file, writer, ctx);
    } catch (err) {
      writer.abort();
      throw err;
    }
    if (ctx.closed()) {
      writer.abort();
      return skipped;
    }
    await writer.close();
  }
  if (ctx.closed()) return skipped;
  await putJson(
    ctx.s3,
    { bucket: out.bucket, key: joinKey(out.key, job.jobId, 'manifest.json.out') },
    manifestOf(job.counts),
  );
  return skipped;
}

/** Answers the records of one input file into its writer; returns how many the partialJob fault dropped. */
async function answerFile(
  job: JobRecord,
  file: BatchInputFile,
  writer: ShuffledJsonlWriter,
  ctx: JobOutputContext,
): Promise<number> {
  const invocationType = job.input.modelInvocationType ?? 'InvokeModel';
  const { counts } = job;
  let skipped = 0;
  let lineNumber = 0;
  for await (const text of readInputLines(ctx.s3, file)) {
    lineNumber += 1;
    if (text.trim().length === 0) continue;
    if (ctx.faults.dropRecord()) {
      skipped += 1;
      continue;
    }
    const at = lineNumber;
    const result = processBatchRecord(text, {
      model: job.model,
      invocationType,
      faults: ctx.runtimeFaults,
      ...(ctx.outputLength === undefined ? {} : { outputLength: ctx.outputLength }),
      fallbackRecordId: () => generatedRecordId(job.jobId, file.name, at),
    });
    await writer.write(JSON.stringify(result.line));
    counts.processed += 1;
    if (result.ok) {
      counts.success += 1;
      counts.inputTokens += result.inputTokens;
      counts.outputTokens += result.outputTokens;
    } else {
      counts.error += 1;
    }
    const delay = ctx.recordMs + ctx.faults.slowMs;
    if (delay > 0 && !(await ctx.sleep(delay))) break;
    if (job.interrupt || ctx.closed()) break;
  }
  return skipped;
}
