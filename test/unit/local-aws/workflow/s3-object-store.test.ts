import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandInput,
} from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';

import { LocalWorkflow, s3ObjectStore, type TaskCall } from '@corpus-pipeline/local-aws/workflow';
import { STATE_MACHINE_ARN, jsonl, parse } from './helpers';

interface S3rverInstance {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;

// s3rver ships no type declarations.
const S3rver = createRequire(__filename)('s3rver') as S3rverCtor;

describe('s3ObjectStore against s3rver', () => {
  let server: S3rverInstance;
  let directory: string;
  let client: S3Client;

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), 'workflow-s3rver-'));
    server = new S3rver({
      port: 0,
      address: '127.0.0.1',
      silent: true,
      directory,
      configureBuckets: [{ name: 'corpus' }, { name: 'results' }],
    });
    const { port } = await server.run();
    client = new S3Client({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
  });

  afterAll(async () => {
    client.destroy();
    await server.close();
    await rm(directory, { recursive: true, force: true });
  });

  it('runs a Distributed Map that reads JSONL from S3 and writes its results back', async () => {
    await client.send(new PutObjectCommand({ Bucket: 'corpus', Key: 'in/records.jsonl', Body: jsonl(9) }));
    const calls: TaskCall[] = [];
    const workflow = new LocalWorkflow({
      stateMachineArn: STATE_MACHINE_ARN,
      objectStore: s3ObjectStore(client),
      invokeTask: async (call) => {
        calls.push(call);
        return (call.parameters as { Items: { id: number }[] }).Items.map((i) => i.id * 2);
      },
      definition: {
        StartAt: 'FanOut',
        States: {
          FanOut: {
            Type: 'Map',
            ItemReader: {
              Resource: 'arn:aws:states:::s3:getObject',
              ReaderConfig: { InputType: 'JSONL' },
              Parameters: { 'Bucket.$': '$.bucket', 'Key.$': '$.key' },
            },
            ItemBatcher: { MaxItemsPerBatch: 4 },
            MaxConcurrency: 2,
            ItemProcessor: {
              ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' },
              StartAt: 'Converse',
              States: { Converse: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
            },
            ResultWriter: {
              Resource: 'arn:aws:states:::s3:putObject',
              WriterConfig: { Transformation: 'FLATTEN', OutputType: 'JSON' },
              Parameters: { Bucket: 'results', Prefix: 'runs/r1' },
            },
            End: true,
          },
        },
      },
    });

    const done = await workflow.start({ input: { bucket: 'corpus', key: 'in/records.jsonl' } }).wait();

    expect(done.status).toBe('SUCCEEDED');
    expect(calls).toHaveLength(3);
    const { ResultWriterDetails } = parse<{ ResultWriterDetails: { Bucket: string; Key: string } }>(
      done.output,
    );
    const read = async (key: string): Promise<string> =>
      (await client.send(new GetObjectCommand({ Bucket: 'results', Key: key }))).Body?.transformToString() ??
      '';
    const manifest = parse<{ ResultFiles: { SUCCEEDED: { Key: string; Size: number }[] } }>(
      await read(ResultWriterDetails.Key),
    );
    const [file] = manifest.ResultFiles.SUCCEEDED;
    const flattened = await read(file?.Key ?? '');
    expect(Buffer.byteLength(flattened)).toBe(file?.Size);
    expect(parse(flattened)).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16]);
  });

  it('reads an S3 listing as items', async () => {
    for (const key of ['shards/b.jsonl', 'shards/a.jsonl', 'other/c.jsonl']) {
      await client.send(new PutObjectCommand({ Bucket: 'corpus', Key: key, Body: 'x' }));
    }
    const keys: string[] = [];
    for await (const object of s3ObjectStore(client).listObjects('corpus', 'shards/')) keys.push(object.Key);
    expect(keys).toEqual(['shards/a.jsonl', 'shards/b.jsonl']);
  });
});

describe('s3ObjectStore listing', () => {
  it('follows ListObjectsV2 continuation tokens across pages', async () => {
    const s3 = mockClient(S3Client);
    // The paginator reuses its input object, so record the token as each call sees it.
    const tokens: (string | undefined)[] = [];
    s3.on(ListObjectsV2Command).callsFake((input: ListObjectsV2CommandInput) => {
      tokens.push(input.ContinuationToken);
      return input.ContinuationToken === undefined
        ? {
            Contents: [
              { Key: 'p/1', Size: 1, ETag: '"a"', LastModified: new Date(0), StorageClass: 'STANDARD' },
            ],
            IsTruncated: true,
            NextContinuationToken: 'page-2',
          }
        : {
            Contents: [{ Key: 'p/2', Size: 2, ETag: '"b"', LastModified: new Date(1000) }],
            IsTruncated: false,
          };
    });
    const listed = [];
    for await (const object of s3ObjectStore(new S3Client({ region: 'us-east-1' })).listObjects('b', 'p/')) {
      listed.push(object);
    }
    expect(listed.map((o) => [o.Key, o.Size, o.StorageClass])).toEqual([
      ['p/1', 1, 'STANDARD'],
      ['p/2', 2, 'STANDARD'],
    ]);
    expect(tokens).toEqual([undefined, 'page-2']);
    s3.restore();
  });
});
