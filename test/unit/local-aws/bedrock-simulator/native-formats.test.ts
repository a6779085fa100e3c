import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ConverseCommand,
  InvokeModelCommand,
  type BedrockRuntimeClient,
} from '@aws-sdk/client-bedrock-runtime';

import {
  FaultInjector,
  ModelTable,
  processBatchRecord,
  startBedrockSimulator,
  type BedrockSimulator,
} from './catalog-simulator';
import { MODEL_FAMILIES, nativeUsage, type ModelFamily } from '../../../../lambda/shared/model-catalog';
import { bedrockCaller } from '../../../../lambda/converse/model-caller';
import { detectFormat } from '../../../../lambda/shared/records';
import { expectServiceError, runtimeClient } from './helpers';

/**
 * Every catalog family's native body through the simulator, against the documented shapes in
 * test/fixtures/aws/models/<family>/ (README.md there names the pages).
 */

const FIXTURES = join(__dirname, '../../../fixtures/aws/models');

/** The model each family's fixture is sent to (named in the fixture's README). */
const MODEL_OF: Record<ModelFamily, string> = {
  'anthropic-messages': 'anthropic.claude-haiku-4-5-20251001-v1:0',
  'amazon-nova': 'us.amazon.nova-lite-v1:0',
  'meta-llama': 'us.meta.llama3-3-70b-instruct-v1:0',
  'mistral-chat': 'mistral.mistral-large-2407-v1:0',
  'openai-chat': 'openai.gpt-oss-20b-1:0',
};

function fixture(family: ModelFamily, name: 'request' | 'response'): Record<string, unknown> {
  return JSON.parse(readFileSync(join(FIXTURES, family, `${name}.json`), 'utf8')) as Record<string, unknown>;
}

/** A value's shape: its JSON type, members for objects (recursively), the first element's shape for arrays. */
function shapeOf(value: unknown): unknown {
  if (value === null) return 'null';
  if (Array.isArray(value)) return value.length === 0 ? [] : [shapeOf(value[0])];
  if (typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value as object)
        .sort()
        .map((k) => [k, shapeOf((value as Record<string, unknown>)[k])]),
    );
  }
  return typeof value;
}

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

describe.each(MODEL_FAMILIES.map((f) => [f]))('%s', (family) => {
  const request = fixture(family, 'request');
  const documented = fixture(family, 'response');

  it('is a native body to records.ts, and its documented answer has readable usage', () => {
    expect(detectFormat(request, family)).toBe('native');
    const usage = nativeUsage(documented, family);
    if (family === 'mistral-chat') expect(usage).toBeUndefined();
    else expect(usage?.inputTokens).toBeGreaterThan(0);
  });

  it('InvokeModel answers in the documented shape, its usage agreeing with the token headers', async () => {
    let headers: Record<string, string> = {};
    const command = new InvokeModelCommand({
      modelId: MODEL_OF[family],
      contentType: 'application/json',
      accept: 'application/json',
      body: JSON.stringify(request),
    });
    command.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        headers = (result.response as { headers: Record<string, string> }).headers;
        return result;
      },
      { step: 'deserialize', name: 'testHeaders' },
    );
    const response = await client.send(command);
    const body = JSON.parse(response.body.transformToString()) as Record<string, unknown>;
    expect(shapeOf(body)).toEqual(shapeOf(documented));
    const usage = nativeUsage(body, family);
    const fromHeaders = {
      inputTokens: Number(headers['x-amzn-bedrock-input-token-count']),
      outputTokens: Number(headers['x-amzn-bedrock-output-token-count']),
    };
    expect(fromHeaders.inputTokens).toBeGreaterThan(0);
    if (family === 'mistral-chat') expect(usage).toBeUndefined();
    else expect(usage).toMatchObject(fromHeaders);
  });

  it("converse mode's caller records the answer's tokens (Mistral's from the response headers)", async () => {
    const call = bedrockCaller(client, MODEL_OF[family], family);
    const { modelOutput, usage } = await call(
      { recordId: 'r1', format: 'native', modelInput: request },
      new AbortController().signal,
    );
    expect(shapeOf(modelOutput)).toEqual(shapeOf(documented));
    expect(usage.inputTokens).toBeGreaterThan(0);
    expect(usage.outputTokens).toBeGreaterThan(0);
    expect(usage.totalTokens).toBe(usage.inputTokens + usage.outputTokens);
  });

  it('a batch record gets the same shape', () => {
    const model = new ModelTable().resolve(MODEL_OF[family]).spec;
    const result = processBatchRecord(JSON.stringify({ recordId: 'r1', modelInput: request }), {
      model,
      invocationType: 'InvokeModel',
      faults: new FaultInjector(),
      fallbackRecordId: () => 'GENERATED01',
    });
    expect(result.ok).toBe(true);
    expect(shapeOf((result.line as { modelOutput: unknown }).modelOutput)).toEqual(shapeOf(documented));
  });

  it('Converse works for the model too', async () => {
    const out = await client.send(
      new ConverseCommand({
        modelId: MODEL_OF[family],
        messages: [{ role: 'user', content: [{ text: 'Hello' }] }],
        inferenceConfig: { maxTokens: 100 },
      }),
    );
    expect(out.usage?.inputTokens).toBeGreaterThan(0);
  });
});

describe('models Bedrock refuses', () => {
  it('answers a retired model with ResourceNotFoundException, on Converse and InvokeModel', async () => {
    for (const modelId of [
      'anthropic.claude-3-haiku-20240307-v1:0',
      'us.anthropic.claude-3-haiku-20240307-v1:0',
    ]) {
      const err = await expectServiceError(
        client.send(
          new ConverseCommand({ modelId, messages: [{ role: 'user', content: [{ text: 'Hello' }] }] }),
        ),
      );
      expect([err.name, err.$metadata.httpStatusCode, err.message]).toEqual([
        'ResourceNotFoundException',
        404,
        'This model version has reached the end of its life.',
      ]);
    }
    const invoke = await expectServiceError(
      client.send(
        new InvokeModelCommand({
          modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
          body: JSON.stringify(fixture('anthropic-messages', 'request')),
        }),
      ),
    );
    expect(invoke.name).toBe('ResourceNotFoundException');
  });

  it('answers an unknown model, and a profile Bedrock does not define, as an invalid identifier', async () => {
    for (const modelId of ['amazon.nova-ultra-v9:0', 'global.amazon.nova-lite-v1:0']) {
      const err = await expectServiceError(
        client.send(
          new ConverseCommand({ modelId, messages: [{ role: 'user', content: [{ text: 'Hello' }] }] }),
        ),
      );
      expect([err.name, err.message]).toEqual([
        'ValidationException',
        'The provided model identifier is invalid.',
      ]);
    }
  });

  it('refuses a profile-only model called by its model id', async () => {
    const err = await expectServiceError(
      client.send(
        new ConverseCommand({
          modelId: 'meta.llama3-3-70b-instruct-v1:0',
          messages: [{ role: 'user', content: [{ text: 'Hello' }] }],
        }),
      ),
    );
    expect(err.name).toBe('ValidationException');
    expect(err.message).toMatch(/on-demand throughput isn't supported/);
  });
});

describe('native validation', () => {
  it.each<[ModelFamily, Record<string, unknown>, RegExp]>([
    ['amazon-nova', { schemaVersion: 'messages-v2', messages: [] }, /#\/schemaVersion/],
    [
      'amazon-nova',
      { messages: [{ role: 'user', content: [{ text: 'x' }] }], inferenceConfig: { max_new_tokens: 5001 } },
      /exceeds the model limit of 5000/,
    ],
    ['meta-llama', { max_gen_len: 10 }, /required key \[prompt\] not found/],
    ['meta-llama', { prompt: 'x', max_gen_len: 4096 }, /max_gen_len: 4096 exceeds the model limit of 2048/],
    [
      'mistral-chat',
      { messages: [{ role: 'user', content: [{ text: 'x' }] }], foo: 1 },
      /extraneous key \[foo\]/,
    ],
    ['openai-chat', { messages: [{ role: 'user', content: 'x' }], stream: true }, /stream: must be false/],
    [
      'openai-chat',
      { messages: [{ role: 'user', content: 'x' }], model: 'gpt-4o' },
      /does not match the model/,
    ],
  ])('%s refuses %j', async (family, body, message) => {
    const err = await expectServiceError(
      client.send(new InvokeModelCommand({ modelId: MODEL_OF[family], body: JSON.stringify(body) })),
    );
    expect(err.name).toBe('ValidationException');
    expect(err.message).toMatch(message);
  });

  it("answers a Mistral text completion with Mistral's outputs", async () => {
    const response = await client.send(
      new InvokeModelCommand({
        modelId: MODEL_OF['mistral-chat'],
        body: JSON.stringify({ prompt: '<s>[INST] Hello [/INST]', max_tokens: 100 }),
      }),
    );
    const body = JSON.parse(response.body.transformToString()) as Record<string, unknown>;
    expect(body).toEqual({ outputs: [{ text: expect.stringContaining('Hello'), stop_reason: 'stop' }] });
  });
});
