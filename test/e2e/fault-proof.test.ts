import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunManifest } from '../../lambda/shared/contracts';
import type { FaultReport } from '../../local/fault-report';
import { readJsonl, runCli } from './cli';

/**
 * Faults that prove themselves: the real CLI on the local runtime with Converse faults. The run's fault report
 * (`faults.json` in --out, the same counts as the summary prints) first shows the faults happened, counted by the
 * Bedrock simulator and the local functions; only then is their effect checked.
 */

jest.setTimeout(300_000);

const RECORDS = 120;

describe('Converse faults fire end to end', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-fault-proof-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('throttle=0.3: the simulator throttles Converse calls, a crash fires once, and every record still ends published', () => {
    const corpus = join(work, 'corpus.jsonl');
    const ids = Array.from({ length: RECORDS }, (_, i) => `p-${i}`);
    writeFileSync(
      corpus,
      ids
        .map((recordId, i) =>
          JSON.stringify({
            recordId,
            modelInput: { messages: [{ role: 'user', content: [{ text: `Classify ticket ${i}` }] }] },
          }),
        )
        .join('\n'),
    );
    const out = join(work, 'out');
    const res = runCli([
      'local',
      'run',
      '--corpus',
      corpus,
      '--mode',
      'converse',
      '--faults',
      'throttle=0.3,crash=converse-batch:1',
      '--out',
      out,
      '--state-dir',
      join(work, 'state'),
    ]);
    if (res.status !== 0) throw new Error(`exit ${res.status}\n${res.stderr}\n${res.stdout}`);

    // The faults happened.
    const report = JSON.parse(readFileSync(join(out, 'faults.json'), 'utf8')) as FaultReport;
    expect(report.bedrock.throttled.injected).toBeGreaterThan(0);
    expect(report.bedrock.injectedFaults.throttling).toBe(report.bedrock.throttled.injected);
    expect(report.bedrock.requests).toBeGreaterThan(RECORDS);
    expect(report.crashes).toEqual([
      {
        handler: 'converse-batch',
        step: 'return',
        fault: 'crash=converse-batch@return:1',
        times: 1,
        fired: 1,
      },
    ]);
    expect(res.stdout).toMatch(
      new RegExp(
        `model calls: ${report.bedrock.requests}, .* \\(quota rpm \\d+, tpm \\d+; injected ${report.bedrock.throttled.injected}\\)`,
      ),
    );
    expect(res.stdout).toMatch(/crashes fired: converse-batch@return 1 of 1/);

    // Their effect: backoff, the workflow's retry and the ledger absorb them; every record ends published once.
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as RunManifest;
    expect(manifest).toMatchObject({ status: 'SUCCEEDED', mode: 'converse' });
    const results = readJsonl(join(out, 'results.jsonl')).map((r) => String(r.recordId));
    expect([...new Set(results)].sort()).toEqual([...ids].sort());
    expect(results).toHaveLength(RECORDS);
  });
});
