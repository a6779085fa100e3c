/**
 * The model catalog: every Bedrock model this pipeline knows, in one place, with what the rest of the code needs to
 * know about it. Record detection (records.ts), usage of native answers (model-caller.ts, collect.ts), the batch
 * quota lookup (batch-quotas.ts), the default prices of `corpus report` (cli/cost.ts), the configuration check
 * (lib/config.ts) and the Bedrock simulator (packages/local-aws/bedrock-simulator) all read it; none of them keeps a table of its
 * own.
 *
 * Per model: the family of its native InvokeModel body, its system-defined inference profiles, whether it runs on
 * demand in-Region, batch inference support and the display name its batch quotas use in Service Quotas, prices per
 * million tokens, and its lifecycle. Each entry names the pages it was checked against. Facts the stored
 * documentation did not settle are marked `unverified` in the entry's `notes`, never guessed silently.
 *
 * Pure data and functions (no AWS SDK), so lib/ (the CDK app) and the Lambda handlers can both import it.
 */

/** Native InvokeModel body formats, one per model family. */
export const MODEL_FAMILIES = [
  'anthropic-messages',
  'amazon-nova',
  'meta-llama',
  'mistral-chat',
  'openai-chat',
] as const;
/** A native InvokeModel body format. */
export type ModelFamily = (typeof MODEL_FAMILIES)[number];

/** Input and output tokens a native answer reports. */
export interface TokenCounts {
  inputTokens: number;
  outputTokens: number;
  /** When the body says; otherwise input + output. */
  totalTokens?: number;
}

/** Members of a Converse request body (ConverseRequest less modelId), as the SDK models them. */
export const CONVERSE_REQUEST_FIELDS: ReadonlySet<string> = new Set([
  'messages',
  'system',
  'inferenceConfig',
  'toolConfig',
  'guardrailConfig',
  'additionalModelRequestFields',
  'promptVariables',
  'additionalModelResponseFieldPaths',
  'requestMetadata',
  'performanceConfig',
]);

/** Members of Converse's InferenceConfiguration. */
export const CONVERSE_INFERENCE_FIELDS: ReadonlySet<string> = new Set([
  'maxTokens',
  'temperature',
  'topP',
  'stopSequences',
]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
}

/**
 * True when a body has a member Converse does not have, at the top or in `inferenceConfig` (`schemaVersion`,
 * `max_new_tokens`, `max_completion_tokens`, `anthropic_version` ...).
 */
function hasNonConverseFields(body: Record<string, unknown>): boolean {
  for (const key in body) if (!CONVERSE_REQUEST_FIELDS.has(key)) return true;
  const config = body.inferenceConfig;
  if (isRecord(config)) for (const key in config) if (!CONVERSE_INFERENCE_FIELDS.has(key)) return true;
  return false;
}

/** True when a message's content is not a list of content blocks (chat-completion bodies use a string). */
function hasStringContent(messages: readonly unknown[]): boolean {
  for (const message of messages) if (isRecord(message) && !Array.isArray(message.content)) return true;
  return false;
}

/** What the pipeline knows about one native body format. */
export interface FamilyFormat {
  readonly family: ModelFamily;
  /** A short name for messages. */
  readonly label: string;
  /** The native request body, in brief. */
  readonly request: string;
  /** The native response body, in brief, and where its usage is. */
  readonly response: string;
  /** The request and response reference. */
  readonly source: string;
  /**
   * Whether a body that has a `messages` array is this family's native body rather than a Converse request. Bodies
   * without `messages` are native for every family (records.ts decides that before asking).
   */
  readonly isNativeMessagesBody: (body: Record<string, unknown>) => boolean;
  /** The tokens a native response body reports; undefined when the body carries none. */
  readonly usage: (body: Record<string, unknown>) => TokenCounts | undefined;
}

/** The native formats by family. */
export const FAMILY_FORMATS: Readonly<Record<ModelFamily, FamilyFormat>> = {
  'anthropic-messages': {
    family: 'anthropic-messages',
    label: 'Anthropic Messages',
    request:
      '{anthropic_version: "bedrock-2023-05-31", max_tokens, messages: [{role, content: string | [{type: "text", text}]}], system?, temperature?, top_p?, top_k?, stop_sequences?}',
    response:
      '{id, type: "message", role, content: [{type: "text", text}], model, stop_reason, stop_sequence, usage: {input_tokens, output_tokens}}',
    source:
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages-request-response.html',
    // The native body always carries anthropic_version, which Converse does not have.
    isNativeMessagesBody: (body) => 'anthropic_version' in body,
    usage: (body) => {
      const u = body.usage;
      if (!isRecord(u) || !('input_tokens' in u || 'output_tokens' in u)) return undefined;
      return { inputTokens: count(u.input_tokens), outputTokens: count(u.output_tokens) };
    },
  },
  'amazon-nova': {
    family: 'amazon-nova',
    label: 'Amazon Nova',
    request:
      '{schemaVersion?: "messages-v1", system?: [{text}], messages: [{role, content: [{text}]}], inferenceConfig?: {maxTokens | max_new_tokens, temperature, topP | top_p, topK | top_k, stopSequences}}',
    response:
      '{output: {message: {role: "assistant", content: [{text}]}}, stopReason, usage: {inputTokens, outputTokens, totalTokens}}',
    source: 'https://docs.aws.amazon.com/nova/latest/userguide/complete-request-schema.html',
    // Nova's native body is Converse-shaped; it is native when it says so (schemaVersion) or uses names Converse does
    // not have (max_new_tokens, top_p, top_k, topK). A body Converse accepts means the same to both APIs.
    isNativeMessagesBody: hasNonConverseFields,
    usage: (body) => {
      const u = body.usage;
      if (!isRecord(u) || !('inputTokens' in u || 'outputTokens' in u)) return undefined;
      return {
        inputTokens: count(u.inputTokens),
        outputTokens: count(u.outputTokens),
        ...(typeof u.totalTokens === 'number' ? { totalTokens: count(u.totalTokens) } : {}),
      };
    },
  },
  'meta-llama': {
    family: 'meta-llama',
    label: 'Meta Llama',
    request: '{prompt, max_gen_len?, temperature?, top_p?}',
    response: '{generation, prompt_token_count, generation_token_count, stop_reason}',
    source: 'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html',
    // The native body is a prompt, never messages: a body with messages is a Converse request.
    isNativeMessagesBody: () => false,
    usage: (body) => {
      if (!('prompt_token_count' in body || 'generation_token_count' in body)) return undefined;
      return {
        inputTokens: count(body.prompt_token_count),
        outputTokens: count(body.generation_token_count),
      };
    },
  },
  'mistral-chat': {
    family: 'mistral-chat',
    label: 'Mistral AI chat completion',
    request:
      '{messages: [{role: "system" | "user" | "assistant" | "tool", content: string}], max_tokens?, temperature?, top_p?, tools?, tool_choice?} (or the text completion {prompt, max_tokens?, ...})',
    response:
      '{choices: [{index, message: {role, content}, stop_reason}]} (text completion: {outputs: [{text, stop_reason}]}); no usage in the body: Bedrock reports the tokens in the X-Amzn-Bedrock-Input-Token-Count / -Output-Token-Count response headers',
    source:
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-mistral-chat-completion.html',
    isNativeMessagesBody: (body) =>
      hasNonConverseFields(body) || hasStringContent(body.messages as unknown[]),
    usage: () => undefined,
  },
  'openai-chat': {
    family: 'openai-chat',
    label: 'OpenAI Chat Completions',
    request:
      '{messages: [{role: "developer" | "system" | "user" | "assistant", content: string}], max_completion_tokens?, temperature?, top_p?, stop?, reasoning_effort?, model?, stream?: false}',
    response:
      '{id, object: "chat.completion", created, model, choices: [{index, message: {role, content}, finish_reason}], usage: {prompt_tokens, completion_tokens, total_tokens}}',
    source: 'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-openai.html',
    isNativeMessagesBody: (body) =>
      hasNonConverseFields(body) || hasStringContent(body.messages as unknown[]),
    usage: (body) => {
      const u = body.usage;
      if (!isRecord(u) || !('prompt_tokens' in u || 'completion_tokens' in u)) return undefined;
      return {
        inputTokens: count(u.prompt_tokens),
        outputTokens: count(u.completion_tokens),
        ...(typeof u.total_tokens === 'number' ? { totalTokens: count(u.total_tokens) } : {}),
      };
    },
  },
};

/**
 * Usage shapes of native answers outside the catalog's families, still read from batch output: Amazon Titan Text
 * (`{inputTextTokenCount, results: [{tokenCount}]}`,
 * https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-text.html).
 */
function otherUsage(body: Record<string, unknown>): TokenCounts | undefined {
  if (!('inputTextTokenCount' in body)) return undefined;
  const results = Array.isArray(body.results) ? body.results : [];
  const out = results.reduce<number>((sum, r) => sum + (isRecord(r) ? count(r.tokenCount) : 0), 0);
  return { inputTokens: count(body.inputTextTokenCount), outputTokens: out };
}

/**
 * The tokens a native answer reports: by its family's shape first when the family is known, else (and then) by
 * whichever known shape the body has (batch output, where Collect does not know the model). Undefined when the body
 * carries none (Mistral puts them in response headers only).
 */
export function nativeUsage(body: unknown, family?: ModelFamily): TokenCounts | undefined {
  if (!isRecord(body)) return undefined;
  if (family) {
    const usage = FAMILY_FORMATS[family].usage(body);
    if (usage) return usage;
  }
  for (const f of MODEL_FAMILIES) {
    const usage = FAMILY_FORMATS[f].usage(body);
    if (usage) return usage;
  }
  return otherUsage(body);
}

/** Geography prefixes of system-defined (cross-Region) inference profile ids. */
export const PROFILE_PREFIXES = ['us', 'us-gov', 'eu', 'apac', 'jp', 'au', 'ca', 'global'] as const;
/** A geography prefix. */
export type ProfilePrefix = (typeof PROFILE_PREFIXES)[number];

/**
 * Lifecycle per https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle-legacy.html: ACTIVE; LEGACY
 * (still callable, EOL announced); EOL (calls fail with ResourceNotFoundException, except in the Regions that still
 * serve it).
 */
export type ModelLifecycle =
  | { readonly status: 'ACTIVE'; readonly eolNotBefore?: string }
  | { readonly status: 'LEGACY'; readonly eolDate: string }
  | { readonly status: 'EOL'; readonly eolDate: string; readonly stillServedIn: readonly string[] };

/** Batch inference support of a model. */
export interface BatchSupport {
  /** Whether CreateModelInvocationJob takes the model; `unverified` when the stored documentation did not say. */
  readonly supported: boolean | 'unverified';
  /** Regions where a job may name the foundation model (where the documentation lists them). */
  readonly foundationModelRegions?: readonly string[];
  /** Regions where a job may name an inference profile of the model. */
  readonly profileRegions?: readonly string[];
  /**
   * The model's display name in its Service Quotas quota names ("Records per batch inference job for <name>").
   * Undefined when no quota of the model was found: the configured quotas are used.
   */
  readonly quotaModelName?: string;
}

/** USD per million tokens. */
export interface ModelPricing {
  readonly inputPerMillion: number;
  readonly outputPerMillion: number;
  /** Batch inference prices (the documented 50% of on demand where the page lists them). */
  readonly batchInputPerMillion?: number;
  readonly batchOutputPerMillion?: number;
}

/** One model. */
export interface CatalogModel {
  /** Foundation model id. */
  readonly modelId: string;
  /** Display name. */
  readonly name: string;
  readonly provider: 'Amazon' | 'Anthropic' | 'Meta' | 'Mistral AI' | 'OpenAI';
  readonly family: ModelFamily;
  /** Geography prefixes of its system-defined inference profiles (`us` -> `us.<modelId>`). */
  readonly profiles: readonly ProfilePrefix[];
  /** Whether the foundation model id is invocable on demand in-Region (false: only through an inference profile). */
  readonly inRegion: boolean;
  /** Input tokens one request may carry. */
  readonly contextWindow: number;
  /** Output tokens one request may ask for. */
  readonly maxOutputTokens: number;
  readonly lifecycle: ModelLifecycle;
  readonly batch: BatchSupport;
  /** List prices in us-east-1; undefined when no price was found. */
  readonly pricing?: ModelPricing;
  /** The model to move to when this one is retired or legacy (an id this catalog knows). */
  readonly replacement?: string;
  /** The pages the entry was checked against. */
  readonly sources: readonly string[];
  /** What the sources did not settle. */
  readonly notes?: readonly string[];
}

const BATCH_SUPPORTED_PAGE =
  'https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-supported.html';
const QUOTAS_PAGE = 'https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock';
const PRICING_PAGE = 'https://aws.amazon.com/bedrock/pricing/';
const LIFECYCLE_PAGE = 'https://docs.aws.amazon.com/bedrock/latest/userguide/model-lifecycle-legacy.html';

/** Regions the batch page lists for Nova Micro / Lite / Pro jobs through an inference profile. */
const NOVA_BATCH_PROFILE_REGIONS = [
  'us-east-1',
  'us-east-2',
  'us-west-2',
  'ap-northeast-1',
  'ap-northeast-2',
  'ap-south-1',
  'ap-southeast-1',
  'ap-southeast-2',
  'eu-central-1',
  'eu-north-1',
  'eu-south-1',
  'eu-south-2',
  'eu-west-1',
  'eu-west-3',
] as const;

/** The catalog. Order is display order; ids are unique. */
export const MODEL_CATALOG: readonly CatalogModel[] = [
  // Model card https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-lite.html: launched
  // 2024-12-05, Active (EOL no sooner than 2025-12-04), 300K context, 5K output, in-Region id amazon.nova-lite-v1:0,
  // geo profiles us. and eu., global not supported. Batch page: foundation model in us-east-1 and us-gov-west-1,
  // profile in the Regions below. Quota names "... for Nova Lite V1" (General Reference table; defaults 100 min /
  // 50,000 records per job and per file / 1 GB per file / 5 GB per job / 20 jobs). Pricing page: $0.00006 / $0.00024
  // per 1,000 tokens on demand, $0.00003 / $0.00012 batch.
  {
    modelId: 'amazon.nova-lite-v1:0',
    name: 'Nova Lite',
    provider: 'Amazon',
    family: 'amazon-nova',
    profiles: ['us', 'eu', 'apac'],
    inRegion: true,
    contextWindow: 300_000,
    maxOutputTokens: 5_000,
    lifecycle: { status: 'ACTIVE', eolNotBefore: '2025-12-04' },
    batch: {
      supported: true,
      foundationModelRegions: ['us-east-1', 'us-gov-west-1'],
      profileRegions: NOVA_BATCH_PROFILE_REGIONS,
      quotaModelName: 'Nova Lite V1',
    },
    pricing: {
      inputPerMillion: 0.06,
      outputPerMillion: 0.24,
      batchInputPerMillion: 0.03,
      batchOutputPerMillion: 0.12,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-lite.html',
      BATCH_SUPPORTED_PAGE,
      QUOTAS_PAGE,
      PRICING_PAGE,
    ],
    notes: [
      'apac.: the card lists only us. and eu. geo ids, but the batch page lists APAC Regions for jobs through a profile; kept so a deployment in ap-* is not refused (Plan asks GetInferenceProfile before a run)',
    ],
  },
  // Card https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-micro.html (listed on the Amazon
  // model cards index): text only, 128K context, 5K output. Batch page and quota names as Nova Lite ("Nova Micro
  // V1"). Pricing page: $0.000035 / $0.00014 per 1,000 tokens, batch $0.0000175 / $0.00007.
  {
    modelId: 'amazon.nova-micro-v1:0',
    name: 'Nova Micro',
    provider: 'Amazon',
    family: 'amazon-nova',
    profiles: ['us', 'eu', 'apac'],
    inRegion: true,
    contextWindow: 128_000,
    maxOutputTokens: 5_000,
    lifecycle: { status: 'ACTIVE' },
    batch: {
      supported: true,
      foundationModelRegions: ['us-east-1', 'us-gov-west-1'],
      profileRegions: NOVA_BATCH_PROFILE_REGIONS,
      quotaModelName: 'Nova Micro V1',
    },
    pricing: {
      inputPerMillion: 0.035,
      outputPerMillion: 0.14,
      batchInputPerMillion: 0.0175,
      batchOutputPerMillion: 0.07,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-micro.html',
      BATCH_SUPPORTED_PAGE,
      QUOTAS_PAGE,
      PRICING_PAGE,
    ],
    notes: [
      'unverified: the geo profile prefixes and lifecycle dates (the card itself was not read; as Nova Lite)',
    ],
  },
  // Card https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-pro.html. Batch page as Nova
  // Lite; quota names "... for Nova Pro V1" (its job size default is 100 GB). Pricing page: $0.0008 / $0.0032 per
  // 1,000 tokens, batch $0.0004 / $0.0016.
  {
    modelId: 'amazon.nova-pro-v1:0',
    name: 'Nova Pro',
    provider: 'Amazon',
    family: 'amazon-nova',
    profiles: ['us', 'eu', 'apac'],
    inRegion: true,
    contextWindow: 300_000,
    maxOutputTokens: 5_000,
    lifecycle: { status: 'ACTIVE' },
    batch: {
      supported: true,
      foundationModelRegions: ['us-east-1', 'us-gov-west-1'],
      profileRegions: NOVA_BATCH_PROFILE_REGIONS,
      quotaModelName: 'Nova Pro V1',
    },
    pricing: {
      inputPerMillion: 0.8,
      outputPerMillion: 3.2,
      batchInputPerMillion: 0.4,
      batchOutputPerMillion: 1.6,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-pro.html',
      BATCH_SUPPORTED_PAGE,
      QUOTAS_PAGE,
      PRICING_PAGE,
    ],
    notes: [
      'unverified: the geo profile prefixes and lifecycle dates (the card itself was not read; as Nova Lite)',
    ],
  },
  // Card https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-premier.html (on the Amazon
  // model cards index). Batch page: no foundation-model Region, profile in us-east-1, us-east-2, us-west-2. Pricing
  // page: $0.0025 / $0.0125 per 1,000 tokens, batch $0.00125 / $0.00625.
  {
    modelId: 'amazon.nova-premier-v1:0',
    name: 'Nova Premier',
    provider: 'Amazon',
    family: 'amazon-nova',
    profiles: ['us'],
    inRegion: false,
    contextWindow: 1_000_000,
    maxOutputTokens: 32_000,
    lifecycle: { status: 'LEGACY', eolDate: '2026-09-14' },
    replacement: 'amazon.nova-pro-v1:0',
    batch: {
      supported: true,
      profileRegions: ['us-east-1', 'us-east-2', 'us-west-2'],
    },
    pricing: {
      inputPerMillion: 2.5,
      outputPerMillion: 12.5,
      batchInputPerMillion: 1.25,
      batchOutputPerMillion: 6.25,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-amazon-nova-premier.html',
      BATCH_SUPPORTED_PAGE,
      PRICING_PAGE,
      LIFECYCLE_PAGE,
    ],
    notes: [
      'unverified: Legacy with EOL 2026-09-14 is a third-party summary of the lifecycle page; the card was not read (Plan asks GetFoundationModel for the live state)',
      'unverified: context window and output limit (simulator limits only); the batch quota display name',
    ],
  },
  // Card https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-haiku-4-5.html: launched
  // 2025-10-16, Active (EOL no sooner than 2026-10-01), 200K context, 64K output, in-Region id, geo profiles us. and
  // eu.; global. from the Service Quotas names ("Global cross-region model inference tokens per minute for Anthropic
  // Claude Haiku 4.5").
  {
    modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
    name: 'Claude Haiku 4.5',
    provider: 'Anthropic',
    family: 'anthropic-messages',
    profiles: ['us', 'eu', 'global'],
    inRegion: true,
    contextWindow: 200_000,
    maxOutputTokens: 64_000,
    lifecycle: { status: 'ACTIVE', eolNotBefore: '2026-10-01' },
    batch: { supported: 'unverified' },
    pricing: {
      inputPerMillion: 1,
      outputPerMillion: 5,
      batchInputPerMillion: 0.5,
      batchOutputPerMillion: 2.5,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-haiku-4-5.html',
      QUOTAS_PAGE,
      PRICING_PAGE,
    ],
    notes: [
      'unverified: batch inference support, its Regions and batch quota names (not found in the stored batch page or quota tables): runs use the configured batch quotas',
      'unverified: prices (Anthropic list prices; the Bedrock pricing page renders prices client-side and its stored copy had none for this model)',
    ],
  },
  // Service Quotas names the model "Anthropic Claude Sonnet 4.5 V1" (cross-Region and global quotas) on the
  // General Reference page; card https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-sonnet-4-5.html.
  {
    modelId: 'anthropic.claude-sonnet-4-5-20250929-v1:0',
    name: 'Claude Sonnet 4.5',
    provider: 'Anthropic',
    family: 'anthropic-messages',
    profiles: ['us', 'eu', 'global'],
    inRegion: false,
    contextWindow: 200_000,
    maxOutputTokens: 64_000,
    lifecycle: { status: 'ACTIVE' },
    batch: { supported: 'unverified' },
    pricing: {
      inputPerMillion: 3,
      outputPerMillion: 15,
      batchInputPerMillion: 1.5,
      batchOutputPerMillion: 7.5,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-sonnet-4-5.html',
      QUOTAS_PAGE,
      PRICING_PAGE,
    ],
    notes: [
      'unverified: the card was not read; in-Region on-demand support (taken as profile only), lifecycle, limits, prices and batch support',
    ],
  },
  // Batch quota names "... for Llama 3.3 70B Instruct" (General Reference table: 50,000 records per job and per file,
  // 5 GB per job, 20 jobs). Pricing page: $0.00072 / $0.00072 per 1,000 tokens, batch $0.00036 / $0.00036. Request
  // and response: https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html (Llama 3.3 is
  // geofenced to its Regions).
  {
    modelId: 'meta.llama3-3-70b-instruct-v1:0',
    name: 'Llama 3.3 70B Instruct',
    provider: 'Meta',
    family: 'meta-llama',
    profiles: ['us'],
    inRegion: false,
    contextWindow: 128_000,
    maxOutputTokens: 2_048,
    lifecycle: { status: 'ACTIVE' },
    batch: { supported: true, quotaModelName: 'Llama 3.3 70B Instruct' },
    pricing: {
      inputPerMillion: 0.72,
      outputPerMillion: 0.72,
      batchInputPerMillion: 0.36,
      batchOutputPerMillion: 0.36,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html',
      QUOTAS_PAGE,
      PRICING_PAGE,
    ],
    notes: [
      'unverified: the card was not read: lifecycle (Llama 3.1 405B is Legacy since 2026-07-07), profile-only access, batch Regions',
    ],
  },
  // Batch quota names "... for Mistral Large 2 (24.07)" (General Reference table). Request and response:
  // https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-mistral-chat-completion.html.
  {
    modelId: 'mistral.mistral-large-2407-v1:0',
    name: 'Mistral Large 2 (24.07)',
    provider: 'Mistral AI',
    family: 'mistral-chat',
    profiles: [],
    inRegion: true,
    contextWindow: 128_000,
    maxOutputTokens: 8_192,
    lifecycle: { status: 'ACTIVE' },
    batch: { supported: true, quotaModelName: 'Mistral Large 2 (24.07)' },
    pricing: {
      inputPerMillion: 2,
      outputPerMillion: 6,
      batchInputPerMillion: 1,
      batchOutputPerMillion: 3,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-mistral-chat-completion.html',
      QUOTAS_PAGE,
    ],
    notes: [
      'unverified: Regions (us-west-2 at launch), lifecycle, limits and prices (not on the stored copy of the pricing page)',
    ],
  },
  // https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-openai.html: model ids
  // openai.gpt-oss-20b-1:0 and openai.gpt-oss-120b-1:0, released 2025-08-05, 128,000-token context, text only;
  // InvokeModel takes the OpenAI Chat Completions body and answers a chat completion object. Batch quota names
  // "... for OpenAI GPT OSS 20b" / "... 120b" (Service Quotas).
  {
    modelId: 'openai.gpt-oss-20b-1:0',
    name: 'gpt-oss-20b',
    provider: 'OpenAI',
    family: 'openai-chat',
    profiles: [],
    inRegion: true,
    contextWindow: 128_000,
    maxOutputTokens: 32_768,
    lifecycle: { status: 'ACTIVE' },
    batch: { supported: true, quotaModelName: 'OpenAI GPT OSS 20b' },
    pricing: { inputPerMillion: 0.07, outputPerMillion: 0.3 },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-openai.html',
      QUOTAS_PAGE,
    ],
    notes: [
      'unverified: Regions and inference profiles, the output limit (simulator limit only), prices (AWS launch announcement; not on the stored copy of the pricing page), batch prices',
    ],
  },
  {
    modelId: 'openai.gpt-oss-120b-1:0',
    name: 'gpt-oss-120b',
    provider: 'OpenAI',
    family: 'openai-chat',
    profiles: [],
    inRegion: true,
    contextWindow: 128_000,
    maxOutputTokens: 32_768,
    lifecycle: { status: 'ACTIVE' },
    batch: { supported: true, quotaModelName: 'OpenAI GPT OSS 120b' },
    pricing: { inputPerMillion: 0.15, outputPerMillion: 0.6 },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-openai.html',
      QUOTAS_PAGE,
    ],
    notes: [
      'unverified: Regions and inference profiles, the output limit (simulator limit only), prices (AWS launch announcement; not on the stored copy of the pricing page), batch prices',
    ],
  },
  // Card https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-3-haiku.html: "In most
  // Regions, Claude 3 Haiku reached end of life on September 10, 2026, where requests now fail with
  // ResourceNotFoundException: This model version has reached the end of its life." Still available in ca-central-1,
  // eu-central-2 and sa-east-1, Legacy in ap-northeast-2. Kept so the id is recognized and refused with that date.
  {
    modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
    name: 'Claude 3 Haiku',
    provider: 'Anthropic',
    family: 'anthropic-messages',
    profiles: ['us', 'eu', 'apac'],
    inRegion: true,
    contextWindow: 200_000,
    maxOutputTokens: 4_096,
    lifecycle: {
      status: 'EOL',
      eolDate: '2026-09-10',
      stillServedIn: ['ca-central-1', 'eu-central-2', 'sa-east-1', 'ap-northeast-2'],
    },
    replacement: 'anthropic.claude-haiku-4-5-20251001-v1:0',
    batch: { supported: true, quotaModelName: 'Claude 3 Haiku' },
    pricing: {
      inputPerMillion: 0.25,
      outputPerMillion: 1.25,
      batchInputPerMillion: 0.125,
      batchOutputPerMillion: 0.625,
    },
    sources: [
      'https://docs.aws.amazon.com/bedrock/latest/userguide/model-card-anthropic-claude-3-haiku.html',
      LIFECYCLE_PAGE,
      PRICING_PAGE,
    ],
  },
];

/** The message Bedrock answers a call to a model past its end of life with (ResourceNotFoundException). */
export const END_OF_LIFE_MESSAGE = 'This model version has reached the end of its life.';

const BY_ID = new Map(MODEL_CATALOG.map((m) => [m.modelId, m]));

const ARN = /^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:\d{0,12}:(foundation-model|inference-profile)\/(.+)$/;

/** A model id (foundation model, system-defined inference profile, or the ARN of either) taken apart. */
export interface ModelReference {
  /** As written. */
  readonly requested: string;
  /** The foundation model id behind it. */
  readonly foundationModelId: string;
  /** The geography prefix, when it names a system-defined inference profile. */
  readonly profile?: ProfilePrefix;
}

/** Takes a model id, inference profile id (`us.`, `eu.`, `global.` ...) or the ARN of either apart. */
export function parseModelId(modelId: string): ModelReference {
  const arn = ARN.exec(modelId);
  const bare = arn?.[2] ?? modelId;
  const dot = bare.indexOf('.');
  const prefix = dot > 0 ? bare.slice(0, dot) : '';
  if ((PROFILE_PREFIXES as readonly string[]).includes(prefix) && bare.indexOf('.', dot + 1) > 0) {
    return { requested: modelId, foundationModelId: bare.slice(dot + 1), profile: prefix as ProfilePrefix };
  }
  return { requested: modelId, foundationModelId: bare };
}

/** The foundation model id behind a model id, inference profile id or ARN. */
export function foundationModelId(modelId: string): string {
  return parseModelId(modelId).foundationModelId;
}

/** The catalog entry of a model id, inference profile id or ARN; undefined for a model the catalog does not know. */
export function catalogModel(modelId: string): CatalogModel | undefined {
  return BY_ID.get(foundationModelId(modelId));
}

/** The native format of a model id, inference profile id or ARN; undefined for a model the catalog does not know. */
export function catalogFamily(modelId: string): ModelFamily | undefined {
  return catalogModel(modelId)?.family;
}

/**
 * The family a deployment's model speaks: the environment's explicit `model.format` (for a model the catalog does not
 * know, passed to the functions as MODEL_FORMAT), else the catalog's.
 */
export function modelFamily(modelId: string, explicit?: ModelFamily): ModelFamily | undefined {
  return explicit ?? catalogFamily(modelId);
}

/** The lifecycle of a model in a Region: an EOL model still served there counts as LEGACY. */
export function lifecycleIn(model: CatalogModel, region: string): ModelLifecycle {
  const { lifecycle } = model;
  if (lifecycle.status === 'EOL' && lifecycle.stillServedIn.includes(region)) {
    return { status: 'LEGACY', eolDate: lifecycle.eolDate };
  }
  return lifecycle;
}

/** The id to suggest instead of a retired or legacy model (its replacement, through the same kind of profile). */
export function suggestedReplacement(modelId: string): string | undefined {
  const model = catalogModel(modelId);
  const replacement = model?.replacement ? BY_ID.get(model.replacement) : undefined;
  if (!replacement) return undefined;
  const { profile } = parseModelId(modelId);
  const viaProfile =
    profile && replacement.profiles.includes(profile)
      ? profile
      : !replacement.inRegion
        ? replacement.profiles[0]
        : undefined;
  return viaProfile ? `${viaProfile}.${replacement.modelId}` : replacement.modelId;
}

/**
 * Whether an inference profile of a geography may be called from a Region: `us.` from us-*, `eu.` from eu-*, `apac.`
 * from ap-*, `global.` from anywhere (https://docs.aws.amazon.com/bedrock/latest/userguide/cross-region-inference.html:
 * a profile is called from one of its source Regions).
 */
export function profileCallableFrom(profile: ProfilePrefix, region: string): boolean {
  switch (profile) {
    case 'global':
      return true;
    case 'us':
      return region.startsWith('us-') && !region.startsWith('us-gov-');
    case 'us-gov':
      return region.startsWith('us-gov-');
    case 'eu':
      return region.startsWith('eu-');
    case 'apac':
      return region.startsWith('ap-');
    case 'jp':
      return region.startsWith('ap-northeast-');
    case 'au':
      return region.startsWith('ap-southeast-');
    case 'ca':
      return region.startsWith('ca-');
  }
}
