import { SimulatorError, validationError } from './errors';

/**
 * The native InvokeModel body formats the simulator speaks, one per model family: Anthropic Messages, Amazon Nova,
 * Meta Llama, Mistral AI chat completion, OpenAI Chat Completions (native-formats.ts, engine.ts).
 */
export const NATIVE_FORMATS = [
  'anthropic-messages',
  'amazon-nova',
  'meta-llama',
  'mistral-chat',
  'openai-chat',
] as const;

/** A native InvokeModel body format. */
export type NativeFormat = (typeof NATIVE_FORMATS)[number];

/**
 * The message Bedrock answers a call to a model past its end of life with (ResourceNotFoundException), as the model
 * cards quote it.
 */
export const END_OF_LIFE_MESSAGE = 'This model version has reached the end of its life.';

/** A model's lifecycle state in the simulated Region. */
export type ModelLifecycleStatus = 'ACTIVE' | 'LEGACY' | 'EOL';

/** One foundation model the simulator knows, with the limits the real service enforces for it. */
export interface ModelSpec {
  /** Foundation model id, e.g. `amazon.nova-lite-v1:0`. */
  readonly modelId: string;
  /** Most output tokens one request may ask for (`inferenceConfig.maxTokens` / `max_tokens`). */
  readonly maxOutputTokens: number;
  /** maxTokens used when a request does not set one. */
  readonly defaultMaxTokens: number;
  /** Most input tokens (system + messages) one request may carry. */
  readonly contextWindow: number;
  /** Native body format for InvokeModel (and batch inference records). */
  readonly nativeFormat: NativeFormat;
  /** Display name (GetFoundationModel's modelName). @default the model id */
  readonly name?: string;
  /** Provider (GetFoundationModel's providerName). */
  readonly provider?: string;
  /** Lifecycle in the simulated Region: an EOL model is refused as Bedrock refuses it. @default 'ACTIVE' */
  readonly lifecycle?: ModelLifecycleStatus;
  /** Geography prefixes of its system-defined inference profiles. @default any known prefix */
  readonly profiles?: readonly string[];
  /** Whether the model id itself is invocable on demand (false: only through a profile). @default true */
  readonly inRegion?: boolean;
}

/** Message of the ValidationException the real service returns for an unknown model id. */
export const INVALID_MODEL_IDENTIFIER_MESSAGE = 'The provided model identifier is invalid.';

/**
 * The ValidationException for a profile-only model called by its foundation model id (the wording Bedrock is widely
 * reported to use; the stored documentation does not quote it).
 */
export function onDemandNotSupportedMessage(modelId: string): string {
  return `Invocation of model ID ${modelId} with on-demand throughput isn't supported. Retry your request with the ID or ARN of an inference profile that contains this model.`;
}

/**
 * maxTokens a request without one gets, for a model of this format and output limit: Llama's `max_gen_len` default
 * (512, model-parameters-meta.html), else the model's limit capped as Converse's dynamic default is (5,000 for Nova,
 * 4,096 for the others).
 */
export function defaultMaxTokensFor(format: NativeFormat, maxOutputTokens: number): number {
  switch (format) {
    case 'meta-llama':
      return 512;
    case 'amazon-nova':
      return Math.min(maxOutputTokens, 5_000);
    default:
      return Math.min(maxOutputTokens, 4_096);
  }
}

/**
 * Geography prefixes of system-defined (cross-Region) inference profile ids
 * (https://docs.aws.amazon.com/bedrock/latest/userguide/cross-region-inference.html).
 */
export const INFERENCE_PROFILE_PREFIXES: readonly string[] = [
  'us',
  'us-gov',
  'eu',
  'apac',
  'jp',
  'au',
  'ca',
  'global',
];

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
  constructor(models: readonly ModelSpec[]) {
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
    const prefix = bare.slice(0, dot);
    if (dot > 0 && INFERENCE_PROFILE_PREFIXES.includes(prefix)) {
      const spec = this.byId.get(bare.slice(dot + 1));
      // Only the profiles Bedrock defines for the model exist.
      if (spec && (spec.profiles === undefined || spec.profiles.includes(prefix))) {
        return { requestedId: identifier, kind: 'inference-profile', spec };
      }
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

  /**
   * Resolves the model of an inference call and refuses what Bedrock refuses: an unknown id (ValidationException
   * "The provided model identifier is invalid."), a model past its end of life (ResourceNotFoundException "This model
   * version has reached the end of its life.", as its model card quotes), and a profile-only model called by its
   * foundation model id (ValidationException).
   * @throws SimulatorError
   */
  resolveForInference(identifier: string): ResolvedModel {
    const resolved = this.resolve(identifier);
    const refusal = inferenceRefusal(resolved);
    if (refusal) throw refusal;
    return resolved;
  }
}

/** Why Bedrock refuses inference on a resolved model, if it does (see {@link ModelTable.resolveForInference}). */
export function inferenceRefusal(resolved: ResolvedModel): SimulatorError | undefined {
  if (resolved.spec.lifecycle === 'EOL')
    return new SimulatorError('ResourceNotFoundException', END_OF_LIFE_MESSAGE);
  if (resolved.kind === 'foundation-model' && resolved.spec.inRegion === false) {
    return validationError(onDemandNotSupportedMessage(resolved.spec.modelId));
  }
  return undefined;
}
