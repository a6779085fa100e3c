import {
  ListAWSDefaultServiceQuotasCommand,
  ListServiceQuotasCommand,
  type ServiceQuota,
  type ServiceQuotasClient,
} from '@aws-sdk/client-service-quotas';
import {
  BATCH_QUOTA_KEYS,
  BYTES_PER_QUOTA_GB,
  type BatchQuotaKey,
  type BatchQuotas,
} from '../shared/contracts/quotas';
import { errorMessage, errorName } from '../shared/errors';
import { catalogModel } from '../shared/model-catalog';
import { logger } from '../shared/observability';

/**
 * Reads the per-model Bedrock batch inference quotas from Service Quotas (service code `bedrock`), by quota name:
 * Bedrock publishes one quota per model and limit, named after the model's display name, for example
 * "Records per batch inference job for Nova Lite V1" or "Batch inference job size (in GB) for Llama 3.3 70B Instruct"
 * (https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock). The display name of each model comes
 * from the model catalog (model-catalog.ts); an environment may name it, or each quota, for a model outside it.
 * Applied values (ListServiceQuotas) win over AWS defaults (ListAWSDefaultServiceQuotas); a limit found in neither,
 * or a failed call (AccessDenied, throttled), falls back to the configured value with the reason logged.
 */

export {
  BATCH_QUOTA_KEYS,
  BYTES_PER_QUOTA_GB,
  DEFAULT_BATCH_QUOTAS,
  type BatchQuotaKey,
  type BatchQuotas,
} from '../shared/contracts/quotas';

/** Where a limit's value came from. */
export type BatchQuotaSource = 'applied' | 'default' | 'fallback';

/** The service code of Amazon Bedrock in Service Quotas. */
export const BEDROCK_SERVICE_CODE = 'bedrock';

/** The quotas are inconsistent or not positive integers (a configuration bug, or a quota read badly). */
export class InvalidBatchQuotasError extends Error {
  override readonly name = 'InvalidBatchQuotasError';
}

/** Problems with a set of quotas (empty when usable): every value a positive safe integer, min <= max. */
export function batchQuotaProblems(quotas: BatchQuotas): string[] {
  const problems: string[] = [];
  for (const key of BATCH_QUOTA_KEYS) {
    const value: unknown = quotas[key];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
      problems.push(`${key} must be a positive integer, got ${String(value)}`);
    }
  }
  if (problems.length === 0 && quotas.minRecordsPerJob > quotas.maxRecordsPerJob) {
    problems.push(
      `minRecordsPerJob (${quotas.minRecordsPerJob}) is larger than maxRecordsPerJob (${quotas.maxRecordsPerJob})`,
    );
  }
  return problems;
}

/**
 * Checks a set of quotas.
 * @throws InvalidBatchQuotasError naming every problem
 */
export function assertBatchQuotas(quotas: BatchQuotas): void {
  const problems = batchQuotaProblems(quotas);
  if (problems.length > 0) throw new InvalidBatchQuotasError(`Invalid batch quotas: ${problems.join('; ')}`);
}

/**
 * The quota names of each limit for a model display name. Two spellings exist for the sizes ("... (in GB) for X"
 * and "... for X (in GB)"). Matched whole and case-insensitively, so "Claude 3.5 Sonnet" never picks up the quota of
 * "Claude 3.5 Sonnet v2".
 */
const NAME_TEMPLATES: Record<BatchQuotaKey, readonly ((model: string) => string)[]> = {
  minRecordsPerJob: [(m) => `Minimum number of records per batch inference job for ${m}`],
  maxRecordsPerJob: [(m) => `Records per batch inference job for ${m}`],
  maxRecordsPerFile: [(m) => `Records per input file per batch inference job for ${m}`],
  maxBytesPerFile: [
    (m) => `Batch inference input file size (in GB) for ${m}`,
    (m) => `Batch inference input file size for ${m} (in GB)`,
  ],
  maxBytesPerJob: [
    (m) => `Batch inference job size (in GB) for ${m}`,
    (m) => `Batch inference job size for ${m} (in GB)`,
  ],
  maxConcurrentJobs: [
    (m) => `Sum of in-progress and submitted batch inference jobs using a base model for ${m}`,
  ],
};

const GB_KEYS = new Set<BatchQuotaKey>(['maxBytesPerFile', 'maxBytesPerJob']);

/** The quota names a limit would have for a model display name (the first is the usual one). */
export function batchQuotaNames(key: BatchQuotaKey, modelName: string): string[] {
  return NAME_TEMPLATES[key].map((template) => template(modelName));
}

export { foundationModelId } from '../shared/model-catalog';

/** The display names a model's batch quotas may use (empty for a model the catalog gives none). */
export function batchQuotaModelNames(modelId: string): string[] {
  const name = catalogModel(modelId)?.batch.quotaModelName;
  return name ? [name] : [];
}

/** A limit found in Service Quotas. */
interface FoundQuota {
  value: number;
  source: 'applied' | 'default';
  quotaName: string;
  quotaCode?: string;
}

/** What one lookup learned, cached per model: merged with the caller's fallback on each read. */
interface QuotaLookup {
  modelName: string | null;
  found: Partial<Record<BatchQuotaKey, FoundQuota>>;
  notes: string[];
}

/** A module-scope, per-model cache of quota lookups with a time to live. */
export class BatchQuotaCache {
  private readonly entries = new Map<string, { at: number; lookup: QuotaLookup }>();
  private readonly ttlMs: number;
  private readonly now: () => number;

  /**
   * @param options.ttlMs how long a lookup stays valid (default 1 hour)
   * @param options.now clock in ms (default Date.now)
   */
  constructor(options: { ttlMs?: number; now?: () => number } = {}) {
    this.ttlMs = options.ttlMs ?? 60 * 60 * 1000;
    this.now = options.now ?? Date.now;
  }

  /** The lookup of a key if still fresh. @internal */
  get(key: string): QuotaLookup | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (this.now() - entry.at >= this.ttlMs) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.lookup;
  }

  /** Stores a lookup. @internal */
  set(key: string, lookup: QuotaLookup): void {
    this.entries.set(key, { at: this.now(), lookup });
  }

  /** Forgets every lookup. */
  clear(): void {
    this.entries.clear();
  }
}

/** The cache used when the caller passes none: lives as long as the Lambda execution environment. */
export const defaultBatchQuotaCache = new BatchQuotaCache();

/** The result of {@link readBatchQuotas}. */
export interface BatchQuotaReading {
  /** The limits to plan with. */
  quotas: BatchQuotas;
  /** Display name whose quotas were used, or null when the model is not in the name table. */
  modelName: string | null;
  /** Where each limit came from. */
  sources: Record<BatchQuotaKey, BatchQuotaSource>;
  /** Service Quotas codes of the limits found (L-...). */
  quotaCodes: Partial<Record<BatchQuotaKey, string>>;
  /** Why limits fell back to the configured values (empty when all were found). */
  notes: string[];
  /** True when answered from the cache. */
  fromCache: boolean;
}

/** Options of {@link readBatchQuotas}. */
export interface ReadBatchQuotasOptions {
  /**
   * The display name in quota names, for a model the catalog gives none (the environment's
   * `model.batchQuotaModelName`, for example "Claude Sonnet 4.5").
   */
  modelName?: string;
  /**
   * Whole quota names per limit (the environment's `model.batchQuotaNames`), for quotas that do not follow the usual
   * pattern: a limit named here is looked up by this name only.
   */
  quotaNames?: Partial<Record<BatchQuotaKey, string>>;
  /** Where fallback reasons are reported (default: the Powertools logger, at warn). */
  warn?: (message: string, details: Record<string, unknown>) => void;
}

const MAX_PAGES = 100;

async function listAll(client: ServiceQuotasClient, kind: 'applied' | 'default'): Promise<ServiceQuota[]> {
  const quotas: ServiceQuota[] = [];
  let nextToken: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const input = {
      ServiceCode: BEDROCK_SERVICE_CODE,
      MaxResults: 100,
      ...(nextToken ? { NextToken: nextToken } : {}),
    };
    const out =
      kind === 'applied'
        ? await client.send(new ListServiceQuotasCommand(input))
        : await client.send(new ListAWSDefaultServiceQuotasCommand(input));
    quotas.push(...(out.Quotas ?? []));
    nextToken = out.NextToken || undefined;
    if (!nextToken) return quotas;
  }
  throw new Error(`more than ${MAX_PAGES} pages of quotas (a pagination loop?)`);
}

const normalise = (name: string): string => name.trim().replace(/\s+/g, ' ').toLowerCase();

function indexByName(quotas: readonly ServiceQuota[]): Map<string, ServiceQuota> {
  const byName = new Map<string, ServiceQuota>();
  for (const quota of quotas) if (quota.QuotaName) byName.set(normalise(quota.QuotaName), quota);
  return byName;
}

type QuotaNames = Partial<Record<BatchQuotaKey, string>>;

/** The quota names a limit is looked up by: the explicit one, else the patterns for each display name. */
function candidateNames(key: BatchQuotaKey, names: readonly string[], exact: QuotaNames): string[] {
  const named = exact[key];
  return named ? [named] : names.flatMap((modelName) => batchQuotaNames(key, modelName));
}

/** Finds a limit among a source's quotas; returns a reason instead when it is there but unusable. */
function pick(
  byName: Map<string, ServiceQuota>,
  key: BatchQuotaKey,
  candidates: readonly string[],
  source: 'applied' | 'default',
): FoundQuota | string | undefined {
  for (const quotaName of candidates) {
    const quota = byName.get(normalise(quotaName));
    if (!quota) continue;
    const raw = quota.Value;
    const value =
      typeof raw === 'number' && Number.isFinite(raw)
        ? Math.floor(GB_KEYS.has(key) ? raw * BYTES_PER_QUOTA_GB : raw)
        : NaN;
    if (!(value >= 1)) return `quota "${quota.QuotaName}" has no usable value (${String(raw)})`;
    return {
      value,
      source,
      quotaName: quota.QuotaName ?? quotaName,
      ...(quota.QuotaCode ? { quotaCode: quota.QuotaCode } : {}),
    };
  }
  return undefined;
}

async function lookUp(
  client: ServiceQuotasClient,
  modelId: string,
  names: readonly string[],
  exact: QuotaNames,
): Promise<{ lookup: QuotaLookup; answered: boolean }> {
  const found: Partial<Record<BatchQuotaKey, FoundQuota>> = {};
  const notes: string[] = [];
  let answered = false;
  for (const source of ['applied', 'default'] as const) {
    if (BATCH_QUOTA_KEYS.every((key) => found[key])) break;
    const operation = source === 'applied' ? 'ListServiceQuotas' : 'ListAWSDefaultServiceQuotas';
    let quotas: ServiceQuota[];
    try {
      quotas = await listAll(client, source);
      answered = true;
    } catch (err) {
      notes.push(`${operation} failed (${errorName(err)}: ${errorMessage(err)})`);
      continue;
    }
    const byName = indexByName(quotas);
    for (const key of BATCH_QUOTA_KEYS) {
      if (found[key]) continue;
      const hit = pick(byName, key, candidateNames(key, names, exact), source);
      if (typeof hit === 'string') notes.push(hit);
      else if (hit) found[key] = hit;
    }
  }
  for (const key of BATCH_QUOTA_KEYS) {
    if (!found[key] && answered) {
      notes.push(
        `no quota "${candidateNames(key, names, exact)[0] ?? key}" for ${modelId}: ${key} uses the configured value`,
      );
    }
  }
  return { lookup: { modelName: names[0] ?? null, found, notes }, answered };
}

function merge(lookup: QuotaLookup, fallback: BatchQuotas, fromCache: boolean): BatchQuotaReading {
  const quotas = { ...fallback };
  const sources = {} as Record<BatchQuotaKey, BatchQuotaSource>;
  const quotaCodes: Partial<Record<BatchQuotaKey, string>> = {};
  for (const key of BATCH_QUOTA_KEYS) {
    const hit = lookup.found[key];
    quotas[key] = hit ? hit.value : fallback[key];
    sources[key] = hit ? hit.source : 'fallback';
    if (hit?.quotaCode) quotaCodes[key] = hit.quotaCode;
  }
  const problems = batchQuotaProblems(quotas);
  if (problems.length > 0) {
    // Quotas that contradict each other (or the fallback) are not planned with: the configured set is consistent.
    return {
      quotas: { ...fallback },
      modelName: lookup.modelName,
      sources: Object.fromEntries(BATCH_QUOTA_KEYS.map((k) => [k, 'fallback'])) as Record<
        BatchQuotaKey,
        BatchQuotaSource
      >,
      quotaCodes: {},
      notes: [
        ...lookup.notes,
        `the quotas read are inconsistent (${problems.join('; ')}): all configured values used`,
      ],
      fromCache,
    };
  }
  return { quotas, modelName: lookup.modelName, sources, quotaCodes, notes: [...lookup.notes], fromCache };
}

/**
 * Reads the batch quotas of a model from Service Quotas, by quota name. Every limit not found (model outside the
 * name table, quota missing, AccessDenied, throttled after the SDK's retries) takes the configured fallback value,
 * with the reason in `notes` and logged. Lookups where Service Quotas answered are cached per model for the cache's
 * TTL; failed ones are not, so the next run tries again.
 * @param client a Service Quotas client in the Region of the jobs
 * @param modelId foundation model id, inference profile id or ARN
 * @param fallback the configured limits, used for anything not found
 * @param cache the cache (default: module scope, 1 hour)
 * @throws InvalidBatchQuotasError when the fallback itself is invalid (a configuration bug)
 */
export async function readBatchQuotas(
  client: ServiceQuotasClient,
  modelId: string,
  fallback: BatchQuotas,
  cache: BatchQuotaCache = defaultBatchQuotaCache,
  options: ReadBatchQuotasOptions = {},
): Promise<BatchQuotaReading> {
  assertBatchQuotas(fallback);
  const warn = options.warn ?? ((message, details) => logger.warn(message, details));
  const exact = options.quotaNames ?? {};
  const cacheKey = `${modelId}\u0000${options.modelName ?? ''}\u0000${JSON.stringify(exact)}`;
  const cached = cache.get(cacheKey);
  if (cached) return merge(cached, fallback, true);

  const names = options.modelName ? [options.modelName] : batchQuotaModelNames(modelId);
  let lookup: QuotaLookup;
  if (names.length === 0 && Object.keys(exact).length === 0) {
    lookup = {
      modelName: null,
      found: {},
      notes: [
        `no quota display name is known for model ${modelId}: all batch limits use the configured values (set model.batchQuotaModelName or model.batchQuotaNames to read its quotas)`,
      ],
    };
    cache.set(cacheKey, lookup);
  } else {
    const result = await lookUp(client, modelId, names, exact);
    lookup = result.lookup;
    if (result.answered) cache.set(cacheKey, lookup);
  }
  const reading = merge(lookup, fallback, false);
  if (reading.notes.length > 0) {
    warn('batch quotas: some limits use the configured values', {
      modelId,
      modelName: reading.modelName,
      sources: reading.sources,
      notes: reading.notes,
    });
  }
  return reading;
}
