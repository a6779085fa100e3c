import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Metafile } from 'esbuild';
import { bundleEntry, PROJECT_ROOT } from './lib/bundle';
import { figure, type Benchmark, type BenchResults } from './lib/results';

/** The target: each function's bundle at most 1 MiB (code only, without its source map). */
const LIMIT_BYTES = 1024 * 1024;
const KB = 1024;

/** The package (or project directory) a bundled input file belongs to. */
function owner(input: string): string {
  const at = input.lastIndexOf('node_modules/');
  if (at === -1) return input.split('/').slice(0, 2).join('/');
  const rest = input.slice(at + 'node_modules/'.length).split('/');
  return rest[0]?.startsWith('@') ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? input);
}

/** Bytes each package contributes to one output. */
function byPackage(metafile: Metafile, output: string): [string, number][] {
  const totals = new Map<string, number>();
  for (const [input, { bytesInOutput }] of Object.entries(metafile.outputs[output]?.inputs ?? {})) {
    totals.set(owner(input), (totals.get(owner(input)) ?? 0) + bytesInOutput);
  }
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/**
 * Bundles: each lambda/*.ts entry bundled as lib/pipeline-function.ts has CDK do it (esbuild: minify, CJS, node22,
 * no external modules), its size against 1 MiB, and the packages that take the most bytes.
 */
export const bundlesBenchmark: Benchmark = {
  name: 'bundles',
  title: 'Lambda bundle sizes',
  async run({ quick, log }): Promise<BenchResults> {
    const entries = (await fs.readdir(path.join(PROJECT_ROOT, 'lambda')))
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
      // Quick: two entries, enough to see the bundling works.
      .filter((f) => !quick || f === 'plan.ts' || f === 'converse-batch.ts')
      .sort();
    const outDir = await fs.mkdtemp(path.join(os.tmpdir(), 'corpus-bench-lambda-'));
    const results: BenchResults = {};
    try {
      for (const entry of entries) {
        const bundle = await bundleEntry(path.join('lambda', entry), outDir);
        const output = path.relative(PROJECT_ROOT, bundle.file);
        const top = byPackage(bundle.metafile, output).slice(0, 5);
        const name = path.basename(entry, '.ts');
        log(`${name}: ${Math.round(bundle.bytes / KB)} KiB`);
        results[`bundle.${name}`] = figure(
          bundle.bytes / KB,
          'KiB',
          LIMIT_BYTES / KB,
          'ratio <= 1',
          (r) => r <= 1,
          `lambda/${entry} minified (node22, CJS, everything bundled); largest: ` +
            top.map(([pkg, bytes]) => `${pkg} ${Math.round(bytes / KB)} KiB`).join(', '),
        );
      }
    } finally {
      await fs.rm(outDir, { recursive: true, force: true });
    }
    return results;
  },
};
