import { validationError } from './errors';

/** The native InvokeModel body format a model family speaks. Only `anthropic-messages` is simulated. */
export type NativeFormat = 'anthropic-messages' | 'amazon-nova' | 'meta-llama';

/** One foundation model the simulator knows, with the limits the real service enforces for it. */
export interface ModelSpec {
  /** Foundation model id, e.g. `anthropic.claude-3-haiku-20240307-v1:0`. */
  readonly modelId: string;
  /** Most output tokens one request may ask for (`inferenceConfig.maxTokens` / `max_tokens`). */
  readonly maxOutputTokens: number;
  /** maxTokens used when a Converse request does not set one. */
  readonly defaultMaxTokens: number;
  /** Most input tokens (system + messages) one request may carry. */
  readonly contextWindow: number;
  /** Native body format for InvokeModel (and batch inference records). */
  readonly nativeFormat: NativeFormat;
}

/** Message of the ValidationException the real service returns for an unknown model id. */
export const INVALID_MODEL_IDENTIFIER_MESSAGE = 'The provided model identifier is invalid.';

/**
 * The built-in model table. Limits follow the Bedrock model cards (on-demand, without beta headers);
 * the simulator only needs them to be plausible and stable.
 */
export const DEFAULT_MODELS: readonly ModelSpec[] = [
  anthropic('anthropic.claude-3-haiku-20240307-v1:0', 4096),
  anthropic('anthropic.claude-3-sonnet-20240229-v1:0', 4096),
  anthropic('anthropic.claude-3-5-haiku-20241022-v1:0', 8192),
  anthropic('anthropic.claude-3-5-sonnet-20240620-v1:0', 4096),
  anthropic('anthropic.claude-3-5-sonnet-20241022-v2:0', 8192),
  anthropic('anthropic.claude-3-7-sonnet-20250219-v1:0', 64000),
  anthropic('anthropic.claude-sonnet-4-20250514-v1:0', 64000),
  nova('amazon.nova-micro-v1:0', 128_000),
  nova('amazon.nova-lite-v1:0', 300_000),
  nova('amazon.nova-pro-v1:0', 300_000),
  llama('meta.llama3-1-8b-instruct-v1:0'),
  llama('meta.llama3-1-70b-instruct-v1:0'),
];

function anthropic(modelId: string, maxOutputTokens: number): ModelSpec {
  return {
    modelId,
    maxOutputTokens,
    defaultMaxTokens: Math.min(maxOutputTokens, 4096),
    contextWindow: 200_000,
    nativeFormat: 'anthropic-messages',
  };
}

function nova(modelId: string, contextWindow: number): ModelSpec {
  return {
    modelId,
    maxOutputTokens: 10_000,
    defaultMaxTokens: 5000,
    contextWindow,
    nativeFormat: 'amazon-nova',
  };
}

function llama(modelId: string): ModelSpec {
  return {
    modelId,
    maxOutputTokens: 2048,
    defaultMaxTokens: 512,
    contextWindow: 128_000,
    nativeFormat: 'meta-llama',
  };
}

/** Geography prefixes of system-defined (cross-Region) inference profile ids. */
export const INFERENCE_PROFILE_PREFIXES: readonly string[] = ['us', 'eu', 'apac', 'global'];

/** How a model identifier in a request was written. */
export type ModelIdentifierKind = 'foundation-model' | 'inference-profile';

/** A request's model identifier resolved against the model table. */
export interface ResolvedModel {
  /** The identifier as the caller sent it (URL-decoded). */
  readonly requestedId: string;
  /** Whether it named the model directly or through an inference profile. */
  readonly kind: ModelIdentifierKind;
  /** The model it resolves to. */
  readonly spec: ModelSpec;
}

const FOUNDATION_MODEL_ARN = /^arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]+::foundation-model\/(.+)$/;
const INFERENCE_PROFILE_ARN = /^arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]+:\d{12}:inference-profile\/(.+)$/;

/**
 * A lookup table of models, shared by the runtime (Converse/InvokeModel) and the batch control plane.
 * Accepts foundation model ids, inference profile ids (`us.`/`eu.`/`apac.`/`global.` + a model id)
 * and the ARNs of either.
 */
export class ModelTable {
  private readonly byId = new Map<string, ModelSpec>();

  /** @param models the models to know; later entries with the same id replace earlier ones. */
  constructor(models: readonly ModelSpec[] = DEFAULT_MODELS) {
    for (const model of models) this.byId.set(model.modelId, model);
  }

  /** Every known model, in table order. */
  list(): ModelSpec[] {
    return [...this.byId.values()];
  }

  /** The model with exactly this foundation model id, if known. */
  get(modelId: string): ModelSpec | undefined {
    return this.byId.get(modelId);
  }

  /**
   * Resolves a model identifier as sent in a request path or a job's modelId.
   * @returns undefined when the identifier names no known model
   */
  tryResolve(identifier: string): ResolvedModel | undefined {
    const fmArn = FOUNDATION_MODEL_ARN.exec(identifier);
    if (fmArn?.[1] !== undefined) {
      const spec = this.byId.get(fmArn[1]);
      return spec && { requestedId: identifier, kind: 'foundation-model', spec };
    }
    const profileArn = INFERENCE_PROFILE_ARN.exec(identifier);
    const bare = profileArn?.[1] ?? identifier;
    const direct = profileArn ? undefined : this.byId.get(bare);
    if (direct) return { requestedId: identifier, kind: 'foundation-model', spec: direct };
    const dot = bare.indexOf('.');
    if (dot > 0 && INFERENCE_PROFILE_PREFIXES.includes(bare.slice(0, dot))) {
      const spec = this.byId.get(bare.slice(dot + 1));
      if (spec) return { requestedId: identifier, kind: 'inference-profile', spec };
    }
    return undefined;
  }

  /**
   * Like {@link tryResolve}, but answers an unknown identifier the way the real service does.
   * @throws SimulatorError ValidationException "The provided model identifier is invalid."
   */
  resolve(identifier: string): ResolvedModel {
    const resolved = this.tryResolve(identifier);
    if (!resolved) throw validationError(INVALID_MODEL_IDENTIFIER_MESSAGE);
    return resolved;
  }
}
