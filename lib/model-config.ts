import {
  catalogModel,
  lifecycleIn,
  MODEL_FAMILIES,
  parseModelId,
  profileCallableFrom,
  suggestedReplacement,
  type CatalogModel,
} from '../lambda/shared/model-catalog';
import type { EnvironmentConfig, PriceTable } from './config';

/**
 * The environment's model checked against the model catalog (lambda/shared/model-catalog.ts), after the schema has
 * validated the settings: bin/ refuses to synthesize a stack whose model cannot serve it.
 */

/** A problem with a setting, named by its path. */
export interface ConfigIssue {
  path: string;
  message: string;
}

/** The model the default environments use: Nova Lite through the US inference profile (see the catalog entry). */
export const SUGGESTED_MODEL_ID = 'us.amazon.nova-lite-v1:0';

/**
 * What a Bedrock model identifier looks like: `provider.model[:version]` (optionally behind a geography prefix), or
 * the ARN of a foundation model or inference profile
 * (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_CreateModelInvocationJob.html, modelId pattern).
 */
const MODEL_ID_PATTERN =
  /^(?:arn:aws[a-z-]*:bedrock:[a-z0-9-]+:\d{0,12}:(?:foundation-model|inference-profile)\/)?[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})+(?::[a-z0-9-]{1,63}){0,2}$/;

/** The price table the catalog gives a model: its list prices under its id; empty when it has none. */
export function defaultPricing(modelId: string): PriceTable {
  const pricing = catalogModel(modelId)?.pricing;
  if (!pricing) return {};
  return {
    [modelId]: {
      inputPerMillion: pricing.inputPerMillion,
      outputPerMillion: pricing.outputPerMillion,
      ...(pricing.batchInputPerMillion !== undefined
        ? { batchInputPerMillion: pricing.batchInputPerMillion }
        : {}),
      ...(pricing.batchOutputPerMillion !== undefined
        ? { batchOutputPerMillion: pricing.batchOutputPerMillion }
        : {}),
      batchDiscount: 0.5,
    },
  };
}

function ids(model: CatalogModel): string[] {
  return [...model.profiles.map((p) => `${p}.${model.modelId}`), ...(model.inRegion ? [model.modelId] : [])];
}

function catalogProblems(config: EnvironmentConfig, model: CatalogModel): ConfigIssue[] {
  const { modelId, region } = config;
  const ref = parseModelId(modelId);
  const problems: string[] = [];
  const lifecycle = lifecycleIn(model, region);
  if (lifecycle.status === 'EOL') {
    const replacement = suggestedReplacement(modelId);
    problems.push(
      `${modelId} (${model.name}) reached end of life on ${lifecycle.eolDate} in ${region}: Bedrock answers every ` +
        `call with ResourceNotFoundException (${model.sources[0] ?? 'model card'}). Use ${replacement ?? 'an active model'}` +
        `${replacement === SUGGESTED_MODEL_ID ? '' : ` (or ${SUGGESTED_MODEL_ID})`} instead`,
    );
  } else if (ref.profile && !model.profiles.includes(ref.profile)) {
    problems.push(
      `${model.name} has no ${ref.profile}. inference profile; use one of ${ids(model).join(', ') || 'none'}`,
    );
  } else if (ref.profile && !profileCallableFrom(ref.profile, region)) {
    problems.push(
      `a ${ref.profile}. inference profile is called from a Region of its geography, not from ${region}; use one of ` +
        `${ids(model)
          .filter((id) => {
            const profile = parseModelId(id).profile;
            return profile === undefined ? model.inRegion : profileCallableFrom(profile, region);
          })
          .join(', ')}`,
    );
  } else if (!ref.profile && !model.inRegion) {
    problems.push(
      `${model.name} is invocable on demand only through an inference profile: use ${ids(model).join(' or ')}`,
    );
  }
  const issues = problems.map((message) => ({ path: 'modelId', message }));
  const format = config.model.format;
  if (format && format !== model.family) {
    issues.push({
      path: 'model.format',
      message: `${format} contradicts the model catalog, which gives ${model.name} the ${model.family} format; remove it`,
    });
  }
  return issues;
}

function hasPrice(pricing: PriceTable | undefined, modelId: string): boolean {
  if (!pricing) return false;
  const ref = parseModelId(modelId);
  return [modelId, ref.foundationModelId].some((key) => pricing[key] !== undefined);
}

function unknownModelProblems(config: EnvironmentConfig, raw: unknown): ConfigIssue[] {
  const { modelId } = config;
  const rawBatch = (raw as { batch?: { quotas?: unknown } } | undefined)?.batch;
  const missing: string[] = [];
  if (!config.model.format) {
    missing.push(`model.format (its native body format: one of ${MODEL_FAMILIES.join(', ')})`);
  }
  const quotasGiven =
    config.model.batchQuotaModelName !== undefined ||
    config.model.batchQuotaNames !== undefined ||
    (typeof rawBatch === 'object' && rawBatch !== null && rawBatch.quotas !== undefined);
  if (!quotasGiven) {
    missing.push(
      'its batch quotas: model.batchQuotaModelName (the "<name>" of "Records per batch inference job for <name>"), model.batchQuotaNames, or the values in batch.quotas',
    );
  }
  if (!hasPrice(config.pricing, modelId)) {
    missing.push(`pricing["${modelId}"] (USD per million input and output tokens)`);
  }
  if (missing.length === 0) return [];
  return [
    {
      path: 'modelId',
      message:
        `${modelId} is not in the model catalog (lambda/shared/model-catalog.ts); for a model outside it give ` +
        `${missing.join('; ')}. Or use a catalog model such as ${SUGGESTED_MODEL_ID}`,
    },
  ];
}

/**
 * The problems of an environment's model settings: an id that is no Bedrock model id; a catalog model that is
 * retired in the Region, called through a profile it has not (or from outside the profile's geography), or by its id
 * where it needs a profile; a `model.format` contradicting the catalog; a model outside the catalog without its
 * format, batch quota names or values, and price.
 * @param config the settings as the schema parsed them
 * @param raw the settings as written (to tell `batch.quotas` given from the defaults)
 */
export function modelConfigProblems(config: EnvironmentConfig, raw: unknown): ConfigIssue[] {
  const { modelId } = config;
  if (!MODEL_ID_PATTERN.test(modelId)) {
    return [
      {
        path: 'modelId',
        message: `${JSON.stringify(modelId)} is not a Bedrock model id (provider.model-name-v1:0, an inference profile id such as ${SUGGESTED_MODEL_ID}, or the ARN of either)`,
      },
    ];
  }
  const model = catalogModel(modelId);
  return model ? catalogProblems(config, model) : unknownModelProblems(config, raw);
}
