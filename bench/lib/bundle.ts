import * as path from 'node:path';
import { build, type Metafile } from 'esbuild';

/** The repository root. */
export const PROJECT_ROOT = path.resolve(__dirname, '..', '..');

/** A bundle written by {@link bundleEntry}. */
export interface BundleOutput {
  /** The bundle file. */
  file: string;
  /** Its size in bytes (the code only, without the source map). */
  bytes: number;
  /** esbuild's metafile (inputs and their bytes in the output). */
  metafile: Metafile;
}

/**
 * Bundles one entry the way lib/pipeline-function.ts has CDK's NodejsFunction do it (esbuild: bundle, platform node,
 * CJS, minify, source map without sources content, no external modules), into `outDir`.
 * @param entry path relative to the repository root
 * @param target `node22` for the Lambda runtime; `node20` to run the bundle on this machine's Node
 * @param minify false keeps names readable in CPU profiles
 */
export async function bundleEntry(
  entry: string,
  outDir: string,
  target = 'node22',
  minify = true,
): Promise<BundleOutput> {
  const file = path.join(outDir, `${path.basename(entry, '.ts')}.js`);
  const result = await build({
    entryPoints: [path.join(PROJECT_ROOT, entry)],
    outfile: file,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target,
    minify,
    sourcemap: true,
    sourcesContent: false,
    external: [],
    metafile: true,
    absWorkingDir: PROJECT_ROOT,
    logLevel: 'error',
    // As lib/pipeline-function.ts: the ES module builds first, which tree-shake.
    mainFields: ['module', 'main'],
  });
  const output = result.metafile.outputs[path.relative(PROJECT_ROOT, file)];
  const bytes = output?.bytes ?? 0;
  return { file, bytes, metafile: result.metafile };
}
