/**
 * Child process of the plan benchmark: `plan <bucket> <key> <outputBucket> <ledgerTable> <runId>` runs planInProcess
 * (batch mode, so both passes and the shard files run) or `bare <bucket> <key>` runs the reference loop, and reports
 * the time, counts and this process's peak memory. Started by plan-throughput.ts with the emulators' endpoints and
 * Plan's environment set.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { planInProcess } from '../lambda/plan/plan-run';
import { DEFAULT_BATCH_QUOTAS } from '../lambda/batch/quotas';
import { FailureLaneSender } from '../lambda/shared/failure-lane';
import { Ledger } from '../lambda/shared/ledger';
import { defaultParseWorkers } from '../lambda/plan/parse-pool';
import { bareLoop } from './lib/bare-loop';
import { childMain, report } from './lib/child';
import { noopSqs } from './lib/noop-sqs';

childMain(async () => {
  const [mode, bucket, key, outputBucket, ledgerTable, runId] = process.argv.slice(2);
  if (!bucket || !key)
    throw new Error('usage: plan-child plan|bare <bucket> <key> [outputBucket ledgerTable runId]');
  const s3 = new S3Client({ forcePathStyle: true });
  if (mode === 'bare') {
    report(await bareLoop(s3, bucket, key));
    return;
  }
  if (mode !== 'plan' || !outputBucket || !ledgerTable || !runId)
    throw new Error(`bad arguments for ${mode}`);
  const ddb = DynamoDBDocumentClient.from(new DynamoDBClient({}));
  // BENCH_PLAN_WORKERS=<n> fixes the parse workers; by default, as the local runtime: one per CPU beyond the first.
  const parseWorkers = process.env.BENCH_PLAN_WORKERS
    ? Number(process.env.BENCH_PLAN_WORKERS)
    : defaultParseWorkers();
  const peak = { heapUsed: 0, external: 0, arrayBuffers: 0, rss: 0 };
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    for (const k of Object.keys(peak) as (keyof typeof peak)[]) peak[k] = Math.max(peak[k], m[k] / 1048576);
    // Every 250 ms: process.memoryUsage() walks the heap's spaces, and at 50 ms it was 1.5% of the main thread's CPU,
    // counted as Plan's (peak RSS comes from getrusage, not from here).
  }, 250);
  const started = performance.now();
  const output = await planInProcess(
    { runId, startedAt: new Date().toISOString(), input: { bucket, key, mode: 'batch' } },
    {
      s3,
      ledger: new Ledger({ client: ddb, tableName: ledgerTable, ttlDays: 1 }),
      failureLane: new FailureLaneSender(noopSqs(), 'failures', 'failures-dlq'),
      settings: {
        outputBucket,
        input: { ingestBucket: bucket, ingestPrefix: '', allowedBuckets: [] },
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
      },
      batchQuotas: async () => ({ quotas: DEFAULT_BATCH_QUOTAS, sources: { all: 'configured' } }),
    },
  );
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  report({
    peak,
    seconds,
    bytes: output.corpus.size ?? 0,
    counts: output.counts,
    mode: output.mode,
    shards: output.batch?.shards ?? 0,
    parseWorkers,
    viaConverse: output.batch?.viaConverse ?? 0,
  });
});
