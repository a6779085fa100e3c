import {
  assertBatchQuotas,
  DEFAULT_BATCH_QUOTAS,
  InvalidBatchQuotasError,
  type BatchQuotas,
} from '../../../../lambda/batch/quotas';
import {
  autoMode,
  CLIENT_REQUEST_TOKEN_PATTERN,
  clientRequestToken,
  JOB_NAME_PATTERN,
  jobName,
  planShards,
  RecordNotShardableError,
  recordBatchProblem,
  ShardAssigner,
  type ShardAssignment,
  shardFileKey,
  ShardingInputError,
  shardInputPrefix,
  shardOutputPrefix,
  type ShardingSummary,
} from '../../../../lambda/batch/sharding';
import { mulberry32 } from '@corpus-pipeline/local-aws/bedrock-simulator/engine';

const Q = DEFAULT_BATCH_QUOTAS;
/** Small limits so byte and file limits can be exercised with a few records. */
const SMALL: BatchQuotas = {
  minRecordsPerJob: 10,
  maxRecordsPerJob: 100,
  maxRecordsPerFile: 30,
  maxBytesPerFile: 3_000,
  maxBytesPerJob: 10_000,
  maxConcurrentJobs: 2,
};
const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/** Streams sizes through an assigner; rejected records are collected rather than thrown. */
function run(
  quotas: BatchQuotas,
  sizes: readonly number[],
): { out: (ShardAssignment | 'rejected')[]; summary: ShardingSummary; assigner: ShardAssigner } {
  const assigner = new ShardAssigner({ quotas, totalRecords: sizes.length, totalBytes: sum(sizes) });
  const out = sizes.map((size) => {
    try {
      return assigner.assign(size);
    } catch (err) {
      if (err instanceof RecordNotShardableError) return 'rejected' as const;
      throw err;
    }
  });
  return { out, summary: assigner.finish(), assigner };
}

/** Every limit holds for what was written. */
function expectWithinLimits(summary: ShardingSummary, quotas: BatchQuotas): void {
  for (const shard of summary.shards) {
    expect(shard.records).toBeLessThanOrEqual(quotas.maxRecordsPerJob);
    expect(shard.bytes).toBeLessThanOrEqual(quotas.maxBytesPerJob);
    expect(sum(shard.files.map((f) => f.records))).toBe(shard.records);
    expect(sum(shard.files.map((f) => f.bytes))).toBe(shard.bytes);
    for (const file of shard.files) {
      expect(file.records).toBeGreaterThan(0);
      expect(file.records).toBeLessThanOrEqual(quotas.maxRecordsPerFile);
      expect(file.bytes).toBeLessThanOrEqual(quotas.maxBytesPerFile);
    }
  }
}

describe('planShards', () => {
  it('spreads 100,050 records over three even shards, not 50,000 + 50,000 + 50', () => {
    expect(planShards(100_050, 100_050 * 500, Q)).toEqual({
      shards: 3,
      recordsPerShard: [33_350, 33_350, 33_350],
      viaConverse: 0,
    });
  });

  it('uses one shard at exactly the minimum and none one below it', () => {
    expect(planShards(100, 100 * 700, Q)).toEqual({ shards: 1, recordsPerShard: [100], viaConverse: 0 });
    expect(planShards(99, 99 * 700, Q)).toEqual({ shards: 0, recordsPerShard: [], viaConverse: 99 });
    expect(planShards(0, 0, Q)).toEqual({ shards: 0, recordsPerShard: [], viaConverse: 0 });
  });

  it('fills exact multiples of the record cap, and adds a shard one record past them', () => {
    expect(planShards(50_000, 50_000 * 100, Q).recordsPerShard).toEqual([50_000]);
    expect(planShards(100_000, 100_000 * 100, Q).recordsPerShard).toEqual([50_000, 50_000]);
    expect(planShards(150_000, 150_000 * 100, Q).recordsPerShard).toEqual([50_000, 50_000, 50_000]);
    expect(planShards(100_001, 100_001 * 100, Q).recordsPerShard).toEqual([33_334, 33_334, 33_333]);
  });

  it('spreads remainders so shards differ by at most one record', () => {
    const plan = planShards(1_234_567, 1_234_567 * 300, Q);
    expect(plan.shards).toBe(Math.ceil(1_234_567 / 50_000));
    expect(sum(plan.recordsPerShard)).toBe(1_234_567);
    expect(Math.max(...plan.recordsPerShard) - Math.min(...plan.recordsPerShard)).toBeLessThanOrEqual(1);
  });

  it('lets the job byte limit bind before the record limit (few large records)', () => {
    // 1,000 records of 150 kB = 150 MB against a 50 MB job limit: four shards, although 1,000 < 50,000.
    const quotas = { ...Q, maxBytesPerJob: 50_000_000 };
    const plan = planShards(1_000, 1_000 * 150_000, quotas);
    expect(plan).toEqual({ shards: 4, recordsPerShard: [250, 250, 250, 250], viaConverse: 0 });
    // Whole records: 10 records of 1,000 bytes against 3,500 bytes per job need 4 shards, not ceil(10,000/3,500) = 3.
    expect(
      planShards(10, 10_000, { ...SMALL, minRecordsPerJob: 1, maxBytesPerJob: 3_500 }).recordsPerShard,
    ).toEqual([3, 3, 2, 2]);
    // Exact multiple of the byte limit.
    expect(planShards(50, 50_000, SMALL).recordsPerShard).toEqual([10, 10, 10, 10, 10]);
  });

  it('uses fewer, full shards and sends the rest through Converse when limits and minimum conflict', () => {
    // min 1,000, max 1,500: 1,501 records cannot make two valid jobs.
    const quotas = { ...Q, minRecordsPerJob: 1_000, maxRecordsPerJob: 1_500 };
    expect(planShards(1_501, 1_501 * 10, quotas)).toEqual({
      shards: 1,
      recordsPerShard: [1_500],
      viaConverse: 1,
    });
    expect(planShards(2_000, 2_000 * 10, quotas)).toEqual({
      shards: 2,
      recordsPerShard: [1_000, 1_000],
      viaConverse: 0,
    });
    // Byte-bound: 10 records fit a job by bytes, so 15 records are one job of 10 and 5 via Converse.
    expect(planShards(15, 15_000, SMALL)).toEqual({ shards: 1, recordsPerShard: [10], viaConverse: 5 });
  });

  it('plans no shard when even a minimum-size job would pass the byte limit', () => {
    expect(planShards(200, 200 * 2_000, SMALL)).toEqual({ shards: 0, recordsPerShard: [], viaConverse: 200 });
  });

  it('never plans a shard outside [min, max] (sweep)', () => {
    const quotas = { ...Q, minRecordsPerJob: 1_000, maxRecordsPerJob: 2_500 };
    for (let records = 0; records <= 20_000; records += 91) {
      const plan = planShards(records, records * 50, quotas);
      expect(plan.shards).toBe(plan.recordsPerShard.length);
      expect(sum(plan.recordsPerShard) + plan.viaConverse).toBe(records);
      for (const n of plan.recordsPerShard) {
        expect(n).toBeGreaterThanOrEqual(1_000);
        expect(n).toBeLessThanOrEqual(2_500);
      }
      if (records >= 2_000) expect(plan.viaConverse).toBe(0);
    }
  });

  it('rejects bad input and bad quotas with typed errors', () => {
    expect(() => planShards(-1, 0, Q)).toThrow(ShardingInputError);
    expect(() => planShards(1.5, 10, Q)).toThrow(ShardingInputError);
    expect(() => planShards(10, 5, Q)).toThrow(/every record takes at least one byte/);
    expect(() => planShards(10, 10, { ...Q, maxRecordsPerJob: 0 })).toThrow(InvalidBatchQuotasError);
    expect(() => assertBatchQuotas({ ...Q, minRecordsPerJob: 60_000 })).toThrow(
      /larger than maxRecordsPerJob/,
    );
    expect(() => assertBatchQuotas({ ...Q, maxBytesPerFile: Number.NaN })).toThrow(/maxBytesPerFile/);
  });
});

describe('autoMode', () => {
  it('chooses batch from the job minimum on, or from a higher threshold', () => {
    expect(autoMode(99, Q)).toBe('converse');
    expect(autoMode(100, Q)).toBe('batch');
    expect(autoMode(999, Q, 1_000)).toBe('converse');
    expect(autoMode(1_000, Q, 1_000)).toBe('batch');
  });

  it('never chooses batch below the job minimum, whatever the threshold', () => {
    expect(autoMode(50, Q, 10)).toBe('converse');
    expect(() => autoMode(50, Q, 0)).toThrow(ShardingInputError);
  });
});

describe('ShardAssigner', () => {
  it('fills shards in order up to their targets', () => {
    const { out, summary } = run({ ...Q, minRecordsPerJob: 2 }, [10, 10, 10, 10, 10]);
    // 5 records, min 2, cap 50,000: one shard of five.
    expect(out.every((o) => o !== 'rejected' && o.mode === 'batch' && o.shard === 0)).toBe(true);
    expect(summary.shards.map((s) => s.records)).toEqual([5]);
    expect(out[0]).toEqual({ mode: 'batch', shard: 0, file: 0, newShard: true, newFile: true });
    expect(out[1]).toEqual({ mode: 'batch', shard: 0, file: 0, newShard: false, newFile: false });
  });

  it('follows the even plan: 100,050 records make three shards of 33,350, each one file', () => {
    const quotas = Q;
    const assigner = new ShardAssigner({ quotas, totalRecords: 100_050, totalBytes: 100_050 * 20 });
    const counts = new Map<number, number>();
    for (let i = 0; i < 100_050; i++) {
      const a = assigner.assign(20);
      if (a.mode !== 'batch') throw new Error('unexpected converse');
      counts.set(a.shard, (counts.get(a.shard) ?? 0) + 1);
    }
    expect([...counts.values()]).toEqual([33_350, 33_350, 33_350]);
    const summary = assigner.finish();
    expect(summary.shards.map((s) => s.files.length)).toEqual([1, 1, 1]);
  });

  it('rolls to a new file inside a shard on the per-file record limit', () => {
    const quotas = { ...SMALL, maxBytesPerFile: 1_000_000, maxBytesPerJob: 1_000_000 };
    const { out, summary } = run(
      quotas,
      Array.from({ length: 100 }, () => 10),
    );
    expect(summary.shards).toHaveLength(1);
    expect(summary.shards[0]?.files.map((f) => f.records)).toEqual([30, 30, 30, 10]);
    const firstOfFiles = out.filter((o) => o !== 'rejected' && o.mode === 'batch' && o.newFile);
    expect(firstOfFiles).toHaveLength(4);
    expectWithinLimits(summary, quotas);
  });

  it('rolls to a new file inside a shard on the per-file byte limit', () => {
    // 3,000 bytes per file: records of 1,000 bytes, three per file exactly; one of 1,001 bytes starts a new file.
    const quotas = { ...SMALL, minRecordsPerJob: 1, maxBytesPerJob: 100_000 };
    const { summary } = run(quotas, [1_000, 1_000, 1_000, 1_000, 1_000, 1_001, 1_000]);
    expect(summary.shards[0]?.files.map((f) => f.records)).toEqual([3, 2, 2]);
    expect(summary.shards[0]?.files.map((f) => f.bytes)).toEqual([3_000, 2_000, 2_001]);
    expectWithinLimits(summary, quotas);
  });

  it('closes a shard early at the job byte limit and rebalances the rest', () => {
    // 50 records averaging 1,000 bytes, planned as 5 x 10; the first shard's records are larger.
    const quotas = { ...SMALL, minRecordsPerJob: 5 };
    const sizes = [...Array.from({ length: 10 }, () => 1_200), ...Array.from({ length: 40 }, () => 950)];
    const { out, summary, assigner } = run(quotas, sizes);
    expect(assigner.plan.recordsPerShard).toEqual([10, 10, 10, 10, 10]);
    // 8 x 1,200 = 9,600; a ninth would pass 10,000: the ninth record opens shard 1.
    expect(summary.shards[0]?.records).toBe(8);
    expect(out[8]).toEqual({ mode: 'batch', shard: 1, file: 0, newShard: true, newFile: true });
    // The 42 records left are spread over five shards again, not 10 + 10 + 10 + 10 + 2.
    expect(summary.shards.map((s) => s.records)).toEqual([8, 9, 9, 8, 8, 8]);
    expect(summary.viaConverse).toBe(0);
    expect(summary.underMinimum).toEqual([]);
    expectWithinLimits(summary, quotas);
  });

  it('sends the planned remainder through Converse after the last shard', () => {
    const quotas = { ...Q, minRecordsPerJob: 1_000, maxRecordsPerJob: 1_500 };
    const { out, summary } = run(
      quotas,
      Array.from({ length: 1_501 }, () => 10),
    );
    expect(out.at(-1)).toEqual({ mode: 'converse' });
    expect(out.filter((o) => o !== 'rejected' && o.mode === 'converse')).toHaveLength(1);
    expect(summary.shards.map((s) => s.records)).toEqual([1_500]);
    expect(summary.viaConverse).toBe(1);
  });

  it('sends everything through Converse when the plan has no shard', () => {
    const { out, summary } = run(
      Q,
      Array.from({ length: 99 }, () => 10),
    );
    expect(out.every((o) => o !== 'rejected' && o.mode === 'converse')).toBe(true);
    expect(summary).toEqual({ shards: [], viaConverse: 99, rejected: 0, underMinimum: [] });
  });

  it('reports a record larger than a file as not shardable, and carries on', () => {
    const quotas = { ...SMALL, minRecordsPerJob: 2 };
    const sizes = [500, 500, 3_001, 500, 500];
    const assigner = new ShardAssigner({ quotas, totalRecords: 5, totalBytes: sum(sizes) });
    assigner.assign(500);
    assigner.assign(500);
    let caught: unknown;
    try {
      assigner.assign(3_001);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(RecordNotShardableError);
    const error = caught as RecordNotShardableError;
    expect(error.name).toBe('RecordNotShardableError');
    expect(error.code).toBe('RecordTooLargeForBatch');
    expect(error.message).toMatch(/3001 bytes.*input file size limit of 3000 bytes/);
    expect(error.recordBytes).toBe(3_001);
    expect(error.limitBytes).toBe(3_000);
    expect(assigner.assign(500)).toMatchObject({ mode: 'batch', shard: 0 });
    expect(assigner.assign(500)).toMatchObject({ mode: 'batch', shard: 0 });
    const summary = assigner.finish();
    expect(summary.rejected).toBe(1);
    expect(summary.shards.map((s) => s.records)).toEqual([4]);
  });

  it('recordBatchProblem names the binding limit, and passes records that fit', () => {
    expect(recordBatchProblem(3_000, SMALL)).toBeUndefined();
    expect(recordBatchProblem(3_001, SMALL)?.limitBytes).toBe(3_000);
    const jobBound = { ...SMALL, maxBytesPerFile: 20_000 };
    expect(recordBatchProblem(10_001, jobBound)?.message).toMatch(/job size limit of 10000 bytes/);
  });

  it('flags a shard the byte limit closes under the minimum (records too large for a minimum-size job)', () => {
    // min 10 records, 10,000 bytes per job: ten records of 1,200 bytes cannot make one valid job.
    const sizes = [...Array.from({ length: 10 }, () => 1_200), ...Array.from({ length: 40 }, () => 950)];
    const { summary } = run(SMALL, sizes);
    expect(summary.shards[0]?.records).toBe(8);
    expect(summary.underMinimum).toEqual([0]);
    expect(summary.shards.slice(1).every((s) => s.records >= SMALL.minRecordsPerJob)).toBe(true);
    expect(sum(summary.shards.map((s) => s.records)) + summary.viaConverse).toBe(50);
    expectWithinLimits(summary, SMALL);
  });

  /** Random record sizes (seeded), sometimes with a run of near-largest records to force early closes. */
  function randomSizes(seed: number, maxCount: number, largest: number): number[] {
    const random = mulberry32(seed);
    const count = 1 + Math.floor(random() * maxCount);
    const skew = random() < 0.5;
    return Array.from({ length: count }, (_, i) =>
      skew && i < count / 3
        ? largest - Math.floor(random() * (largest / 10))
        : 1 + Math.floor(random() * largest),
    );
  }

  /** Once a record goes to Converse, every later one does too. */
  function expectConverseTail(out: readonly (ShardAssignment | 'rejected')[]): void {
    const first = out.findIndex((o) => o !== 'rejected' && o.mode === 'converse');
    if (first >= 0)
      expect(out.slice(first).every((o) => o !== 'rejected' && o.mode === 'converse')).toBe(true);
  }

  it('keeps every limit on random streams, with no shard under the minimum when min x largest <= job bytes', () => {
    // Tight limits (a job holds 2 to 3 minimum-size jobs' worth of records) to force early closes and re-plans.
    const quotas: BatchQuotas = {
      minRecordsPerJob: 20,
      maxRecordsPerJob: 200,
      maxRecordsPerFile: 70,
      maxBytesPerFile: 20_000,
      maxBytesPerJob: 50_000,
      maxConcurrentJobs: 3,
    };
    for (let seed = 1; seed <= 30; seed++) {
      const sizes = randomSizes(seed, 1_500, 2_500); // 20 x 2,500 = 50,000: a minimum-size job always fits
      const { out, summary } = run(quotas, sizes);
      expectWithinLimits(summary, quotas);
      expect(summary.underMinimum).toEqual([]);
      expect(summary.shards.every((s) => s.records >= quotas.minRecordsPerJob)).toBe(true);
      expect(summary.rejected).toBe(0);
      expect(sum(summary.shards.map((s) => s.records)) + summary.viaConverse).toBe(sizes.length);
      expect(summary.shards.map((s) => s.shard)).toEqual(summary.shards.map((_, i) => i));
      expectConverseTail(out);
    }
  });

  it('batches nearly everything on random streams when a job holds many minimum-size jobs (real proportions)', () => {
    const quotas: BatchQuotas = {
      minRecordsPerJob: 10,
      maxRecordsPerJob: 1_000,
      maxRecordsPerFile: 300,
      maxBytesPerFile: 100_000,
      maxBytesPerJob: 400_000,
      maxConcurrentJobs: 3,
    };
    let early = 0;
    for (let seed = 100; seed < 120; seed++) {
      const sizes = randomSizes(seed, 4_000, 2_000);
      const { out, summary, assigner } = run(quotas, sizes);
      expectWithinLimits(summary, quotas);
      expect(summary.underMinimum).toEqual([]);
      expectConverseTail(out);
      // Only a tail too small for another job can be left over after early closes.
      expect(summary.viaConverse).toBeLessThan(quotas.minRecordsPerJob);
      if (summary.shards.length !== assigner.plan.shards) early++;
    }
    expect(early).toBeGreaterThan(0); // the streams did exercise early closes
  });

  it('refuses a stream that does not match the declared totals', () => {
    const over = new ShardAssigner({ quotas: Q, totalRecords: 1, totalBytes: 10 });
    over.assign(10);
    expect(() => over.assign(10)).toThrow(ShardingInputError);
    const bytes = new ShardAssigner({ quotas: Q, totalRecords: 2, totalBytes: 10 });
    expect(() => bytes.assign(11)).toThrow(/More records or bytes than declared/);
    const under = new ShardAssigner({ quotas: Q, totalRecords: 2, totalBytes: 20 });
    under.assign(10);
    expect(() => under.finish()).toThrow(/stream ended after 1 records/);
    expect(() => under.assign(0)).toThrow(ShardingInputError);
  });

  it('refuses a plan that does not fit the totals or the limits', () => {
    expect(
      () =>
        new ShardAssigner({
          quotas: Q,
          totalRecords: 200,
          totalBytes: 2_000,
          plan: { shards: 1, recordsPerShard: [150], viaConverse: 0 },
        }),
    ).toThrow(ShardingInputError);
    expect(
      () =>
        new ShardAssigner({
          quotas: Q,
          totalRecords: 150,
          totalBytes: 1_500,
          plan: { shards: 2, recordsPerShard: [75, 75], viaConverse: 0 },
        }),
    ).toThrow(/does not fit/);
  });
});

describe('shard keys, tokens and job names', () => {
  const uuid = '2f1c7a4e-5b7d-4f4e-9b1a-0c3d2e1f0a9b';
  const odd = [
    uuid,
    'run_2024.06.01',
    'a',
    '___',
    'ünïcødé run/with spaces',
    'x'.repeat(80),
    '-leading-and-trailing-',
    'a.b',
    'a_b',
  ];

  it('lays shard files and outputs out under runs/<runId>/shards/', () => {
    expect(shardFileKey(uuid, 0, 0)).toBe(`runs/${uuid}/shards/00000/input/part-00000.jsonl`);
    expect(shardFileKey(uuid, 12, 3)).toBe(`runs/${uuid}/shards/00012/input/part-00003.jsonl`);
    expect(shardInputPrefix(uuid, 12)).toBe(`runs/${uuid}/shards/00012/input/`);
    expect(shardOutputPrefix(uuid, 12)).toBe(`runs/${uuid}/shards/00012/output/`);
    expect(shardFileKey(uuid, 1, 0).startsWith(shardOutputPrefix(uuid, 1))).toBe(false);
    expect(() => shardFileKey(uuid, -1, 0)).toThrow(ShardingInputError);
    expect(() => shardFileKey(uuid, 0, 1.5)).toThrow(ShardingInputError);
    expect(() => shardOutputPrefix('', 0)).toThrow(ShardingInputError);
  });

  it('builds clientRequestTokens that match the API pattern and length', () => {
    for (const runId of odd) {
      for (const shard of [0, 1, 99, 12_345]) {
        const token = clientRequestToken(runId, shard);
        expect(token).toMatch(CLIENT_REQUEST_TOKEN_PATTERN);
        expect(token).toMatch(/^[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}$/);
        expect(token).not.toMatch(/[_.]/);
        expect(token.length).toBeLessThanOrEqual(256);
      }
    }
  });

  it('builds jobNames that match the API pattern and stay within 63 characters', () => {
    for (const runId of odd) {
      for (const shard of [0, 7, 99_999, 1_234_567]) {
        for (const attempt of [0, 3]) {
          const name = jobName(runId, shard, attempt);
          expect(name).toMatch(JOB_NAME_PATTERN);
          expect(name).toMatch(/^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9+\-.]){0,63}$/);
          expect(name.length).toBeLessThanOrEqual(63);
        }
      }
    }
    expect(jobName(uuid, 3)).toMatch(new RegExp(`^corpus-${uuid}-s3-[0-9a-f]{12}$`));
    expect(jobName(uuid, 3, 0, 'prod-pipeline')).toMatch(/^prod-pipeline-/);
    expect(() => jobName(uuid, 3, 0, 'bad_prefix')).toThrow(ShardingInputError);
  });

  it('is deterministic and unique across shards, attempts and runs (also runs that slug alike)', () => {
    expect(clientRequestToken(uuid, 4)).toBe(clientRequestToken(uuid, 4));
    expect(jobName(uuid, 4)).toBe(jobName(uuid, 4));
    const tokens = new Set<string>();
    const names = new Set<string>();
    let made = 0;
    for (const runId of odd) {
      for (let shard = 0; shard < 50; shard++) {
        for (const attempt of [0, 1]) {
          tokens.add(clientRequestToken(runId, shard, attempt));
          names.add(jobName(runId, shard, attempt));
          made++;
        }
      }
    }
    expect(tokens.size).toBe(made);
    expect(names.size).toBe(made);
    // 'a.b' and 'a_b' slug to the same text; the hash keeps them apart.
    expect(clientRequestToken('a.b', 0)).not.toBe(clientRequestToken('a_b', 0));
    expect(jobName('a.b', 0)).not.toBe(jobName('a_b', 0));
    // Long runIds that differ only past the truncation point stay distinct.
    expect(jobName(`${'x'.repeat(80)}1`, 0)).not.toBe(jobName(`${'x'.repeat(80)}2`, 0));
  });
});
