import {
  GetFoundationModelAvailabilityCommand,
  GetFoundationModelCommand,
  GetInferenceProfileCommand,
  GetUseCaseForModelAccessCommand,
  type BedrockClient,
  type GetFoundationModelAvailabilityCommandOutput,
} from '@aws-sdk/client-bedrock';
import { catalogModel, foundationModelId, parseModelId } from '../lambda/shared/model-catalog';
import { describeError } from './errors';

/**
 * What `corpus doctor` needs to know about the environment's model before a run: whether it is still offered
 * (lifecycle), whether this account may call it (access), and whether it takes batch jobs. The Bedrock control-plane
 * calls live here, behind {@link ModelCheck}; facts Bedrock has no API for (batch support) come from a catalog lookup
 * the caller injects ({@link CatalogLookup}), so the model catalog can be wired in without changing the doctor.
 */

/** The model's lifecycle in this Region. */
export interface ModelLifecycle {
  /**
   * ACTIVE or LEGACY (GetFoundationModel's modelLifecycle.status); NOT_FOUND when Bedrock does not offer the model
   * (or the inference profile) in the Region; UNKNOWN when the question could not be asked.
   */
  readonly status: 'ACTIVE' | 'LEGACY' | 'NOT_FOUND' | 'UNKNOWN';
  /** When the model became Legacy, when it did. */
  readonly legacySince?: Date;
  /** When the model reaches its end of life, when Bedrock says. */
  readonly endOfLife?: Date;
  /** What Bedrock answered, in a sentence. */
  readonly detail: string;
}

/** Whether this account may call the model. */
export interface ModelAccess {
  /**
   * AVAILABLE: authorized, entitled, agreed, offered here. PENDING: the Marketplace subscription is being set up.
   * NEEDS_AGREEMENT: no agreement or entitlement (the Marketplace subscription is missing or failed).
   * USE_CASE_MISSING: an Anthropic model and the account has not submitted the use case form. NOT_AUTHORIZED: an IAM
   * policy or SCP keeps the account from the model. NOT_IN_REGION: not offered in this Region. UNKNOWN: not asked.
   */
  readonly status:
    | 'AVAILABLE'
    | 'PENDING'
    | 'NEEDS_AGREEMENT'
    | 'USE_CASE_MISSING'
    | 'NOT_AUTHORIZED'
    | 'NOT_IN_REGION'
    | 'UNKNOWN';
  /** The model's provider (`Anthropic`, `Amazon`, ...), when known. */
  readonly provider?: string;
  /** What Bedrock answered, in a sentence. */
  readonly detail: string;
}

/** Whether the model takes batch inference jobs. */
export interface ModelBatchSupport {
  /** true or false from the catalog; undefined when no source says (the doctor then looks at its batch quotas). */
  readonly supported: boolean | undefined;
  /** Where the answer came from. */
  readonly source: 'catalog' | 'unknown';
}

/** Everything {@link ModelCheck} learned about one model id. */
export interface ModelFacts {
  /** The configured id: a foundation model id or an inference profile id. */
  readonly modelId: string;
  /** The foundation model behind it. */
  readonly foundationModelId: string;
  /** The inference profile, when the id is one: its status and the Regions it routes to. */
  readonly profile?: { readonly status: string; readonly regions: readonly string[] };
  readonly lifecycle: ModelLifecycle;
  readonly access: ModelAccess;
  readonly batch: ModelBatchSupport;
}

/** Answers lifecycle, access and batch support for a model id. */
export interface ModelCheck {
  check(modelId: string): Promise<ModelFacts>;
}

/** Facts a model catalog holds that Bedrock's API does not answer. */
export interface CatalogFacts {
  /** Whether the model takes batch inference jobs in this Region. */
  readonly batchInference?: boolean;
}

/** Looks a model id (foundation model or inference profile) up in a catalog; undefined when it is not there. */
export type CatalogLookup = (modelId: string) => CatalogFacts | undefined;

/**
 * The model catalog's answer to "does this model take batch jobs here": a job may name the foundation model in the
 * Regions the batch page lists for it, and an inference profile in the Regions listed for profiles
 * (https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-supported.html, as lambda/shared/model-catalog.ts
 * records it). Undefined for a model the catalog does not know; no answer where the catalog's entry is unverified.
 */
export function catalogLookupFor(region: string): CatalogLookup {
  return (modelId) => {
    const model = catalogModel(modelId);
    if (!model) return undefined;
    const { supported, foundationModelRegions, profileRegions } = model.batch;
    if (supported === 'unverified') return {};
    if (!supported) return { batchInference: false };
    const regions = parseModelId(modelId).profile ? profileRegions : foundationModelRegions;
    return { batchInference: regions === undefined || regions.includes(region) };
  };
}

/**
 * The read-only Bedrock actions the checks call, for the fix when they are denied. Named after the API operations
 * (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_GetFoundationModelAvailability.html and its siblings);
 * the Service Authorization Reference was not at hand to confirm the last two action names.
 */
export const MODEL_CHECK_ACTIONS = [
  'bedrock:GetFoundationModel',
  'bedrock:GetFoundationModelAvailability',
  'bedrock:GetInferenceProfile',
  'bedrock:GetUseCaseForModelAccess',
];

/**
 * A {@link ModelCheck} that asks the Bedrock control plane in the client's Region: GetInferenceProfile (for a profile
 * id), GetFoundationModel (lifecycle, provider), GetFoundationModelAvailability (authorization, agreement, entitlement,
 * Region) and, for Anthropic models, GetUseCaseForModelAccess (whether the first-time-use form was submitted).
 * https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html describes what each prerequisite is.
 */
export function bedrockModelCheck(client: BedrockClient, catalog?: CatalogLookup): ModelCheck {
  return {
    async check(modelId: string): Promise<ModelFacts> {
      const baseId = foundationModelId(modelId);
      const isProfile = baseId !== modelId && !modelId.startsWith('arn:');
      const catalogFacts = catalog?.(modelId) ?? catalog?.(baseId);
      const batch: ModelBatchSupport =
        catalogFacts?.batchInference === undefined
          ? { supported: undefined, source: 'unknown' }
          : { supported: catalogFacts.batchInference, source: 'catalog' };

      let profile: ModelFacts['profile'];
      if (isProfile) {
        try {
          const out = await client.send(
            new GetInferenceProfileCommand({ inferenceProfileIdentifier: modelId }),
          );
          profile = {
            status: out.status ?? 'UNKNOWN',
            regions: (out.models ?? [])
              .map((m) => /^arn:[^:]+:bedrock:([^:]*):/.exec(m.modelArn ?? '')?.[1] ?? '')
              .filter(Boolean),
          };
        } catch (error) {
          const lifecycle = lifecycleFromError(error, `inference profile ${modelId}`);
          return { modelId, foundationModelId: baseId, lifecycle, access: accessUnknown(error), batch };
        }
      }

      let lifecycle: ModelLifecycle;
      let provider: string | undefined;
      try {
        const details = (await client.send(new GetFoundationModelCommand({ modelIdentifier: baseId })))
          .modelDetails;
        provider = details?.providerName;
        const status = details?.modelLifecycle?.status;
        const legacySince = details?.modelLifecycle?.legacyTime;
        const endOfLife = details?.modelLifecycle?.endOfLifeTime;
        lifecycle = {
          status: status === 'ACTIVE' || status === 'LEGACY' ? status : 'UNKNOWN',
          ...(legacySince ? { legacySince } : {}),
          ...(endOfLife ? { endOfLife } : {}),
          detail: `GetFoundationModel: ${details?.modelName ?? baseId} by ${provider ?? 'an unnamed provider'}, ${
            status ?? 'no lifecycle status'
          }`,
        };
      } catch (error) {
        lifecycle = lifecycleFromError(error, `foundation model ${baseId}`);
        if (lifecycle.status === 'NOT_FOUND') {
          return {
            modelId,
            foundationModelId: baseId,
            ...(profile ? { profile } : {}),
            lifecycle,
            access: accessUnknown(error),
            batch,
          };
        }
      }
      provider ??= providerOf(baseId);

      let access: ModelAccess;
      try {
        const availability = await client.send(
          new GetFoundationModelAvailabilityCommand({ modelId: baseId }),
        );
        access = accessOf(availability, provider);
      } catch (error) {
        access = accessUnknown(error, provider);
      }
      if (access.status === 'AVAILABLE' && provider === 'Anthropic') {
        access = await anthropicUseCase(client, access);
      }
      return {
        modelId,
        foundationModelId: baseId,
        ...(profile ? { profile } : {}),
        lifecycle,
        access,
        batch,
      };
    },
  };
}

/** The provider a model id names (`anthropic.` -> Anthropic), for when GetFoundationModel did not answer. */
function providerOf(baseId: string): string | undefined {
  const prefix = baseId.split('.')[0];
  const known: Record<string, string> = {
    anthropic: 'Anthropic',
    amazon: 'Amazon',
    meta: 'Meta',
    mistral: 'Mistral AI',
  };
  return prefix ? known[prefix] : undefined;
}

function lifecycleFromError(error: unknown, what: string): ModelLifecycle {
  const name = error instanceof Error ? error.name : '';
  // An id Bedrock does not know in this Region: ResourceNotFoundException, or ValidationException for a malformed id.
  if (name === 'ResourceNotFoundException' || name === 'ValidationException') {
    return {
      status: 'NOT_FOUND',
      detail: `${what} is not offered in this Region (${name}: ${describeError(error)})`,
    };
  }
  return {
    status: 'UNKNOWN',
    detail: `could not ask about ${what} (${name || 'Error'}: ${describeError(error)})`,
  };
}

function accessUnknown(error: unknown, provider?: string): ModelAccess {
  const name = error instanceof Error ? error.name : 'Error';
  return {
    status: 'UNKNOWN',
    ...(provider ? { provider } : {}),
    detail: `could not ask about access (${name}: ${describeError(error)})`,
  };
}

function accessOf(
  out: GetFoundationModelAvailabilityCommandOutput,
  provider: string | undefined,
): ModelAccess {
  const agreement = out.agreementAvailability?.status;
  const detail =
    `GetFoundationModelAvailability: authorization ${out.authorizationStatus ?? '?'}, agreement ${agreement ?? '?'}` +
    `${out.agreementAvailability?.errorMessage ? ` (${out.agreementAvailability.errorMessage})` : ''}, entitlement ` +
    `${out.entitlementAvailability ?? '?'}, Region ${out.regionAvailability ?? '?'}`;
  const withProvider = provider ? { provider } : {};
  if (out.regionAvailability === 'NOT_AVAILABLE') return { status: 'NOT_IN_REGION', ...withProvider, detail };
  if (out.authorizationStatus === 'NOT_AUTHORIZED')
    return { status: 'NOT_AUTHORIZED', ...withProvider, detail };
  if (agreement === 'PENDING') return { status: 'PENDING', ...withProvider, detail };
  if (
    agreement === 'NOT_AVAILABLE' ||
    agreement === 'ERROR' ||
    out.entitlementAvailability === 'NOT_AVAILABLE'
  ) {
    return { status: 'NEEDS_AGREEMENT', ...withProvider, detail };
  }
  if (out.authorizationStatus === 'AUTHORIZED' && agreement === 'AVAILABLE') {
    return { status: 'AVAILABLE', ...withProvider, detail };
  }
  return { status: 'UNKNOWN', ...withProvider, detail };
}

/**
 * Anthropic asks first-time customers for use case details before its models answer; once per account (or per
 * organization's management account). GetUseCaseForModelAccess answers the submitted form, or ResourceNotFoundException
 * when none was submitted.
 */
async function anthropicUseCase(client: BedrockClient, access: ModelAccess): Promise<ModelAccess> {
  try {
    await client.send(new GetUseCaseForModelAccessCommand({}));
    return { ...access, detail: `${access.detail}; Anthropic use case details submitted` };
  } catch (error) {
    if (error instanceof Error && error.name === 'ResourceNotFoundException') {
      return {
        ...access,
        status: 'USE_CASE_MISSING',
        detail: `${access.detail}; the Anthropic use case details were not submitted (${describeError(error)})`,
      };
    }
    return {
      ...access,
      status: 'UNKNOWN',
      detail: `${access.detail}; could not ask whether the Anthropic use case details were submitted (${
        error instanceof Error ? error.name : 'Error'
      }: ${describeError(error)})`,
    };
  }
}
