// What the CLI prints and how it exits, without AWS: the help, usage errors, `local run`'s contract with a stand-in
// runtime, the report and failures texts, the cost maths, progress computation and the live displays.
import type { Backend } from '../../../cli/backend';
import { formatFailures, queryFailures } from '../../../cli/commands/failures';
import { LocalRunDisplay, type LocalRunner } from '../../../cli/commands/local-run';
import { buildReport, formatReport } from '../../../cli/commands/report';
import { runInputOf } from '../../../cli/commands/start';
import { estimateCost, findPrice, splitTokens } from '../../../cli/cost';
import { CliUsageError } from '../../../cli/errors';
import * as fmt from '../../../cli/format';
import { runCli } from '../../../cli/program';
import { checkRunId, failureLineOf, RunStore } from '../../../cli/run-store';
import { computeProgress, runViewOf } from '../../../cli/run-view';
import { createProgressDisplay, RateTracker } from '../../../cli/watch';
import type { LocalRunOptions, LocalRunOutcome } from '../../../cli/local/run-local';
import { startBedrockSimulator } from '../local-aws/bedrock-simulator/catalog-simulator';
import { FAULT_POINTS } from '../../../lambda/shared/fault-points';
import { simulatorOptionsFor } from '../../../cli/local/runtime-settings';
import { BedrockRuntimeClient, ConverseCommand } from '@aws-sdk/client-bedrock-runtime';
import { formatMapProgress, mapItemUnit } from '../../../cli/local/progress';
import { mockClient } from 'aws-sdk-client-mock';
import { S3Client } from '@aws-sdk/client-s3';
import {
  Capture,
  jsonl,
  manifest,
  marker,
  MODEL_ID,
  OUTPUT_BUCKET,
  plan,
  serveBucket,
  shard,
  T0,
  testConfig,
} from './helpers';

const noBackend = (): Promise<Backend> => Promise.reject(new Error('no backend in this suite'));

async function cli(
  args: string[],
  localRunner?: () => Promise<LocalRunner>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(args, {
    openBackend: noBackend,
    stdout,
    stderr,
    ...(localRunner ? { localRunner } : {}),
  });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

describe('the program', () => {
  it('--help lists every command and the exit codes', async () => {
    const res = await cli(['--help']);
    expect(res.code).toBe(0);
    for (const command of [
      'local',
      'start',
      'runs',
      'status',
      'failures',
      'report',
      'redrive',
      'reconcile',
      'doctor',
    ]) {
      expect(res.stdout).toMatch(new RegExp(`^  ${command} `, 'm'));
    }
    expect(res.stdout).toMatch(
      /Exit codes: 0 ok, 1 not found, the run failed, or a doctor check failed, 2 bad\s+usage, 3/,
    );
    expect(res.stdout).toMatch(/corpus doctor --env <name>/);
    expect(res.stdout).toMatch(/only while no `corpus local run` is\s+using it/);
  });

  it('every command has help with --json and the backend options', async () => {
    for (const command of ['start', 'runs', 'status', 'failures', 'report', 'redrive', 'reconcile']) {
      const res = await cli([command, '--help']);
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(/--env <name>/);
      expect(res.stdout).toMatch(/--local/);
      expect(res.stdout).toMatch(/--json/);
    }
  });

  it('exit 2 for an unknown command, a missing argument, a bad value, and no or two backends', async () => {
    expect((await cli(['nope'])).code).toBe(2);
    expect((await cli([])).code).toBe(2);
    expect((await cli(['status', '--local'])).code).toBe(2);
    expect((await cli(['runs', '--local', '--limit', '0'])).code).toBe(2);
    const none = await cli(['runs']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/choose a backend: --env <name>/);
    expect((await cli(['runs', '--env', 'dev', '--local'])).code).toBe(2);
    expect((await cli(['status', '../etc', '--env', 'dev'])).code).toBe(2);
  });

  it('exit 3 when the backend cannot be opened', async () => {
    const res = await cli(['runs', '--env', 'dev']);
    expect(res.code).toBe(3);
    expect(res.stderr).toMatch(/corpus: Error: no backend in this suite/);
  });

  it('`start --local` says how runs start offline (exit 2)', async () => {
    const res = await cli(['start', '--local', '--corpus', 's3://corpus-ingest/c.jsonl', '--mode', 'batch']);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/corpus local run --corpus FILE --mode batch --state-dir \.corpus-local/);
  });
});

describe('corpus local run', () => {
  const outcome = (status: 'SUCCEEDED' | 'FAILED'): LocalRunOutcome =>
    ({
      runId: 'run-l',
      manifest: manifest(
        'run-l',
        'converse',
        { records: 3, succeeded: 3, failed: 0 },
        { input: 1, output: 2 },
        { status },
      ),
      execution: {} as never,
      outDir: '/tmp/out',
      files: { manifest: 'm', results: 'r', failures: 'f' },
      lane: { pending: 0, deadLettered: 0 },
    }) as unknown as LocalRunOutcome;

  it('keeps its contract: summary or manifest JSON, exit 0 finished / 1 failed, progress lines on stderr', async () => {
    let seen: Record<string, unknown> = {};
    const runner = (status: 'SUCCEEDED' | 'FAILED') => () =>
      Promise.resolve<LocalRunner>({
        runLocalCorpus: (options) => {
          seen = options as unknown as Record<string, unknown>;
          options.mapProgress?.({ state: 'FanOut', unit: 'records', done: 3, total: 3, failed: 0 });
          return Promise.resolve(outcome(status));
        },
        formatSummary: () => 'SUMMARY',
      });
    const ok = await cli(
      [
        'local',
        'run',
        '--corpus',
        'c.jsonl',
        '--mode',
        'converse',
        '--faults',
        'throttle=1,slow-model=5,crash=collect@after-results:2',
        '--ledger-scope',
        'scope-b',
      ],
      runner('SUCCEEDED'),
    );
    expect(ok).toMatchObject({
      code: 0,
      stdout: 'SUMMARY\n',
      stderr: '  FanOut: 3 of 3 records done (0 failed)\n',
    });
    const runtime = seen.runtime as LocalRunOptions['runtime'];
    expect(seen).toMatchObject({ mode: 'converse', ledgerScope: 'scope-b' });
    expect(runtime?.faults?.crashes).toEqual([
      { handler: 'collect', step: 'after-results', times: 2, fault: 'crash=collect@after-results:2' },
    ]);

    // What the Bedrock simulator receives from those options: its faults, where it reads them.
    const sim = await startBedrockSimulator(
      simulatorOptionsFor([], runtime?.bedrock, { region: 'us-east-1', accountId: '000000000000' }),
    );
    try {
      expect(sim.service.faults.current()).toEqual({ throttleFraction: 1, slowMs: 5 });
      const client = new BedrockRuntimeClient({
        endpoint: sim.runtimeEndpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'AKIDLOCAL', secretAccessKey: 'local' },
        maxAttempts: 1,
      });
      const call = client.send(
        new ConverseCommand({ modelId: MODEL_ID, messages: [{ role: 'user', content: [{ text: 'hi' }] }] }),
      );
      await expect(call).rejects.toMatchObject({ name: 'ThrottlingException' });
      expect(sim.stats().totals.throttled.injected).toBe(1);
      client.destroy();
    } finally {
      await sim.stop();
    }

    const json = await cli(['local', 'run', '--corpus', 'c.jsonl', '--json'], runner('FAILED'));
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ runId: 'run-l', status: 'FAILED' });
    expect(json.stderr).toBe('');
  });

  it('--help lists the faults and every crash point of the fault-point registry with its description', async () => {
    const res = await cli(['local', 'run', '--help']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/--ledger-scope <scope>/);
    expect(res.stdout).toMatch(/^ {2}crash=HANDLER@STEP:N +HANDLER dies at STEP/m);
    const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    let points = 0;
    for (const [handler, steps] of Object.entries(FAULT_POINTS)) {
      for (const [step, help] of Object.entries(steps as Record<string, string>)) {
        expect(res.stdout).toMatch(new RegExp(`^  ${handler}@${step} +${escape(help)}$`, 'm'));
        points += 1;
      }
    }
    expect(points).toBeGreaterThan(0);
    expect(res.stdout).toMatch(/^ {2}HANDLER@return +the handler returned/m);
  });

  it('exit 2 for an unknown fault or a missing corpus, 3 when the runtime fails', async () => {
    const fault = await cli(['local', 'run', '--corpus', 'c.jsonl', '--faults', 'gremlins']);
    expect(fault.code).toBe(2);
    expect(fault.stderr).toMatch(/unknown fault "gremlins"/);
    const point = await cli(['local', 'run', '--corpus', 'c.jsonl', '--faults', 'crash=collect@nowhere:1']);
    expect(point.code).toBe(2);
    expect(point.stderr).toMatch(/collect has no step "nowhere"/);
    const scope = await cli(['local', 'run', '--corpus', 'c.jsonl', '--ledger-scope', '']);
    expect(scope.code).toBe(2);
    const failing = (error: Error) => () =>
      Promise.resolve<LocalRunner>({ runLocalCorpus: () => Promise.reject(error), formatSummary: () => '' });
    const missing = await cli(
      ['local', 'run', '--corpus', 'c.jsonl'],
      failing(Object.assign(new Error('--corpus c.jsonl: no such file'), { name: 'UsageError' })),
    );
    expect(missing.code).toBe(2);
    const broken = await cli(['local', 'run', '--corpus', 'c.jsonl'], failing(new Error('emulators died')));
    expect(broken.code).toBe(3);
    expect(broken.stderr).toMatch(/the local run failed: Error: emulators died/);
  });

  it('draws the runtime progress events as live bars on a terminal', () => {
    const stream = new Capture({ tty: true });
    let now = T0;
    const display = new LocalRunDisplay(stream, () => now);
    display.line('starting the local runtime...');
    display.map({ state: 'FanOut', unit: 'records', done: 100, total: 400, failed: 5 });
    now += 10_000;
    display.map({ state: 'FanOut', unit: 'records', done: 300, total: 400, failed: 9 });
    display.stop();
    const text = stream.text();
    expect(text).toMatch(/starting the local runtime/);
    expect(text).toMatch(/FanOut\s+\S+ 75% 300\/400 records\s+20\.0\/s\s+ETA 5\.0s\s+errors 3\.0%/);
  });
});

describe('local progress lines', () => {
  it('names the items of both Maps of the runtime and writes their progress as lines', () => {
    expect(mapItemUnit('BatchJobs')).toBe('shards');
    expect(mapItemUnit('FanOut')).toBe('records');
    expect(mapItemUnit('PlanSegments')).toBe('segments');
    expect(mapItemUnit('CountLines')).toBe('segments');
    expect(formatMapProgress({ state: 'BatchJobs', unit: 'shards', done: 3, total: 4, failed: 1 })).toBe(
      '  BatchJobs: 3 of 4 shards (batch jobs) done (1 failed)',
    );
    expect(formatMapProgress({ state: 'FanOut', unit: 'records', done: 161, total: 161, failed: 0 })).toBe(
      '  FanOut: 161 of 161 records done (0 failed)',
    );
  });
});

describe('report', () => {
  it('prices a converse run all on demand (no saving) and says when a model has no price', () => {
    const m = manifest(
      'run-b',
      'converse',
      { records: 10, succeeded: 10, failed: 0 },
      { input: 2_000_000, output: 400_000 },
    );
    const view = runViewOf('run-b', undefined, undefined, m)!;
    const report = buildReport(view, m, [], testConfig().pricing);
    expect(report.tokens.batch).toEqual({ input: 0, output: 0 });
    // Nova Lite: 2M in x $0.06 + 0.4M out x $0.24.
    expect(report.cost).toMatchObject({
      onDemand: 0.216,
      batch: 0,
      total: 0.216,
      allOnDemand: 0.216,
      saving: 0,
      savingPercent: 0,
    });
    expect(formatReport(report)).toMatch(/no saving \(no batch tokens\)/);

    const unpriced = buildReport(
      view,
      { ...m, modelId: 'meta.llama3-70b-instruct-v1:0' },
      [],
      testConfig().pricing,
    );
    expect(unpriced.cost).toMatchObject({ priced: false, total: null, saving: null });
    expect(formatReport(unpriced)).toMatch(/cost\s+unknown: no price for meta\.llama3-70b-instruct-v1:0/);
  });

  it("finds the price of the model, an ARN of it, and a model the table lacks in the catalog's", () => {
    const pricing = testConfig().pricing;
    expect(findPrice(pricing, MODEL_ID)?.key).toBe(MODEL_ID);
    expect(findPrice(pricing, `arn:aws:bedrock:us-east-1:1:inference-profile/${MODEL_ID}`)?.key).toBe(
      MODEL_ID,
    );
    // Another geography, and an earlier model of the environment: the catalog's list prices.
    expect(findPrice(pricing, 'eu.amazon.nova-lite-v1:0')).toMatchObject({
      key: 'amazon.nova-lite-v1:0',
      price: { inputPerMillion: 0.06 },
    });
    expect(findPrice(pricing, 'amazon.nova-pro-v1:0')).toMatchObject({
      key: 'amazon.nova-pro-v1:0',
      price: { inputPerMillion: 0.8, batchInputPerMillion: 0.4 },
    });
    expect(findPrice(pricing, 'cohere.command-r-v1:0')).toBeUndefined();
  });

  it('never counts more batch tokens than the manifest has', () => {
    const tokens = splitTokens({ input: 10, output: 10 }, { input: 12, output: 4 });
    expect(tokens.batch).toEqual({ input: 10, output: 4 });
    expect(tokens.onDemand).toEqual({ input: 0, output: 6 });
    const price = { inputPerMillion: 3, outputPerMillion: 15, batchDiscount: 0.5 };
    const cost = estimateCost(splitTokens({ input: 1e6, output: 1e6 }, { input: 1e6, output: 1e6 }), 'm', {
      m: price,
    });
    expect(cost).toMatchObject({
      onDemand: 0,
      batch: 9,
      total: 9,
      allOnDemand: 18,
      saving: 9,
      savingPercent: 50,
    });
  });

  it('formats counts, tokens and cost of a batch mode run', () => {
    const m = manifest(
      'run-a',
      'batch',
      { records: 1000, succeeded: 990, failed: 10, invalid: 2, lines: 1002 },
      { input: 3_000_000, output: 1_000_000 },
    );
    const view = runViewOf('run-a', undefined, undefined, m)!;
    const text = formatReport(
      buildReport(
        view,
        m,
        [marker(0, { records: 1000, succeeded: 990, failed: 10 }, { input: 2e6, output: 8e5 })],
        testConfig().pricing,
      ),
    );
    expect(text).toContain('lines     1,002 = 1,000 records + 2 bad + 0 duplicates');
    expect(text).toContain('records   1,000 = 990 succeeded + 10 failed + 0 skipped');
    expect(text).toContain(
      'tokens    3,000,000 in, 1,000,000 out (batch 2,000,000 in / 800,000 out; on demand 1,000,000 in / 200,000 out)',
    );
    expect(text).toContain('10m 00s');
  });
});

describe('failures', () => {
  const s3Mock = mockClient(S3Client);
  afterAll(() => s3Mock.restore());

  it('lists failures with the record or line, stage, code, retry and reason, and the counts', async () => {
    const files = new Map<string, string>([
      [
        'runs/r/failures/plan.jsonl',
        jsonl([
          {
            line: 4,
            stage: 'plan',
            error: { code: 'InvalidJson', message: 'line 4 is not valid JSON', retryable: false },
          },
        ]),
      ],
      [
        'runs/r/failures/shard-0.jsonl',
        `${JSON.stringify({ recordId: 'r9', stage: 'batch', error: { code: 'ValidationException', message: 'x'.repeat(300) } })}\nnot json\n`,
      ],
    ]);
    serveBucket(s3Mock, files, 1);
    const result = await queryFailures(
      new RunStore(new S3Client({ region: 'us-east-1' }), OUTPUT_BUCKET),
      'r',
      { limit: 10 },
    );
    expect(result.total).toBe(3);
    const text = formatFailures(result);
    expect(text).toMatch(/^Run r: 3 failures/);
    expect(text).toMatch(/line 4\s+plan\s+InvalidJson\s+no\s+line 4 is not valid JSON/);
    expect(text).toMatch(/r9\s+batch\s+ValidationException\s+-\s+x{99}…/);
    // A line that is not a failure line is shown as such, never dropped.
    expect(text).toMatch(/MalformedFailureLine\s+-\s+not a failure line: not json/);
    expect(formatFailures({ ...result, total: 0, matched: 0, failures: [] })).toBe('Run r has no failures.');
    expect(formatFailures({ ...result, matched: 0, failures: [] }, 'code Nope')).toBe(
      'Run r: 3 failures, 0 with code Nope.',
    );
  });

  it('keeps a well-formed failure line as written', () => {
    expect(
      failureLineOf(
        '{"recordId":"a","stage":"converse","error":{"code":"C","message":"m","retryable":true}}',
      ),
    ).toEqual({
      recordId: 'a',
      stage: 'converse',
      error: { code: 'C', message: 'm', retryable: true },
    });
  });
});

describe('progress', () => {
  it('a finished run is read from its manifest: everything done, rate over the run', () => {
    const m = manifest(
      'r',
      'converse',
      { records: 120, succeeded: 100, failed: 20, skipped: 0 },
      { input: 1, output: 1 },
    );
    const p = computeProgress({
      view: runViewOf('r', undefined, plan('r', 'converse', { records: 120 }), m)!,
      now: T0 + 9e9,
    });
    expect(p).toMatchObject({
      finished: true,
      total: 120,
      done: 120,
      failed: 20,
      succeeded: 100,
      etaSeconds: null,
      errorRate: 1 / 6,
    });
    expect(p.ratePerSecond).toBeCloseTo(120 / 600);
  });

  it('an interrupted local run (plan, no manifest) is UNFINISHED, with what its shards collected', () => {
    const view = runViewOf('r', undefined, plan('r', 'batch', { records: 300, skipped: 100 }), undefined)!;
    const p = computeProgress({
      view,
      shards: [shard('r', 0, 100), shard('r', 1, 100)],
      markers: [marker(0, { records: 100, succeeded: 97, failed: 3 }, { input: 1, output: 1 })],
      now: T0 + 10_000,
    });
    expect(p).toMatchObject({
      status: 'UNFINISHED',
      finished: true,
      total: 200,
      done: 100,
      failed: 3,
      skippedByPlan: 100,
    });
    expect(p.jobs.map((j) => j.status)).toEqual(['Completed', 'Pending']);
  });

  it('the windowed rate follows the last minute', () => {
    const tracker = new RateTracker(60_000);
    expect(tracker.add(T0, 0)).toBeNull();
    expect(tracker.add(T0 + 30_000, 300)).toBe(10);
    expect(tracker.add(T0 + 60_000, 600)).toBe(10);
    // Faster now: the oldest sample falls out of the window.
    expect(tracker.add(T0 + 90_000, 1500)).toBe(20);
  });

  it('a terminal gets bars for the run, its Map Runs and jobs in flight; a pipe gets one line per update', () => {
    const view = runViewOf(
      'run-b',
      { runId: 'run-b', executionArn: 'x', status: 'RUNNING', startedAt: new Date(T0).toISOString() },
      plan('run-b', 'converse', { records: 1000 }),
      undefined,
    )!;
    const progress = computeProgress({
      view,
      mapRuns: [
        {
          mapRunArn: 'a',
          stateName: 'FanOut',
          status: 'RUNNING',
          items: {
            total: 1000,
            pending: 500,
            running: 100,
            succeeded: 390,
            failed: 10,
            timedOut: 0,
            aborted: 0,
          },
        },
      ],
      now: T0 + 100_000,
    });
    const tty = new Capture({ tty: true });
    const bars = createProgressDisplay(tty);
    bars.update(progress);
    bars.stop();
    expect(tty.text()).toMatch(
      /run run-b\s+\S+ 40% 400\/1,000 records\s+4\.0\/s\s+ETA 2m 30s\s+errors 2\.5%\s+RUNNING/,
    );
    expect(tty.text()).toMatch(/FanOut\s+\S+ 40% 400\/1,000 records\s+100 running, 10 failed/);

    const pipe = new Capture();
    const lines = createProgressDisplay(pipe);
    lines.update(progress);
    expect(pipe.text()).toMatch(
      /^\d\d:\d\d:\d\d RUNNING\s+400 of 1,000 records \(40\.0%\)\s+rate 4\.0\/s\s+ETA 2m 30s\s+errors 2\.5%\n$/,
    );
  });
});

describe('inputs and formatting', () => {
  it('builds the execution input the workflow validates', () => {
    expect(runInputOf('s3://corpus-ingest/corpora/a b.jsonl', 'auto')).toEqual({
      bucket: 'corpus-ingest',
      key: 'corpora/a b.jsonl',
      mode: 'auto',
      trigger: 'cli',
    });
    // A prefix is a corpus of its .jsonl, .jsonl.gz and .gz files: passed on as it is.
    expect(runInputOf('s3://corpus-ingest/corpora/drop-1/', 'converse')).toEqual({
      bucket: 'corpus-ingest',
      key: 'corpora/drop-1/',
      mode: 'converse',
      trigger: 'cli',
    });
    expect(() => runInputOf('https://x/y', 'auto')).toThrow(CliUsageError);
    expect(() => checkRunId('a'.repeat(81))).toThrow(CliUsageError);
  });

  it('formats durations, money and tables', () => {
    expect([
      fmt.duration(4200),
      fmt.duration(187_000),
      fmt.duration(7_500_000),
      fmt.duration(90_000_000),
    ]).toEqual(['4.2s', '3m 07s', '2h 05m', '1d 01h']);
    expect([fmt.usd(0.00123), fmt.usd(12.345), fmt.usd(null)]).toEqual(['$0.0012', '$12.35', '-']);
    expect(
      fmt.table(
        [
          { a: 'x', n: 5 },
          { a: 'long', n: 1234 },
        ],
        [
          { header: 'A', cell: (r) => r.a },
          { header: 'N', cell: (r) => fmt.count(r.n), right: true },
        ],
      ),
    ).toBe('  A         N\n  x         5\n  long  1,234');
  });
});
