import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BAD_CORPUS, readJsonl, runLocal } from './cli';
import { deriveRecordId } from '../../lambda/shared/records';
import type { FaultReport } from '../../local/fault-report';

/**
 * The fault suite: the real CLI on the local runtime, one fresh state directory per scenario, each fault alone and
 * a few together, in both modes. For every run: every valid record ends exactly once (in the results, or else in
 * the failures), nothing is lost, and each success reaches the results queue (the published side) exactly once,
 * counted by recordId on what the queue delivered, not taken from the manifest.
 */
/** Records of the bad-input fixture the model API rejects (they fail in every mode, with their reason). */
const REJECTED = ['rejected-assistant-first', 'rejected-empty', 'rejected-maxtokens'];
/** Records per mode: batch needs more than one job's 1,000 (local quota) to run two shards at once. */
const BULK = { batch: 1100, converse: 300 } as const;

interface Scenario {
  mode: 'batch' | 'converse';
  faults: string;
  /** The run is expected to fail (the shard tolerance trips), still losing nothing. */
  runFails?: boolean;
}

const SCENARIOS: Scenario[] = [
  { mode: 'batch', faults: 'drop-job-events,duplicate-job-events' },
  { mode: 'batch', faults: 'crash=collect:1,partial-job' },
  { mode: 'batch', faults: 'throttle=0.3,partial-job=0.1,redeliver,crash=submit-job:1' },
  { mode: 'batch', faults: 'fail-job=1', runFails: true },
  { mode: 'converse', faults: 'throttle=0.3' },
  { mode: 'converse', faults: 'crash=converse-batch:2,redeliver,slow-model=5,drop-job-events' },
];

interface Row {
  fault: string;
  mode: string;
  records: number;
  succeeded: number;
  failed: number;
  lost: number;
  publishedTwice: number;
}

function countBy(ids: unknown[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(String(id), (counts.get(String(id)) ?? 0) + 1);
  return counts;
}

jest.setTimeout(900_000);

describe('fault suite: zero lost, zero published twice', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-faults-'));
  const rows: Row[] = [];
  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
    const header = ['fault', 'mode', 'records', 'succeeded', 'failed', 'lost', 'published twice'];
    const table = [
      header,
      ...rows.map((r) =>
        [r.fault, r.mode, r.records, r.succeeded, r.failed, r.lost, r.publishedTwice].map(String),
      ),
    ];
    const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]?.length ?? 0)));
    const lines = table.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  '));
    process.stdout.write(`\n${lines.join('\n')}\n`);
  });

  const bad = readFileSync(BAD_CORPUS, 'utf8').trimEnd();
  const corpora = { batch: join(work, 'batch.jsonl'), converse: join(work, 'converse.jsonl') };
  const ids = (mode: Scenario['mode']): string[] => Array.from({ length: BULK[mode] }, (_, i) => `f-${i}`);
  for (const mode of ['batch', 'converse'] as const) {
    const bulk = ids(mode).map((id, i) =>
      i % 3 === 0
        ? JSON.stringify({ id, text: `Summarise note ${i}` })
        : JSON.stringify({
            recordId: id,
            modelInput: { messages: [{ role: 'user', content: [{ text: `Classify ticket ${i}` }] }] },
          }),
    );
    writeFileSync(corpora[mode], `${bad}\n${bulk.join('\n')}\n`);
  }
  const fixtureIds = [
    'ok-1',
    'ok-2',
    ...REJECTED,
    'plain-1',
    deriveRecordId({ messages: [{ role: 'user', content: [{ text: 'No id here' }] }] }),
    ...Array.from({ length: 10 }, (_, i) => `ok-${i + 3}`),
  ];

  it.each(SCENARIOS)('$mode with --faults $faults', ({ mode, faults, runFails }) => {
    const tag = `${mode}-${faults.replace(/[^a-z0-9]+/gi, '-')}`;
    const out = join(work, tag);
    const validIds = [...fixtureIds, ...ids(mode)];
    const manifest = runLocal(
      [
        '--corpus',
        corpora[mode],
        '--mode',
        mode,
        '--faults',
        faults,
        '--out',
        out,
        '--state-dir',
        join(work, `state-${tag}`),
      ],
      runFails ? 1 : 0,
      300_000,
    );
    // First, the faults the run can count happened: every crash fired as often as asked, throttling was injected.
    const report = JSON.parse(readFileSync(join(out, 'faults.json'), 'utf8')) as FaultReport;
    for (const crash of report.crashes) expect(crash).toMatchObject({ fired: crash.times });
    expect(report.crashes).toHaveLength((faults.match(/crash=/g) ?? []).length);
    if (faults.includes('throttle=')) expect(report.bedrock.throttled.injected).toBeGreaterThan(0);

    expect(manifest.status).toBe(runFails ? 'FAILED' : 'SUCCEEDED');
    expect(manifest.mode).toBe(mode);
    const c = manifest.counts;
    expect(c.lines).toBe((c.records ?? 0) + (c.invalid ?? 0) + (c.duplicates ?? 0));
    expect(c.records).toBe((c.succeeded ?? 0) + (c.failed ?? 0) + (c.skipped ?? 0));

    const results = readJsonl(join(out, 'results.jsonl'));
    const failures = readJsonl(join(out, 'failures.jsonl')).filter((f) => f.stage !== 'plan');
    const published = readJsonl(join(out, 'published.jsonl'));
    const resultCounts = countBy(results.map((r) => r.recordId));
    const failedIds = new Set(failures.map((f) => String(f.recordId)));
    const publishedCounts = countBy(published.map((p) => p.recordId));

    // A record the failure lane retried after the run is in the failures (as the run saw it) and in the results
    // (where it ended): where it ended is what counts.
    const succeeded = validIds.filter((id) => resultCounts.has(id));
    const failed = validIds.filter((id) => !resultCounts.has(id) && failedIds.has(id));
    const lost = validIds.filter((id) => !resultCounts.has(id) && !failedIds.has(id));
    const resultTwice = [...resultCounts.values()].filter((n) => n > 1).length;
    const publishedTwice = [...publishedCounts.values()].filter((n) => n > 1).length;
    rows.push({
      fault: faults,
      mode,
      records: validIds.length,
      succeeded: succeeded.length,
      failed: failed.length,
      lost: lost.length,
      publishedTwice,
    });

    expect(lost).toEqual([]);
    expect(resultTwice).toBe(0);
    expect(publishedTwice).toBe(0);
    // The published side holds exactly the successes.
    expect([...publishedCounts.keys()].sort()).toEqual([...succeeded].sort());
    expect([...resultCounts.keys()].every((id) => validIds.includes(id))).toBe(true);
    // In the end only the records the model rejects fail: throttling, crashes and lost events cost nothing, and the
    // records of a job that failed as a whole are retried by the failure lane after the run.
    if (runFails) expect(c.failed).toBeGreaterThan(REJECTED.length);
    expect(failed.sort()).toEqual([...REJECTED].sort());
  });
});
