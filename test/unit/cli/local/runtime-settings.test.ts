// What the local runtime derives from the synthesized `local` environment: the Bedrock simulator's on-demand quotas
// and batch limits (so a local run meets the quotas the pipeline paces itself for), and the Express child budget.
import { BedrockRuntimeService, DEFAULT_QUOTA } from '../../local-aws/bedrock-simulator/catalog-simulator';
import {
  describeStack,
  type CfnTemplate,
  type LambdaFunctionDescription,
} from '@corpus-pipeline/local-aws/cloud/template';
import {
  EXPRESS_CHILD_BUDGET_ENV,
  configuredBatchLimits,
  configuredRuntimeQuotas,
  expressBudgetEnvironment,
  simulatorOptionsFor,
  type ConfiguredFunction,
} from '../../../../cli/local/runtime-settings';
import { environmentSettings, synthEnvironment } from '../../infra/synth-helpers';

jest.setTimeout(120_000);

const WHERE = { region: 'us-east-1', accountId: '000000000000' };
const MODEL = 'anthropic.claude-haiku-4-5-20251001-v1:0';
const BODY = JSON.stringify({ messages: [{ role: 'user', content: [{ text: 'Classify this ticket' }] }] });

/** Answers `calls` Converse calls one after the other; returns the statuses. */
async function converse(service: BedrockRuntimeService, calls: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < calls; i += 1) statuses.push((await service.handle('converse', MODEL, BODY)).status);
  return statuses;
}

describe('local runtime settings from the synthesized local environment', () => {
  let functions: readonly LambdaFunctionDescription[];
  const local = environmentSettings('local') as {
    onDemand: { requestsPerMinute: number; tokensPerMinute: number };
    batch: { quotas: Record<string, number> };
  };

  beforeAll(() => {
    const synthesized = synthEnvironment('local');
    try {
      functions = describeStack(synthesized.json as unknown as CfnTemplate, {
        stackName: 'CorpusPipeline-local',
        ...WHERE,
      }).functions;
    } finally {
      synthesized.cleanup();
    }
  });

  it("gives the simulator the environment's on-demand quotas and batch quotas, the caller's values winning", () => {
    expect(local.onDemand.requestsPerMinute).not.toBe(DEFAULT_QUOTA.requestsPerMinute);
    expect(configuredRuntimeQuotas(functions)).toEqual(local.onDemand);
    expect(configuredBatchLimits(functions)).toEqual(local.batch.quotas);

    const options = simulatorOptionsFor(
      functions,
      {
        quotas: { default: { tokensPerMinute: 5 }, models: { x: { requestsPerMinute: 1 } } },
        batch: { limits: { default: { maxConcurrentJobs: 7 } }, phaseMs: 1 },
        faults: { throttleFraction: 0.5 },
      },
      WHERE,
    );
    expect(options).toMatchObject({
      quotas: {
        default: { requestsPerMinute: local.onDemand.requestsPerMinute, tokensPerMinute: 5 },
        models: { x: { requestsPerMinute: 1 } },
      },
      batch: {
        ...WHERE,
        phaseMs: 1,
        limits: { default: { ...local.batch.quotas, maxConcurrentJobs: 7 } },
      },
      faults: { throttleFraction: 0.5 },
    });
  });

  it('the simulator no longer throttles a local run at its own default of 1,000 requests a minute', async () => {
    const calls = DEFAULT_QUOTA.requestsPerMinute + 50;
    const configured = new BedrockRuntimeService(simulatorOptionsFor(functions, {}, WHERE));
    expect((await converse(configured, calls)).filter((s) => s !== 200)).toEqual([]);
    expect(configured.stats.snapshot().totals.throttled).toEqual({ rpm: 0, tpm: 0, injected: 0 });

    // Without the stack's quotas, the same calls hit the simulator's default.
    const unconfigured = new BedrockRuntimeService(simulatorOptionsFor([], {}, WHERE));
    await converse(unconfigured, calls);
    expect(unconfigured.stats.snapshot().totals.throttled.rpm).toBe(50);
  });

  it('enforces a configured quota, read from the function that carries it', async () => {
    const tiny: ConfiguredFunction[] = [
      { environment: { OTHER: 'x' } },
      { environment: { REQUESTS_PER_MINUTE: '2', TOKENS_PER_MINUTE: 'not a number' } },
    ];
    expect(configuredRuntimeQuotas(tiny)).toEqual({ requestsPerMinute: 2 });
    const service = new BedrockRuntimeService(simulatorOptionsFor(tiny, {}, WHERE));
    expect(await converse(service, 3)).toEqual([200, 200, 429]);
    expect(service.stats.snapshot().totals.throttled.rpm).toBe(1);
  });
});

describe('the Express child budget in the functions environment', () => {
  it("is set only when the local cap is not AWS's 300 s", () => {
    expect(expressBudgetEnvironment(300_000)).toEqual({});
    expect(expressBudgetEnvironment(2_500)).toEqual({ [EXPRESS_CHILD_BUDGET_ENV]: '2.5' });
    expect(EXPRESS_CHILD_BUDGET_ENV).toBe('EXPRESS_CHILD_BUDGET_SECONDS');
  });
});
