import { createHash } from 'node:crypto';

import type { ModelSpec } from './models';
import {
  validateLlamaRequest,
  validateMistralRequest,
  validateNovaRequest,
  validateOpenAiRequest,
} from './native-formats';
import {
  anthropicModelName,
  estimateTokens,
  parseJsonBody,
  type SimulationRequest,
  validateAnthropicMessagesRequest,
} from './validation';

/** Why generation stopped, as Converse reports it. */
export type SimulatedStopReason = 'end_turn' | 'max_tokens' | 'stop_sequence';

/** How long generated answers are before any maxTokens cut (uniform, chosen from the request hash). */
export interface OutputLengthOptions {
  /** Fewest output tokens of an uncut answer. @default 16 */
  readonly minTokens: number;
  /** Most output tokens of an uncut answer. @default 96 */
  readonly maxTokens: number;
}

/** Default answer length range. */
export const DEFAULT_OUTPUT_LENGTH: OutputLengthOptions = { minTokens: 16, maxTokens: 96 };

/** What the deterministic model produced for one request, before it is put into a wire shape. */
export interface Generation {
  /** The answer text (possibly cut). */
  readonly text: string;
  /** Why it stopped. */
  readonly stopReason: SimulatedStopReason;
  /** The stop sequence that ended it, when stopReason is `stop_sequence`. */
  readonly stopSequence?: string;
  /** Estimated input tokens of the request. */
  readonly inputTokens: number;
  /** Estimated tokens of the answer text. */
  readonly outputTokens: number;
  /** Short hex hash of the request that seeds the answer (it appears in the text). */
  readonly requestHash: string;
}

/** The Converse response body, exactly as the service sends it. */
export interface ConverseWireResponse {
  output: { message: { role: 'assistant'; content: { text: string }[] } };
  stopReason: SimulatedStopReason;
  usage: { inputTokens: number; outputTokens: number; totalTokens: number };
  metrics: { latencyMs: number };
}

/** The Anthropic Messages native response body returned by InvokeModel. */
export interface AnthropicMessagesResponse {
  id: string;
  type: 'message';
  role: 'assistant';
  model: string;
  content: { type: 'text'; text: string }[];
  stop_reason: SimulatedStopReason;
  stop_sequence: string | null;
  usage: { input_tokens: number; output_tokens: number };
}

// prettier-ignore
const WORDS = [
  'corpus', 'record', 'model', 'token', 'answer', 'batch', 'shard', 'ledger', 'result', 'summary', 'signal',
  'detail', 'context', 'pattern', 'insight', 'value', 'review', 'outcome', 'measure', 'source', 'entry',
  'section', 'theme', 'point', 'fact', 'note', 'claim', 'topic', 'evidence', 'example', 'reason', 'step',
];

/** A small, fast, seedable PRNG (mulberry32). Deterministic for a given seed; never Math.random. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A stable hash of everything that makes a request different (model, system, messages, sampling,
 * stop sequences), deliberately not maxTokens: a smaller budget cuts the same answer shorter.
 */
export function requestHash(request: SimulationRequest): string {
  const canonical = JSON.stringify([
    request.model.modelId,
    request.system,
    request.messages.map((m) => [m.role, m.content.map((b) => [b.type, b.text, b.weight])]),
    request.temperature ?? null,
    request.topP ?? null,
    request.stopSequences,
  ]);
  return createHash('sha256').update(canonical).digest('hex').slice(0, 12);
}

function lastUserText(request: SimulationRequest): string {
  for (let i = request.messages.length - 1; i >= 0; i -= 1) {
    const message = request.messages[i];
    if (message?.role !== 'user') continue;
    const text = message.content
      .map((b) => b.text)
      .filter((t) => t.length > 0)
      .join(' ');
    if (text.length > 0) return text;
  }
  return '';
}

/**
 * Runs the deterministic "model": the same request always gives the same answer, different requests
 * differ. The answer starts with `[sim <hash>]`, echoes the start of the last user message, and goes on
 * with words drawn from a PRNG seeded by the hash up to a length also chosen from the hash. It is then
 * cut at the earliest stop sequence, and at `maxTokens` (stopReason `max_tokens`).
 */
export function generate(
  request: SimulationRequest,
  length: OutputLengthOptions = DEFAULT_OUTPUT_LENGTH,
): Generation {
  const hash = requestHash(request);
  const random = mulberry32(Number.parseInt(hash.slice(0, 8), 16));
  const span = Math.max(0, length.maxTokens - length.minTokens);
  const targetTokens = length.minTokens + Math.floor(random() * (span + 1));
  const echo = lastUserText(request).replace(/\s+/g, ' ').trim().slice(0, 48);
  let full = `[sim ${hash.slice(0, 8)}] Re: "${echo}".`;
  while (estimateTokens(full.length) < targetTokens) {
    full += ` ${WORDS[Math.floor(random() * WORDS.length)]}`;
  }
  full += '.';

  let stopAt = -1;
  let stopSequence: string | undefined;
  for (const sequence of request.stopSequences) {
    const at = sequence.length > 0 ? full.indexOf(sequence) : -1;
    if (at >= 0 && (stopAt < 0 || at < stopAt)) {
      stopAt = at;
      stopSequence = sequence;
    }
  }
  const candidate = stopAt >= 0 ? full.slice(0, stopAt) : full;
  const base = { inputTokens: request.inputTokens, requestHash: hash };
  if (estimateTokens(candidate.length) > request.maxTokens) {
    const text = candidate.slice(0, request.maxTokens * 4);
    return { ...base, text, stopReason: 'max_tokens', outputTokens: estimateTokens(text.length) };
  }
  const outputTokens = estimateTokens(candidate.length);
  if (stopSequence !== undefined) {
    return { ...base, text: candidate, stopReason: 'stop_sequence', stopSequence, outputTokens };
  }
  return { ...base, text: candidate, stopReason: 'end_turn', outputTokens };
}

/** Puts a generation into the Converse response shape. */
export function toConverseResponse(generation: Generation, latencyMs: number): ConverseWireResponse {
  return {
    output: { message: { role: 'assistant', content: [{ text: generation.text }] } },
    stopReason: generation.stopReason,
    usage: {
      inputTokens: generation.inputTokens,
      outputTokens: generation.outputTokens,
      totalTokens: generation.inputTokens + generation.outputTokens,
    },
    metrics: { latencyMs },
  };
}

/** Puts a generation into the Anthropic Messages native response shape. */
export function toAnthropicResponse(generation: Generation, model: ModelSpec): AnthropicMessagesResponse {
  return {
    id: `msg_bdrk_${generation.requestHash}`,
    type: 'message',
    role: 'assistant',
    model: anthropicModelName(model),
    content: [{ type: 'text', text: generation.text }],
    stop_reason: generation.stopReason,
    stop_sequence: generation.stopSequence ?? null,
    usage: { input_tokens: generation.inputTokens, output_tokens: generation.outputTokens },
  };
}

/** Options of the one-call simulate helpers. */
export interface SimulateOptions {
  /** Answer length range. */
  readonly outputLength?: OutputLengthOptions;
  /** Value for `metrics.latencyMs` (the simulated latency). @default 0 */
  readonly latencyMs?: number;
}

/** Deterministic Converse: a validated request in, the exact Converse response body out. */
export function simulateConverse(
  request: SimulationRequest,
  options: SimulateOptions = {},
): ConverseWireResponse {
  return toConverseResponse(generate(request, options.outputLength), options.latencyMs ?? 0);
}

/**
 * Validates a native InvokeModel body in the format of the model's family (its `nativeFormat`) and returns the
 * validated request: Anthropic Messages, Amazon Nova, Meta Llama, Mistral AI, OpenAI Chat Completions.
 * @throws SimulatorError ValidationException
 */
export function validateNativeRequest(body: Record<string, unknown>, model: ModelSpec): SimulationRequest {
  switch (model.nativeFormat) {
    case 'anthropic-messages':
      return validateAnthropicMessagesRequest(body, model);
    case 'amazon-nova':
      return validateNovaRequest(body, model);
    case 'meta-llama':
      return validateLlamaRequest(body, model);
    case 'mistral-chat':
      return validateMistralRequest(body, model);
    case 'openai-chat':
      return validateOpenAiRequest(body, model);
  }
}

/** A stop reason in the words of the chat-completion families. */
function finishReason(generation: Generation): 'stop' | 'length' {
  return generation.stopReason === 'max_tokens' ? 'length' : 'stop';
}

/**
 * Puts a generation into the native response shape of the model's family, as its reference shows it
 * (the family's model-parameters page; fixtures in test/fixtures/aws/models/<family>/).
 * @param request the validated request (Mistral answers a text completion in its own shape)
 * @param nowMs the clock for OpenAI's `created` (seconds)
 */
export function toNativeResponse(
  generation: Generation,
  model: ModelSpec,
  request?: Pick<SimulationRequest, 'variant'>,
  nowMs: number = Date.now(),
): Record<string, unknown> {
  const { inputTokens, outputTokens, text } = generation;
  switch (model.nativeFormat) {
    case 'anthropic-messages':
      return { ...toAnthropicResponse(generation, model) };
    case 'amazon-nova':
      return {
        output: { message: { role: 'assistant', content: [{ text }] } },
        stopReason: generation.stopReason,
        usage: { inputTokens, outputTokens, totalTokens: inputTokens + outputTokens },
      };
    case 'meta-llama':
      return {
        generation: text,
        prompt_token_count: inputTokens,
        generation_token_count: outputTokens,
        stop_reason: finishReason(generation),
      };
    case 'mistral-chat':
      // No usage in the body: Bedrock reports Mistral's tokens in the response headers.
      return request?.variant === 'text-completion'
        ? { outputs: [{ text, stop_reason: finishReason(generation) }] }
        : {
            choices: [
              {
                index: 0,
                message: { role: 'assistant', content: text },
                stop_reason: finishReason(generation),
              },
            ],
          };
    case 'openai-chat':
      return {
        id: `chatcmpl-${generation.requestHash}`,
        object: 'chat.completion',
        created: Math.floor(nowMs / 1000),
        model: model.modelId,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: text },
            finish_reason: finishReason(generation),
          },
        ],
        usage: {
          prompt_tokens: inputTokens,
          completion_tokens: outputTokens,
          total_tokens: inputTokens + outputTokens,
        },
      };
  }
}

/** A native InvokeModel result: the response body plus the usage the service reports in headers. */
export interface NativeInvocation {
  /** Parsed native response body, in the model family's shape. */
  readonly body: Record<string, unknown>;
  /** The generation behind it. */
  readonly generation: Generation;
}

/**
 * Validate and run one native InvokeModel body (raw JSON text) in one call, e.g. for a batch
 * inference record's `modelInput`.
 * @throws SimulatorError ValidationException for malformed JSON or invalid requests
 */
export function invokeModelNative(
  model: ModelSpec,
  rawBody: string,
  options: SimulateOptions = {},
): NativeInvocation {
  const request = validateNativeRequest(parseJsonBody(rawBody), model);
  const generation = generate(request, options.outputLength);
  return { body: toNativeResponse(generation, model, request), generation };
}
