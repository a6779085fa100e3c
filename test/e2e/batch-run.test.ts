import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ManifestJob } from '../../lambda/shared/contracts';
import { BAD_CORPUS, readJsonl, runCli, runLocal } from './cli';

/**
 * Batch mode end to end, offline: the real CLI, definition and handlers; Bedrock batch jobs on the simulator (which
 * enforces the `local` environment's quotas: 100 to 1,000 records per job, 2 jobs at once), job state-change events
 * through the local EventBridge rule, the reconciler on its schedule, Collect through the ledger.
 */
/** The local environment's batch quotas (cdk.json). */
const MAX_RECORDS_PER_JOB = 1000;
const MAX_CONCURRENT_JOBS = 2;

/** `n` valid records (Converse format, half of them plain `{id, text}` lines) with ids `<prefix>-<i>`. */
function records(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) =>
    i % 2 === 0
      ? JSON.stringify({
          recordId: `${prefix}-${i}`,
          modelInput: {
            messages: [{ role: 'user', content: [{ text: `Summarise item ${i} of ${prefix}` }] }],
          },
        })
      : JSON.stringify({ id: `${prefix}-${i}`, text: `Classify the sentiment of review ${i}` }),
  );
}

/** The most jobs in flight at one moment, from their submit and end times. */
function maxInFlight(jobs: ManifestJob[]): number {
  const edges: [number, number][] = [];
  for (const j of jobs) {
    edges.push([Date.parse(j.submittedAt ?? ''), 1], [Date.parse(j.endedAt ?? ''), -1]);
  }
  // At equal times an end comes before a start: the slot is free again.
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let max = 0;
  for (const [, delta] of edges) {
    now += delta;
    max = Math.max(max, now);
  }
  return max;
}

jest.setTimeout(300_000);

describe('corpus local run --mode batch', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-e2e-batch-'));
  const stateDir = join(work, 'state');
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  const badLines = readFileSync(BAD_CORPUS, 'utf8');
  const BULK = 2500;
  const corpusFile = join(work, 'bulk.jsonl');
  writeFileSync(corpusFile, `${badLines.trimEnd()}\n${records('bulk', BULK).join('\n')}\n`);

  it('shards within the quotas, one job per shard, and meets the contract with a PartiallyCompleted job', () => {
    const outDir = join(work, 'out-batch');
    const m = runLocal([
      '--corpus',
      corpusFile,
      '--mode',
      'batch',
      '--faults',
      'partial-job=0.02',
      '--out',
      outDir,
      '--state-dir',
      stateDir,
    ]);
    expect(m.status).toBe('SUCCEEDED');
    expect(m.mode).toBe('batch');

    // The same bad lines as the foundation corpus, plus the bulk records.
    const c = m.counts;
    expect(c).toEqual({
      lines: 24 + BULK,
      records: 17 + BULK,
      succeeded: 14 + BULK,
      failed: 3,
      invalid: 6,
      duplicates: 1,
      skipped: 0,
      pending: 0,
      recovered: 0,
    });
    expect(c.lines).toBe(c.records + c.invalid + c.duplicates);
    expect(c.records).toBe(c.succeeded + c.failed + c.skipped + c.pending);

    // Balanced shards: 2,517 records with a 1,000 cap make three jobs of ~839, never a tiny one.
    const jobs = m.jobs ?? [];
    expect(jobs.map((j) => j.shard)).toEqual([0, 1, 2]);
    expect(jobs.reduce((n, j) => n + j.records, 0)).toBe(17 + BULK);
    for (const j of jobs) {
      expect(j.records).toBeGreaterThanOrEqual(100);
      expect(j.records).toBeLessThanOrEqual(MAX_RECORDS_PER_JOB);
      expect(j.jobArn).toMatch(/^arn:aws:bedrock:us-east-1:000000000000:model-invocation-job\/[a-z0-9]+$/);
      expect(Number.isNaN(Date.parse(j.submittedAt ?? ''))).toBe(false);
      expect(Date.parse(j.endedAt ?? '')).toBeGreaterThanOrEqual(Date.parse(j.submittedAt ?? ''));
      expect(j.succeeded + j.failed + j.skipped + j.redriven).toBe(j.records);
    }
    expect(new Set(jobs.map((j) => j.jobArn)).size).toBe(3);
    // The partial-job fault left records without output: those jobs ended PartiallyCompleted, and their
    // records were re-driven through Converse in the same run.
    expect(jobs.some((j) => j.status === 'PartiallyCompleted' && j.redriven > 0)).toBe(true);
    expect(maxInFlight(jobs)).toBeLessThanOrEqual(MAX_CONCURRENT_JOBS);

    // Every valid record ends exactly once in results or failures.
    const results = readJsonl(join(outDir, 'results.jsonl'));
    const failures = readJsonl(join(outDir, 'failures.jsonl'));
    expect(results).toHaveLength(c.succeeded);
    const recordFailures = failures.filter((f) => f.stage !== 'plan');
    const ids = [...results.map((r) => r.recordId), ...recordFailures.map((f) => f.recordId)];
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(c.records);
    for (const r of results) expect(Object.keys(r).sort()).toEqual(['modelOutput', 'recordId', 'usage']);
    expect(m.tokens.input).toBe(
      results.reduce((n, r) => n + (r.usage as { inputTokens: number }).inputTokens, 0),
    );

    // Bad lines and the records the model rejects carry their reasons.
    expect(failures.filter((f) => f.stage === 'plan').map((f) => f.line)).toEqual([4, 5, 6, 7, 8, 10]);
    expect(recordFailures.map((f) => f.recordId).sort()).toEqual([
      'rejected-assistant-first',
      'rejected-empty',
      'rejected-maxtokens',
    ]);
    for (const f of recordFailures) {
      expect(f.stage).toBe('batch');
      expect((f.error as { code: string }).code).toBe('ValidationException');
      expect((f.error as { message: string }).message.length).toBeGreaterThan(15);
    }
  });

  it('auto picks batch for a corpus at the job minimum and converse below it', () => {
    const atMinimum = join(work, 'three-hundred.jsonl');
    writeFileSync(atMinimum, `${records('auto', 300).join('\n')}\n`);
    const batch = runLocal(['--corpus', atMinimum, '--state-dir', stateDir]);
    expect(batch.mode).toBe('batch');
    expect(batch.jobs).toHaveLength(1);
    expect(batch.counts).toMatchObject({ records: 300, succeeded: 300, failed: 0 });

    const converse = runLocal(['--corpus', BAD_CORPUS, '--state-dir', stateDir]);
    expect(converse.mode).toBe('converse');
    expect(converse.jobs).toBeUndefined();
  });

  it('refuses an unknown fault with the list of known ones', () => {
    const res = runCli([
      'local',
      'run',
      '--corpus',
      BAD_CORPUS,
      '--faults',
      'gremlins',
      '--state-dir',
      stateDir,
    ]);
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/unknown fault "gremlins"/);
    expect(res.stderr).toMatch(/drop-job-events/);
  });
});
