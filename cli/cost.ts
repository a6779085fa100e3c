import { defaultPricing } from '../lib/model-config';
import type { ModelPrice, PriceTable } from '../lib/config';
import { parseModelId } from '../lambda/shared/model-catalog';

/**
 * The cost estimate of a run from the environment's price table (`pricing` in cdk.json, USD per million tokens; by
 * default the model catalog's list prices): Converse tokens at the on-demand price, batch tokens at the batch price
 * (`batchInputPerMillion` / `batchOutputPerMillion`, else the on-demand price times `batchDiscount`), and the saving
 * batch mode made against running every token on demand. A run of a model the table does not price (an earlier model of
 * the environment) is priced from the catalog.
 */

export type { ModelPrice, PriceTable };

/** Input and output tokens. */
export interface TokenPair {
  readonly input: number;
  readonly output: number;
}

/** A run's tokens, split by how they were billed. */
export interface TokenReport extends TokenPair {
  readonly total: number;
  /** Tokens of records answered by Bedrock batch jobs (the collect markers). */
  readonly batch: TokenPair;
  /** Tokens of records answered by Converse (on demand): the rest of the manifest's tokens. */
  readonly onDemand: TokenPair;
}

/** The cost estimate (`cost` in `corpus report --json`). USD amounts are null when the model has no price. */
export interface CostReport {
  readonly currency: 'USD';
  readonly modelId: string | null;
  /** False when the price table has no entry for the model. */
  readonly priced: boolean;
  /** The price table entry used. */
  readonly pricingKey: string | null;
  readonly prices: ModelPrice | null;
  /** The Converse tokens at the on-demand price. */
  readonly onDemand: number | null;
  /** The batch tokens at the batch price. */
  readonly batch: number | null;
  /** onDemand + batch. */
  readonly total: number | null;
  /** What every token would have cost on demand. */
  readonly allOnDemand: number | null;
  /** allOnDemand - total: what batch mode saved. */
  readonly saving: number | null;
  /** The saving as a percentage of allOnDemand (0 to 100). */
  readonly savingPercent: number | null;
  /** Why there is no estimate, when there is none. */
  readonly note?: string;
}

/**
 * The price table entry for a model id, inference profile id or ARN: exact first, then without the ARN path and
 * without a cross-Region profile prefix; then the model catalog's list price.
 */
export function findPrice(
  pricing: PriceTable,
  modelId: string,
): { key: string; price: ModelPrice } | undefined {
  const bare = modelId.slice(modelId.lastIndexOf('/') + 1);
  const foundation = parseModelId(modelId).foundationModelId;
  for (const table of [pricing, defaultPricing(foundation)]) {
    for (const key of [modelId, bare, foundation]) {
      const price = table[key];
      if (price) return { key, price };
    }
  }
  return undefined;
}

/** Splits a run's tokens into batch (the collect markers' sums) and on demand (the rest). */
export function splitTokens(manifestTokens: TokenPair, batchTokens: TokenPair): TokenReport {
  const batch = {
    input: Math.min(batchTokens.input, manifestTokens.input),
    output: Math.min(batchTokens.output, manifestTokens.output),
  };
  return {
    input: manifestTokens.input,
    output: manifestTokens.output,
    total: manifestTokens.input + manifestTokens.output,
    batch,
    onDemand: { input: manifestTokens.input - batch.input, output: manifestTokens.output - batch.output },
  };
}

/** Rounded to a millionth of a dollar (a token costs about that), so sums print and compare cleanly. */
function money(amount: number): number {
  return Math.round(amount * 1e6) / 1e6;
}

function onDemandPrice(tokens: TokenPair, price: ModelPrice): number {
  return (tokens.input * price.inputPerMillion + tokens.output * price.outputPerMillion) / 1e6;
}

function batchPrice(tokens: TokenPair, price: ModelPrice): number {
  const input = price.batchInputPerMillion ?? price.inputPerMillion * price.batchDiscount;
  const output = price.batchOutputPerMillion ?? price.outputPerMillion * price.batchDiscount;
  return (tokens.input * input + tokens.output * output) / 1e6;
}

/** The cost estimate of a run's tokens. */
export function estimateCost(tokens: TokenReport, modelId: string | null, pricing: PriceTable): CostReport {
  const found = modelId ? findPrice(pricing, modelId) : undefined;
  if (!found) {
    return {
      currency: 'USD',
      modelId,
      priced: false,
      pricingKey: null,
      prices: null,
      onDemand: null,
      batch: null,
      total: null,
      allOnDemand: null,
      saving: null,
      savingPercent: null,
      note: modelId
        ? `no price for ${modelId} in the environment's pricing table (cdk.json: environments.<env>.pricing) or the model catalog`
        : 'the run has no model (it ended before Plan)',
    };
  }
  const { price } = found;
  const onDemand = onDemandPrice(tokens.onDemand, price);
  const batch = batchPrice(tokens.batch, price);
  const allOnDemand = onDemandPrice(tokens, price);
  const total = onDemand + batch;
  const saving = allOnDemand - total;
  return {
    currency: 'USD',
    modelId,
    priced: true,
    pricingKey: found.key,
    prices: price,
    onDemand: money(onDemand),
    batch: money(batch),
    total: money(total),
    allOnDemand: money(allOnDemand),
    saving: money(saving),
    savingPercent: allOnDemand > 0 ? Math.round((saving / allOnDemand) * 10_000) / 100 : 0,
  };
}
