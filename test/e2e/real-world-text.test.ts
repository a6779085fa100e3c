import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FailureLaneMessage, RunManifest } from '../../lambda/shared/contracts';
import { MAX_LINE_BYTES } from '../../lambda/shared/records';
import { readJsonl, ROOT, runLocal } from './cli';

/**
 * End to end, offline: a corpus of real-world text through `corpus local run` (converse mode). Every line either
 * becomes a record that succeeds or is a bad line with its own reason; the run never fails because of a line, and the
 * failure lane's DLQ (the local SQS, which accepts exactly what SQS accepts) holds every bad line.
 */

jest.setTimeout(120_000);

/** A Converse request with one user text. */
const ask = (text: string): Record<string, unknown> => ({
  messages: [{ role: 'user', content: [{ text }] }],
});
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const bytes = (...parts: (string | number[])[]): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));

/** A line, and what must become of it: a record that succeeds, a bad line with this code, or a duplicate. */
type Line = { bytes: Buffer } & ({ record: string } | { code: string } | { duplicate: true });

const EMOJI_TEXT = 'Grinning 😀, family 👩‍👩‍👧, flag 🇯🇵, math 𝐀𝐁𝐂 𝑥²';

/** The corpus, line by line. Written with Buffers: some lines are not UTF-8 on purpose. */
const LINES: Line[] = [
  // Valid text of every kind: each must succeed.
  { record: 'emoji', bytes: json({ recordId: 'emoji', modelInput: ask(EMOJI_TEXT) }) },
  { record: 'rtl', bytes: json({ recordId: 'rtl', modelInput: ask('مرحبا بالعالم \u200f שלום עולם') }) },
  {
    record: 'cjk',
    bytes: json({ recordId: 'cjk', modelInput: ask('你好，世界 こんにちは 안녕하세요 𠀀𪚥') }),
  },
  { record: 'zwj', bytes: json({ id: 'zwj', text: 'Coder 👨‍💻, astronaut 👩🏽‍🚀, e\u0301 combined' }) },
  {
    record: 'escaped-controls',
    bytes: bytes(
      '{"recordId": "escaped-controls", "modelInput": {"messages": [{"role": "user", "content": ',
      '[{"text": "nul \\u0000 bell \\u0007 escape \\u001b[31m red"}]}]}}',
    ),
  },
  {
    record: 'nonchars',
    bytes: json({ recordId: 'nonchars', modelInput: ask('U+FFFF \uffff U+FFFE \ufffe') }),
  },
  {
    record: 'lone-surrogate-escapes',
    bytes: bytes(
      '{"recordId": "lone-surrogate-escapes", "modelInput": {"messages": [{"role": "user", "content": ',
      '[{"text": "lone \\ud800 high, \\udfff low"}]}]}}',
    ),
  },
  {
    record: 'all-of-it',
    bytes: json({
      id: 'all-of-it',
      text: `${EMOJI_TEXT} مرحبا שלום 你好 \u0000\u0007 \uffff del \u007f c1 \u0085 ls \u2028 bom \ufeff tab\tend`,
    }),
  },
  // Bad lines: each gets its own reason, and the run goes on.
  { code: 'InvalidRecordId', bytes: json({ recordId: 'id-with-emoji-😀', modelInput: ask('x') }) },
  {
    code: 'InvalidRecordId',
    bytes: bytes('{"recordId": "id-with-\\uffff", "modelInput": {"messages": []}}'),
  },
  { code: 'InvalidUtf8', bytes: bytes('{"id": "cesu", "text": "lone ', [0xed, 0xa0, 0x80], '"}') },
  { code: 'InvalidUtf8', bytes: bytes('{"id": "c3-28", "text": "caf', [0xc3, 0x28], '"}') },
  { code: 'InvalidUtf8', bytes: bytes('{"id": "ff", "text": "x', [0xff], '"}') },
  // Raw control characters inside a JSON string are not JSON.
  { code: 'InvalidJson', bytes: bytes('{"id": "raw-nul", "text": "a', [0x00], 'b"}') },
  { code: 'InvalidJson', bytes: bytes('{"id": "raw-ctrl", "text": "a', [0x01], 'b"}') },
  {
    code: 'NestingTooDeep',
    bytes: bytes(`{"recordId": "deep", "modelInput": {"messages": ${'['.repeat(5000)}${']'.repeat(5000)}}}`),
  },
  { code: 'NotAnObject', bytes: bytes('["not", "an", "object"]') },
  { code: 'NotAnObject', bytes: bytes('"a string"') },
  {
    code: 'LineTooLong',
    bytes: bytes(`{"id": "long", "text": "${'y'.repeat(MAX_LINE_BYTES + 512 * 1024)}"}`),
  },
  { record: 'after', bytes: json({ id: 'after', text: 'fine again ✓' }) },
  { duplicate: true, bytes: json({ recordId: 'emoji', modelInput: ask(EMOJI_TEXT) }) },
];

/** The failure DLQ's messages, from the local SQS's state file (written when the runtime stops). */
function deadLetters(stateDir: string): FailureLaneMessage[] {
  const snapshot = JSON.parse(readFileSync(join(stateDir, 'sqs.json'), 'utf8')) as {
    queues: { name: string; ready: { body: string }[]; delayed: unknown[]; inflight: unknown[] }[];
  };
  const dlq = snapshot.queues.find((q) => q.name.includes('FailureLaneDeadLetterQueue'));
  if (!dlq) throw new Error('no failure dead-letter queue in the SQS state');
  expect(dlq.delayed.length + dlq.inflight.length).toBe(0);
  return dlq.ready.map((m) => JSON.parse(m.body) as FailureLaneMessage);
}

describe('corpus local run over real-world text (mode converse)', () => {
  const work = mkdtempSync(join(tmpdir(), 'corpus-e2e-text-'));
  const stateDir = join(work, 'state');
  const corpus = join(work, 'real-world-text.jsonl');
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  // Line ends vary (LF, CRLF), and the file ends without one.
  writeFileSync(
    corpus,
    Buffer.concat(
      LINES.flatMap((l, i) => (i === LINES.length - 1 ? [l.bytes] : [l.bytes, bytes(i % 3 ? '\n' : '\r\n')])),
    ),
  );
  const recordIds = LINES.flatMap((l) => ('record' in l ? [l.record] : []));
  const badLines = LINES.flatMap((l, i) => ('code' in l ? [{ line: i + 1, code: l.code }] : []));

  let manifest: RunManifest;

  it('succeeds, accounts for every line, and gives each bad line its own reason', () => {
    const outDir = join(work, 'out');
    manifest = runLocal(['--corpus', corpus, '--mode', 'converse', '--out', outDir, '--state-dir', stateDir]);
    expect(manifest.status).toBe('SUCCEEDED');
    const c = manifest.counts;
    expect(c).toEqual({
      lines: LINES.length,
      records: recordIds.length,
      succeeded: recordIds.length,
      failed: 0,
      invalid: badLines.length,
      duplicates: 1,
      skipped: 0,
    });
    expect(c.lines).toBe(c.records + c.invalid + c.duplicates);

    const results = readJsonl(join(outDir, 'results.jsonl'));
    expect(results.map((r) => r.recordId).sort()).toEqual([...recordIds].sort());
    const failures = readJsonl(join(outDir, 'failures.jsonl'));
    expect(failures.every((f) => f.stage === 'plan')).toBe(true);
    expect(failures.map((f) => ({ line: f.line, code: (f.error as { code: string }).code }))).toEqual(
      badLines,
    );
    for (const f of failures) {
      expect((f.error as { message: string }).message).toMatch(new RegExp(`^line ${String(f.line)}\\b`));
    }
  });

  it('dead-letters every bad line, each message as the emulator (and SQS) accepts it', () => {
    const dead = deadLetters(stateDir);
    expect(dead.map((m) => ({ line: m.line, code: m.error.code }))).toEqual(badLines);
    for (const m of dead) expect(m).toMatchObject({ runId: manifest.runId, stage: 'plan' });
    // Plan logs each message SQS refuses; there must be none.
    const logs = readdirSync(join(stateDir, 'logs'));
    const planLog = logs.find((f) => f.includes('Plan'));
    expect(planLog).toBeDefined();
    expect(readFileSync(join(stateDir, 'logs', planLog ?? ''), 'utf8')).not.toContain('failure lane refused');
  });

  it('runs the corpus again under the ledger scope of the object metadata: nothing is skipped there', () => {
    const outDir = join(work, 'out-scoped');
    const options = { corpusFile: corpus, mode: 'converse', stateDir, outDir, ledgerScope: 'tenant-e2e' };
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', join(__dirname, 'run-local-driver.ts'), JSON.stringify(options)],
      { cwd: ROOT, encoding: 'utf8', timeout: 100_000 },
    );
    if (run.status !== 0) throw new Error(`exit ${String(run.status)}\n${run.stderr}`);
    const scoped = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}') as RunManifest;
    expect(scoped.ledgerScope).toBe('tenant-e2e');
    expect(scoped.ledgerScope).not.toBe(manifest.ledgerScope);
    // A new scope has published nothing yet: every record is processed again.
    expect(scoped.counts).toEqual({ ...manifest.counts, skipped: 0 });
  });
});
