import type { ModelCaller, ModelRequest } from './model-caller';

/**
 * Client-side pacing of model calls against the model's on-demand quotas, so a Converse fan-out runs just under the
 * quota instead of hitting it and backing off. The bedrock-runtime endpoint governs inference by per-model token
 * quotas (tokens per minute, input + output; https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-runtime.html),
 * so tokens per minute is the quota every pacer paces by; a requests-per-minute quota, where an account still has one
 * for its model, is paced by as well when it is configured.
 *
 * Each Distributed Map child (one Lambda container at a time) gets an equal share of the quotas,
 * `1 / CONVERSE_MAP_CONCURRENCY`, and paces its calls with two token buckets (requests, tokens) that refill at
 * {@link DEFAULT_TARGET} of that share. A call debits one request and its estimated tokens (input from the text's
 * length, output from what earlier answers used), then waits until both buckets are out of debt; when the answer
 * comes back the estimate is corrected with the usage Bedrock reports, and the estimators learn from it. A call of
 * any size passes once its debt is paid off, and the buckets save up at most {@link IDLE_CREDIT_MS} of credit while
 * idle, so no large burst follows a pause.
 */

/** Share of the quota the pacers aim at: close to it, with room for estimation error and uneven windows. */
export const DEFAULT_TARGET = 0.95;

/**
 * Most credit a pacer saves up while idle, in ms of refill: all children's savings together are this much of the
 * quota's minute (2 s: about 3%).
 */
export const IDLE_CREDIT_MS = 2_000;

/** Thrown when a call's abort signal fires while it waits for quota. */
export class PacingAbortedError extends Error {
  override readonly name = 'AbortError';
}

/** What a {@link QuotaPacer} needs. */
export interface QuotaPacerOptions {
  /**
   * The model's requests-per-minute quota (the whole account's, all children together), where it has one; undefined:
   * requests are not limited, only tokens.
   */
  requestsPerMinute?: number | undefined;
  /** The model's tokens-per-minute quota (input + output). */
  tokensPerMinute: number;
  /** This pacer's share of the quotas, 0 < share <= 1 (1 / the Map's MaxConcurrency). @default 1 */
  share?: number;
  /** Fraction of the share to pace at. @default DEFAULT_TARGET */
  target?: number;
  /** Clock in ms. @default Date.now */
  now?: () => number;
  /** Waits `ms` (resolves early when `signal` fires). @default a timer */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** What a call debited, to be corrected by {@link QuotaPacer.settle}. */
export interface PacingPermit {
  /** Tokens debited. */
  tokens: number;
  /** The input-token estimate before calibration (the text's length / 4). */
  rawInputTokens: number;
  /** Calibrated input estimate debited. */
  inputTokens: number;
  /** Output estimate debited. */
  outputTokens: number;
}

/** The request's size as the pacer estimates it before the call. */
export interface RequestSize {
  /** About a token per four characters of text (calibrated against actual usage by the pacer). */
  inputTokens: number;
  /** The request's output cap (maxTokens / max_tokens), when it sets one. */
  maxTokens?: number;
}

/**
 * Estimates a request's size from its body: the characters of every string under `system` and `messages` (Converse
 * or Anthropic native bodies) over four, and its output cap.
 */
export function estimateRequestSize(modelInput: Record<string, unknown>): RequestSize {
  const chars = textLength(modelInput.system) + textLength(modelInput.messages);
  const config = modelInput.inferenceConfig as { maxTokens?: unknown } | undefined;
  const cap = config?.maxTokens ?? modelInput.max_tokens;
  return {
    inputTokens: Math.max(1, Math.ceil(chars / 4)),
    ...(typeof cap === 'number' && cap > 0 ? { maxTokens: cap } : {}),
  };
}

function textLength(value: unknown): number {
  if (typeof value === 'string') return value.length;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + textLength(v), 0);
  if (typeof value === 'object' && value !== null) {
    let n = 0;
    for (const v of Object.values(value)) n += textLength(v);
    return n;
  }
  return 0;
}

/** Exponentially weighted mean; `undefined` until the first sample. */
class Ewma {
  value: number | undefined;
  constructor(private readonly alpha: number) {}
  add(sample: number): void {
    this.value = this.value === undefined ? sample : this.value + this.alpha * (sample - this.value);
  }
}

/** Requests- and tokens-per-minute buckets of one Map child, shared by all of its calls. */
export class QuotaPacer {
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Refill rates per ms; no request rate when the model has no requests-per-minute quota. */
  private readonly requestRate: number | undefined;
  private readonly tokenRate: number;
  private requests = 0;
  private tokens = 0;
  private last: number;
  /** Callers are served in arrival order. */
  private turn: Promise<void> = Promise.resolve();
  private readonly inputRatio = new Ewma(0.1);
  private readonly outputTokens = new Ewma(0.1);

  /** @throws RangeError for quotas that are not positive, or a share or target outside (0, 1] */
  constructor(options: QuotaPacerOptions) {
    const share = options.share ?? 1;
    const target = options.target ?? DEFAULT_TARGET;
    const quotas: Record<string, number> = { tokensPerMinute: options.tokensPerMinute };
    if (options.requestsPerMinute !== undefined) quotas.requestsPerMinute = options.requestsPerMinute;
    for (const [name, value] of Object.entries(quotas)) {
      if (!(value > 0)) throw new RangeError(`${name} must be positive, got ${value}`);
    }
    if (!(share > 0 && share <= 1)) throw new RangeError(`share must be in (0, 1], got ${share}`);
    if (!(target > 0 && target <= 1)) throw new RangeError(`target must be in (0, 1], got ${target}`);
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? defaultSleep;
    this.requestRate =
      options.requestsPerMinute === undefined
        ? undefined
        : (options.requestsPerMinute * share * target) / 60_000;
    this.tokenRate = (options.tokensPerMinute * share * target) / 60_000;
    this.last = this.now();
  }

  /**
   * The pacer of one Map child: an equal share of the quotas among `mapConcurrency` children.
   * @param requestsPerMinute the model's requests-per-minute quota, undefined where it has none
   * @param mapConcurrency the Map's MaxConcurrency (CONVERSE_MAP_CONCURRENCY)
   */
  static forMapChild(
    requestsPerMinute: number | undefined,
    tokensPerMinute: number,
    mapConcurrency: number,
  ): QuotaPacer {
    return new QuotaPacer({ requestsPerMinute, tokensPerMinute, share: 1 / Math.max(1, mapConcurrency) });
  }

  /**
   * Debits one call of `size` and waits until the buckets are out of debt (callers in arrival order).
   * @throws PacingAbortedError when `signal` fires while waiting
   */
  async acquire(size: RequestSize, signal?: AbortSignal): Promise<PacingPermit> {
    const rawInputTokens = size.inputTokens;
    const inputTokens = Math.ceil(rawInputTokens * (this.inputRatio.value ?? 1));
    const outputTokens = Math.ceil(
      Math.min(size.maxTokens ?? Infinity, this.outputTokens.value ?? (size.maxTokens ?? 512) / 2),
    );
    const permit: PacingPermit = {
      tokens: inputTokens + outputTokens,
      rawInputTokens,
      inputTokens,
      outputTokens,
    };
    const mine = this.turn.then(async () => {
      // Debited first, then waited for: a call passes once the buckets, this call included, are out of debt. So a
      // child's calls never run ahead of its rate, not even its first ones (children start together).
      this.refill();
      if (this.requestRate !== undefined) this.requests -= 1;
      this.tokens -= permit.tokens;
      try {
        await this.waitForRoom(signal);
      } catch (err) {
        if (this.requestRate !== undefined) this.requests += 1;
        this.tokens += permit.tokens;
        throw err;
      }
    });
    // The next caller waits for this one's turn, whether or not it was aborted.
    this.turn = mine.catch(() => undefined);
    await mine;
    return permit;
  }

  /**
   * Corrects the debit with what the call used: its usage when it was answered, nothing (a refund of the tokens) when
   * it failed. Answered calls also teach the estimators.
   */
  settle(permit: PacingPermit, usage?: { inputTokens: number; outputTokens: number }): void {
    this.refill();
    if (!usage) {
      this.tokens += permit.tokens;
      return;
    }
    this.tokens -= usage.inputTokens + usage.outputTokens - permit.tokens;
    if (permit.rawInputTokens > 0 && usage.inputTokens > 0)
      this.inputRatio.add(usage.inputTokens / permit.rawInputTokens);
    this.outputTokens.add(usage.outputTokens);
  }

  private refill(): void {
    const now = this.now();
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    // Refilling stops at IDLE_CREDIT_MS worth of credit: enough to bridge the gap between two batches of a child,
    // too little for the children's bursts together to pass the quota's rolling window. Credit from a refund (a call
    // that used less than estimated) is kept: those tokens were debited and never used.
    if (this.requestRate !== undefined) {
      const requestCap = IDLE_CREDIT_MS * this.requestRate;
      if (this.requests < requestCap)
        this.requests = Math.min(requestCap, this.requests + elapsed * this.requestRate);
    }
    const tokenCap = IDLE_CREDIT_MS * this.tokenRate;
    if (this.tokens < tokenCap) this.tokens = Math.min(tokenCap, this.tokens + elapsed * this.tokenRate);
  }

  private async waitForRoom(signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (signal?.aborted) throw new PacingAbortedError('the call was aborted while waiting for quota');
      this.refill();
      const requestWait = this.requestRate === undefined ? 0 : -this.requests / this.requestRate;
      const wait = Math.max(requestWait, -this.tokens / this.tokenRate);
      if (wait <= 0) return;
      await this.sleep(Math.ceil(wait), signal);
    }
  }
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A model caller that paces every call through `pacer` and corrects it with the call's usage. */
export function pacedCaller(caller: ModelCaller, pacer: QuotaPacer): ModelCaller {
  return async (item: ModelRequest, signal: AbortSignal) => {
    const permit = await pacer.acquire(estimateRequestSize(item.modelInput), signal);
    try {
      const answer = await caller(item, signal);
      pacer.settle(permit, answer.usage);
      return answer;
    } catch (err) {
      pacer.settle(permit);
      throw err;
    }
  };
}
