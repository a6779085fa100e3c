import { describe, expect, it } from '@jest/globals';
import { expectSameShape, shapeDifferences } from './shape';

const documented = {
  source: 'aws.bedrock',
  resources: ['arn:a'],
  detail: { status: 'Completed', count: 2, nested: { flag: true }, body: { any: 'thing' }, gone: null },
  blocks: [{ text: 'hi' }],
};

function same(): typeof documented {
  return structuredClone(documented);
}

describe('shapeDifferences', () => {
  it('finds nothing when keys, types and fixed values agree (other values may differ)', () => {
    const actual = same();
    actual.resources = ['arn:b', 'arn:c'];
    actual.detail.count = 99;
    actual.blocks = [{ text: 'one' }, { text: 'two' }];
    expect(shapeDifferences(actual, documented, { fixed: ['source', 'detail.status'] })).toEqual([]);
  });

  it('reports a missing key, an extra key, a changed type and a changed fixed value, each by path', () => {
    const actual = same() as Record<string, unknown> & typeof documented;
    delete (actual.detail as Partial<typeof documented.detail>).nested;
    (actual.detail as Record<string, unknown>).surprise = 1;
    (actual.detail as Record<string, unknown>).count = '2';
    actual.source = 'aws.bedrok';
    expect(shapeDifferences(actual, documented, { fixed: ['source'] })).toEqual([
      { path: 'source', kind: 'value', detail: 'fixture: "aws.bedrock"; actual: "aws.bedrok"' },
      { path: 'detail.count', kind: 'type', detail: 'fixture: number 2; actual: string "2"' },
      { path: 'detail.nested', kind: 'missing', detail: 'fixture: object' },
      { path: 'detail.surprise', kind: 'extra', detail: 'actual: number 1' },
    ]);
  });

  it('checks every array element against the documented element', () => {
    const actual = same() as unknown as { blocks: unknown[]; resources: unknown[] };
    actual.blocks = [{ text: 'ok' }, { image: {} }];
    actual.resources = ['arn:ok', 7];
    expect(shapeDifferences(actual, documented).map((d) => `${d.kind} ${d.path}`)).toEqual([
      'type resources[]',
      'missing blocks[].text',
      'extra blocks[].image',
    ]);
  });

  it('tells null from an object and an array from an object', () => {
    const actual = same() as unknown as { detail: Record<string, unknown> };
    actual.detail.gone = {};
    actual.detail.nested = [];
    expect(shapeDifferences(actual, documented).map((d) => `${d.kind} ${d.path}: ${d.detail}`)).toEqual([
      'type detail.nested: fixture: object; actual: array',
      'type detail.gone: fixture: null; actual: object',
    ]);
  });

  it('lets documented exceptions through: optional, extra and opaque paths', () => {
    const actual = same() as unknown as { detail: Record<string, unknown> };
    delete actual.detail.gone;
    actual.detail.localOnly = 'x';
    actual.detail.body = { anything: ['else'] };
    expect(
      shapeDifferences(actual, documented, {
        optional: { 'detail.gone': 'absent when ...' },
        extra: { 'detail.localOnly': 'the simulator adds ...' },
        opaque: { 'detail.body': 'model-specific' },
      }),
    ).toEqual([]);
    actual.detail.body = 'not an object';
    expect(
      shapeDifferences(actual, documented, {
        optional: { 'detail.gone': 'absent when ...' },
        extra: { 'detail.localOnly': 'the simulator adds ...' },
        opaque: { 'detail.body': 'model-specific' },
      }).map((d) => `${d.kind} ${d.path}`),
    ).toEqual(['type detail.body']);
  });

  it('reports a rule that names a path the fixture does not have (or, for extra, has)', () => {
    expect(
      shapeDifferences(same(), documented, {
        fixed: ['detail.stauts'],
        optional: { 'detail.nope': 'why' },
        extra: { 'detail.count': 'why' },
      }).map((d) => `${d.kind} ${d.path}`),
    ).toEqual(['rule detail.stauts', 'rule detail.nope', 'rule detail.count']);
  });
});

describe('expectSameShape', () => {
  it('throws a readable list naming what was compared', () => {
    const actual = same() as unknown as { detail: Record<string, unknown> };
    delete actual.detail.count;
    expect(() => expectSameShape(actual, documented, 'the thing vs thing.json')).toThrow(
      'the thing vs thing.json: 1 shape difference(s) from the documented payload\n' +
        '  missing detail.count  fixture: number 2',
    );
    expect(() => expectSameShape(same(), documented, 'same')).not.toThrow();
  });
});
