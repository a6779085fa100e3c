import { hash } from 'node:crypto';
import type { RecordFormat, WorkItem } from './contracts';
import { FAMILY_FORMATS, type ModelFamily } from './model-catalog';

/**
 * Turning corpus lines into records: pure functions, no I/O, shared by Plan and the tests.
 *
 * Accepted lines:
 * - `{"recordId": "r1", "modelInput": {...}}`: modelInput is a Converse request body (`messages`, `system`,
 *   `inferenceConfig`, ...) or the native InvokeModel body of the configured model's family (model-catalog.ts);
 * - `{"modelInput": {...}}`: the recordId is derived from the content (deterministic);
 * - `{"id": "r1", "text": "..."}`: a plain line turned into a Converse request by the run's prompt template.
 */

/** How plain `{id, text}` lines become requests. */
export interface PromptSettings {
  /** User message template with `{{text}}`. */
  template: string;
  /** Optional system prompt. */
  system?: string;
  /** maxTokens for templated requests. */
  maxTokens: number;
}

/** Why a line was rejected: a code and a message a person can act on. */
export interface LineProblem {
  code: string;
  message: string;
  recordId?: string;
}

/** The outcome of parsing one line. */
export type ParsedLine =
  { ok: true; item: WorkItem; contentHash: string; bytes: number } | { ok: false; problem: LineProblem };

/**
 * The largest record (serialized work item) converse mode accepts: the Map passes records through Step Functions, whose
 * payload limit is 256 KiB per child input.
 */
export const MAX_ITEM_BYTES = 200 * 1024;

/**
 * The longest corpus line Plan reads, in UTF-8 bytes without its line end: 1 MiB. Longer lines are skipped while the
 * corpus streams (never held whole) and rejected as `LineTooLong`. Five times {@link MAX_ITEM_BYTES}, so a line that
 * fails for its size still gets RecordTooLarge's reason unless it is far beyond any record: a `\uXXXX` escape takes
 * 6 bytes in the line for a character of 1 to 3 in the record, and whitespace between tokens is dropped.
 */
export const MAX_LINE_BYTES = 1024 * 1024;

/**
 * The deepest a line may nest objects and arrays, its own object counting as level 1: 64. Bedrock documents no limit
 * (nor does Step Functions), but a Converse request needs about 8 levels down to a tool's JSON document
 * (modelInput.messages[].content[].toolResult.content[].json), which leaves more than 50 for the document itself;
 * common JSON parsers refuse much less than 5,000 (serde_json stops at 128), and every recursive walk of a record
 * (the canonical JSON, JSON.stringify, zod, the Step Functions runtime) stays far from its stack limit. A deeper line
 * is rejected as `NestingTooDeep` before anything recursive touches it.
 */
export const MAX_NESTING_DEPTH = 64;

/** recordIds are echoed in file names, SQS messages and Bedrock batch files: keep them printable and bounded. */
const RECORD_ID_PATTERN = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/;

/** A stable JSON text: object keys sorted, so equal content hashes equally whatever the key order. */
export function canonicalJson(value: unknown): string {
  // Plan hashes every record with it: the common case (plain JSON data, as JSON.parse makes it) is a copy of the
  // objects whose keys are out of order, leaves shared, serialized by the native JSON.stringify (about four times
  // faster than concatenating in JS); anything else takes the general walk.
  const sorted = sortedData(value);
  return sorted === NOT_PLAIN ? canonicalWalk(value) : (JSON.stringify(sorted) as string);
}

/** Returned by sortedData for a value JSON.stringify would not write as canonicalWalk does. */
const NOT_PLAIN: unique symbol = Symbol('not plain JSON data');

/**
 * The value with every object's keys in sorted order (objects already in order are kept, not copied), or NOT_PLAIN
 * when it holds anything but strings, finite or not numbers, booleans, null, arrays without holes and plain objects,
 * or an object with an array-index key among others (JavaScript orders those first, whatever the insertion order).
 */
function sortedData(value: unknown): unknown {
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
      return value;
    case 'object':
      break;
    default:
      return NOT_PLAIN;
  }
  if (value === null) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const member: unknown = value[i];
      if (member === undefined) return NOT_PLAIN;
      const sorted = sortedData(member);
      if (sorted === NOT_PLAIN) return NOT_PLAIN;
      if (sorted !== member) copy ??= value.slice(0, i);
      if (copy) copy.push(sorted);
    }
    return copy ?? value;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return NOT_PLAIN;
  const object = value as Record<string, unknown>;
  const keys = Object.keys(object);
  let inOrder = true;
  let changed = false;
  const members: unknown[] = new Array<unknown>(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    if (i > 0 && (keys[i - 1] as string) > key) inOrder = false;
    const first = key.charCodeAt(0);
    if (keys.length > 1 && first >= 0x30 && first <= 0x39) return NOT_PLAIN;
    const member = object[key];
    if (member === undefined) return NOT_PLAIN;
    const sorted = sortedData(member);
    if (sorted === NOT_PLAIN) return NOT_PLAIN;
    if (sorted !== member) changed = true;
    members[i] = sorted;
  }
  if (inOrder && !changed) return value;
  const order = keys.map((_, i) => i);
  if (!inOrder) order.sort((a, b) => ((keys[a] as string) < (keys[b] as string) ? -1 : 1));
  // No prototype: a "__proto__" key is then an ordinary member, as JSON.parse makes it.
  const copy = Object.create(null) as Record<string, unknown>;
  for (const i of order) copy[keys[i] as string] = members[i];
  return copy;
}

/** canonicalJson for any value: plain loops and concatenation (undefined members dropped, as JSON.stringify does). */
function canonicalWalk(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      // An undefined element joins as nothing, as Array.prototype.join writes it.
      out += (canonicalWalk(value[i]) as string | undefined) ?? '';
    }
    return `${out}]`;
  }
  const object = value as Record<string, unknown>;
  // The default sort compares UTF-16 code units, the same order as `<` on strings.
  const keys = Object.keys(object).sort();
  let out = '{';
  let first = true;
  for (const key of keys) {
    const member = object[key];
    if (member === undefined) continue;
    out += `${first ? '' : ','}${JSON.stringify(key)}:${canonicalWalk(member)}`;
    first = false;
  }
  return `${out}}`;
}

/** sha256 hex of a text. */
export function sha256(text: string | Uint8Array): string {
  return hash('sha256', text, 'hex');
}

/**
 * Whether a modelInput is a Converse request or the native InvokeModel body of the model's family (model-catalog.ts).
 * A body without a `messages` array is native for every family (Meta Llama's `{prompt}`, a Mistral text completion).
 * One with `messages` is native when the family's format says so: Anthropic's carries `anthropic_version`; Amazon
 * Nova's is Converse-shaped and native only when it uses names Converse does not have (`schemaVersion`,
 * `inferenceConfig.max_new_tokens`); OpenAI gpt-oss and Mistral chat bodies have string `content`. Anything else is
 * a Converse request (for Nova the two mean the same).
 * @param family the configured model's family; without it only `anthropic_version` marks a native messages body
 */
export function detectFormat(modelInput: Record<string, unknown>, family?: ModelFamily): RecordFormat {
  if (!Array.isArray(modelInput.messages)) return 'native';
  if (family === undefined) return 'anthropic_version' in modelInput ? 'native' : 'converse';
  return FAMILY_FORMATS[family].isNativeMessagesBody(modelInput) ? 'native' : 'converse';
}

function describeJsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}

/**
 * Whether a parsed JSON value nests objects and arrays deeper than `limit` levels (the value itself is level 1).
 * Iterative on purpose: it runs on any line before the recursive walks do, so it must not overflow the stack itself.
 */
export function nestedDeeperThan(value: unknown, limit: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (limit < 1) return true;
  // Containers still to look into, and their levels.
  const containers: object[] = [value];
  const levels: number[] = [1];
  for (;;) {
    const container = containers.pop();
    if (container === undefined) return false;
    const level = levels.pop() as number;
    if (Array.isArray(container)) {
      for (let i = 0; i < container.length; i++) {
        const member: unknown = container[i];
        if (typeof member !== 'object' || member === null) continue;
        if (level >= limit) return true;
        containers.push(member);
        levels.push(level + 1);
      }
    } else {
      const object = container as Record<string, unknown>;
      for (const key in object) {
        const member = object[key];
        if (typeof member !== 'object' || member === null) continue;
        if (level >= limit) return true;
        containers.push(member);
        levels.push(level + 1);
      }
    }
  }
}

/** The problem of a line longer than the line limit ({@link MAX_LINE_BYTES} unless a test sets another). */
export function lineTooLong(lineNo: number, bytes: number, limit = MAX_LINE_BYTES): LineProblem {
  const size = limit === MAX_LINE_BYTES ? `${limit} bytes (1 MiB)` : `${limit} bytes`;
  return {
    code: 'LineTooLong',
    message: `line ${lineNo} is ${bytes} bytes long; a line may be at most ${size}, so it was skipped unread (a record must stay under ${MAX_ITEM_BYTES} bytes anyway): shorten or split it`,
  };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function normaliseId(raw: unknown, field: string): { id: string } | { problem: LineProblem } {
  if (typeof raw === 'number' && Number.isFinite(raw)) raw = String(raw);
  if (typeof raw !== 'string') {
    return {
      problem: {
        code: 'InvalidRecordId',
        message: `${field} must be a string, got ${describeJsonType(raw)}`,
      },
    };
  }
  if (!RECORD_ID_PATTERN.test(raw)) {
    return {
      problem: {
        code: 'InvalidRecordId',
        message: `${field} ${JSON.stringify(raw.slice(0, 80))} must be 1 to 256 printable ASCII characters without leading or trailing spaces`,
      },
    };
  }
  return { id: raw };
}

/** Builds the Converse request for a plain `{id, text}` line. */
export function templateRequest(text: string, prompt: PromptSettings): Record<string, unknown> {
  const request: Record<string, unknown> = {
    messages: [{ role: 'user', content: [{ text: prompt.template.split('{{text}}').join(text) }] }],
    inferenceConfig: { maxTokens: prompt.maxTokens },
  };
  if (prompt.system) request.system = [{ text: prompt.system }];
  return request;
}

/**
 * Parses and normalises one non-blank corpus line (already stripped of BOM and CR). A line over `maxLineBytes`
 * (LineTooLong), not JSON, not an object, nested deeper than {@link MAX_NESTING_DEPTH} (NestingTooDeep) or not a
 * record is rejected with its reason.
 * @param raw the line text
 * @param lineNo its 1-based line number
 * @param family the configured model's family, which tells its native bodies from Converse ones
 */
export function parseLine(
  raw: string,
  lineNo: number,
  prompt: PromptSettings,
  maxLineBytes = MAX_LINE_BYTES,
  family?: ModelFamily,
): ParsedLine {
  const read = readRecord(raw, lineNo, prompt, maxLineBytes, family);
  if (!read.ok) return read;
  const { format, modelInput, canonicalInput } = read;
  const contentHash = sha256(canonicalInput).slice(0, 32);
  const recordId = read.recordId ?? `h-${contentHash}`;
  const item: WorkItem = { recordId, format, modelInput, line: lineNo };
  const text = `{"recordId":${JSON.stringify(recordId)},"format":"${format}","modelInput":${canonicalInput},"line":${lineNo}}`;
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_ITEM_BYTES) return { ok: false, problem: recordTooLarge(lineNo, recordId, bytes) };
  itemJson.set(item, { text, bytes });
  return { ok: true, item, contentHash, bytes };
}

/** A line read as a record, before its content hash: what parseLine and Plan's block parser share. */
export type ReadRecord =
  | {
      ok: true;
      /** The line's own recordId; undefined when it is to be derived from the content hash. */
      recordId: string | undefined;
      format: RecordFormat;
      modelInput: Record<string, unknown>;
      /** canonicalJson(modelInput): hashed for the content hash, and the modelInput's text in the item's JSON. */
      canonicalInput: string;
    }
  | { ok: false; problem: LineProblem };

/** The RecordTooLarge problem of a record whose item JSON takes `bytes`. */
export function recordTooLarge(lineNo: number, recordId: string, bytes: number): LineProblem {
  return {
    code: 'RecordTooLarge',
    recordId,
    message: `line ${lineNo}: record ${recordId} is ${bytes} bytes; Converse fan-out passes records through Step Functions, which limits them to ${MAX_ITEM_BYTES} bytes`,
  };
}

/**
 * parseLine's checks up to the canonical JSON of the request (every rejection but RecordTooLarge), for a caller that
 * hashes and encodes the record itself ({@link parseLine} does it for one line; Plan's parse stage for a block).
 */
export function readRecord(
  raw: string,
  lineNo: number,
  prompt: PromptSettings,
  maxLineBytes = MAX_LINE_BYTES,
  family?: ModelFamily,
): ReadRecord {
  // A UTF-16 code unit takes at most 3 bytes in UTF-8: most lines are known to be short without counting.
  if (raw.length * 3 > maxLineBytes) {
    const bytes = Buffer.byteLength(raw);
    if (bytes > maxLineBytes) return { ok: false, problem: lineTooLong(lineNo, bytes, maxLineBytes) };
  }
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    const truncated = /end of (JSON )?input|Unterminated/i.test(detail);
    return {
      ok: false,
      problem: {
        code: 'InvalidJson',
        message: `line ${lineNo} is not valid JSON (${detail})${truncated ? ': the line looks truncated' : ''}`,
      },
    };
  }
  if (!isPlainObject(value)) {
    return {
      ok: false,
      problem: {
        code: 'NotAnObject',
        message: `line ${lineNo} is ${describeJsonType(value)}; expected an object {"recordId", "modelInput"} or {"id", "text"}`,
      },
    };
  }
  // JSON.parse is iterative; everything after it may recurse (canonicalJson, JSON.stringify, zod downstream).
  if (nestedDeeperThan(value, MAX_NESTING_DEPTH)) {
    return {
      ok: false,
      problem: {
        code: 'NestingTooDeep',
        message: `line ${lineNo} nests objects and arrays more than ${MAX_NESTING_DEPTH} levels deep (the line's object is level 1); flatten the record`,
      },
    };
  }

  let recordId: string | undefined;
  let modelInput: Record<string, unknown>;
  if ('modelInput' in value) {
    if (!isPlainObject(value.modelInput)) {
      return {
        ok: false,
        problem: {
          code: 'InvalidModelInput',
          message: `line ${lineNo}: modelInput must be an object (a Converse request body or the model's native body), got ${describeJsonType(value.modelInput)}`,
        },
      };
    }
    modelInput = value.modelInput;
    if (value.recordId !== undefined) {
      const id = normaliseId(value.recordId, 'recordId');
      if ('problem' in id)
        return { ok: false, problem: { ...id.problem, message: `line ${lineNo}: ${id.problem.message}` } };
      recordId = id.id;
    }
  } else if ('text' in value || 'id' in value) {
    if (typeof value.text !== 'string' || value.text.trim() === '') {
      return {
        ok: false,
        problem: {
          code: 'InvalidText',
          message: `line ${lineNo}: text must be a non-empty string for an {"id", "text"} line`,
        },
      };
    }
    if (value.id === undefined) {
      return {
        ok: false,
        problem: { code: 'MissingId', message: `line ${lineNo}: an {"id", "text"} line needs an id` },
      };
    }
    const id = normaliseId(value.id, 'id');
    if ('problem' in id)
      return { ok: false, problem: { ...id.problem, message: `line ${lineNo}: ${id.problem.message}` } };
    recordId = id.id;
    modelInput = templateRequest(value.text, prompt);
  } else {
    return {
      ok: false,
      problem: {
        code: 'MissingModelInput',
        message: `line ${lineNo} has no modelInput (keys: ${Object.keys(value).slice(0, 8).join(', ') || 'none'}); expected {"recordId", "modelInput"} or {"id", "text"}`,
      },
    };
  }

  const format = detectFormat(modelInput, family);
  // The canonical text serves twice: hashed (contentHashOf) and as the modelInput of the item's JSON, which then
  // needs no second serialization of the request (the key order inside modelInput means nothing to any reader).
  return { ok: true, recordId, format, modelInput, canonicalInput: canonicalJson(modelInput) };
}

/**
 * The JSON text parseLine serialized each accepted item to, so the items file and batch sizes reuse it: the item's
 * JSON with its modelInput in canonical key order (equal to JSON.stringify(item) as a value, and of the same size).
 */
const itemJson = new WeakMap<object, { text: string; bytes: number }>();

/**
 * The JSON text (and its UTF-8 size) parseLine serialized a work item to, when `item` came from parseLine; undefined
 * for any other object. Work items are not changed after parsing, so the text stays true to the item.
 */
export function serializedItem(item: object): { text: string; bytes: number } | undefined {
  return itemJson.get(item);
}

/**
 * The content hash of a record: of its modelInput in canonical JSON (key order does not matter). Derived recordIds
 * are `h-<hash>`; the ledger keeps it to tell a different record reusing a recordId.
 */
export function contentHashOf(modelInput: unknown): string {
  return sha256(canonicalJson(modelInput)).slice(0, 32);
}

/** Strips a UTF-8 BOM (first line only) and a trailing CR (CRLF files). */
export function cleanLine(raw: string, isFirst: boolean): string {
  let line = isFirst && raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw;
  if (line.endsWith('\r')) line = line.slice(0, -1);
  return line;
}

/** What the duplicate tracker says about a record. */
export type DuplicateVerdict =
  { kind: 'new' } | { kind: 'identical'; firstLine: number } | { kind: 'conflict'; firstLine: number };

/**
 * Remembers each recordId's content hash and first line, to drop identical repeats and reject a recordId reused
 * with different content.
 *
 * Memory: 16 bytes a slot in one open-addressing table kept at most 70% full (about 24 bytes per distinct record,
 * 2^24 slots = 256 MiB for 10M records), instead of a Map of strings and objects (about 150 bytes per record). A
 * slot holds a 64-bit hash of the recordId, 32 bits of the content hash and the first line. Two different recordIds
 * share a 64-bit hash with a probability of about n^2 / 2^65 (3e-6 for 10M records); if they did, the second would be
 * reported as reusing the first one's id (or, if 32 bits of their content hashes also matched, dropped as its
 * duplicate).
 */
export class DuplicateTracker {
  private slots: Uint32Array;
  private mask: number;
  private count = 0;

  /** @param expected distinct records expected (sizes the table; it grows as needed) */
  constructor(expected = 0) {
    let capacity = 1 << 12;
    while (capacity * 0.7 < expected) capacity *= 2;
    this.slots = new Uint32Array(capacity * SLOT_WORDS);
    this.mask = capacity - 1;
  }

  /** Checks a record and remembers it when new. */
  check(recordId: string, contentHash: string, line: number): DuplicateVerdict {
    const [high, low] = hash64(recordId);
    const content = hash64(contentHash)[0];
    const slots = this.slots;
    for (let slot = low & this.mask; ; slot = (slot + 1) & this.mask) {
      const at = slot * SLOT_WORDS;
      const stored = slots[at + 3] as number;
      if (stored === 0) {
        // Lines are stored plus one: 0 marks an empty slot.
        slots[at] = high;
        slots[at + 1] = low;
        slots[at + 2] = content;
        slots[at + 3] = line + 1;
        if (++this.count > (this.mask + 1) * 0.7) this.grow();
        return { kind: 'new' };
      }
      if (slots[at] === high && slots[at + 1] === low) {
        const firstLine = stored - 1;
        return slots[at + 2] === content ? { kind: 'identical', firstLine } : { kind: 'conflict', firstLine };
      }
    }
  }

  /** Distinct records seen. */
  get size(): number {
    return this.count;
  }

  private grow(): void {
    const old = this.slots;
    const capacity = (this.mask + 1) * 2;
    const slots = new Uint32Array(capacity * SLOT_WORDS);
    const mask = capacity - 1;
    for (let at = 0; at < old.length; at += SLOT_WORDS) {
      if (old[at + 3] === 0) continue;
      let slot = (old[at + 1] as number) & mask;
      while (slots[slot * SLOT_WORDS + 3] !== 0) slot = (slot + 1) & mask;
      slots.set(old.subarray(at, at + SLOT_WORDS), slot * SLOT_WORDS);
    }
    this.slots = slots;
    this.mask = mask;
  }
}

/** Uint32 words per tracker slot: recordId hash (2), content hash, line + 1. */
const SLOT_WORDS = 4;

/** Two 32-bit lanes of a fast string hash (cyrb53's mixing, both lanes kept): 64 bits in all. */
function hash64(text: string): [number, number] {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return [h1 >>> 0, h2 >>> 0];
}
