import { SimulatorError, validationError } from './errors';
import type { ModelSpec } from './models';

/** A conversation role. */
export type Role = 'user' | 'assistant';

/** One content block reduced to what the simulated model reads: its type, and its text when it has one. */
export interface NormalizedBlock {
  /** Converse member name (`text`, `image`, `toolUse`, ...), Anthropic types mapped onto them. */
  readonly type: string;
  /** The text the block carries (text blocks, and text inside tool results / guard content). */
  readonly text: string;
  /** Characters the block counts for in token estimates (text length, or the JSON size of other blocks). */
  readonly weight: number;
}

/** One message of a validated request. */
export interface NormalizedMessage {
  readonly role: Role;
  readonly content: readonly NormalizedBlock[];
}

/**
 * A validated model request, independent of the wire format it came in (Converse or a native body).
 * The deterministic model ({@link simulateConverse} and friends) consumes this.
 */
export interface SimulationRequest {
  /** The model that answers. */
  readonly model: ModelSpec;
  /** System prompt texts, in order. */
  readonly system: readonly string[];
  /** The conversation. */
  readonly messages: readonly NormalizedMessage[];
  /** Output token budget (the request's, or the model's default). */
  readonly maxTokens: number;
  /** Sampling temperature, when set. */
  readonly temperature?: number;
  /** Nucleus sampling, when set. */
  readonly topP?: number;
  /** Sequences that end generation. */
  readonly stopSequences: readonly string[];
  /** Estimated input tokens (system + messages, about chars / 4, at least 1). */
  readonly inputTokens: number;
  /** A family's other body shape, when it has one (Mistral's text completion, answered with `outputs`). */
  readonly variant?: 'text-completion';
}

/** Converse content block members the real API knows (smithy union members of ContentBlock). */
export const CONVERSE_CONTENT_BLOCK_TYPES: readonly string[] = [
  'text',
  'image',
  'document',
  'video',
  'audio',
  'toolUse',
  'toolResult',
  'guardContent',
  'cachePoint',
  'reasoningContent',
  'citationsContent',
  'searchResult',
  'toolAddition',
  'toolRemoval',
];

/** Members of the Converse SystemContentBlock union. */
export const CONVERSE_SYSTEM_BLOCK_TYPES: readonly string[] = ['text', 'guardContent', 'cachePoint'];

/** Block types the Anthropic Messages format accepts in `messages[].content`. */
export const ANTHROPIC_CONTENT_BLOCK_TYPES: readonly string[] = [
  'document',
  'image',
  'redacted_thinking',
  'text',
  'thinking',
  'tool_result',
  'tool_use',
];

/** The only `anthropic_version` Bedrock accepts. */
export const ANTHROPIC_BEDROCK_VERSION = 'bedrock-2023-05-31';

const ANTHROPIC_ALLOWED_KEYS: readonly string[] = [
  'anthropic_version',
  'anthropic_beta',
  'max_tokens',
  'messages',
  'system',
  'temperature',
  'top_p',
  'top_k',
  'stop_sequences',
  'tools',
  'tool_choice',
  'thinking',
  'metadata',
];

/** Estimated tokens for a number of characters: about four characters per token, rounded up. */
export function estimateTokens(chars: number): number {
  return Math.ceil(chars / 4);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isBlank(text: string): boolean {
  return text.trim().length === 0;
}

/** Renders a value the way smithy constraint messages quote it. */
function quote(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * Parses a request body.
 * @throws SimulatorError ValidationException "Malformed input request: ..." when it is not a JSON object
 */
export function parseJsonBody(body: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw validationError(
      `Malformed input request: the request body is not valid JSON (${reason}), please reformat your input and try again.`,
    );
  }
  if (!isRecord(parsed)) {
    throw validationError(
      'Malformed input request: the request body must be a JSON object, please reformat your input and try again.',
    );
  }
  return parsed;
}

/** Collects smithy-style constraint violations and throws them as one message, as the service does. */
class ConstraintViolations {
  private readonly items: string[] = [];

  /** Records a violation of `constraint` by `value` at `path`. */
  add(value: unknown, path: string, constraint: string): void {
    this.items.push(`Value '${quote(value)}' at '${path}' failed to satisfy constraint: ${constraint}`);
  }

  /** Checks a number's range. */
  range(value: unknown, path: string, min: number, max?: number): void {
    if (value === undefined || value === null) return;
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      this.add(value, path, 'Member must be a number');
    } else if (value < min) {
      this.add(value, path, `Member must have value greater than or equal to ${min}`);
    } else if (max !== undefined && value > max) {
      this.add(value, path, `Member must have value less than or equal to ${max}`);
    }
  }

  /** @throws SimulatorError ValidationException "N validation error(s) detected: ..." if any were recorded */
  throwIfAny(): void {
    if (this.items.length === 0) return;
    const n = this.items.length;
    throw validationError(`${n} validation error${n === 1 ? '' : 's'} detected: ${this.items.join('; ')}`);
  }
}

function sumWeights(system: readonly string[], messages: readonly NormalizedMessage[]): number {
  let chars = 0;
  for (const text of system) chars += text.length;
  for (const message of messages) for (const block of message.content) chars += block.weight;
  return chars;
}

/** Text carried inside a tool result's content list (Converse or Anthropic shape). */
function nestedText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (!Array.isArray(value)) return '';
  return value
    .map((item) => (isRecord(item) && typeof item.text === 'string' ? item.text : ''))
    .filter((text) => text.length > 0)
    .join('\n');
}

function checkRoles(
  messages: readonly NormalizedMessage[],
  firstNotUser: string,
  notAlternating: (role: Role) => string,
): void {
  if (messages[0]?.role !== 'user') throw validationError(firstNotUser);
  for (let i = 1; i < messages.length; i += 1) {
    const role = messages[i]?.role;
    if (role !== undefined && role === messages[i - 1]?.role) throw validationError(notAlternating(role));
  }
}

/**
 * Validates a Converse request body for a model the way the real API does, each failure a
 * ValidationException with the service's wording where it is known.
 * @param body the parsed JSON body (modelId comes from the path, not the body)
 * @param model the resolved model
 * @throws SimulatorError ValidationException
 */
export function validateConverseRequest(body: Record<string, unknown>, model: ModelSpec): SimulationRequest {
  const violations = new ConstraintViolations();
  const rawMessages = body.messages;
  if (rawMessages !== undefined && !Array.isArray(rawMessages)) {
    violations.add(rawMessages, 'messages', 'Member must be a list of Message objects');
  }
  const inference = body.inferenceConfig;
  if (inference !== undefined && !isRecord(inference)) {
    violations.add(inference, 'inferenceConfig', 'Member must be an InferenceConfiguration object');
  }
  const config = isRecord(inference) ? inference : {};
  violations.range(config.maxTokens, 'inferenceConfig.maxTokens', 1);
  if (typeof config.maxTokens === 'number' && !Number.isInteger(config.maxTokens)) {
    violations.add(config.maxTokens, 'inferenceConfig.maxTokens', 'Member must be an integer');
  }
  violations.range(config.temperature, 'inferenceConfig.temperature', 0, 1);
  violations.range(config.topP, 'inferenceConfig.topP', 0, 1);
  const stopSequences = config.stopSequences ?? [];
  if (!Array.isArray(stopSequences) || !stopSequences.every((s) => typeof s === 'string')) {
    violations.add(stopSequences, 'inferenceConfig.stopSequences', 'Member must be a list of strings');
  }
  const list: unknown[] = Array.isArray(rawMessages) ? rawMessages : [];
  list.forEach((message, i) => {
    const role = isRecord(message) ? message.role : undefined;
    if (role !== 'user' && role !== 'assistant') {
      violations.add(
        role,
        `messages.${i}.member.role`,
        'Member must satisfy enum value set: [user, assistant]',
      );
    }
  });
  const rawSystem = body.system ?? [];
  if (!Array.isArray(rawSystem)) {
    violations.add(rawSystem, 'system', 'Member must be a list of SystemContentBlock objects');
  }
  violations.throwIfAny();

  if (list.length === 0) {
    throw validationError(
      'The messages field is missing or empty. Add at least one Message object with the user role to the messages field and try again.',
    );
  }

  const system: string[] = [];
  (rawSystem as unknown[]).forEach((block, i) => {
    const type = unionMember(block, CONVERSE_SYSTEM_BLOCK_TYPES, `system.${i}`, 'SystemContentBlock');
    if (type === 'text') {
      const text = (block as Record<string, unknown>).text;
      if (typeof text !== 'string' || isBlank(text)) {
        throw validationError(
          `The text field in the SystemContentBlock object at system.${i} is blank. Add text to the text field, and try again.`,
        );
      }
      system.push(text);
    } else if (type === 'guardContent') {
      system.push(guardText((block as Record<string, unknown>).guardContent));
    }
  });

  const messages: NormalizedMessage[] = list.map((raw, i) => {
    const message = raw as Record<string, unknown>;
    const content = message.content;
    if (!Array.isArray(content) || content.length === 0) {
      throw validationError(
        `The content field in the Message object at messages.${i} is empty. Add a ContentBlock object to the content field and try again.`,
      );
    }
    return {
      role: message.role as Role,
      content: content.map((block, j) => normalizeConverseBlock(block, `messages.${i}.content.${j}`)),
    };
  });

  checkRoles(
    messages,
    'A conversation must start with a user message. Try again with a conversation that starts with a user message.',
    () =>
      'A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.',
  );

  const maxTokens = typeof config.maxTokens === 'number' ? config.maxTokens : model.defaultMaxTokens;
  if (maxTokens > model.maxOutputTokens) {
    throw validationError(
      `The maximum tokens you requested exceeds the model limit of ${model.maxOutputTokens}. Try again with a maximum tokens value that is lower than ${model.maxOutputTokens}.`,
    );
  }
  const inputTokens = Math.max(1, estimateTokens(sumWeights(system, messages)));
  if (inputTokens > model.contextWindow) {
    throw validationError(
      `The model returned the following errors: Input is too long for requested model. The input is about ${inputTokens} tokens; ${model.modelId} accepts at most ${model.contextWindow}.`,
    );
  }
  return {
    model,
    system,
    messages,
    maxTokens,
    ...(typeof config.temperature === 'number' ? { temperature: config.temperature } : {}),
    ...(typeof config.topP === 'number' ? { topP: config.topP } : {}),
    stopSequences: stopSequences as string[],
    inputTokens,
  };
}

/**
 * The single member set in a Converse union value.
 * @throws SimulatorError ValidationException when none, several or an unknown member is set
 */
function unionMember(block: unknown, known: readonly string[], path: string, shape: string): string {
  const keys = isRecord(block)
    ? Object.keys(block).filter((k) => block[k] !== undefined && block[k] !== null)
    : [];
  const unknown = keys.filter((k) => !known.includes(k));
  if (unknown.length > 0) {
    throw validationError(
      `The ${shape} object at ${path} has an unsupported type: ${unknown.map((k) => `'${k}'`).join(', ')}. Use one of: ${known.join(', ')}.`,
    );
  }
  if (keys.length === 0) {
    throw validationError(
      `The ${shape} object at ${path} is empty: it sets none of ${known.join(', ')}. (The AWS SDK drops members it does not know, so a block of an unknown type arrives empty.) Set exactly one member and try again.`,
    );
  }
  if (keys.length > 1) {
    throw validationError(
      `The ${shape} object at ${path} sets ${keys.join(', ')}, but it must set exactly one member. Split it into one block per member and try again.`,
    );
  }
  return keys[0] as string;
}

function guardText(value: unknown): string {
  if (!isRecord(value) || !isRecord(value.text)) return '';
  return typeof value.text.text === 'string' ? value.text.text : '';
}

function normalizeConverseBlock(block: unknown, path: string): NormalizedBlock {
  const type = unionMember(block, CONVERSE_CONTENT_BLOCK_TYPES, path, 'ContentBlock');
  const value = (block as Record<string, unknown>)[type];
  if (type === 'text') {
    if (typeof value !== 'string' || isBlank(value)) {
      throw validationError(
        `The text field in the ContentBlock object at ${path} is blank. Add text to the text field, and try again.`,
      );
    }
    return { type, text: value, weight: value.length };
  }
  let text = '';
  if (type === 'toolResult' && isRecord(value)) text = nestedText(value.content);
  if (type === 'guardContent') text = guardText(value);
  // cachePoint carries no content; every other block costs its serialized size.
  const weight = type === 'cachePoint' ? 0 : text.length || JSON.stringify(value).length;
  return { type, text, weight };
}

const ANTHROPIC_TYPE_TO_CONVERSE: Readonly<Record<string, string>> = {
  text: 'text',
  image: 'image',
  document: 'document',
  tool_use: 'toolUse',
  tool_result: 'toolResult',
  thinking: 'reasoningContent',
  redacted_thinking: 'reasoningContent',
};

function malformed(detail: string): SimulatorError {
  return validationError(`Malformed input request: ${detail}, please reformat your input and try again.`);
}

/**
 * Validates an InvokeModel body in the Anthropic Messages format
 * (`{anthropic_version, max_tokens, messages, system?, temperature?, top_p?, stop_sequences?}`),
 * with the messages Bedrock relays from the schema check and from the Anthropic API.
 * @throws SimulatorError ValidationException
 */
export function validateAnthropicMessagesRequest(
  body: Record<string, unknown>,
  model: ModelSpec,
): SimulationRequest {
  const schema: string[] = [];
  for (const key of ['anthropic_version', 'max_tokens', 'messages']) {
    if (!(key in body)) schema.push(`#: required key [${key}] not found`);
  }
  for (const key of Object.keys(body)) {
    if (!ANTHROPIC_ALLOWED_KEYS.includes(key)) schema.push(`#: extraneous key [${key}] is not permitted`);
  }
  if ('messages' in body && !Array.isArray(body.messages)) {
    schema.push(`#/messages: expected type: JSONArray, found: ${typeof body.messages}`);
  }
  if ('max_tokens' in body && !Number.isInteger(body.max_tokens)) {
    schema.push(`#/max_tokens: expected type: Integer, found: ${typeof body.max_tokens}`);
  }
  if (schema.length === 1) throw malformed(schema[0] as string);
  if (schema.length > 1) throw malformed(`${schema.length} schema violations found (${schema.join('; ')})`);
  if (body.anthropic_version !== ANTHROPIC_BEDROCK_VERSION) {
    throw validationError(
      `anthropic_version: '${quote(body.anthropic_version)}' is not supported; use "${ANTHROPIC_BEDROCK_VERSION}".`,
    );
  }

  const maxTokens = body.max_tokens as number;
  if (maxTokens < 1) throw validationError('max_tokens: ensure this value is greater than or equal to 1');
  if (maxTokens > model.maxOutputTokens) {
    throw validationError(
      `max_tokens: ${maxTokens} > ${model.maxOutputTokens}, which is the maximum allowed number of output tokens for ${anthropicModelName(model)}`,
    );
  }
  for (const key of ['temperature', 'top_p']) {
    const value = body[key];
    if (value !== undefined && (typeof value !== 'number' || value < 0 || value > 1)) {
      throw validationError(`${key}: range: 0..1`);
    }
  }
  const stop = body.stop_sequences ?? [];
  if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string')) {
    throw validationError('stop_sequences: Input should be a valid list of strings');
  }

  const system = anthropicSystem(body.system);
  const list = body.messages as unknown[];
  if (list.length === 0) throw validationError('messages: at least one message is required');
  const messages: NormalizedMessage[] = list.map((raw, i) => {
    if (!isRecord(raw) || (raw.role !== 'user' && raw.role !== 'assistant')) {
      throw validationError(`messages.${i}.role: Input should be 'user' or 'assistant'`);
    }
    const content = raw.content;
    const blocks = typeof content === 'string' ? [{ type: 'text', text: content }] : content;
    const isFinalAssistant = i === list.length - 1 && raw.role === 'assistant';
    if (
      !Array.isArray(blocks) ||
      blocks.length === 0 ||
      (typeof content === 'string' && content.length === 0)
    ) {
      if (isFinalAssistant && Array.isArray(blocks)) return { role: raw.role, content: [] };
      throw validationError(
        `messages.${i}: all messages must have non-empty content except for the optional final assistant message`,
      );
    }
    return {
      role: raw.role,
      content: blocks.map((block, j) => normalizeAnthropicBlock(block, `messages.${i}.content.${j}`)),
    };
  });
  checkRoles(
    messages,
    'messages: first message must use the "user" role',
    (role) =>
      `messages: roles must alternate between "user" and "assistant", but found multiple "${role}" roles in a row`,
  );
  const inputTokens = Math.max(1, estimateTokens(sumWeights(system, messages)));
  if (inputTokens > model.contextWindow) {
    throw validationError(`prompt is too long: ${inputTokens} tokens > ${model.contextWindow} maximum`);
  }
  return {
    model,
    system,
    messages,
    maxTokens,
    ...(typeof body.temperature === 'number' ? { temperature: body.temperature } : {}),
    ...(typeof body.top_p === 'number' ? { topP: body.top_p } : {}),
    stopSequences: stop as string[],
    inputTokens,
  };
}

function anthropicSystem(value: unknown): string[] {
  if (value === undefined) return [];
  if (typeof value === 'string') return value.length > 0 ? [value] : [];
  if (!Array.isArray(value))
    throw validationError('system: Input should be a valid string or list of text blocks');
  return value.map((block, i) => {
    if (!isRecord(block) || block.type !== 'text' || typeof block.text !== 'string') {
      throw validationError(`system.${i}: Input should be a text block ({"type": "text", "text": "..."})`);
    }
    if (isBlank(block.text)) throw validationError('system: text content blocks must be non-empty');
    return block.text;
  });
}

function normalizeAnthropicBlock(block: unknown, path: string): NormalizedBlock {
  const type = isRecord(block) ? block.type : undefined;
  if (typeof type !== 'string' || !ANTHROPIC_CONTENT_BLOCK_TYPES.includes(type)) {
    throw validationError(
      `${path}: Input tag '${quote(type)}' found using 'type' does not match any of the expected tags: ${ANTHROPIC_CONTENT_BLOCK_TYPES.map((t) => `'${t}'`).join(', ')}`,
    );
  }
  const record = block as Record<string, unknown>;
  const converseType = ANTHROPIC_TYPE_TO_CONVERSE[type] ?? type;
  if (type === 'text') {
    if (typeof record.text !== 'string' || isBlank(record.text)) {
      throw validationError('messages: text content blocks must be non-empty');
    }
    return { type: converseType, text: record.text, weight: record.text.length };
  }
  const text = type === 'tool_result' ? nestedText(record.content) : '';
  return { type: converseType, text, weight: text.length || JSON.stringify(block).length };
}

/** The model name Anthropic reports for a Bedrock model id (`anthropic.claude-3-haiku-20240307-v1:0` -> `claude-3-haiku-20240307`). */
export function anthropicModelName(model: ModelSpec): string {
  return model.modelId.replace(/^anthropic\./, '').replace(/-v\d+:\d+$/, '');
}
