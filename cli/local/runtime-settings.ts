/**
 * Settings the local runtime derives from the synthesized stack and its own options: what it tells the Bedrock
 * simulator (the quotas the stack was configured with, read from the functions' environment as the deployed functions
 * read them, under whatever the caller asked for) and what it adds to every function's environment.
 */
import { BATCH_QUOTA_ENV, ON_DEMAND_QUOTA_ENV } from '../../lambda/shared/contracts/env';
import type {
  BatchLimits,
  BedrockSimulatorOptions,
  ModelSpec,
  QuotaLimits,
} from '@corpus-pipeline/local-aws/bedrock-simulator';
import { CATALOG_MODELS } from './simulator-models';

/** The simulator's settings a local run may give: its options, the model table defaulting to the catalog's. */
export type SimulatorSettings = Omit<BedrockSimulatorOptions, 'models'> & {
  readonly models?: readonly ModelSpec[];
};

/** A function of the synthesized stack, as far as configuration goes: its resolved environment. */
export interface ConfiguredFunction {
  readonly environment: Readonly<Record<string, string>>;
}

/** Plan's environment names of the configured batch quotas, by simulator limit. */
export const BATCH_LIMIT_ENV: Readonly<Record<keyof BatchLimits, string>> = BATCH_QUOTA_ENV;

/** ConverseBatch's environment names of the configured on-demand quotas (`onDemand.*`), by simulator quota. */
export const RUNTIME_QUOTA_ENV: Readonly<Record<keyof QuotaLimits, string>> = ON_DEMAND_QUOTA_ENV;

/**
 * Reads the positive integers named by `names` from the first function whose environment carries `carrierName`;
 * absent or malformed values are left out (the simulator's defaults apply to them).
 */
function configured<K extends string>(
  functions: readonly ConfiguredFunction[],
  names: Readonly<Record<K, string>>,
  carrierName: string,
): Partial<Record<K, number>> {
  const carrier = functions.find((f) => f.environment[carrierName] !== undefined);
  if (!carrier) return {};
  const values: Partial<Record<K, number>> = {};
  for (const [key, name] of Object.entries(names) as [K, string][]) {
    const value = Number(carrier.environment[name]);
    if (Number.isInteger(value) && value > 0) values[key] = value;
  }
  return values;
}

/** The batch quotas the stack configured (read from the function that carries them), as simulator limits. */
export function configuredBatchLimits(functions: readonly ConfiguredFunction[]): Partial<BatchLimits> {
  return configured(functions, BATCH_LIMIT_ENV, BATCH_LIMIT_ENV.maxConcurrentJobs);
}

/** The on-demand quotas the stack configured (read from the function that carries them), as simulator quotas. */
export function configuredRuntimeQuotas(functions: readonly ConfiguredFunction[]): Partial<QuotaLimits> {
  return configured(functions, RUNTIME_QUOTA_ENV, RUNTIME_QUOTA_ENV.tokensPerMinute);
}

/**
 * The simulator's options for a stack: the pipeline's model catalog (unless `options` names the models), and the
 * configured on-demand quotas (RPM/TPM) and batch quotas become its default quotas and limits, so the local pipeline
 * meets the limits it paces itself for; what `options` sets wins, value by value.
 */
export function simulatorOptionsFor(
  functions: readonly ConfiguredFunction[],
  options: SimulatorSettings = {},
  where: { region: string; accountId: string },
): BedrockSimulatorOptions {
  return {
    ...options,
    models: options.models ?? CATALOG_MODELS,
    quotas: {
      ...options.quotas,
      default: { ...configuredRuntimeQuotas(functions), ...options.quotas?.default },
    },
    batch: {
      region: where.region,
      accountId: where.accountId,
      ...options.batch,
      limits: {
        ...options.batch?.limits,
        default: { ...configuredBatchLimits(functions), ...options.batch?.limits?.default },
      },
    },
  };
}

/** The functions' environment variable that carries the Express child budget (the cap on a child execution), in s. */
export const EXPRESS_CHILD_BUDGET_ENV = 'EXPRESS_CHILD_BUDGET_SECONDS';

/** AWS's cap on an EXPRESS execution, in seconds (the deployed stack sets EXPRESS_CHILD_BUDGET_SECONDS to it). */
export const EXPRESS_CHILD_BUDGET_SECONDS = 300;

/**
 * What the functions' environment gets for the local Express cap: `EXPRESS_CHILD_BUDGET_SECONDS` only when the cap
 * differs from AWS's 300 s (a test shrank it), so otherwise the stack's own value stands.
 */
export function expressBudgetEnvironment(expressTimeoutMs: number): Record<string, string> {
  const seconds = expressTimeoutMs / 1000;
  return seconds === EXPRESS_CHILD_BUDGET_SECONDS ? {} : { [EXPRESS_CHILD_BUDGET_ENV]: String(seconds) };
}
