/** What the emulators share: their endpoints, the shapes they report, their error. */
import type { AddressInfo } from 'node:net';
import { types } from 'node:util';
import type { SqsMoveTaskService } from './sqs-move-tasks';

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
  /** The LevelDB directory, or undefined when running in memory (none given, or the native LevelDB binding did not load). */
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
 * Whether an error carries a Node.js errno code. `isNativeError`, not `instanceof Error`: an error Node.js raises is
 * not an instance of the Error of another realm (a jest test's sandbox, where the emulators also run).
 */
export function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return types.isNativeError(error) && 'code' in error;
}

/** The endpoint of a server listening on 127.0.0.1. */
export function endpointOf(
  address: AddressInfo | string | null,
  service: EmulatorError['service'],
): EmulatorEndpoint {
  if (address === null || typeof address === 'string') {
    throw new EmulatorError(service, `unexpected listen address ${String(address)}`);
  }
  return { endpoint: `http://127.0.0.1:${address.port}`, port: address.port };
}
