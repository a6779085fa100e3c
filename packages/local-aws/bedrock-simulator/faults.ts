import { SimulatorError, TOO_MANY_REQUESTS_MESSAGE, type SimulatorErrorName } from './errors';
import { mulberry32 } from './engine';
import type { SimulationRequest } from './validation';

/** Faults the simulator injects, to exercise retries, backoff and failure lanes. */
export interface FaultOptions {
  /** Seed of the PRNG behind the fractions; the same seed and call order give the same faults. @default 1 */
  readonly seed?: number;
  /** Share (0..1) of accepted calls answered ThrottlingException. @default 0 */
  readonly throttleFraction?: number;
  /**
   * Share (0..1) of accepted calls answered with a server-side error, a mix of
   * ServiceUnavailableException 503, InternalServerException 500 and ModelTimeoutException 408. @default 0
   */
  readonly errorFraction?: number;
  /** Extra latency added to every answered call, in ms. @default 0 */
  readonly slowMs?: number;
  /** Calls whose user text includes this marker get a ValidationException (records the model API rejects). */
  readonly rejectWhenTextIncludes?: string;
}

/** Kinds of injected faults, as counted in stats. */
export type InjectedFaultKind =
  'throttling' | 'serviceUnavailable' | 'internalServer' | 'modelTimeout' | 'rejectedByMarker';

/** An injected fault: the error to answer with, and its kind for stats. */
export interface InjectedFault {
  readonly kind: InjectedFaultKind;
  readonly error: SimulatorError;
}

/** The server-side errors errorFraction picks from, in order, with equal odds. */
const SERVER_ERRORS: readonly { kind: InjectedFaultKind; name: SimulatorErrorName; message: string }[] = [
  {
    kind: 'serviceUnavailable',
    name: 'ServiceUnavailableException',
    message: 'Bedrock is unable to process your request.',
  },
  {
    kind: 'internalServer',
    name: 'InternalServerException',
    message: 'The server encountered an internal error while processing the request. (injected fault)',
  },
  {
    kind: 'modelTimeout',
    name: 'ModelTimeoutException',
    message: 'Model has timed out in processing the request. Try your request again.',
  },
];

/**
 * Decides, call by call, which fault (if any) to inject. Every call draws from one seeded PRNG, so a
 * given seed and call order always fault the same calls; {@link configure} restarts the sequence.
 */
export class FaultInjector {
  private options: FaultOptions = {};
  private random: () => number = mulberry32(1);

  /** @param options initial faults */
  constructor(options: FaultOptions = {}) {
    this.configure(options);
  }

  /** Replaces every fault setting (absent fields switch that fault off) and reseeds the PRNG. */
  configure(options: FaultOptions): void {
    for (const key of ['throttleFraction', 'errorFraction'] as const) {
      const value = options[key];
      if (value !== undefined && !(value >= 0 && value <= 1)) {
        throw new RangeError(`FaultOptions.${key} must be between 0 and 1, got ${value}`);
      }
    }
    if (options.slowMs !== undefined && !(options.slowMs >= 0)) {
      throw new RangeError(`FaultOptions.slowMs must be >= 0, got ${options.slowMs}`);
    }
    this.options = { ...options };
    this.random = mulberry32(options.seed ?? 1);
  }

  /** Current settings. */
  current(): FaultOptions {
    return { ...this.options };
  }

  /** Extra latency per call. */
  get slowMs(): number {
    return this.options.slowMs ?? 0;
  }

  /** The marker fault: a ValidationException when any user text of the request includes the marker. */
  checkMarker(request: SimulationRequest): InjectedFault | undefined {
    const marker = this.options.rejectWhenTextIncludes;
    if (marker === undefined || marker.length === 0) return undefined;
    const hit = request.messages.some(
      (m) => m.role === 'user' && m.content.some((block) => block.text.includes(marker)),
    );
    if (!hit) return undefined;
    return {
      kind: 'rejectedByMarker',
      error: new SimulatorError(
        'ValidationException',
        `The model rejected this request: its user text contains the marker "${marker}" (simulated fault rejectWhenTextIncludes).`,
      ),
    };
  }

  /**
   * Draws the random faults for one call. Always consumes two draws, so the sequence of later calls
   * does not depend on which fractions are set.
   */
  draw(): InjectedFault | undefined {
    const throttleDraw = this.random();
    const errorDraw = this.random();
    if (throttleDraw < (this.options.throttleFraction ?? 0)) {
      return {
        kind: 'throttling',
        error: new SimulatorError('ThrottlingException', TOO_MANY_REQUESTS_MESSAGE),
      };
    }
    const errorFraction = this.options.errorFraction ?? 0;
    if (errorDraw < errorFraction) {
      // Reuse the draw's position inside the fault band to pick the error, with equal odds.
      const pick =
        SERVER_ERRORS[Math.floor((errorDraw / errorFraction) * SERVER_ERRORS.length)] ?? SERVER_ERRORS[0];
      if (pick) return { kind: pick.kind, error: new SimulatorError(pick.name, pick.message) };
    }
    return undefined;
  }
}
