// S3 (s3rver) and DynamoDB (dynalite) emulators and provisioning against them, with the real SDK clients.
// SQS (fauxqs) is ESM-only and cannot load inside jest: see sqs.test.ts, which runs a script in a child process.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import {
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ListTablesCommand,
  PutItemCommand,
  QueryCommand,
} from '@aws-sdk/client-dynamodb';
import {
  CopyObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { Upload } from '@aws-sdk/lib-storage';

import {
  LOCAL_CREDENTIALS,
  startDynamoDbEmulator,
  startS3Emulator,
  type DynamoDbEmulator,
  type S3Emulator,
  type S3ObjectCreated,
} from '@corpus-pipeline/local-aws/cloud/emulators';
import { LocalFunction } from '@corpus-pipeline/local-aws/cloud/lambda-runner';
import { ProvisioningError, provision, type CfnTemplate } from '@corpus-pipeline/local-aws/cloud/template';

jest.setTimeout(30_000);

const region = 'us-east-1';
const s3Client = (s3: S3Emulator) =>
  new S3Client({ region, endpoint: s3.endpoint, credentials: LOCAL_CREDENTIALS });
const dynamoClient = (dynamodb: DynamoDbEmulator) =>
  new DynamoDBClient({ region, endpoint: dynamodb.endpoint, credentials: LOCAL_CREDENTIALS });
// The templates below declare no queue, so provisioning never calls SQS; the client only fills the slot.
const idleSqsClient = () =>
  new SQSClient({ region, endpoint: 'http://127.0.0.1:9', credentials: LOCAL_CREDENTIALS, maxAttempts: 1 });

const template: CfnTemplate = {
  Resources: {
    Ingest: { Type: 'AWS::S3::Bucket' },
    Ledger: {
      Type: 'AWS::DynamoDB::Table',
      Properties: {
        BillingMode: 'PAY_PER_REQUEST',
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        AttributeDefinitions: [
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
          { AttributeName: 'jobArn', AttributeType: 'S' },
        ],
        GlobalSecondaryIndexes: [
          {
            IndexName: 'byJob',
            KeySchema: [{ AttributeName: 'jobArn', KeyType: 'HASH' }],
            Projection: { ProjectionType: 'ALL' },
          },
        ],
      },
    },
    Provisioned: {
      Type: 'AWS::DynamoDB::GlobalTable',
      Properties: {
        TableName: 'provisioned-table',
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
        Replicas: [{ Region: region }],
      },
    },
  },
};

describe('S3 and DynamoDB emulators', () => {
  let stateDir: string;

  beforeEach(() => {
    stateDir = mkdtempSync(path.join(tmpdir(), 'corpus-cloud-'));
  });

  afterEach(() => {
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('provisions buckets and tables (with a GSI) idempotently, and the state survives a restart', async () => {
    let s3 = await startS3Emulator({ directory: path.join(stateDir, 's3') });
    let dynamodb = await startDynamoDbEmulator({ directory: path.join(stateDir, 'dynamodb') });
    expect(dynamodb.persistent).toBe(true);
    let clients = { s3: s3Client(s3), dynamodb: dynamoClient(dynamodb), sqs: idleSqsClient() };
    try {
      const stack = await provision(template, { stackName: 'Corpus', region, clients });
      const bucket = stack.buckets[0]!.name;
      expect(bucket).toBe('corpus-ingest');
      await clients.s3.send(new HeadBucketCommand({ Bucket: bucket }));
      const table = (await clients.dynamodb.send(new DescribeTableCommand({ TableName: 'Corpus-Ledger' })))
        .Table!;
      expect(table.TableStatus).toBe('ACTIVE');
      expect(table.GlobalSecondaryIndexes?.map((index) => index.IndexName)).toEqual(['byJob']);
      const provisioned = (
        await clients.dynamodb.send(new DescribeTableCommand({ TableName: 'provisioned-table' }))
      ).Table!;
      expect(provisioned.ProvisionedThroughput?.ReadCapacityUnits).toBe(5);

      await clients.s3.send(
        new PutObjectCommand({ Bucket: bucket, Key: 'corpora/a.jsonl', Body: '{"id":"1"}\n' }),
      );
      await clients.dynamodb.send(
        new PutItemCommand({
          TableName: 'Corpus-Ledger',
          Item: { pk: { S: 'scope' }, sk: { S: 'r1' }, jobArn: { S: 'job-1' } },
        }),
      );
      // A second provision against the same state changes nothing and does not fail.
      await provision(template, { stackName: 'Corpus', region, clients });
    } finally {
      clients.s3.destroy();
      clients.dynamodb.destroy();
      await Promise.all([s3.stop(), dynamodb.stop()]);
    }

    s3 = await startS3Emulator({ directory: path.join(stateDir, 's3') });
    dynamodb = await startDynamoDbEmulator({ directory: path.join(stateDir, 'dynamodb') });
    clients = { s3: s3Client(s3), dynamodb: dynamoClient(dynamodb), sqs: idleSqsClient() };
    try {
      await provision(template, { stackName: 'Corpus', region, clients });
      const object = await clients.s3.send(
        new GetObjectCommand({ Bucket: 'corpus-ingest', Key: 'corpora/a.jsonl' }),
      );
      expect(await object.Body!.transformToString()).toBe('{"id":"1"}\n');
      const byJob = await clients.dynamodb.send(
        new QueryCommand({
          TableName: 'Corpus-Ledger',
          IndexName: 'byJob',
          KeyConditionExpression: 'jobArn = :job',
          ExpressionAttributeValues: { ':job': { S: 'job-1' } },
        }),
      );
      expect(byJob.Items?.map((item) => item['sk']?.S)).toEqual(['r1']);

      // dynalite cannot change indexes: a template whose table schema changed needs fresh state, and says so.
      const changed = structuredClone(template);
      (changed.Resources['Ledger']!.Properties!['GlobalSecondaryIndexes'] as unknown[]).length = 0;
      await expect(provision(changed, { stackName: 'Corpus', region, clients })).rejects.toThrow(
        ProvisioningError,
      );
      await expect(provision(changed, { stackName: 'Corpus', region, clients })).rejects.toThrow(
        /different key schema or indexes/,
      );
    } finally {
      clients.s3.destroy();
      clients.dynamodb.destroy();
      await Promise.all([s3.stop(), dynamodb.stop()]);
    }
  });

  it('paginates ListObjectsV2 past 1000 keys without the legacy OpenSSL provider', async () => {
    const s3 = await startS3Emulator({ directory: path.join(stateDir, 's3') });
    const client = s3Client(s3);
    try {
      await provision(
        { Resources: { Big: { Type: 'AWS::S3::Bucket', Properties: { BucketName: 'big-bucket' } } } },
        {
          stackName: 'Corpus',
          region,
          clients: { s3: client, dynamodb: new DynamoDBClient({ region }), sqs: idleSqsClient() },
        },
      );
      const keys = Array.from(
        { length: 1_050 },
        (_, index) => `shards/${String(index).padStart(5, '0')}.jsonl`,
      );
      for (let start = 0; start < keys.length; start += 50) {
        await Promise.all(
          keys
            .slice(start, start + 50)
            .map((Key) => client.send(new PutObjectCommand({ Bucket: 'big-bucket', Key, Body: 'x' }))),
        );
      }
      const listed: string[] = [];
      let pages = 0;
      for await (const page of paginateListObjectsV2(
        { client },
        { Bucket: 'big-bucket', Prefix: 'shards/' },
      )) {
        pages += 1;
        listed.push(...(page.Contents ?? []).map((object) => object.Key!));
      }
      expect(pages).toBe(2);
      expect(listed).toEqual(keys);

      const small: string[] = [];
      for await (const page of paginateListObjectsV2(
        { client, pageSize: 400 },
        { Bucket: 'big-bucket', StartAfter: 'shards/00099.jsonl' },
      )) {
        small.push(...(page.Contents ?? []).map((object) => object.Key!));
      }
      expect(small).toEqual(keys.slice(100));

      await expect(
        client.send(new ListObjectsV2Command({ Bucket: 'big-bucket', ContinuationToken: 'not-a-token' })),
      ).rejects.toMatchObject({ name: 'InvalidArgument' });
    } finally {
      client.destroy();
      await s3.stop();
    }
  });

  it('reports object creations (put, copy, multipart) in order, with size and ETag', async () => {
    const s3 = await startS3Emulator({ directory: path.join(stateDir, 's3') });
    const client = s3Client(s3);
    const seen: S3ObjectCreated[] = [];
    const unsubscribe = s3.onObjectCreated(async (event) => {
      await new Promise((resolve) => setImmediate(resolve));
      seen.push(event);
    });
    try {
      await provision(
        { Resources: { B: { Type: 'AWS::S3::Bucket', Properties: { BucketName: 'events-bucket' } } } },
        {
          stackName: 'Corpus',
          region,
          clients: { s3: client, dynamodb: new DynamoDBClient({ region }), sqs: idleSqsClient() },
        },
      );
      const put = await client.send(
        new PutObjectCommand({ Bucket: 'events-bucket', Key: 'corpora/my file.jsonl', Body: 'hello' }),
      );
      await client.send(
        new CopyObjectCommand({
          Bucket: 'events-bucket',
          Key: 'copy.jsonl',
          CopySource: 'events-bucket/corpora/my%20file.jsonl',
        }),
      );
      const big = Buffer.alloc(6 * 1024 * 1024, 'a');
      await new Upload({
        client,
        params: { Bucket: 'events-bucket', Key: 'big.bin', Body: big },
        partSize: 5 * 1024 * 1024,
      }).done();
      await s3.drainNotifications();
      expect(seen.map(({ key, size, eventName }) => ({ key, size, eventName }))).toEqual([
        { key: 'corpora/my file.jsonl', size: 5, eventName: 'ObjectCreated:Put' },
        { key: 'copy.jsonl', size: 5, eventName: 'ObjectCreated:Copy' },
        { key: 'big.bin', size: big.length, eventName: 'ObjectCreated:CompleteMultipartUpload' },
      ]);
      expect(seen[0]).toMatchObject({ bucket: 'events-bucket', etag: put.ETag!.replace(/"/g, '') });
      expect(seen[1]!.etag).toBe(seen[0]!.etag);
      expect(seen[0]!.sequencer).toMatch(/^[0-9A-F]+$/);

      unsubscribe();
      await client.send(new PutObjectCommand({ Bucket: 'events-bucket', Key: 'unseen', Body: 'x' }));
      await s3.drainNotifications();
      expect(seen).toHaveLength(3);
    } finally {
      client.destroy();
      await s3.stop();
    }
  });

  it('is reached from a Lambda worker through AWS_ENDPOINT_URL_S3 and the local credentials alone', async () => {
    const s3 = await startS3Emulator({ directory: path.join(stateDir, 's3') });
    const client = s3Client(s3);
    const fn = new LocalFunction({
      name: 'lister',
      arn: 'arn:aws:lambda:us-east-1:000000000000:function:lister',
      entry: path.join(__dirname, 'fixtures', 's3-list-handler.ts'),
      serviceEnvironment: { AWS_ENDPOINT_URL_S3: s3.endpoint },
      timeoutSeconds: 20,
      echo: false,
    });
    try {
      await provision(
        { Resources: { B: { Type: 'AWS::S3::Bucket', Properties: { BucketName: 'lambda-bucket' } } } },
        {
          stackName: 'Corpus',
          region,
          clients: { s3: client, dynamodb: new DynamoDBClient({ region }), sqs: idleSqsClient() },
        },
      );
      await client.send(
        new PutObjectCommand({ Bucket: 'lambda-bucket', Key: 'seen-from-the-worker', Body: 'x' }),
      );
      expect(await fn.invoke({ bucket: 'lambda-bucket' })).toEqual(['seen-from-the-worker']);
    } finally {
      await fn.stop();
      client.destroy();
      await s3.stop();
    }
  });

  it('runs two emulator sets side by side on different ports', async () => {
    const first = await startS3Emulator({ directory: path.join(stateDir, 'one') });
    const second = await startS3Emulator({ directory: path.join(stateDir, 'two') });
    const firstDb = await startDynamoDbEmulator({ directory: path.join(stateDir, 'one-db') });
    const secondDb = await startDynamoDbEmulator({ directory: path.join(stateDir, 'two-db') });
    try {
      expect(new Set([first.port, second.port, firstDb.port, secondDb.port]).size).toBe(4);
      expect(first.endpoint).toBe(`http://127.0.0.1:${first.port}`);
    } finally {
      await Promise.all([first.stop(), second.stop(), firstDb.stop(), secondDb.stop()]);
    }
  });

  it('keeps DynamoDB tables in memory without a directory: nothing after a restart', async () => {
    const startAndList = async (create: boolean): Promise<string[]> => {
      const dynamodb = await startDynamoDbEmulator();
      expect({ persistent: dynamodb.persistent, directory: dynamodb.directory }).toEqual({
        persistent: false,
        directory: undefined,
      });
      const client = dynamoClient(dynamodb);
      try {
        if (create)
          await client.send(
            new CreateTableCommand({
              TableName: 'scratch',
              AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
              KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
              BillingMode: 'PAY_PER_REQUEST',
            }),
          );
        return (await client.send(new ListTablesCommand({}))).TableNames ?? [];
      } finally {
        client.destroy();
        await dynamodb.stop();
      }
    };
    expect(await startAndList(true)).toEqual(['scratch']);
    expect(await startAndList(false)).toEqual([]);
  });

  it('refuses a DynamoDB state directory another emulator holds', async () => {
    const directory = path.join(stateDir, 'db');
    const holder = await startDynamoDbEmulator({ directory });
    try {
      await expect(startDynamoDbEmulator({ directory })).rejects.toMatchObject({
        name: 'EmulatorError',
        service: 'dynamodb',
      });
    } finally {
      await holder.stop();
    }
  });
});
