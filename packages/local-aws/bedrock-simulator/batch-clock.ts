/** Cancels a scheduled callback; calling it after the callback ran (or twice) does nothing. */
export type CancelTimer = () => void;

/**
 * The time source and timers of the batch control plane. Injectable, so tests can drive a job through hours of
 * simulated time (a 24 h timeout) in microseconds with {@link ManualClock}.
 */
export interface BatchClock {
  /** Current time in ms since the epoch. */
  now(): number;
  /** Runs `callback` once, `ms` from now. */
  schedule(ms: number, callback: () => void): CancelTimer;
}

/** Longest delay one Node timer can hold (about 24.8 days); longer waits are chained. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * The real clock: `now` (Date.now unless told otherwise) and Node timers.
 * @param now the time source
 */
export function systemClock(now: () => number = Date.now): BatchClock {
  return {
    now,
    schedule(ms, callback) {
      let timer: NodeJS.Timeout | undefined;
      let cancelled = false;
      const arm = (remaining: number): void => {
        const step = Math.min(Math.max(0, remaining), MAX_TIMER_MS);
        timer = setTimeout(() => {
          if (cancelled) return;
          if (remaining > step) arm(remaining - step);
          else callback();
        }, step);
      };
      arm(ms);
      return () => {
        cancelled = true;
        if (timer !== undefined) clearTimeout(timer);
      };
    },
  };
}

interface ManualTimer {
  readonly due: number;
  readonly seq: number;
  readonly callback: () => void;
  cancelled: boolean;
}

/**
 * A clock that only moves when told to: {@link advance} runs every timer that falls due, in time order, with
 * `now()` set to each timer's due time. For tests of timeouts and slow phases without waiting.
 */
export class ManualClock implements BatchClock {
  private current: number;
  private seq = 0;
  private timers: ManualTimer[] = [];

  /** @param start the initial time, in ms since the epoch */
  constructor(start = Date.UTC(2025, 0, 1)) {
    this.current = start;
  }

  /** Current simulated time. */
  now(): number {
    return this.current;
  }

  /** Registers a timer that fires when the clock is advanced past `now + ms`. */
  schedule(ms: number, callback: () => void): CancelTimer {
    const timer: ManualTimer = {
      due: this.current + Math.max(0, ms),
      seq: (this.seq += 1),
      callback,
      cancelled: false,
    };
    this.timers.push(timer);
    return () => {
      timer.cancelled = true;
    };
  }

  /** Timers scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }

  /**
   * Moves the clock forward by `ms`, firing due timers in order (timers they schedule fire too if due).
   * Callbacks run synchronously; async work they start continues after this returns.
   */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance needs ms >= 0, got ${ms}`);
    const target = this.current + ms;
    for (;;) {
      this.timers = this.timers.filter((t) => !t.cancelled);
      const next = this.timers
        .filter((t) => t.due <= target)
        .sort((a, b) => a.due - b.due || a.seq - b.seq)[0];
      if (!next) break;
      this.current = next.due;
      next.cancelled = true;
      next.callback();
    }
    this.current = target;
  }
}
