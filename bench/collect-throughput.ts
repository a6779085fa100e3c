import { runChild, type ChildReport } from './lib/child';
import { writeBatchShard } from './lib/batch-output';
import type { BareLoopResult } from './lib/bare-loop';
import { figure, type Benchmark, type BenchResults } from './lib/results';
import { HANDLER_ENV, startBenchServices } from './lib/services';
import type { CollectChildArgs } from './collect-child';

const MB = 1024 * 1024;
const BUCKET = 'bench-output';
const LEDGER_TABLE = 'bench-ledger';
/** collect.ts's default ledger concurrency, which the Collect handler runs with. */
const COLLECT_CONCURRENCY = 32;

interface CollectReport {
  seconds: number;
  records: number;
  succeeded: number;
  failed: number;
  missing: number;
  manifestOk: boolean;
  maxInFlight: number;
}

/**
 * Collect throughput: collectShard over one shard's `.jsonl.out` (50,000 lines, >= 100 MB, 2% error lines, in the
 * simulator's output format) against s3rver and an empty dynalite ledger, as records/s against the bare loop over
 * the same file; the same ledger calls alone as the second reference (Collect's floor: a claim and a publish per
 * record); peak memory against a shard a tenth the size.
 */
export const collectBenchmark: Benchmark = {
  name: 'collect',
  title: 'Collect throughput, memory and ledger pipelining',
  async run({ quick, log }): Promise<BenchResults> {
    const records = quick ? 500 : 50_000;
    const services = await startBenchServices();
    try {
      await services.createBucket(BUCKET);
      await services.createLedgerTable(LEDGER_TABLE);
      log(`generating a shard of ${records} records and its job output`);
      const large = await writeBatchShard(services.s3, BUCKET, 'bench-collect-large', records, 0.02, 1700);
      const small = await writeBatchShard(
        services.s3,
        BUCKET,
        'bench-collect-small',
        records / 10,
        0.02,
        1700,
      );
      const env = { ...HANDLER_ENV, ...services.env };
      const args = (shard: typeof large): string =>
        JSON.stringify({
          bucket: BUCKET,
          ledgerTable: LEDGER_TABLE,
          runId: shard.runId,
          inputKey: shard.inputKey,
          outputPrefix: shard.outputPrefix,
          jobArn: shard.jobArn,
          records: shard.records,
          concurrency: COLLECT_CONCURRENCY,
        } satisfies CollectChildArgs);

      log(`bare loop over the ${Math.round(large.outputBytes / MB)} MB .jsonl.out`);
      const bare = await runChild<BareLoopResult>('collect-child.ts', ['bare', BUCKET, large.outputKey], env);
      log('collectShard over the large shard');
      const collect = await runChild<CollectReport>('collect-child.ts', ['collect', args(large)], env);
      log('collectShard over the small shard');
      const collectSmall = await runChild<CollectReport & ChildReport>(
        'collect-child.ts',
        ['collect', args(small)],
        env,
      );
      log('the same ledger calls alone');
      const ledgerOnly = await runChild<{ seconds: number; records: number }>(
        'collect-child.ts',
        ['ledger', args(large)],
        env,
      );
      const bareRate = bare.lines / bare.seconds;
      const collectRate = collect.records / collect.seconds;
      const ledgerRate = ledgerOnly.records / ledgerOnly.seconds;
      const outcome = `${collect.succeeded} succeeded, ${collect.failed} error lines, ${collect.missing} missing, manifest ${collect.manifestOk ? 'matches' : 'MISMATCH'}`;
      return {
        'collect.throughput': figure(
          collectRate,
          'records/s',
          bareRate,
          'report (no target)',
          () => true,
          `collectShard over ${large.records} lines, ${Math.round(large.outputBytes / MB)} MB, ${large.errors} error lines ` +
            `(${outcome}) vs the bare GET+split+JSON.parse loop over the same .jsonl.out; Collect makes two ledger ` +
            `writes per record, which bound it (next figure)`,
        ),
        'collect.vs-ledger-floor': figure(
          collectRate,
          'records/s',
          ledgerRate,
          'report (no target)',
          () => true,
          `collectShard vs the same ledger calls alone (a claim and a publish per record, ${COLLECT_CONCURRENCY} in ` +
            `flight, same dynalite): how much Collect adds to its unavoidable ledger work`,
        ),
        'collect.ledger-concurrency': figure(
          collect.maxInFlight,
          'calls',
          COLLECT_CONCURRENCY,
          'value > 1 (pipelined)',
          (_r, v) => v > 1,
          `most ledger calls in flight at once during collectShard, against collect.ts's default concurrency`,
        ),
        'collect.memory': figure(
          collect.maxRssMb,
          'MB',
          collectSmall.maxRssMb,
          'ratio <= 1.2 and value < 256',
          (r, v) => r <= 1.2 && v < 256,
          `peak RSS of collectShard, ${large.records} vs ${small.records} records (reference: the smaller shard)`,
        ),
      };
    } finally {
      await services.stop();
    }
  },
};
