import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunManifest } from '../../lambda/shared/contracts';
import { readJsonl, runLocal } from './cli';

/**
 * The local environment's model is the default one, us.amazon.nova-lite-v1:0 (cdk.json): Amazon Nova native records
 * (`schemaVersion: "messages-v1"`, `inferenceConfig.max_new_tokens`), Converse-shaped records and plain `{id, text}`
 * lines all succeed, with their tokens counted, through Converse/InvokeModel (converse mode) and in batch mode, where the native
 * records (the run's larger format) go into an InvokeModel batch job and the others through Converse in the same run
 * (a job takes one format; batch-run.test.ts covers Converse-format jobs).
 */

jest.setTimeout(300_000);

const NATIVE = 120;
const CONVERSE = 40;
const PLAIN = 40;

function corpus(): string {
  const lines: string[] = [];
  for (let i = 0; i < NATIVE; i++) {
    lines.push(
      JSON.stringify({
        recordId: `nova-${i}`,
        modelInput: {
          schemaVersion: 'messages-v1',
          system: [{ text: 'Answer in one sentence.' }],
          messages: [{ role: 'user', content: [{ text: `Summarise native record ${i}` }] }],
          inferenceConfig: { max_new_tokens: 200, top_p: 0.9 },
        },
      }),
    );
  }
  for (let i = 0; i < CONVERSE; i++) {
    lines.push(
      JSON.stringify({
        recordId: `converse-${i}`,
        modelInput: {
          messages: [{ role: 'user', content: [{ text: `Summarise Converse record ${i}` }] }],
          inferenceConfig: { maxTokens: 200 },
        },
      }),
    );
  }
  for (let i = 0; i < PLAIN; i++)
    lines.push(JSON.stringify({ id: `plain-${i}`, text: `Classify review ${i}` }));
  return `${lines.join('\n')}\n`;
}

interface Result {
  recordId: string;
  modelOutput: Record<string, unknown>;
  usage: { inputTokens: number; outputTokens: number; totalTokens: number };
}

/** Every record succeeded, each with tokens, the native ones answered in Nova's native shape. */
function expectAllAnswered(m: RunManifest, outDir: string): void {
  const total = NATIVE + CONVERSE + PLAIN;
  expect(m.status).toBe('SUCCEEDED');
  expect(m.counts).toMatchObject({ lines: total, records: total, succeeded: total, failed: 0, invalid: 0 });
  const results = readJsonl(join(outDir, 'results.jsonl')) as unknown as Result[];
  expect(results).toHaveLength(total);
  for (const r of results) {
    expect({ recordId: r.recordId, tokens: r.usage.inputTokens > 0 && r.usage.outputTokens > 0 }).toEqual({
      recordId: r.recordId,
      tokens: true,
    });
  }
  const native = results.filter((r) => r.recordId.startsWith('nova-'));
  expect(native).toHaveLength(NATIVE);
  for (const r of native) {
    // The native body answers with its own usage: Nova's `usage.inputTokens`, which the pipeline counted.
    expect(r.modelOutput).toMatchObject({
      output: { message: { role: 'assistant' } },
      stopReason: 'end_turn',
      usage: { inputTokens: r.usage.inputTokens, outputTokens: r.usage.outputTokens },
    });
  }
  expect(m.tokens.input).toBe(results.reduce((n, r) => n + r.usage.inputTokens, 0));
  expect(m.tokens.output).toBe(results.reduce((n, r) => n + r.usage.outputTokens, 0));
}

describe('the default model, Amazon Nova Lite through the US inference profile', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-e2e-families-'));
  const file = join(work, 'families.jsonl');
  writeFileSync(file, corpus());
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('converse mode: native, Converse and plain records succeed, with their tokens', () => {
    const outDir = join(work, 'out-converse');
    const m = runLocal([
      '--corpus',
      file,
      '--mode',
      'converse',
      '--out',
      outDir,
      '--state-dir',
      join(work, 'b'),
    ]);
    expect(m.mode).toBe('converse');
    expect(m.modelId).toBe('us.amazon.nova-lite-v1:0');
    expectAllAnswered(m, outDir);
  });

  it('batch mode: an InvokeModel batch job of Nova native records, the others through Converse', () => {
    const outDir = join(work, 'out-batch');
    const m = runLocal([
      '--corpus',
      file,
      '--mode',
      'batch',
      '--out',
      outDir,
      '--state-dir',
      join(work, 'a'),
    ]);
    expect(m.mode).toBe('batch');
    expect((m.jobs ?? []).map((j) => [j.records, j.status, j.succeeded, j.redriven])).toEqual([
      [NATIVE, 'Completed', NATIVE, 0],
    ]);
    expect(m.modelCalls.total).toBe(CONVERSE + PLAIN);
    expectAllAnswered(m, outDir);
  });
});
