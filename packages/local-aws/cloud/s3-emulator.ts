/**
 * The S3 emulator: s3rver, patched where it differs from S3 in ways the pipeline meets.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import S3rver from 's3rver';
// Plain require, not `import *`: the patch below must assign to the module object s3rver's router reads.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import s3rverBucketController = require('s3rver/lib/controllers/bucket');
// eslint-disable-next-line @typescript-eslint/no-require-imports
import S3Error = require('s3rver/lib/models/error');
import {
  endpointOf,
  isErrnoException,
  S3Emulator,
  S3ObjectCreated,
  S3ObjectCreatedListener,
} from './emulator-common';

/** Options of {@link startS3Emulator}. */
export interface StartS3Options {
  /** Where buckets and objects are stored (persisted across runs). */
  directory: string;
  /** Receives errors thrown by object-created listeners (and failed ETag look-ups). @default console.error */
  onListenerError?: (error: unknown, event: S3ObjectCreated) => void;
}

/** The part of a Koa request context the multipart marker reads. */
interface KoaContext {
  readonly method: string;
  readonly query: Record<string, unknown>;
}

/** The part of s3rver's notification record the emulator reads. */
interface S3rverEventRecord {
  eventName?: string;
  s3?: {
    bucket?: { name?: string };
    object?: { key?: string; size?: number; eTag?: string; sequencer?: string };
  };
}

/** Starts s3rver in-process on 127.0.0.1 with a free port. */
export async function startS3Emulator(options: StartS3Options): Promise<S3Emulator> {
  installS3rverPortableContinuationTokens();
  const directory = path.resolve(options.directory);
  await fs.mkdir(directory, { recursive: true });
  const server = new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true, resetOnClose: false });
  const listeners = new Set<S3ObjectCreatedListener>();
  const reportListenerError =
    options.onListenerError ??
    ((error: unknown, event: S3ObjectCreated) =>
      console.error(
        `[local s3] object-created listener failed for s3://${event.bucket}/${event.key}:`,
        error,
      ));
  // One chain keeps deliveries in s3rver's order even when a lookup (CopyObject's ETag) or a listener is async.
  let delivery: Promise<void> = Promise.resolve();

  // s3rver names the notification of a completed multipart upload `ObjectCreated:Post`, like a browser POST upload;
  // S3 names it `ObjectCreated:CompleteMultipartUpload` (the S3 event type ObjectCreatedCompleteMultipartUpload,
  // https://docs.aws.amazon.com/sdkfornet/latest/apidocs/items/TS3EventTypeNET35.html; its EventBridge event says
  // reason `CompleteMultipartUpload`, https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html).
  // The request that emits the notification (synchronously) tells them apart: CompleteMultipartUpload is
  // `POST /<bucket>/<key>?uploadId=...`. The first middleware marks it; Koa composes the list when the server starts.
  const completing = new AsyncLocalStorage<boolean>();
  (
    server as unknown as { middleware: ((ctx: KoaContext, next: () => Promise<unknown>) => unknown)[] }
  ).middleware.unshift((ctx, next) =>
    completing.run(ctx.method === 'POST' && typeof ctx.query.uploadId === 'string', next),
  );

  server.on('event', (notification: { Records?: S3rverEventRecord[] }) => {
    const completesMultipart = completing.getStore() === true;
    for (const record of notification.Records ?? []) {
      if (!record.eventName?.startsWith('ObjectCreated:')) continue;
      const named =
        completesMultipart && record.eventName === 'ObjectCreated:Post'
          ? { ...record, eventName: 'ObjectCreated:CompleteMultipartUpload' }
          : record;
      delivery = delivery.then(() => deliver(named));
    }
  });

  async function deliver(record: S3rverEventRecord): Promise<void> {
    const event: S3ObjectCreated = {
      bucket: record.s3?.bucket?.name ?? '',
      key: record.s3?.object?.key ?? '',
      size: record.s3?.object?.size ?? 0,
      etag: record.s3?.object?.eTag ?? '',
      sequencer: record.s3?.object?.sequencer ?? '',
      eventName: record.eventName ?? '',
    };
    if (record.s3?.object?.eTag === undefined) {
      try {
        event.etag = await copiedObjectEtag(server, event.bucket, event.key);
      } catch (error) {
        // ENOENT: the copy was deleted before its notification went out; it is still reported, without ETag.
        if (!isErrnoException(error) || error.code !== 'ENOENT') reportListenerError(error, event);
      }
    }
    for (const listener of [...listeners]) {
      try {
        await listener(event);
      } catch (error) {
        reportListenerError(error, event);
      }
    }
  }

  const address = await server.run();
  const { endpoint, port } = endpointOf(address, 's3');
  let stopped: Promise<void> | undefined;
  return {
    endpoint,
    port,
    directory,
    onObjectCreated(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    drainNotifications: async () => {
      let seen: Promise<void>;
      do {
        seen = delivery;
        await seen;
      } while (seen !== delivery);
    },
    stop: () =>
      (stopped ??= (async () => {
        const closing = server.close();
        // Idle keep-alive sockets of SDK clients would hold close() open.
        server.httpServer?.closeAllConnections();
        await closing;
        await delivery;
      })()),
  };
}

/** s3rver's CopyObject record carries no ETag: read it from the store (s3rver keeps it JSON-quoted). */
async function copiedObjectEtag(server: S3rver, bucket: string, key: string): Promise<string> {
  const metadata = await server.store.getMetadata(bucket, key);
  return (metadata['etag'] ?? '').replace(/"/g, '');
}

/** The Koa context members the ListObjectsV2 patch touches. */
interface S3rverListContext {
  query: Record<string, string | string[] | undefined>;
  params: { bucket: string };
  store: S3rverStore;
  body: unknown;
}

/** The s3rver filesystem store method the patch wraps. */
interface S3rverStore {
  listObjects(
    bucket: string,
    options: Record<string, unknown>,
  ): Promise<{ objects: Array<{ key: string }>; commonPrefixes: string[]; isTruncated: boolean }>;
}

const PORTABLE_TOKENS = Symbol.for('corpus.local.s3rver.portableContinuationTokens');

/**
 * Makes paginated ListObjectsV2 work on OpenSSL 3 without `--openssl-legacy-provider`.
 *
 * Why: s3rver 3.7.1 builds NextContinuationToken by encrypting `region/bucket/lastKey` with
 * `crypto.createCipheriv('des', ...)` (lib/controllers/bucket.js, generateContinuationToken) and decrypts it on the
 * next page. Node 17+ ships OpenSSL 3, whose default provider has no single DES, so any truncated listing (> 1000
 * keys, or MaxKeys) fails with ERR_OSSL_EVP_UNSUPPORTED (a 500) unless node runs with the legacy provider.
 *
 * The patch: the controller module's `getBucket` is looked up per request by s3rver's router, so it is wrapped once.
 * For ListObjectsV2 the wrapper (1) turns an incoming token into `start-after` (the token is just base64url JSON
 * `{b: bucket, k: lastKey}`, opaque to clients, as S3's are), (2) hands the controller a store view that reports
 * "not truncated" so s3rver never reaches its DES code, and (3) restores IsTruncated, NextContinuationToken and
 * the echoed ContinuationToken on the response. Listing semantics (what a page holds) stay s3rver's own.
 */
export function installS3rverPortableContinuationTokens(): void {
  const controller = s3rverBucketController as typeof s3rverBucketController & { [PORTABLE_TOKENS]?: true };
  if (controller[PORTABLE_TOKENS]) return;
  const original = controller.getBucket;
  controller.getBucket = async function getBucketWithPortableTokens(rawCtx: unknown): Promise<void> {
    const ctx = rawCtx as S3rverListContext;
    if (ctx.query['list-type'] !== '2') return original(rawCtx);
    const bucket = ctx.params.bucket;
    const token = ctx.query['continuation-token'];
    if (typeof token === 'string' && token !== '') {
      const { 'continuation-token': _consumed, ...query } = ctx.query;
      ctx.query = { ...query, 'start-after': decodeContinuationToken(token, bucket) };
    }
    let lastKeyOfTruncatedPage: string | undefined;
    const store = ctx.store;
    ctx.store = Object.create(store, {
      listObjects: {
        value: async (listBucket: string, listOptions: Record<string, unknown>) => {
          const result = await store.listObjects(listBucket, listOptions);
          if (!result.isTruncated) return result;
          lastKeyOfTruncatedPage = result.objects.at(-1)?.key;
          return { ...result, isTruncated: false };
        },
      },
    }) as S3rverStore;
    await original(rawCtx);
    const listing = (ctx.body as { ListBucketResult?: Record<string, unknown> } | undefined)
      ?.ListBucketResult;
    if (listing === undefined) return;
    if (typeof token === 'string' && token !== '') {
      listing['StartAfter'] = undefined;
      listing['ContinuationToken'] = token;
    }
    if (lastKeyOfTruncatedPage !== undefined) {
      listing['IsTruncated'] = true;
      listing['NextContinuationToken'] = encodeContinuationToken(bucket, lastKeyOfTruncatedPage);
    }
  };
  controller[PORTABLE_TOKENS] = true;
}

function encodeContinuationToken(bucket: string, lastKey: string): string {
  return Buffer.from(JSON.stringify({ b: bucket, k: lastKey }), 'utf8').toString('base64url');
}

function decodeContinuationToken(token: string, bucket: string): string {
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    // A malformed token is the client's mistake: answered below as S3 does, with InvalidArgument.
    decoded = undefined;
  }
  const fields = decoded as { b?: unknown; k?: unknown } | undefined;
  if (typeof fields?.k !== 'string' || fields.b !== bucket) {
    throw new S3Error('InvalidArgument', 'The continuation token provided is incorrect', {
      ArgumentName: 'continuation-token',
    });
  }
  return fields.k;
}
