/**
 * ObjectStore implementations: the real S3 client, and an in-memory store for tests.
 */
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';

import { GetObjectCommand, PutObjectCommand, S3Client, paginateListObjectsV2 } from '@aws-sdk/client-s3';

import type { ObjectStore, ObjectSummary } from './types';

/** The object does not exist (in-memory store). */
export class NoSuchKey extends Error {
  override readonly name = 'NoSuchKey';
}

/**
 * An ObjectStore over the AWS SDK v3 S3 client: GetObject as a stream, PutObject, and
 * ListObjectsV2 across every page.
 */
export function s3ObjectStore(client: S3Client): ObjectStore {
  return {
    async getObjectStream(bucket, key) {
      const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const body = response.Body;
      if (body === undefined) throw new NoSuchKey(`s3://${bucket}/${key} has no body`);
      if (body instanceof Readable) return body;
      // Only reached outside Node's HTTP handler (e.g. a fetch-based one).
      return Readable.fromWeb(body.transformToWebStream() as Parameters<typeof Readable.fromWeb>[0]);
    },
    async putObject(bucket, key, body) {
      await client.send(
        new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: 'application/json' }),
      );
    },
    async *listObjects(bucket, prefix) {
      const pages = paginateListObjectsV2(
        { client },
        { Bucket: bucket, Prefix: prefix === '' ? undefined : prefix },
      );
      for await (const page of pages) {
        for (const object of page.Contents ?? []) {
          if (object.Key === undefined) continue;
          yield {
            Key: object.Key,
            Size: object.Size ?? 0,
            ETag: object.ETag ?? '',
            LastModified: object.LastModified ?? new Date(0),
            StorageClass: object.StorageClass ?? 'STANDARD',
          };
        }
      }
    },
  };
}

interface StoredObject {
  body: Buffer;
  etag: string;
  lastModified: Date;
}

/** Options of InMemoryObjectStore. */
export interface InMemoryObjectStoreOptions {
  /** Bytes per chunk of getObjectStream (small values exercise line splitting across chunks). */
  chunkSize?: number;
  /** Clock for LastModified. */
  now?: () => Date;
}

/** An ObjectStore kept in memory, for tests and dry runs. */
export class InMemoryObjectStore implements ObjectStore {
  private readonly objects = new Map<string, StoredObject>();
  private readonly chunkSize: number;
  private readonly now: () => Date;

  constructor(options: InMemoryObjectStoreOptions = {}) {
    this.chunkSize = options.chunkSize ?? 64 * 1024;
    this.now = options.now ?? (() => new Date());
  }

  private static id(bucket: string, key: string): string {
    return `${bucket}\u0000${key}`;
  }

  async getObjectStream(bucket: string, key: string): Promise<Readable> {
    const object = this.objects.get(InMemoryObjectStore.id(bucket, key));
    if (object === undefined) throw new NoSuchKey(`s3://${bucket}/${key} does not exist`);
    const chunks: Buffer[] = [];
    for (let i = 0; i < object.body.length; i += this.chunkSize)
      chunks.push(object.body.subarray(i, i + this.chunkSize));
    return Readable.from(chunks);
  }

  async putObject(bucket: string, key: string, body: string | Buffer): Promise<void> {
    const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    this.objects.set(InMemoryObjectStore.id(bucket, key), {
      body: bytes,
      etag: `"${createHash('md5').update(bytes).digest('hex')}"`,
      lastModified: this.now(),
    });
  }

  async *listObjects(bucket: string, prefix: string): AsyncIterable<ObjectSummary> {
    const keys = [...this.objects.keys()]
      .filter((id) => id.startsWith(`${bucket}\u0000${prefix}`))
      .map((id) => id.slice(bucket.length + 1))
      .sort();
    for (const key of keys) {
      const object = this.objects.get(InMemoryObjectStore.id(bucket, key));
      if (object === undefined) continue;
      yield {
        Key: key,
        Size: object.body.length,
        ETag: object.etag,
        LastModified: object.lastModified,
        StorageClass: 'STANDARD',
      };
    }
  }

  /** The object's text, or undefined when it does not exist. */
  getText(bucket: string, key: string): string | undefined {
    return this.objects.get(InMemoryObjectStore.id(bucket, key))?.body.toString('utf8');
  }

  /** Keys in the bucket under the prefix, sorted. */
  keys(bucket: string, prefix = ''): string[] {
    return [...this.objects.keys()]
      .filter((id) => id.startsWith(`${bucket}\u0000${prefix}`))
      .map((id) => id.slice(bucket.length + 1))
      .sort();
  }
}
