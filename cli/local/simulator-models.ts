/**
 * The pipeline's model catalog as the Bedrock simulator's model table: the simulator knows no models of its own, the
 * local runtime (and the tests) hand it these.
 */
import { defaultMaxTokensFor, type ModelSpec } from '@corpus-pipeline/local-aws/bedrock-simulator';
import { lifecycleIn, MODEL_CATALOG, type CatalogModel } from '../../lambda/shared/model-catalog';

/** The simulator's spec of a catalog model, with its lifecycle in `region`. */
export function specFromCatalog(model: CatalogModel, region = 'us-east-1'): ModelSpec {
  return {
    modelId: model.modelId,
    maxOutputTokens: model.maxOutputTokens,
    defaultMaxTokens: defaultMaxTokensFor(model.family, model.maxOutputTokens),
    contextWindow: model.contextWindow,
    // Every family of the catalog is a format the simulator speaks (a new family fails to compile here).
    nativeFormat: model.family,
    name: model.name,
    provider: model.provider,
    lifecycle: lifecycleIn(model, region).status,
    profiles: model.profiles,
    inRegion: model.inRegion,
  };
}

/**
 * Every model of the catalog (lambda/shared/model-catalog.ts), its limits from the model cards, its lifecycle in
 * us-east-1 (the retired Claude 3 Haiku is known, and refused).
 */
export const CATALOG_MODELS: readonly ModelSpec[] = MODEL_CATALOG.map((m) => specFromCatalog(m));
