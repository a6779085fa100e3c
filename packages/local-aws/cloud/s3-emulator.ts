/**
 * The S3 emulator: s3rver, patched where it differs from S3 in ways the pipeline meets.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createReadStream, promises as fs } from 'node:fs';
import * as path from 'node:path';

import S3rver from 's3rver';
// Plain require, not `import *`: the patch below must assign to the module object s3rver's router reads.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import s3rverBucketController = require('s3rver/lib/controllers/bucket');
// eslint-disable-next-line @typescript-eslint/no-require-imports
import s3rverAuthentication = require('s3rver/lib/middleware/authentication');
// eslint-disable-next-line @typescript-eslint/no-require-imports
import S3Error = require('s3rver/lib/models/error');
import {
  EmulatorError,
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

/** A Koa middleware of s3rver's application. */
type KoaMiddleware = ((ctx: KoaContext, next: () => Promise<unknown>) => unknown) & { readonly name: string };

/** S3's smallest part of a multipart upload but the last: 5 MiB (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html). */
export const S3_MIN_PART_BYTES = 5 * 1024 * 1024;

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
  const middleware = (server as unknown as { middleware: KoaMiddleware[] }).middleware;
  middleware.unshift((ctx, next) =>
    completing.run(ctx.method === 'POST' && typeof ctx.query.uploadId === 'string', next),
  );
  // Just before s3rver's router (Koa's router middleware is named `dispatch`): see multipartUploadExtensions.
  if (middleware.at(-1)?.name !== 'dispatch') {
    throw new EmulatorError(
      's3',
      "s3rver's router is not its last middleware: the multipart patch needs s3rver 3.7.1",
    );
  }
  middleware.splice(middleware.length - 1, 0, multipartUploadExtensions());
  enforceMultipartCompletionRules(server.store);

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

/** The Koa context members the multipart extensions read and set. */
interface S3rverRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Record<string, string | string[] | undefined>;
  readonly headers: Record<string, string | string[] | undefined>;
  params: Record<string, string>;
  store: FilesystemStore;
  body: unknown;
  status: number;
}

type FilesystemStore = S3rver['store'];

/**
 * UploadPartCopy and AbortMultipartUpload, which s3rver 3.7.1 answers with NotImplemented and MethodNotAllowed
 * (lib/routes.js, `PUT /:bucket/:key+?uploadId` with `x-amz-copy-source`, and `DELETE /:bucket/:key+?uploadId`).
 *
 * The router throws before any controller could be patched, so this is a Koa middleware placed just before the
 * router: the path is already rewritten for virtual-hosted requests, s3rver renders the XML body and S3 errors as
 * for its own operations, and s3rver's signature check runs as the router would run it.
 */
function multipartUploadExtensions(): KoaMiddleware {
  const authenticate = s3rverAuthentication();
  return async function multipartUploadExtensions(rawCtx, next) {
    const ctx = rawCtx as unknown as S3rverRequest;
    const uploadId = ctx.query['uploadId'];
    const copying = ctx.method === 'PUT' && typeof ctx.headers['x-amz-copy-source'] === 'string';
    if (typeof uploadId !== 'string' || !(copying || ctx.method === 'DELETE')) return next();
    const target = bucketAndKey(ctx.path);
    if (target === undefined) return next();
    ctx.params = { bucket: target.bucket, key: target.key };
    return authenticate(ctx, async () => {
      await requireBucket(ctx.store, target.bucket);
      const uploadDir = await requireUpload(ctx.store, target.bucket, target.key, uploadId);
      if (copying) await uploadPartCopy(ctx, target.bucket, uploadId);
      else {
        await fs.rm(uploadDir, { recursive: true, force: true });
        ctx.status = 204;
      }
    });
  };
}

/** `/bucket/key` (URL-encoded) as s3rver's router reads it, or undefined for a path naming no object. */
function bucketAndKey(urlPath: string): { bucket: string; key: string } | undefined {
  const match = /^\/([^/]+)\/(.+)$/s.exec(urlPath);
  if (!match) return undefined;
  try {
    return { bucket: decodeURIComponent(match[1]!), key: decodeURIComponent(match[2]!) };
  } catch {
    // A malformed escape: left to s3rver's router, which answers it as it answers any other request.
    return undefined;
  }
}

async function requireBucket(store: FilesystemStore, bucket: string): Promise<void> {
  if (!(await store.getBucket(bucket))) {
    throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket });
  }
}

/** The folder s3rver keeps the upload's parts in; NoSuchUpload as S3 when there is no such upload of that key. */
async function requireUpload(
  store: FilesystemStore,
  bucket: string,
  key: string,
  uploadId: string,
): Promise<string> {
  const noSuchUpload = () =>
    new S3Error(
      'NoSuchUpload',
      'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      { UploadId: uploadId },
    );
  // s3rver's upload IDs are hex; anything else would name a path outside the uploads folder.
  if (!/^[0-9A-Za-z_-]+$/.test(uploadId)) throw noSuchUpload();
  const uploadDir = path.join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
  let uploadKey: string;
  try {
    uploadKey = await fs.readFile(path.join(uploadDir, 'key'), 'utf8');
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') throw noSuchUpload();
    throw error;
  }
  if (uploadKey !== key) throw noSuchUpload();
  return uploadDir;
}

/**
 * UploadPartCopy (https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html): stores bytes of an
 * existing object, all of them or the `x-amz-copy-source-range: bytes=first-last` (inclusive, zero-based) of them, as
 * part `partNumber`, and answers `CopyPartResult` with the part's ETag and LastModified.
 *
 * Errors: NoSuchBucket / NoSuchKey for a missing source. The API page documents no code for a range outside the
 * object; S3 answers 400 InvalidArgument "Range specified is not valid for source object of size: N" (as MinIO and
 * other S3 emulators reproduce it), and InvalidArgument for a header not of the form `bytes=first-last`.
 * s3rver keeps no object versions: `?versionId=null` names the object, any other version NoSuchVersion.
 */
async function uploadPartCopy(ctx: S3rverRequest, bucket: string, uploadId: string): Promise<void> {
  const partNumberText = ctx.query['partNumber'];
  const partNumber = Number(partNumberText);
  if (
    typeof partNumberText !== 'string' ||
    !Number.isInteger(partNumber) ||
    partNumber < 1 ||
    partNumber > 10_000
  ) {
    throw new S3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', {
      ArgumentName: 'partNumber',
      ArgumentValue: String(partNumberText),
    });
  }
  const source = parseCopySource(String(ctx.headers['x-amz-copy-source']));
  await requireBucket(ctx.store, source.bucket);
  const file = ctx.store.getResourcePath(source.bucket, source.key, 'object');
  let size: number;
  try {
    size = (await fs.stat(file)).size;
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') {
      throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: source.key });
    }
    throw error;
  }
  const rangeHeader = ctx.headers['x-amz-copy-source-range'];
  const range = typeof rangeHeader === 'string' ? parseCopySourceRange(rangeHeader, size) : undefined;
  // s3rver's own getObject reads `end: 0` as "to the end"; the file is read here with the exact range.
  const { md5 } = await ctx.store.putPart(bucket, uploadId, partNumber, createReadStream(file, range));
  ctx.body = { CopyPartResult: { LastModified: new Date().toISOString(), ETag: JSON.stringify(md5) } };
}

/** `x-amz-copy-source`: URL-encoded `bucket/key` or `/bucket/key`, optionally followed by `?versionId=...`. */
function parseCopySource(header: string): { bucket: string; key: string } {
  const invalid = (message: string) =>
    new S3Error('InvalidArgument', message, { ArgumentName: 'x-amz-copy-source', ArgumentValue: header });
  const query = header.indexOf('?');
  const encoded = query === -1 ? header : header.slice(0, query);
  let decoded: string;
  try {
    decoded = decodeURIComponent(encoded);
  } catch {
    // Answered below as S3 answers a copy source it cannot read.
    throw invalid('Invalid copy source encoding');
  }
  const slash = decoded.indexOf('/', decoded.startsWith('/') ? 1 : 0);
  const bucket = decoded.slice(decoded.startsWith('/') ? 1 : 0, slash === -1 ? undefined : slash);
  const key = slash === -1 ? '' : decoded.slice(slash + 1);
  if (bucket === '' || key === '') {
    throw invalid('Copy Source must mention the source bucket and key: sourcebucket/sourcekey');
  }
  const versionId = query === -1 ? null : new URLSearchParams(header.slice(query + 1)).get('versionId');
  if (versionId !== null && versionId !== 'null') {
    throw new S3Error('NoSuchVersion', 'The specified version does not exist.', {
      Key: key,
      VersionId: versionId,
    });
  }
  return { bucket, key };
}

/** `bytes=first-last` (inclusive, zero-based) within an object of `size` bytes. */
function parseCopySourceRange(header: string, size: number): { start: number; end: number } {
  const match = /^bytes=(\d+)-(\d+)$/.exec(header.trim());
  if (!match) {
    throw new S3Error(
      'InvalidArgument',
      'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy',
      { ArgumentName: 'x-amz-copy-source-range', ArgumentValue: header },
    );
  }
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (start > end || end >= size) {
    throw new S3Error('InvalidArgument', `Range specified is not valid for source object of size: ${size}`, {
      ArgumentName: 'x-amz-copy-source-range',
      ArgumentValue: header,
    });
  }
  return { start, end };
}

/**
 * CompleteMultipartUpload's checks, which s3rver 3.7.1 skips (it concatenates whatever part files it finds):
 * NoSuchUpload, InvalidPartOrder (parts not in ascending order), InvalidPart (a part not uploaded, or its ETag
 * not the one given) and EntityTooSmall (a part but the last under 5 MiB), as
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html lists them.
 */
function enforceMultipartCompletionRules(store: FilesystemStore): void {
  const assemble = store.putObjectMultipart.bind(store);
  store.putObjectMultipart = async (bucket, uploadId, parts) => {
    const uploadDir = path.join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
    if (!/^[0-9A-Za-z_-]+$/.test(uploadId) || !(await exists(path.join(uploadDir, 'key')))) {
      throw new S3Error(
        'NoSuchUpload',
        'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
        { UploadId: uploadId },
      );
    }
    if (parts.some((part, index) => index > 0 && part.number <= parts[index - 1]!.number)) {
      throw new S3Error(
        'InvalidPartOrder',
        'The list of parts was not in ascending order. The parts list must be specified in order by part number.',
        { UploadId: uploadId },
      );
    }
    for (const [index, part] of parts.entries()) {
      const partPath = path.join(uploadDir, String(part.number));
      const stored = await partFile(partPath);
      if (stored === undefined || stored.md5 !== part.etag) {
        throw new S3Error(
          'InvalidPart',
          "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
          { UploadId: uploadId, PartNumber: part.number, ETag: part.etag },
        );
      }
      if (index < parts.length - 1 && stored.size < S3_MIN_PART_BYTES) {
        throw new S3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size', {
          ProposedSize: stored.size,
          MinSizeAllowed: S3_MIN_PART_BYTES,
          PartNumber: part.number,
          ETag: part.etag,
        });
      }
    }
    return assemble(bucket, uploadId, parts);
  };
}

/** A stored part's size and MD5, or undefined when it was never uploaded. */
async function partFile(partPath: string): Promise<{ size: number; md5: string } | undefined> {
  try {
    const [stat, md5] = await Promise.all([fs.stat(partPath), fs.readFile(`${partPath}.md5`, 'utf8')]);
    return { size: stat.size, md5: md5.trim() };
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') return undefined;
    throw error;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.stat(file);
    return true;
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') return false;
    throw error;
  }
}
