import { isUtf8 } from 'node:buffer';
import { Readable } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import {
  BLOCK_BYTES,
  countLines,
  cutBlocks,
  firstInvalidUtf8,
  parseBlock,
  parseCorpus,
  type LineOutcome,
  type ParsedBlock,
  type SkippedLine,
} from '../../../../lambda/plan/parse-pool';
import {
  cleanLine,
  MAX_LINE_BYTES,
  parseLine,
  serializedItem,
  type PromptSettings,
} from '../../../../lambda/shared/records';
import { readLines } from '../../../../lambda/shared/s3-jsonl';
import { batchLineBytes } from '../../../../lambda/batch/shard-writer';

const PROMPT: PromptSettings = { template: 'Answer: {{text}}', maxTokens: 64 };

/** What Plan did before blocks: readLines, cleanLine, parseLine, line by line. */
async function lineByLine(text: string): Promise<{ outcome: LineOutcome; itemLine?: string }[]> {
  const out: { outcome: LineOutcome; itemLine?: string }[] = [];
  let lineNo = 0;
  for await (const raw of readLines(Readable.from([Buffer.from(text)]))) {
    lineNo++;
    const line = cleanLine(raw, lineNo === 1);
    if (line.trim() === '') continue;
    const parsed = parseLine(line, lineNo, PROMPT);
    if (!parsed.ok) {
      out.push({ outcome: { ok: false, line: lineNo, problem: parsed.problem } });
      continue;
    }
    const itemLine = `${serializedItem(parsed.item)!.text}\n`;
    out.push({
      outcome: {
        ok: true,
        line: lineNo,
        recordId: parsed.item.recordId,
        format: parsed.item.format,
        contentHash: parsed.contentHash,
        start: 0,
        end: 0,
        batchBytes: batchLineBytes(parsed.item),
      },
      itemLine,
    });
  }
  return out;
}

/** The outcomes of parsed blocks with each record's item line cut from its block, offsets left out. */
function flatten(blocks: ParsedBlock[]): { outcome: LineOutcome; itemLine?: string }[] {
  return blocks.flatMap((block) =>
    block.outcomes.map((outcome) =>
      outcome.ok
        ? {
            outcome: { ...outcome, start: 0, end: 0 },
            itemLine: block.items.subarray(outcome.start, outcome.end).toString('utf8'),
          }
        : { outcome },
    ),
  );
}

async function collect(
  text: string,
  workers: number,
  blockBytes: number,
  pieceBytes = 7,
): Promise<ParsedBlock[]> {
  const bytes = Buffer.from(text);
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += pieceBytes) pieces.push(bytes.subarray(i, i + pieceBytes));
  const blocks: ParsedBlock[] = [];
  for await (const block of parseCorpus(Readable.from(pieces), { prompt: PROMPT, workers, blockBytes }))
    blocks.push(block);
  return blocks;
}

const record = (id: string, text: string): string => JSON.stringify({ id, text });

/** A block cutBlocks yielded, which must be bytes (not a skipped line). */
function asBuffer(block: Buffer | SkippedLine): Buffer {
  if (!Buffer.isBuffer(block))
    throw new Error(`expected a block, got a skipped line of ${block.bytes} bytes`);
  return block;
}

/** Every kind of line end, blank lines, a BOM, bad lines and multi-byte text, without a final newline. */
const TRICKY = [
  `\ufeff${record('a', 'first, after a BOM')}`,
  '',
  `${record('b', 'crlf line')}\r`,
  `${record('c', 'lone CR next')}\r${record('d', 'after the lone CR')}`,
  '   ',
  '{"id": "broken"',
  '[1, 2]',
  record('e', 'ünïcødé ✓ 𝄞 spans bytes'),
  JSON.stringify({ recordId: 'f', modelInput: { messages: [{ role: 'user', content: [{ text: 'hi' }] }] } }),
  '\r',
  record('g', 'last, no newline'),
].join('\n');

describe('parseBlock', () => {
  it('numbers, splits and parses lines exactly as reading them line by line does', async () => {
    const block = parseBlock(Buffer.from(TRICKY), 1, PROMPT);
    expect(flatten([block])).toEqual(await lineByLine(TRICKY));
    expect(block.lines).toBe(countLines(Buffer.from(TRICKY)));
  });

  it('writes each record as its work item line, one after another', () => {
    const block = parseBlock(
      Buffer.from(`${record('x', 'one')}\n\nnot json\n${record('y', 'two')}\n`),
      40,
      PROMPT,
    );
    const [x, bad, y] = block.outcomes;
    expect(x).toMatchObject({ ok: true, line: 40, recordId: 'x', start: 0 });
    expect(bad).toMatchObject({ ok: false, line: 42, problem: { code: 'InvalidJson' } });
    expect(y).toMatchObject({ ok: true, line: 43, recordId: 'y' });
    expect(block.items.toString()).toMatch(
      /^\{"recordId":"x".*"line":40\}\n\{"recordId":"y".*"line":43\}\n$/,
    );
    expect(x?.ok && y?.ok && x.end === y.start && y.end === block.items.length).toBe(true);
  });

  it('drops a BOM on line 1 only', () => {
    const text = `\ufeff${record('a', 'x')}\n`;
    expect(parseBlock(Buffer.from(text), 1, PROMPT).outcomes[0]).toMatchObject({ ok: true });
    expect(parseBlock(Buffer.from(text), 2, PROMPT).outcomes[0]).toMatchObject({
      ok: false,
      problem: { code: 'InvalidJson' },
    });
  });
});

describe('countLines', () => {
  it('counts what parseBlock counts, for any mix of LF, CR and text', () => {
    const alphabet = ['\n', '\r', '\r\n', 'a', '{}', ' '];
    let seed = 7;
    const next = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let round = 0; round < 500; round++) {
      const text = Array.from({ length: next() % 12 }, () => alphabet[next() % alphabet.length]).join('');
      const bytes = Buffer.from(text);
      expect([JSON.stringify(text), countLines(bytes)]).toEqual([
        JSON.stringify(text),
        parseBlock(bytes, 1, PROMPT).lines,
      ]);
    }
  });
});

describe('cutBlocks', () => {
  it('cuts at the first line end from blockBytes on, whatever the chunk sizes, and loses no byte', async () => {
    const text = Array.from({ length: 200 }, (_, i) => record(`r${i}`, 'x'.repeat(i % 37))).join('\n');
    for (const chunkBytes of [13, 1000, text.length]) {
      const pieces = Array.from({ length: Math.ceil(text.length / chunkBytes) }, (_, i) =>
        Buffer.from(text.slice(i * chunkBytes, (i + 1) * chunkBytes)),
      );
      const blocks: Buffer[] = [];
      for await (const block of cutBlocks(Readable.from(pieces), 256)) blocks.push(asBuffer(block));
      expect(Buffer.concat(blocks).toString()).toBe(text);
      expect(blocks.length).toBeGreaterThan(10);
      for (const block of blocks.slice(0, -1)) {
        expect(block[block.length - 1]).toBe(0x0a);
        // At least 256 bytes, and the line end is the first one from byte 256 on (lines are < 100 bytes here).
        expect(block.length).toBeGreaterThanOrEqual(256);
        expect(block.subarray(255, block.length - 1).includes(0x0a)).toBe(false);
      }
    }
  });

  it('keeps a line longer than a block whole', async () => {
    const long = record('long', 'y'.repeat(5000));
    const blocks: Buffer[] = [];
    const text = `${record('a', 'short')}\n${long}\n${record('b', 'short')}\n`;
    for await (const block of cutBlocks(Readable.from([Buffer.from(text)]), 64)) blocks.push(asBuffer(block));
    expect(blocks.map((b) => b.toString())).toEqual([
      `${record('a', 'short')}\n${long}\n`,
      `${record('b', 'short')}\n`,
    ]);
  });
});

describe('parseCorpus', () => {
  const corpus = Array.from({ length: 3000 }, (_, i) =>
    i % 97 === 0 ? `not json ${i}` : i % 89 === 0 ? '' : record(`r${i}`, `question ${i} ✓`),
  ).join('\r\n');

  it('in one thread: the same outcomes as line by line, over many small blocks', async () => {
    const blocks = await collect(TRICKY, 0, 16, 5);
    expect(blocks.length).toBeGreaterThan(3);
    expect(flatten(blocks)).toEqual(await lineByLine(TRICKY));
  });

  it('in worker threads: the same outcomes, in corpus order, as in one thread', async () => {
    const inline = flatten(await collect(corpus, 0, 4096, 1000));
    const pooled = flatten(await collect(corpus, 2, 4096, 1000));
    expect(pooled).toHaveLength(inline.length);
    expect(pooled).toEqual(inline);
    expect(inline).toEqual(await lineByLine(corpus));
  });

  it('parses a block too large for a worker in the main thread, in its place', async () => {
    // Blocks of at least 4.5 MiB: over WORKER_MAX_BLOCK_BYTES, each made of short lines.
    const lines = Array.from({ length: 60_000 }, (_, i) =>
      record(`r${i}`, `question ${i} ${'w'.repeat(80)}`),
    );
    const text = `${lines.join('\n')}\n`;
    const blocks = await collect(text, 1, 4.5 * 1024 * 1024, 64 * 1024);
    expect(blocks.length).toBe(2);
    const outcomes = flatten(blocks).map((o) => o.outcome);
    expect(outcomes.map((o) => [o.line, o.ok && o.recordId])).toEqual(lines.map((_, i) => [i + 1, `r${i}`]));
  });

  it('stops its workers when the reader stops early', async () => {
    const stream = Readable.from([Buffer.from(corpus)]);
    let seen = 0;
    for await (const block of parseCorpus(stream, { prompt: PROMPT, workers: 2, blockBytes: 2048 })) {
      seen += block.outcomes.length;
      if (seen > 100) break;
    }
    // The generator's finally ran (workers terminated): jest would report the open handles otherwise.
    expect(seen).toBeGreaterThan(100);
  });
});

/** Text cut into pieces of `pieceBytes`, as a stream. */
function pieces(bytes: Buffer, pieceBytes: number): Readable {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += pieceBytes) out.push(bytes.subarray(i, i + pieceBytes));
  return Readable.from(out);
}

describe('lines longer than the limit', () => {
  const LIMIT = 1000;
  const long = record('long', 'L'.repeat(5000));
  const longBytes = Buffer.byteLength(long);

  it.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['lone CR', '\r'],
  ])(
    'are skipped while streaming, counted, and reported in their place (%s line ends)',
    async (_name, eol) => {
      const text =
        [record('a', 'before'), long, record('b', 'after'), long].join(eol) + eol + record('c', 'end');
      for (const pieceBytes of [7, 333, 4096, text.length]) {
        const stats = { maxPendingBytes: 0 };
        const yielded: (string | number)[] = [];
        for await (const block of cutBlocks(pieces(Buffer.from(text), pieceBytes), 64, LIMIT, stats)) {
          yielded.push(Buffer.isBuffer(block) ? block.toString() : block.bytes);
        }
        // A line that came within one chunk stays in its block (parseLine rejects it); memory was the chunk's.
        if (pieceBytes < LIMIT) {
          expect(yielded.filter((y) => y === longBytes)).toHaveLength(2);
          // The lines not yet cut off (under a block) and the long line's first LIMIT bytes and one chunk.
          expect(stats.maxPendingBytes).toBeLessThanOrEqual(64 + LIMIT + 1 + pieceBytes);
        }
        const outcomes: LineOutcome[] = [];
        for await (const block of parseCorpus(pieces(Buffer.from(text), pieceBytes), {
          prompt: PROMPT,
          workers: 0,
          blockBytes: 64,
          maxLineBytes: LIMIT,
        })) {
          outcomes.push(...block.outcomes);
        }
        expect(outcomes.map((o) => [o.line, o.ok ? o.recordId : o.problem.code])).toEqual([
          [1, 'a'],
          [2, 'LineTooLong'],
          [3, 'b'],
          [4, 'LineTooLong'],
          [5, 'c'],
        ]);
        const problems = outcomes.filter((o) => !o.ok);
        for (const p of problems) {
          expect(p.ok ? '' : p.problem.message).toMatch(
            new RegExp(`^line ${p.line} is ${longBytes} bytes long`),
          );
        }
      }
    },
  );

  it('are reported in corpus order by the worker pool too', async () => {
    const text = Array.from({ length: 400 }, (_, i) => (i % 50 === 7 ? long : record(`r${i}`, 'x'))).join(
      '\n',
    );
    const run = async (workers: number): Promise<(string | number)[][]> => {
      const out: (string | number)[][] = [];
      for await (const block of parseCorpus(pieces(Buffer.from(text), 100), {
        prompt: PROMPT,
        workers,
        blockBytes: 512,
        maxLineBytes: LIMIT,
      })) {
        for (const o of block.outcomes) out.push([o.line, o.ok ? o.recordId : o.problem.code]);
      }
      return out;
    };
    const inline = await run(0);
    expect(inline.filter(([, what]) => what === 'LineTooLong').map(([line]) => line)).toEqual([
      8, 58, 108, 158, 208, 258, 308, 358,
    ]);
    expect(await run(2)).toEqual(inline);
  });

  it('leave a file of lone-CR lines longer than the limit cut into bounded blocks, every line parsed', async () => {
    const text = Array.from({ length: 300 }, (_, i) => record(`r${i}`, 'x'.repeat(1 + (i % 40)))).join('\r');
    const stats = { maxPendingBytes: 0 };
    const blocks: Buffer[] = [];
    for await (const block of cutBlocks(pieces(Buffer.from(text), 50), 64, LIMIT, stats))
      blocks.push(asBuffer(block));
    expect(Buffer.concat(blocks).toString()).toBe(text);
    expect(blocks.length).toBeGreaterThan(5);
    expect(stats.maxPendingBytes).toBeLessThanOrEqual(64 + LIMIT + 1 + 50);
    const outcomes: LineOutcome[] = [];
    for await (const block of parseCorpus(pieces(Buffer.from(text), 50), {
      prompt: PROMPT,
      workers: 0,
      blockBytes: 64,
      maxLineBytes: LIMIT,
    })) {
      outcomes.push(...block.outcomes);
    }
    expect(outcomes.map((o) => o.ok && o.recordId)).toEqual(Array.from({ length: 300 }, (_, i) => `r${i}`));
  });

  it('keep memory bounded: a 64 MiB line streamed in 64 KiB chunks is never held, and the next line is read', async () => {
    const CHUNK = 64 * 1024;
    const LINE = 64 * 1024 * 1024;
    let generated = 0;
    async function* corpus(): AsyncGenerator<Buffer> {
      yield Buffer.from(`${record('first', 'a')}\n{"id": "huge", "text": "`);
      const filler = Buffer.alloc(CHUNK, 0x61);
      for (; generated < LINE; generated += CHUNK) yield filler;
      yield Buffer.from(`"}\r\n${record('after', 'b')}\n`);
    }
    const stats = { maxPendingBytes: 0 };
    const outcomes: LineOutcome[] = [];
    const blocks = cutBlocks(corpus(), undefined, undefined, stats);
    let largestBlock = 0;
    let nextLine = 1;
    for await (const block of blocks) {
      if (!Buffer.isBuffer(block)) {
        outcomes.push({
          ok: false,
          line: nextLine++,
          problem: { code: 'LineTooLong', message: String(block.bytes) },
        });
        continue;
      }
      largestBlock = Math.max(largestBlock, block.length);
      const parsed = parseBlock(block, nextLine, PROMPT);
      nextLine += parsed.lines;
      outcomes.push(...parsed.outcomes);
    }
    expect(generated).toBe(LINE);
    expect(stats.maxPendingBytes).toBeLessThanOrEqual(BLOCK_BYTES + MAX_LINE_BYTES + 1 + CHUNK);
    expect(largestBlock).toBeLessThan(MAX_LINE_BYTES);
    const hugeBytes = Buffer.byteLength('{"id": "huge", "text": ""}') + LINE;
    expect(outcomes.map((o) => [o.line, o.ok ? o.recordId : o.problem.message])).toEqual([
      [1, 'first'],
      [2, String(hugeBytes)],
      [3, 'after'],
    ]);
  });
});

describe('lines that are not valid UTF-8', () => {
  const bad: [string, number[], string][] = [
    ['C3 28 (a lead byte without its continuation)', [0xc3, 0x28], '0xc3'],
    ['FF (never in UTF-8)', [0xff], '0xff'],
    ['ED A0 80 (a surrogate written as UTF-8, CESU-style)', [0xed, 0xa0, 0x80], '0xed 0xa0 0x80'],
    ['C0 AF (an overlong slash)', [0xc0, 0xaf], '0xc0 0xaf'],
    ['E2 82 (cut short by the line end)', [0xe2, 0x82], '0xe2 0x82'],
    ['F4 90 80 80 (above U+10FFFF)', [0xf4, 0x90, 0x80, 0x80], '0xf4 0x90 0x80 0x80'],
  ];

  it.each(bad)('are InvalidUtf8 with the byte offset in the line: %s', async (_name, bytes, shown) => {
    const head = Buffer.from('{"id": "x", "text": "caf\u00e9 ');
    const line = Buffer.concat([head, Buffer.from(bytes), Buffer.from('"}')]);
    const corpus = Buffer.concat([
      Buffer.from(`${record('before', 'ok ✓')}\r\n`),
      line,
      Buffer.from(`\r${record('after', '𝐀 ok')}\n`),
    ]);
    for (const workers of [0, 1]) {
      const outcomes: LineOutcome[] = [];
      for await (const block of parseCorpus(pieces(corpus, 5), { prompt: PROMPT, workers, blockBytes: 16 })) {
        outcomes.push(...block.outcomes);
      }
      expect(outcomes.map((o) => [o.line, o.ok ? o.recordId : o.problem.code])).toEqual([
        [1, 'before'],
        [2, 'InvalidUtf8'],
        [3, 'after'],
      ]);
      const problem = outcomes[1]?.ok === false ? outcomes[1].problem : undefined;
      expect(problem?.message).toBe(
        `line 2 is not valid UTF-8: at byte offset ${head.length} of the line, ${shown} is no UTF-8 character; save the corpus as UTF-8`,
      );
    }
  });

  it('pass valid multi-byte text untouched (the check costs nothing then)', () => {
    const text = [record('a', 'مرحبا 你好 👩‍👩‍👧 𝐀'), record('b', '\ufffd is a real character too')].join('\n');
    const block = parseBlock(Buffer.from(text), 1, PROMPT);
    expect(block.outcomes.map((o) => o.ok)).toEqual([true, true]);
    expect(block.items.toString()).toContain('\ufffd is a real character too');
  });

  it('firstInvalidUtf8 finds the first byte that starts no UTF-8 sequence, agreeing with isUtf8', () => {
    let seed = 11;
    const next = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    const alphabet = [
      0x41, 0x0a, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xa0, 0xff, 0xc0, 0xf4, 0x90,
    ];
    for (let round = 0; round < 3000; round++) {
      const bytes = Buffer.from(
        Array.from({ length: next() % 9 }, () => alphabet[next() % alphabet.length] as number),
      );
      const at = firstInvalidUtf8(bytes);
      expect([bytes.toString('hex'), at === bytes.length]).toEqual([bytes.toString('hex'), isUtf8(bytes)]);
      expect(isUtf8(bytes.subarray(0, at))).toBe(true);
    }
  });
});
