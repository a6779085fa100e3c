import { validationError, type SimulatorError } from './errors';
import type { ModelSpec } from './models';
import {
  estimateTokens,
  validateConverseRequest,
  type NormalizedMessage,
  type Role,
  type SimulationRequest,
} from './validation';

/**
 * The native InvokeModel bodies of the non-Anthropic families (the Anthropic Messages format is in validation.ts),
 * validated into a {@link SimulationRequest}, as their references describe them (the model-parameters pages of the
 * Bedrock user guide and Nova's complete-request-schema page):
 * - Amazon Nova: the Converse-shaped Messages body, with `schemaVersion: "messages-v1"` and the older snake_case
 *   inference names (`max_new_tokens`, `top_p`, `top_k`) accepted beside the camelCase ones;
 * - Meta Llama: `{prompt, max_gen_len, temperature, top_p}`;
 * - Mistral AI: chat completion `{messages: [{role, content: string}], max_tokens, ...}` or text completion
 *   `{prompt, max_tokens, ...}`;
 * - OpenAI gpt-oss: Chat Completions `{messages: [{role, content}], max_completion_tokens, ...}`.
 * The error wording of these formats is not quoted by the documentation: the messages follow the Anthropic schema
 * check's style ("Malformed input request: ...") and name the member at fault.
 */

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function malformed(detail: string): SimulatorError {
  return validationError(`Malformed input request: ${detail}, please reformat your input and try again.`);
}

/** Refuses members outside `allowed` the way the schema check does. */
function checkKeys(body: Record<string, unknown>, allowed: readonly string[], path = '#'): void {
  const extra = Object.keys(body).filter((k) => !allowed.includes(k));
  if (extra.length === 1) throw malformed(`${path}: extraneous key [${extra[0] as string}] is not permitted`);
  if (extra.length > 1) {
    throw malformed(
      `${extra.length} schema violations found (${extra.map((k) => `${path}: extraneous key [${k}] is not permitted`).join('; ')})`,
    );
  }
}

function checkRange(value: unknown, name: string, min: number, max: number): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    throw validationError(`${name}: must be a number from ${min} to ${max}`);
  }
}

/** A positive integer budget no larger than the model's limit, or the model's default. */
function maxTokensOf(value: unknown, name: string, model: ModelSpec): number {
  if (value === undefined) return model.defaultMaxTokens;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw validationError(`${name}: must be a positive integer`);
  }
  if (value > model.maxOutputTokens) {
    throw validationError(
      `${name}: ${value} exceeds the model limit of ${model.maxOutputTokens} output tokens for ${model.modelId}`,
    );
  }
  return value;
}

function stopList(value: unknown, name: string): string[] {
  if (value === undefined) return [];
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((s) => typeof s === 'string')) return value as string[];
  throw validationError(`${name}: must be a string or a list of strings`);
}

function textMessage(role: Role, text: string): NormalizedMessage {
  return { role, content: [{ type: 'text', text, weight: text.length }] };
}

function checkContext(inputTokens: number, model: ModelSpec): void {
  if (inputTokens > model.contextWindow) {
    throw validationError(
      `The input is too long for the model: about ${inputTokens} tokens; ${model.modelId} accepts at most ${model.contextWindow}.`,
    );
  }
}

function withTokens(
  request: Omit<SimulationRequest, 'inputTokens'>,
  model: ModelSpec,
  chars: number,
): SimulationRequest {
  const inputTokens = Math.max(1, estimateTokens(chars));
  checkContext(inputTokens, model);
  return { ...request, inputTokens };
}

const NOVA_KEYS = ['schemaVersion', 'system', 'messages', 'inferenceConfig', 'toolConfig'];
const NOVA_INFERENCE_KEYS = [
  'maxTokens',
  'max_new_tokens',
  'temperature',
  'topP',
  'top_p',
  'topK',
  'top_k',
  'stopSequences',
];

/**
 * Validates an Amazon Nova native body
 * (https://docs.aws.amazon.com/nova/latest/userguide/complete-request-schema.html): the message rules are
 * Converse's, so the body is checked as the Converse request it is equivalent to.
 */
export function validateNovaRequest(body: Record<string, unknown>, model: ModelSpec): SimulationRequest {
  checkKeys(body, NOVA_KEYS);
  if (body.schemaVersion !== undefined && body.schemaVersion !== 'messages-v1') {
    throw malformed(
      `#/schemaVersion: ${JSON.stringify(body.schemaVersion)} is not a valid enum value (messages-v1)`,
    );
  }
  const config = body.inferenceConfig;
  if (config !== undefined && !isRecord(config))
    throw malformed('#/inferenceConfig: expected type: JSONObject');
  const inference = config ?? {};
  checkKeys(inference, NOVA_INFERENCE_KEYS, '#/inferenceConfig');
  const maxTokens = inference.maxTokens ?? inference.max_new_tokens;
  const topP = inference.topP ?? inference.top_p;
  const converse: Record<string, unknown> = {
    messages: body.messages,
    ...(body.system !== undefined ? { system: body.system } : {}),
    inferenceConfig: {
      ...(maxTokens !== undefined ? { maxTokens } : {}),
      ...(inference.temperature !== undefined ? { temperature: inference.temperature } : {}),
      ...(topP !== undefined ? { topP } : {}),
      ...(inference.stopSequences !== undefined ? { stopSequences: inference.stopSequences } : {}),
    },
  };
  return validateConverseRequest(converse, model);
}

const LLAMA_KEYS = ['prompt', 'max_gen_len', 'temperature', 'top_p', 'images'];

/** The Llama 3 chat template's special tokens, which the simulated model does not echo. */
const LLAMA_TAGS = /<\|[a-z_]+\|>/g;

/**
 * Validates a Meta Llama native body (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html):
 * `prompt` required; `max_gen_len` up to the model's limit (default 512); `temperature`, `top_p` from 0 to 1.
 */
export function validateLlamaRequest(body: Record<string, unknown>, model: ModelSpec): SimulationRequest {
  checkKeys(body, LLAMA_KEYS);
  if (!('prompt' in body)) throw malformed('#: required key [prompt] not found');
  if (typeof body.prompt !== 'string' || body.prompt.trim() === '') {
    throw validationError('prompt: must be a non-empty string');
  }
  checkRange(body.temperature, 'temperature', 0, 1);
  checkRange(body.top_p, 'top_p', 0, 1);
  const maxTokens = maxTokensOf(body.max_gen_len, 'max_gen_len', model);
  const text = body.prompt.replace(LLAMA_TAGS, ' ').replace(/\s+/g, ' ').trim();
  return withTokens(
    {
      model,
      system: [],
      messages: [textMessage('user', text)],
      maxTokens,
      ...(typeof body.temperature === 'number' ? { temperature: body.temperature } : {}),
      ...(typeof body.top_p === 'number' ? { topP: body.top_p } : {}),
      stopSequences: [],
    },
    model,
    body.prompt.length,
  );
}

const MISTRAL_CHAT_KEYS = ['messages', 'tools', 'tool_choice', 'max_tokens', 'temperature', 'top_p'];
const MISTRAL_TEXT_KEYS = ['prompt', 'max_tokens', 'stop', 'temperature', 'top_p', 'top_k'];

/** Chat messages with string content into system texts and a user/assistant conversation. */
function chatMessages(
  list: unknown,
  systemRoles: readonly string[],
  roles: readonly string[],
): { system: string[]; messages: NormalizedMessage[]; chars: number } {
  if (!Array.isArray(list) || list.length === 0) {
    throw validationError('messages: at least one message is required');
  }
  const system: string[] = [];
  const messages: NormalizedMessage[] = [];
  let chars = 0;
  list.forEach((raw, i) => {
    if (!isRecord(raw) || typeof raw.role !== 'string' || !roles.includes(raw.role)) {
      throw validationError(`messages.${i}.role: must be one of ${roles.join(', ')}`);
    }
    const content = raw.content;
    const text =
      typeof content === 'string'
        ? content
        : Array.isArray(content) && content.every((c) => isRecord(c) && typeof c.text === 'string')
          ? content.map((c) => (c as { text: string }).text).join('\n')
          : undefined;
    if (text === undefined) {
      throw validationError(`messages.${i}.content: must be a string (or a list of text parts)`);
    }
    chars += text.length;
    if (systemRoles.includes(raw.role)) system.push(text);
    else messages.push(textMessage(raw.role === 'assistant' ? 'assistant' : 'user', text));
  });
  if (messages.length === 0) throw validationError('messages: no user message');
  return { system, messages, chars };
}

/**
 * Validates a Mistral AI native body: chat completion
 * (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-mistral-chat-completion.html) or text
 * completion (.../model-parameters-mistral-text-completion.html).
 */
export function validateMistralRequest(body: Record<string, unknown>, model: ModelSpec): SimulationRequest {
  checkRange(body.temperature, 'temperature', 0, 1);
  checkRange(body.top_p, 'top_p', 0, 1);
  const maxTokens = maxTokensOf(body.max_tokens, 'max_tokens', model);
  const sampling = {
    ...(typeof body.temperature === 'number' ? { temperature: body.temperature } : {}),
    ...(typeof body.top_p === 'number' ? { topP: body.top_p } : {}),
  };
  if ('prompt' in body && !('messages' in body)) {
    checkKeys(body, MISTRAL_TEXT_KEYS);
    if (typeof body.prompt !== 'string' || body.prompt.trim() === '') {
      throw validationError('prompt: must be a non-empty string');
    }
    const text = body.prompt
      .replace(/<\/?s>|\[\/?INST\]/g, ' ')
      .replace(/\s+/g, ' ')
      .trim();
    return withTokens(
      {
        model,
        system: [],
        messages: [textMessage('user', text)],
        maxTokens,
        ...sampling,
        stopSequences: stopList(body.stop, 'stop'),
        variant: 'text-completion',
      },
      model,
      body.prompt.length,
    );
  }
  checkKeys(body, MISTRAL_CHAT_KEYS);
  if (!('messages' in body)) throw malformed('#: required key [messages] not found');
  const chat = chatMessages(body.messages, ['system'], ['system', 'user', 'assistant', 'tool']);
  return withTokens(
    { model, system: chat.system, messages: chat.messages, maxTokens, ...sampling, stopSequences: [] },
    model,
    chat.chars,
  );
}

const OPENAI_KEYS = [
  'messages',
  'model',
  'max_completion_tokens',
  'max_tokens',
  'temperature',
  'top_p',
  'stop',
  'stream',
  'reasoning_effort',
  'n',
  'seed',
  'tools',
  'tool_choice',
  'response_format',
];

/**
 * Validates an OpenAI Chat Completions body for gpt-oss
 * (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-openai.html): `model`, when given, must be
 * the model of the call; `stream` must be false for InvokeModel.
 */
export function validateOpenAiRequest(body: Record<string, unknown>, model: ModelSpec): SimulationRequest {
  checkKeys(body, OPENAI_KEYS);
  if (!('messages' in body)) throw malformed('#: required key [messages] not found');
  if (body.model !== undefined && body.model !== model.modelId) {
    throw validationError(
      `model: ${JSON.stringify(body.model)} does not match the model of the request (${model.modelId})`,
    );
  }
  if (body.stream !== undefined && body.stream !== false) {
    throw validationError('stream: must be false for InvokeModel');
  }
  if (
    body.reasoning_effort !== undefined &&
    !['low', 'medium', 'high'].includes(String(body.reasoning_effort))
  ) {
    throw validationError('reasoning_effort: must be one of low, medium, high');
  }
  checkRange(body.temperature, 'temperature', 0, 2);
  checkRange(body.top_p, 'top_p', 0, 1);
  const maxTokens = maxTokensOf(
    body.max_completion_tokens ?? body.max_tokens,
    'max_completion_tokens',
    model,
  );
  const chat = chatMessages(
    body.messages,
    ['system', 'developer'],
    ['system', 'developer', 'user', 'assistant', 'tool'],
  );
  return withTokens(
    {
      model,
      system: chat.system,
      messages: chat.messages,
      maxTokens,
      ...(typeof body.temperature === 'number' ? { temperature: body.temperature } : {}),
      ...(typeof body.top_p === 'number' ? { topP: body.top_p } : {}),
      stopSequences: stopList(body.stop, 'stop'),
    },
    model,
    chat.chars,
  );
}
