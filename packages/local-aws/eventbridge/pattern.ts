/**
 * EventBridge event pattern matching, written against the documented content-filtering rules and the
 * behaviour of AWS's own matcher (aws/event-ruler, `rulesForJSONEvent`):
 *
 * - fields AND together, the values of a field's array OR together; a pattern field matches when ANY value
 *   of the event field (arrays in the event are flattened, nested arrays too) matches ANY of its conditions;
 * - field paths are joined with dots on both sides, so `{"a.b": [..]}` matches `{"a": {"b": ..}}`;
 * - array consistency: two pattern fields can only be satisfied by values that live in the same element of
 *   any array they share (`{"employees": {"first": ["Anna"], "last": ["Jones"]}}` does not match Anna Smith
 *   plus Peter Jones);
 * - conditions only look at leaves (strings, numbers, booleans, null): `exists` is about leaves, so an object
 *   or an empty array at the path counts as absent;
 * - operators: exact values, `prefix`/`suffix` (with `equals-ignore-case`), `equals-ignore-case`, `wildcard`
 *   (`*`, `\*`, `\\`), `anything-but` (value, list, `prefix`, `suffix`, `equals-ignore-case`, `wildcard`),
 *   `numeric`, `cidr` (IPv4 and IPv6), `exists`, and `$or`.
 *
 * Validation throws {@link InvalidEventPatternError} with the service's wording where it is known.
 */
import { isIPv6 } from 'node:net';
import { InvalidEventError, InvalidEventPatternError } from './errors';

/** A JSON leaf value: what conditions compare against. */
export type JsonScalar = string | number | boolean | null;

/** The operator names a match expression may use (also the names `$or` branches may not start with). */
export const PATTERN_OPERATORS: readonly string[] = [
  'prefix',
  'suffix',
  'equals-ignore-case',
  'wildcard',
  'anything-but',
  'numeric',
  'cidr',
  'exists',
];

/** Above this many wildcard characters in one value the service answers "Rule is too complex". */
const MAX_WILDCARDS = 5;
/** Guard against `$or` combinations exploding (the service refuses such rules as too complex). */
const MAX_ALTERNATIVES = 10_000;

interface ArrayStep {
  readonly array: number;
  readonly index: number;
}

interface Leaf {
  readonly value: JsonScalar;
  /** The arrays (by id) and element indexes this leaf sits in, outermost first. */
  readonly trail: readonly ArrayStep[];
}

/** An event flattened to dot-joined leaf paths; build one with {@link flattenEvent} to match many patterns. */
export interface FlattenedEvent {
  readonly leaves: ReadonlyMap<string, readonly Leaf[]>;
}

type Condition =
  | { readonly kind: 'exact'; readonly value: JsonScalar }
  | { readonly kind: 'prefix'; readonly value: string; readonly ignoreCase: boolean }
  | { readonly kind: 'suffix'; readonly value: string; readonly ignoreCase: boolean }
  | { readonly kind: 'equals-ignore-case'; readonly value: string }
  | { readonly kind: 'wildcard'; readonly segments: readonly string[] }
  | { readonly kind: 'numeric'; readonly range: NumericRange }
  | { readonly kind: 'cidr'; readonly range: IpRange }
  | { readonly kind: 'exists'; readonly value: boolean }
  | { readonly kind: 'anything-but'; readonly excluded: (value: JsonScalar) => boolean };

interface NumericRange {
  readonly lower?: { readonly value: number; readonly inclusive: boolean };
  readonly upper?: { readonly value: number; readonly inclusive: boolean };
}

interface IpRange {
  readonly version: 4 | 6;
  readonly first: bigint;
  readonly last: bigint;
}

interface FieldCondition {
  readonly path: string;
  readonly conditions: readonly Condition[];
}

/** One way to satisfy the pattern: every field must match (a pattern has several only through `$or`). */
type Alternative = readonly FieldCondition[];

/** A validated, compiled event pattern; compile once, match many events. */
export interface CompiledEventPattern {
  /** The pattern as given (object, or the JSON text). */
  readonly source: unknown;
  /**
   * Whether the event matches.
   * @param event the event (object or JSON text), or an already {@link flattenEvent flattened} event
   * @throws InvalidEventError when the event is not a JSON object
   */
  matches(event: unknown): boolean;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function fail(reason: string): never {
  throw new InvalidEventPatternError(reason);
}

// ---------------------------------------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------------------------------------

function parsePattern(pattern: unknown): Record<string, unknown> {
  let value = pattern;
  if (typeof pattern === 'string') {
    try {
      value = JSON.parse(pattern) as unknown;
    } catch (err) {
      fail(`Filter is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (!isPlainObject(value)) fail('Filter is not an object');
  return value;
}

/** `$or` is the OR primitive only in this shape (event-ruler); otherwise it is an ordinary field name. */
function isOrBranches(value: unknown): value is Record<string, unknown>[] {
  return (
    Array.isArray(value) &&
    value.length >= 2 &&
    value.every(
      (branch) => isPlainObject(branch) && !Object.keys(branch).some((k) => PATTERN_OPERATORS.includes(k)),
    )
  );
}

function cross(left: Alternative[], right: Alternative[]): Alternative[] {
  if (left.length * right.length > MAX_ALTERNATIVES) {
    fail('Rule is too complex - try using fewer $or branches or fewer values');
  }
  const out: Alternative[] = [];
  for (const a of left) for (const b of right) out.push([...a, ...b]);
  return out;
}

function compileObject(object: Record<string, unknown>, prefix: string): Alternative[] {
  let alternatives: Alternative[] = [[]];
  for (const [key, value] of Object.entries(object)) {
    if (key === '$or' && isOrBranches(value)) {
      const branches = value.flatMap((branch) => compileObject(branch, prefix));
      alternatives = cross(alternatives, branches);
      continue;
    }
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (isPlainObject(value)) {
      alternatives = cross(alternatives, compileObject(value, path));
    } else if (Array.isArray(value)) {
      if (value.length === 0) fail('Empty arrays are not allowed');
      const field: FieldCondition = { path, conditions: value.map((v) => compileCondition(v)) };
      alternatives = alternatives.map((alt) => [...alt, field]);
    } else {
      fail(`"${key}" must be an object or an array`);
    }
  }
  return alternatives;
}

function compileCondition(value: unknown): Condition {
  if (
    value === null ||
    typeof value === 'string' ||
    typeof value === 'boolean' ||
    typeof value === 'number'
  ) {
    return { kind: 'exact', value };
  }
  if (!isPlainObject(value)) fail('Match value must be String, number, true, false, or null');
  const keys = Object.keys(value);
  if (keys.length !== 1) fail('Only one key allowed in match expression');
  const operator = keys[0] as string;
  const operand = value[operator];
  switch (operator) {
    case 'prefix':
    case 'suffix':
      return compilePrefixSuffix(operator, operand);
    case 'equals-ignore-case':
      if (typeof operand !== 'string') fail('equals-ignore-case match pattern must be a string');
      return { kind: 'equals-ignore-case', value: operand };
    case 'wildcard':
      if (typeof operand !== 'string') fail('wildcard match pattern must be a string');
      return { kind: 'wildcard', segments: parseWildcard(operand) };
    case 'exists':
      if (typeof operand !== 'boolean') fail('exists match pattern must be either true or false.');
      return { kind: 'exists', value: operand };
    case 'numeric':
      return { kind: 'numeric', range: parseNumeric(operand) };
    case 'cidr':
      // The service words a non-string CIDR like a prefix problem.
      if (typeof operand !== 'string') fail('prefix match pattern must be a string');
      return { kind: 'cidr', range: parseCidr(operand) };
    case 'anything-but':
      return { kind: 'anything-but', excluded: compileAnythingBut(operand) };
    default:
      return fail(`Unrecognized match type ${operator}`);
  }
}

function compilePrefixSuffix(operator: 'prefix' | 'suffix', operand: unknown): Condition {
  if (typeof operand === 'string') return { kind: operator, value: operand, ignoreCase: false };
  if (isPlainObject(operand)) {
    const keys = Object.keys(operand);
    if (keys.length !== 1) fail('Only one key allowed in match expression');
    const inner = keys[0] as string;
    if (inner !== 'equals-ignore-case') fail(`Unsupported ${operator} pattern: ${inner}`);
    const text = operand[inner];
    if (typeof text !== 'string') fail('equals-ignore-case match pattern must be a string');
    return { kind: operator, value: text, ignoreCase: true };
  }
  return fail(`${operator} match pattern must be a string`);
}

function stringList(operand: unknown, onBadMember: () => never): string[] {
  if (typeof operand === 'string') return [operand];
  if (!Array.isArray(operand)) return onBadMember();
  if (operand.length === 0) fail('Empty arrays are not allowed');
  return operand.map((member) => (typeof member === 'string' ? member : onBadMember()));
}

function compileAnythingBut(operand: unknown): (value: JsonScalar) => boolean {
  if (typeof operand === 'string' || typeof operand === 'number') {
    return (value) => sameScalar(operand, value);
  }
  if (Array.isArray(operand)) {
    if (operand.length === 0) fail('Empty arrays are not allowed');
    const members = operand.map((member) =>
      typeof member === 'string' || typeof member === 'number'
        ? member
        : fail('Inside anything but list, start|null|boolean is not supported.'),
    );
    return (value) => members.some((member) => sameScalar(member, value));
  }
  if (!isPlainObject(operand)) fail('Value of anything-but must be an array or single string/number value.');
  const keys = Object.keys(operand);
  if (keys.length !== 1) fail('Only one key allowed in match expression');
  const inner = keys[0] as string;
  const innerOperand = operand[inner];
  switch (inner) {
    case 'prefix':
    case 'suffix': {
      if (isPlainObject(innerOperand)) {
        fail('Value of anything-but must be an array or single string/number value.');
      }
      const list = stringList(innerOperand, () => fail('prefix/suffix match pattern must be a string'));
      if (list.some((item) => item === '')) fail('Null prefix/suffix not allowed');
      return inner === 'prefix'
        ? (value) => typeof value === 'string' && list.some((p) => value.startsWith(p))
        : (value) => typeof value === 'string' && list.some((s) => value.endsWith(s));
    }
    case 'equals-ignore-case': {
      const list = stringList(innerOperand, () =>
        fail('Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported.'),
      );
      return (value) => typeof value === 'string' && list.some((item) => equalsIgnoreCase(item, value));
    }
    case 'wildcard': {
      const list = stringList(innerOperand, () => fail('wildcard match pattern must be a string'));
      const patterns = list.map((item) => parseWildcard(item));
      return (value) =>
        typeof value === 'string' && patterns.some((segments) => wildcardMatches(segments, value));
    }
    default:
      return fail(`Unsupported anything-but pattern: ${inner}`);
  }
}

const NUMERIC_OPERATORS = ['<', '<=', '=', '>', '>='];

function parseNumeric(operand: unknown): NumericRange {
  if (!Array.isArray(operand)) fail('Value of numeric must be an array.');
  if (operand.length === 0) fail('Invalid member in numeric match: ]');
  const [op1, n1, op2, n2] = operand as unknown[];
  if (typeof op1 !== 'string') fail(`Invalid member in numeric match: ${describe(op1)}`);
  if (!NUMERIC_OPERATORS.includes(op1)) fail(`Unrecognized numeric range operator: ${op1}`);
  if (typeof n1 !== 'number') fail(`Value of ${op1 === '=' ? 'equals' : op1} must be numeric`);
  if (operand.length === 2) {
    switch (op1) {
      case '=':
        return { lower: { value: n1, inclusive: true }, upper: { value: n1, inclusive: true } };
      case '<':
      case '<=':
        return { upper: { value: n1, inclusive: op1 === '<=' } };
      default:
        return { lower: { value: n1, inclusive: op1 === '>=' } };
    }
  }
  if (op1 !== '>' && op1 !== '>=') fail('Too many elements in numeric expression');
  if (typeof op2 !== 'string') fail(`Bad value in numeric range: ${describe(op2)}`);
  if (op2 !== '<' && op2 !== '<=') fail(`Bad numeric range operator: ${op2}`);
  if (typeof n2 !== 'number') fail(`Value of ${op2} must be numeric`);
  if (n2 <= n1) fail('Bottom must be less than top');
  if (operand.length > 4) fail('Too many terms in numeric range expression');
  return { lower: { value: n1, inclusive: op1 === '>=' }, upper: { value: n2, inclusive: op2 === '<=' } };
}

/**
 * Splits a wildcard value into its literal segments (the text between unescaped `*`), resolving the two
 * escapes the service knows: `\*` (a literal star) and `\\` (a literal backslash).
 */
function parseWildcard(text: string): string[] {
  const segments: string[] = [];
  let current = '';
  let previousWasStar = false;
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i] as string;
    if (char === '\\') {
      const next = text[i + 1];
      if (next !== '*' && next !== '\\') fail(`Invalid escape character at pos ${i}`);
      current += next;
      i += 1;
      previousWasStar = false;
    } else if (char === '*') {
      if (previousWasStar) fail(`Consecutive wildcard characters at pos ${i}`);
      segments.push(current);
      current = '';
      previousWasStar = true;
    } else {
      current += char;
      previousWasStar = false;
    }
  }
  segments.push(current);
  if (segments.length - 1 > MAX_WILDCARDS) {
    fail(
      'Rule is too complex - try using fewer wildcard characters or fewer repeating character sequences after a wildcard character',
    );
  }
  return segments;
}

function parseIpv4(text: string): bigint | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!match) return undefined;
  let value = 0n;
  for (const part of match.slice(1)) {
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = (value << 8n) | BigInt(octet);
  }
  return value;
}

function parseIpv6(text: string): bigint | undefined {
  if (text.includes('%') || !isIPv6(text)) return undefined;
  let body = text;
  const embedded: string[] = [];
  const lastColon = body.lastIndexOf(':');
  const tail = body.slice(lastColon + 1);
  if (tail.includes('.')) {
    // An embedded IPv4 address (e.g. ::ffff:10.0.0.1) stands for the last two hextets.
    const v4 = parseIpv4(tail);
    if (v4 === undefined) return undefined;
    embedded.push((v4 >> 16n).toString(16), (v4 & 0xffffn).toString(16));
    body = body.slice(0, lastColon + 1);
    if (!body.endsWith('::')) body = body.slice(0, -1);
  }
  const halves = body.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - rest.length - embedded.length;
  const groups =
    halves.length === 2
      ? [...head, ...Array<string>(Math.max(missing, 0)).fill('0'), ...rest, ...embedded]
      : [...head, ...embedded];
  if (groups.length !== 8) return undefined;
  return groups.reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n);
}

function parseIp(text: string): { version: 4 | 6; value: bigint } | undefined {
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return { version: 4, value: v4 };
  const v6 = parseIpv6(text);
  return v6 === undefined ? undefined : { version: 6, value: v6 };
}

function parseCidr(text: string): IpRange {
  const parts = text.split('/');
  if (parts.length !== 2) fail("Malformed CIDR, one '/' required");
  const [address = '', maskText = ''] = parts;
  if (!/^\d+$/.test(maskText)) fail('Malformed CIDR, mask bits must be an integer');
  const ip = parseIp(address);
  if (!ip) fail(`Nonstandard IP address: ${address}`);
  const bits = ip.version === 4 ? 32 : 128;
  const mask = Number(maskText);
  if (mask > bits) fail(`Malformed CIDR, mask bits must be between 0 and ${bits}`);
  const hostBits = BigInt(bits - mask);
  const first = (ip.value >> hostBits) << hostBits;
  const last = first | ((1n << hostBits) - 1n);
  return { version: ip.version, first, last };
}

// ---------------------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------------------

function sameScalar(a: JsonScalar, b: JsonScalar): boolean {
  // Numbers compare by value: the service treats 300 and 300.0 as equal.
  return a === b && typeof a === typeof b;
}

function equalsIgnoreCase(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase() || a.toUpperCase() === b.toUpperCase();
}

function wildcardMatches(segments: readonly string[], value: string): boolean {
  if (segments.length === 1) return value === segments[0];
  const first = segments[0] as string;
  const last = segments[segments.length - 1] as string;
  if (value.length < first.length + last.length) return false;
  if (!value.startsWith(first) || !value.endsWith(last)) return false;
  // With `*` as the only meta-character, taking each middle segment at its leftmost place is optimal.
  let position = first.length;
  const end = value.length - last.length;
  for (let i = 1; i < segments.length - 1; i += 1) {
    const segment = segments[i] as string;
    const found = value.indexOf(segment, position);
    if (found === -1 || found + segment.length > end) return false;
    position = found + segment.length;
  }
  return true;
}

function inRange(range: NumericRange, value: number): boolean {
  const { lower, upper } = range;
  if (lower && (lower.inclusive ? value < lower.value : value <= lower.value)) return false;
  if (upper && (upper.inclusive ? value > upper.value : value >= upper.value)) return false;
  return true;
}

function matchesLeaf(condition: Condition, value: JsonScalar): boolean {
  switch (condition.kind) {
    case 'exact':
      return sameScalar(condition.value, value);
    case 'prefix':
      if (typeof value !== 'string') return false;
      return condition.ignoreCase
        ? value.toLowerCase().startsWith(condition.value.toLowerCase())
        : value.startsWith(condition.value);
    case 'suffix':
      if (typeof value !== 'string') return false;
      return condition.ignoreCase
        ? value.toLowerCase().endsWith(condition.value.toLowerCase())
        : value.endsWith(condition.value);
    case 'equals-ignore-case':
      return typeof value === 'string' && equalsIgnoreCase(condition.value, value);
    case 'wildcard':
      return typeof value === 'string' && wildcardMatches(condition.segments, value);
    case 'numeric':
      return typeof value === 'number' && Number.isFinite(value) && inRange(condition.range, value);
    case 'cidr': {
      if (typeof value !== 'string') return false;
      const ip = parseIp(value);
      return (
        ip !== undefined &&
        ip.version === condition.range.version &&
        ip.value >= condition.range.first &&
        ip.value <= condition.range.last
      );
    }
    case 'exists':
      return condition.value;
    case 'anything-but':
      return !condition.excluded(value);
  }
}

/**
 * Flattens an event into dot-joined leaf paths, remembering for every leaf which array elements it sits in
 * (what array-consistent matching needs). Objects and arrays with nothing inside produce no leaves.
 * @param event the event: a JSON object or its JSON text
 * @throws InvalidEventError when the event is not a JSON object
 */
export function flattenEvent(event: unknown): FlattenedEvent {
  let root = event;
  if (typeof event === 'string') {
    try {
      root = JSON.parse(event) as unknown;
    } catch (err) {
      throw new InvalidEventError(`The event is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (!isPlainObject(root)) throw new InvalidEventError('The event must be a JSON object.');
  const leaves = new Map<string, Leaf[]>();
  let arrayIds = 0;
  const visit = (node: unknown, path: string, trail: readonly ArrayStep[]): void => {
    if (Array.isArray(node)) {
      arrayIds += 1;
      const array = arrayIds;
      node.forEach((element, index) => visit(element, path, [...trail, { array, index }]));
    } else if (isPlainObject(node)) {
      for (const [key, child] of Object.entries(node))
        visit(child, path === '' ? key : `${path}.${key}`, trail);
    } else if (
      node === null ||
      typeof node === 'string' ||
      typeof node === 'number' ||
      typeof node === 'boolean'
    ) {
      const list = leaves.get(path);
      if (list) list.push({ value: node, trail });
      else leaves.set(path, [{ value: node, trail }]);
    }
  };
  visit(root, '', []);
  return { leaves };
}

function isFlattened(value: unknown): value is FlattenedEvent {
  return isPlainObject(value) && value.leaves instanceof Map && Object.keys(value).length === 1;
}

function compatible(a: Leaf, b: Leaf): boolean {
  for (const stepA of a.trail) {
    for (const stepB of b.trail) {
      if (stepA.array === stepB.array && stepA.index !== stepB.index) return false;
    }
  }
  return true;
}

function chooseConsistent(candidates: readonly (readonly Leaf[])[], index: number, chosen: Leaf[]): boolean {
  if (index === candidates.length) return true;
  for (const leaf of candidates[index] as readonly Leaf[]) {
    if (chosen.every((other) => compatible(other, leaf))) {
      chosen.push(leaf);
      if (chooseConsistent(candidates, index + 1, chosen)) return true;
      chosen.pop();
    }
  }
  return false;
}

function matchesAlternative(alternative: Alternative, event: FlattenedEvent): boolean {
  const constrained: (readonly Leaf[])[] = [];
  for (const field of alternative) {
    const leaves = event.leaves.get(field.path);
    if (!leaves || leaves.length === 0) {
      if (field.conditions.some((c) => c.kind === 'exists' && !c.value)) continue;
      return false;
    }
    const candidates = leaves.filter((leaf) => field.conditions.some((c) => matchesLeaf(c, leaf.value)));
    if (candidates.length === 0) return false;
    // A leaf outside every array agrees with any other choice: this field then constrains nothing.
    if (candidates.some((leaf) => leaf.trail.length === 0)) continue;
    constrained.push(candidates);
  }
  constrained.sort((a, b) => a.length - b.length);
  return chooseConsistent(constrained, 0, []);
}

/**
 * Validates and compiles an event pattern.
 * @param pattern the pattern: an object (as in a CloudFormation template) or its JSON text
 * @throws InvalidEventPatternError when the pattern is malformed
 */
export function compilePattern(pattern: unknown): CompiledEventPattern {
  const alternatives = compileObject(parsePattern(pattern), '');
  return {
    source: pattern,
    matches(event: unknown): boolean {
      const flat = isFlattened(event) ? event : flattenEvent(event);
      return alternatives.some((alternative) => matchesAlternative(alternative, flat));
    },
  };
}

/**
 * Checks an event pattern the way PutRule does.
 * @param pattern the pattern: an object or its JSON text
 * @throws InvalidEventPatternError with the reason when the pattern is malformed
 */
export function validatePattern(pattern: unknown): void {
  compilePattern(pattern);
}

/**
 * Whether an event matches an event pattern (what TestEventPattern answers).
 * @param pattern the pattern: an object or its JSON text
 * @param event the event: an object or its JSON text
 * @throws InvalidEventPatternError when the pattern is malformed
 * @throws InvalidEventError when the event is not a JSON object
 */
export function matchesPattern(pattern: unknown, event: unknown): boolean {
  return compilePattern(pattern).matches(event);
}
