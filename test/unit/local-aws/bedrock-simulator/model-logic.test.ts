import {
  FaultInjector,
  ModelTable,
  QuotaTracker,
  SimulatorError,
  generate,
  invokeModelNative,
  simulateConverse,
  validateConverseRequest,
} from './catalog-simulator';
import { MODEL_CATALOG } from '../../../../lambda/shared/model-catalog';

const table = new ModelTable();
const haiku = table.resolve('anthropic.claude-haiku-4-5-20251001-v1:0').spec;

function converse(text: string, extra: Record<string, unknown> = {}) {
  return validateConverseRequest({ messages: [{ role: 'user', content: [{ text }] }], ...extra }, haiku);
}

describe('ModelTable', () => {
  it.each([
    ['amazon.nova-lite-v1:0', 'foundation-model'],
    ['us.anthropic.claude-sonnet-4-5-20250929-v1:0', 'inference-profile'],
    ['eu.amazon.nova-lite-v1:0', 'inference-profile'],
    ['apac.amazon.nova-pro-v1:0', 'inference-profile'],
    ['global.anthropic.claude-sonnet-4-5-20250929-v1:0', 'inference-profile'],
    ['arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-3-70b-instruct-v1:0', 'foundation-model'],
    [
      'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0',
      'inference-profile',
    ],
  ])('resolves %s', (id, kind) => {
    const resolved = table.resolve(id);
    expect(resolved.kind).toBe(kind);
    expect(id.endsWith(resolved.spec.modelId)).toBe(true);
  });

  it.each([
    'anthropic.claude-9',
    'xx.anthropic.claude-haiku-4-5-20251001-v1:0',
    // The card of Nova Lite lists no global profile: Bedrock defines none.
    'global.amazon.nova-lite-v1:0',
    'arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123',
    '',
  ])('rejects %j with the service message', (id) => {
    expect(table.tryResolve(id)).toBeUndefined();
    expect(() => table.resolve(id)).toThrow('The provided model identifier is invalid.');
  });

  it('knows every catalog model, and refuses inference as Bedrock does', () => {
    expect(table.list().map((m) => m.modelId)).toEqual(MODEL_CATALOG.map((m) => m.modelId));
    const retired = expectSimulatorError(() =>
      table.resolveForInference('anthropic.claude-3-haiku-20240307-v1:0'),
    );
    expect([retired.errorName, retired.statusCode, retired.message]).toEqual([
      'ResourceNotFoundException',
      404,
      'This model version has reached the end of its life.',
    ]);
    const profileOnly = expectSimulatorError(() =>
      table.resolveForInference('meta.llama3-3-70b-instruct-v1:0'),
    );
    expect(profileOnly.errorName).toBe('ValidationException');
    expect(profileOnly.message).toMatch(/with on-demand throughput isn't supported/);
    expect(table.resolveForInference('us.meta.llama3-3-70b-instruct-v1:0').kind).toBe('inference-profile');
  });
});

function expectSimulatorError(call: () => unknown): SimulatorError {
  try {
    call();
  } catch (err) {
    if (err instanceof SimulatorError) return err;
    throw err;
  }
  throw new Error('expected a SimulatorError');
}

describe('deterministic model', () => {
  it('gives the same answer for the same request and different answers for different ones', () => {
    const a = simulateConverse(converse('Summarise the first record'));
    expect(simulateConverse(converse('Summarise the first record'))).toEqual(a);
    const b = simulateConverse(converse('Summarise the second record'));
    expect(b.output.message.content[0]?.text).not.toBe(a.output.message.content[0]?.text);
    expect(a.output.message.content[0]?.text).toContain('Summarise the first record');
    expect(a.usage.totalTokens).toBe(a.usage.inputTokens + a.usage.outputTokens);
  });

  it('cuts the same answer at maxTokens and says max_tokens', () => {
    const full = generate(converse('Tell me about the corpus'));
    const cut = generate(converse('Tell me about the corpus', { inferenceConfig: { maxTokens: 3 } }));
    expect(full.stopReason).toBe('end_turn');
    expect(cut.stopReason).toBe('max_tokens');
    expect(cut.outputTokens).toBeLessThanOrEqual(3);
    expect(full.text.startsWith(cut.text)).toBe(true);
  });

  it('stops at a stop sequence', () => {
    const full = generate(converse('stop here please'));
    const sequence = full.text.slice(20, 24);
    const stopped = generate(
      converse('stop here please', { inferenceConfig: { stopSequences: [sequence] } }),
    );
    expect(stopped.stopReason).toBe('stop_sequence');
    expect(stopped.stopSequence).toBe(sequence);
    expect(stopped.text.includes(sequence)).toBe(false);
  });

  it('counts input tokens from system and messages at about four characters each, at least 1', () => {
    expect(converse('a').inputTokens).toBe(1);
    const request = validateConverseRequest(
      {
        system: [{ text: 'x'.repeat(40) }],
        messages: [{ role: 'user', content: [{ text: 'y'.repeat(41) }] }],
      },
      haiku,
    );
    expect(request.inputTokens).toBe(21);
  });

  it('runs a native Anthropic body in one call, for batch records', () => {
    const body = JSON.stringify({
      anthropic_version: 'bedrock-2023-05-31',
      max_tokens: 50,
      messages: [{ role: 'user', content: 'Summarise the first record' }],
    });
    const { body: response } = invokeModelNative(haiku, body);
    const viaConverse = simulateConverse(
      converse('Summarise the first record', { inferenceConfig: { maxTokens: 50 } }),
    );
    const content = response.content as { text: string }[];
    expect(content[0]?.text).toBe(viaConverse.output.message.content[0]?.text);
    expect(() => invokeModelNative(haiku, '{"prompt": "x"}')).toThrow(SimulatorError);
  });
});

describe('QuotaTracker', () => {
  it('limits requests and tokens over a rolling window and ignores refused calls', () => {
    let now = 0;
    const quotas = new QuotaTracker({ default: { requestsPerMinute: 2, tokensPerMinute: 100 } }, () => now);
    expect(quotas.tryAdmit('m', 40)).toBe('ok');
    now = 30_000;
    expect(quotas.tryAdmit('m', 70)).toBe('tpm');
    expect(quotas.tryAdmit('m', 60)).toBe('ok');
    expect(quotas.tryAdmit('m', 1)).toBe('rpm');
    expect(quotas.usage('m')).toEqual({ requests: 2, tokens: 100 });
    expect(quotas.tryAdmit('other', 100)).toBe('ok');
    now = 60_000;
    expect(quotas.usage('m')).toEqual({ requests: 1, tokens: 60 });
    expect(quotas.tryAdmit('m', 40)).toBe('ok');
  });
});

describe('FaultInjector', () => {
  it('injects the same faults for the same seed', () => {
    const pattern = (seed: number) => {
      const faults = new FaultInjector({ seed, throttleFraction: 0.3, errorFraction: 0.3 });
      return Array.from({ length: 40 }, () => faults.draw()?.kind ?? 'ok').join(',');
    };
    expect(pattern(5)).toBe(pattern(5));
    expect(pattern(5)).not.toBe(pattern(6));
    expect(pattern(5)).toMatch(/throttling/);
    expect(pattern(5)).toMatch(/ok/);
  });

  it('refuses fractions outside 0..1', () => {
    expect(() => new FaultInjector({ throttleFraction: 1.5 })).toThrow(RangeError);
  });
});
