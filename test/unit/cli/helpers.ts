/**
 * Shared pieces of the CLI suites: an environment config, an in-memory output bucket behind a mocked S3 client,
 * run files (plan, manifest, shards, collect markers, failures) and a captured output stream.
 */
import { Readable, Writable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import type { AwsClientStub } from 'aws-sdk-client-mock';
import type { CollectShardSummary } from '../../../lambda/batch/collect/collect-contract';
import type {
  FailureLine,
  ManifestJob,
  PlanOutput,
  RunManifest,
  ShardItem,
} from '../../../lambda/shared/contracts';
import { parseEnvironmentConfig, type PipelineConfig } from '../../../lib/config';

/** The test environment (`dev`, us-east-1, Nova Lite through the US profile at the catalog's list prices). */
export function testConfig(overrides: Record<string, unknown> = {}): PipelineConfig {
  return parseEnvironmentConfig('dev', {
    region: 'us-east-1',
    modelId: MODEL_ID,
    ...overrides,
  });
}

export const MODEL_ID = 'us.amazon.nova-lite-v1:0';
export const OUTPUT_BUCKET = 'corpus-output';
export const STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:CorpusPipeline-dev';
export const T0 = Date.parse('2030-01-01T00:00:00.000Z');

/** An S3 object body as the SDK returns it: a stream that can also be read whole. */
function body(text: string): Readable & { transformToString(): Promise<string> } {
  return Object.assign(Readable.from([Buffer.from(text)]), {
    transformToString: () => Promise.resolve(text),
  });
}

/**
 * Serves GetObject and ListObjectsV2 (Prefix, Delimiter, pages of `pageSize`) from `files` on a mocked S3 client;
 * a missing key answers NoSuchKey as S3 does.
 */
export function serveBucket(
  s3Mock: AwsClientStub<S3Client>,
  files: Map<string, string>,
  pageSize = 1000,
): void {
  s3Mock.on(GetObjectCommand).callsFake((input: { Bucket: string; Key: string }) => {
    const text = input.Bucket === OUTPUT_BUCKET ? files.get(input.Key) : undefined;
    if (text === undefined) {
      return Promise.reject(new NoSuchKey({ message: 'The specified key does not exist.', $metadata: {} }));
    }
    return Promise.resolve({ Body: body(text) });
  });
  s3Mock
    .on(ListObjectsV2Command)
    .callsFake((input: { Prefix?: string; Delimiter?: string; ContinuationToken?: string }) => {
      const prefix = input.Prefix ?? '';
      const keys = [...files.keys()].filter((k) => k.startsWith(prefix)).sort();
      if (input.Delimiter) {
        const prefixes = [
          ...new Set(
            keys.map((k) => {
              const cut = k.indexOf(input.Delimiter!, prefix.length);
              return cut < 0 ? undefined : k.slice(0, cut + 1);
            }),
          ),
        ].filter((p): p is string => p !== undefined);
        return Promise.resolve({
          CommonPrefixes: prefixes.map((Prefix) => ({ Prefix })),
          IsTruncated: false,
        });
      }
      const start = Number(input.ContinuationToken ?? 0);
      const page = keys.slice(start, start + pageSize);
      const more = start + pageSize < keys.length;
      return Promise.resolve({
        Contents: page.map((Key) => ({ Key })),
        IsTruncated: more,
        ...(more ? { NextContinuationToken: String(start + pageSize) } : {}),
      });
    });
}

/** Plan's output for a run. */
export function plan(
  runId: string,
  mode: 'batch' | 'converse',
  counts: Partial<PlanOutput['counts']> & { records: number },
  extra: Partial<PlanOutput> = {},
): PlanOutput {
  const c = {
    lines: counts.records,
    invalid: 0,
    duplicates: 0,
    skipped: 0,
    toProcess: counts.records - (counts.skipped ?? 0),
    ...counts,
  };
  return {
    runId,
    startedAt: new Date(T0).toISOString(),
    mode,
    requestedMode: 'auto',
    corpus: { bucket: 'corpus-ingest', key: 'corpora/c.jsonl' },
    output: { bucket: OUTPUT_BUCKET, prefix: `runs/${runId}/` },
    itemsKey: `runs/${runId}/items.jsonl`,
    ledgerScope: `dev/${MODEL_ID}`,
    modelId: MODEL_ID,
    counts: c,
    fanOut: {
      itemsKey: `runs/${runId}/items.jsonl`,
      batchSize: 25,
      maxConcurrency: 10,
      toleratedFailurePercentage: 5,
    },
    ...extra,
  };
}

/** A run manifest. */
export function manifest(
  runId: string,
  mode: 'batch' | 'converse',
  counts: Partial<RunManifest['counts']> & { records: number; succeeded: number; failed: number },
  tokens: { input: number; output: number },
  extra: Partial<RunManifest> = {},
): RunManifest {
  return {
    runId,
    revision: 1,
    mode,
    status: 'SUCCEEDED',
    counts: {
      lines: counts.records,
      invalid: 0,
      duplicates: 0,
      skipped: 0,
      pending: 0,
      recovered: 0,
      ...counts,
    },
    tokens,
    modelCalls: { total: counts.succeeded + counts.failed, throttled: 0, retried: 0 },
    startedAt: new Date(T0).toISOString(),
    finishedAt: new Date(T0 + 600_000).toISOString(),
    durationMs: 600_000,
    corpus: { bucket: 'corpus-ingest', key: 'corpora/c.jsonl' },
    modelId: MODEL_ID,
    ledgerScope: `dev/${MODEL_ID}`,
    output: {
      bucket: OUTPUT_BUCKET,
      manifestKey: `runs/${runId}/manifest.json`,
      resultsPrefix: `runs/${runId}/results/`,
      failuresPrefix: `runs/${runId}/failures/`,
    },
    ...extra,
  };
}

/** A batch mode shard item. */
export function shard(runId: string, index: number, records: number): ShardItem {
  const base = `runs/${runId}/shards/${String(index).padStart(5, '0')}/`;
  return {
    shard: index,
    records,
    bytes: records * 100,
    format: 'converse',
    inputKeys: [`${base}input/part-0.jsonl`],
    inputPrefix: `${base}input/`,
    outputPrefix: `${base}output/`,
  };
}

/** A batch job ARN. */
export const jobArn = (id: string): string =>
  `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/${id}`;

/** A collect marker. */
export function marker(
  index: number,
  counts: { records: number; succeeded: number; failed: number; missing?: number },
  tokens: { input: number; output: number },
): CollectShardSummary {
  return {
    shard: index,
    jobArn: jobArn(`job${index}`),
    status: counts.missing ? 'PartiallyCompleted' : 'Completed',
    records: counts.records,
    succeeded: counts.succeeded,
    failed: counts.failed,
    skipped: 0,
    missing: counts.missing ?? 0,
    inputTokens: tokens.input,
    outputTokens: tokens.output,
    manifestCheck: { expected: counts.records, seen: counts.records, ok: true, ignoredLines: 0 },
    submittedAt: new Date(T0 + 1000).toISOString(),
    endedAt: new Date(T0 + 61_000).toISOString(),
  };
}

/** A manifest job entry. */
export function manifestJob(index: number, records: number, status = 'Completed'): ManifestJob {
  return {
    shard: index,
    jobArn: jobArn(`job${index}`),
    status,
    records,
    succeeded: records,
    failed: 0,
    skipped: 0,
    redriven: 0,
    submittedAt: new Date(T0 + 1000).toISOString(),
    endedAt: new Date(T0 + 61_000).toISOString(),
  };
}

/** Failure files as JSONL text. */
export function jsonl(lines: readonly FailureLine[]): string {
  return `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`;
}

/** A writable that keeps what was written (`text()`), optionally claiming to be a terminal. */
export class Capture extends Writable {
  private readonly chunks: string[] = [];
  readonly isTTY: boolean;
  readonly columns = 160;

  constructor(options: { tty?: boolean } = {}) {
    super();
    this.isTTY = options.tty ?? false;
  }

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    this.chunks.push(chunk.toString());
    callback();
  }

  /** Everything written so far. */
  text(): string {
    return this.chunks.join('');
  }
}
