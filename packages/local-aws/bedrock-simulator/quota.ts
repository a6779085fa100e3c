/** On-demand quotas of one model. */
export interface QuotaLimits {
  /** Requests accepted per rolling 60 s window. */
  readonly requestsPerMinute: number;
  /** Input + output tokens accepted per rolling 60 s window. */
  readonly tokensPerMinute: number;
}

/** Quota configuration: a default for every model plus overrides by foundation model id. */
export interface QuotaOptions {
  /** Applies to models without an override. @default {requestsPerMinute: 1000, tokensPerMinute: 2000000} */
  readonly default?: Partial<QuotaLimits>;
  /** Overrides keyed by foundation model id (inference profiles share their model's quota here). */
  readonly models?: Readonly<Record<string, Partial<QuotaLimits>>>;
}

/** The default quotas, roughly those of a current on-demand model in us-east-1. */
export const DEFAULT_QUOTA: QuotaLimits = { requestsPerMinute: 1000, tokensPerMinute: 2_000_000 };

/** Length of the rolling quota window. */
export const QUOTA_WINDOW_MS = 60_000;

/** Outcome of a quota check. */
export type QuotaDecision = 'ok' | 'rpm' | 'tpm';

/** Admissions of one model inside the window, oldest first, with a running token sum. */
class RollingWindow {
  private times: number[] = [];
  private tokenCounts: number[] = [];
  private head = 0;
  /** Tokens admitted inside the window. */
  tokens = 0;

  /** Admissions inside the window. */
  get requests(): number {
    return this.times.length - this.head;
  }

  /** Drops admissions at or before `now - QUOTA_WINDOW_MS`. */
  expire(now: number): void {
    while (this.head < this.times.length && (this.times[this.head] as number) <= now - QUOTA_WINDOW_MS) {
      this.tokens -= this.tokenCounts[this.head] as number;
      this.head += 1;
    }
    // Compact now and then so the arrays do not grow without bound.
    if (this.head > 1024 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head);
      this.tokenCounts = this.tokenCounts.slice(this.head);
      this.head = 0;
    }
  }

  /** Records an admission. */
  add(now: number, tokens: number): void {
    this.times.push(now);
    this.tokenCounts.push(tokens);
    this.tokens += tokens;
  }
}

/**
 * Requests-per-minute and tokens-per-minute limits per model over a rolling 60 s window, on an
 * injectable clock. Only admitted requests count; throttled ones consume nothing.
 */
export class QuotaTracker {
  private readonly windows = new Map<string, RollingWindow>();

  /**
   * @param options quota configuration
   * @param now the clock, in milliseconds
   */
  constructor(
    private readonly options: QuotaOptions = {},
    private readonly now: () => number = Date.now,
  ) {
    const entries = [['default', options.default], ...Object.entries(options.models ?? {})] as const;
    for (const [name, limits] of entries) {
      for (const [key, value] of Object.entries(limits ?? {})) {
        if (typeof value !== 'number' || !(value > 0)) {
          throw new RangeError(`quota ${name}.${key} must be a positive number, got ${String(value)}`);
        }
      }
    }
  }

  /** The effective limits for a model. */
  limitsFor(modelId: string): QuotaLimits {
    return { ...DEFAULT_QUOTA, ...this.options.default, ...this.options.models?.[modelId] };
  }

  private window(modelId: string, now: number): RollingWindow {
    let window = this.windows.get(modelId);
    if (!window) {
      window = new RollingWindow();
      this.windows.set(modelId, window);
    }
    window.expire(now);
    return window;
  }

  /**
   * Admits a request of `tokens` total tokens for `modelId` if both quotas allow it, recording it in
   * the window; otherwise records nothing and says which quota refused it (requests are checked first).
   */
  tryAdmit(modelId: string, tokens: number): QuotaDecision {
    const now = this.now();
    const limits = this.limitsFor(modelId);
    const window = this.window(modelId, now);
    if (window.requests + 1 > limits.requestsPerMinute) return 'rpm';
    if (window.tokens + tokens > limits.tokensPerMinute) return 'tpm';
    window.add(now, tokens);
    return 'ok';
  }

  /** Requests and tokens admitted for a model in the current window. */
  usage(modelId: string): { requests: number; tokens: number } {
    const window = this.window(modelId, this.now());
    return { requests: window.requests, tokens: window.tokens };
  }
}
