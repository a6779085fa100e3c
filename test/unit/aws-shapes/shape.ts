import { isDeepStrictEqual } from 'node:util';

/**
 * Compares a payload with the documented one by shape: the same keys at every level, the same JSON types, the values
 * that are fixed (status names, detail-type, source) equal, and nothing the documented payload does not have. Every
 * exception is named by path and carries its reason, so a drift shows as a readable list.
 *
 * Paths: `detail.batchJobArn`, `resources[]` (every element of an array), `output.message.content[].text`; the root is
 * `$`. Array elements are compared with the fixture's element at the same index, or its last one (documented arrays
 * are homogeneous); an empty fixture array says nothing about elements.
 */

/** The JSON type of a value. */
export type JsonType = 'object' | 'array' | 'string' | 'number' | 'boolean' | 'null';

/** The JSON type of a value; `undefined` for a value JSON has no type for. */
function jsonTypeOf(value: unknown): JsonType | undefined {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  switch (typeof value) {
    case 'object':
      return 'object';
    case 'string':
      return 'string';
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    default:
      return undefined;
  }
}

/** What a comparison allows, each by path. */
export interface ShapeRules {
  /** Paths whose value must equal the fixture's, not just its type (status names, detail-type, source). */
  readonly fixed?: readonly string[];
  /** Paths the payload may lack although the fixture has them, each with the reason. */
  readonly optional?: Readonly<Record<string, string>>;
  /** Paths the payload may have although the fixture does not, each with the reason. */
  readonly extra?: Readonly<Record<string, string>>;
  /** Paths compared by JSON type only, not inside (bodies whose shape depends on the model). */
  readonly opaque?: Readonly<Record<string, string>>;
}

/** One way a payload differs from the fixture. */
export interface ShapeDifference {
  readonly path: string;
  /** missing: the fixture has it, the payload not; extra: the other way round; type/value: both have it. */
  readonly kind: 'missing' | 'extra' | 'type' | 'value' | 'rule';
  readonly detail: string;
}

function child(path: string, key: string): string {
  return path === '$' ? key : `${path}.${key}`;
}

function describeValue(value: unknown): string {
  const type = jsonTypeOf(value);
  if (type === 'object' || type === 'array' || type === 'null') return type;
  return `${type ?? typeof value} ${JSON.stringify(value)}`;
}

/** The paths (in the rule notation) a JSON value has, the root excluded. */
function pathsOf(value: unknown, path = '$', into = new Set<string>()): Set<string> {
  if (Array.isArray(value)) {
    const at = `${path}[]`;
    into.add(at);
    for (const element of value) pathsOf(element, at, into);
  } else if (jsonTypeOf(value) === 'object') {
    for (const [key, inner] of Object.entries(value as Record<string, unknown>)) {
      const at = child(path, key);
      into.add(at);
      pathsOf(inner, at, into);
    }
  }
  return into;
}

/**
 * How `actual` differs from `fixture` under `rules` (empty when it has the fixture's shape). A rule naming a path the
 * fixture does not have (fixed, optional, opaque) or has (extra) is reported too, so stale exceptions do not linger.
 */
export function shapeDifferences(
  actual: unknown,
  fixture: unknown,
  rules: ShapeRules = {},
): ShapeDifference[] {
  const differences: ShapeDifference[] = [];
  const fixed = new Set(rules.fixed ?? []);
  const optional = rules.optional ?? {};
  const extra = rules.extra ?? {};
  const opaque = rules.opaque ?? {};
  const fixturePaths = pathsOf(fixture);
  const ruleProblems: [string, string][] = [
    ...[...fixed].map((p): [string, string] => [p, 'fixed']),
    ...Object.keys(optional).map((p): [string, string] => [p, 'optional']),
    ...Object.keys(opaque).map((p): [string, string] => [p, 'opaque']),
  ];
  for (const [path, rule] of ruleProblems) {
    if (path !== '$' && !fixturePaths.has(path)) {
      differences.push({
        path,
        kind: 'rule',
        detail: `the ${rule} rule names a path the fixture does not have`,
      });
    }
  }
  for (const path of Object.keys(extra)) {
    if (fixturePaths.has(path)) {
      differences.push({ path, kind: 'rule', detail: 'the extra rule names a path the fixture has' });
    }
  }

  const visit = (a: unknown, f: unknown, path: string): void => {
    const fType = jsonTypeOf(f);
    const aType = jsonTypeOf(a);
    if (aType !== fType) {
      differences.push({
        path,
        kind: 'type',
        detail: `fixture: ${describeValue(f)}; actual: ${describeValue(a)}`,
      });
      return;
    }
    if (fixed.has(path) && !isDeepStrictEqual(a, f)) {
      differences.push({
        path,
        kind: 'value',
        detail: `fixture: ${JSON.stringify(f)}; actual: ${JSON.stringify(a)}`,
      });
    }
    if (path in opaque) return;
    if (fType === 'array') {
      const fArray = f as unknown[];
      const aArray = a as unknown[];
      if (fArray.length === 0) return;
      aArray.forEach((element, i) => visit(element, fArray[Math.min(i, fArray.length - 1)], `${path}[]`));
      return;
    }
    if (fType !== 'object') return;
    const fObject = f as Record<string, unknown>;
    const aObject = a as Record<string, unknown>;
    for (const [key, fValue] of Object.entries(fObject)) {
      const at = child(path, key);
      if (!(key in aObject)) {
        if (!(at in optional)) {
          differences.push({ path: at, kind: 'missing', detail: `fixture: ${describeValue(fValue)}` });
        }
        continue;
      }
      visit(aObject[key], fValue, at);
    }
    for (const [key, aValue] of Object.entries(aObject)) {
      const at = child(path, key);
      if (key in fObject || at in extra) continue;
      differences.push({ path: at, kind: 'extra', detail: `actual: ${describeValue(aValue)}` });
    }
  };
  visit(actual, fixture, '$');
  return differences;
}

/** The differences as a readable list, one per line, headed by what was compared. */
function formatShapeDifferences(label: string, differences: readonly ShapeDifference[]): string {
  const width = Math.max(...differences.map((d) => d.path.length), 4);
  const lines = differences.map((d) => `  ${d.kind.padEnd(7)} ${d.path.padEnd(width)}  ${d.detail}`);
  return `${label}: ${differences.length} shape difference(s) from the documented payload\n${lines.join('\n')}`;
}

/**
 * Throws a readable list of differences when `actual` does not have `fixture`'s shape under `rules`.
 * @param label what is compared with which fixture, for the message
 */
export function expectSameShape(
  actual: unknown,
  fixture: unknown,
  label: string,
  rules: ShapeRules = {},
): void {
  const differences = shapeDifferences(actual, fixture, rules);
  if (differences.length > 0) throw new Error(formatShapeDifferences(label, differences));
}
