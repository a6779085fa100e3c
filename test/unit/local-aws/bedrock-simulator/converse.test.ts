import {
  ConverseCommand,
  ConverseStreamCommand,
  type BedrockRuntimeClient,
  type ContentBlock,
  type ConverseCommandInput,
  type Message,
} from '@aws-sdk/client-bedrock-runtime';

import { startBedrockSimulator, type BedrockSimulator } from './catalog-simulator';
import { HAIKU, expectServiceError, rawRequest, runtimeClient } from './helpers';

let sim: BedrockSimulator;
let client: BedrockRuntimeClient;

beforeAll(async () => {
  sim = await startBedrockSimulator();
  client = runtimeClient(sim.runtimeEndpoint);
});

afterAll(async () => {
  client.destroy();
  await sim.stop();
});

function ask(text: string, extra: Partial<ConverseCommandInput> = {}): ConverseCommandInput {
  return { modelId: HAIKU, messages: [{ role: 'user', content: [{ text }] }], ...extra };
}

describe('Converse', () => {
  it('serves h2c on 127.0.0.1 and answers in the exact Converse shape', async () => {
    expect(sim.runtimeEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const response = await client.send(
      new ConverseCommand(ask('Summarise: the cat sat on the mat.', { system: [{ text: 'Be brief.' }] })),
    );
    expect(response.$metadata.httpStatusCode).toBe(200);
    expect(response.output?.message?.role).toBe('assistant');
    const text = response.output?.message?.content?.[0]?.text ?? '';
    expect(text).toContain('Summarise: the cat sat on the mat.');
    expect(response.stopReason).toBe('end_turn');
    // system (9) + message (34) = 43 characters -> 11 tokens
    expect(response.usage?.inputTokens).toBe(11);
    expect(response.usage?.outputTokens).toBe(Math.ceil(text.length / 4));
    expect(response.usage?.totalTokens).toBe(
      (response.usage?.inputTokens ?? 0) + (response.usage?.outputTokens ?? 0),
    );
    expect(response.metrics?.latencyMs).toBe(0);
  });

  it('is reached through AWS_ENDPOINT_URL_BEDROCK_RUNTIME with no endpoint in the code', async () => {
    const saved = process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME;
    process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME = sim.runtimeEndpoint;
    const viaEnv = runtimeClient(undefined);
    try {
      const response = await viaEnv.send(new ConverseCommand(ask('via the environment')));
      expect(response.output?.message?.content?.[0]?.text).toContain('via the environment');
    } finally {
      viaEnv.destroy();
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME;
      else process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME = saved;
    }
  });

  it('is deterministic: same request, same text; different request, different text', async () => {
    const [a, b, c] = await Promise.all([
      client.send(new ConverseCommand(ask('record 1'))),
      client.send(new ConverseCommand(ask('record 1'))),
      client.send(new ConverseCommand(ask('record 2'))),
    ]);
    expect(b.output).toEqual(a.output);
    expect(c.output?.message?.content?.[0]?.text).not.toBe(a.output?.message?.content?.[0]?.text);
  });

  it('cuts the answer at maxTokens with stopReason max_tokens', async () => {
    const response = await client.send(
      new ConverseCommand(ask('long answer please', { inferenceConfig: { maxTokens: 4 } })),
    );
    expect(response.stopReason).toBe('max_tokens');
    expect(response.usage?.outputTokens).toBe(4);
    expect(response.output?.message?.content?.[0]?.text).toHaveLength(16);
  });

  it.each([
    'us.anthropic.claude-haiku-4-5-20251001-v1:0',
    'global.anthropic.claude-sonnet-4-5-20250929-v1:0',
    'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0',
    'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-3-70b-instruct-v1:0',
    'openai.gpt-oss-20b-1:0',
    'mistral.mistral-large-2407-v1:0',
  ])('accepts the model identifier %s', async (modelId) => {
    const response = await client.send(new ConverseCommand(ask('hello', { modelId })));
    expect(response.stopReason).toBe('end_turn');
  });

  it('counts inference profile calls under their foundation model', async () => {
    const before = sim.stats().models[HAIKU]?.succeeded ?? 0;
    await client.send(new ConverseCommand(ask('profile', { modelId: `us.${HAIKU}` })));
    expect(sim.stats().models[HAIKU]?.succeeded).toBe(before + 1);
  });

  it('answers an unknown model with the service error', async () => {
    const before = sim.stats().unknownModelRequests;
    const err = await expectServiceError(
      client.send(new ConverseCommand(ask('x', { modelId: 'anthropic.claude-99-v1:0' }))),
    );
    expect(err.name).toBe('ValidationException');
    expect(err.message).toBe('The provided model identifier is invalid.');
    expect(err.$metadata.httpStatusCode).toBe(400);
    expect(sim.stats().unknownModelRequests).toBe(before + 1);
  });

  it('serves 50 parallel calls over one HTTP/2 session', async () => {
    const shared = runtimeClient(sim.runtimeEndpoint, {
      requestHandler: { disableConcurrentStreams: false },
    });
    try {
      const before = sim.stats().http;
      const prompts = Array.from({ length: 50 }, (_, i) => `parallel request number ${i}`);
      const responses = await Promise.all(prompts.map((p) => shared.send(new ConverseCommand(ask(p)))));
      responses.forEach((response, i) => {
        expect(response.output?.message?.content?.[0]?.text).toContain(`parallel request number ${i}"`);
      });
      const after = sim.stats().http;
      expect(after.sessions - before.sessions).toBe(1);
      expect(after.streams - before.streams).toBe(50);
    } finally {
      shared.destroy();
    }
  });
});

describe('Converse validation', () => {
  const user = (content: ContentBlock[]): Message => ({ role: 'user', content });
  const assistant = (text: string): Message => ({ role: 'assistant', content: [{ text }] });
  const hi = user([{ text: 'hi' }]);

  it.each<[string, Partial<ConverseCommandInput>, string | RegExp]>([
    ['missing messages', { messages: undefined }, /^The messages field is missing or empty\./],
    ['empty messages', { messages: [] }, /^The messages field is missing or empty\./],
    [
      'a first message from the assistant',
      { messages: [assistant('hello'), hi] },
      'A conversation must start with a user message. Try again with a conversation that starts with a user message.',
    ],
    [
      'roles that do not alternate',
      { messages: [hi, hi] },
      'A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.',
    ],
    [
      'a message with empty content',
      { messages: [hi, { role: 'assistant', content: [] }, hi] },
      'The content field in the Message object at messages.1 is empty. Add a ContentBlock object to the content field and try again.',
    ],
    [
      'a text block with empty text',
      { messages: [user([{ text: 'ok' }, { text: '' }])] },
      'The text field in the ContentBlock object at messages.0.content.1 is blank. Add text to the text field, and try again.',
    ],
    [
      'a text block with only whitespace',
      { messages: [user([{ text: ' \n ' }])] },
      'The text field in the ContentBlock object at messages.0.content.0 is blank. Add text to the text field, and try again.',
    ],
    [
      'an unknown content block type',
      { messages: [user([{ $unknown: ['hologram', { x: 1 }] } as ContentBlock])] },
      /^The ContentBlock object at messages\.0\.content\.0 has an unsupported type: 'hologram'\./,
    ],
    [
      'a block whose unknown type the SDK dropped',
      { messages: [user([{ hologram: 'x' } as unknown as ContentBlock])] },
      /^The ContentBlock object at messages\.0\.content\.0 is empty/,
    ],
    [
      'a role outside user/assistant',
      { messages: [hi, { role: 'system' as 'user', content: [{ text: 'x' }] }] },
      "1 validation error detected: Value 'system' at 'messages.1.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
    ],
    [
      'maxTokens below 1',
      { inferenceConfig: { maxTokens: 0 } },
      "1 validation error detected: Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1",
    ],
    [
      "maxTokens above the model's maximum",
      { modelId: 'us.amazon.nova-lite-v1:0', inferenceConfig: { maxTokens: 5001 } },
      'The maximum tokens you requested exceeds the model limit of 5000. Try again with a maximum tokens value that is lower than 5000.',
    ],
    [
      'temperature above 1',
      { inferenceConfig: { temperature: 1.5 } },
      "1 validation error detected: Value '1.5' at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1",
    ],
    [
      'temperature below 0',
      { inferenceConfig: { temperature: -0.5 } },
      "1 validation error detected: Value '-0.5' at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value greater than or equal to 0",
    ],
    [
      'topP above 1 together with a bad temperature',
      { inferenceConfig: { temperature: 2, topP: 1.2 } },
      "2 validation errors detected: Value '2' at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1; Value '1.2' at 'inferenceConfig.topP' failed to satisfy constraint: Member must have value less than or equal to 1",
    ],
    [
      "input over the model's context window",
      {
        modelId: 'us.meta.llama3-3-70b-instruct-v1:0',
        messages: [user([{ text: 'word '.repeat(103_000) }])],
      },
      /^The model returned the following errors: Input is too long for requested model\. The input is about 128750 tokens; meta\.llama3-3-70b-instruct-v1:0 accepts at most 128000\.$/,
    ],
  ])('rejects %s', async (_case, input, message) => {
    const before = sim.stats().totals.validationErrors;
    const err = await expectServiceError(client.send(new ConverseCommand({ ...ask('hi'), ...input })));
    expect(err.name).toBe('ValidationException');
    expect(err.$metadata.httpStatusCode).toBe(400);
    if (typeof message === 'string') expect(err.message).toBe(message);
    else expect(err.message).toMatch(message);
    expect(sim.stats().totals.validationErrors).toBe(before + 1);
  });

  it('accepts the limits themselves (maxTokens at the maximum, temperature 0 and topP 1)', async () => {
    const response = await client.send(
      new ConverseCommand(ask('edges', { inferenceConfig: { maxTokens: 4096, temperature: 0, topP: 1 } })),
    );
    expect(response.stopReason).toBe('end_turn');
  });

  it('rejects a malformed JSON body', async () => {
    const response = await rawRequest(
      sim.runtimeEndpoint,
      'POST',
      `/model/${encodeURIComponent(HAIKU)}/converse`,
      '{"messages": [',
    );
    expect(response.status).toBe(400);
    expect(response.headers['x-amzn-errortype']).toBe('ValidationException');
    expect(JSON.parse(response.body).message).toMatch(
      /^Malformed input request: the request body is not valid JSON \(.+\), please reformat your input and try again\.$/,
    );
  });
});

describe('routes', () => {
  it('answers paths that are not an operation with UnknownOperationException', async () => {
    const response = await rawRequest(sim.runtimeEndpoint, 'GET', '/foundation-models');
    expect(response.status).toBe(404);
    expect(response.headers['x-amzn-errortype']).toBe('UnknownOperationException');
    expect(JSON.parse(response.body).message).toContain('POST /model/{modelId}/converse');
  });

  it('says ConverseStream is not simulated', async () => {
    const err = await expectServiceError(client.send(new ConverseStreamCommand(ask('stream'))));
    expect(err.name).toBe('UnknownOperationException');
    expect(err.message).toContain('does not implement ConverseStream; call Converse instead');
    expect(err.$metadata.httpStatusCode).toBe(404);
  });
});
