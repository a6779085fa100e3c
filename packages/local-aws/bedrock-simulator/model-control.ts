import { BatchServiceError } from './batch-errors';
import {
  END_OF_LIFE_MESSAGE,
  INVALID_MODEL_IDENTIFIER_MESSAGE,
  type ModelSpec,
  type ModelTable,
} from './models';

/**
 * The model questions of the Bedrock control plane, for the models of the simulator's table: GetFoundationModel
 * (GET /foundation-models/{modelIdentifier}), GetInferenceProfile (GET /inference-profiles/{inferenceProfileIdentifier})
 * and GetFoundationModelAvailability (GET /foundation-model-availability/{modelId}), in the shapes of
 * @aws-sdk/client-bedrock (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_GetFoundationModel.html,
 * .../API_GetInferenceProfile.html, .../API_GetFoundationModelAvailability.html).
 *
 * An unknown id is answered like the runtime answers it (ValidationException "The provided model identifier is
 * invalid."), a retired model and a profile Bedrock does not define with ResourceNotFoundException: the documentation
 * does not quote the control plane's answers for them.
 */

/** GetFoundationModelAvailability's answer, which tests may override per model to simulate access not enabled. */
export interface ModelAccessAnswer {
  agreementAvailability: {
    status: 'AVAILABLE' | 'PENDING' | 'NOT_AVAILABLE' | 'ERROR';
    errorMessage?: string;
  };
  authorizationStatus: 'AUTHORIZED' | 'NOT_AUTHORIZED';
  entitlementAvailability: 'AVAILABLE' | 'NOT_AVAILABLE';
  regionAvailability: 'AVAILABLE' | 'NOT_AVAILABLE';
}

/** Where the control plane runs and what it says about access. */
export interface ModelControlContext {
  readonly models: ModelTable;
  readonly region: string;
  readonly accountId: string;
  /** Access answers by foundation model id, over the default (everything AVAILABLE / AUTHORIZED). */
  readonly access?: Readonly<Record<string, Partial<ModelAccessAnswer>>>;
}

function foundationModelArn(ctx: ModelControlContext, modelId: string): string {
  return `arn:aws:bedrock:${ctx.region}::foundation-model/${modelId}`;
}

/** The model a foundation model id (or its ARN) names, refusing what Bedrock refuses. */
function foundationModel(ctx: ModelControlContext, identifier: string): ModelSpec {
  const resolved = ctx.models.tryResolve(identifier);
  if (!resolved || resolved.kind !== 'foundation-model') {
    throw new BatchServiceError('ValidationException', INVALID_MODEL_IDENTIFIER_MESSAGE);
  }
  if (resolved.spec.lifecycle === 'EOL')
    throw new BatchServiceError('ResourceNotFoundException', END_OF_LIFE_MESSAGE);
  return resolved.spec;
}

/** GetFoundationModel. */
export function getFoundationModel(ctx: ModelControlContext, identifier: string): Record<string, unknown> {
  const spec = foundationModel(ctx, identifier);
  return {
    modelDetails: {
      modelArn: foundationModelArn(ctx, spec.modelId),
      modelId: spec.modelId,
      modelName: spec.name ?? spec.modelId,
      providerName: spec.provider ?? spec.modelId.slice(0, spec.modelId.indexOf('.')),
      inputModalities: ['TEXT'],
      outputModalities: ['TEXT'],
      responseStreamingSupported: true,
      customizationsSupported: [],
      inferenceTypesSupported:
        spec.inRegion === false ? ['INFERENCE_PROFILE'] : ['ON_DEMAND', 'INFERENCE_PROFILE'],
      modelLifecycle: { status: spec.lifecycle === 'LEGACY' ? 'LEGACY' : 'ACTIVE' },
    },
  };
}

/** GetInferenceProfile, for system-defined profiles (`<geo>.<modelId>` or its ARN). */
export function getInferenceProfile(ctx: ModelControlContext, identifier: string): Record<string, unknown> {
  const resolved = ctx.models.tryResolve(identifier);
  if (!resolved || resolved.kind !== 'inference-profile') {
    throw new BatchServiceError(
      'ResourceNotFoundException',
      `Inference profile ${identifier} not found in ${ctx.region}.`,
    );
  }
  const { spec } = resolved;
  if (spec.lifecycle === 'EOL') throw new BatchServiceError('ResourceNotFoundException', END_OF_LIFE_MESSAGE);
  const bare = identifier.slice(identifier.lastIndexOf('/') + 1);
  const geo = bare.slice(0, bare.indexOf('.'));
  return {
    inferenceProfileName: `${geo.toUpperCase()} ${spec.name ?? spec.modelId}`,
    description: `Routes requests to ${spec.name ?? spec.modelId} in Regions of its geography.`,
    inferenceProfileArn: `arn:aws:bedrock:${ctx.region}:${ctx.accountId}:inference-profile/${bare}`,
    inferenceProfileId: bare,
    models: [{ modelArn: foundationModelArn(ctx, spec.modelId) }],
    status: 'ACTIVE',
    type: 'SYSTEM_DEFINED',
  };
}

/** GetFoundationModelAvailability: everything available unless `ctx.access` says otherwise for the model. */
export function getFoundationModelAvailability(
  ctx: ModelControlContext,
  identifier: string,
): Record<string, unknown> {
  const spec = foundationModel(ctx, identifier);
  const answer: ModelAccessAnswer = {
    agreementAvailability: { status: 'AVAILABLE' },
    authorizationStatus: 'AUTHORIZED',
    entitlementAvailability: 'AVAILABLE',
    regionAvailability: 'AVAILABLE',
    ...ctx.access?.[spec.modelId],
  };
  return { modelId: spec.modelId, ...answer };
}
