// fauxqs (SQS) is ESM-only and jest cannot load it: the scenario runs in a child process with tsx and reports
// what it observed as one JSON line, which this test checks.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ACCEPTED_SAMPLES, REFUSED_SAMPLES } from './fixtures/sqs-character-samples';

jest.setTimeout(60_000);

const repoRoot = path.resolve(__dirname, '../../../..');

describe('the local SQS accepts exactly the characters SQS accepts (child process, real SDK v3)', () => {
  let stateDir: string;
  let observations: Record<string, unknown>;

  beforeAll(async () => {
    stateDir = mkdtempSync(path.join(tmpdir(), 'corpus-sqs-chars-'));
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', path.join(__dirname, 'fixtures', 'sqs-characters-scenario.ts'), stateDir],
      { cwd: repoRoot, timeout: 50_000 },
    );
    observations = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
  });

  afterAll(() => {
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('accepts astral characters, RTL, CJK, ZWJ sequences and every other allowed character', () => {
    const single = observations['single'] as Record<string, { body: string; attribute: string }>;
    for (const label of Object.keys(ACCEPTED_SAMPLES)) {
      expect({ label, ...single[label] }).toEqual({ label, body: 'accepted', attribute: 'accepted' });
    }
  });

  it('refuses U+FFFE, U+FFFF, lone surrogates and C0 controls: bodies InvalidMessageContents, attributes InvalidParameterValue', () => {
    const single = observations['single'] as Record<string, { body: string; attribute: string }>;
    for (const label of Object.keys(REFUSED_SAMPLES)) {
      expect({ label, ...single[label] }).toEqual({
        label,
        body: 'InvalidMessageContents',
        attribute: 'InvalidParameterValue',
      });
    }
    expect(observations['emptyAttribute']).toBe('InvalidParameterValue');
  });

  it('sees lone surrogates as JSON escapes on the wire and U+FFFF as its own character', () => {
    const wire = observations['wire'] as { lone?: string; nonchar?: string };
    const hex = (text: string): string => Buffer.from(text).toString('hex');
    // A lone surrogate has no UTF-8 form: JSON.stringify writes the six characters of its escape.
    expect(wire.lone).toContain(hex('<lone:\\ud800>'));
    // U+FFFF travels as its UTF-8 bytes EF BF BF.
    expect(wire.nonchar).toContain(`${hex('<nonchar:')}efbfbf${hex('>')}`);
  });

  it('gives back every accepted body and attribute as it was sent', () => {
    const sent = Object.values(ACCEPTED_SAMPLES);
    expect(observations['received']).toEqual([...sent.map((t) => `<${t}>`), ...sent].sort());
  });

  it('fails only the refused entries of a SendMessageBatch, as sender faults', () => {
    expect(observations['batch']).toEqual({
      successful: ['cjk', 'emoji'],
      failed: [
        ['nonchar', 'InvalidMessageContents', true],
        ['nulAttribute', 'InvalidParameterValue', true],
      ],
    });
    expect(observations['allRefused']).toEqual({
      successful: [],
      failed: [
        ['a', 'InvalidMessageContents', true],
        ['b', 'InvalidMessageContents', true],
      ],
    });
  });
});
