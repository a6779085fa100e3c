import { describe, expect, it } from '@jest/globals';
import { BedrockRuntimeClient, ConverseCommand } from '@aws-sdk/client-bedrock-runtime';
import {
  bedrockCaller,
  bedrockRuntimeClient,
  classifyModelError,
  ModelCallCounter,
} from '../../../../lambda/converse/model-caller';
import {
  AWS_FIXTURES,
  fixtureJson,
  httpFixture,
  jsonAnswer,
  OFFLINE_CLIENT,
  servingFixture,
  type FixtureRequestHandler,
} from '../../aws-shapes/fixtures';

// The model caller on the payloads AWS documents: the real Bedrock Runtime client signs and sends each call to an HTTP
// layer that answers with the documented Converse response or the documented throttling response, and deserializes
// them as it would the service's.

const MODEL = 'anthropic.claude-3-haiku-20240307-v1:0';
const REQUEST = {
  messages: [{ role: 'user' as const, content: [{ text: 'Create a list of 3 pop songs.' }] }],
};

function clientAnswering(handler: FixtureRequestHandler): BedrockRuntimeClient {
  return new BedrockRuntimeClient({ ...OFFLINE_CLIENT, requestHandler: handler });
}

/** The error a call rejects with (fails the test when it resolves). */
async function rejection(call: Promise<unknown>): Promise<unknown> {
  try {
    await call;
  } catch (err) {
    return err;
  }
  throw new Error('the call succeeded');
}

describe('bedrockCaller on the documented Converse response', () => {
  it('reads usage and stopReason from it and keeps {output, stopReason} as the model output', async () => {
    const documented = fixtureJson(AWS_FIXTURES.converseResponse);
    const handler = servingFixture(() => jsonAnswer(documented));
    const client = clientAnswering(handler);
    const call = bedrockCaller(client, MODEL);

    const answer = await call(
      { recordId: 'r1', format: 'converse', modelInput: REQUEST },
      new AbortController().signal,
    );

    expect(handler.requests).toEqual([`POST /model/${encodeURIComponent(MODEL)}/converse`]);
    expect(answer.usage).toEqual({ inputTokens: 125, outputTokens: 60, totalTokens: 185 });
    expect(answer.modelOutput).toEqual({ output: documented.output, stopReason: 'end_turn' });
    client.destroy();
  });
});

describe('classifyModelError on the documented throttling response', () => {
  const throttled = httpFixture(AWS_FIXTURES.throttlingException);

  it('the SDK turns the 429 into a ThrottlingException; it is retryable and says it was the quota', async () => {
    const client = clientAnswering(servingFixture(() => throttled));
    const err = await rejection(client.send(new ConverseCommand({ modelId: MODEL, ...REQUEST })));

    expect(err).toMatchObject({
      name: 'ThrottlingException',
      message: 'Too many requests, please wait before trying again.',
      $metadata: { httpStatusCode: 429 },
    });
    expect(classifyModelError(err, false)).toEqual({
      code: 'ThrottlingException',
      message: "throttled by the model's quota: Too many requests, please wait before trying again.",
      retryable: true,
    });
    // Cut short by the caller's deadline instead, the same error is a timeout.
    expect(classifyModelError(err, true)).toMatchObject({ code: 'TimeoutError', retryable: true });
    client.destroy();
  });

  it("the pipeline's client retries it with backoff and counts every throttled attempt", async () => {
    const counter = new ModelCallCounter();
    const client = bedrockRuntimeClient(2, counter);
    const handler = servingFixture(() => throttled);
    // The factory builds its own client; its HTTP layer is swapped for the fixture, the retry strategy and the
    // counting middleware stay as deployed.
    (client.config as { requestHandler: unknown }).requestHandler = handler;
    const call = bedrockCaller(client, MODEL);

    const err = await rejection(
      call({ recordId: 'r1', format: 'converse', modelInput: REQUEST }, new AbortController().signal),
    );

    expect(handler.requests).toHaveLength(2);
    expect(counter.snapshot()).toEqual({ total: 2, throttled: 2, retried: 1 });
    expect(classifyModelError(err, false)).toEqual({
      code: 'ThrottlingException',
      message:
        "throttled by the model's quota (after 2 attempts): Too many requests, please wait before trying again.",
      retryable: true,
    });
    client.destroy();
  }, 10_000);
});
