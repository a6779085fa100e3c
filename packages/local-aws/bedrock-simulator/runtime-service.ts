import { randomUUID } from 'node:crypto';

import {
  generate,
  toConverseResponse,
  toNativeResponse,
  validateNativeRequest,
  type OutputLengthOptions,
} from './engine';
import {
  SimulatorError,
  TOO_MANY_REQUESTS_MESSAGE,
  TOO_MANY_TOKENS_MESSAGE,
  validationError,
} from './errors';
import { FaultInjector, type FaultOptions } from './faults';
import {
  inferenceRefusal,
  INVALID_MODEL_IDENTIFIER_MESSAGE,
  ModelTable,
  type ModelSpec,
  type ResolvedModel,
} from './models';
import { QuotaTracker, type QuotaOptions } from './quota';
import { StatsCollector } from './stats';
import { parseJsonBody, validateConverseRequest, type SimulationRequest } from './validation';

/** Runtime operations the simulator serves. */
export type RuntimeOperation = 'converse' | 'invoke';

/** A transport-independent HTTP answer. */
export interface RuntimeResponse {
  /** HTTP status code. */
  readonly status: number;
  /** Response headers, lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  /** JSON body text. */
  readonly body: string;
}

/** Behaviour of the runtime side of the simulator. */
export interface RuntimeServiceOptions {
  /** The models the simulator knows (every other model id is answered as unknown, as Bedrock answers it). */
  readonly models: readonly ModelSpec[];
  /** Per-model requests/tokens per minute. */
  readonly quotas?: QuotaOptions;
  /** Initial faults (change them later with setFaults). */
  readonly faults?: FaultOptions;
  /** Base latency of every successful call, in ms. @default 0 */
  readonly latencyMs?: number;
  /** Extra latency per output token of a successful call, in ms. @default 0 */
  readonly perOutputTokenMs?: number;
  /** Clock for the quota windows and the stats timeline, in ms. @default Date.now */
  readonly now?: () => number;
  /** Length range of generated answers. */
  readonly outputLength?: OutputLengthOptions;
}

interface PendingDelay {
  readonly timer: NodeJS.Timeout;
  readonly resolve: () => void;
}

/**
 * The runtime service without a transport: resolves the model, validates, injects faults, enforces
 * quotas, simulates latency and answers Converse/InvokeModel calls as restJson1 responses. The HTTP/2
 * server wraps it; tests and other transports may call {@link handle} directly.
 */
export class BedrockRuntimeService {
  /** The model table (shared with a batch control plane when one is started beside it). */
  readonly models: ModelTable;
  /** Counters reported by `stats()`. */
  readonly stats = new StatsCollector();
  /** Fault settings. */
  readonly faults: FaultInjector;
  private readonly quotas: QuotaTracker;
  private readonly now: () => number;
  private readonly pending = new Set<PendingDelay>();

  /** @param options behaviour */
  constructor(private readonly options: RuntimeServiceOptions) {
    for (const key of ['latencyMs', 'perOutputTokenMs'] as const) {
      const value = options[key];
      if (value !== undefined && !(value >= 0)) throw new RangeError(`${key} must be >= 0, got ${value}`);
    }
    this.models = new ModelTable(options.models);
    this.now = options.now ?? Date.now;
    this.quotas = new QuotaTracker(options.quotas, this.now);
    this.faults = new FaultInjector(options.faults);
  }

  /**
   * Answers one call.
   * @param operation `converse` or `invoke`
   * @param modelIdentifier the URL-decoded `{modelId}` path label
   * @param body the request body text
   */
  async handle(operation: RuntimeOperation, modelIdentifier: string, body: string): Promise<RuntimeResponse> {
    const resolved = this.models.tryResolve(modelIdentifier);
    if (!resolved) {
      this.stats.recordUnknownModel();
      return this.answerError(validationError(INVALID_MODEL_IDENTIFIER_MESSAGE), this.faults.slowMs);
    }
    const modelId = resolved.spec.modelId;
    const refusal = inferenceRefusal(resolved);
    if (refusal) {
      this.stats.record(modelId, { kind: 'validation' });
      return this.answerError(refusal, this.faults.slowMs);
    }
    let request: SimulationRequest;
    try {
      request = this.validate(operation, resolved, body);
    } catch (err) {
      if (!(err instanceof SimulatorError)) throw err;
      this.stats.record(modelId, { kind: 'validation' });
      return this.answerError(err, this.faults.slowMs);
    }

    const fault = this.faults.checkMarker(request) ?? this.faults.draw();
    if (fault) {
      this.stats.record(modelId, { kind: 'fault', fault: fault.kind });
      return this.answerError(fault.error, this.faults.slowMs);
    }

    const generation = generate(request, this.options.outputLength);
    const decision = this.quotas.tryAdmit(modelId, generation.inputTokens + generation.outputTokens);
    if (decision !== 'ok') {
      this.stats.record(modelId, { kind: 'throttled', cause: decision });
      const message = decision === 'rpm' ? TOO_MANY_REQUESTS_MESSAGE : TOO_MANY_TOKENS_MESSAGE;
      return this.answerError(new SimulatorError('ThrottlingException', message), this.faults.slowMs);
    }
    this.stats.record(modelId, {
      kind: 'succeeded',
      inputTokens: generation.inputTokens,
      outputTokens: generation.outputTokens,
      at: this.now(),
    });

    const latencyMs =
      (this.options.latencyMs ?? 0) +
      (this.options.perOutputTokenMs ?? 0) * generation.outputTokens +
      this.faults.slowMs;
    await this.delay(latencyMs);
    const headers = { 'content-type': 'application/json', 'x-amzn-requestid': randomUUID() };
    if (operation === 'converse') {
      return { status: 200, headers, body: JSON.stringify(toConverseResponse(generation, latencyMs)) };
    }
    return {
      status: 200,
      headers: {
        ...headers,
        'x-amzn-bedrock-input-token-count': String(generation.inputTokens),
        'x-amzn-bedrock-output-token-count': String(generation.outputTokens),
        'x-amzn-bedrock-invocation-latency': String(latencyMs),
      },
      body: JSON.stringify(toNativeResponse(generation, resolved.spec, request, this.now())),
    };
  }

  private validate(operation: RuntimeOperation, resolved: ResolvedModel, body: string): SimulationRequest {
    const parsed = parseJsonBody(body);
    return operation === 'converse'
      ? validateConverseRequest(parsed, resolved.spec)
      : validateNativeRequest(parsed, resolved.spec);
  }

  private async answerError(error: SimulatorError, delayMs: number): Promise<RuntimeResponse> {
    await this.delay(delayMs);
    return toErrorResponse(error);
  }

  private delay(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const entry: PendingDelay = {
        timer: setTimeout(() => {
          this.pending.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      this.pending.add(entry);
    });
  }

  /** Cuts every pending latency timer short (their calls answer at once), so the process can exit. */
  close(): void {
    for (const entry of this.pending) {
      clearTimeout(entry.timer);
      entry.resolve();
    }
    this.pending.clear();
  }
}

/** The restJson1 wire form of a service error: status, `x-amzn-errortype` and `{"message"}`. */
export function toErrorResponse(error: SimulatorError): RuntimeResponse {
  return {
    status: error.statusCode,
    headers: {
      'content-type': 'application/json',
      'x-amzn-errortype': error.errorName,
      'x-amzn-requestid': randomUUID(),
    },
    body: JSON.stringify({ message: error.message }),
  };
}
