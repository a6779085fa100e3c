import {
  GetFoundationModelAvailabilityCommand,
  GetFoundationModelCommand,
  GetInferenceProfileCommand,
  type BedrockClient,
} from '@aws-sdk/client-bedrock';
import { callDependency, errorMessage, errorName, ModelNotAvailableError } from '../shared/errors';
import {
  catalogModel,
  lifecycleIn,
  parseModelId,
  suggestedReplacement,
  type ModelReference,
} from '../shared/model-catalog';
import { logger } from '../shared/observability';

/**
 * Plan's one question to Bedrock before a run: can the configured model serve it? The catalog answers for a model it
 * knows to be retired; otherwise the control plane does, once per execution environment (successes are cached):
 * - GetInferenceProfile for a system-defined inference profile id (it exists in this Region, ACTIVE);
 * - GetFoundationModel for the model behind it (offered in this Region; its `modelLifecycle`; on-demand support
 *   when the id names the model directly);
 * - GetFoundationModelAvailability (access enabled for the account: entitlement, authorization, agreement, Region).
 * (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_GetInferenceProfile.html,
 * .../API_GetFoundationModel.html, .../API_GetFoundationModelAvailability.html; the SDK's shapes in
 * @aws-sdk/client-bedrock.)
 *
 * A refusal is a {@link ModelNotAvailableError} that says what to do. Throttling and 5xx answers are transient
 * (the workflow retries Plan); AccessDenied on a question itself skips that check with a warning, since the model
 * calls report the real problem anyway and a missing read permission should not stop runs.
 */

/** What the check learned. */
export interface ModelAvailability {
  modelId: string;
  foundationModelId: string;
  /** `modelLifecycle.status` from GetFoundationModel, when it answered. */
  lifecycle?: string;
  /** Checks skipped (AccessDenied) and warnings (a Legacy model), for the log. */
  notes: string[];
}

/** The Bedrock console page where model access is managed, in a Region. */
export function modelAccessPage(region: string): string {
  return `https://console.aws.amazon.com/bedrock/home?region=${region}#/modelaccess`;
}

/** How to enable access to a model, for messages. */
function enableAccessAdvice(region: string, provider: string | undefined): string {
  const anthropic =
    provider === 'Anthropic' ? '; Anthropic models also need the first-time use case form there' : '';
  return (
    `enable access to the model in the Bedrock console's Model access page (${modelAccessPage(region)})${anthropic}; ` +
    'the first call of a model sold through AWS Marketplace also needs aws-marketplace:Subscribe (and ViewSubscriptions) ' +
    'for the identity that makes it'
  );
}

function isNotFound(err: unknown): boolean {
  const name = errorName(err);
  return name === 'ResourceNotFoundException' || name === 'ValidationException';
}

function isAccessDenied(err: unknown): boolean {
  return errorName(err) === 'AccessDeniedException';
}

/** The message for a model the catalog knows to be past its end of life in this Region. */
export function retiredModelMessage(modelId: string, region: string): string | undefined {
  const model = catalogModel(modelId);
  if (!model) return undefined;
  const lifecycle = lifecycleIn(model, region);
  if (lifecycle.status !== 'EOL') return undefined;
  const replacement = suggestedReplacement(modelId);
  return (
    `${modelId} (${model.name}) reached end of life in ${region} on ${lifecycle.eolDate}: Bedrock answers every call ` +
    `with ResourceNotFoundException. Set modelId to an active model` +
    `${replacement ? ` such as ${replacement}` : ''} and deploy again (${model.sources[0] ?? 'model card'})`
  );
}

async function checkProfile(client: BedrockClient, ref: ModelReference, region: string): Promise<string[]> {
  try {
    const out = await callDependency('Bedrock GetInferenceProfile', () =>
      client.send(new GetInferenceProfileCommand({ inferenceProfileIdentifier: ref.requested })),
    );
    if (out.status !== undefined && out.status !== 'ACTIVE') {
      throw new ModelNotAvailableError(
        `The inference profile ${ref.requested} is ${out.status} in ${region}; use an ACTIVE profile or the model id`,
      );
    }
    return [];
  } catch (err) {
    if (err instanceof ModelNotAvailableError) throw err;
    if (isAccessDenied(err))
      return [`GetInferenceProfile not allowed (${errorMessage(err)}): profile check skipped`];
    if (isNotFound(err)) {
      throw new ModelNotAvailableError(
        `The inference profile ${ref.requested} does not exist in ${region} (${errorName(err)}: ${errorMessage(err)}): ` +
          `a ${ref.profile ?? ''}. profile is called from a Region of its geography; check the Region and the id ` +
          `(aws bedrock list-inference-profiles --region ${region})`,
      );
    }
    throw err;
  }
}

async function checkFoundationModel(
  client: BedrockClient,
  ref: ModelReference,
  region: string,
): Promise<{ lifecycle?: string; notes: string[] }> {
  try {
    const out = await callDependency('Bedrock GetFoundationModel', () =>
      client.send(new GetFoundationModelCommand({ modelIdentifier: ref.foundationModelId })),
    );
    const details = out.modelDetails;
    const lifecycle = details?.modelLifecycle?.status;
    const notes: string[] = [];
    if (lifecycle === 'LEGACY') {
      const eol = details?.modelLifecycle?.endOfLifeTime;
      notes.push(
        `${ref.foundationModelId} is LEGACY${eol ? `: end of life ${eol.toISOString().slice(0, 10)}` : ''}; move to an active model`,
      );
    }
    const types = details?.inferenceTypesSupported;
    if (!ref.profile && types && !types.includes('ON_DEMAND')) {
      const model = catalogModel(ref.foundationModelId);
      const profile = model?.profiles[0];
      throw new ModelNotAvailableError(
        `${ref.foundationModelId} is not invocable on demand by its model id in ${region} (inferenceTypesSupported: ` +
          `${types.join(', ') || 'none'}): set modelId to an inference profile of it` +
          `${profile ? `, such as ${profile}.${ref.foundationModelId}` : ''}`,
      );
    }
    return { ...(lifecycle ? { lifecycle } : {}), notes };
  } catch (err) {
    if (err instanceof ModelNotAvailableError) throw err;
    if (isAccessDenied(err)) {
      return { notes: [`GetFoundationModel not allowed (${errorMessage(err)}): lifecycle check skipped`] };
    }
    if (isNotFound(err)) {
      throw new ModelNotAvailableError(
        `Bedrock does not offer ${ref.foundationModelId} in ${region} (${errorName(err)}: ${errorMessage(err)}): ` +
          'the model id is wrong, the model is not available in this Region, or it reached end of life ' +
          `(aws bedrock list-foundation-models --region ${region} lists what is)`,
      );
    }
    throw err;
  }
}

async function checkAccess(client: BedrockClient, ref: ModelReference, region: string): Promise<string[]> {
  let out;
  try {
    out = await callDependency('Bedrock GetFoundationModelAvailability', () =>
      client.send(new GetFoundationModelAvailabilityCommand({ modelId: ref.foundationModelId })),
    );
  } catch (err) {
    if (isAccessDenied(err)) {
      return [`GetFoundationModelAvailability not allowed (${errorMessage(err)}): access check skipped`];
    }
    if (isNotFound(err)) {
      throw new ModelNotAvailableError(
        `Bedrock knows no model ${ref.foundationModelId} in ${region} (${errorName(err)}: ${errorMessage(err)})`,
      );
    }
    throw err;
  }
  const provider = catalogModel(ref.foundationModelId)?.provider;
  const problems: string[] = [];
  if (out.entitlementAvailability === 'NOT_AVAILABLE')
    problems.push('model access is not enabled for the account');
  if (out.authorizationStatus === 'NOT_AUTHORIZED')
    problems.push('the account is not authorized to use the model');
  if (out.agreementAvailability?.status === 'ERROR' || out.agreementAvailability?.status === 'PENDING') {
    problems.push(
      `its Marketplace agreement is ${out.agreementAvailability.status}` +
        `${out.agreementAvailability.errorMessage ? ` (${out.agreementAvailability.errorMessage})` : ''}`,
    );
  }
  // Through a profile the model may be served from other Regions of its geography.
  if (!ref.profile && out.regionAvailability === 'NOT_AVAILABLE') {
    problems.push(`the model is not available in ${region}`);
  }
  if (problems.length > 0) {
    throw new ModelNotAvailableError(
      `${ref.requested} cannot be used in ${region}: ${problems.join('; ')}. To fix it: ${enableAccessAdvice(region, provider)}`,
    );
  }
  return [];
}

/**
 * Checks, before a run, that the model can serve it.
 * @throws ModelNotAvailableError when it cannot (retired, unknown in this Region, profile-only, access not enabled)
 * @throws TransientDependencyError when Bedrock throttled or failed (the workflow retries Plan)
 */
export async function checkModelAvailability(
  client: BedrockClient,
  modelId: string,
  region: string,
): Promise<ModelAvailability> {
  const retired = retiredModelMessage(modelId, region);
  if (retired) throw new ModelNotAvailableError(retired);
  const ref = parseModelId(modelId);
  const notes: string[] = [];
  if (ref.profile) notes.push(...(await checkProfile(client, ref, region)));
  const foundation = await checkFoundationModel(client, ref, region);
  notes.push(...foundation.notes);
  notes.push(...(await checkAccess(client, ref, region)));
  return {
    modelId,
    foundationModelId: ref.foundationModelId,
    ...(foundation.lifecycle ? { lifecycle: foundation.lifecycle } : {}),
    notes,
  };
}

/** Caches successful checks per model for an execution environment's life (or the TTL); refusals are asked again. */
export class ModelAvailabilityCache {
  private readonly entries = new Map<string, { at: number; availability: ModelAvailability }>();

  /**
   * @param ttlMs how long a success stays valid (default 1 hour: an access revoked meanwhile fails the model calls)
   * @param now clock in ms
   */
  constructor(
    private readonly ttlMs = 60 * 60 * 1000,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The model's availability: cached, or checked now (and cached when it passes).
   * @throws as {@link checkModelAvailability}
   */
  async check(client: BedrockClient, modelId: string, region: string): Promise<ModelAvailability> {
    const key = `${region}\u0000${modelId}`;
    const hit = this.entries.get(key);
    if (hit && this.now() - hit.at < this.ttlMs) return hit.availability;
    const availability = await checkModelAvailability(client, modelId, region);
    if (availability.notes.length > 0) {
      logger.warn('model availability: notes', { modelId, notes: availability.notes });
    }
    this.entries.set(key, { at: this.now(), availability });
    return availability;
  }
}
