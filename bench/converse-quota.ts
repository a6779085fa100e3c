import { BedrockRuntimeClient, ConverseCommand } from '@aws-sdk/client-bedrock-runtime';
import { ConfiguredRetryStrategy } from '@smithy/util-retry';
import { processBatch } from '../lambda/converse/converse-unit';
import type { ItemBatchEvent, WorkItem } from '../lambda/shared/contracts';
import { FailureLaneSender } from '../lambda/shared/failure-lane';
import { Ledger } from '../lambda/shared/ledger';
import {
  bedrockCaller,
  throttleBackoffMs,
  toConverseInput,
  type ModelCaller,
} from '../lambda/converse/model-caller';
import { pacedCaller, QuotaPacer } from '../lambda/converse/pacing';
import { startBedrockSimulator, type TimelinePoint } from '@corpus-pipeline/local-aws/bedrock-simulator';
import { mulberry32 } from '@corpus-pipeline/local-aws/bedrock-simulator/engine';
import { noopSqs } from './lib/noop-sqs';
import { figure, type Benchmark, type BenchResults } from './lib/results';
import { LOCAL_CREDENTIALS } from '@corpus-pipeline/local-aws/cloud/emulators';
import { CATALOG_MODELS } from '../cli/local/simulator-models';
import { startBenchServices, type BenchServices } from './lib/services';

const MODEL_ID = 'us.amazon.nova-lite-v1:0';
const BUCKET = 'bench-output';
const LEDGER_TABLE = 'bench-ledger';
/** The deployment defaults of lib/config.ts: the quotas and the Converse Map's shape. */
const RPM = 200;
const TPM = 200_000;
const MAP_CONCURRENCY = 10;
const BATCH_SIZE = 25;
const ITEM_CONCURRENCY = 4;
const MAX_ATTEMPTS = 6;
/** Simulated latency of a call: a base plus a time per output token (in simulated ms). */
const LATENCY_MS = 400;
const PER_OUTPUT_TOKEN_MS = 8;

/** What one loop achieved, read from the simulator's accepted-token timeline (simulated clock). */
interface LoopOutcome {
  /** Tokens per simulated minute while every worker was busy (the Map full), after the first minute. */
  sustainedTpm: number;
  /** Tokens per simulated minute over the whole run, ramp-up and tail included. */
  overallTpm: number;
  /** Simulated minutes the sustained window lasted. */
  sustainedMinutes: number;
  succeeded: number;
  /** Records that ended failed with ThrottlingException. */
  failedByThrottling: number;
  failedOther: number;
  /** ThrottlingException answers the simulator gave (retried or not). */
  throttledCalls: number;
}

/** A clock running `scale` times faster than the wall clock, and a sleep on it. */
interface ScaledTime {
  scale: number;
  now: () => number;
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
}

function scaledTime(scale: number): ScaledTime {
  const start = Date.now();
  return {
    scale,
    now: () => start + (Date.now() - start) * scale,
    sleep: (ms, signal) =>
      new Promise((resolve) => {
        const timer = setTimeout(done, ms / scale);
        function done(): void {
          clearTimeout(timer);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done, { once: true });
      }),
  };
}

/** Records of realistic sizes: 500 to 2,000 input tokens, answers capped at 400 tokens. */
function records(count: number): WorkItem[] {
  const random = mulberry32(7);
  const words = 'please summarise the customer review below and list the main complaint and the tone'.split(
    ' ',
  );
  return Array.from({ length: count }, (_, i) => {
    const chars = 2000 + Math.floor(random() * 6000);
    let text = `Record ${i}:`;
    while (text.length < chars) text += ` ${words[Math.floor(random() * words.length)] ?? 'x'}`;
    return {
      recordId: `r-${i}`,
      format: 'converse',
      line: i + 1,
      modelInput: {
        messages: [{ role: 'user', content: [{ text }] }],
        inferenceConfig: { maxTokens: 400 },
      },
    };
  });
}

/**
 * Converse mode against quotas: the simulator enforces RPM and TPM over a rolling minute; the records go through
 * processBatch as the Converse Map runs it (MAP_CONCURRENCY children at once, each taking the next batch of
 * BATCH_SIZE, ITEM_CONCURRENCY calls in flight per batch, the SDK retrying throttles with throttleBackoffMs), with
 * and without the client-side pacer, and through a naive fixed-concurrency loop with exponential backoff.
 * Time runs on a scaled clock (the simulator's quota window, latencies and every wait alike) so a quick run takes
 * seconds; the full run uses real time at twice the speed.
 */
export const converseBenchmark: Benchmark = {
  name: 'converse',
  title: 'Converse mode throughput against RPM/TPM quotas',
  async run({ quick, log }): Promise<BenchResults> {
    const scale = Number(process.env.BENCH_TIME_SCALE ?? (quick ? 30 : 2));
    const minutes = Number(process.env.BENCH_CONVERSE_MINUTES ?? (quick ? 1 : 5));
    // Enough records to keep the quota busy for `minutes` (about 1,550 tokens a record), in whole rounds of batches.
    const perRound = MAP_CONCURRENCY * BATCH_SIZE;
    const count = Math.ceil((TPM * minutes) / 1550 / perRound) * perRound;
    const items = records(count);
    const services = await startBenchServices();
    try {
      await services.createBucket(BUCKET);
      await services.createLedgerTable(LEDGER_TABLE);
      log(`${count} records, ${minutes} simulated minutes at quota, clock x${scale}`);
      log('processBatch with the pacer (the proposed ConverseBatch)');
      const paced = await runMapLoop(services, items, scale, true, 'paced');
      log('processBatch as it is (SDK retries only)');
      const unpaced = await runMapLoop(services, items, scale, false, 'unpaced');
      log('naive fixed-concurrency loop with exponential backoff');
      const naive = await runNaiveLoop(items, scale);
      const describe = (o: LoopOutcome): string =>
        `${o.succeeded} succeeded, ${o.failedByThrottling} failed by throttling, ${o.failedOther} failed otherwise, ` +
        `${o.throttledCalls} throttled calls; overall ${Math.round(o.overallTpm)} tokens/min over the run, ` +
        `sustained window ${o.sustainedMinutes.toFixed(1)} min`;
      const shape = `${MAP_CONCURRENCY} batches of ${BATCH_SIZE} at once, ${ITEM_CONCURRENCY} calls each`;
      return {
        'converse.tpm': figure(
          paced.sustainedTpm,
          'tokens/min',
          TPM,
          'ratio >= 0.9',
          (r) => r >= 0.9,
          `processBatch + QuotaPacer (lambda/converse/pacing.ts, 1/${MAP_CONCURRENCY} of the quotas per child), ` +
            `${shape}, vs the simulator's TPM quota (RPM ${RPM}); ${describe(paced)}`,
        ),
        'converse.throttle-failures': figure(
          paced.failedByThrottling,
          'records',
          count,
          'value = 0',
          (_r, v) => v === 0,
          `records of the paced run that failed with ThrottlingException, of ${count}`,
        ),
        'converse.unpaced-throttle-failures': figure(
          unpaced.failedByThrottling,
          'records',
          count,
          'report (current code)',
          () => true,
          `processBatch as ConverseBatch runs it today (SDK retries, ${MAX_ATTEMPTS} attempts, no pacing), ${shape}: ` +
            `records failed by throttling; ${describe(unpaced)}`,
        ),
        'converse.naive-tpm': figure(
          naive.sustainedTpm,
          'tokens/min',
          TPM,
          'report (peer)',
          () => true,
          `naive loop: ${MAP_CONCURRENCY * ITEM_CONCURRENCY} workers calling Converse, full-jitter exponential ` +
            `backoff (throttleBackoffMs) until success; ${describe(naive)}`,
        ),
      };
    } finally {
      await services.stop();
    }
  },
};

async function startSimulator(time: ScaledTime): Promise<Awaited<ReturnType<typeof startBedrockSimulator>>> {
  return startBedrockSimulator({
    models: CATALOG_MODELS,
    quotas: { default: { requestsPerMinute: RPM, tokensPerMinute: TPM } },
    latencyMs: LATENCY_MS / time.scale,
    perOutputTokenMs: PER_OUTPUT_TOKEN_MS / time.scale,
    outputLength: { minTokens: 100, maxTokens: 400 },
    now: time.now,
  });
}

function runtimeClient(endpoint: string, time: ScaledTime, maxAttempts: number): BedrockRuntimeClient {
  return new BedrockRuntimeClient({
    endpoint,
    region: 'us-east-1',
    credentials: { ...LOCAL_CREDENTIALS },
    retryStrategy: new ConfiguredRetryStrategy(
      maxAttempts,
      (attempt) => throttleBackoffMs(attempt) / time.scale,
    ),
  });
}

/** The Converse Map: MAP_CONCURRENCY children, each running processBatch on the next batch until none is left. */
async function runMapLoop(
  services: BenchServices,
  items: WorkItem[],
  scale: number,
  paced: boolean,
  runId: string,
): Promise<LoopOutcome> {
  const time = scaledTime(scale);
  const sim = await startSimulator(time);
  const client = runtimeClient(sim.runtimeEndpoint, time, MAX_ATTEMPTS);
  const ledger = new Ledger({ client: services.ddb, tableName: LEDGER_TABLE, ttlDays: 1 });
  const tally = { succeeded: 0, failedByThrottling: 0, failedOther: 0 };
  const finishedAt: number[] = [];
  try {
    const batches: WorkItem[][] = [];
    for (let i = 0; i < items.length; i += BATCH_SIZE) batches.push(items.slice(i, i + BATCH_SIZE));
    let next = 0;
    const child = async (): Promise<void> => {
      // One pacer per child for its whole life, as in a warm Lambda container.
      const caller: ModelCaller = bedrockCaller(client, MODEL_ID);
      const callModel = paced
        ? pacedCaller(
            caller,
            new QuotaPacer({
              requestsPerMinute: RPM,
              tokensPerMinute: TPM,
              share: 1 / MAP_CONCURRENCY,
              now: time.now,
              sleep: time.sleep,
            }),
          )
        : caller;
      for (let batch = batches[next++]; batch; batch = batches[next++]) {
        const event: ItemBatchEvent = { BatchInput: { runId, ledgerScope: `bench-${runId}` }, Items: batch };
        const summary = await processBatch(event, {
          s3: services.s3,
          ledger,
          failureLane: new FailureLaneSender(noopSqs(), 'failures', 'failures-dlq'),
          callModel,
          outputBucket: BUCKET,
          itemConcurrency: ITEM_CONCURRENCY,
          leaseMs: 600_000,
          remainingMs: () => 15 * 60_000,
        });
        tally.succeeded += summary.succeeded;
        // Records still failing retryably (throttled through every attempt) are handed to the failure lane.
        tally.failedByThrottling += summary.queued;
        tally.failedOther += summary.failed;
      }
      finishedAt.push(time.now());
    };
    await Promise.all(Array.from({ length: MAP_CONCURRENCY }, child));
    const stats = sim.stats().totals;
    return {
      ...tally,
      ...rates(stats.timeline, Math.min(...finishedAt)),
      throttledCalls: stats.throttled.rpm + stats.throttled.tpm,
    };
  } finally {
    client.destroy();
    await sim.stop();
  }
}

/** The peer: a fixed number of workers calling Converse, each retrying a throttled call with backoff until it passes. */
async function runNaiveLoop(items: WorkItem[], scale: number): Promise<LoopOutcome> {
  const time = scaledTime(scale);
  const sim = await startSimulator(time);
  const client = runtimeClient(sim.runtimeEndpoint, time, 1);
  const tally = { succeeded: 0, failedByThrottling: 0, failedOther: 0 };
  const finishedAt: number[] = [];
  try {
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let item = items[next++]; item; item = items[next++]) {
        for (let attempt = 0; ; attempt++) {
          try {
            await client.send(new ConverseCommand(toConverseInput(MODEL_ID, item.modelInput)));
            tally.succeeded++;
            break;
          } catch (err) {
            if ((err as { name?: string }).name !== 'ThrottlingException') {
              tally.failedOther++;
              break;
            }
            await time.sleep(throttleBackoffMs(attempt));
          }
        }
      }
      finishedAt.push(time.now());
    };
    await Promise.all(Array.from({ length: MAP_CONCURRENCY * ITEM_CONCURRENCY }, worker));
    const stats = sim.stats().totals;
    return {
      ...tally,
      ...rates(stats.timeline, Math.min(...finishedAt)),
      throttledCalls: stats.throttled.rpm + stats.throttled.tpm,
    };
  } finally {
    client.destroy();
    await sim.stop();
  }
}

/**
 * Tokens per minute from the accepted-token timeline. Sustained: the whole minutes from the end of the first minute (a
 * rolling-window quota lets a whole minute's tokens through at once at the start, which no later minute repeats) until
 * the first worker ran out of work (every worker busy); from the first admission when that leaves less than a minute.
 * Overall: from the first admission to the last, ramp-up and tail included.
 */
function rates(
  timeline: TimelinePoint[],
  firstDoneMs: number,
): Pick<LoopOutcome, 'sustainedTpm' | 'overallTpm' | 'sustainedMinutes'> {
  const first = timeline[0]?.second ?? 0;
  const last = timeline[timeline.length - 1]?.second ?? first;
  const busyUntil = Math.floor(firstDoneMs / 1000);
  const start = busyUntil - (first + 60) >= 60 ? first + 60 : first;
  // Whole minutes only: a rolling-window quota bounds every 60 s, not a shorter or odd-length span.
  const end = start + Math.max(1, Math.floor((busyUntil - start) / 60)) * 60;
  let sustained = 0;
  let overall = 0;
  for (const point of timeline) {
    overall += point.tokens;
    if (point.second >= start && point.second < end) sustained += point.tokens;
  }
  const sustainedSeconds = Math.max(1, end - start);
  return {
    sustainedTpm: (sustained / sustainedSeconds) * 60,
    overallTpm: (overall / Math.max(1, last + 1 - first)) * 60,
    sustainedMinutes: sustainedSeconds / 60,
  };
}
