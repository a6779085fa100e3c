import {
  ConverseCommand,
  InvokeModelCommand,
  type BedrockRuntimeClient,
} from '@aws-sdk/client-bedrock-runtime';

import { startBedrockSimulator, type BedrockSimulator } from './catalog-simulator';
import { HAIKU, expectServiceError, runtimeClient } from './helpers';

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

function anthropicBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    anthropic_version: 'bedrock-2023-05-31',
    max_tokens: 200,
    system: 'You summarise records.',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Summarise record 7' }] }],
    ...extra,
  };
}

async function invoke(body: unknown, modelId = HAIKU): Promise<Record<string, unknown>> {
  const response = await client.send(
    new InvokeModelCommand({
      modelId,
      contentType: 'application/json',
      accept: 'application/json',
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  );
  expect(response.contentType).toBe('application/json');
  return JSON.parse(response.body.transformToString()) as Record<string, unknown>;
}

describe('InvokeModel, Anthropic Messages format', () => {
  it('answers in the Anthropic native response shape', async () => {
    const body = await invoke(anthropicBody());
    expect(body).toEqual({
      id: expect.stringMatching(/^msg_bdrk_[0-9a-f]{12}$/),
      type: 'message',
      role: 'assistant',
      model: 'claude-haiku-4-5-20251001',
      content: [{ type: 'text', text: expect.stringContaining('Summarise record 7') }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: expect.any(Number) },
    });
  });

  it('gives the same answer as Converse for the same conversation', async () => {
    const native = await invoke(anthropicBody());
    const converse = await client.send(
      new ConverseCommand({
        modelId: HAIKU,
        system: [{ text: 'You summarise records.' }],
        messages: [{ role: 'user', content: [{ text: 'Summarise record 7' }] }],
        inferenceConfig: { maxTokens: 200 },
      }),
    );
    const content = native.content as { text: string }[];
    expect(content[0]?.text).toBe(converse.output?.message?.content?.[0]?.text);
  });

  it('accepts string content, an inference profile and stops at max_tokens', async () => {
    const body = await invoke(
      anthropicBody({ max_tokens: 2, messages: [{ role: 'user', content: 'short please' }] }),
      `eu.${HAIKU}`,
    );
    expect(body.stop_reason).toBe('max_tokens');
    expect(body.usage).toEqual({ input_tokens: 9, output_tokens: 2 });
  });

  it.each<[string, unknown, string, string | RegExp]>([
    [
      'a missing anthropic_version',
      { max_tokens: 10, messages: [{ role: 'user', content: 'x' }] },
      HAIKU,
      'Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.',
    ],
    [
      'a Converse body sent to InvokeModel',
      { messages: [{ role: 'user', content: [{ text: 'x' }] }], inferenceConfig: { maxTokens: 10 } },
      HAIKU,
      /^Malformed input request: 3 schema violations found \(#: required key \[anthropic_version\] not found; #: required key \[max_tokens\] not found; #: extraneous key \[inferenceConfig\] is not permitted\), please reformat/,
    ],
    [
      'malformed JSON',
      '{"anthropic_version": ',
      HAIKU,
      /^Malformed input request: the request body is not valid JSON/,
    ],
    [
      'a first message from the assistant',
      anthropicBody({ messages: [{ role: 'assistant', content: 'x' }] }),
      HAIKU,
      'messages: first message must use the "user" role',
    ],
    [
      'two user messages in a row',
      anthropicBody({
        messages: [
          { role: 'user', content: 'x' },
          { role: 'user', content: 'y' },
        ],
      }),
      HAIKU,
      'messages: roles must alternate between "user" and "assistant", but found multiple "user" roles in a row',
    ],
    [
      'an empty text block',
      anthropicBody({ messages: [{ role: 'user', content: [{ type: 'text', text: '' }] }] }),
      HAIKU,
      'messages: text content blocks must be non-empty',
    ],
    [
      'an unknown block type',
      anthropicBody({ messages: [{ role: 'user', content: [{ type: 'hologram' }] }] }),
      HAIKU,
      /^messages\.0\.content\.0: Input tag 'hologram' found using 'type' does not match any of the expected tags/,
    ],
    [
      "max_tokens above the model's maximum",
      anthropicBody({ max_tokens: 64001 }),
      HAIKU,
      'max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-haiku-4-5-20251001',
    ],
    ['temperature above 1', anthropicBody({ temperature: 1.1 }), HAIKU, 'temperature: range: 0..1'],
    [
      "another family's native body (Titan's, to Nova)",
      { inputText: 'hello' },
      'amazon.nova-micro-v1:0',
      'Malformed input request: #: extraneous key [inputText] is not permitted, please reformat your input and try again.',
    ],
  ])('rejects %s', async (_case, body, modelId, message) => {
    const err = await expectServiceError(invoke(body, modelId));
    expect(err.name).toBe('ValidationException');
    expect(err.$metadata.httpStatusCode).toBe(400);
    if (typeof message === 'string') expect(err.message).toBe(message);
    else expect(err.message).toMatch(message);
  });

  it('answers an unknown model with the service error', async () => {
    const err = await expectServiceError(invoke(anthropicBody(), 'anthropic.claude-0'));
    expect(err.name).toBe('ValidationException');
    expect(err.message).toBe('The provided model identifier is invalid.');
  });
});
