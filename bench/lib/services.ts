import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { Upload } from '@aws-sdk/lib-storage';
import {
  DEFAULT_LOCAL_REGION,
  LOCAL_CREDENTIALS,
  startDynamoDbEmulator,
  startS3Emulator,
  type DynamoDbEmulator,
  type S3Emulator,
} from '@corpus-pipeline/local-aws/cloud/emulators';

/** The environment every benchmark process gets: quiet Powertools, local credentials, region. */
export const QUIET_ENV: Record<string, string> = {
  AWS_REGION: DEFAULT_LOCAL_REGION,
  AWS_DEFAULT_REGION: DEFAULT_LOCAL_REGION,
  AWS_ACCESS_KEY_ID: LOCAL_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: LOCAL_CREDENTIALS.secretAccessKey,
  POWERTOOLS_TRACE_ENABLED: 'false',
  POWERTOOLS_METRICS_DISABLED: 'true',
  POWERTOOLS_LOG_LEVEL: 'SILENT',
  POWERTOOLS_IDEMPOTENCY_DISABLED: 'true',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
};

/** The local S3 (s3rver) and DynamoDB (dynalite) a benchmark runs against, in this process. */
export interface BenchServices {
  s3: S3Client;
  ddb: DynamoDBDocumentClient;
  s3Emulator: S3Emulator;
  dynamodb: DynamoDbEmulator;
  /** Environment for a child process: the endpoints plus {@link QUIET_ENV}. */
  env: Record<string, string>;
  /** Creates a bucket. */
  createBucket(name: string): Promise<void>;
  /** Creates an empty ledger table (`pk` string hash key). */
  createLedgerTable(name: string): Promise<void>;
  /** Stops the emulators and deletes their state. */
  stop(): Promise<void>;
}

/**
 * Starts s3rver and dynalite on 127.0.0.1 with their state in a fresh temporary directory. They run in this process;
 * the code measured runs in child processes (or here, for the quota and slot benchmarks, whose figures are rates
 * against quotas and not CPU-bound).
 */
export async function startBenchServices(): Promise<BenchServices> {
  Object.assign(process.env, QUIET_ENV);
  const stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'corpus-bench-'));
  const s3Emulator = await startS3Emulator({ directory: path.join(stateDir, 's3') });
  const dynamodb = await startDynamoDbEmulator({
    directory: path.join(stateDir, 'dynamodb'),
    onWarning: () => undefined,
  });
  const region = DEFAULT_LOCAL_REGION;
  const credentials = { ...LOCAL_CREDENTIALS };
  const s3 = new S3Client({ region, endpoint: s3Emulator.endpoint, forcePathStyle: true, credentials });
  const ddbClient = new DynamoDBClient({ region, endpoint: dynamodb.endpoint, credentials });
  const ddb = DynamoDBDocumentClient.from(ddbClient);
  return {
    s3,
    ddb,
    s3Emulator,
    dynamodb,
    env: {
      ...QUIET_ENV,
      AWS_ENDPOINT_URL_S3: s3Emulator.endpoint,
      AWS_ENDPOINT_URL_DYNAMODB: dynamodb.endpoint,
    },
    async createBucket(name) {
      await s3.send(new CreateBucketCommand({ Bucket: name }));
    },
    async createLedgerTable(name) {
      await ddbClient.send(
        new CreateTableCommand({
          TableName: name,
          AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
          KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
    },
    async stop() {
      s3.destroy();
      ddbClient.destroy();
      await Promise.all([s3Emulator.stop(), dynamodb.stop()]);
      await fs.rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Uploads a stream of text chunks as one object (multipart), returning its size in bytes. */
export async function uploadChunks(
  s3: S3Client,
  bucket: string,
  key: string,
  chunks: AsyncIterable<string> | Iterable<string>,
): Promise<number> {
  let bytes = 0;
  const counted = Readable.from(
    (async function* () {
      for await (const chunk of chunks) {
        const buffer = Buffer.from(chunk);
        bytes += buffer.length;
        yield buffer;
      }
    })(),
  );
  await new Upload({
    client: s3,
    params: { Bucket: bucket, Key: key, Body: counted },
    partSize: 16 * 1024 * 1024,
    queueSize: 2,
  }).done();
  return bytes;
}

/**
 * The environment the handler modules read at load (each reads its own once, as in Lambda). Only the values
 * the benchmarks do not pass explicitly matter; the rest just have to be valid.
 */
export const HANDLER_ENV: Record<string, string> = {
  OUTPUT_BUCKET: 'bench-output',
  INGEST_BUCKET: 'bench-corpus',
  INGEST_PREFIX: '',
  LEDGER_TABLE: 'bench-ledger',
  IDEMPOTENCY_TABLE: 'bench-idempotency',
  FAILURE_QUEUE_URL: 'http://127.0.0.1:1/000000000000/failures',
  FAILURE_DLQ_URL: 'http://127.0.0.1:1/000000000000/failures-dlq',
  MODEL_ID: 'us.amazon.nova-lite-v1:0',
  LEDGER_SCOPE: 'bench',
  PROMPT_TEMPLATE: 'Summarise in two sentences: {{text}}',
  PROMPT_MAX_TOKENS: '256',
  CONVERSE_BATCH_SIZE: '20',
  CONVERSE_MAP_CONCURRENCY: '10',
  REQUESTS_PER_MINUTE: '200',
  TOKENS_PER_MINUTE: '200000',
  TOLERATED_FAILURE_PERCENTAGE: '5',
  ITEM_CONCURRENCY: '8',
  MAX_ATTEMPTS: '8',
  LEDGER_TTL_DAYS: '1',
  // The claim lease the stack gives ConverseBatch and Collect (their timeout + 60 s, lib/functions.ts).
  CLAIM_LEASE_SECONDS: '180',
  BATCH_READ_SERVICE_QUOTAS: 'false',
  BATCH_QUOTA_MIN_RECORDS_PER_JOB: '100',
  BATCH_QUOTA_MAX_RECORDS_PER_JOB: '50000',
  BATCH_QUOTA_MAX_RECORDS_PER_FILE: '50000',
  BATCH_QUOTA_MAX_BYTES_PER_FILE: '1000000000',
  BATCH_QUOTA_MAX_BYTES_PER_JOB: '5000000000',
  BATCH_QUOTA_MAX_CONCURRENT_JOBS: '10',
  BATCH_TOLERATED_FAILURE_PERCENTAGE: '5',
  BATCH_JOB_TIMEOUT_HOURS: '24',
  BATCH_RECONCILE_INTERVAL_MINUTES: '5',
  JOBS_TABLE: 'bench-jobs',
  BATCH_ROLE_ARN: 'arn:aws:iam::000000000000:role/bench-batch',
  BATCH_JOB_NAME_PREFIX: 'bench',
  ...QUIET_ENV,
};
