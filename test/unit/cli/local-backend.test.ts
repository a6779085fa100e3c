// The CLI with --local against a state directory left by a local run: the real emulators (S3, DynamoDB, SQS with
// its message move tasks) and the template in cdk.out. fauxqs is ESM-only and cannot load inside jest, so the
// scenario runs in a child process (fixtures/local-scenario.ts) and reports each command's outcome as JSON.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

jest.setTimeout(90_000);

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

const repoRoot = path.resolve(__dirname, '../../..');

describe('corpus --local', () => {
  let stateDir: string;
  let r: Record<string, Outcome>;
  const json = (name: string): Record<string, unknown> =>
    JSON.parse(r[name]!.stdout) as Record<string, unknown>;

  beforeAll(async () => {
    stateDir = mkdtempSync(path.join(tmpdir(), 'corpus-cli-local-'));
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join(__dirname, 'fixtures', 'local-scenario.ts'), stateDir],
      { cwd: repoRoot, timeout: 80_000 },
    );
    r = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, Outcome>;
  });

  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

  it('lists the runs in the output bucket, newest first', () => {
    expect(r.runs!.code).toBe(0);
    const runs = json('runs').runs as Record<string, unknown>[];
    expect(runs.map((run) => [run.runId, run.status, run.mode, run.records])).toEqual([
      ['run-new', 'SUCCEEDED', 'batch', 200],
      ['run-old', 'SUCCEEDED', 'converse', 10],
    ]);
  });

  it('shows a finished run with its jobs from the manifest, and exit 1 for an unknown run', () => {
    expect(r.status!.code).toBe(0);
    expect(json('status')).toMatchObject({
      runId: 'run-new',
      finished: true,
      total: 200,
      done: 200,
      failed: 2,
    });
    expect((json('status').jobs as unknown[]).length).toBe(2);
    expect(r.missing!.code).toBe(1);
    expect(r.missing!.stderr).toMatch(/no run run-none in local state/);
  });

  it('filters the failures and reports tokens and cost', () => {
    expect(json('failures')).toMatchObject({ total: 3, matched: 2, byCode: { ValidationException: 2 } });
    expect(r.report!.code).toBe(0);
    expect(json('report')).toMatchObject({
      tokens: { batch: { input: 2_000_000, output: 1_000_000 }, onDemand: { input: 0, output: 0 } },
      cost: { priced: true, total: 0.18, allOnDemand: 0.36, saving: 0.18, savingPercent: 50 },
    });
  });

  it('lists the job waits still open instead of reconciling offline', () => {
    expect(r.reconcile!.code).toBe(0);
    expect(json('reconcile')).toMatchObject({ via: 'local', inFlight: [{ shard: 1, status: 'Submitted' }] });
  });

  it('redrives the DLQ with a message move task, then finds it empty', () => {
    expect(r.redrive!.code).toBe(0);
    expect(json('redrive')).toMatchObject({ status: 'COMPLETED', waiting: 3, moved: 3, stillRunning: false });
    expect(json('redriveAgain')).toMatchObject({ status: 'NOTHING_TO_MOVE', moved: 0 });
  });

  it('refuses while a local run holds the state directory (exit 3)', () => {
    expect(r.locked!.code).toBe(3);
    expect(r.locked!.stderr).toMatch(/is already in use by this process.*corpus local run/);
  });
});
