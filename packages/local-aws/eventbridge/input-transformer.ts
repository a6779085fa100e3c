/**
 * What a rule target receives: the whole event, a static `Input`, the part of the event an `InputPath`
 * selects, or the text an `InputTransformer` renders, following the EventBridge documentation
 * ("Transforming target input"):
 *
 * - `InputPathsMap` binds up to 100 variables to JSON paths into the event; a path that matches nothing
 *   creates no variable (it renders as an empty string inside a quoted string, as `null` in a JSON value);
 * - in a JSON value position a variable renders as JSON (strings get their quotes), inside a quoted string
 *   it renders raw and unescaped, and an object or array loses its inner quotes there
 *   (`"Detail is <detail>"` -> `"Detail is {a:[b]}"`);
 * - templates that are not JSON (plain or quoted text, several quoted lines) work the same way;
 * - the predefined `<aws.events.rule-arn>`, `<aws.events.rule-name>`, `<aws.events.event.ingestion-time>`,
 *   `<aws.events.event>` (the envelope without `detail`) and `<aws.events.event.json>` (the whole event);
 * - JSON output is minified.
 */
import { JSONPath } from 'jsonpath-plus';
import { EventBridgeValidationError, TargetInputError } from './errors';

/** The InputTransformer of a target, in the SDK's camelCase or CloudFormation's PascalCase. */
export type InputTransformerLike =
  | { inputPathsMap?: Readonly<Record<string, string>>; inputTemplate: string }
  | { InputPathsMap?: Readonly<Record<string, string>>; InputTemplate: string };

/** How a target's input is built; at most one of the three may be set (none = the whole event). */
export interface TargetInputConfig {
  /** Static JSON text sent instead of the event. */
  readonly input?: string;
  /** JSONPath selecting the part of the event to send. */
  readonly inputPath?: string;
  /** Variables plus a template. */
  readonly inputTransformer?: InputTransformerLike;
}

/** Values of the predefined variables that do not come from the event itself. */
export interface TransformContext {
  /** ARN of the rule that matched. */
  readonly ruleArn: string;
  /** Name of the rule that matched. */
  readonly ruleName: string;
  /** When the bus received the event (defaults to the event's `time`). */
  readonly ingestionTime?: Date | string;
}

/** The reserved variable names of input templates. */
export const PREDEFINED_VARIABLES: readonly string[] = [
  'aws.events.rule-arn',
  'aws.events.rule-name',
  'aws.events.event',
  'aws.events.event.ingestion-time',
  'aws.events.event.json',
];

const MAX_VARIABLES = 100;
const MAX_TEMPLATE_LENGTH = 8192;
const VARIABLE_NAME = /^[A-Za-z0-9_-]+$/;
const PLACEHOLDER = /<([A-Za-z0-9_.-]+)>/g;

/** Result of evaluating a JSON path: absent, or present with its value. */
export type JsonPathResult = { readonly found: false } | { readonly found: true; readonly value: unknown };

function normalizeTransformer(transformer: InputTransformerLike): {
  pathsMap: Readonly<Record<string, string>>;
  template: string;
} {
  if ('inputTemplate' in transformer) {
    return { pathsMap: transformer.inputPathsMap ?? {}, template: transformer.inputTemplate };
  }
  return { pathsMap: transformer.InputPathsMap ?? {}, template: transformer.InputTemplate };
}

/**
 * Checks a target's input settings the way PutTargets does.
 * @param config the target's Input / InputPath / InputTransformer
 * @param targetId the target id, quoted in messages
 * @throws EventBridgeValidationError describing the first problem found
 */
export function validateTargetInput(config: TargetInputConfig, targetId: string): void {
  const set = [config.input, config.inputPath, config.inputTransformer].filter((v) => v !== undefined);
  if (set.length > 1) {
    throw new EventBridgeValidationError(
      `Only one of Input, InputPath, or InputTransformer must be provided for target ${targetId}.`,
    );
  }
  if (config.input !== undefined) {
    try {
      JSON.parse(config.input);
    } catch {
      throw new EventBridgeValidationError(`Input for target ${targetId} is not valid JSON text.`);
    }
  }
  if (config.inputPath !== undefined && !config.inputPath.startsWith('$')) {
    throw new EventBridgeValidationError(`InputPath for target ${targetId} is not a valid JSON path.`);
  }
  if (config.inputTransformer === undefined) return;
  const { pathsMap, template } = normalizeTransformer(config.inputTransformer);
  const names = Object.keys(pathsMap);
  if (names.length > MAX_VARIABLES) {
    throw new EventBridgeValidationError(
      `InputPathsMap for target ${targetId} has ${names.length} entries; at most ${MAX_VARIABLES} are allowed.`,
    );
  }
  for (const name of names) {
    if (PREDEFINED_VARIABLES.includes(name)) {
      throw new EventBridgeValidationError(
        `InputPathsMap for target ${targetId} redefines the reserved variable ${name}.`,
      );
    }
    if (!VARIABLE_NAME.test(name)) {
      throw new EventBridgeValidationError(
        `InputPathsMap for target ${targetId} has an invalid key ${name}.`,
      );
    }
    if (!(pathsMap[name] ?? '').startsWith('$')) {
      throw new EventBridgeValidationError(
        `InputPathsMap for target ${targetId} maps ${name} to an invalid JSON path ${pathsMap[name] ?? ''}.`,
      );
    }
  }
  if (template.length > MAX_TEMPLATE_LENGTH) {
    throw new EventBridgeValidationError(
      `InputTemplate for target ${targetId} is longer than ${MAX_TEMPLATE_LENGTH} characters.`,
    );
  }
  for (const match of template.matchAll(PLACEHOLDER)) {
    const name = match[1] as string;
    if (!(name in pathsMap) && !PREDEFINED_VARIABLES.includes(name)) {
      throw new EventBridgeValidationError(
        `InputTemplate for target ${targetId} contains invalid placeholder ${name}.`,
      );
    }
  }
}

type PathStep = string | number;

/** Parses the simple paths EventBridge documents (`$.a.b-c`, `$.a[0]`, `$['a b']`); undefined if richer. */
function parseSimplePath(path: string): PathStep[] | undefined {
  const steps: PathStep[] = [];
  let i = 1;
  while (i < path.length) {
    const char = path[i];
    if (char === '.') {
      let end = i + 1;
      while (end < path.length && path[end] !== '.' && path[end] !== '[') end += 1;
      const name = path.slice(i + 1, end);
      if (name === '' || name === '*') return undefined;
      steps.push(name);
      i = end;
    } else if (char === '[') {
      const close = path.indexOf(']', i);
      if (close === -1) return undefined;
      const inner = path.slice(i + 1, close).trim();
      if (/^\d+$/.test(inner)) steps.push(Number(inner));
      else if (/^'[^']*'$/.test(inner) || /^"[^"]*"$/.test(inner)) steps.push(inner.slice(1, -1));
      else return undefined;
      i = close + 1;
    } else {
      return undefined;
    }
  }
  return steps;
}

/**
 * Evaluates a JSON path against a document. Simple paths are walked directly; wildcards, recursive descent
 * and filters go through jsonpath-plus (several results come back as an array).
 * @param document the JSON document (usually the event)
 * @param path a JSON path starting with `$`
 * @throws TargetInputError when the path does not start with `$`
 */
export function evaluateJsonPath(document: unknown, path: string): JsonPathResult {
  if (!path.startsWith('$')) throw new TargetInputError(`${path} is not a JSON path (it must start with $).`);
  const steps = parseSimplePath(path);
  if (steps === undefined) {
    const results = JSONPath({ path, json: document as object, wrap: true }) as unknown[];
    if (results.length === 0) return { found: false };
    return { found: true, value: results.length === 1 ? results[0] : results };
  }
  let current: unknown = document;
  for (const step of steps) {
    if (typeof step === 'number' && Array.isArray(current) && step < current.length) {
      current = current[step];
    } else if (
      typeof step === 'string' &&
      typeof current === 'object' &&
      current !== null &&
      !Array.isArray(current) &&
      Object.prototype.hasOwnProperty.call(current, step)
    ) {
      current = (current as Record<string, unknown>)[step];
    } else {
      return { found: false };
    }
  }
  return { found: true, value: current };
}

function formatTime(value: Date | string): string {
  return typeof value === 'string' ? value : value.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function predefinedValues(
  event: Readonly<Record<string, unknown>>,
  context: TransformContext,
): Map<string, unknown> {
  const envelope: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(event)) {
    // The service hands the envelope without detail, and spells detail-type as detailType there.
    if (key === 'detail') continue;
    envelope[key === 'detail-type' ? 'detailType' : key] = value;
  }
  const ingestion = context.ingestionTime ?? (typeof event.time === 'string' ? event.time : new Date());
  return new Map<string, unknown>([
    ['aws.events.rule-arn', context.ruleArn],
    ['aws.events.rule-name', context.ruleName],
    ['aws.events.event.ingestion-time', formatTime(ingestion)],
    ['aws.events.event', envelope],
    ['aws.events.event.json', event],
  ]);
}

function renderValue(present: boolean, value: unknown, inString: boolean, jsonTemplate: boolean): string {
  if (!present) return inString || !jsonTemplate ? '' : 'null';
  if (inString) {
    if (typeof value === 'string') return value;
    const json = JSON.stringify(value) ?? 'null';
    return typeof value === 'object' && value !== null ? json.replaceAll('"', '') : json;
  }
  if (!jsonTemplate && typeof value === 'string') return value;
  return JSON.stringify(value) ?? 'null';
}

/** Removes insignificant whitespace from valid JSON text without re-serialising its numbers. */
function minifyJson(text: string): string {
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i] as string;
    if (inString) {
      out += char;
      if (char === '\\') {
        out += text[i + 1] ?? '';
        i += 1;
      } else if (char === '"') {
        inString = false;
      }
    } else if (char === '"') {
      inString = true;
      out += char;
    } else if (!/\s/.test(char)) {
      out += char;
    }
  }
  return out;
}

/**
 * Renders an InputTransformer for one event.
 * @param transformer the InputPathsMap and InputTemplate
 * @param event the matched event
 * @param context values of the predefined rule and ingestion variables
 * @returns the text delivered to the target (minified when it is JSON)
 */
export function applyInputTransformer(
  transformer: InputTransformerLike,
  event: Readonly<Record<string, unknown>>,
  context: TransformContext,
): string {
  const { pathsMap, template } = normalizeTransformer(transformer);
  const values = predefinedValues(event, context);
  const absent = new Set<string>();
  for (const [name, path] of Object.entries(pathsMap)) {
    if (PREDEFINED_VARIABLES.includes(name)) continue;
    const result = evaluateJsonPath(event, path);
    if (result.found) values.set(name, result.value);
    else absent.add(name);
  }
  const jsonTemplate = /^\s*[{[]/.test(template);
  let out = '';
  let inString = false;
  for (let i = 0; i < template.length; i += 1) {
    const char = template[i] as string;
    if (char === '<') {
      const match = /^<([A-Za-z0-9_.-]+)>/.exec(template.slice(i));
      const name = match?.[1];
      if (match && name !== undefined && (values.has(name) || absent.has(name))) {
        out += renderValue(values.has(name), values.get(name), inString, jsonTemplate);
        i += match[0].length - 1;
        continue;
      }
    }
    if (inString && char === '\\') {
      out += char + (template[i + 1] ?? '');
      i += 1;
      continue;
    }
    if (char === '"') inString = !inString;
    out += char;
  }
  if (!jsonTemplate) return out;
  try {
    JSON.parse(out);
  } catch {
    // Unescaped values can break the JSON; the service passes such text on as it is.
    return out;
  }
  return minifyJson(out);
}

/**
 * Builds the text a target receives for an event.
 * @param config the target's Input / InputPath / InputTransformer (none: the whole event)
 * @param event the matched event
 * @param context rule and ingestion values for the predefined variables
 * @throws TargetInputError when an InputPath selects nothing in the event
 */
export function computeTargetInput(
  config: TargetInputConfig,
  event: Readonly<Record<string, unknown>>,
  context: TransformContext,
): string {
  if (config.input !== undefined) return config.input;
  if (config.inputPath !== undefined) {
    const result = evaluateJsonPath(event, config.inputPath);
    if (!result.found)
      throw new TargetInputError(
        `InputPath ${config.inputPath} selects nothing in event ${String(event.id)}.`,
      );
    return JSON.stringify(result.value) ?? 'null';
  }
  if (config.inputTransformer !== undefined)
    return applyInputTransformer(config.inputTransformer, event, context);
  return JSON.stringify(event);
}
