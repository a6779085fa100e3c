import * as os from 'node:os';
import {
  DEFAULT_PLAN_MEMORY_MB,
  LAMBDA_MAX_MEMORY_MB,
  lambdaCpuShare,
  lambdaVcpus,
  PLAN_RUNTIME_ENV,
} from '../lib/config';
import { DEFAULT_PLAN_MAP_CONCURRENCY, type CountPart } from '../lambda/plan/prepare';
import { DEFAULT_SEGMENT_BYTES } from '../lambda/plan/segments';
import type { PlannedSegment, SegmentSummary } from '../lambda/plan/segment-pass';
import type { PlanOutput, PlanPrepared } from '../lambda/shared/contracts';
import { getJson } from '../lambda/shared/s3-jsonl';
import { CAPPED_HEAP_FLAGS, lambdaHeapFlags, runChild, type ChildReport } from './lib/child';
import { corpusChunks, type CorpusStats } from './lib/corpus';
import { figure, type Benchmark, type BenchResults } from './lib/results';
import { HANDLER_ENV, startBenchServices, uploadChunks, type BenchServices } from './lib/services';
import type { BareLoopResult } from './lib/bare-loop';
import type { PrepareArgs, S3Traffic } from './plan-child';

const MB = 1024 * 1024;
const CORPUS_BUCKET = 'bench-corpus';
const OUTPUT_BUCKET = 'bench-output';
const LEDGER_TABLE = 'bench-ledger';
/** The design point: 10M records, 20 GB. */
const DESIGN_BYTES = 20e9;
const DESIGN_RECORDS = 10e6;
const DESIGN_MB = DESIGN_BYTES / MB;
/** One Lambda invocation's limit, and the target for the whole of Plan. */
const LAMBDA_LIMIT_MINUTES = 15;
/**
 * Assumed: what Step Functions takes to start one Map child execution and invoke Lambda in it, cold start included
 * (the children of one Map round start together, so it counts once a round). Not measurable offline.
 */
const CHILD_OVERHEAD_SECONDS = 1;
/**
 * Assumed: S3 bytes (read and written together) one Plan invocation moves a second. AWS documents no per-function
 * network bandwidth; `BENCH_PLAN_S3_MBPS` changes it.
 */
const DEFAULT_S3_MBPS = 100;
/** Server-side copies the merge's concatenation keeps in flight (lambda/shared/s3-concat.ts COPY_CONCURRENCY). */
const CONCAT_COPIES_IN_FLIGHT = 4;

/** What every step child reports. */
interface StepReport<T> extends ChildReport {
  step: string;
  seconds: number;
  traffic: S3Traffic;
  parseWorkers: number;
  output: T;
}

/** A step run as deployed (its CPU and time) and again with a capped heap (its memory figure). */
interface MeasuredStep<T> extends StepReport<T> {
  /** Peak RSS of the same step with the heap held small (MEMORY_HEAP_FLAGS). */
  cappedRssMb: number;
}

/**
 * Plan's process as Lambda starts it at its default memory: CPU and time figures come from it. With its 150 MB
 * semi-spaces and 2.7 GB old space, V8 collects far less often than with the capped heap: the segment step's CPU
 * was a third lower (bench/README.md, "Plan's heap as deployed").
 */
const DEPLOYED_HEAP_FLAGS = lambdaHeapFlags(DEFAULT_PLAN_MEMORY_MB);

/**
 * The memory figures' run: the old generation capped (CAPPED_HEAP_FLAGS) and the young generation held to 4 MiB
 * semi-spaces, so peak RSS follows the working set rather than garbage not yet collected.
 */
const MEMORY_HEAP_FLAGS = [...CAPPED_HEAP_FLAGS, '--max-semi-space-size=4'];

/** One corpus planned step by step, each step in its own process. */
interface PlanRun {
  bytes: number;
  prepare: StepReport<PlanPrepared>;
  counts: StepReport<{ lines: number }>[];
  /** With the segment each planned. */
  segments: { segment: PlannedSegment; run: MeasuredStep<SegmentSummary> }[];
  /** The merge without the shard cut (requested mode converse), then the real one (batch: assignShards). */
  mergeConverse: MeasuredStep<PlanOutput>;
  merge: MeasuredStep<PlanOutput>;
  /** Batch mode: each segment's slices of the shard files (the WriteShardSlices Map), with its items bytes. */
  slices: { itemsBytes: number; run: StepReport<{ records: number; tail: number }> }[];
  tail: StepReport<{ bytes: number }> | undefined;
}

/**
 * Plan in its scaled-out form: each step of the workflow (prepare, the line counts, the segments, the merge in batch
 * mode with its shard cut, each segment's shard slices, the tail's join) in its own process over a small corpus (one segment) and a large one (several), against
 * s3rver and an empty dynalite ledger. Figures: Plan's CPU per MB in the segment step against the bare loop's, the
 * peak memory of one segment and of the merge, and the projection of the 20 GB design point onto the fan-out.
 */
export const planBenchmark: Benchmark = {
  name: 'plan',
  title: 'Plan (scaled out) CPU, memory and the 20 GB projection',
  async run({ quick, log }): Promise<BenchResults> {
    // BENCH_PLAN_MB="<small>,<large>" overrides the corpus sizes (MB), e.g. for a run between quick and full.
    const [smallMb, largeMb] = (process.env.BENCH_PLAN_MB ?? (quick ? '2,8' : '100,1000'))
      .split(',')
      .map(Number);
    // Quick mode cuts 3 MiB segments so its large corpus still has several; full size keeps Plan's default.
    const segmentBytes = process.env.BENCH_PLAN_SEGMENT_MB
      ? Number(process.env.BENCH_PLAN_SEGMENT_MB) * MB
      : quick
        ? 3 * MB
        : DEFAULT_SEGMENT_BYTES;
    const s3Mbps = Number(process.env.BENCH_PLAN_S3_MBPS ?? DEFAULT_S3_MBPS);
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
        ['small', (smallMb ?? 100) * MB, 11],
        // 1,000 MiB: four segments of Plan's default 256 MiB (a byte over 1 GiB would make five smaller ones).
        ['large', (largeMb ?? 1000) * MB, 12],
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
        runChild<BareLoopResult>('plan-child.ts', ['bare', CORPUS_BUCKET, `${name}.jsonl`], env, {
          heapFlags: DEPLOYED_HEAP_FLAGS,
        });

      log('bare loop over the large corpus');
      const bareBefore = await bare('large');
      const parentBefore = process.cpuUsage();
      const large = await planSteps(services, env, 'large', 'bench-large', segmentBytes, log);
      const parentCpu = process.cpuUsage(parentBefore);
      const small = await planSteps(services, env, 'small', 'bench-small', segmentBytes, log);
      log('bare loop over the large corpus again');
      const bareAfter = await bare('large');
      if (small.segments.length !== 1 || large.segments.length < 2)
        log(
          `warning: ${small.segments.length} segment(s) small, ${large.segments.length} large ` +
            `(the figures expect one and several)`,
        );

      const bareMbps = (bareBefore.bytes / bareBefore.seconds + bareAfter.bytes / bareAfter.seconds) / 2 / MB;
      const bareMbPerCpu =
        (bareBefore.bytes + bareAfter.bytes) / MB / (bareBefore.cpuSeconds + bareAfter.cpuSeconds);
      const planSeconds = wallSeconds(large);
      const emulatorCpuSeconds = (parentCpu.user + parentCpu.system) / 1e6;
      const costs = segmentCosts(small, large);
      const merge = mergeCosts(small, large);
      const projection = projectFanOut(costs, merge, small, DEFAULT_PLAN_MEMORY_MB, s3Mbps, true);
      const converse = projectFanOut(costs, merge, small, DEFAULT_PLAN_MEMORY_MB, s3Mbps, false);
      const largest = projectFanOut(costs, merge, small, LAMBDA_MAX_MEMORY_MB, s3Mbps, true);
      const bigSegment = largestSegment(large);
      const smallSegment = small.segments[0]!;
      const mergeRss = (run: PlanRun, deployed = false): number =>
        deployed
          ? Math.max(run.merge.maxRssMb, run.mergeConverse.maxRssMb)
          : Math.max(run.merge.cappedRssMb, run.mergeConverse.cappedRssMb);
      const c = large.merge.output.counts;
      const boxCpu =
        (stepsCpuSeconds(large) + emulatorCpuSeconds) / (os.availableParallelism() * planSeconds);

      return {
        'plan.throughput': figure(
          large.bytes / MB / planSeconds,
          'MB/s',
          bareMbps,
          'report (no target)',
          () => true,
          `Plan's steps over ${mb(large.bytes)} MB one after the other, each in its own process (prepare, ` +
            `${large.counts.length} line counts, ${large.segments.length} segments, the merge in batch mode: ` +
            `${c.lines} lines, ${c.records} records, ${c.invalid} invalid, ${c.duplicates} duplicates; ` +
            `${large.merge.output.batch?.shards ?? 0} shards; ${large.segments[0]?.run.parseWorkers ?? '?'} parse ` +
            `workers), the sum of the steps' wall clock (${planSeconds.toFixed(1)} s) vs the bare ` +
            `GET+split+JSON.parse loop over the same object (mean of a run before and after). No target: on this ` +
            `${os.availableParallelism()}-CPU machine the emulators serve Plan's reads and writes in the parent ` +
            `process (${emulatorCpuSeconds.toFixed(1)} CPU s for the large corpus; the box was ` +
            `${Math.round(boxCpu * 100)}% busy), and the fan-out runs segments at once where this runs them in turn`,
        ),
        'plan.cpu': figure(
          1 / (costs.mainSecondsPerMb + costs.workerSecondsPerMb),
          'MB/cpu-s',
          bareMbPerCpu,
          'ratio >= 0.25',
          (r) => r >= 0.25,
          `the segment step's CPU per MB, all threads (main thread ${(1 / costs.mainSecondsPerMb).toFixed(1)} ` +
            `MB/cpu-s, parse workers ${(1 / costs.workerSecondsPerMb).toFixed(1)}), the slope between the small ` +
            `corpus's segment (${mb(smallSegment.segment.bytes)} MB) and the large one's mean segment ` +
            `(${mb(meanSegmentBytes(large))} MB) so process start-up cancels, vs the bare loop's MB per CPU second ` +
            `(whole process, over ${mb(bareBefore.bytes)} MB)`,
        ),
        'plan.memory.segment': figure(
          bigSegment.run.cappedRssMb,
          'MB',
          smallSegment.run.cappedRssMb,
          'ratio <= 1.2 and value < 256',
          (r, v) => r <= 1.2 && v < 256,
          `peak RSS of one segment invocation with the heap capped at 256 MB: the large corpus's largest segment ` +
            `(${mb(bigSegment.segment.bytes)} MB of ${mb(large.bytes)}; its ${large.segments.length} segments: ` +
            `${large.segments.map((s) => Math.round(s.run.cappedRssMb)).join(', ')} MB) vs the small corpus's one ` +
            `segment (${mb(small.bytes)} MB). As deployed (Lambda's heap flags at ${DEFAULT_PLAN_MEMORY_MB} MB, ` +
            `where V8 collects lazily) they peaked at ${Math.round(bigSegment.run.maxRssMb)} and ` +
            `${Math.round(smallSegment.run.maxRssMb)} MB`,
        ),
        'plan.memory.merge': figure(
          mergeRss(large),
          'MB',
          mergeRss(small),
          'ratio <= 1.2 and value < 256',
          (r, v) => r <= 1.2 && v < 256,
          `peak RSS of the merge invocation with the heap capped at 256 MB (the higher of the merge without and ` +
            `with the shard cut), ${mb(large.bytes)} MB corpus (${large.segments.length} segments, ${c.records} ` +
            `records) vs ${mb(small.bytes)} MB (one segment, ${small.merge.output.counts.records} records). As ` +
            `deployed: the merge ${Math.round(mergeRss(large, true))} and ${Math.round(mergeRss(small, true))} MB, ` +
            `prepare ${Math.round(large.prepare.maxRssMb)} MB, a line count ` +
            `${Math.round(large.counts[0]?.maxRssMb ?? 0)} MB`,
        ),
        'plan.projection-20gb': figure(
          projection.minutes,
          'min',
          LAMBDA_LIMIT_MINUTES,
          'ratio <= 1',
          (r) => r <= 1,
          describeProjection(projection, costs, merge, s3Mbps) +
            ` At 10,240 MB (opt-in, ${largest.workers} workers): ${largest.minutes.toFixed(1)} min.`,
        ),
        'plan.projection-20gb-converse': figure(
          converse.minutes,
          'min',
          LAMBDA_LIMIT_MINUTES,
          'ratio <= 1',
          (r) => r <= 1,
          `the same without batch mode's shard cut and slices (requested mode converse: no shard files): ` +
            `${breakdown(converse)}`,
        ),
      };
    } finally {
      await services.stop();
    }
  },
};

/** Runs Plan's steps over one corpus as the workflow does, each step in its own child process. */
async function planSteps(
  services: BenchServices,
  env: Record<string, string>,
  name: string,
  runId: string,
  segmentBytes: number,
  log: (message: string) => void,
): Promise<PlanRun> {
  const step = <T>(
    which: string,
    arg: object,
    heapFlags: readonly string[] = DEPLOYED_HEAP_FLAGS,
  ): Promise<StepReport<T>> =>
    runChild<Omit<StepReport<T>, keyof ChildReport>>(
      'plan-child.ts',
      [which, OUTPUT_BUCKET, LEDGER_TABLE, runId, JSON.stringify(arg)],
      { ...env, ...PLAN_RUNTIME_ENV },
      { heapFlags },
    );
  // Run again with the capped heap for the memory figures (a step's outputs are the same each time it runs).
  const measured = async <T>(which: string, arg: object): Promise<MeasuredStep<T>> => {
    const run = await step<T>(which, arg);
    const capped = await step<T>(which, arg, MEMORY_HEAP_FLAGS);
    return { ...run, cappedRssMb: capped.maxRssMb };
  };
  const read = async <T>(key: string): Promise<T> => {
    const value = await getJson<T>(services.s3, OUTPUT_BUCKET, key);
    if (value === undefined) throw new Error(`the plan benchmark found no s3://${OUTPUT_BUCKET}/${key}`);
    return value;
  };
  const args: PrepareArgs = { bucket: CORPUS_BUCKET, key: `${name}.jsonl`, segmentBytes };
  const prepare = await step<PlanPrepared>('prepare', args);
  const prepared = prepare.output;
  log(`${name}: prepare ${prepare.seconds.toFixed(2)} s, ${prepared.segments.count} segments`);
  const counts: StepReport<{ lines: number }>[] = [];
  for (const part of await read<CountPart[]>(prepared.counting.key)) {
    counts.push(await step('count', { runId, bucket: CORPUS_BUCKET, part }));
  }
  if (counts.length > 0)
    log(`${name}: ${counts.length} line counts, ${counts.map((r) => r.seconds.toFixed(1)).join(', ')} s`);
  const segments: PlanRun['segments'] = [];
  for (const segment of await read<PlannedSegment[]>(prepared.segments.key)) {
    const run = await measured<SegmentSummary>('segment', {
      runId,
      bucket: CORPUS_BUCKET,
      ledgerScope: prepared.ledgerScope,
      sources: prepared.corpus.sources,
      segment,
    });
    log(
      `${name}: segment ${segment.index} (${mb(segment.bytes)} MB) ${run.seconds.toFixed(1)} s, ` +
        `${run.cpuSeconds.toFixed(1)} s CPU (main ${run.mainThreadCpuSeconds?.toFixed(1) ?? '?'}), ` +
        `peak ${Math.round(run.maxRssMb)} MB (capped heap ${Math.round(run.cappedRssMb)} MB), asked for ${mb(run.traffic.read)} MB, wrote ${mb(run.traffic.written)} MB ` +
        `(items ${mb(run.output.items.bytes)} MB, index ${mb(run.output.index.bytes)} MB)`,
    );
    segments.push({ segment, run });
  }
  const mergeConverse = await measured<PlanOutput>('merge', { ...prepared, requestedMode: 'converse' });
  const merge = await measured<PlanOutput>('merge', prepared);
  for (const [which, run] of [
    ['merge (converse)', mergeConverse],
    ['merge (batch)', merge],
  ] as const)
    log(
      `${name}: ${which} ${run.seconds.toFixed(1)} s, ${run.cpuSeconds.toFixed(1)} s CPU, read ` +
        `${mb(run.traffic.read)} MB, wrote ${mb(run.traffic.written)} MB, copied ${mb(run.traffic.copied)} MB, ` +
        `peak ${Math.round(run.maxRssMb)} MB (capped heap ${Math.round(run.cappedRssMb)} MB)`,
    );
  const slices: PlanRun['slices'] = [];
  let tail: PlanRun['tail'];
  const batch = merge.output.batch;
  if (batch) {
    for (const { segment } of await read<{ segment: number }[]>(batch.slicesKey)) {
      const run = await step<{ records: number; tail: number }>('slice', { runId, segment });
      const itemsBytes = segments[segment]?.run.output.items.bytes ?? 0;
      log(
        `${name}: slices of segment ${segment} ${run.seconds.toFixed(1)} s, ${run.cpuSeconds.toFixed(1)} s CPU, ` +
          `${run.output.records} records, read ${mb(run.traffic.read)} MB, wrote ${mb(run.traffic.written)} MB, ` +
          `peak ${Math.round(run.maxRssMb)} MB`,
      );
      slices.push({ itemsBytes, run });
    }
    tail = await step<{ bytes: number }>('tail', { runId, slicesKey: batch.slicesKey });
  }
  return { bytes: prepared.corpus.size, prepare, counts, segments, mergeConverse, merge, slices, tail };
}

/** Plan's steps one after the other (the batch merge, not the converse one). */
function planStepsOf(run: PlanRun): (ChildReport & { seconds: number })[] {
  return [
    run.prepare,
    ...run.counts,
    ...run.segments.map((s) => s.run),
    run.merge,
    ...run.slices.map((s) => s.run),
    ...(run.tail ? [run.tail] : []),
  ];
}

function wallSeconds(run: PlanRun): number {
  return planStepsOf(run).reduce((n, r) => n + r.seconds, 0);
}

function stepsCpuSeconds(run: PlanRun): number {
  return planStepsOf(run).reduce((n, r) => n + r.cpuSeconds, 0);
}

function largestSegment(run: PlanRun): PlanRun['segments'][number] {
  return run.segments.reduce((a, b) => (b.segment.bytes > a.segment.bytes ? b : a));
}

function meanSegmentBytes(run: PlanRun): number {
  return run.segments.reduce((n, s) => n + s.segment.bytes, 0) / run.segments.length;
}

function mb(bytes: number): number {
  return Math.round(bytes / MB);
}

/** The segment step's cost per MB of corpus (slopes: start-up costs cancel out). */
interface SegmentCosts {
  /** Main-thread CPU seconds per MB. */
  mainSecondsPerMb: number;
  /** Parse workers' (and V8 helpers') CPU seconds per MB. */
  workerSecondsPerMb: number;
  /** S3 bytes a segment reads and writes per byte of its corpus (measured on the large corpus). */
  s3BytesPerByte: number;
  /** CPU seconds per MB of one line count (whole process, measured on the large corpus's parts). */
  countSecondsPerMb: number;
}

/**
 * The slope between the small corpus's one segment and the mean of the large corpus's segments, per thread.
 * @throws Error where the platform gives no per-thread CPU time (Linux /proc)
 */
function segmentCosts(small: PlanRun, large: PlanRun): SegmentCosts {
  const mean = (f: (r: StepReport<SegmentSummary>) => number): number =>
    large.segments.reduce((n, s) => n + f(s.run), 0) / large.segments.length;
  const main = (r: ChildReport): number => {
    if (r.mainThreadCpuSeconds === undefined)
      throw new Error('the plan benchmark needs per-thread CPU times (Linux /proc)');
    return r.mainThreadCpuSeconds;
  };
  const one = small.segments[0]!;
  const mbs = (meanSegmentBytes(large) - one.segment.bytes) / MB;
  const mainSecondsPerMb = (mean(main) - main(one.run)) / mbs;
  const totalSecondsPerMb = (mean((r) => r.cpuSeconds) - one.run.cpuSeconds) / mbs;
  // A byte-range part asks for the rest of its object (its last line may run past its end) and drops the stream
  // once past it: GetObject's ContentLength overstates what it read, the segment's own bytes do not.
  const segmentTraffic = large.segments.reduce((n, s) => n + s.segment.bytes + s.run.traffic.written, 0);
  const countBytes = large.counts.reduce((n, r) => n + r.traffic.read, 0);
  const countCpu = large.counts.reduce((n, r) => n + r.cpuSeconds, 0);
  return {
    mainSecondsPerMb,
    workerSecondsPerMb: totalSecondsPerMb - mainSecondsPerMb,
    s3BytesPerByte: segmentTraffic / large.bytes,
    // Whole-process CPU (start-up included): a line count is short, so this leans high.
    countSecondsPerMb: countBytes > 0 ? countCpu / (countBytes / MB) : 0,
  };
}

/** The merge's costs, measured by running it without (converse) and with (batch) its shard cut, and the slices'. */
interface MergeCosts {
  /** CPU seconds per record of the merge without the shard cut (index merge, concatenation, sources). */
  secondsPerRecord: number;
  /** S3 bytes the merge without the shard cut reads and writes (indexes, streamed pieces) per record. */
  s3BytesPerRecord: number;
  /** Bytes the concatenation copied inside S3 per corpus byte. */
  copiedPerByte: number;
  /** CPU seconds per record of the shard cut in the merge (assignShards over the segments' sizes). */
  assignSecondsPerRecord: number;
  /** CPU seconds per MB of items of one segment's slice invocation (start-up included: leans high). */
  sliceSecondsPerMb: number;
  /** S3 bytes one slice invocation reads and writes per items byte. */
  sliceS3PerItemsByte: number;
  /** Items file bytes per corpus byte. */
  itemsPerByte: number;
}

function sliceItems(run: PlanRun): number {
  return Math.max(
    1,
    run.slices.reduce((n, s) => n + s.itemsBytes, 0),
  );
}

function mergeCosts(small: PlanRun, large: PlanRun): MergeCosts {
  const records = (r: PlanRun): number => r.mergeConverse.output.counts.records;
  const traffic = (t: S3Traffic): number => t.read + t.written;
  const itemsBytes = large.segments.reduce((n, s) => n + s.run.output.items.bytes, 0);
  const c = large.mergeConverse;
  const b = large.merge;
  return {
    secondsPerRecord: (c.cpuSeconds - small.mergeConverse.cpuSeconds) / (records(large) - records(small)),
    s3BytesPerRecord: traffic(c.traffic) / records(large),
    copiedPerByte: c.traffic.copied / large.bytes,
    // The same process start-up on both sides: the difference is the shard cut.
    assignSecondsPerRecord: Math.max(0, b.cpuSeconds - c.cpuSeconds) / records(large),
    sliceSecondsPerMb: large.slices.reduce((n, s) => n + s.run.cpuSeconds, 0) / (sliceItems(large) / MB),
    sliceS3PerItemsByte: large.slices.reduce((n, s) => n + traffic(s.run.traffic), 0) / sliceItems(large),
    itemsPerByte: itemsBytes / large.bytes,
  };
}

/** The design point on the fan-out, step by step, in seconds. */
interface FanOutProjection {
  memoryMb: number;
  workers: number;
  cpuShare: number;
  segments: number;
  countParts: number;
  rounds: { count: number; segment: number };
  prepare: number;
  /** One line count: the larger of its CPU and its read at the S3 rate. */
  count: number;
  /** One 256 MiB segment: the slowest of its CPU bounds and its S3 traffic. */
  segment: number;
  segmentBound: string;
  overhead: number;
  /** The merge: index merge and concatenation, then the shard cut (batch only). */
  merge: { ids: number; concat: number; assign: number; total: number };
  /** Batch only: one segment's slices (the larger of CPU and S3), the rounds of the WriteShardSlices Map, the tail. */
  slices: { slice: number; bound: string; rounds: number; tail: number; total: number };
  minutes: number;
}

/**
 * The 20 GB / 10M-record design point on Plan's fan-out at `memoryMb`: prepare (as measured on the small corpus),
 * the line-count Map and the segment Map (in rounds of `plan.mapConcurrency` children, each round as long as one
 * child, plus {@link CHILD_OVERHEAD_SECONDS}), then the merge (one invocation). CPU is measured here; S3 runs at the
 * assumed `s3Mbps` per invocation, overlapping the CPU (streams and two upload parts in flight), so each step takes
 * the larger of the two.
 */
function projectFanOut(
  costs: SegmentCosts,
  merge: MergeCosts,
  small: PlanRun,
  memoryMb: number,
  s3Mbps: number,
  batch: boolean,
): FanOutProjection {
  const workers = lambdaVcpus(memoryMb) - 1;
  const cpuShare = lambdaCpuShare(memoryMb);
  const segmentMb = DEFAULT_SEGMENT_BYTES / MB;
  const segments = Math.ceil(DESIGN_BYTES / DEFAULT_SEGMENT_BYTES);
  // One object: every byte-range part but the last is counted.
  const countParts = segments - 1;
  const k = DEFAULT_PLAN_MAP_CONCURRENCY;
  const rounds = { count: Math.ceil(countParts / k), segment: Math.ceil(segments / k) };
  const count = Math.max(costs.countSecondsPerMb * segmentMb, segmentMb / s3Mbps);
  const bounds: [string, number][] = [
    ['main thread', costs.mainSecondsPerMb * segmentMb],
    ['parse workers', workers > 0 ? (costs.workerSecondsPerMb * segmentMb) / workers : Infinity],
    ['CPU share', ((costs.mainSecondsPerMb + costs.workerSecondsPerMb) * segmentMb) / cpuShare],
    ['S3', (costs.s3BytesPerByte * segmentMb) / s3Mbps],
  ];
  const [segmentBound, segment] = bounds.reduce((a, b) => (b[1] > a[1] ? b : a));
  const ids = Math.max(
    merge.secondsPerRecord * DESIGN_RECORDS,
    (merge.s3BytesPerRecord * DESIGN_RECORDS) / MB / s3Mbps,
  );
  const concat = (merge.copiedPerByte * DESIGN_MB) / (s3Mbps * CONCAT_COPIES_IN_FLIGHT);
  const assign = batch ? merge.assignSecondsPerRecord * DESIGN_RECORDS : 0;
  const mergeTotal = ids + concat + assign;
  const segmentItemsMb = merge.itemsPerByte * segmentMb;
  const sliceCpu = merge.sliceSecondsPerMb * segmentItemsMb;
  const sliceS3 = (merge.sliceS3PerItemsByte * segmentItemsMb) / s3Mbps;
  const slice = Math.max(sliceCpu, sliceS3);
  // The tail (records no job takes) is small at the design point: its join is one step.
  const slices = batch
    ? {
        slice,
        bound: sliceCpu >= sliceS3 ? 'CPU' : 'S3',
        rounds: rounds.segment,
        tail: CHILD_OVERHEAD_SECONDS,
        total: rounds.segment * (slice + CHILD_OVERHEAD_SECONDS) + CHILD_OVERHEAD_SECONDS,
      }
    : { slice: 0, bound: '-', rounds: 0, tail: 0, total: 0 };
  const overhead = (rounds.count + rounds.segment + 2) * CHILD_OVERHEAD_SECONDS;
  const seconds =
    small.prepare.seconds +
    rounds.count * count +
    rounds.segment * segment +
    overhead +
    mergeTotal +
    slices.total;
  return {
    memoryMb,
    workers,
    cpuShare,
    segments,
    countParts,
    rounds,
    prepare: small.prepare.seconds,
    count,
    segment,
    segmentBound,
    overhead,
    merge: { ids, concat, assign, total: mergeTotal },
    slices,
    minutes: seconds / 60,
  };
}

function breakdown(p: FanOutProjection): string {
  const s = (x: number): string => `${x.toFixed(0)} s`;
  return (
    `prepare ${p.prepare.toFixed(1)} s + line counts ${p.rounds.count} rounds x ${s(p.count)} + segments ` +
    `${p.rounds.segment} rounds x ${s(p.segment)} (bound: ${p.segmentBound}) + child overhead ${s(p.overhead)} + ` +
    `merge ${s(p.merge.total)} (index merge ${s(p.merge.ids)}, server-side copies ${s(p.merge.concat)}` +
    (p.merge.assign > 0 ? `, shard cut ${s(p.merge.assign)}` : '') +
    ')' +
    (p.slices.total > 0
      ? ` + shard slices ${p.slices.rounds} rounds x ${s(p.slices.slice)} (bound: ${p.slices.bound}) with their ` +
        `overhead and the tail's join = ${s(p.slices.total)}`
      : '') +
    ` = ${p.minutes.toFixed(1)} min; the merge alone is ${(p.merge.total / 60).toFixed(1)} min of its ` +
    `invocation's 15`
  );
}

function describeProjection(
  p: FanOutProjection,
  costs: SegmentCosts,
  merge: MergeCosts,
  s3Mbps: number,
): string {
  return (
    `20 GB (10M records) on Plan's fan-out at ${p.memoryMb} MB (${p.cpuShare.toFixed(2)} vCPUs, main thread and ` +
    `${p.workers} parse worker${p.workers === 1 ? '' : 's'}): ${p.segments} segments of 256 MiB and ` +
    `${p.countParts} line counts, ${DEFAULT_PLAN_MAP_CONCURRENCY} at once. ${breakdown(p)}. Measured here: ` +
    `segment main thread ${(1 / costs.mainSecondsPerMb).toFixed(1)} MB/cpu-s, workers ` +
    `${(1 / costs.workerSecondsPerMb).toFixed(1)} MB/cpu-s, ${costs.s3BytesPerByte.toFixed(2)} S3 bytes per corpus ` +
    `byte; line count ${(1 / costs.countSecondsPerMb).toFixed(0)} MB/cpu-s; merge ` +
    `${(merge.secondsPerRecord * 1e6).toFixed(1)} cpu-us per record, ${merge.s3BytesPerRecord.toFixed(0)} S3 bytes ` +
    `per record streamed, ${(merge.copiedPerByte * 100).toFixed(0)}% of the corpus copied server-side; shard cut ` +
    `${(merge.assignSecondsPerRecord * 1e6).toFixed(2)} cpu-us per record; slices ` +
    `${(1 / merge.sliceSecondsPerMb).toFixed(1)} MB/cpu-s, ${merge.sliceS3PerItemsByte.toFixed(2)} S3 bytes per ` +
    `items byte; the items file is ${merge.itemsPerByte.toFixed(2)} bytes per corpus byte. Assumed: S3 at ${s3Mbps} MB/s per invocation (read and written together, overlapping the CPU; ` +
    `server-side copies at that rate each, ${CONCAT_COPIES_IN_FLIGHT} in flight), ${CHILD_OVERHEAD_SECONDS} s per ` +
    `Map round and per single step to start a child execution and invoke Lambda, DynamoDB keeping pace.`
  );
}
