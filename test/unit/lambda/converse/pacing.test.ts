import { describe, expect, it } from '@jest/globals';
import {
  estimateRequestSize,
  PacingAbortedError,
  pacedCaller,
  QuotaPacer,
} from '../../../../lambda/converse/pacing';

/** A fake clock: sleeping advances it, so pacing is measured in simulated time. */
function fakeClock(): { now: () => number; sleep: (ms: number) => Promise<void>; slept: number[] } {
  let t = 0;
  const slept: number[] = [];
  return {
    now: () => t,
    sleep: (ms) => {
      slept.push(ms);
      t += ms;
      return Promise.resolve();
    },
    slept,
  };
}

describe('QuotaPacer', () => {
  it('keeps a stream of calls at the target share of the requests-per-minute quota', async () => {
    const clock = fakeClock();
    // 600 RPM x share 1/2 x target 0.95 = 285 requests per minute.
    const pacer = new QuotaPacer({ requestsPerMinute: 600, tokensPerMinute: 1e9, share: 0.5, ...clock });
    for (let i = 0; i < 570; i++) pacer.settle(await pacer.acquire({ inputTokens: 1, maxTokens: 1 }));
    // 570 calls at 285 per minute take two minutes, less the credit a fresh pacer never has (it starts empty).
    expect(clock.now()).toBeGreaterThanOrEqual(119_000);
    expect(clock.now()).toBeLessThanOrEqual(120_500);
  });

  it('paces by tokens and corrects each debit with the usage the call reports', async () => {
    const clock = fakeClock();
    // 60,000 TPM x 0.95 = 950 tokens per second.
    const pacer = new QuotaPacer({ requestsPerMinute: 1e6, tokensPerMinute: 60_000, ...clock });
    for (let i = 0; i < 95; i++) {
      const permit = await pacer.acquire({ inputTokens: 100, maxTokens: 100 });
      pacer.settle(permit, { inputTokens: 100, outputTokens: 100 });
    }
    // 95 calls of 200 tokens = 19,000 tokens at 950 per second: about 20 s.
    expect(clock.now()).toBeGreaterThanOrEqual(19_000);
    expect(clock.now()).toBeLessThanOrEqual(20_500);
  });

  it('paces by tokens alone where the model has no requests-per-minute quota', async () => {
    const clock = fakeClock();
    // 60,000 TPM x 0.95 = 950 tokens per second; no request quota at all.
    const pacer = new QuotaPacer({ tokensPerMinute: 60_000, ...clock });
    for (let i = 0; i < 1_900; i++) {
      const permit = await pacer.acquire({ inputTokens: 5, maxTokens: 5 });
      pacer.settle(permit, { inputTokens: 5, outputTokens: 5 });
    }
    // 1,900 calls of 10 tokens = 19,000 tokens at 950 per second: about 20 s, 95 calls a second, a rate a
    // requests-per-minute quota of the old defaults (200) would have held to ten minutes.
    expect(clock.now()).toBeGreaterThanOrEqual(19_000);
    expect(clock.now()).toBeLessThanOrEqual(20_500);
    expect(() => QuotaPacer.forMapChild(undefined, 60_000, 4)).not.toThrow();
  });

  it('refunds the tokens of a call that failed', async () => {
    const clock = fakeClock();
    const pacer = new QuotaPacer({ requestsPerMinute: 1e6, tokensPerMinute: 60_000, ...clock });
    const permit = await pacer.acquire({ inputTokens: 950, maxTokens: 950 });
    const waitedForFirst = clock.now();
    pacer.settle(permit);
    await pacer.acquire({ inputTokens: 950, maxTokens: 950 });
    // The refund paid for most of the second call: it waits about as long as the first did, not twice as long.
    expect(clock.now() - waitedForFirst).toBeLessThanOrEqual(waitedForFirst + 50);
  });

  it('gives each Map child an equal share and rejects impossible settings', () => {
    expect(() => new QuotaPacer({ requestsPerMinute: 0, tokensPerMinute: 1 })).toThrow(RangeError);
    expect(() => new QuotaPacer({ requestsPerMinute: 1, tokensPerMinute: 1, share: 2 })).toThrow(RangeError);
    expect(QuotaPacer.forMapChild(100, 1000, 4)).toBeInstanceOf(QuotaPacer);
  });

  it('stops waiting when the call is aborted', async () => {
    const pacer = new QuotaPacer({
      requestsPerMinute: 1,
      tokensPerMinute: 1e9,
      now: () => 0,
      sleep: () => Promise.resolve(),
    });
    const controller = new AbortController();
    controller.abort();
    await expect(pacer.acquire({ inputTokens: 1 }, controller.signal)).rejects.toBeInstanceOf(
      PacingAbortedError,
    );
  });
});

describe('pacedCaller and estimateRequestSize', () => {
  it('estimates a Converse body by its text and output cap, and settles with the answer', async () => {
    const modelInput = {
      system: [{ text: 'x'.repeat(40) }],
      messages: [{ role: 'user', content: [{ text: 'y'.repeat(80) }] }],
      inferenceConfig: { maxTokens: 64 },
    };
    const size = estimateRequestSize(modelInput);
    // Every string under system and messages counts (the role too): (40 + 4 + 80) / 4.
    expect(size.inputTokens).toBe(31);
    expect(size.maxTokens).toBe(64);
    const clock = fakeClock();
    const pacer = new QuotaPacer({ requestsPerMinute: 1e6, tokensPerMinute: 1e9, ...clock });
    const usage = { inputTokens: 30, outputTokens: 10, totalTokens: 40 };
    const call = pacedCaller(() => Promise.resolve({ modelOutput: 'ok', usage }), pacer);
    await expect(
      call({ recordId: 'r', format: 'converse', modelInput }, new AbortController().signal),
    ).resolves.toEqual({ modelOutput: 'ok', usage });
  });
});
