/**
 * The local cloud's service emulators: S3 (s3rver), DynamoDB (dynalite) and SQS (fauxqs), each on 127.0.0.1 on a
 * free port, each keeping its state under one state directory so a second run sees the first run's data.
 *
 * Every local client (the CLI, the workflow runner, the Lambda workers) talks to them with the real AWS SDK v3
 * through `AWS_ENDPOINT_URL_<SERVICE>` and the credentials in {@link LOCAL_CREDENTIALS}.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { LOCAL_CREDENTIALS } from './local-credentials';
import {
  DEFAULT_LOCAL_REGION,
  EmulatorError,
  isErrnoException,
  type Emulators,
  type StartEmulatorsOptions,
} from './emulator-common';
import { startDynamoDbEmulator } from './dynamodb-emulator';
import { startS3Emulator } from './s3-emulator';
import { startSqsEmulator } from './sqs-emulator';

export { LOCAL_CREDENTIALS } from './local-credentials';
export * from './emulator-common';
export * from './dynamodb-emulator';
export * from './s3-emulator';
export * from './sqs-emulator';

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
