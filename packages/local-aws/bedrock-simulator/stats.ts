import type { InjectedFaultKind } from './faults';

/** Accepted traffic in one second of the simulator's clock. */
export interface TimelinePoint {
  /** `Math.floor(now() / 1000)` of the clock when the calls were accepted. */
  readonly second: number;
  /** Calls accepted (answered successfully) in that second. */
  readonly requests: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** inputTokens + outputTokens. */
  readonly tokens: number;
}

/** Counters of one model (or of all models together). */
export interface ModelStats {
  /** Calls that named this model (whatever their outcome). */
  requests: number;
  /** Calls answered 200. */
  succeeded: number;
  /** ThrottlingException answers by cause (quota windows, or injected). */
  throttled: { rpm: number; tpm: number; injected: number };
  /** ValidationException answers (including the rejectWhenTextIncludes fault). */
  validationErrors: number;
  /** Injected faults by kind. */
  injectedFaults: Record<InjectedFaultKind, number>;
  /** Tokens of succeeded calls. */
  inputTokens: number;
  outputTokens: number;
  /** Accepted tokens per second, oldest first. */
  timeline: TimelinePoint[];
}

/** Everything `stats()` reports. */
export interface SimulatorStats {
  /** Per foundation model id (inference profiles and ARNs count under their model). */
  models: Record<string, ModelStats>;
  /** All known models together (calls naming unknown models are only in unknownModelRequests). */
  totals: ModelStats;
  /** Calls naming a model the table does not know. */
  unknownModelRequests: number;
  /** Transport counters. */
  http: {
    /** HTTP/2 sessions (connections) opened. */
    sessions: number;
    /** Streams (requests) received. */
    streams: number;
    /** Requests to paths that are not an operation. */
    unknownRoutes: number;
    /** Streams that failed on the wire (e.g. reset by the client). */
    streamErrors: number;
    /** Requests that hit a simulator bug (answered InternalServerException). */
    internalErrors: number;
  };
}

/** Outcome of one call, for stats. */
export type CallOutcome =
  | {
      readonly kind: 'succeeded';
      readonly inputTokens: number;
      readonly outputTokens: number;
      readonly at: number;
    }
  | { readonly kind: 'throttled'; readonly cause: 'rpm' | 'tpm' }
  | { readonly kind: 'validation' }
  | { readonly kind: 'fault'; readonly fault: InjectedFaultKind }
  | { readonly kind: 'internal' };

interface MutableTimelinePoint {
  second: number;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  tokens: number;
}

class ModelCounters {
  requests = 0;
  succeeded = 0;
  throttled = { rpm: 0, tpm: 0, injected: 0 };
  validationErrors = 0;
  injectedFaults: Record<InjectedFaultKind, number> = {
    throttling: 0,
    serviceUnavailable: 0,
    internalServer: 0,
    modelTimeout: 0,
    rejectedByMarker: 0,
  };
  inputTokens = 0;
  outputTokens = 0;
  private readonly seconds = new Map<number, MutableTimelinePoint>();

  record(outcome: CallOutcome): void {
    this.requests += 1;
    switch (outcome.kind) {
      case 'succeeded': {
        this.succeeded += 1;
        this.inputTokens += outcome.inputTokens;
        this.outputTokens += outcome.outputTokens;
        const second = Math.floor(outcome.at / 1000);
        let point = this.seconds.get(second);
        if (!point) {
          point = { second, requests: 0, inputTokens: 0, outputTokens: 0, tokens: 0 };
          this.seconds.set(second, point);
        }
        point.requests += 1;
        point.inputTokens += outcome.inputTokens;
        point.outputTokens += outcome.outputTokens;
        point.tokens += outcome.inputTokens + outcome.outputTokens;
        break;
      }
      case 'throttled':
        this.throttled[outcome.cause] += 1;
        break;
      case 'validation':
        this.validationErrors += 1;
        break;
      case 'fault':
        this.injectedFaults[outcome.fault] += 1;
        if (outcome.fault === 'throttling') this.throttled.injected += 1;
        if (outcome.fault === 'rejectedByMarker') this.validationErrors += 1;
        break;
      case 'internal':
        break;
    }
  }

  snapshot(): ModelStats {
    return {
      requests: this.requests,
      succeeded: this.succeeded,
      throttled: { ...this.throttled },
      validationErrors: this.validationErrors,
      injectedFaults: { ...this.injectedFaults },
      inputTokens: this.inputTokens,
      outputTokens: this.outputTokens,
      timeline: [...this.seconds.values()].sort((a, b) => a.second - b.second).map((p) => ({ ...p })),
    };
  }
}

/** Collects per-model counters and the accepted-token timeline. */
export class StatsCollector {
  private readonly models = new Map<string, ModelCounters>();
  private readonly totals = new ModelCounters();
  private unknownModelRequests = 0;
  /** Transport counters, bumped by the transport. */
  readonly http = { sessions: 0, streams: 0, unknownRoutes: 0, streamErrors: 0, internalErrors: 0 };

  /** Records the outcome of a call to a known model. */
  record(modelId: string, outcome: CallOutcome): void {
    let counters = this.models.get(modelId);
    if (!counters) {
      counters = new ModelCounters();
      this.models.set(modelId, counters);
    }
    counters.record(outcome);
    this.totals.record(outcome);
  }

  /** Records a call naming an unknown model. */
  recordUnknownModel(): void {
    this.unknownModelRequests += 1;
  }

  /** A deep copy of the current counters. */
  snapshot(): SimulatorStats {
    const models: Record<string, ModelStats> = {};
    for (const [id, counters] of this.models) models[id] = counters.snapshot();
    return {
      models,
      totals: this.totals.snapshot(),
      unknownModelRequests: this.unknownModelRequests,
      http: { ...this.http },
    };
  }
}
