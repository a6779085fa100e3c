import { describe, expect, it } from '@jest/globals';
import {
  canonicalJson,
  contentHashOf,
  cleanLine,
  detectFormat,
  DuplicateTracker,
  MAX_ITEM_BYTES,
  MAX_LINE_BYTES,
  MAX_NESTING_DEPTH,
  nestedDeeperThan,
  parseLine,
  templateRequest,
  type LineProblem,
  type ParsedLine,
  type PromptSettings,
} from '../../../../lambda/shared/records';
import type { ModelFamily } from '../../../../lambda/shared/model-catalog';
import { fixture } from '../helpers';

const prompt: PromptSettings = { template: 'Answer briefly: {{text}}', maxTokens: 256 };
const converse = { messages: [{ role: 'user', content: [{ text: 'Hello' }] }] };

function ok(parsed: ParsedLine): Extract<ParsedLine, { ok: true }> {
  if (!parsed.ok)
    throw new Error(`expected an accepted line, got ${parsed.problem.code}: ${parsed.problem.message}`);
  return parsed;
}

function problem(parsed: ParsedLine): LineProblem {
  if (parsed.ok) throw new Error(`expected a rejected line, got record ${parsed.item.recordId}`);
  return parsed.problem;
}

describe('parseLine: accepted forms', () => {
  it('takes {recordId, modelInput} with a Converse body as format converse', () => {
    const { item, bytes } = ok(
      parseLine(JSON.stringify({ recordId: 'r1', modelInput: converse }), 3, prompt),
    );
    expect(item).toEqual({ recordId: 'r1', format: 'converse', modelInput: converse, line: 3 });
    expect(bytes).toBe(Buffer.byteLength(JSON.stringify(item)));
  });

  it('takes a native InvokeModel body (Anthropic messages with anthropic_version, Titan inputText) as format native', () => {
    const anthropic = {
      anthropic_version: 'bedrock-2023-05-31',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'Hi' }],
    };
    expect(
      ok(parseLine(JSON.stringify({ recordId: 'a', modelInput: anthropic }), 1, prompt)).item.format,
    ).toBe('native');
    expect(
      ok(parseLine(JSON.stringify({ recordId: 't', modelInput: { inputText: 'Hi' } }), 1, prompt)).item
        .format,
    ).toBe('native');
  });

  it('accepts a numeric recordId as its decimal text', () => {
    expect(
      ok(parseLine(JSON.stringify({ recordId: 42, modelInput: converse }), 1, prompt)).item.recordId,
    ).toBe('42');
  });

  it('turns a plain {id, text} line into a Converse request through the template', () => {
    const withSystem: PromptSettings = { ...prompt, system: 'Be terse.' };
    const { item } = ok(parseLine('{"id": "p1", "text": "good morning"}', 7, withSystem));
    expect(item).toEqual({
      recordId: 'p1',
      format: 'converse',
      line: 7,
      modelInput: {
        messages: [{ role: 'user', content: [{ text: 'Answer briefly: good morning' }] }],
        inferenceConfig: { maxTokens: 256 },
        system: [{ text: 'Be terse.' }],
      },
    });
  });

  it('fills every {{text}} placeholder and leaves $-patterns in the text alone', () => {
    const request = templateRequest('a $& b', { template: '{{text}} / {{text}}', maxTokens: 5 });
    expect(request).toEqual({
      messages: [{ role: 'user', content: [{ text: 'a $& b / a $& b' }] }],
      inferenceConfig: { maxTokens: 5 },
    });
  });

  it('derives a deterministic h-<hash> recordId for a line without one, whatever the key order', () => {
    const a = ok(
      parseLine(
        '{"modelInput": {"messages": [{"role": "user", "content": [{"text": "x"}]}], "inferenceConfig": {"maxTokens": 9, "temperature": 0}}}',
        1,
        prompt,
      ),
    );
    const b = ok(
      parseLine(
        '{"modelInput": {"inferenceConfig": {"temperature": 0, "maxTokens": 9}, "messages": [{"content": [{"text": "x"}], "role": "user"}]}}',
        2,
        prompt,
      ),
    );
    expect(a.item.recordId).toMatch(/^h-[0-9a-f]{32}$/);
    expect(b.item.recordId).toBe(a.item.recordId);
    expect(b.contentHash).toBe(a.contentHash);
    expect(a.item.recordId).toBe(`h-${contentHashOf(a.item.modelInput)}`);
    const other = ok(
      parseLine('{"modelInput": {"messages": [{"role": "user", "content": [{"text": "y"}]}]}}', 3, prompt),
    );
    expect(other.item.recordId).not.toBe(a.item.recordId);
  });
});

describe('parseLine: rejected lines name the line and what to do', () => {
  it.each([
    [
      'truncated JSON',
      '{"recordId": "t", "modelInput": {"messages": [',
      'InvalidJson',
      /line 4 is not valid JSON .*looks truncated/,
    ],
    ['malformed JSON', '{recordId: 1}', 'InvalidJson', /line 4 is not valid JSON/],
    [
      'an array',
      '[1, 2, 3]',
      'NotAnObject',
      /line 4 is an array; expected an object \{"recordId", "modelInput"\} or \{"id", "text"\}/,
    ],
    ['a string', '"just a string"', 'NotAnObject', /line 4 is a string; expected an object/],
    ['null', 'null', 'NotAnObject', /line 4 is null/],
    ['a number', '42', 'NotAnObject', /line 4 is a number; expected an object/],
    ['true', 'true', 'NotAnObject', /line 4 is a boolean; expected an object/],
    ['a deep array', `${'['.repeat(5000)}${']'.repeat(5000)}`, 'NotAnObject', /line 4 is an array/],
    [
      'no modelInput',
      '{"recordId": "no-input"}',
      'MissingModelInput',
      /line 4 has no modelInput \(keys: recordId\); expected/,
    ],
    [
      'a string modelInput',
      '{"recordId": "s", "modelInput": "Tell me a joke"}',
      'InvalidModelInput',
      /line 4: modelInput must be an object .*got a string/,
    ],
    ['an array modelInput', '{"recordId": "s", "modelInput": []}', 'InvalidModelInput', /got an array/],
    ['a null modelInput', '{"recordId": "s", "modelInput": null}', 'InvalidModelInput', /got null/],
    [
      'an {id, text} line with empty text',
      '{"id": "p", "text": "  "}',
      'InvalidText',
      /line 4: text must be a non-empty string/,
    ],
    [
      'a text line without id',
      '{"text": "hello"}',
      'MissingId',
      /line 4: an \{"id", "text"\} line needs an id/,
    ],
    [
      'an object recordId',
      '{"recordId": {"a": 1}, "modelInput": {}}',
      'InvalidRecordId',
      /line 4: recordId must be a string, got an object/,
    ],
    [
      'a recordId with a leading space',
      '{"recordId": " r", "modelInput": {}}',
      'InvalidRecordId',
      /line 4: recordId " r" must be 1 to 256 printable ASCII/,
    ],
    [
      'an empty recordId',
      '{"recordId": "", "modelInput": {}}',
      'InvalidRecordId',
      /must be 1 to 256 printable ASCII/,
    ],
    [
      'a non-ASCII recordId',
      '{"recordId": "caf\u00e9", "modelInput": {}}',
      'InvalidRecordId',
      /printable ASCII/,
    ],
    [
      'a 257-character recordId',
      JSON.stringify({ recordId: 'x'.repeat(257), modelInput: {} }),
      'InvalidRecordId',
      /printable ASCII/,
    ],
    [
      'an invalid id on a text line',
      '{"id": true, "text": "hi"}',
      'InvalidRecordId',
      /line 4: id must be a string, got a boolean/,
    ],
  ])('%s', (_what, line, code, message) => {
    const p = problem(parseLine(line, 4, prompt));
    expect(p.code).toBe(code);
    expect(p.message).toMatch(message);
  });

  it('accepts recordIds of 1 and 256 printable characters, inner spaces included', () => {
    for (const id of ['a', 'x'.repeat(256), 'a b#c/d:e']) {
      expect(
        ok(parseLine(JSON.stringify({ recordId: id, modelInput: converse }), 1, prompt)).item.recordId,
      ).toBe(id);
    }
  });

  it('rejects a record over the Step Functions item limit as RecordTooLarge with its recordId', () => {
    const big = { messages: [{ role: 'user', content: [{ text: 'x'.repeat(MAX_ITEM_BYTES) }] }] };
    const p = problem(parseLine(JSON.stringify({ recordId: 'huge', modelInput: big }), 9, prompt));
    expect(p.code).toBe('RecordTooLarge');
    expect(p.recordId).toBe('huge');
    expect(p.message).toMatch(
      new RegExp(`line 9: record huge is \\d+ bytes; .* limits them to ${MAX_ITEM_BYTES} bytes`),
    );
  });
});

describe('parseLine: limits on a line', () => {
  /** A line whose modelInput holds a tool document nested so that the line is `depth` levels deep. */
  const nestedLine = (depth: number): string => {
    // The line (1), modelInput (2), messages (3), a message (4), content (5), a block (6), toolResult (7),
    // its content (8), a part (9), json (10): the document adds the rest.
    const document = `${'{"a":'.repeat(depth - 10)}1${'}'.repeat(depth - 10)}`;
    return `{"recordId":"deep","modelInput":{"messages":[{"role":"user","content":[{"toolResult":{"toolUseId":"t","content":[{"json":{"d":${document}}}]}}]}]}}`;
  };

  it(`accepts a line nested ${MAX_NESTING_DEPTH} levels deep and rejects one more as NestingTooDeep`, () => {
    expect(nestedDeeperThan(JSON.parse(nestedLine(MAX_NESTING_DEPTH)), MAX_NESTING_DEPTH)).toBe(false);
    expect(ok(parseLine(nestedLine(MAX_NESTING_DEPTH), 4, prompt)).item.recordId).toBe('deep');
    expect(problem(parseLine(nestedLine(MAX_NESTING_DEPTH + 1), 4, prompt))).toEqual({
      code: 'NestingTooDeep',
      message: `line 4 nests objects and arrays more than ${MAX_NESTING_DEPTH} levels deep (the line's object is level 1); flatten the record`,
    });
  });

  it('rejects lines nested 5,000 and 400,000 deep without overflowing the stack, in any field', () => {
    const arrays = (n: number): string => `${'['.repeat(n)}${']'.repeat(n)}`;
    const objects = (n: number): string => `${'{"k":'.repeat(n)}1${'}'.repeat(n)}`;
    for (const line of [
      `{"recordId":"d","modelInput":{"messages":${arrays(5000)}}}`,
      `{"recordId":"d","modelInput":{"messages":[]},"extra":${arrays(400_000)}}`,
      `{"id":"d","text":"t","meta":${objects(5000)}}`,
      `{"recordId":"d","modelInput":${objects(5000)}}`,
    ]) {
      expect(Buffer.byteLength(line)).toBeLessThanOrEqual(MAX_LINE_BYTES);
      expect(problem(parseLine(line, 9, prompt)).code).toBe('NestingTooDeep');
    }
  });

  it('counts levels of objects and arrays alike, and leaves scalars out', () => {
    expect(nestedDeeperThan({ a: [{ b: [1, 'x', null] }] }, 4)).toBe(false);
    expect(nestedDeeperThan({ a: [{ b: [[]] }] }, 4)).toBe(true);
    expect(nestedDeeperThan('scalar', 0)).toBe(false);
    expect(nestedDeeperThan([], 1)).toBe(false);
    expect(nestedDeeperThan([[]], 1)).toBe(true);
  });

  it('rejects a line over MAX_LINE_BYTES as LineTooLong, counting bytes, not characters', () => {
    // 'é' is 2 bytes: fewer characters than the limit, more bytes.
    const text = 'é'.repeat(MAX_LINE_BYTES / 2);
    const line = JSON.stringify({ id: 'long', text });
    expect(line.length).toBeLessThan(MAX_LINE_BYTES);
    expect(problem(parseLine(line, 3, prompt))).toEqual({
      code: 'LineTooLong',
      message: `line 3 is ${Buffer.byteLength(line)} bytes long; a line may be at most ${MAX_LINE_BYTES} bytes (1 MiB), so it was skipped unread (a record must stay under ${MAX_ITEM_BYTES} bytes anyway): shorten or split it`,
    });
    // Just under the limit it is a record like any other, rejected for the record's own size.
    const under = JSON.stringify({ id: 'long', text: 'x'.repeat(MAX_LINE_BYTES - 40) });
    expect(Buffer.byteLength(under)).toBeLessThanOrEqual(MAX_LINE_BYTES);
    expect(problem(parseLine(under, 3, prompt)).code).toBe('RecordTooLarge');
  });
});

describe('cleanLine and the fixture corpus', () => {
  it('strips a BOM on the first line only, and a trailing CR', () => {
    expect(cleanLine('\ufeff{"a":1}\r', true)).toBe('{"a":1}');
    expect(cleanLine('\ufeff{"a":1}', false)).toBe('\ufeff{"a":1}');
    expect(cleanLine('{"a":1}', true)).toBe('{"a":1}');
  });

  it('classifies every line of bad-input-corpus.jsonl', () => {
    const raw = fixture('bad-input-corpus.jsonl');
    expect(raw.charCodeAt(0)).toBe(0xfeff);
    expect(raw).toContain('\r\n');
    const tracker = new DuplicateTracker();
    const verdicts: string[] = [];
    raw.split('\n').forEach((rawLine, i) => {
      const lineNo = i + 1;
      const text = cleanLine(rawLine, lineNo === 1);
      if (text.trim() === '') {
        if (lineNo <= 26) verdicts.push(`${lineNo}:blank`);
        return;
      }
      const parsed = parseLine(text, lineNo, prompt);
      if (!parsed.ok) {
        verdicts.push(`${lineNo}:${parsed.problem.code}`);
        return;
      }
      const verdict = tracker.check(parsed.item.recordId, parsed.contentHash, lineNo);
      verdicts.push(
        verdict.kind === 'new'
          ? `${lineNo}:${parsed.item.recordId}`
          : `${lineNo}:${verdict.kind}@${verdict.firstLine}`,
      );
    });
    expect(verdicts.slice(0, 16)).toEqual([
      '1:ok-1',
      '2:blank',
      '3:ok-2',
      '4:InvalidJson',
      '5:NotAnObject',
      '6:NotAnObject',
      '7:MissingModelInput',
      '8:InvalidModelInput',
      '9:identical@1',
      '10:conflict@3',
      '11:blank',
      '12:rejected-empty',
      '13:rejected-assistant-first',
      '14:rejected-maxtokens',
      '15:plain-1',
      `16:h-${contentHashOf({ messages: [{ role: 'user', content: [{ text: 'No id here' }] }] })}`,
    ]);
    expect(verdicts.slice(16)).toEqual(Array.from({ length: 10 }, (_, i) => `${17 + i}:ok-${3 + i}`));
    expect(tracker.size).toBe(17);
  });
});

describe('helpers', () => {
  it('canonicalJson sorts keys at every depth and drops undefined members', () => {
    expect(canonicalJson({ b: [{ d: 1, c: 2 }], a: undefined, e: null })).toBe(
      '{"b":[{"c":2,"d":1}],"e":null}',
    );
  });

  it('canonicalJson writes the same text as a key-sorting walk for any JSON-parsed value, and pins the content hash', () => {
    // The reference: what canonicalJson wrote before its JSON.stringify fast path (persisted content hashes and
    // derived recordIds depend on it).
    const reference = (value: unknown): string => {
      if (value === null || typeof value !== 'object') return JSON.stringify(value);
      if (Array.isArray(value)) return `[${value.map(reference).join(',')}]`;
      const object = value as Record<string, unknown>;
      return `{${Object.keys(object)
        .sort()
        .map((k) => `${JSON.stringify(k)}:${reference(object[k])}`)
        .join(',')}}`;
    };
    let seed = 7;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const keys = [
      'a',
      'b',
      'Z',
      'role',
      'content',
      'text',
      '__proto__',
      '10',
      '2',
      '1a',
      'é',
      '\u{1f600}',
      'x"y',
      '',
    ];
    const build = (depth: number): unknown => {
      switch (depth > 4 ? next(4) : next(7)) {
        case 0:
          return `s${next(100)}\u00e9"\n`;
        case 1:
          return next(3) === 0 ? -0 : next(1000) / 7;
        case 2:
          return next(2) === 0;
        case 3:
          return null;
        case 4:
          return Array.from({ length: next(4) }, () => build(depth + 1));
        default: {
          const members = Array.from(
            { length: next(5) },
            () => `${JSON.stringify(keys[next(keys.length)])}:${JSON.stringify(build(depth + 1))}`,
          );
          return JSON.parse(`{${members.join(',')}}`) as unknown;
        }
      }
    };
    for (let i = 0; i < 3000; i++) {
      const value = JSON.parse(JSON.stringify(build(0)) ?? 'null') as unknown;
      expect(canonicalJson(value)).toBe(reference(value));
    }
    expect(
      canonicalJson({ messages: [{ role: 'user', content: [{ text: 'hi' }] }], system: [{ text: 's' }] }),
    ).toBe('{"messages":[{"content":[{"text":"hi"}],"role":"user"}],"system":[{"text":"s"}]}');
    // A persisted hash: changing it would report every published record as RecordIdReused on the next run.
    expect(contentHashOf({ messages: [{ role: 'user', content: [{ text: 'No id here' }] }] })).toBe(
      'ea7380af303e0db0ab92cb2e79705cb1',
    );
    // Values JSON.parse never makes take the general walk.
    expect(canonicalJson({ b: new Date(0), a: [1, undefined], c: () => 1 })).toBe(
      '{"a":[1,],"b":{},"c":undefined}',
    );
  });

  it('detectFormat: messages array means Converse unless anthropic_version says native', () => {
    expect(detectFormat({ messages: [] })).toBe('converse');
    expect(detectFormat({ messages: 'x' })).toBe('native');
    expect(detectFormat({ anthropic_version: 'v', messages: [] })).toBe('native');
  });

  describe("detectFormat with the model's family", () => {
    const converse = {
      messages: [{ role: 'user', content: [{ text: 'Hi' }] }],
      inferenceConfig: { maxTokens: 10, topP: 0.9 },
    };
    const nova = {
      schemaVersion: 'messages-v1',
      messages: [{ role: 'user', content: [{ text: 'Hi' }] }],
      inferenceConfig: { max_new_tokens: 10 },
    };
    const gptOss = { messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 10 };
    const claude = { anthropic_version: 'bedrock-2023-05-31', max_tokens: 10, messages: [] };

    it.each<[ModelFamily, Record<string, unknown>, 'converse' | 'native']>([
      ['amazon-nova', converse, 'converse'],
      ['amazon-nova', nova, 'native'],
      ['amazon-nova', { messages: converse.messages, inferenceConfig: { maxTokens: 5, topK: 20 } }, 'native'],
      ['openai-chat', gptOss, 'native'],
      ['openai-chat', { messages: [{ role: 'user', content: 'Hi' }] }, 'native'],
      ['openai-chat', converse, 'converse'],
      ['mistral-chat', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5 }, 'native'],
      ['mistral-chat', converse, 'converse'],
      ['anthropic-messages', claude, 'native'],
      ['anthropic-messages', converse, 'converse'],
      // Another family's native body fails either way: Nova's InvokeModel refuses Claude's names, and a Claude
      // deployment sends Nova's body to Converse, which names the fields it does not take.
      ['amazon-nova', claude, 'native'],
      ['anthropic-messages', nova, 'converse'],
      ['meta-llama', converse, 'converse'],
      ['meta-llama', { prompt: 'Hi', max_gen_len: 5 }, 'native'],
    ])('%s: %j is %s', (family, body, format) => {
      expect(detectFormat(body, family)).toBe(format);
      const line = JSON.stringify({ recordId: 'r', modelInput: body });
      expect(ok(parseLine(line, 1, prompt, MAX_LINE_BYTES, family)).item.format).toBe(format);
    });

    it('without the family, a Nova or gpt-oss native body was taken for Converse (the bug this fixes)', () => {
      expect(detectFormat(nova)).toBe('converse');
      expect(detectFormat(gptOss)).toBe('converse');
    });
  });

  it('DuplicateTracker tells new, identical and conflicting records apart', () => {
    const t = new DuplicateTracker();
    expect(t.check('r', 'h1', 1)).toEqual({ kind: 'new' });
    expect(t.check('r', 'h1', 5)).toEqual({ kind: 'identical', firstLine: 1 });
    expect(t.check('r', 'h2', 6)).toEqual({ kind: 'conflict', firstLine: 1 });
    expect(t.size).toBe(1);
  });
});
