/**
 * Child process of the collect benchmark. `collect <json>` runs collectShard over a generated shard (json: bucket,
 * ledgerTable, runId, inputKey, outputPrefix, jobArn) through a ledger that counts its calls in flight; `bare <bucket>
 * <key>` runs the reference loop over the `.jsonl.out`; `ledger <json>` makes the ledger calls Collect makes for the
 * same number of records (a claim and a publish each), at the same concurrency, and nothing else.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { collectShard } from '../lambda/batch/collect/collect-shard';
import { FailureLaneSender } from '../lambda/shared/failure-lane';
import { Ledger } from '../lambda/shared/ledger';
import { InFlightLimiter } from '../lambda/shared/pool';
import { bareLoop } from './lib/bare-loop';
import { childMain, report } from './lib/child';
import { noopSqs } from './lib/noop-sqs';

/** What the parent passes to `collect` and `ledger`. */
export interface CollectChildArgs {
  bucket: string;
  ledgerTable: string;
  runId: string;
  inputKey: string;
  outputPrefix: string;
  jobArn: string;
  records: number;
  /** Ledger calls in flight for the ledger-only loop (Collect runs with its own default). */
  concurrency: number;
}

childMain(async () => {
  const [mode, first, second] = process.argv.slice(2);
  const s3 = new S3Client({ forcePathStyle: true });
  if (mode === 'bare') {
    if (!first || !second) throw new Error('usage: collect-child bare <bucket> <key>');
    report(await bareLoop(s3, first, second));
    return;
  }
  const args = JSON.parse(first ?? '{}') as CollectChildArgs;
  const ledger = new Ledger({
    client: DynamoDBDocumentClient.from(new DynamoDBClient({})),
    tableName: args.ledgerTable,
    ttlDays: 1,
  });
  // Counts the ledger calls in flight, to show they are pipelined.
  let inFlight = 0;
  let maxInFlight = 0;
  const counted = <T>(call: Promise<T>): Promise<T> => {
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    return call.finally(() => inFlight--);
  };
  const countingLedger: Pick<Ledger, 'claim' | 'commit' | 'fail' | 'markDelivered'> = {
    claim: (...a: Parameters<Ledger['claim']>) => counted(ledger.claim(...a)),
    commit: (...a: Parameters<Ledger['commit']>) => counted(ledger.commit(...a)),
    fail: (...a: Parameters<Ledger['fail']>) => counted(ledger.fail(...a)),
    markDelivered: (...a: Parameters<Ledger['markDelivered']>) => counted(ledger.markDelivered(...a)),
  };
  // The floor: the ledger writes Collect makes per record (a claim and a commit), and nothing else.
  const who = { runId: args.runId, owner: `${args.runId}/shard/bench`, attempt: 'bench' };
  const started = performance.now();
  if (mode === 'ledger') {
    const limiter = new InFlightLimiter(args.concurrency);
    for (let i = 0; i < args.records; i++) {
      const id = `ledger-only-${i}`;
      await limiter.add(async () => {
        await countingLedger.claim('bench-ledger-only', id, who, { leaseMs: 600_000 });
      });
    }
    await limiter.drain();
    for (let i = 0; i < args.records; i++) {
      const id = `ledger-only-${i}`;
      await limiter.add(async () => {
        await countingLedger.commit('bench-ledger-only', id, who, 'bench');
      });
    }
    await limiter.drain();
    report({ seconds: (performance.now() - started) / 1000, records: args.records, maxInFlight });
    return;
  }
  if (mode !== 'collect') throw new Error(`unknown mode ${String(mode)}`);
  const summary = await collectShard(
    {
      runId: args.runId,
      ledgerScope: 'bench-collect',
      shard: 0,
      jobArn: args.jobArn,
      jobStatus: 'Completed',
      inputKeys: [args.inputKey],
      outputPrefix: args.outputPrefix,
    },
    {
      s3,
      ledger: countingLedger,
      failureLane: new FailureLaneSender(noopSqs(), 'failures', 'failures-dlq'),
      outputBucket: args.bucket,
      leaseMs: 600_000,
    },
  );
  report({
    seconds: (performance.now() - started) / 1000,
    records: summary.records,
    succeeded: summary.succeeded,
    failed: summary.failed,
    missing: summary.missing,
    manifestOk: summary.manifestCheck.ok,
    maxInFlight,
  });
});
