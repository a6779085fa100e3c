import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunManifest } from '../../lambda/shared/contracts';
import { BAD_CORPUS, readJsonl, runLocal } from './cli';

/**
 * End to end, offline: the real CLI, the real definition and handlers, S3/DynamoDB/SQS emulators, the Bedrock
 * simulator. The corpus has every kind of bad input; the checks are the CLI contract and its invariants.
 */

jest.setTimeout(300_000);

describe('corpus local run (mode converse)', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-e2e-'));
  const stateDir = join(work, 'state');
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  let first: RunManifest;

  /** `corpus local run` over the bad-input corpus in converse mode, asserting it exits 0. */
  const runBadCorpus = (outDir: string): RunManifest =>
    runLocal(['--corpus', BAD_CORPUS, '--mode', 'converse', '--out', outDir, '--state-dir', stateDir]);

  it('runs a corpus full of bad input to completion and meets the contract', () => {
    const outDir = join(work, 'out1');
    first = runBadCorpus(outDir);
    const onDisk = JSON.parse(readFileSync(join(outDir, 'manifest.json'), 'utf8')) as RunManifest;
    expect(onDisk).toEqual(first);

    expect(first.status).toBe('SUCCEEDED');
    expect(first.mode).toBe('converse');
    expect(Number.isNaN(Date.parse(first.startedAt))).toBe(false);
    expect(Date.parse(first.finishedAt)).toBeGreaterThanOrEqual(Date.parse(first.startedAt));
    const c = first.counts;
    // 26 physical lines, 2 blank; 6 bad lines; 1 identical duplicate; 3 records the model API rejects.
    expect(c).toEqual({
      lines: 24,
      records: 17,
      succeeded: 14,
      failed: 3,
      invalid: 6,
      duplicates: 1,
      skipped: 0,
      pending: 0,
      recovered: 0,
    });
    expect(c.lines).toBe(c.records + c.invalid + c.duplicates);
    expect(c.records).toBe(c.succeeded + c.failed + c.skipped + c.pending);

    const results = readJsonl(join(outDir, 'results.jsonl'));
    const failures = readJsonl(join(outDir, 'failures.jsonl'));
    expect(results).toHaveLength(c.succeeded);
    for (const r of results) {
      expect(Object.keys(r).sort()).toEqual(['modelOutput', 'recordId', 'usage']);
    }
    expect(first.tokens.input).toBe(
      results.reduce((n, r) => n + (r.usage as { inputTokens: number }).inputTokens, 0),
    );
    expect(first.tokens.output).toBeGreaterThan(0);

    // Every valid record ends exactly once in results or failures.
    const recordFailures = failures.filter((f) => f.stage !== 'plan');
    const ids = [...results.map((r) => r.recordId), ...recordFailures.map((f) => f.recordId)];
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(c.records);
    expect(ids).toEqual(expect.arrayContaining(['ok-1', 'ok-2', 'plain-1', 'ok-12']));

    // Each bad line and each rejected record has a reason a person can act on.
    const badLines = failures.filter((f) => f.stage === 'plan');
    expect(badLines).toHaveLength(c.invalid);
    expect(badLines.map((f) => f.line)).toEqual([4, 5, 6, 7, 8, 10]);
    for (const f of failures) {
      const error = f.error as { code: string; message: string };
      expect(error.code).toMatch(/^[A-Za-z.]+$/);
      expect(error.message.length).toBeGreaterThan(15);
    }
    const byCode = Object.fromEntries(badLines.map((f) => [(f.error as { code: string }).code, f]));
    expect(Object.keys(byCode).sort()).toEqual(
      ['ConflictingRecordId', 'InvalidJson', 'InvalidModelInput', 'MissingModelInput', 'NotAnObject'].sort(),
    );
    const rejected = recordFailures.map((f) => f.recordId).sort();
    expect(rejected).toEqual(['rejected-assistant-first', 'rejected-empty', 'rejected-maxtokens']);
    for (const f of recordFailures) expect((f.error as { code: string }).code).toBe('ValidationException');
  });

  it('skips every record the ledger holds when the same corpus runs again', () => {
    const outDir = join(work, 'out2');
    const second = runBadCorpus(outDir);
    expect(second.runId).not.toBe(first.runId);
    // Published records are skipped; records that failed are tried again (and fail again).
    expect(second.counts).toEqual({ ...first.counts, succeeded: 0, skipped: first.counts.succeeded });
    expect(readJsonl(join(outDir, 'results.jsonl'))).toHaveLength(0);
  });

  it('processes only the new records of a topped-up corpus', () => {
    const topUp = join(work, 'topped-up.jsonl');
    const fresh = Array.from({ length: 5 }, (_, i) =>
      JSON.stringify({ id: `new-${i}`, text: `New question ${i}` }),
    );
    writeFileSync(topUp, `${readFileSync(BAD_CORPUS, 'utf8').trimEnd()}\n${fresh.join('\n')}\n`);
    const outDir = join(work, 'out-topup');
    const m = runLocal(['--corpus', topUp, '--mode', 'converse', '--out', outDir, '--state-dir', stateDir]);
    expect(m.counts).toMatchObject({ records: 22, skipped: 14, succeeded: 5, failed: 3 });
    expect(
      readJsonl(join(outDir, 'results.jsonl'))
        .map((r) => r.recordId)
        .sort(),
    ).toEqual(Array.from({ length: 5 }, (_, i) => `new-${i}`));
  });
});
