import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FailureLaneMessage, RunManifest } from '../../lambda/shared/contracts';
import { LINES, writeRealWorldCorpus } from './real-world-corpus';
import { readJsonl, ROOT, runLocal } from './cli';

/**
 * End to end, offline: a corpus of real-world text through `corpus local run` (converse mode). Every line either
 * becomes a record that succeeds or is a bad line with its own reason; the run never fails because of a line, and the
 * failure lane's DLQ (the local SQS, which accepts exactly what SQS accepts) holds every bad line.
 */

jest.setTimeout(120_000);

/** The failure DLQ's messages, from the local SQS's state file (written when the runtime stops). */
function deadLetters(stateDir: string): FailureLaneMessage[] {
  const snapshot = JSON.parse(readFileSync(join(stateDir, 'sqs.json'), 'utf8')) as {
    queues: { name: string; ready: { body: string }[]; delayed: unknown[]; inflight: unknown[] }[];
  };
  const dlq = snapshot.queues.find((q) => q.name.includes('FailureLaneDeadLetterQueue'));
  if (!dlq) throw new Error('no failure dead-letter queue in the SQS state');
  expect(dlq.delayed.length + dlq.inflight.length).toBe(0);
  return dlq.ready.map((m) => JSON.parse(m.body) as FailureLaneMessage);
}

describe('corpus local run over real-world text (mode converse)', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-e2e-text-'));
  const stateDir = join(work, 'state');
  const corpus = join(work, 'real-world-text.jsonl');
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const { recordIds, badLines } = writeRealWorldCorpus(corpus);

  let manifest: RunManifest;

  it('succeeds, accounts for every line, and gives each bad line its own reason', () => {
    const outDir = join(work, 'out');
    manifest = runLocal(['--corpus', corpus, '--mode', 'converse', '--out', outDir, '--state-dir', stateDir]);
    expect(manifest.status).toBe('SUCCEEDED');
    const c = manifest.counts;
    expect(c).toEqual({
      lines: LINES.length,
      records: recordIds.length,
      succeeded: recordIds.length,
      failed: 0,
      invalid: badLines.length,
      duplicates: 1,
      skipped: 0,
      pending: 0,
      recovered: 0,
    });
    expect(c.lines).toBe(c.records + c.invalid + c.duplicates);

    const results = readJsonl(join(outDir, 'results.jsonl'));
    expect(results.map((r) => r.recordId).sort()).toEqual([...recordIds].sort());
    const failures = readJsonl(join(outDir, 'failures.jsonl'));
    expect(failures.every((f) => f.stage === 'plan')).toBe(true);
    expect(failures.map((f) => ({ line: f.line, code: (f.error as { code: string }).code }))).toEqual(
      badLines,
    );
    for (const f of failures) {
      expect((f.error as { message: string }).message).toMatch(new RegExp(`^line ${String(f.line)}\\b`));
    }
  });

  it('dead-letters every bad line, each message as the emulator (and SQS) accepts it', () => {
    const dead = deadLetters(stateDir);
    expect(dead.map((m) => ({ line: m.line, code: m.error.code }))).toEqual(badLines);
    for (const m of dead) expect(m).toMatchObject({ runId: manifest.runId, stage: 'plan' });
    // Plan logs each message SQS refuses; there must be none.
    const logs = readdirSync(join(stateDir, 'logs'));
    const planLog = logs.find((f) => f.includes('Plan'));
    expect(planLog).toBeDefined();
    expect(readFileSync(join(stateDir, 'logs', planLog ?? ''), 'utf8')).not.toContain('failure lane refused');
  });

  it('runs the corpus again under the ledger scope of the object metadata: nothing is skipped there', () => {
    const outDir = join(work, 'out-scoped');
    const options = { corpusFile: corpus, mode: 'converse', stateDir, outDir, ledgerScope: 'tenant-e2e' };
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', join(__dirname, 'run-local-driver.ts'), JSON.stringify(options)],
      { cwd: ROOT, encoding: 'utf8', timeout: 100_000 },
    );
    if (run.status !== 0) throw new Error(`exit ${String(run.status)}\n${run.stderr}`);
    const scoped = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}') as RunManifest;
    expect(scoped.ledgerScope).toBe('tenant-e2e');
    expect(scoped.ledgerScope).not.toBe(manifest.ledgerScope);
    // A new scope has published nothing yet: every record is processed again.
    expect(scoped.counts).toEqual({ ...manifest.counts, skipped: 0 });
  });
});
