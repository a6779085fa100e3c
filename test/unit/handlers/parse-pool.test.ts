import { Readable } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import {
  countLines,
  cutBlocks,
  parseBlock,
  parseCorpus,
  type LineOutcome,
  type ParsedBlock,
} from '../../../lambda/shared/parse-pool';
import { cleanLine, parseLine, serializedItem, type PromptSettings } from '../../../lambda/shared/records';
import { readLines } from '../../../lambda/shared/s3-jsonl';
import { batchLineBytes } from '../../../lambda/shared/shard-writer';

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
      for await (const block of cutBlocks(Readable.from(pieces), 256)) blocks.push(block);
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
    for await (const block of cutBlocks(Readable.from([Buffer.from(text)]), 64)) blocks.push(block);
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
    const huge = record('huge', 'z'.repeat(5 * 1024 * 1024));
    const text = `${record('a', 'before')}\n${huge}\n${record('b', 'after')}\n`;
    const outcomes = flatten(await collect(text, 1, 1024, 64 * 1024)).map((o) => o.outcome);
    expect(outcomes.map((o) => [o.line, o.ok ? o.recordId : o.problem.code])).toEqual([
      [1, 'a'],
      [2, 'RecordTooLarge'],
      [3, 'b'],
    ]);
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
