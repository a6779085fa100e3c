import {
  GetFoundationModelAvailabilityCommand,
  GetFoundationModelCommand,
  GetInferenceProfileCommand,
  type BedrockClient,
} from '@aws-sdk/client-bedrock';

import {
  startBedrockSimulator,
  type BedrockSimulator,
  type BedrockSimulatorOptions,
} from './catalog-simulator';
import { checkModelAvailability, ModelAvailabilityCache } from '../../../../lambda/plan/model-availability';
import { ModelNotAvailableError } from '../../../../lambda/shared/errors';
import { controlClient, expectSdkError } from './batch-helpers';

/**
 * The simulator's model questions (GetFoundationModel, GetInferenceProfile, GetFoundationModelAvailability) through
 * the real BedrockClient, and Plan's availability check (lambda/plan/model-availability.ts) asking them.
 */

const running: { sim: BedrockSimulator; client: BedrockClient }[] = [];

async function start(options: BedrockSimulatorOptions = {}): Promise<BedrockClient> {
  const sim = await startBedrockSimulator(options);
  const client = controlClient(sim.controlEndpoint);
  running.push({ sim, client });
  return client;
}

afterEach(async () => {
  for (const { sim, client } of running.splice(0)) {
    client.destroy();
    await sim.stop();
  }
});

describe('the control plane answers model questions for catalog models', () => {
  it('GetFoundationModel: details, lifecycle and how it may be invoked', async () => {
    const client = await start();
    const lite = await client.send(
      new GetFoundationModelCommand({ modelIdentifier: 'amazon.nova-lite-v1:0' }),
    );
    expect(lite.modelDetails).toMatchObject({
      modelArn: 'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0',
      modelId: 'amazon.nova-lite-v1:0',
      modelName: 'Nova Lite',
      providerName: 'Amazon',
      inferenceTypesSupported: ['ON_DEMAND', 'INFERENCE_PROFILE'],
      modelLifecycle: { status: 'ACTIVE' },
    });
    const llama = await client.send(
      new GetFoundationModelCommand({ modelIdentifier: 'meta.llama3-3-70b-instruct-v1:0' }),
    );
    expect(llama.modelDetails?.inferenceTypesSupported).toEqual(['INFERENCE_PROFILE']);
    const legacy = await client.send(
      new GetFoundationModelCommand({ modelIdentifier: 'amazon.nova-premier-v1:0' }),
    );
    expect(legacy.modelDetails?.modelLifecycle?.status).toBe('LEGACY');
  });

  it('GetFoundationModel refuses a retired model and an unknown id', async () => {
    const client = await start();
    const retired = await expectSdkError(
      client.send(
        new GetFoundationModelCommand({ modelIdentifier: 'anthropic.claude-3-haiku-20240307-v1:0' }),
      ),
    );
    expect([retired.name, retired.message]).toEqual([
      'ResourceNotFoundException',
      'This model version has reached the end of its life.',
    ]);
    const unknown = await expectSdkError(
      client.send(new GetFoundationModelCommand({ modelIdentifier: 'amazon.nova-ultra-v9:0' })),
    );
    expect(unknown.name).toBe('ValidationException');
  });

  it('GetInferenceProfile: the system-defined profiles the model has, by id or ARN', async () => {
    const client = await start({ batch: { accountId: '123456789012' } });
    const profile = await client.send(
      new GetInferenceProfileCommand({ inferenceProfileIdentifier: 'us.amazon.nova-lite-v1:0' }),
    );
    expect(profile).toMatchObject({
      inferenceProfileId: 'us.amazon.nova-lite-v1:0',
      inferenceProfileArn:
        'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0',
      models: [{ modelArn: 'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0' }],
      status: 'ACTIVE',
      type: 'SYSTEM_DEFINED',
    });
    const byArn = await client.send(
      new GetInferenceProfileCommand({ inferenceProfileIdentifier: profile.inferenceProfileArn }),
    );
    expect(byArn.inferenceProfileId).toBe('us.amazon.nova-lite-v1:0');
    const none = await expectSdkError(
      client.send(
        new GetInferenceProfileCommand({ inferenceProfileIdentifier: 'global.amazon.nova-lite-v1:0' }),
      ),
    );
    expect(none.name).toBe('ResourceNotFoundException');
  });

  it('GetFoundationModelAvailability: available, unless the simulator is told otherwise', async () => {
    const client = await start({
      batch: { modelAccess: { 'openai.gpt-oss-20b-1:0': { entitlementAvailability: 'NOT_AVAILABLE' } } },
    });
    const lite = await client.send(
      new GetFoundationModelAvailabilityCommand({ modelId: 'amazon.nova-lite-v1:0' }),
    );
    expect(lite).toMatchObject({
      modelId: 'amazon.nova-lite-v1:0',
      agreementAvailability: { status: 'AVAILABLE' },
      authorizationStatus: 'AUTHORIZED',
      entitlementAvailability: 'AVAILABLE',
      regionAvailability: 'AVAILABLE',
    });
    const gpt = await client.send(
      new GetFoundationModelAvailabilityCommand({ modelId: 'openai.gpt-oss-20b-1:0' }),
    );
    expect(gpt.entitlementAvailability).toBe('NOT_AVAILABLE');
  });
});

describe("Plan's availability check", () => {
  it('passes a catalog model, directly and through its profile, and caches the answer', async () => {
    const client = await start();
    await expect(
      checkModelAvailability(client, 'us.amazon.nova-lite-v1:0', 'us-east-1'),
    ).resolves.toMatchObject({
      foundationModelId: 'amazon.nova-lite-v1:0',
      lifecycle: 'ACTIVE',
      notes: [],
    });
    const legacy = await checkModelAvailability(client, 'us.amazon.nova-premier-v1:0', 'us-east-1');
    expect(legacy.notes).toEqual([expect.stringMatching(/is LEGACY/)]);

    let calls = 0;
    client.middlewareStack.add(
      (next) => (args) => {
        calls++;
        return next(args);
      },
      { step: 'initialize', name: 'countCalls' },
    );
    const cache = new ModelAvailabilityCache();
    await cache.check(client, 'amazon.nova-lite-v1:0', 'us-east-1');
    await cache.check(client, 'amazon.nova-lite-v1:0', 'us-east-1');
    expect(calls).toBe(2); // GetFoundationModel and GetFoundationModelAvailability, once
  });

  it.each<[string, string, RegExp]>([
    [
      'a retired model, without asking Bedrock',
      'anthropic.claude-3-haiku-20240307-v1:0',
      /reached end of life in us-east-1 on 2026-09-10: .* such as anthropic\.claude-haiku-4-5-20251001-v1:0/,
    ],
    [
      'an unknown model',
      'amazon.nova-ultra-v9:0',
      /Bedrock does not offer amazon\.nova-ultra-v9:0 in us-east-1/,
    ],
    [
      'a profile the model does not have',
      'global.amazon.nova-lite-v1:0',
      /The inference profile global\.amazon\.nova-lite-v1:0 does not exist in us-east-1/,
    ],
    [
      'a profile-only model by its model id',
      'meta.llama3-3-70b-instruct-v1:0',
      /not invocable on demand by its model id .* such as us\.meta\.llama3-3-70b-instruct-v1:0/,
    ],
    [
      'a model whose access is not enabled',
      'openai.gpt-oss-20b-1:0',
      /model access is not enabled for the account\. To fix it: enable access to the model in the Bedrock console's Model access page \(https:\/\/console\.aws\.amazon\.com\/bedrock\/home\?region=us-east-1#\/modelaccess\)/,
    ],
  ])('refuses %s with what to do', async (_case, modelId, message) => {
    const client = await start({
      batch: { modelAccess: { 'openai.gpt-oss-20b-1:0': { entitlementAvailability: 'NOT_AVAILABLE' } } },
    });
    const err = await checkModelAvailability(client, modelId, 'us-east-1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelNotAvailableError);
    expect((err as Error).name).toBe('ModelNotAvailableError');
    expect((err as Error).message).toMatch(message);
  });
});
