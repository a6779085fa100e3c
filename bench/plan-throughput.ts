import * as os from 'node:os';
import {
  DEFAULT_PLAN_MEMORY_MB,
  LAMBDA_MAX_MEMORY_MB,
  lambdaCpuShare,
  lambdaVcpus,
  PLAN_RUNTIME_ENV,
} from '../lib/config';
import { runChild, type ChildReport } from './lib/child';
import { corpusChunks, type CorpusStats } from './lib/corpus';
import { figure, type Benchmark, type BenchResults } from './lib/results';
import { HANDLER_ENV, startBenchServices, uploadChunks } from './lib/services';
import type { BareLoopResult } from './lib/bare-loop';
import type { PlanCounts } from '../lambda/shared/contracts';

const MB = 1024 * 1024;
const CORPUS_BUCKET = 'bench-corpus';
const OUTPUT_BUCKET = 'bench-output';
const LEDGER_TABLE = 'bench-ledger';
/** The design point: 10M records, 20 GB, planned within one Lambda invocation (15 minutes). */
const DESIGN_BYTES = 20e9;
const LAMBDA_LIMIT_MINUTES = 15;

interface PlanChildReport {
  seconds: number;
  bytes: number;
  counts: PlanCounts;
  mode: string;
  shards: number;
  viaConverse: number;
  parseWorkers: number;
  /** Peaks of process.memoryUsage() in the child, MB (sampled every 250 ms). */
  peak: { heapUsed: number; external: number; arrayBuffers: number; rss: number };
}

/**
 * Plan/sharding throughput: planRun (batch mode: validation, ledger lookups on an empty dynalite table, the items
 * file, then the second pass that cuts shard files) over a generated corpus in s3rver, as a share of the bare loop's
 * throughput over the same object; peak memory of planRun over a small and a large corpus; the projection for the
 * 20 GB design point.
 */
export const planBenchmark: Benchmark = {
  name: 'plan',
  title: 'Plan/sharding throughput and memory',
  async run({ quick, log }): Promise<BenchResults> {
    // BENCH_PLAN_MB="<small>,<large>" overrides the corpus sizes (MB), e.g. for a run between quick and full.
    const [smallMb, largeMb] = (process.env.BENCH_PLAN_MB ?? (quick ? '2,8' : '100,1024'))
      .split(',')
      .map(Number);
    const smallBytes = (smallMb ?? 100) * MB;
    const largeBytes = (largeMb ?? 1024) * MB;
    const services = await startBenchServices();
    try {
      await services.createBucket(CORPUS_BUCKET);
      await services.createBucket(OUTPUT_BUCKET);
      await services.createLedgerTable(LEDGER_TABLE);
      const corpora: Record<'small' | 'large', CorpusStats> = {
        small: { lines: 0, bytes: 0, invalid: 0, duplicates: 0 },
        large: { lines: 0, bytes: 0, invalid: 0, duplicates: 0 },
      };
      for (const [name, bytes, seed] of [
        ['small', smallBytes, 11],
        ['large', largeBytes, 12],
      ] as const) {
        log(`generating the ${name} corpus (${Math.round(bytes / MB)} MB)`);
        await uploadChunks(
          services.s3,
          CORPUS_BUCKET,
          `${name}.jsonl`,
          corpusChunks(bytes, seed, corpora[name]),
        );
      }
      const env = { ...HANDLER_ENV, ...services.env, LEDGER_TABLE, OUTPUT_BUCKET };
      const bare = (name: string): Promise<BareLoopResult & ChildReport> =>
        runChild<BareLoopResult>('plan-child.ts', ['bare', CORPUS_BUCKET, `${name}.jsonl`], env);
      const plan = (name: string, runId: string): Promise<PlanChildReport & ChildReport> =>
        runChild<PlanChildReport>(
          'plan-child.ts',
          ['plan', CORPUS_BUCKET, `${name}.jsonl`, OUTPUT_BUCKET, LEDGER_TABLE, runId],
          { ...env, ...PLAN_RUNTIME_ENV },
        );

      log('bare loop over the large corpus');
      const bareBefore = await bare('large');
      log('planRun over the large corpus');
      const parentBefore = process.cpuUsage();
      const large = await plan('large', 'bench-large');
      const parentCpu = process.cpuUsage(parentBefore);
      const emulatorCpuSeconds = (parentCpu.user + parentCpu.system) / 1e6;
      log(
        `planRun large: ${large.seconds.toFixed(1)} s, ${large.cpuSeconds.toFixed(1)} s CPU ` +
          `(main thread ${large.mainThreadCpuSeconds?.toFixed(1) ?? '?'} s; emulators ` +
          `${emulatorCpuSeconds.toFixed(1)} s), peak ${Math.round(large.maxRssMb)} MB`,
      );
      log('planRun over the small corpus');
      const small = await plan('small', 'bench-small');
      log(`planRun small: ${small.seconds.toFixed(1)} s, peak ${Math.round(small.maxRssMb)} MB`);
      for (const [name, run] of [
        ['large', large],
        ['small', small],
      ] as const) {
        const p = run.peak;
        log(
          `planRun ${name} peaks (MB, main thread's heap): heapUsed ${Math.round(p.heapUsed)}, external ` +
            `${Math.round(p.external)}, arrayBuffers ${Math.round(p.arrayBuffers)}`,
        );
      }
      log('bare loop over the large corpus again');
      const bareAfter = await bare('large');

      const mbps = (bytes: number, seconds: number): number => bytes / MB / seconds;
      const bareMbps =
        (mbps(bareBefore.bytes, bareBefore.seconds) + mbps(bareAfter.bytes, bareAfter.seconds)) / 2;
      const planMbps = mbps(large.bytes, large.seconds);
      const bareMbpsPerCpu =
        (bareBefore.bytes + bareAfter.bytes) / MB / (bareBefore.cpuSeconds + bareAfter.cpuSeconds);
      const costs = cpuCosts(small, large);
      const projection = projectDesignPoint(costs, DEFAULT_PLAN_MEMORY_MB);
      const largest = projectDesignPoint(costs, LAMBDA_MAX_MEMORY_MB);
      const boxCpu = (large.cpuSeconds + emulatorCpuSeconds) / (os.availableParallelism() * large.seconds);
      const sizes = `${Math.round(corpora.small.bytes / MB)} MB vs ${Math.round(corpora.large.bytes / MB)} MB`;
      const c = large.counts;
      return {
        'plan.throughput': figure(
          planMbps,
          'MB/s',
          bareMbps,
          'report (no target)',
          () => true,
          `planRun in batch mode over ${Math.round(large.bytes / MB)} MB (${c.lines} lines: ${c.records} records, ` +
            `${c.invalid} invalid, ${c.duplicates} duplicates; ${large.shards} shards, ${large.viaConverse} via ` +
            `Converse; ${large.parseWorkers} parse workers) vs the bare GET+split+JSON.parse loop over the same ` +
            `object (mean of a run before and after). Wall clock on this ${os.availableParallelism()}-CPU machine, ` +
            `which Plan shares with the emulators: ${Math.round(boxCpu * 100)}% of all its CPU was busy during the run. ` +
            `No target: on a small machine this measures the local S3 serving Plan's writes (the emulators used ` +
            `${emulatorCpuSeconds.toFixed(1)} CPU seconds in this run), not Plan; plan.cpu is Plan's own cost`,
        ),
        'plan.cpu': figure(
          large.bytes / MB / large.cpuSeconds,
          'MB/cpu-s',
          bareMbpsPerCpu,
          'ratio >= 0.25',
          (r) => r >= 0.25,
          `the same runs per CPU second of the measured process, all threads (process start included), leaving ` +
            `out the time spent waiting on the emulators: the cost of Plan's own work (validate, canonicalize, ` +
            `hash, serialize, hand blocks to workers, second pass) against parsing alone`,
        ),
        'plan.memory': figure(
          large.maxRssMb,
          'MB',
          small.maxRssMb,
          'ratio <= 1.2 and value < 256',
          (r, v) => r <= 1.2 && v < 256,
          `peak RSS of the planRun process, ${sizes} corpus (reference: the smaller one); bare loop peak ` +
            `${Math.round(bareBefore.maxRssMb)} MB`,
        ),
        'plan.projection-20gb': figure(
          projection.minutes,
          'min',
          LAMBDA_LIMIT_MINUTES,
          'ratio <= 1',
          (r) => r <= 1,
          describeProjection(projection, costs, 'the default') +
            ` In one invocation it plans up to ${projection.maxGbIn15Minutes.toFixed(1)} GB.`,
        ),
        'plan.projection-20gb-10240': figure(
          largest.minutes,
          'min',
          LAMBDA_LIMIT_MINUTES,
          'ratio <= 1',
          (r) => r <= 1,
          describeProjection(largest, costs, 'the opt-in') +
            ` In one invocation it plans up to ${largest.maxGbIn15Minutes.toFixed(1)} GB. On one vCPU the same ` +
            `would take ${((DESIGN_MB * (costs.mainSecondsPerMb + costs.workerSecondsPerMb)) / 60).toFixed(0)} min`,
        ),
      };
    } finally {
      await services.stop();
    }
  },
};

/** Plan's CPU cost per MB of corpus, from two runs of different sizes (slopes: start-up costs cancel out). */
interface CpuCosts {
  /** Main-thread CPU seconds per MB of corpus. */
  mainSecondsPerMb: number;
  /** Parse workers' (and V8 helpers') CPU seconds per MB. */
  workerSecondsPerMb: number;
}

/** The design point's planning time on a Plan of one memory size. */
interface Projection {
  memoryMb: number;
  /** Parse workers Plan runs with at that memory (`PLAN_PARSE_WORKERS`: one per vCPU beyond the first). */
  workers: number;
  /** vCPU-seconds per second the function gets (memory / 1,769 MB). */
  cpuShare: number;
  /** Projected minutes for the design point. */
  minutes: number;
  /** What bounds it: the main thread, the workers, or the CPU share. */
  bound: 'main thread' | 'parse workers' | 'CPU share';
  /** The largest corpus planned within one invocation (15 minutes), GB. */
  maxGbIn15Minutes: number;
}

const DESIGN_MB = DESIGN_BYTES / MB;

function cpuCosts(small: PlanChildReport & ChildReport, large: PlanChildReport & ChildReport): CpuCosts {
  if (small.mainThreadCpuSeconds === undefined || large.mainThreadCpuSeconds === undefined) {
    throw new Error('the plan benchmark needs per-thread CPU times (Linux /proc)');
  }
  const mb = (large.bytes - small.bytes) / MB;
  const mainSecondsPerMb = (large.mainThreadCpuSeconds - small.mainThreadCpuSeconds) / mb;
  const totalSecondsPerMb = (large.cpuSeconds - small.cpuSeconds) / mb;
  return { mainSecondsPerMb, workerSecondsPerMb: totalSecondsPerMb - mainSecondsPerMb };
}

/**
 * Seconds per MB on a Plan of `memoryMb`: the slowest of three bounds. The main thread runs on one vCPU; the parse
 * work spreads over the workers, each on one vCPU at most; and all threads together get the function's CPU share
 * (memory / 1,769 MB vCPU-seconds per second: 1.7 at 3,008 MB, where two threads share less than two vCPUs).
 */
function projectDesignPoint(costs: CpuCosts, memoryMb: number): Projection {
  const workers = lambdaVcpus(memoryMb) - 1;
  const cpuShare = lambdaCpuShare(memoryMb);
  const bounds: [Projection['bound'], number][] = [
    ['main thread', costs.mainSecondsPerMb],
    ['parse workers', workers > 0 ? costs.workerSecondsPerMb / workers : Infinity],
    ['CPU share', (costs.mainSecondsPerMb + costs.workerSecondsPerMb) / cpuShare],
  ];
  const [bound, secondsPerMb] = bounds.reduce((a, b) => (b[1] > a[1] ? b : a));
  return {
    memoryMb,
    workers,
    cpuShare,
    minutes: (DESIGN_MB * secondsPerMb) / 60,
    bound,
    maxGbIn15Minutes: ((LAMBDA_LIMIT_MINUTES * 60) / secondsPerMb) * (MB / 1e9),
  };
}

function describeProjection(p: Projection, costs: CpuCosts, which: string): string {
  return (
    `20 GB (10M records) on a Plan of ${p.memoryMb} MB (${which}: ${p.cpuShare.toFixed(2)} vCPUs of CPU time, the ` +
    `main thread and ${p.workers} parse worker${p.workers === 1 ? '' : 's'}) at the CPU costs measured here, vs one ` +
    `invocation's 15 minutes; bound by the ${p.bound}. Main thread (reading, cutting blocks, duplicates, ledger ` +
    `lookups, writing items, the second pass): ${(1 / costs.mainSecondsPerMb).toFixed(1)} MB per CPU second; ` +
    `parse workers: ${(1 / costs.workerSecondsPerMb).toFixed(1)} MB per CPU second (slopes between the two runs). ` +
    `Assumes S3 and DynamoDB keep pace (20 GB read and written twice: ~${((4 * DESIGN_MB) / (p.minutes * 60)).toFixed(0)} MB/s in all).`
  );
}
