import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { BedrockClient, type CreateModelInvocationJobCommandInput } from '@aws-sdk/client-bedrock';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';

import type { BatchJobStateChangeEvent, BatchJobStatus } from './catalog-simulator';

/** The bucket the tests use (Bedrock's S3Uri pattern needs bucket names of 2+ characters). */
export const BUCKET = 'batch-data';

/** A role ARN that passes validation. */
export const ROLE_ARN = 'arn:aws:iam::123456789012:role/batch-inference';

/** An s3rver on a free port with one bucket, and an S3Client for it. */
export interface LocalS3 {
  readonly s3: S3Client;
  readonly endpoint: string;
  stop(): Promise<void>;
}

/** Starts s3rver in a temporary directory with {@link BUCKET}. */
export async function startLocalS3(): Promise<LocalS3> {
  const directory = mkdtempSync(join(tmpdir(), 'batch-s3-'));
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory,
    configureBuckets: [{ name: BUCKET }],
  });
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  const s3 = new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
  return {
    s3,
    endpoint,
    stop: async () => {
      s3.destroy();
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** A real BedrockClient pointed at the control plane, with fake credentials and no retries. */
export function controlClient(endpoint: string): BedrockClient {
  return new BedrockClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDSIMULATOR', secretAccessKey: 'simulator-secret' },
    maxAttempts: 1,
  });
}

/** An Anthropic Messages record (InvokeModel jobs). */
export function anthropicRecord(recordId: string | undefined, text: string): Record<string, unknown> {
  return {
    ...(recordId === undefined ? {} : { recordId }),
    modelInput: {
      anthropic_version: 'bedrock-2023-05-31',
      max_tokens: 200,
      messages: [{ role: 'user', content: [{ type: 'text', text }] }],
    },
  };
}

/** A Converse request record (Converse jobs). */
export function converseRecord(recordId: string, text: string): Record<string, unknown> {
  return {
    recordId,
    modelInput: {
      messages: [{ role: 'user', content: [{ text }] }],
      inferenceConfig: { maxTokens: 200, temperature: 0.2 },
    },
  };
}

/** `n` Anthropic records `<prefix>-0 ...`, as JSONL lines. */
export function anthropicLines(n: number, prefix = 'rec'): string[] {
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify(anthropicRecord(`${prefix}-${i}`, `question ${prefix} ${i}`)),
  );
}

/** Uploads JSONL lines. */
export async function putLines(s3: S3Client, key: string, lines: readonly string[]): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: `${lines.join('\n')}\n` }));
}

/** Reads an object as text. */
export async function getText(s3: S3Client, key: string): Promise<string> {
  const response = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  if (!response.Body) throw new Error(`s3://${BUCKET}/${key} has no body`);
  return response.Body.transformToString();
}

/** Reads a JSONL object as parsed lines. */
export async function getJsonl(s3: S3Client, key: string): Promise<Record<string, unknown>[]> {
  const text = await getText(s3, key);
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Keys under a prefix. */
export async function listKeys(s3: S3Client, prefix: string): Promise<string[]> {
  const page = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (page.Contents ?? []).map((o) => o.Key ?? '').sort();
}

/** The id part of a job ARN. */
export function jobIdOf(jobArn: string | undefined): string {
  const id = jobArn?.split('/').pop();
  if (id === undefined) throw new Error(`not a job ARN: ${String(jobArn)}`);
  return id;
}

let counter = 0;

/** A fresh key prefix per test, so tests sharing one s3rver never see each other's files. */
export function freshPrefix(label: string): string {
  counter += 1;
  return `${label}-${counter}-${Date.now().toString(36)}`;
}

/** A valid CreateModelInvocationJob input reading `s3://BUCKET/<inputKey>` and writing under `<outputPrefix>/`. */
export function jobInput(
  inputKey: string,
  outputPrefix: string,
  extra: Partial<CreateModelInvocationJobCommandInput> = {},
): CreateModelInvocationJobCommandInput {
  return {
    jobName: `job-${freshPrefix('n')}`,
    roleArn: ROLE_ARN,
    modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
    inputDataConfig: { s3InputDataConfig: { s3Uri: `s3://${BUCKET}/${inputKey}` } },
    outputDataConfig: { s3OutputDataConfig: { s3Uri: `s3://${BUCKET}/${outputPrefix}/` } },
    ...extra,
  };
}

/** Records state-change events and lets a test wait for one. */
export class EventRecorder {
  readonly events: BatchJobStateChangeEvent[] = [];
  private readonly waiters: { match: (e: BatchJobStateChangeEvent) => boolean; resolve: () => void }[] = [];

  /** The listener to pass as `onJobEvent`. */
  readonly listener = (event: BatchJobStateChangeEvent): void => {
    this.events.push(event);
    for (const waiter of [...this.waiters]) {
      if (waiter.match(event)) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };

  /** Statuses of one job's events, in delivery order. */
  statuses(jobArn: string | undefined): BatchJobStatus[] {
    return this.events.filter((e) => e.detail.batchJobArn === jobArn).map((e) => e.detail.status);
  }

  /** Resolves when an event with this status for this job has been delivered. */
  waitFor(jobArn: string | undefined, status: BatchJobStatus): Promise<void> {
    const match = (e: BatchJobStateChangeEvent): boolean =>
      e.detail.batchJobArn === jobArn && e.detail.status === status;
    if (this.events.some(match)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }
}

/** What an SDK service error looks like to a caller. */
export interface SdkErrorShape {
  name: string;
  message: string;
  $metadata: { httpStatusCode?: number };
}

/** Runs a call that must fail and returns the error; fails the test if the call succeeds. */
export async function expectSdkError(call: Promise<unknown>): Promise<SdkErrorShape> {
  let result: unknown;
  try {
    result = await call;
  } catch (err) {
    return err as SdkErrorShape;
  }
  throw new Error(`expected a service error, got a response: ${JSON.stringify(result).slice(0, 300)}`);
}
