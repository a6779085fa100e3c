import { isMainThread } from 'node:worker_threads';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { bundleEntry } from './bundle';

/** The old-generation limit V8 picks in a 1024 MB Lambda function (a quarter of its memory). */
export const HEAP_LIMIT_MB = 256;

/** Marks the line of a child's stdout that carries its JSON report. */
const REPORT_PREFIX = 'BENCH-REPORT ';

/** What every child reports besides its own figures: its peak resident memory. */
export interface ChildReport {
  /** Peak resident set size of the child process, in MB (process.resourceUsage().maxRSS). */
  maxRssMb: number;
  /** CPU time of the child, in seconds (user + system), all its threads. */
  cpuSeconds: number;
  /** CPU time of its main thread alone, where the platform tells (Linux). */
  mainThreadCpuSeconds?: number;
}

/** A child process exited badly or without a report. */
export class BenchChildError extends Error {
  override readonly name = 'BenchChildError';
}

const bundles = new Map<string, Promise<string>>();
let bundleDir: string | undefined;

/** Bundles a child script once per run, as the Lambda code is bundled (esbuild, minified, everything inside). */
function bundled(script: string): Promise<string> {
  let file = bundles.get(script);
  if (!file) {
    if (!bundleDir) {
      const dir = mkdtempSync(
        path.join(process.env.BENCH_PROFILE_DIR ?? os.tmpdir(), 'corpus-bench-bundles-'),
      );
      bundleDir = dir;
      // Kept beside the profiles when profiling: their line numbers point into the bundles.
      if (!process.env.BENCH_PROFILE_DIR)
        process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    }
    // node20: the bundle runs on this machine's Node (the deployed one targets node22; the code is the same).
    const minify = !process.env.BENCH_PROFILE_DIR;
    file = bundleEntry(path.join('bench', script), bundleDir, 'node20', minify).then((b) => b.file);
    bundles.set(script, file);
  }
  return file;
}

/**
 * The V8 heap flags the Lambda Node.js runtime starts a function's process with, for its memory size: its bootstrap
 * (`/var/runtime/bootstrap`, seen in the nodejs18.x image) gives the new space a tenth of the memory, each
 * semi-space half of that, and the old space the rest, on the command line, where they win over NODE_OPTIONS.
 * At 3,008 MB: `--max-semi-space-size=150 --max-old-space-size=2708`.
 */
export function lambdaHeapFlags(memoryMb: number): string[] {
  const newSpace = Math.floor(memoryMb / 10);
  return [`--max-semi-space-size=${Math.floor(newSpace / 2)}`, `--max-old-space-size=${memoryMb - newSpace}`];
}

/**
 * The heap a child gets unless told otherwise: its old generation held to {@link HEAP_LIMIT_MB}. V8 would size it to
 * a quarter of this machine's memory, several GB, where a lazier GC makes peak memory say little about the working
 * set; a tight limit shows the working set stays bounded (a step that needed more would fail).
 */
export const CAPPED_HEAP_FLAGS: readonly string[] = [`--max-old-space-size=${HEAP_LIMIT_MB}`];

/** How {@link runChild} starts the child. */
export interface ChildOptions {
  /** V8 heap flags on the child's command line. @default CAPPED_HEAP_FLAGS */
  heapFlags?: readonly string[];
}

/**
 * Runs `bench/<script>` in its own Node process, from an esbuild bundle like the deployed Lambda code (not through
 * tsx, whose loader would add its own memory), so its peak memory is its own and not the emulators', and returns
 * the JSON it reported with {@link report}.
 * @param script file name under bench/
 * @param args its arguments
 * @param env added to this process's environment
 */
export async function runChild<T>(
  script: string,
  args: string[],
  env: Record<string, string>,
  options: ChildOptions = {},
): Promise<T & ChildReport> {
  const file = await bundled(script);
  // BENCH_PROFILE_DIR=<dir> writes a V8 CPU profile of every child there (for finding where the time goes).
  const profile = process.env.BENCH_PROFILE_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`]
    : [];
  const heap = options.heapFlags ?? CAPPED_HEAP_FLAGS;
  const child = spawn(process.execPath, [...profile, ...heap, '--enable-source-maps', file, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  const line = stdout.split('\n').find((l) => l.startsWith(REPORT_PREFIX));
  if (code !== 0 || !line) {
    throw new BenchChildError(
      `bench child ${script} ${args.join(' ')} exited with ${String(code)}:\n${stderr.slice(-4000)}\n${stdout.slice(-2000)}`,
    );
  }
  return JSON.parse(line.slice(REPORT_PREFIX.length)) as T & ChildReport;
}

/**
 * CPU seconds of this process's main thread alone (Linux /proc; Node 20 has no per-thread counter), or undefined where
 * /proc is not there. With worker threads, the process total minus this is what the workers (and V8's helpers) used.
 */
export function mainThreadCpuSeconds(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    // Fields after the command name: utime and stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** Child side: prints the report (with this process's peak memory and CPU time) for {@link runChild}. */
export function report(values: object): void {
  const usage = process.resourceUsage();
  const main = mainThreadCpuSeconds();
  const full = {
    ...values,
    // maxRSS is in kilobytes on Linux.
    maxRssMb: usage.maxRSS / 1024,
    cpuSeconds: (usage.userCPUTime + usage.systemCPUTime) / 1e6,
    ...(main !== undefined ? { mainThreadCpuSeconds: main } : {}),
  };
  process.stdout.write(`${REPORT_PREFIX}${JSON.stringify(full)}\n`);
}

/** Child side: runs `main`, reporting a failure on stderr with a non-zero exit code. */
export function childMain(main: () => Promise<void>): void {
  // The bundle is also the script of Plan's parse workers (lambda/plan/parse-pool.ts): only the main thread runs.
  if (!isMainThread) return;
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
