import { writeFileSync } from 'node:fs';
import { MAX_LINE_BYTES } from '../../lambda/shared/records';

/**
 * A corpus of real-world text, built with Buffers (some lines are not UTF-8 on purpose): valid text of every kind
 * that must succeed (emoji and other astral characters, RTL, CJK, zero-width joiners, escaped controls, U+FFFF,
 * escaped lone surrogates), and bad lines that must each get their own reason (invalid UTF-8, raw controls, deep
 * nesting, non-objects, an over-long line, recordIds SQS or the ledger would refuse).
 */

/** A Converse request with one user text. */
const ask = (text: string): Record<string, unknown> => ({
  messages: [{ role: 'user', content: [{ text }] }],
});
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const bytes = (...parts: (string | number[])[]): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))));

/** A line, and what must become of it: a record that succeeds, a bad line with this code, or a duplicate. */
export type Line = { bytes: Buffer } & ({ record: string } | { code: string } | { duplicate: true });

const EMOJI_TEXT = 'Grinning 😀, family 👩‍👩‍👧, flag 🇯🇵, math 𝐀𝐁𝐂 𝑥²';

/** The corpus, line by line. Written with Buffers: some lines are not UTF-8 on purpose. */
export const LINES: Line[] = [
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

/** Writes the corpus (line ends vary: LF, CRLF; no line end after the last line) and says what each line must become. */
export function writeRealWorldCorpus(file: string): {
  recordIds: string[];
  badLines: { line: number; code: string }[];
} {
  writeFileSync(
    file,
    Buffer.concat(
      LINES.flatMap((l, i) => (i === LINES.length - 1 ? [l.bytes] : [l.bytes, bytes(i % 3 ? '\n' : '\r\n')])),
    ),
  );
  return {
    recordIds: LINES.flatMap((l) => ('record' in l ? [l.record] : [])),
    badLines: LINES.flatMap((l, i) => ('code' in l ? [{ line: i + 1, code: l.code }] : [])),
  };
}
