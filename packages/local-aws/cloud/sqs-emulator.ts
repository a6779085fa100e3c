/**
 * The SQS emulator: fauxqs, with SQS's character rules, move tasks and a snapshot of its queues between runs.
 */
import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import { SQSClient } from '@aws-sdk/client-sqs';

import { LOCAL_CREDENTIALS } from './local-credentials';
import { applySqsCharacterRules, type RulesApp } from './sqs-character-rules';
import { SQS_MOVE_TASK_OPERATIONS, SqsMoveTaskError, SqsMoveTaskService } from './sqs-move-tasks';
import { DEFAULT_LOCAL_REGION, EmulatorError, isErrnoException, type SqsEmulator } from './emulator-common';

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
