import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunManifest } from '../../lambda/shared/contracts';
import { FAULT_POINTS } from '../../lambda/shared/fault-points';
import type { FaultReport } from '../../cli/local/fault-report';
import { BAD_CORPUS, readJsonl, ROOT, runLocal } from './cli';
import { writeRealWorldCorpus } from './real-world-corpus';

/**
 * The fault suite: the real CLI on the local runtime, a fresh state directory per scenario. Every step point of
 * every publishing handler is crashed (killed there, as a timeout or an out-of-memory kill would, before anything
 * after it runs), in both modes, with throttling, redelivery, failed and partial batch jobs, overlapping runs, the
 * failure lane racing a batch's retry, and a corpus of real-world text.
 *
 * Each scenario first proves its faults happened (the run's fault report: crashes fired at each point, throttled
 * calls, SQS redeliveries; the manifest's own model-call counts and jobs), then that the settled run lost nothing and
 * published nothing twice: every valid record is in exactly one of results / failures, at most once in the results
 * and once on the results queue, the results queue holds exactly the results, and the manifest equals the files.
 */

jest.setTimeout(1_200_000);

/** Records of the bad-input fixture the model API rejects (they fail in every mode, with their reason). */
const REJECTED = ['rejected-assistant-first', 'rejected-empty', 'rejected-maxtokens'];
/** Valid records of the bad-input fixture. */
const FIXTURE_RECORDS = 17;
/** Bulk records per mode: batch needs more than one job's 1,000 (local quota) for two shards. */
const BULK = { batch: 1100, converse: 120 } as const;
/** Bulk records of the `small` corpus. */
const SMALL = 20;

type Mode = 'batch' | 'converse';

/** Crash entries for every step a handler marks (the registry is the list), each once. */
function crashesOf(handler: keyof typeof FAULT_POINTS, steps?: string[]): string {
  return (steps ?? Object.keys(FAULT_POINTS[handler])).map((s) => `crash=${handler}@${s}:1`).join(',');
}

interface Scenario {
  name: string;
  mode: Mode;
  faults: string;
  /** `small`: the bad-input fixture and the first SMALL bulk records (converse mode). @default 'bulk' */
  corpus?: 'bulk' | 'small' | 'real-world' | 'overlap';
  /** The EXPRESS children's cap, shrunk (the run goes through the test driver, as the CLI has no such option). */
  expressTimeoutMs?: number;
  /** What the run must show of its faults beyond the crash counts (throttled calls, redeliveries, jobs). */
  observe?: (o: Observed) => void;
  /** Only records the model rejects may fail (no throttling that outlasts the lane's receives). */
  onlyRejectedFail?: boolean;
}

/** What one run left: its report, manifest and files. */
interface Observed {
  report: FaultReport;
  manifest: RunManifest;
}

const SCENARIOS: Scenario[] = [
  {
    name: 'ConverseBatch killed at its first four steps',
    mode: 'converse',
    faults: crashesOf('converse-batch', ['after-claim', 'after-stage', 'after-commit', 'after-results']),
    onlyRejectedFail: true,
  },
  {
    name: 'ConverseBatch killed at its last steps, every message delivered twice',
    mode: 'converse',
    faults: `${crashesOf('converse-batch', ['after-queue-send', 'after-release', 'before-return', 'return'])},redeliver,throttle=0.5`,
    observe: ({ report }) => expect(report.sqs.redelivered).toBeGreaterThan(0),
  },
  {
    name: 'Collect killed at its first steps, jobs losing records',
    mode: 'batch',
    faults: `${crashesOf('collect', ['after-claim', 'after-commit', 'after-results', 'after-queue-send'])},partial-job=0.05`,
    observe: ({ manifest }) =>
      expect(manifest.jobs?.some((j) => j.status === 'PartiallyCompleted' && j.redriven > 0)).toBe(true),
    onlyRejectedFail: true,
  },
  {
    name: 'Collect killed at its last steps, SubmitJob killed, job events lost and repeated',
    mode: 'batch',
    faults: `${crashesOf('collect', ['after-release', 'before-marker', 'return'])},crash=submit-job@return:1,drop-job-events,duplicate-job-events`,
    onlyRejectedFail: true,
  },
  {
    name: 'a batch job Failed: its records through Converse in the same run, ConverseBatch killed meanwhile',
    mode: 'batch',
    faults: 'fail-job=1,crash=converse-batch@after-commit:1',
    observe: ({ manifest }) =>
      expect(manifest.jobs?.some((j) => j.status === 'Failed' && j.redriven === j.records)).toBe(true),
    onlyRejectedFail: true,
  },
  {
    name: 'the failure lane killed at every step while throttling fills it, messages redelivered',
    mode: 'converse',
    faults: `throttle=0.7,redeliver,${crashesOf('failure-lane-consumer', ['after-claim', 'after-commit', 'after-results', 'after-queue-send', 'before-revision'])}`,
    observe: ({ manifest }) => expect(manifest.counts.recovered).toBeGreaterThan(0),
  },
  {
    name: 'the model throttles every call: the lane gives up on each record with its reason, killed once there',
    mode: 'converse',
    faults: 'throttle=1,crash=failure-lane-consumer@after-dead-letter:1',
    observe: ({ manifest }) => {
      expect(manifest.counts.succeeded).toBe(0);
      expect(manifest.counts.failed).toBe(manifest.counts.records);
    },
  },
  {
    name: 'the lane races a batch retry: batches killed after handing records over',
    mode: 'converse',
    faults: 'throttle=0.7,crash=converse-batch@before-return:3',
    observe: ({ manifest }) => expect(manifest.counts.recovered).toBeGreaterThan(0),
  },
  {
    name: "EXPRESS children capped at 20 s with a slow model: batches stop by their child's deadline",
    mode: 'converse',
    faults: 'slow-model=8000',
    corpus: 'small',
    expressTimeoutMs: 20_000,
    observe: ({ report, manifest }) => {
      // The model was slow, no child overran its cap (none failed), and what the batches could not ask in time went
      // to the failure lane, which recovered it.
      expect(report.bedrock.requests).toBeGreaterThan(0);
      expect(manifest.batches?.failed).toBe(0);
      expect(manifest.counts.recovered).toBeGreaterThan(0);
    },
    onlyRejectedFail: true,
  },
  {
    name: 'Plan and Finalize killed (converse)',
    mode: 'converse',
    faults:
      'crash=plan@segment-before-summary:1,crash=plan@before-items:1,crash=plan@after-items:1,crash=finalize@after-manifest:1',
    onlyRejectedFail: true,
  },
  {
    name: 'Plan and Finalize killed (batch)',
    mode: 'batch',
    faults:
      'crash=plan@segment-before-summary:1,crash=plan@after-items:1,crash=finalize@after-manifest:1,crash=converse-items@return:1',
    onlyRejectedFail: true,
  },
  {
    name: 'real-world text, throttled, ConverseBatch killed after its commit',
    mode: 'converse',
    corpus: 'real-world',
    faults: 'throttle=0.3,crash=converse-batch@after-commit:1',
  },
  {
    name: 'two runs of the same corpus at once in one ledger scope, ConverseBatch killed',
    mode: 'converse',
    corpus: 'overlap',
    faults: 'crash=converse-batch@after-stage:2',
    onlyRejectedFail: true,
  },
];

interface Row {
  scenario: string;
  mode: Mode;
  observed: string;
  records: number;
  succeeded: number;
  failed: number;
  skipped: number;
  recovered: number;
  revision: string;
  lost: number;
  twice: number;
}

function countBy(ids: unknown[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(String(id), (counts.get(String(id)) ?? 0) + 1);
  return counts;
}

/** First: the faults happened, as counted by the runtime, the simulator and the manifest. */
function proveFaults(faults: string, o: Observed): string {
  const { report, manifest } = o;
  const asked = faults.match(/crash=/g)?.length ?? 0;
  expect(report.crashes).toHaveLength(asked);
  for (const crash of report.crashes)
    expect({ fault: crash.fault, fired: crash.fired }).toEqual({ fault: crash.fault, fired: crash.times });
  const parts = [
    `crashes ${report.crashes.reduce((n, c) => n + c.fired, 0)}/${report.crashes.reduce((n, c) => n + c.times, 0)}`,
  ];
  if (faults.includes('throttle=')) {
    expect(report.bedrock.throttled.injected).toBeGreaterThan(0);
    // The pipeline's own count of throttled calls, not the simulator's: the fault reached the functions.
    expect(manifest.modelCalls.throttled).toBeGreaterThan(0);
    parts.push(`throttled ${manifest.modelCalls.throttled}`);
  }
  if (faults.includes('redeliver')) parts.push(`redelivered ${report.sqs.redelivered}`);
  const jobs = manifest.jobs ?? [];
  const failedJobs = jobs.filter((j) => j.status === 'Failed').length;
  const partial = jobs.filter((j) => j.status === 'PartiallyCompleted').length;
  if (failedJobs > 0) parts.push(`jobs failed ${failedJobs}`);
  if (partial > 0) parts.push(`jobs partial ${partial}`);
  return parts.join(', ');
}

/** Then: the settled run lost nothing, published nothing twice, and its manifest equals its files. */
function proveSettled(
  out: string,
  manifest: RunManifest,
  validIds: string[],
): { lost: string[]; twice: number; results: Map<string, number> } {
  const c = manifest.counts;
  expect(c.pending).toBe(0);
  expect(c.lines).toBe(c.records + c.invalid + c.duplicates);
  expect(c.records).toBe(c.succeeded + c.failed + c.skipped + c.pending);

  const results = countBy(readJsonl(join(out, 'results.jsonl')).map((r) => r.recordId));
  const allFailures = readJsonl(join(out, 'failures.jsonl'));
  const failures = countBy(allFailures.filter((f) => f.stage !== 'plan').map((f) => f.recordId));
  const published = countBy(readJsonl(join(out, 'published.jsonl')).map((p) => p.recordId));
  const twice =
    [...results.values()].filter((n) => n > 1).length + [...published.values()].filter((n) => n > 1).length;
  expect(twice).toBe(0);
  expect([...failures.values()].every((n) => n === 1)).toBe(true);
  // One final outcome: never in both.
  expect([...results.keys()].filter((id) => failures.has(id))).toEqual([]);
  // The manifest equals the files.
  expect(results.size).toBe(c.succeeded);
  expect(failures.size).toBe(c.failed);
  expect(allFailures.filter((f) => f.stage === 'plan').length).toBe(c.invalid);
  // The published side holds exactly the results.
  expect([...published.keys()].sort()).toEqual([...results.keys()].sort());
  const lost = validIds.filter((id) => !results.has(id) && !failures.has(id));
  return { lost, twice, results };
}

describe('fault suite: every step point, zero lost, zero published twice, the manifest equals the files', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-faults-'));
  const rows: Row[] = [];
  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
    const header = [
      'scenario',
      'mode',
      'faults observed',
      'records',
      'ok',
      'failed',
      'skipped',
      'recovered',
      'rev',
      'lost',
      'twice',
    ];
    const table = [
      header,
      ...rows.map((r) =>
        [
          r.scenario,
          r.mode,
          r.observed,
          r.records,
          r.succeeded,
          r.failed,
          r.skipped,
          r.recovered,
          r.revision,
          r.lost,
          r.twice,
        ].map(String),
      ),
    ];
    const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]?.length ?? 0)));
    process.stdout.write(
      `\n${table.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ')).join('\n')}\n`,
    );
  });

  const bad = readFileSync(BAD_CORPUS, 'utf8').trimEnd();
  const bulkIds = (mode: Mode): string[] => Array.from({ length: BULK[mode] }, (_, i) => `f-${i}`);
  const corpora: Record<Mode, string> = {
    batch: join(work, 'batch.jsonl'),
    converse: join(work, 'converse.jsonl'),
  };
  for (const mode of ['batch', 'converse'] as const) {
    const bulk = bulkIds(mode).map((id, i) =>
      i % 3 === 0
        ? JSON.stringify({ id, text: `Summarise note ${i}` })
        : JSON.stringify({
            recordId: id,
            modelInput: { messages: [{ role: 'user', content: [{ text: `Classify ticket ${i}` }] }] },
          }),
    );
    writeFileSync(corpora[mode], `${bad}\n${bulk.join('\n')}\n`);
  }
  const small = join(work, 'small.jsonl');
  writeFileSync(
    small,
    readFileSync(corpora.converse, 'utf8')
      .split('\n')
      .slice(0, bad.split('\n').length + SMALL)
      .join('\n') + '\n',
  );
  const realWorld = join(work, 'real-world.jsonl');
  const realWorldIds = writeRealWorldCorpus(realWorld).recordIds;

  it.each(SCENARIOS)('$name ($mode: $faults)', (scenario) => {
    const tag = scenario.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
    const out = join(work, tag);
    const stateDir = join(work, `state-${tag}`);
    const corpusFile =
      scenario.corpus === 'real-world'
        ? realWorld
        : scenario.corpus === 'small'
          ? small
          : corpora[scenario.mode];
    const bulk =
      scenario.corpus === 'small' ? bulkIds(scenario.mode).slice(0, SMALL) : bulkIds(scenario.mode);
    const fixtureIds = (ids: string[]): string[] => (scenario.corpus === 'real-world' ? realWorldIds : ids);

    if (scenario.corpus === 'overlap') {
      // Two runs of the same corpus at once, one runtime, one ledger scope: the ledger lets each record be published
      // by one of them; the other counts it skipped.
      const runs = driver({
        corpusFiles: [corpusFile, corpusFile],
        mode: scenario.mode,
        stateDir,
        outDir: out,
        faults: scenario.faults,
      }) as { outDir: string; manifest: RunManifest }[];
      expect(runs).toHaveLength(2);
      const report = JSON.parse(
        readFileSync(join(runs[0]?.outDir ?? '', 'faults.json'), 'utf8'),
      ) as FaultReport;
      const observed = proveFaults(scenario.faults, { report, manifest: runs[0]?.manifest as RunManifest });
      const validIds = fixtureIds([...bulkIds(scenario.mode)]);
      // Each run on its own: settled, nothing twice, manifest = files.
      const settled = runs.map((r) => proveSettled(r.outDir, r.manifest, []));
      // Together: every record published exactly once across both runs, and the one that did not publish it
      // counted it skipped.
      const across = countBy(settled.flatMap((s) => [...s.results.keys()]));
      const twice = [...across.values()].filter((n) => n > 1).length;
      expect(twice).toBe(0);
      const inFailures = new Set(
        runs.flatMap((r) => readJsonl(join(r.outDir, 'failures.jsonl')).map((f) => String(f.recordId))),
      );
      const lost = validIds.filter((id) => !across.has(id) && !inFailures.has(id));
      expect(lost).toEqual([]);
      const [a, b] = runs.map((r) => r.manifest.counts);
      expect((a?.succeeded ?? 0) + (b?.succeeded ?? 0)).toBe(across.size);
      // What one run published, the other counted skipped (seen published by Plan, or held at its claim).
      // (A record the model rejects may be skipped by one run, held while the other was failing it.)
      const skipped = (a?.skipped ?? 0) + (b?.skipped ?? 0);
      expect(skipped).toBeGreaterThanOrEqual(across.size);
      expect(skipped).toBeLessThanOrEqual(across.size + REJECTED.length);
      rows.push({
        scenario: scenario.name,
        mode: scenario.mode,
        observed: `${observed}, runs 2`,
        records: a?.records ?? 0,
        succeeded: across.size,
        failed: (a?.failed ?? 0) + (b?.failed ?? 0),
        skipped: (a?.skipped ?? 0) + (b?.skipped ?? 0),
        recovered: (a?.recovered ?? 0) + (b?.recovered ?? 0),
        revision: runs.map((r) => r.manifest.revision).join('/'),
        lost: lost.length,
        twice,
      });
      return;
    }

    const manifest =
      scenario.expressTimeoutMs === undefined
        ? runLocal(
            [
              '--corpus',
              corpusFile,
              '--mode',
              scenario.mode,
              '--faults',
              scenario.faults,
              '--out',
              out,
              '--state-dir',
              stateDir,
            ],
            0,
            600_000,
          )
        : (driver({
            corpusFile,
            mode: scenario.mode,
            stateDir,
            outDir: out,
            faults: scenario.faults,
            expressTimeoutMs: scenario.expressTimeoutMs,
          }) as RunManifest);
    const report = JSON.parse(readFileSync(join(out, 'faults.json'), 'utf8')) as FaultReport;
    const observed = proveFaults(scenario.faults, { report, manifest });
    scenario.observe?.({ report, manifest });

    expect(manifest.status).toBe('SUCCEEDED');
    expect(manifest.mode).toBe(scenario.mode);
    const validIds = fixtureIds([...bulk]);
    const { lost, twice } = proveSettled(out, manifest, validIds);
    expect(lost).toEqual([]);
    const c = manifest.counts;
    if (scenario.corpus !== 'real-world') expect(c.records).toBe(FIXTURE_RECORDS + bulk.length);
    if (scenario.onlyRejectedFail) {
      const failed = readJsonl(join(out, 'failures.jsonl'))
        .filter((f) => f.stage !== 'plan')
        .map((f) => String(f.recordId));
      expect(failed.sort()).toEqual([...REJECTED].sort());
    }
    rows.push({
      scenario: scenario.name,
      mode: scenario.mode,
      observed,
      records: c.records,
      succeeded: c.succeeded,
      failed: c.failed,
      skipped: c.skipped,
      recovered: c.recovered,
      revision: String(manifest.revision),
      lost: lost.length,
      twice,
    });
  });
});

/** Runs the local runtime through the test driver (run-local-driver.ts) and returns what it printed. */
function driver(options: Record<string, unknown>): unknown {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', join(__dirname, 'run-local-driver.ts'), JSON.stringify(options)],
    { cwd: ROOT, encoding: 'utf8', timeout: 600_000 },
  );
  if (run.status !== 0) throw new Error(`exit ${String(run.status)}\n${run.stderr}`);
  return JSON.parse(run.stdout.trim().split('\n').at(-1) ?? 'null') as unknown;
}
