import { BedrockClient, GetModelInvocationJobCommand } from '@aws-sdk/client-bedrock';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SendTaskSuccessCommand, type SFNClient } from '@aws-sdk/client-sfn';
import { toCollectInput } from '../lambda/batch/collect/collect-event';
import { planInProcess } from '../lambda/plan/plan-run';
import { BatchQuotaBusyError, jobsTableDefinition, JobStore, resumeWait } from '../lambda/shared/batch-jobs';
import type { BatchQuotas } from '../lambda/batch/quotas';
import { collectShard } from '../lambda/batch/collect/collect-shard';
import { batchJobOutcomeSchema, type BatchJobOutcome, type ShardItem } from '../lambda/shared/contracts';
import { FailureLaneSender } from '../lambda/shared/failure-lane';
import { Ledger } from '../lambda/shared/ledger';
import { getJson } from '../lambda/shared/s3-jsonl';
import { planShards } from '../lambda/batch/sharding';
import { submitShardJob, type SubmitSettings } from '../lambda/batch/submit-job';
import {
  isTerminalStatus,
  startBedrockSimulator,
  type BatchJobStateChangeEvent,
} from '@corpus-pipeline/local-aws/bedrock-simulator';
import { LOCAL_CREDENTIALS } from '@corpus-pipeline/local-aws/cloud/emulators';
import { CATALOG_MODELS } from '../cli/local/simulator-models';
import { noopSqs } from './lib/noop-sqs';
import { figure, type Benchmark, type BenchResults } from './lib/results';
import { startBenchServices, uploadChunks } from './lib/services';

const MODEL_ID = 'us.amazon.nova-lite-v1:0';
const INGEST = 'bench-ingest';
const OUTPUT = 'bench-output';
const LEDGER_TABLE = 'bench-ledger';
const JOBS_TABLE = 'bench-jobs';

/** One job as the simulator saw it. */
interface JobSpan {
  submitted: number;
  ended: number;
}

/**
 * Batch mode slot use: Plan cuts N shards under a concurrent-jobs quota Q < N; a driver runs them as the workflow's batch
 * Map does (MaxConcurrency from the plan; each child: SubmitJob's submitShardJob, the wait ended by the job's
 * state-change event through resumeWait as the job-state handler does it, then collectShard) against the simulator's
 * batch side, which enforces Q. Measured: the fraction of the time, while shards still wait to be submitted, that
 * all Q slots hold a job; and the jobs submitted against planShards' minimum.
 */
export const slotsBenchmark: Benchmark = {
  name: 'slots',
  title: 'Batch mode: batch job slot use under the concurrent-jobs quota',
  async run({ quick, log }): Promise<BenchResults> {
    const slots = quick ? 2 : 3;
    const records = quick ? 600 : 2_500;
    // Simulated job length: phases plus processing. Real jobs take minutes to hours; these take seconds, which makes
    // the hand-over between two jobs of a slot (event, collect, next submit) weigh far more than in production.
    const phaseMs = quick ? 200 : 1_000;
    const recordMs = quick ? 5 : 200;
    const quotas: BatchQuotas = {
      minRecordsPerJob: 100,
      maxRecordsPerJob: 250,
      maxRecordsPerFile: 250,
      maxBytesPerFile: 1_000_000_000,
      maxBytesPerJob: 5_000_000_000,
      maxConcurrentJobs: slots,
    };
    const services = await startBenchServices();
    const ended = new Map<string, () => void>();
    const endedEarly = new Set<string>();
    const events: BatchJobStateChangeEvent[] = [];
    const sim = await startBedrockSimulator({
      models: CATALOG_MODELS,
      s3Client: services.s3,
      batch: {
        limits: { default: { ...quotas } },
        phaseMs: { submitted: phaseMs, validating: phaseMs, scheduled: phaseMs },
        recordMs,
      },
      onJobEvent: (event) => {
        events.push(event);
        if (!isTerminalStatus(event.detail.status)) return;
        const resume = ended.get(event.detail.batchJobArn);
        if (resume) resume();
        else endedEarly.add(event.detail.batchJobArn);
      },
    });
    const bedrock = new BedrockClient({
      endpoint: sim.controlEndpoint,
      region: 'us-east-1',
      credentials: { ...LOCAL_CREDENTIALS },
    });
    try {
      await services.createBucket(INGEST);
      await services.createBucket(OUTPUT);
      await services.createLedgerTable(LEDGER_TABLE);
      const ddbClient = new DynamoDBClient({
        region: 'us-east-1',
        endpoint: services.env.AWS_ENDPOINT_URL_DYNAMODB,
        credentials: { ...LOCAL_CREDENTIALS },
      });
      await ddbClient.send(new CreateTableCommand(jobsTableDefinition(JOBS_TABLE)));
      ddbClient.destroy();

      const lines: string[] = [];
      for (let i = 0; i < records; i++) {
        const text = `Summarise record ${i}: the parcel arrived ${i % 7} days late and the box was dented.`;
        lines.push(
          JSON.stringify({
            recordId: `r-${i}`,
            modelInput: { messages: [{ role: 'user', content: [{ text }] }] },
          }),
        );
      }
      await uploadChunks(services.s3, INGEST, 'corpus.jsonl', [`${lines.join('\n')}\n`]);
      const ledger = new Ledger({ client: services.ddb, tableName: LEDGER_TABLE, ttlDays: 1 });
      const plan = await planInProcess(
        {
          runId: 'bench-slots',
          startedAt: new Date().toISOString(),
          input: { bucket: INGEST, key: 'corpus.jsonl', mode: 'batch' },
        },
        {
          s3: services.s3,
          ledger,
          failureLane: new FailureLaneSender(noopSqs(), 'failures', 'failures-dlq'),
          settings: {
            outputBucket: OUTPUT,
            input: { ingestBucket: INGEST, ingestPrefix: '', allowedBuckets: [] },
            modelId: MODEL_ID,
            family: 'amazon-nova',
            ledgerScope: 'bench-slots',
            prompt: { template: '{{text}}', maxTokens: 256 },
            batchSize: 20,
            mapConcurrency: 10,
            toleratedFailurePercentage: 0,
            batch: { toleratedFailurePercentage: 0, jobTimeoutHours: 24, reconcileIntervalMinutes: 5 },
          },
          batchQuotas: async () => ({ quotas, sources: {} }),
        },
      );
      if (!plan.batch) throw new Error(`Plan chose ${plan.mode}, not batch`);
      const shards = (await getJson<ShardItem[]>(services.s3, OUTPUT, plan.batch.shardsKey)) ?? [];
      const minimum = planShards(
        shards.reduce((n, s) => n + s.records, 0),
        shards.reduce((n, s) => n + s.bytes, 0),
        quotas,
      ).shards;
      log(`${shards.length} shards, ${slots} job slots, MaxConcurrency ${plan.batch.maxConcurrency}`);

      // The job-state handler's part: on a terminal event, read the job and resume its wait (SendTaskSuccess).
      const waits = new Map<string, (outcome: BatchJobOutcome) => void>();
      const sfn = {
        send: async (command: unknown) => {
          if (!(command instanceof SendTaskSuccessCommand)) throw new Error('unexpected Step Functions call');
          const { taskToken, output } = command.input;
          waits.get(taskToken ?? '')?.(batchJobOutcomeSchema.parse(JSON.parse(output ?? '{}')));
          return {};
        },
      } as unknown as SFNClient;
      const store = new JobStore({ client: services.ddb, tableName: JOBS_TABLE, ttlDays: 1 });
      const settings: SubmitSettings = {
        outputBucket: OUTPUT,
        modelId: MODEL_ID,
        roleArn: 'arn:aws:iam::000000000000:role/bench-batch',
        jobTimeoutHours: 24,
        jobNamePrefix: 'bench',
        tags: {},
      };
      let busyRetries = 0;
      const collectSeconds: number[] = [];

      const child = async (shard: ShardItem): Promise<void> => {
        const taskToken = `token-${shard.shard}`;
        const outcome = new Promise<BatchJobOutcome>((resolve) => waits.set(taskToken, resolve));
        for (;;) {
          try {
            const submitted = await submitShardJob(
              { taskToken, runId: plan.runId, shard },
              { bedrock, sfn, store, settings },
            );
            const resume = async (): Promise<void> => {
              const stored = await store.get(submitted.jobArn);
              const job = await bedrock.send(
                new GetModelInvocationJobCommand({ jobIdentifier: submitted.jobArn }),
              );
              if (stored) await resumeWait({ sfn, store }, stored, job);
            };
            if (endedEarly.has(submitted.jobArn)) await resume();
            else ended.set(submitted.jobArn, () => void resume());
            break;
          } catch (err) {
            if (!(err instanceof BatchQuotaBusyError)) throw err;
            // The workflow retries after 30 s and more; here, at once: a busy slot would only lower the figure.
            busyRetries++;
            await new Promise((r) => setTimeout(r, 200));
          }
        }
        const job = await outcome;
        const started = performance.now();
        await collectShard(toCollectInput({ runId: plan.runId, ledgerScope: plan.ledgerScope, shard, job }), {
          s3: services.s3,
          ledger,
          failureLane: new FailureLaneSender(noopSqs(), 'failures', 'failures-dlq'),
          outputBucket: OUTPUT,
          leaseMs: 600_000,
        });
        collectSeconds.push((performance.now() - started) / 1000);
      };
      let next = 0;
      await Promise.all(
        Array.from({ length: plan.batch.maxConcurrency }, async () => {
          for (let shard = shards[next++]; shard; shard = shards[next++]) await child(shard);
        }),
      );

      const jobs = sim.batch.describeAll();
      const spans: JobSpan[] = jobs.map((j) => ({
        submitted: Date.parse(j.submitTime),
        ended: Date.parse(j.endTime ?? j.lastModifiedTime),
      }));
      const { fraction, windowSeconds } = allSlotsBusy(spans, slots);
      const jobSeconds = spans.reduce((n, s) => n + (s.ended - s.submitted), 0) / spans.length / 1000;
      const meanCollect = collectSeconds.reduce((a, b) => a + b, 0) / Math.max(1, collectSeconds.length);
      const projected = 3600 / (3600 + (windowSeconds * (1 - fraction)) / Math.max(1, jobs.length - slots));
      return {
        'slots.all-busy': figure(
          fraction,
          'share',
          1,
          'value >= 0.9',
          (_r, v) => v >= 0.9,
          `all ${slots} slots held a job ${(fraction * 100).toFixed(1)}% of the ${windowSeconds.toFixed(1)} s while ` +
            `shards waited (${shards.length} shards; jobs ${jobSeconds.toFixed(1)} s on average; collect ` +
            `${meanCollect.toFixed(2)} s a shard, during which the Map slot is held and the job slot idle; ` +
            `${busyRetries} submits found no free slot). With 1-hour jobs the same hand-over would give ` +
            `${(projected * 100).toFixed(1)}%`,
        ),
        'slots.jobs-submitted': figure(
          jobs.length,
          'jobs',
          minimum,
          'ratio = 1',
          (r) => r === 1,
          `CreateModelInvocationJob calls that created a job, against planShards' minimum for the records and ` +
            `bytes under the quotas (maxRecordsPerJob ${quotas.maxRecordsPerJob})`,
        ),
      };
    } finally {
      bedrock.destroy();
      await sim.stop();
      await services.stop();
    }
  },
};

/**
 * The share of the time from the first submit to the last (while some shard still waited to be submitted) during
 * which at least `slots` jobs were active.
 */
function allSlotsBusy(spans: JobSpan[], slots: number): { fraction: number; windowSeconds: number } {
  const start = Math.min(...spans.map((s) => s.submitted));
  const end = Math.max(...spans.map((s) => s.submitted));
  if (!(end > start)) return { fraction: 1, windowSeconds: 0 };
  const edges = spans
    .flatMap((s) => [
      { at: s.submitted, delta: 1 },
      { at: s.ended, delta: -1 },
    ])
    .sort((a, b) => a.at - b.at || a.delta - b.delta);
  let active = 0;
  let busy = 0;
  let previous = start;
  for (const edge of edges) {
    const at = Math.min(Math.max(edge.at, start), end);
    if (active >= slots) busy += at - previous;
    previous = at;
    active += edge.delta;
  }
  return { fraction: busy / (end - start), windowSeconds: (end - start) / 1000 };
}
