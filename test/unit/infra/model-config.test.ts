import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, parseEnvironmentConfig } from '../../../lib/config';
import { PROJECT_ROOT } from '../../../lib/paths';
import { MODEL_CATALOG } from '../../../lambda/shared/model-catalog';
import { CDK_CONTEXT } from './synth-helpers';

/** The environment's model checked against the model catalog (lib/model-config.ts), as bin/ validates it. */

const base = { region: 'us-east-1' };

function problems(settings: Record<string, unknown>): string {
  try {
    parseEnvironmentConfig('dev', { ...base, ...settings });
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  return '';
}

describe('modelId against the model catalog', () => {
  test.each([
    'us.amazon.nova-lite-v1:0',
    'amazon.nova-lite-v1:0',
    'anthropic.claude-haiku-4-5-20251001-v1:0',
    'global.anthropic.claude-haiku-4-5-20251001-v1:0',
    'us.meta.llama3-3-70b-instruct-v1:0',
    'openai.gpt-oss-120b-1:0',
    'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0',
  ])('accepts %s', (modelId) => {
    expect(problems({ modelId })).toBe('');
  });

  test('the default environments use an active catalog model that batch inference supports in their Region', () => {
    for (const name of ['dev', 'prod', 'local']) {
      const config = parseEnvironmentConfig(
        name,
        (CDK_CONTEXT.environments as Record<string, unknown>)[name],
      );
      expect(config.modelId).toBe('us.amazon.nova-lite-v1:0');
      const model = MODEL_CATALOG.find((m) => m.modelId === 'amazon.nova-lite-v1:0');
      expect(model?.lifecycle.status).toBe('ACTIVE');
      expect(model?.batch.supported).toBe(true);
      expect(model?.batch.profileRegions).toContain(config.region);
    }
  });

  test('refuses a retired model with its date and a replacement', () => {
    expect(problems({ modelId: 'anthropic.claude-3-haiku-20240307-v1:0' })).toMatch(
      /modelId: anthropic\.claude-3-haiku-20240307-v1:0 \(Claude 3 Haiku\) reached end of life on 2026-09-10 in us-east-1: Bedrock answers every call with ResourceNotFoundException \(https:\/\/docs\.aws\.amazon\.com\/bedrock\/latest\/userguide\/model-card-anthropic-claude-3-haiku\.html\)\. Use anthropic\.claude-haiku-4-5-20251001-v1:0 \(or us\.amazon\.nova-lite-v1:0\) instead/,
    );
    // Through its profile, the replacement keeps the profile.
    expect(problems({ modelId: 'us.anthropic.claude-3-haiku-20240307-v1:0' })).toContain(
      'Use us.anthropic.claude-haiku-4-5-20251001-v1:0',
    );
    // Where the card says it is still served, it is only legacy.
    expect(problems({ region: 'ca-central-1', modelId: 'anthropic.claude-3-haiku-20240307-v1:0' })).toBe('');
  });

  test.each<[string, Record<string, unknown>, RegExp]>([
    ['no Bedrock model id', { modelId: 'not a model' }, /"not a model" is not a Bedrock model id/],
    ['a typo', { modelId: 'claude' }, /"claude" is not a Bedrock model id/],
    [
      'a profile the model has not',
      { modelId: 'global.amazon.nova-lite-v1:0' },
      /Nova Lite has no global\. inference profile; use one of us\.amazon\.nova-lite-v1:0, eu\.amazon\.nova-lite-v1:0, apac\.amazon\.nova-lite-v1:0, amazon\.nova-lite-v1:0/,
    ],
    [
      "a profile outside the Region's geography",
      { region: 'eu-west-1', modelId: 'us.amazon.nova-lite-v1:0' },
      /a us\. inference profile is called from a Region of its geography, not from eu-west-1/,
    ],
    [
      'a profile-only model by its id',
      { modelId: 'meta.llama3-3-70b-instruct-v1:0' },
      /Llama 3\.3 70B Instruct is invocable on demand only through an inference profile: use us\.meta\.llama3-3-70b-instruct-v1:0/,
    ],
    [
      'a format contradicting the catalog',
      { modelId: 'us.amazon.nova-lite-v1:0', model: { format: 'openai-chat' } },
      /model\.format: openai-chat contradicts the model catalog, which gives Nova Lite the amazon-nova format/,
    ],
  ])('refuses %s', (_case, settings, message) => {
    expect(problems(settings)).toMatch(message);
  });
});

describe('a model outside the catalog', () => {
  const modelId = 'acme.writer-v1:0';

  test('is refused until its format, batch quotas and price are given, naming each', () => {
    const message = problems({ modelId });
    expect(message).toContain('modelId: acme.writer-v1:0 is not in the model catalog');
    expect(message).toContain('model.format (its native body format: one of anthropic-messages, amazon-nova');
    expect(message).toContain('model.batchQuotaModelName');
    expect(message).toContain('pricing["acme.writer-v1:0"]');
    expect(message).toContain('Or use a catalog model such as us.amazon.nova-lite-v1:0');
  });

  test('passes with format, quota name or values, and price', () => {
    const pricing = { [modelId]: { inputPerMillion: 1, outputPerMillion: 2 } };
    expect(
      problems({ modelId, model: { format: 'openai-chat', batchQuotaModelName: 'Acme Writer' }, pricing }),
    ).toBe('');
    expect(
      problems({
        modelId,
        model: { format: 'openai-chat' },
        batch: { readServiceQuotas: false, quotas: { maxConcurrentJobs: 3 } },
        pricing,
      }),
    ).toBe('');
    expect(
      problems({ modelId, model: { format: 'openai-chat', batchQuotaModelName: 'Acme Writer' } }),
    ).toMatch(/pricing\["acme\.writer-v1:0"\]/);
    expect(problems({ modelId, model: { format: 'cobol' } })).toMatch(/model\.format/);
  });
});

describe('pricing', () => {
  test("defaults to the catalog's list prices of the model, batch prices included", () => {
    const config = parseEnvironmentConfig('dev', { ...base, modelId: 'us.amazon.nova-lite-v1:0' });
    expect(config.pricing).toEqual({
      'us.amazon.nova-lite-v1:0': {
        inputPerMillion: 0.06,
        outputPerMillion: 0.24,
        batchInputPerMillion: 0.03,
        batchOutputPerMillion: 0.12,
        batchDiscount: 0.5,
      },
    });
  });

  test('takes the environment table as given', () => {
    const pricing = { 'us.amazon.nova-lite-v1:0': { inputPerMillion: 1, outputPerMillion: 2 } };
    const config = parseEnvironmentConfig('dev', { ...base, modelId: 'us.amazon.nova-lite-v1:0', pricing });
    expect(config.pricing).toEqual({
      'us.amazon.nova-lite-v1:0': { inputPerMillion: 1, outputPerMillion: 2, batchDiscount: 0.5 },
    });
  });
});

describe('bin/app.ts', () => {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'corpus-model-config-'));
  afterAll(() => fs.rmSync(outdir, { recursive: true, force: true }));

  test('exits 1 on a retired model, with the date and a replacement', () => {
    const environments = {
      dev: {
        ...(CDK_CONTEXT.environments as { dev: object }).dev,
        modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
      },
    };
    const result = spawnSync(process.execPath, ['--import', 'tsx', path.join(PROJECT_ROOT, 'bin/app.ts')], {
      cwd: PROJECT_ROOT,
      env: {
        ...process.env,
        CDK_CONTEXT_JSON: JSON.stringify({ environments, env: 'dev' }),
        CDK_OUTDIR: outdir,
      },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('ConfigError: Invalid settings for environment "dev"');
    expect(result.stderr).toContain('reached end of life on 2026-09-10');
    expect(result.stderr).toContain('Use anthropic.claude-haiku-4-5-20251001-v1:0');
  });
});
