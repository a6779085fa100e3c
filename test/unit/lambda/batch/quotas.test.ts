import {
  ListAWSDefaultServiceQuotasCommand,
  ListServiceQuotasCommand,
  ServiceQuotasClient,
  type ServiceQuota,
} from '@aws-sdk/client-service-quotas';
import {
  BatchQuotaCache,
  batchQuotaModelNames,
  type BatchQuotas,
  BYTES_PER_QUOTA_GB,
  foundationModelId,
  readBatchQuotas,
} from '../../../../lambda/batch/quotas';
import { InvalidBatchQuotasError } from '../../../../lambda/batch/quotas';
import { useClientMocks } from '../../../support/aws-mocks';

const client = new ServiceQuotasClient({ region: 'us-east-1', maxAttempts: 1 });
const [sq] = useClientMocks(client);

const FALLBACK: BatchQuotas = {
  minRecordsPerJob: 1_000,
  maxRecordsPerJob: 10_000,
  maxRecordsPerFile: 10_000,
  maxBytesPerFile: 500_000_000,
  maxBytesPerJob: 2_000_000_000,
  maxConcurrentJobs: 5,
};

const quota = (name: string, value: number, code = `L-${name.length}`): ServiceQuota => ({
  ServiceCode: 'bedrock',
  QuotaName: name,
  QuotaCode: code,
  Value: value,
});

/** The six batch quotas of a model as Service Quotas names them. */
function batchQuotasFor(
  model: string,
  values: Partial<Record<keyof BatchQuotas, number>> = {},
): ServiceQuota[] {
  return [
    quota(
      `Minimum number of records per batch inference job for ${model}`,
      values.minRecordsPerJob ?? 100,
      'L-MIN',
    ),
    quota(`Records per batch inference job for ${model}`, values.maxRecordsPerJob ?? 50_000, 'L-REC'),
    quota(
      `Records per input file per batch inference job for ${model}`,
      values.maxRecordsPerFile ?? 50_000,
      'L-RPF',
    ),
    quota(`Batch inference input file size (in GB) for ${model}`, values.maxBytesPerFile ?? 1, 'L-FILE'),
    quota(`Batch inference job size (in GB) for ${model}`, values.maxBytesPerJob ?? 5, 'L-JOB'),
    quota(
      `Sum of in-progress and submitted batch inference jobs using a base model for ${model}`,
      values.maxConcurrentJobs ?? 20,
      'L-CONC',
    ),
  ];
}

/** Serves quotas in pages of `size`, with NextToken. */
function paged(all: readonly ServiceQuota[], size: number) {
  return (input: { NextToken?: string }) => {
    const start = input.NextToken ? Number(input.NextToken) : 0;
    const next = start + size;
    return Promise.resolve({
      Quotas: all.slice(start, next),
      ...(next < all.length ? { NextToken: String(next) } : {}),
    });
  };
}

const noise = [
  quota('On-demand model inference requests per minute for Anthropic Claude 3 Haiku', 1_000),
  quota('Cross-region model inference tokens per minute for Anthropic Claude 3 Haiku', 2_000_000),
  quota('(Knowledge Bases) Retrieve requests per second', 20),
];

function throttled(): Error {
  return Object.assign(new Error('Rate exceeded'), { name: 'TooManyRequestsException', $metadata: {} });
}

function accessDenied(): Error {
  return Object.assign(new Error('User is not authorized to perform servicequotas:ListServiceQuotas'), {
    name: 'AccessDeniedException',
    $metadata: {},
  });
}

const silent = { warn: jest.fn() };

beforeEach(() => {
  silent.warn.mockReset();
});

describe('model ids and quota display names', () => {
  it.each([
    ['amazon.nova-lite-v1:0', 'Nova Lite V1'],
    ['us.amazon.nova-lite-v1:0', 'Nova Lite V1'],
    ['eu.amazon.nova-micro-v1:0', 'Nova Micro V1'],
    ['apac.amazon.nova-pro-v1:0', 'Nova Pro V1'],
    ['us.meta.llama3-3-70b-instruct-v1:0', 'Llama 3.3 70B Instruct'],
    ['mistral.mistral-large-2407-v1:0', 'Mistral Large 2 (24.07)'],
    ['openai.gpt-oss-120b-1:0', 'OpenAI GPT OSS 120b'],
    ['arn:aws:bedrock:us-east-1::foundation-model/openai.gpt-oss-20b-1:0', 'OpenAI GPT OSS 20b'],
    ['arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0', 'Nova Pro V1'],
  ])('%s -> %s (the model catalog)', (modelId, name) => {
    expect(batchQuotaModelNames(modelId)[0]).toBe(name);
  });

  it('knows nothing of models the catalog gives no name, and strips only real profile prefixes', () => {
    expect(batchQuotaModelNames('cohere.command-r-v1:0')).toEqual([]);
    expect(batchQuotaModelNames('global.anthropic.claude-haiku-4-5-20251001-v1:0')).toEqual([]);
    expect(foundationModelId('us.amazon.nova-pro-v1:0')).toBe('amazon.nova-pro-v1:0');
    expect(foundationModelId('amazon.nova-pro-v1:0')).toBe('amazon.nova-pro-v1:0');
    expect(foundationModelId('zz.amazon.nova-pro-v1:0')).toBe('zz.amazon.nova-pro-v1:0');
  });
});

describe('readBatchQuotas', () => {
  it('reads the applied quotas of the model by name across pages, GB in bytes', async () => {
    const all = [
      ...noise,
      ...batchQuotasFor('Nova Lite V1', { maxConcurrentJobs: 12, maxBytesPerFile: 1, maxBytesPerJob: 5 }),
      ...batchQuotasFor('Nova Micro V1', { maxConcurrentJobs: 99 }),
    ];
    sq.on(ListServiceQuotasCommand).callsFake(paged(all, 4));
    const reading = await readBatchQuotas(
      client,
      'us.amazon.nova-lite-v1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    expect(reading.quotas).toEqual({
      minRecordsPerJob: 100,
      maxRecordsPerJob: 50_000,
      maxRecordsPerFile: 50_000,
      maxBytesPerFile: BYTES_PER_QUOTA_GB,
      maxBytesPerJob: 5 * BYTES_PER_QUOTA_GB,
      maxConcurrentJobs: 12,
    });
    expect(reading.modelName).toBe('Nova Lite V1');
    expect(Object.values(reading.sources)).toEqual(Array(6).fill('applied'));
    expect(reading.quotaCodes.maxConcurrentJobs).toBe('L-CONC');
    expect(reading.notes).toEqual([]);
    expect(reading.fromCache).toBe(false);
    expect(sq).toHaveReceivedCommandTimes(ListServiceQuotasCommand, 4); // 15 quotas, 4 per page
    expect(sq).toHaveReceivedCommandWith(ListServiceQuotasCommand, {
      ServiceCode: 'bedrock',
      NextToken: '4',
    });
    // Everything applied: the defaults are not listed.
    expect(sq).toHaveReceivedCommandTimes(ListAWSDefaultServiceQuotasCommand, 0);
    expect(silent.warn).not.toHaveBeenCalled();
  });

  it('never takes the quota of "OpenAI GPT OSS 120b" for "OpenAI GPT OSS 20b" (whole-name match)', async () => {
    sq.on(ListServiceQuotasCommand).resolves({
      Quotas: [
        ...batchQuotasFor('OpenAI GPT OSS 120b', { maxConcurrentJobs: 7 }),
        ...batchQuotasFor('OpenAI GPT OSS 20b', { maxConcurrentJobs: 3 }),
      ],
    });
    const small = await readBatchQuotas(
      client,
      'openai.gpt-oss-20b-1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    const large = await readBatchQuotas(
      client,
      'openai.gpt-oss-120b-1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    expect(small.quotas.maxConcurrentJobs).toBe(3);
    expect(large.quotas.maxConcurrentJobs).toBe(7);
  });

  it('reads whole quota names given per limit (model.batchQuotaNames), for a model outside the catalog', async () => {
    sq.on(ListServiceQuotasCommand).resolves({
      Quotas: [quota('Concurrent batch jobs for Acme Writer', 4, 'L-ACME'), ...batchQuotasFor('Acme Writer')],
    });
    const reading = await readBatchQuotas(client, 'acme.writer-v1:0', FALLBACK, new BatchQuotaCache(), {
      ...silent,
      modelName: 'Acme Writer',
      quotaNames: { maxConcurrentJobs: 'Concurrent batch jobs for Acme Writer' },
    });
    expect(reading.quotas.maxConcurrentJobs).toBe(4);
    expect(reading.quotaCodes.maxConcurrentJobs).toBe('L-ACME');
    expect(reading.sources.maxRecordsPerJob).toBe('applied');
  });

  it('accepts the "... for <model> (in GB)" spelling and case differences', async () => {
    sq.on(ListServiceQuotasCommand).resolves({
      Quotas: [
        quota('Batch inference input file size for Nova Pro V1 (in GB)', 2),
        quota('batch inference job size for nova pro v1 (in gb)', 100),
      ],
    });
    sq.on(ListAWSDefaultServiceQuotasCommand).resolves({ Quotas: batchQuotasFor('Nova Pro V1') });
    const reading = await readBatchQuotas(
      client,
      'us.amazon.nova-pro-v1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    expect(reading.quotas.maxBytesPerFile).toBe(2 * BYTES_PER_QUOTA_GB);
    expect(reading.quotas.maxBytesPerJob).toBe(100 * BYTES_PER_QUOTA_GB);
    expect(reading.sources.maxBytesPerJob).toBe('applied');
    expect(reading.sources.minRecordsPerJob).toBe('default');
  });

  it('takes what ListServiceQuotas lacks from the AWS defaults, then the fallback, saying why', async () => {
    const applied = batchQuotasFor('Nova Lite V1', { maxConcurrentJobs: 15 }).slice(5); // concurrency only
    const defaults = batchQuotasFor('Nova Lite V1', { minRecordsPerJob: 1_000 }).slice(0, 4); // no job size
    sq.on(ListServiceQuotasCommand).resolves({ Quotas: applied });
    sq.on(ListAWSDefaultServiceQuotasCommand).resolves({ Quotas: defaults });
    const reading = await readBatchQuotas(
      client,
      'amazon.nova-lite-v1:0',
      { ...FALLBACK, maxRecordsPerJob: 60_000 },
      new BatchQuotaCache(),
      silent,
    );
    expect(reading.sources).toEqual({
      minRecordsPerJob: 'default',
      maxRecordsPerJob: 'default',
      maxRecordsPerFile: 'default',
      maxBytesPerFile: 'default',
      maxBytesPerJob: 'fallback',
      maxConcurrentJobs: 'applied',
    });
    expect(reading.quotas.minRecordsPerJob).toBe(1_000);
    expect(reading.quotas.maxConcurrentJobs).toBe(15);
    expect(reading.quotas.maxBytesPerJob).toBe(FALLBACK.maxBytesPerJob);
    expect(reading.notes).toEqual([
      'no quota "Batch inference job size (in GB) for Nova Lite V1" for amazon.nova-lite-v1:0: maxBytesPerJob uses the configured value',
    ]);
    expect(silent.warn).toHaveBeenCalledWith(
      'batch quotas: some limits use the configured values',
      expect.objectContaining({ modelName: 'Nova Lite V1', notes: reading.notes }),
    );
  });

  it('falls back to the defaults list when ListServiceQuotas is denied', async () => {
    sq.on(ListServiceQuotasCommand).rejects(accessDenied());
    sq.on(ListAWSDefaultServiceQuotasCommand).callsFake(
      paged([...noise, ...batchQuotasFor('Nova Lite V1')], 2),
    );
    const reading = await readBatchQuotas(
      client,
      'us.amazon.nova-lite-v1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    expect(Object.values(reading.sources)).toEqual(Array(6).fill('default'));
    expect(reading.quotas.minRecordsPerJob).toBe(100);
    expect(reading.notes).toEqual([
      expect.stringMatching(/^ListServiceQuotas failed \(AccessDeniedException: User is not authorized/),
    ]);
    expect(silent.warn).toHaveBeenCalledTimes(1);
  });

  it('uses the configured values when every call fails (throttled), and does not cache the failure', async () => {
    sq.on(ListServiceQuotasCommand).rejects(throttled());
    sq.on(ListAWSDefaultServiceQuotasCommand).rejects(throttled());
    const cache = new BatchQuotaCache();
    const modelId = 'amazon.nova-lite-v1:0';
    const reading = await readBatchQuotas(client, modelId, FALLBACK, cache, silent);
    expect(reading.quotas).toEqual(FALLBACK);
    expect(Object.values(reading.sources)).toEqual(Array(6).fill('fallback'));
    expect(reading.notes).toEqual([
      'ListServiceQuotas failed (TooManyRequestsException: Rate exceeded)',
      'ListAWSDefaultServiceQuotas failed (TooManyRequestsException: Rate exceeded)',
    ]);
    await readBatchQuotas(client, modelId, FALLBACK, cache, silent);
    expect(sq).toHaveReceivedCommandTimes(ListServiceQuotasCommand, 2);
  });

  it('uses the configured values for a model outside the table without calling, or reads a given name', async () => {
    sq.on(ListServiceQuotasCommand).resolves({
      Quotas: batchQuotasFor('Claude Sonnet 4.5', { maxConcurrentJobs: 8 }),
    });
    const unknown = await readBatchQuotas(
      client,
      'us.anthropic.claude-sonnet-4-5-20250929-v1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    expect(unknown.quotas).toEqual(FALLBACK);
    expect(unknown.modelName).toBeNull();
    expect(unknown.notes[0]).toMatch(
      /no quota display name is known for model us\.anthropic\.claude-sonnet-4-5/,
    );
    expect(sq).toHaveReceivedCommandTimes(ListServiceQuotasCommand, 0);

    const named = await readBatchQuotas(
      client,
      'us.anthropic.claude-sonnet-4-5-20250929-v1:0',
      FALLBACK,
      new BatchQuotaCache(),
      { ...silent, modelName: 'Claude Sonnet 4.5' },
    );
    expect(named.quotas.maxConcurrentJobs).toBe(8);
    expect(named.modelName).toBe('Claude Sonnet 4.5');
  });

  it('ignores a quota without a usable value, and a set that contradicts itself', async () => {
    sq.on(ListServiceQuotasCommand).resolves({
      Quotas: [
        ...batchQuotasFor('Nova Lite V1').filter((q) => !q.QuotaName?.startsWith('Sum of')),
        quota('Sum of in-progress and submitted batch inference jobs using a base model for Nova Lite V1', 0),
      ],
    });
    sq.on(ListAWSDefaultServiceQuotasCommand).resolves({ Quotas: [] });
    const reading = await readBatchQuotas(
      client,
      'amazon.nova-lite-v1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    expect(reading.quotas.maxConcurrentJobs).toBe(FALLBACK.maxConcurrentJobs);
    expect(reading.notes[0]).toMatch(/has no usable value \(0\)/);

    sq.reset();
    sq.on(ListServiceQuotasCommand).resolves({
      Quotas: batchQuotasFor('Nova Lite V1', { minRecordsPerJob: 80_000 }),
    });
    const contradictory = await readBatchQuotas(
      client,
      'amazon.nova-lite-v1:0',
      FALLBACK,
      new BatchQuotaCache(),
      silent,
    );
    expect(contradictory.quotas).toEqual(FALLBACK);
    expect(contradictory.notes.at(-1)).toMatch(/inconsistent .*minRecordsPerJob \(80000\) is larger/);
  });

  it('caches a lookup per model for the TTL, and merges it with the fallback of each call', async () => {
    let now = 1_000_000;
    const cache = new BatchQuotaCache({ ttlMs: 60_000, now: () => now });
    sq.on(ListServiceQuotasCommand).resolves({ Quotas: batchQuotasFor('Nova Lite V1').slice(0, 5) });
    sq.on(ListAWSDefaultServiceQuotasCommand).resolves({ Quotas: [] });
    const modelId = 'amazon.nova-lite-v1:0';
    const first = await readBatchQuotas(client, modelId, FALLBACK, cache, silent);
    expect(first.fromCache).toBe(false);

    now += 59_999;
    const second = await readBatchQuotas(
      client,
      modelId,
      { ...FALLBACK, maxConcurrentJobs: 3 },
      cache,
      silent,
    );
    expect(second.fromCache).toBe(true);
    expect(second.quotas.maxConcurrentJobs).toBe(3); // not found: this call's fallback
    expect(second.quotas.minRecordsPerJob).toBe(100);
    expect(sq).toHaveReceivedCommandTimes(ListServiceQuotasCommand, 1);

    // Another model has its own entry.
    await readBatchQuotas(client, 'amazon.nova-micro-v1:0', FALLBACK, cache, silent);
    expect(sq).toHaveReceivedCommandTimes(ListServiceQuotasCommand, 2);

    now += 1;
    const third = await readBatchQuotas(client, modelId, FALLBACK, cache, silent);
    expect(third.fromCache).toBe(false);
    expect(sq).toHaveReceivedCommandTimes(ListServiceQuotasCommand, 3);
  });

  it('refuses an invalid fallback (a configuration bug)', async () => {
    await expect(
      readBatchQuotas(
        client,
        'amazon.nova-micro-v1:0',
        { ...FALLBACK, maxBytesPerJob: 0 },
        new BatchQuotaCache(),
      ),
    ).rejects.toThrow(InvalidBatchQuotasError);
    expect(sq).toHaveReceivedCommandTimes(ListServiceQuotasCommand, 0);
  });
});
