import { promises as fs } from 'node:fs';

/**
 * One benchmark figure: a value measured against a reference measured in the same run (the machines are shared and
 * noisy, so only ratios compare across runs).
 */
export interface BenchFigure {
  /** The measured value. */
  value: number;
  /** Its unit (`MB/s`, `records/s`, `MB`, ...). */
  unit: string;
  /** The reference value, in the same unit (a bare loop, a quota, a limit). */
  reference: number;
  /** value / reference. */
  ratio: number;
  /** The target, as a person reads it (`ratio >= 0.7`). */
  target: string;
  /** Whether the target holds. */
  pass: boolean;
  /** What the reference is and anything needed to read the figure. */
  detail: string;
}

/** Figures by name (`plan.throughput`). */
export type BenchResults = Record<string, BenchFigure>;

/** What every benchmark module exports. */
export interface Benchmark {
  /** Short name (`plan`), used by `--only`. */
  name: string;
  /** One line on what it measures. */
  title: string;
  /** Runs the benchmark and returns its figures. */
  run(options: BenchOptions): Promise<BenchResults>;
}

/** Options every benchmark gets. */
export interface BenchOptions {
  /** Small sizes: a smoke test of the whole suite in under a minute. */
  quick: boolean;
  /** Progress lines for a person watching. */
  log: (message: string) => void;
}

/** Builds a figure from a value, its reference and a check of the ratio/value. */
export function figure(
  value: number,
  unit: string,
  reference: number,
  target: string,
  pass: (ratio: number, value: number) => boolean,
  detail: string,
): BenchFigure {
  const ratio = reference === 0 ? 0 : value / reference;
  return {
    value: round(value),
    unit,
    reference: round(reference),
    ratio: round(ratio, 3),
    target,
    pass: pass(ratio, value),
    detail,
  };
}

/** Rounds to a few significant digits for printing and the results file. */
export function round(value: number, digits = 2): number {
  if (!Number.isFinite(value)) return value;
  const magnitude = Math.abs(value) >= 100 ? 1 : 10 ** digits;
  return Math.round(value * magnitude) / magnitude;
}

/** The results as an aligned text table. */
export function formatTable(results: BenchResults): string {
  const header = ['figure', 'value', 'reference', 'ratio', 'target', 'ok'];
  const rows = Object.entries(results).map(([name, f]) => [
    name,
    `${f.value} ${f.unit}`,
    `${f.reference} ${f.unit}`,
    String(f.ratio),
    f.target,
    f.pass ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** Writes the results file (figures by name). */
export async function writeResults(file: string, results: BenchResults): Promise<void> {
  await fs.writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
}
