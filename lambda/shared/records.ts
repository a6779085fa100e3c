import { createHash } from 'node:crypto';
import type { RecordFormat, WorkItem } from './contracts';

/**
 * Turning corpus lines into records: pure functions, no I/O, shared by Plan and the tests.
 *
 * Accepted lines:
 * - `{"recordId": "r1", "modelInput": {...}}`: modelInput is a Converse request body (`messages`, `system`,
 *   `inferenceConfig`, ...) or the model's native InvokeModel body;
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
 * The largest record (serialized work item) mode B accepts: the Map passes records through Step Functions, whose
 * payload limit is 256 KiB per child input.
 */
export const MAX_ITEM_BYTES = 200 * 1024;

/** recordIds are echoed in file names, SQS messages and Bedrock batch files: keep them printable and bounded. */
const RECORD_ID_PATTERN = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/;

/** A stable JSON text: object keys sorted, so equal content hashes equally whatever the key order. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** sha256 hex of a text. */
export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The deterministic recordId of a line without one: a hash of its request. */
export function deriveRecordId(modelInput: Record<string, unknown>): string {
  return `h-${sha256(canonicalJson(modelInput)).slice(0, 32)}`;
}

/**
 * Converse bodies carry `messages` whose content is an array of blocks; native bodies are anything else
 * (Anthropic's native Messages body also has `messages`, but always `anthropic_version`).
 */
export function detectFormat(modelInput: Record<string, unknown>): RecordFormat {
  if ('anthropic_version' in modelInput) return 'native';
  return Array.isArray(modelInput.messages) ? 'converse' : 'native';
}

function describeJsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
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
 * Parses and normalises one non-blank corpus line (already stripped of BOM and CR).
 * @param raw the line text
 * @param lineNo its 1-based line number
 */
export function parseLine(raw: string, lineNo: number, prompt: PromptSettings): ParsedLine {
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

  const format = detectFormat(modelInput);
  const canonicalInput = canonicalJson(modelInput);
  const contentHash = sha256(canonicalInput).slice(0, 32);
  recordId ??= `h-${contentHash}`;
  const item: WorkItem = { recordId, format, modelInput, line: lineNo };
  const bytes = Buffer.byteLength(JSON.stringify(item));
  if (bytes > MAX_ITEM_BYTES) {
    return {
      ok: false,
      problem: {
        code: 'RecordTooLarge',
        recordId,
        message: `line ${lineNo}: record ${recordId} is ${bytes} bytes; Converse fan-out passes records through Step Functions, which limits them to ${MAX_ITEM_BYTES} bytes`,
      },
    };
  }
  return { ok: true, item, contentHash, bytes };
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
 * with different content. Memory: about 100 bytes per distinct record.
 */
export class DuplicateTracker {
  private readonly seen = new Map<string, { hash: string; line: number }>();

  /** Checks a record and remembers it when new. */
  check(recordId: string, contentHash: string, line: number): DuplicateVerdict {
    const prior = this.seen.get(recordId);
    if (!prior) {
      this.seen.set(recordId, { hash: contentHash, line });
      return { kind: 'new' };
    }
    return prior.hash === contentHash
      ? { kind: 'identical', firstLine: prior.line }
      : { kind: 'conflict', firstLine: prior.line };
  }

  /** Distinct records seen. */
  get size(): number {
    return this.seen.size;
  }
}
