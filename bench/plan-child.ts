/**
 * Child process of the plan benchmark: one step of Plan per process, as Lambda runs one invocation per step.
 *
 * - `prepare <outputBucket> <ledgerTable> <runId> <{bucket, key, segmentBytes}>` runs preparePlan (batch mode);
 * - `count <outputBucket> <ledgerTable> <runId> <CountEvent>` counts one byte-range part's lines;
 * - `segment <outputBucket> <ledgerTable> <runId> <SegmentEvent>` plans one segment;
 * - `merge <outputBucket> <ledgerTable> <runId> <PlanPrepared>` merges the segments (the prepared output's
 *   `requestedMode` decides whether the shard cut, assignShards, runs);
 * - `slice <outputBucket> <ledgerTable> <runId> <SliceEvent>` writes one segment's shard slices and tail part;
 * - `tail <outputBucket> <ledgerTable> <runId> <TailEvent>` joins the tail parts;
 * - `bare <bucket> <key>` runs the reference loop.
 *
 * Each reports its wall seconds, the S3 bytes it read, wrote and had copied server-side, its output, and (report())
 * the process's peak RSS and CPU time, main thread apart. Started by plan-throughput.ts with the emulators' endpoints
 * and Plan's environment set.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { PlanDeps } from '../lambda/plan/plan-run';
import { preparePlan } from '../lambda/plan/prepare';
import { countPartLines, planSegment, type CountEvent, type SegmentEvent } from '../lambda/plan/segment-step';
import { joinTail, mergePlan, planSlices, type SliceEvent, type TailEvent } from '../lambda/plan/merge-plan';
import { DEFAULT_BATCH_QUOTAS } from '../lambda/batch/quotas';
import { FailureLaneSender } from '../lambda/shared/failure-lane';
import { Ledger } from '../lambda/shared/ledger';
import { defaultParseWorkers } from '../lambda/plan/parse-pool';
import type { PlanPrepared } from '../lambda/shared/contracts';
import { bareLoop } from './lib/bare-loop';
import { childMain, report } from './lib/child';
import { noopSqs } from './lib/noop-sqs';

/** S3 bytes one step moved, counted by a middleware on its client. */
export interface S3Traffic {
  /** Bytes of GetObject responses (ContentLength: an open-ended range counts whole, however little is read). */
  read: number;
  /** Bytes of PutObject and UploadPart bodies. */
  written: number;
  /** Bytes UploadPartCopy copied inside S3 (never through this process). */
  copied: number;
}

/** The prepare step's argument. */
export interface PrepareArgs {
  bucket: string;
  key: string;
  segmentBytes: number;
}

/** Counts the bytes of every GetObject, PutObject, UploadPart and UploadPartCopy the client sends. */
function countTraffic(s3: S3Client): S3Traffic {
  const traffic: S3Traffic = { read: 0, written: 0, copied: 0 };
  s3.middlewareStack.add(
    (next, context) => async (args) => {
      const result = await next(args);
      const input = args.input as { Body?: unknown; CopySourceRange?: string };
      const output = result.output as { ContentLength?: number };
      switch (context.commandName) {
        case 'GetObjectCommand':
          traffic.read += output.ContentLength ?? 0;
          break;
        case 'PutObjectCommand':
        case 'UploadPartCommand':
          traffic.written += bodyBytes(input.Body);
          break;
        case 'UploadPartCopyCommand': {
          const range = /bytes=(\d+)-(\d+)/.exec(input.CopySourceRange ?? '');
          if (range) traffic.copied += Number(range[2]) - Number(range[1]) + 1;
          break;
        }
      }
      return result;
    },
    { step: 'initialize', name: 'benchTraffic' },
  );
  return traffic;
}

function bodyBytes(body: unknown): number {
  if (typeof body === 'string') return Buffer.byteLength(body);
  if (body instanceof Uint8Array) return body.byteLength;
  // Plan uploads buffers; a stream body would be left uncounted, so say so instead of under-reporting quietly.
  throw new Error(`plan-child cannot count an S3 body of type ${typeof body}`);
}

childMain(async () => {
  const [step, ...args] = process.argv.slice(2);
  const s3 = new S3Client({ forcePathStyle: true });
  if (step === 'bare') {
    const [bucket, key] = args;
    if (!bucket || !key) throw new Error('usage: plan-child bare <bucket> <key>');
    report(await bareLoop(s3, bucket, key));
    return;
  }
  const [outputBucket, ledgerTable, runId, json] = args;
  if (!outputBucket || !ledgerTable || !runId || !json)
    throw new Error(
      'usage: plan-child prepare|count|segment|merge <outputBucket> <ledgerTable> <runId> <json>',
    );
  const event: unknown = JSON.parse(json);
  const traffic = countTraffic(s3);
  const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));
  // BENCH_PLAN_WORKERS=<n> fixes the parse workers; by default, as the local runtime: one per CPU beyond the first.
  const parseWorkers = process.env.BENCH_PLAN_WORKERS
    ? Number(process.env.BENCH_PLAN_WORKERS)
    : defaultParseWorkers();
  // Only prepare cuts segments; the later steps take theirs from its output.
  const segmentBytes = step === 'prepare' ? (event as PrepareArgs).segmentBytes : undefined;
  const deps: PlanDeps = {
    s3,
    ledger: new Ledger({ client: ddb, tableName: ledgerTable, ttlDays: 1 }),
    failureLane: new FailureLaneSender(noopSqs(), 'failures', 'failures-dlq'),
    settings: {
      outputBucket,
      input: { ingestBucket: 'bench-corpus', ingestPrefix: '', allowedBuckets: [] },
      modelId: 'us.amazon.nova-lite-v1:0',
      // As the handler passes it: once, from the model catalog.
      family: 'amazon-nova',
      ledgerScope: 'bench',
      prompt: { template: 'Summarise in two sentences: {{text}}', maxTokens: 256 },
      batchSize: 20,
      mapConcurrency: 10,
      toleratedFailurePercentage: 5,
      batch: { toleratedFailurePercentage: 5, jobTimeoutHours: 24, reconcileIntervalMinutes: 5 },
      parseWorkers,
      ...(segmentBytes !== undefined ? { segmentBytes } : {}),
    },
    batchQuotas: async () => ({ quotas: DEFAULT_BATCH_QUOTAS, sources: { all: 'configured' } }),
  };
  const started = performance.now();
  let output: unknown;
  switch (step) {
    case 'prepare': {
      const { bucket, key } = event as PrepareArgs;
      output = await preparePlan(
        { runId, startedAt: new Date().toISOString(), input: { bucket, key, mode: 'batch' } },
        deps,
      );
      break;
    }
    case 'count':
      output = { lines: await countPartLines(event as CountEvent, deps) };
      break;
    case 'segment':
      output = await planSegment(event as SegmentEvent, deps);
      break;
    case 'merge':
      output = await mergePlan(event as PlanPrepared, deps);
      break;
    case 'slice':
      output = await planSlices(event as SliceEvent, deps);
      break;
    case 'tail':
      output = await joinTail(event as TailEvent, deps);
      break;
    default:
      throw new Error(`unknown plan step ${String(step)}`);
  }
  const seconds = (performance.now() - started) / 1000;
  report({ step, seconds, traffic, parseWorkers, output });
});
