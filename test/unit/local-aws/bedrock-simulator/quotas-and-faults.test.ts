import {
  ConverseCommand,
  type BedrockRuntimeClient,
  type ConverseCommandInput,
} from '@aws-sdk/client-bedrock-runtime';

import {
  ModelTable,
  generate,
  startBedrockSimulator,
  validateConverseRequest,
  type BedrockSimulator,
  type BedrockSimulatorOptions,
} from './catalog-simulator';
import { HAIKU, expectServiceError, runtimeClient } from './helpers';

const NOVA = 'amazon.nova-micro-v1:0';

let clock = 0;
const running: { sim: BedrockSimulator; client: BedrockRuntimeClient }[] = [];

async function start(options: BedrockSimulatorOptions = {}) {
  const sim = await startBedrockSimulator({ now: () => clock, ...options });
  const client = runtimeClient(sim.runtimeEndpoint);
  running.push({ sim, client });
  return { sim, client };
}

beforeEach(() => {
  clock = 1_700_000_000_000;
});

afterEach(async () => {
  for (const { sim, client } of running.splice(0)) {
    client.destroy();
    await sim.stop();
  }
});

function ask(text: string, modelId = HAIKU): ConverseCommandInput {
  return { modelId, messages: [{ role: 'user', content: [{ text }] }] };
}

/** 'ok', or the error name and message of a failed call. */
async function outcome(client: BedrockRuntimeClient, input: ConverseCommandInput): Promise<string> {
  try {
    await client.send(new ConverseCommand(input));
    return 'ok';
  } catch (err) {
    const e = err as { name: string; message: string; $metadata: { httpStatusCode?: number } };
    return `${e.$metadata.httpStatusCode} ${e.name}: ${e.message}`;
  }
}

const RPM = '429 ThrottlingException: Too many requests, please wait before trying again.';
const TPM = '429 ThrottlingException: Too many tokens, please wait before trying again.';

describe('requests-per-minute quota', () => {
  it('throttles over the rolling window, does not count throttled calls, and recovers', async () => {
    const { sim, client } = await start({ quotas: { default: { requestsPerMinute: 2 } } });
    expect(await outcome(client, ask('a'))).toBe('ok'); // t = 0
    clock += 30_000;
    expect(await outcome(client, ask('b'))).toBe('ok'); // t = 30 s
    clock += 10_000;
    expect(await outcome(client, ask('c'))).toBe(RPM); // t = 40 s: 2 in the window
    expect(await outcome(client, ask('c'))).toBe(RPM);
    clock += 20_001;
    // t = 60.001 s: 'a' left the window; had the throttled calls counted, this one would be refused too.
    expect(await outcome(client, ask('d'))).toBe('ok');
    expect(await outcome(client, ask('e'))).toBe(RPM);
    expect(await outcome(client, ask('other model', NOVA))).toBe('ok');
    const stats = sim.stats().models[HAIKU];
    expect(stats).toMatchObject({ requests: 6, succeeded: 3, throttled: { rpm: 3, tpm: 0, injected: 0 } });
  });
});

describe('tokens-per-minute quota', () => {
  it('throttles on input + output tokens per model, then recovers when the window moves on', async () => {
    // The model is deterministic, so the cost of the request is known before it is sent.
    const spec = new ModelTable().resolve(NOVA).spec;
    const cost = generate(
      validateConverseRequest({ messages: [{ role: 'user', content: [{ text: 'tpm' }] }] }, spec),
    );
    const perCall = cost.inputTokens + cost.outputTokens;
    const { sim, client } = await start({
      quotas: {
        default: { requestsPerMinute: 1000 },
        models: { [NOVA]: { tokensPerMinute: perCall * 2 + 1 } },
      },
    });
    expect(await outcome(client, ask('tpm', NOVA))).toBe('ok');
    clock += 59_000;
    expect(await outcome(client, ask('tpm', `us.${NOVA}`))).toBe('ok'); // profiles share the model's quota
    expect(await outcome(client, ask('tpm', NOVA))).toBe(TPM);
    expect(await outcome(client, ask('many tokens for another model'))).toBe('ok');
    clock += 1_000;
    expect(await outcome(client, ask('tpm', NOVA))).toBe('ok');
    const stats = sim.stats();
    expect(stats.models[NOVA]).toMatchObject({
      succeeded: 3,
      throttled: { rpm: 0, tpm: 1 },
      inputTokens: cost.inputTokens * 3,
      outputTokens: cost.outputTokens * 3,
    });
    const second = Math.floor(clock / 1000);
    expect(stats.models[NOVA]?.timeline).toEqual([
      {
        second: second - 60,
        requests: 1,
        inputTokens: cost.inputTokens,
        outputTokens: cost.outputTokens,
        tokens: perCall,
      },
      {
        second: second - 1,
        requests: 1,
        inputTokens: cost.inputTokens,
        outputTokens: cost.outputTokens,
        tokens: perCall,
      },
      {
        second,
        requests: 1,
        inputTokens: cost.inputTokens,
        outputTokens: cost.outputTokens,
        tokens: perCall,
      },
    ]);
  });
});

describe('injected faults', () => {
  async function pattern(client: BedrockRuntimeClient, n: number): Promise<string[]> {
    const results: string[] = [];
    // Sequential on purpose: the fault PRNG is drawn in arrival order.
    for (let i = 0; i < n; i += 1) results.push(await outcome(client, ask(`call ${i}`)));
    return results;
  }

  it('throttles a deterministic fraction of calls for a seed', async () => {
    const { sim, client } = await start({ faults: { seed: 42, throttleFraction: 0.4 } });
    const first = await pattern(client, 30);
    sim.setFaults({ seed: 42, throttleFraction: 0.4 });
    expect(await pattern(client, 30)).toEqual(first);
    sim.setFaults({ seed: 43, throttleFraction: 0.4 });
    expect(await pattern(client, 30)).not.toEqual(first);
    const throttled = first.filter((r) => r === RPM).length;
    expect(throttled).toBeGreaterThan(0);
    expect(first.filter((r) => r === 'ok')).toHaveLength(30 - throttled);
    sim.setFaults({});
    expect(await pattern(client, 10)).toEqual(Array(10).fill('ok'));
    expect(sim.stats().models[HAIKU]?.injectedFaults.throttling).toBe(
      sim.stats().models[HAIKU]?.throttled.injected,
    );
  });

  it('answers errorFraction calls with a mix of 503, 500 and 408 the SDK recognises', async () => {
    const { sim, client } = await start({ faults: { seed: 7, errorFraction: 1 } });
    const results = await pattern(client, 30);
    const kinds = new Set(results.map((r) => r.split(':')[0]));
    expect(kinds).toEqual(
      new Set([
        '503 ServiceUnavailableException',
        '500 InternalServerException',
        '408 ModelTimeoutException',
      ]),
    );
    const faults = sim.stats().models[HAIKU]?.injectedFaults;
    expect(
      (faults?.serviceUnavailable ?? 0) + (faults?.internalServer ?? 0) + (faults?.modelTimeout ?? 0),
    ).toBe(30);
    expect(sim.stats().models[HAIKU]?.succeeded).toBe(0);
  });

  it('rejects calls whose user text includes the marker', async () => {
    const { sim, client } = await start({ faults: { rejectWhenTextIncludes: '#poison#' } });
    const err = await expectServiceError(client.send(new ConverseCommand(ask('record #poison# 12'))));
    expect(err.name).toBe('ValidationException');
    expect(err.$metadata.httpStatusCode).toBe(400);
    expect(err.message).toContain('#poison#');
    expect(await outcome(client, ask('a clean record'))).toBe('ok');
    expect(sim.stats().models[HAIKU]).toMatchObject({
      validationErrors: 1,
      injectedFaults: { rejectedByMarker: 1 },
      succeeded: 1,
    });
  });

  it('adds latencyMs, perOutputTokenMs and slowMs to the simulated latency', async () => {
    const { sim, client } = await start({ latencyMs: 5, perOutputTokenMs: 0.05 });
    const plain = await client.send(new ConverseCommand(ask('latency')));
    const outputTokens = plain.usage?.outputTokens ?? 0;
    expect(plain.metrics?.latencyMs).toBeCloseTo(5 + 0.05 * outputTokens, 6);
    sim.setFaults({ slowMs: 10 });
    const slow = await client.send(new ConverseCommand(ask('latency')));
    expect(slow.metrics?.latencyMs).toBeCloseTo(15 + 0.05 * outputTokens, 6);
  });
});

describe('lifecycle', () => {
  it('answers calls still waiting on simulated latency when it stops', async () => {
    const { sim, client } = await start({ latencyMs: 60_000 });
    const pending = outcome(client, ask('never mind'));
    // Wait until the call is inside the simulator, then stop it under the call.
    while (sim.stats().totals.succeeded === 0) await new Promise((resolve) => setImmediate(resolve));
    await sim.stop();
    // Stopping cuts the simulated latency short: the call is answered, not left hanging.
    expect(await pending).toBe('ok');
  });
});
