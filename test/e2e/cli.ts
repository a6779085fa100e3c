import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { RunManifest } from '../../lambda/shared/contracts';

/** The repository root (the CLI's working directory). */
export const ROOT = resolve(__dirname, '../..');
/** The foundation issue's corpus of every kind of bad input. */
export const BAD_CORPUS = join(ROOT, 'test/fixtures/bad-input-corpus.jsonl');
const CLI = join(ROOT, 'bin/corpus.cjs');

/** What a CLI run printed and how it exited. */
export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `corpus` CLI in a child process (the local runtime needs ESM-only packages jest cannot load). */
export function runCli(args: string[], timeoutMs = 280_000): CliResult {
  const out = spawnSync(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  return { status: out.status, stdout: out.stdout, stderr: out.stderr };
}

/** The lines of a JSONL file, parsed; none when the file does not exist. */
export function readJsonl(file: string): Record<string, unknown>[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/**
 * Runs `corpus local run <args> --json` and returns the manifest it printed.
 * @throws with the CLI's output when it exits with anything but `expectedStatus`
 */
export function runLocal(args: string[], expectedStatus = 0, timeoutMs?: number): RunManifest {
  const res = runCli(['local', 'run', ...args, '--json'], timeoutMs);
  if (res.status !== expectedStatus) throw new Error(`exit ${res.status}\n${res.stderr}\n${res.stdout}`);
  return JSON.parse(res.stdout) as RunManifest;
}
