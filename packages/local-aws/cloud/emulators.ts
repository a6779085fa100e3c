/**
 * The local cloud's service emulators: S3 (s3rver), DynamoDB (dynalite) and SQS (fauxqs), each on 127.0.0.1 on a
 * free port, each keeping its state under one state directory so a second run sees the first run's data.
 *
 * Every local client (the CLI, the workflow runner, the Lambda workers) talks to them with the real AWS SDK v3
 * through `AWS_ENDPOINT_URL_<SERVICE>` and the credentials in {@link LOCAL_CREDENTIALS}.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { promises as fs, existsSync } from 'node:fs';
import type { Server } from 'node:http';
import Module, { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import S3rver from 's3rver';
// Plain require, not `import *`: the patch below must assign to the module object s3rver's router reads.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import s3rverBucketController = require('s3rver/lib/controllers/bucket');
// eslint-disable-next-line @typescript-eslint/no-require-imports
import S3Error = require('s3rver/lib/models/error');

import { SQSClient } from '@aws-sdk/client-sqs';

import { LOCAL_CREDENTIALS } from './local-credentials';
import { applySqsCharacterRules, type RulesApp } from './sqs-character-rules';
import { SQS_MOVE_TASK_OPERATIONS, SqsMoveTaskError, SqsMoveTaskService } from './sqs-move-tasks';

export { LOCAL_CREDENTIALS } from './local-credentials';

/** The region the emulators and their clients use unless told otherwise. */
export const DEFAULT_LOCAL_REGION = 'us-east-1';

/** The account id fauxqs puts in every queue ARN and URL (it cannot be changed). */
export const LOCAL_SQS_ACCOUNT_ID = '000000000000';

/** An emulator listening on 127.0.0.1. */
export interface EmulatorEndpoint {
  /** `http://127.0.0.1:<port>`; an IP literal, so the S3 client uses path-style addressing. */
  readonly endpoint: string;
  /** The port actually bound. */
  readonly port: number;
}

/** An object creation seen by the S3 emulator (PutObject, POST, CopyObject, CompleteMultipartUpload). */
export interface S3ObjectCreated {
  /** Bucket name. */
  bucket: string;
  /** Object key, not URL-encoded (as in EventBridge's "Object Created" detail). */
  key: string;
  /** Object size in bytes. */
  size: number;
  /** ETag without quotes. */
  etag: string;
  /** s3rver's sequencer (upper-case hex of the creation time in ms). */
  sequencer: string;
  /**
   * The S3 notification event name: `ObjectCreated:Put`, `ObjectCreated:Copy`, `ObjectCreated:Post` or
   * `ObjectCreated:CompleteMultipartUpload`.
   */
  eventName: string;
}

/** Receives object-creation notifications; may be async (the emulator waits for it before the next one). */
export type S3ObjectCreatedListener = (event: S3ObjectCreated) => void | Promise<void>;

/** The running S3 emulator. */
export interface S3Emulator extends EmulatorEndpoint {
  /** Where the buckets and objects live on disk. */
  readonly directory: string;
  /**
   * Subscribes to object creations, delivered one at a time in the order s3rver saw them. s3rver has no bucket
   * notifications to EventBridge: the local event bus is fed from here. Returns an unsubscribe function.
   */
  onObjectCreated(listener: S3ObjectCreatedListener): () => void;
  /** Waits until every notification seen so far has been delivered to the listeners. */
  drainNotifications(): Promise<void>;
  /** Stops the server (after delivering pending notifications). */
  stop(): Promise<void>;
}

/** The running DynamoDB emulator. */
export interface DynamoDbEmulator extends EmulatorEndpoint {
  /** The LevelDB directory, or undefined when running in memory (the native LevelDB binding did not load). */
  readonly directory: string | undefined;
  /** Whether tables survive a restart. */
  readonly persistent: boolean;
  /** Stops the server and closes the database. */
  stop(): Promise<void>;
}

/** The running SQS emulator. */
export interface SqsEmulator extends EmulatorEndpoint {
  /** The snapshot file queues and messages are saved to on stop and restored from on start. */
  readonly snapshotFile: string;
  /** Number of queues restored from the snapshot at start. */
  readonly restoredQueues: number;
  /**
   * The message move tasks (StartMessageMoveTask, ListMessageMoveTasks, CancelMessageMoveTask) and
   * ListDeadLetterSourceQueues the emulator answers on its endpoint; fauxqs itself has none of them.
   */
  readonly moveTasks: SqsMoveTaskService;
  /** Writes the snapshot now (stop() does it too). */
  saveSnapshot(): Promise<void>;
  /** Saves the snapshot and stops the server. */
  stop(): Promise<void>;
}

/** All three emulators, started by {@link startEmulators}. */
export interface Emulators {
  /** The state directory (`s3/`, `dynamodb/`, `sqs.json`). */
  readonly stateDir: string;
  /** The region clients should use. */
  readonly region: string;
  /** S3 (s3rver). */
  readonly s3: S3Emulator;
  /** DynamoDB (dynalite). */
  readonly dynamodb: DynamoDbEmulator;
  /** SQS (fauxqs). */
  readonly sqs: SqsEmulator;
  /** Subscribes to object creations in any bucket (shortcut for `s3.onObjectCreated`). */
  onObjectCreated(listener: S3ObjectCreatedListener): () => void;
  /**
   * Environment variables that point an AWS SDK v3 client at the emulators: `AWS_ENDPOINT_URL_S3`,
   * `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_SQS`, the region and the local credentials.
   */
  environment(): Record<string, string>;
  /** Stops all three; the process can exit afterwards. */
  stop(): Promise<void>;
}

/** Options of {@link startEmulators}. */
export interface StartEmulatorsOptions {
  /** Directory holding all emulator state; created if missing. Two runtimes need two directories. */
  stateDir: string;
  /** @default 'us-east-1' */
  region?: string;
  /** Receives non-fatal warnings (e.g. DynamoDB fell back to memory). @default console.warn */
  onWarning?: (message: string) => void;
  /** Receives errors thrown by object-created listeners. @default console.error */
  onListenerError?: (error: unknown, event: S3ObjectCreated) => void;
}

/** An emulator failed to start or to stop. */
export class EmulatorError extends Error {
  override readonly name = 'EmulatorError';
  /** Which emulator. */
  readonly service: 's3' | 'dynamodb' | 'sqs' | 'state';

  constructor(service: EmulatorError['service'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.service = service;
  }
}

/**
 * Starts S3, DynamoDB and SQS emulators on 127.0.0.1 with free ports, their state under `stateDir`.
 * The state directory is locked for the lifetime of the emulators (a second runtime on it fails fast).
 */
export async function startEmulators(options: StartEmulatorsOptions): Promise<Emulators> {
  const stateDir = path.resolve(options.stateDir);
  const region = options.region ?? DEFAULT_LOCAL_REGION;
  await fs.mkdir(stateDir, { recursive: true });
  const releaseLock = await lockStateDir(stateDir);
  const started: Array<{ stop(): Promise<void> }> = [];
  try {
    const s3 = await startS3Emulator({
      directory: path.join(stateDir, 's3'),
      ...(options.onListenerError ? { onListenerError: options.onListenerError } : {}),
    });
    started.push(s3);
    const dynamodb = await startDynamoDbEmulator({
      directory: path.join(stateDir, 'dynamodb'),
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    });
    started.push(dynamodb);
    const sqs = await startSqsEmulator({ snapshotFile: path.join(stateDir, 'sqs.json'), region });
    started.push(sqs);
    let stopped: Promise<void> | undefined;
    return {
      stateDir,
      region,
      s3,
      dynamodb,
      sqs,
      onObjectCreated: (listener) => s3.onObjectCreated(listener),
      environment: () => ({
        AWS_REGION: region,
        AWS_DEFAULT_REGION: region,
        AWS_ACCESS_KEY_ID: LOCAL_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: LOCAL_CREDENTIALS.secretAccessKey,
        AWS_ENDPOINT_URL_S3: s3.endpoint,
        AWS_ENDPOINT_URL_DYNAMODB: dynamodb.endpoint,
        AWS_ENDPOINT_URL_SQS: sqs.endpoint,
      }),
      stop: () => (stopped ??= stopAll(started).finally(releaseLock)),
    };
  } catch (error) {
    await stopAll(started).catch((stopError: unknown) => {
      throw new AggregateError([error, stopError], 'emulators failed to start, then failed to stop');
    });
    await releaseLock();
    throw error;
  }
}

/** Stops servers in reverse start order; every one is attempted, the first failure is rethrown. */
async function stopAll(servers: Array<{ stop(): Promise<void> }>): Promise<void> {
  const results = await Promise.allSettled([...servers].reverse().map((server) => server.stop()));
  const failures = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failures.length === 1) throw failures[0]!.reason;
  if (failures.length > 1) {
    throw new AggregateError(
      failures.map((failure) => failure.reason),
      'several emulators failed to stop',
    );
  }
}

/** In-process registry: the pid check below cannot tell two runtimes of this process apart. */
const lockedStateDirs = new Set<string>();

/**
 * Takes `<stateDir>/emulators.lock` (holding the owner's pid), failing when this process or another live one holds
 * it; a lock left by a dead process is taken over.
 */
async function lockStateDir(stateDir: string): Promise<() => Promise<void>> {
  const lockFile = path.join(stateDir, 'emulators.lock');
  if (lockedStateDirs.has(stateDir)) {
    throw new EmulatorError('state', `state directory ${stateDir} is already in use by this process`);
  }
  try {
    await fs.writeFile(lockFile, String(process.pid), { flag: 'wx' });
  } catch (error) {
    if (!isErrnoException(error) || error.code !== 'EEXIST') throw error;
    const holder = Number((await fs.readFile(lockFile, 'utf8')).trim());
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isProcessAlive(holder)) {
      throw new EmulatorError('state', `state directory ${stateDir} is in use by process ${holder}`);
    }
    await fs.writeFile(lockFile, String(process.pid));
  }
  lockedStateDirs.add(stateDir);
  return async () => {
    lockedStateDirs.delete(stateDir);
    await fs.rm(lockFile, { force: true });
  };
}

/**
 * The pid of another live process holding `<stateDir>/emulators.lock` (a `corpus local run` or a `--local` command
 * using that state directory), or undefined when none does.
 */
export async function stateDirHolder(stateDir: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(path.resolve(stateDir), 'emulators.lock'), 'utf8');
  } catch {
    return undefined;
  }
  const holder = Number(text.trim());
  return Number.isInteger(holder) && holder > 0 && holder !== process.pid && isProcessAlive(holder)
    ? holder
    : undefined;
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return isErrnoException(error) && error.code === 'EPERM';
  }
}

function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && 'code' in error;
}

function endpointOf(
  address: AddressInfo | string | null,
  service: EmulatorError['service'],
): EmulatorEndpoint {
  if (address === null || typeof address === 'string') {
    throw new EmulatorError(service, `unexpected listen address ${String(address)}`);
  }
  return { endpoint: `http://127.0.0.1:${address.port}`, port: address.port };
}

// ---------------------------------------------------------------------------------------------------------------
// S3
// ---------------------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------------------
// DynamoDB
// ---------------------------------------------------------------------------------------------------------------

/** Options of {@link startDynamoDbEmulator}. */
export interface StartDynamoDbOptions {
  /** LevelDB directory (persisted across runs). */
  directory: string;
  /** Receives the warning when the native LevelDB binding cannot load. @default console.warn */
  onWarning?: (message: string) => void;
}

/**
 * Starts dynalite on 127.0.0.1 with a free port, persisted with LevelDB (classic-level) under `directory`.
 * Tables are ACTIVE at once (no CREATING delay). When the classic-level native prebuild cannot load, dynalite runs
 * in memory and a warning says so; a database held by another process is an error.
 */
export async function startDynamoDbEmulator(options: StartDynamoDbOptions): Promise<DynamoDbEmulator> {
  const directory = path.resolve(options.directory);
  const warn = options.onWarning ?? ((message: string) => console.warn(message));
  const native = probeNativeLevel();
  const persistent = native.ok;
  if (!native.ok) {
    warn(
      `[local dynamodb] LevelDB native binding unavailable (${native.reason}); tables are in memory and will not ` +
        'survive a restart',
    );
  } else {
    await fs.mkdir(directory, { recursive: true });
    await assertLevelDbOpens(directory);
  }
  const server = loadDynalite(native.ok)({
    ...(persistent ? { path: directory } : {}),
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  });
  await listen(server, 'dynamodb');
  const { endpoint, port } = endpointOf(server.address(), 'dynamodb');
  let stopped: Promise<void> | undefined;
  return {
    endpoint,
    port,
    directory: persistent ? directory : undefined,
    persistent,
    stop: () => (stopped ??= closeServer(server, 'dynamodb')),
  };
}

/**
 * Whether classic-level (LevelDB, a native addon behind dynalite's persistence) loads. npm ran no install scripts
 * here, so it only works when a prebuild for this platform ships in the package; node-gyp-build throws otherwise.
 */
export function probeNativeLevel(): { ok: true } | { ok: false; reason: string } {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- probing whether a native addon loads
    require('classic-level');
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

/**
 * Loads dynalite. Its db module requires `level` (hence classic-level) at load time even when running in memory,
 * so without the native binding dynalite itself would not load. In that case a stand-in `level` module is put in
 * the require cache first: dynalite then loads and uses memory-level; constructing the stand-in (only done for a
 * `path`, which is never passed then) throws.
 */
function loadDynalite(nativeLevel: boolean): (options: DynaliteOptions) => Server {
  if (!nativeLevel) {
    const levelPath = createRequire(require.resolve('dynalite')).resolve('level');
    if (require.cache[levelPath] === undefined) {
      const standIn = new Module(levelPath);
      standIn.filename = levelPath;
      standIn.loaded = true;
      standIn.exports = {
        Level: class UnavailableLevel {
          constructor() {
            throw new EmulatorError(
              'dynamodb',
              'LevelDB native binding unavailable: dynalite can only run in memory',
            );
          }
        },
      };
      require.cache[levelPath] = standIn;
    }
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily, after the stand-in above
  return require('dynalite') as (options: DynaliteOptions) => Server;
}

/** The dynalite options the emulator passes. */
interface DynaliteOptions {
  path?: string;
  createTableMs?: number;
  deleteTableMs?: number;
  updateTableMs?: number;
}

/** Opens and closes the LevelDB once so a lock held by another runtime surfaces as a clear error, not a 500 later. */
async function assertLevelDbOpens(directory: string): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only once the binding is known to work
  const { ClassicLevel } = require('classic-level') as typeof import('classic-level');
  const db = new ClassicLevel(directory);
  try {
    await db.open();
  } catch (error) {
    throw new EmulatorError(
      'dynamodb',
      `cannot open the DynamoDB state in ${directory} (is another local runtime using this state directory?)`,
      { cause: error },
    );
  }
  await db.close();
}

function listen(server: Server, service: EmulatorError['service']): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) =>
      reject(new EmulatorError(service, `cannot listen: ${error.message}`, { cause: error }));
    server.once('error', onError);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function closeServer(server: Server, service: EmulatorError['service']): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error?: Error) =>
      error
        ? reject(new EmulatorError(service, `cannot stop: ${error.message}`, { cause: error }))
        : resolve(),
    );
    // Idle keep-alive sockets of SDK clients would hold close() open.
    server.closeAllConnections();
  });
}

// ---------------------------------------------------------------------------------------------------------------
// SQS
// ---------------------------------------------------------------------------------------------------------------

/** Options of {@link startSqsEmulator}. */
export interface StartSqsOptions {
  /** JSON file queues and messages are saved to on stop and restored from on start. */
  snapshotFile: string;
  /** Region of queues created by clients that do not sign with one, and of restored queues' URLs. @default 'us-east-1' */
  region?: string;
}

/** A message as fauxqs 1.9.2 stores it (dist/sqs/sqsTypes.d.ts). */
interface FauxqsMessage {
  messageId: string;
  body: string;
  messageGroupId?: string;
  delayUntil?: number;
  [field: string]: unknown;
}

/** The field the emulator adds to a message fauxqs moved to a DLQ: the ARN of the queue it came from. */
const DEAD_LETTER_SOURCE_FIELD = 'deadLetterQueueSourceArn';

/** An in-flight message as fauxqs stores it. */
interface FauxqsInflightEntry {
  message: FauxqsMessage;
  receiptHandle: string;
  visibilityDeadline: number;
}

/** The members of fauxqs' SqsQueue the snapshot reads and writes (dist/sqs/sqsStore.js). */
interface FauxqsQueue {
  readonly name: string;
  readonly url: string;
  readonly arn: string;
  createdTimestamp: number;
  lastModifiedTimestamp: number;
  attributes: Record<string, string>;
  tags: Map<string, string>;
  inflightMessages: Map<string, FauxqsInflightEntry>;
  fifoLockedGroups: Map<string, number>;
  sequenceCounter: number;
  isFifo(): boolean;
  enqueue(message: FauxqsMessage): void;
  dequeue(
    maxCount: number,
    visibilityTimeoutOverride: number | undefined,
    dlqResolver: ((arn: string) => Pick<FauxqsQueue, 'enqueue'> | undefined) | undefined,
  ): unknown[];
  inspectMessages(): { ready: FauxqsMessage[]; delayed: FauxqsMessage[]; inflight: FauxqsInflightEntry[] };
}

/** The members of fauxqs' SqsStore the emulator uses. */
interface FauxqsSqsStore {
  host: string;
  region?: string;
  createQueue(
    name: string,
    url: string,
    arn: string,
    attributes?: Record<string, string>,
    tags?: Record<string, string>,
  ): FauxqsQueue;
  buildQueueUrl(queueName: string, port: string, requestHost: string, region: string): string;
  listQueues(): FauxqsQueue[];
  getQueue(url: string): FauxqsQueue | undefined;
}

/** The Fastify instance fauxqs' buildApp returns (the members used). */
interface FauxqsApp extends RulesApp {
  listen(options: { port: number; host: string }): Promise<string>;
  close(): Promise<void>;
}

/** One queue in the snapshot file. */
interface SqsSnapshotQueue {
  name: string;
  arn: string;
  attributes: Record<string, string>;
  tags: Record<string, string>;
  createdTimestamp: number;
  lastModifiedTimestamp: number;
  sequenceCounter: number;
  ready: FauxqsMessage[];
  delayed: FauxqsMessage[];
  inflight: FauxqsInflightEntry[];
}

/** The snapshot file (`<stateDir>/sqs.json`). */
interface SqsSnapshot {
  version: 1;
  savedAt: string;
  queues: SqsSnapshotQueue[];
}

/**
 * Finds fauxqs' dist directory. Its package.json exports only an `import` condition, so neither
 * `require.resolve('fauxqs')` nor `require.resolve('fauxqs/package.json')` works from CommonJS.
 */
export function fauxqsDistDir(): string {
  for (const nodeModules of require.resolve.paths('fauxqs') ?? []) {
    const dist = path.join(nodeModules, 'fauxqs', 'dist');
    if (existsSync(path.join(dist, 'app.js'))) return dist;
  }
  throw new EmulatorError('sqs', 'cannot find the fauxqs package (node_modules/fauxqs/dist/app.js)');
}

async function importFauxqs(dist: string, file: string): Promise<Record<string, unknown>> {
  return (await import(pathToFileURL(path.join(dist, file)).href)) as Record<string, unknown>;
}

/**
 * Starts fauxqs 1.9.2 (ESM-only, loaded with a dynamic import; not loadable inside jest) on 127.0.0.1 with a free
 * port, restoring queues and messages from `snapshotFile`.
 *
 * Why not `startFauxqs()`: it binds 0.0.0.0, and its queue URLs are `http://sqs.<region>.localhost:<port>/...`,
 * which do not resolve here. Instead the emulator builds the app itself (`buildApp`) around its own stores, with
 * `sqsStore.host = ''`, which makes fauxqs use the request's Host header: queue URLs become
 * `http://127.0.0.1:<port>/000000000000/<name>`, dialable by any client. The stores are fauxqs' own classes,
 * imported by file path (the same module instances buildApp uses).
 *
 * Persistence (simple on purpose): on stop, every queue's name, ARN, attributes, tags and messages (ready, delayed
 * and in flight, with receive counts, receipt handles and visibility deadlines) go to the JSON snapshot. On start,
 * queues are recreated with URLs on the new port and messages are put back in the same states, so a message in
 * flight at shutdown reappears when its visibility timeout ends, and redrive counts carry over. Not kept: FIFO
 * deduplication history (a 5-minute window) and long-poll waiters.
 *
 * Added to fauxqs: the message move tasks and ListDeadLetterSourceQueues ({@link SqsMoveTaskService}, answered by a
 * Fastify hook before fauxqs' router sees the request), and, on each message fauxqs moves to a DLQ, the ARN of the
 * queue it came from (so a move task without DestinationArn sends each message back to its own source). Changed in
 * fauxqs: the characters bodies and String attributes may hold are SQS's ({@link applySqsCharacterRules}).
 */
export async function startSqsEmulator(options: StartSqsOptions): Promise<SqsEmulator> {
  const region = options.region ?? DEFAULT_LOCAL_REGION;
  const snapshotFile = path.resolve(options.snapshotFile);
  const dist = fauxqsDistDir();
  const [appModule, sqsModule, snsModule, s3Module, sqsTypesModule] = await Promise.all([
    importFauxqs(dist, 'app.js'),
    importFauxqs(dist, 'sqs/sqsStore.js'),
    importFauxqs(dist, 'sns/snsStore.js'),
    importFauxqs(dist, 's3/s3Store.js'),
    importFauxqs(dist, 'sqs/sqsTypes.js'),
  ]);
  type Constructor<T> = new () => T;
  recordDeadLetterSources(sqsModule['SqsQueue'] as { prototype: FauxqsQueue });
  const sqsStore = new (sqsModule['SqsStore'] as Constructor<FauxqsSqsStore>)();
  sqsStore.host = '';
  sqsStore.region = region;
  const buildApp = appModule['buildApp'] as (options: Record<string, unknown>) => FauxqsApp;
  const app = buildApp({
    logger: false,
    defaultRegion: region,
    stores: {
      sqsStore,
      snsStore: new (snsModule['SnsStore'] as Constructor<object>)(),
      s3Store: new (s3Module['S3Store'] as Constructor<object>)(),
    },
  });
  const bodyCheck = sqsTypesModule['INVALID_MESSAGE_BODY_CHAR'];
  if (!(bodyCheck instanceof RegExp)) {
    throw new EmulatorError('sqs', 'fauxqs changed: dist/sqs/sqsTypes.js has no INVALID_MESSAGE_BODY_CHAR');
  }
  applySqsCharacterRules(app, bodyCheck);
  // The move tasks' own client of this emulator; its endpoint is known once the server listens.
  const own: { client?: SQSClient } = {};
  const moveTasks = new SqsMoveTaskService({
    client: () => {
      if (!own.client) throw new EmulatorError('sqs', 'the SQS emulator is not listening yet');
      return own.client;
    },
    originOf: (queueUrl, receiptHandle) => {
      const source = sqsStore.getQueue(queueUrl)?.inflightMessages.get(receiptHandle)?.message[
        DEAD_LETTER_SOURCE_FIELD
      ];
      return typeof source === 'string' ? source : undefined;
    },
  });
  app.addHook('preHandler', async (request, reply) => {
    const target = request.headers['x-amz-target'];
    const contentType = String(request.headers['content-type'] ?? '');
    if (request.method !== 'POST' || typeof target !== 'string' || !contentType.includes('x-amz-json-1.0')) {
      return undefined;
    }
    const operation = target.replace(/^AmazonSQS\./, '');
    if (!SQS_MOVE_TASK_OPERATIONS.has(operation)) return undefined;
    reply.header('content-type', 'application/x-amz-json-1.0');
    try {
      return reply.send(await moveTasks.handle(operation, request.body));
    } catch (error) {
      if (!(error instanceof SqsMoveTaskError)) throw error;
      return reply
        .code(error.status)
        .header('x-amzn-query-error', error.queryErrorHeader)
        .send(error.toJSON());
    }
  });
  const snapshot = await readSqsSnapshot(snapshotFile);
  let listenAddress: string;
  try {
    listenAddress = await app.listen({ port: 0, host: '127.0.0.1' });
  } catch (error) {
    throw new EmulatorError('sqs', 'cannot listen', { cause: error });
  }
  const port = Number(new URL(listenAddress).port);
  own.client = new SQSClient({
    region,
    endpoint: `http://127.0.0.1:${port}`,
    credentials: LOCAL_CREDENTIALS,
  });
  for (const queue of snapshot?.queues ?? []) restoreQueue(sqsStore, queue, port);

  const saveSnapshot = async (): Promise<void> => {
    const data: SqsSnapshot = {
      version: 1,
      savedAt: new Date().toISOString(),
      queues: sqsStore.listQueues().map(snapshotQueue),
    };
    const temporary = `${snapshotFile}.${process.pid}.tmp`;
    await fs.mkdir(path.dirname(snapshotFile), { recursive: true });
    await fs.writeFile(temporary, JSON.stringify(data));
    await fs.rename(temporary, snapshotFile);
  };
  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    snapshotFile,
    restoredQueues: snapshot?.queues.length ?? 0,
    moveTasks,
    saveSnapshot,
    stop: () =>
      (stopped ??= (async () => {
        // Running move tasks give back the messages they hold before the state is saved.
        await moveTasks.stop();
        own.client?.destroy();
        // Snapshot before close: closing cancels long polls but must not be able to lose the state.
        await saveSnapshot();
        await app.close();
      })()),
  };
}

/** Guards the one-time patch of fauxqs' SqsQueue class (shared by every emulator in the process). */
const deadLetterSourcesPatched = Symbol.for('corpus.local.sqs.deadLetterSources');

/**
 * Makes fauxqs note, on each message it moves to a DLQ (after maxReceiveCount), the ARN of the queue it came from,
 * as the service does (`DeadLetterQueueSourceArn`). fauxqs' dequeue only calls `enqueue` on what its DLQ resolver
 * returns, so the resolver is wrapped. The field is a plain message field: the snapshot keeps it.
 */
function recordDeadLetterSources(queueClass: { prototype: FauxqsQueue }): void {
  const prototype = queueClass.prototype as FauxqsQueue & { [deadLetterSourcesPatched]?: true };
  if (prototype[deadLetterSourcesPatched]) return;
  const dequeue = prototype.dequeue;
  prototype.dequeue = function (this: FauxqsQueue, maxCount, visibilityTimeoutOverride, dlqResolver) {
    const source = this.arn;
    const recordingResolver =
      dlqResolver &&
      ((arn: string) => {
        const dlq = dlqResolver(arn);
        return (
          dlq && {
            enqueue: (message: FauxqsMessage) => {
              message[DEAD_LETTER_SOURCE_FIELD] = source;
              dlq.enqueue(message);
            },
          }
        );
      });
    return dequeue.call(this, maxCount, visibilityTimeoutOverride, recordingResolver);
  };
  prototype[deadLetterSourcesPatched] = true;
}

async function readSqsSnapshot(file: string): Promise<SqsSnapshot | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') return undefined;
    throw error;
  }
  const snapshot = JSON.parse(text) as Partial<SqsSnapshot>;
  if (snapshot.version !== 1 || !Array.isArray(snapshot.queues)) {
    throw new EmulatorError('sqs', `unrecognised SQS snapshot ${file} (expected version 1)`);
  }
  return snapshot as SqsSnapshot;
}

function snapshotQueue(queue: FauxqsQueue): SqsSnapshotQueue {
  const { ready, delayed, inflight } = queue.inspectMessages();
  return {
    name: queue.name,
    arn: queue.arn,
    attributes: { ...queue.attributes },
    tags: Object.fromEntries(queue.tags),
    createdTimestamp: queue.createdTimestamp,
    lastModifiedTimestamp: queue.lastModifiedTimestamp,
    sequenceCounter: queue.sequenceCounter,
    ready,
    delayed,
    inflight,
  };
}

function restoreQueue(store: FauxqsSqsStore, saved: SqsSnapshotQueue, port: number): void {
  // The ARN's region is the region the queue was created in; the URL is rebuilt for this run's port.
  const queueRegion = saved.arn.split(':')[3] ?? store.region ?? DEFAULT_LOCAL_REGION;
  const url = store.buildQueueUrl(saved.name, String(port), `127.0.0.1:${port}`, queueRegion);
  const queue = store.createQueue(saved.name, url, saved.arn, saved.attributes, saved.tags);
  queue.createdTimestamp = saved.createdTimestamp;
  queue.lastModifiedTimestamp = saved.lastModifiedTimestamp;
  queue.sequenceCounter = saved.sequenceCounter;
  // enqueue() files each message by FIFO group and by delay exactly as a send would.
  for (const message of [...saved.ready, ...saved.delayed]) queue.enqueue(message);
  for (const entry of saved.inflight) {
    queue.inflightMessages.set(entry.receiptHandle, entry);
    if (queue.isFifo()) {
      const group = entry.message.messageGroupId ?? '__default';
      queue.fifoLockedGroups.set(group, (queue.fifoLockedGroups.get(group) ?? 0) + 1);
    }
  }
}
