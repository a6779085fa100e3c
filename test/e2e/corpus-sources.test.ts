import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { CorpusSourceEntry } from '../../lambda/shared/contracts';
import { readJsonl, runCli, runLocal } from './cli';

/**
 * End to end, offline: `corpus local run --corpus <folder>` puts the folder's corpus files under a drop prefix and
 * then its _SUCCESS, whose upload alone starts the run (S3 -> EventBridge -> Step Functions); Plan reads the drop's
 * sources in key order, gunzips the .gz one and refuses the binary file and the gzip file not named .gz, each as one
 * failure, while the other sources run.
 */

jest.setTimeout(120_000);

const plain = (prefix: string, n: number): string =>
  Array.from(
    { length: n },
    (_, i) => `{"id":"${prefix}-${i + 1}","text":"Question ${prefix} ${i + 1}"}\n`,
  ).join('');

describe('corpus local run over a folder (a drop of several sources)', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-e2e-sources-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('reads every source, fails the bad ones whole, and lists them all in the manifest', () => {
    const drop = join(work, 'drop-1');
    mkdirSync(drop);
    writeFileSync(join(drop, 'a.jsonl'), plain('a', 3));
    writeFileSync(join(drop, 'b.jsonl'), `${plain('b', 2)}{"id": "b-bad", "text": \n`);
    writeFileSync(
      join(drop, 'c.jsonl.gz'),
      Buffer.concat([gzipSync(plain('c', 2)), gzipSync(plain('d', 1))]),
    );
    writeFileSync(
      join(drop, 'image.jsonl'),
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d]),
    );
    writeFileSync(join(drop, 'zipped.jsonl'), gzipSync(plain('z', 4)));
    writeFileSync(join(drop, 'notes.txt'), 'not a corpus file: not put');
    const outDir = join(work, 'out');
    const stateDir = join(work, 'state');
    const m = runLocal(['--corpus', drop, '--mode', 'converse', '--out', outDir, '--state-dir', stateDir]);

    expect(m.status).toBe('SUCCEEDED');
    expect(m.corpus?.key).toMatch(/drop-1\/$/);
    // 3 + 3 + 3 lines read, one line for each refused source.
    expect(m.counts).toMatchObject({
      lines: 11,
      records: 8,
      invalid: 3,
      duplicates: 0,
      succeeded: 8,
      failed: 0,
    });

    const sources = m.sources as CorpusSourceEntry[];
    const name = (key: string): string => key.slice(key.lastIndexOf('/') + 1);
    expect(sources.map((s) => [name(s.key), s.lines, s.records, s.error?.code ?? s.skipped])).toEqual([
      ['_SUCCESS', undefined, undefined, "the drop's completion marker"],
      ['a.jsonl', 3, 3, undefined],
      ['b.jsonl', 3, 2, undefined],
      ['c.jsonl.gz', 3, 3, undefined],
      ['image.jsonl', 1, 0, 'BinarySource'],
      ['zipped.jsonl', 1, 0, 'GzipNotNamedGz'],
    ]);
    expect(m.sourcesFile?.count).toBe(sources.length);
    const read = sources.filter((s) => s.skipped === undefined);
    expect(read.reduce((n, s) => n + (s.lines ?? 0), 0)).toBe(m.counts.lines);
    expect(read.reduce((n, s) => n + (s.records ?? 0), 0)).toBe(m.counts.records);

    const failures = readJsonl(join(outDir, 'failures.jsonl'));
    expect(
      failures
        .map((f) => [name(f.source as string), f.line, f.stage, (f.error as { code: string }).code])
        .sort(),
    ).toEqual([
      ['b.jsonl', 3, 'plan', 'InvalidJson'],
      ['image.jsonl', undefined, 'source', 'BinarySource'],
      ['zipped.jsonl', undefined, 'source', 'GzipNotNamedGz'],
    ]);
    const ids = readJsonl(join(outDir, 'results.jsonl'))
      .map((r) => r.recordId)
      .sort();
    expect(ids).toEqual(['a-1', 'a-2', 'a-3', 'b-1', 'b-2', 'c-1', 'c-2', 'd-1']);

    // Only the drop's _SUCCESS started a run: the five files put before it started none of their own.
    const runs = runCli(['runs', '--local', '--state-dir', stateDir, '--json']);
    expect(runs.status).toBe(0);
    expect((JSON.parse(runs.stdout) as { runs: { runId: string }[] }).runs.map((r) => r.runId)).toEqual([
      m.runId,
    ]);
  });
});
