/**
 * The Bedrock simulator with the pipeline's model catalog as its default model table, as the local runtime starts it
 * (cli/local/simulator-models.ts): the simulator's suites test it on the models the pipeline runs.
 */
import {
  BatchJobService as BaseBatchJobService,
  BedrockRuntimeService as BaseRuntimeService,
  ModelTable as BaseModelTable,
  startBedrockSimulator as startBase,
  type BatchServiceDeps,
  type BatchServiceOptions,
  type BedrockSimulator,
  type BedrockSimulatorOptions as BaseSimulatorOptions,
  type ModelSpec,
  type RuntimeServiceOptions,
} from '@corpus-pipeline/local-aws/bedrock-simulator';
import { CATALOG_MODELS } from '../../../../cli/local/simulator-models';

export * from '@corpus-pipeline/local-aws/bedrock-simulator';
export { CATALOG_MODELS };

/** Options with the model table optional (the catalog's by default). */
type WithCatalog<T extends { models: unknown }> = Omit<T, 'models'> & Partial<Pick<T, 'models'>>;

/** The simulator's options, the model table optional. */
export type BedrockSimulatorOptions = WithCatalog<BaseSimulatorOptions>;

/** {@link startBase} on the catalog's models unless `options.models` says otherwise. */
export function startBedrockSimulator(options: BedrockSimulatorOptions = {}): Promise<BedrockSimulator> {
  return startBase({ models: CATALOG_MODELS, ...options });
}

/** A model table of the catalog's models by default. */
export class ModelTable extends BaseModelTable {
  constructor(models: readonly ModelSpec[] = CATALOG_MODELS) {
    super(models);
  }
}

/** The runtime service on the catalog's models by default. */
export class BedrockRuntimeService extends BaseRuntimeService {
  constructor(options: WithCatalog<RuntimeServiceOptions> = {}) {
    super({ models: CATALOG_MODELS, ...options });
  }
}

/** The batch service on the catalog's models by default. */
export class BatchJobService extends BaseBatchJobService {
  constructor(options: BatchServiceOptions = {}, deps: WithCatalog<BatchServiceDeps> = {}) {
    super(options, { models: new ModelTable(), ...deps });
  }
}
