import { describe, expect, it } from '@jest/globals';
import { cutItemLine } from '../../../../lambda/batch/shard-writer';

/** An items-file line as Plan writes it (lambda/plan/parse-pool.ts ItemEncoder). */
function itemLine(modelInput: unknown, tail: string): Buffer {
  return Buffer.from(
    `{"recordId":"r-1","format":"converse","modelInput":${JSON.stringify(modelInput)}${tail}}`,
  );
}

describe('cutItemLine', () => {
  const input = { messages: [{ role: 'user', content: [{ text: 'hi' }] }] };

  it('cuts the modelInput out of a line with a line number only', () => {
    const cut = cutItemLine(itemLine(input, ',"line":7'));
    expect(cut?.format).toBe('converse');
    expect(JSON.parse(cut!.modelInput.toString())).toEqual(input);
    expect(cut?.head.toString()).toBe('{"recordId":"r-1"');
  });

  it('cuts the modelInput out of a line naming its source, whatever the key holds', () => {
    for (const source of [
      'corpora/a.jsonl',
      'données/été ✓.jsonl',
      'odd/,"source":"x".jsonl',
      'q\\"uote.jsonl',
    ]) {
      const cut = cutItemLine(itemLine(input, `,"source":${JSON.stringify(source)},"line":12`));
      expect(JSON.parse(cut!.modelInput.toString())).toEqual(input);
    }
  });

  it('keeps a modelInput whose own fields look like the source field', () => {
    const tricky = {
      messages: [{ role: 'user', content: [{ text: ',"source":"x","line":1' }] }],
      source: 'y',
    };
    for (const tail of [',"line":3', ',"source":"k.jsonl","line":3']) {
      const cut = cutItemLine(itemLine(tricky, tail));
      expect(JSON.parse(cut!.modelInput.toString())).toEqual(tricky);
    }
  });
});
