/**
 * `npm run bench [-- --quick] [-- --only plan,collect]`: runs the benchmarks one after the other, prints a table and
 * writes bench/results.json (figures by name: value, unit, reference, ratio, target, pass, detail).
 */
import './lib/handler-env';
import * as path from 'node:path';
import { formatTable, writeResults, type Benchmark, type BenchResults } from './lib/results';
import { bundlesBenchmark } from './bundles';
import { collectBenchmark } from './collect-throughput';
import { converseBenchmark } from './converse-quota';
import { planBenchmark } from './plan-throughput';
import { slotsBenchmark } from './batch-slots';

const BENCHMARKS: Benchmark[] = [
  planBenchmark,
  collectBenchmark,
  converseBenchmark,
  slotsBenchmark,
  bundlesBenchmark,
];

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const onlyIndex = args.indexOf('--only');
  const only = onlyIndex >= 0 ? (args[onlyIndex + 1] ?? '').split(',').filter(Boolean) : undefined;
  const outIndex = args.indexOf('--out');
  const outFile =
    outIndex >= 0 ? path.resolve(args[outIndex + 1] ?? '') : path.join(__dirname, 'results.json');
  const selected = BENCHMARKS.filter((b) => !only || only.includes(b.name));
  if (selected.length === 0) throw new Error(`no benchmark named ${only?.join(', ')}`);

  const results: BenchResults = {};
  const started = Date.now();
  for (const bench of selected) {
    const log = (message: string): void => console.log(`[${bench.name} ${elapsed(started)}] ${message}`);
    log(`${bench.title}${quick ? ' (quick)' : ''}`);
    Object.assign(results, await bench.run({ quick, log }));
  }
  await writeResults(outFile, results);
  console.log(`\n${formatTable(results)}\n`);
  for (const [name, f] of Object.entries(results)) console.log(`${name}: ${f.detail}`);
  console.log(`\n${selected.length} benchmarks in ${elapsed(started)}; results in ${outFile}`);
}

function elapsed(since: number): string {
  return `${Math.round((Date.now() - since) / 1000)}s`;
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
