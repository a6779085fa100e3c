/**
 * The DynamoDB emulator: dynalite on LevelDB (classic-level), in memory where the native addon has no prebuild.
 */
import { promises as fs } from 'node:fs';
import type { Server } from 'node:http';
import Module, { createRequire } from 'node:module';
import * as path from 'node:path';
import { closeServer, listenLocal } from '../listen';
import { EmulatorError, endpointOf, type DynamoDbEmulator } from './emulator-common';

/** Options of {@link startDynamoDbEmulator}. */
export interface StartDynamoDbOptions {
  /** LevelDB directory (persisted across runs). Without one, tables live in memory and go with the server (tests). */
  directory?: string;
  /** Receives the warning when the native LevelDB binding cannot load. @default console.warn */
  onWarning?: (message: string) => void;
}

/**
 * Starts dynalite on 127.0.0.1 with a free port, persisted with LevelDB (classic-level) under `directory`, or in
 * memory without one. Tables are ACTIVE at once (no CREATING delay). When a directory is given but the classic-level
 * native prebuild cannot load, dynalite runs in memory and a warning says so; a database held by another process is
 * an error.
 */
export async function startDynamoDbEmulator(options: StartDynamoDbOptions = {}): Promise<DynamoDbEmulator> {
  const directory = options.directory === undefined ? undefined : path.resolve(options.directory);
  const warn = options.onWarning ?? ((message: string) => console.warn(message));
  const native = probeNativeLevel();
  const persistent = native.ok && directory !== undefined;
  if (directory !== undefined && !native.ok) {
    warn(
      `[local dynamodb] LevelDB native binding unavailable (${native.reason}); tables are in memory and will not ` +
        'survive a restart',
    );
  } else if (directory !== undefined) {
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
    stop: () => (stopped ??= stopServer(server, 'dynamodb')),
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

/** Listens on 127.0.0.1 and a free port, failing as the emulator. */
async function listen(server: Server, service: EmulatorError['service']): Promise<void> {
  await listenLocal(server, 0, '127.0.0.1').catch((error: Error) => {
    throw new EmulatorError(service, `cannot listen: ${error.message}`, { cause: error });
  });
}

/** Stops the server, failing as the emulator. */
function stopServer(server: Server, service: EmulatorError['service']): Promise<void> {
  return closeServer(server).catch((error: Error) => {
    throw new EmulatorError(service, `cannot stop: ${error.message}`, { cause: error });
  });
}
