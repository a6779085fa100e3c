import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:net';
import * as path from 'node:path';
import { result, type CheckResult } from './doctor-report';
import { describeError } from './errors';

/**
 * `corpus doctor --local`: whether this machine can run the offline runtime: the Node.js version, loopback ports, a
 * writable state directory no other runtime holds, and the emulator packages (with the LevelDB native binding, or the
 * in-memory fallback), plus the `local` environment's settings.
 */

/** The oldest Node.js the local runtime, the CLI and the tests run on (eslint 10 asks ^20.19.0, see README). */
export const MIN_NODE = { major: 20, minor: 19 } as const;

/** The Node.js the deployed functions run (nodejs22.x) and that aws-local-stepfunctions 3 declares. */
export const FUNCTIONS_NODE_MAJOR = 22;

/** Servers the local runtime opens on 127.0.0.1 at once (S3, DynamoDB, SQS, Bedrock runtime and batch, Step Functions, EventBridge) and one spare. */
export const LOCAL_LISTENERS = 8;

/** How the local checks look at the machine; tests replace them. */
export interface LocalProbes {
  /** `process.versions.node`. */
  readonly nodeVersion: string;
  /** Opens `count` listeners on 127.0.0.1 with ports the OS picks, then closes them. */
  listen(count: number): Promise<void>;
  /** Creates the state directory when missing and writes and removes a file in it. */
  prepareStateDir(dir: string): Promise<void>;
  /** The pid of another live process holding the state directory's lock, if any. */
  stateDirHolder(dir: string): Promise<number | undefined>;
  /** Loads (or, for `resolveOnly`, finds) a package; returns its version. Throws when it cannot. */
  loadPackage(name: string, resolveOnly: boolean): string;
  /** Whether classic-level's native LevelDB binding loads (dynalite persists with it; else it runs in memory). */
  levelDb(): { ok: true } | { ok: false; reason: string };
  /** Finds fauxqs' dist directory (ESM-only: found by path, imported at run time). */
  fauxqsDist(): string;
}

/** Options of {@link runLocalDoctor}. */
export interface LocalDoctorOptions {
  /** The state directory `corpus local run` would use. */
  readonly stateDir: string;
  /** Validates the `local` environment's settings (bin/ reads cdk.json); a thrown error is the failure. */
  readonly loadLocalConfig?: () => Promise<unknown>;
  readonly probes?: Partial<LocalProbes>;
}

/** Runs every local check, in order. */
export async function runLocalDoctor(options: LocalDoctorOptions): Promise<CheckResult[]> {
  const probes: LocalProbes = { ...defaultProbes(), ...options.probes };
  const checks = [checkNode(probes.nodeVersion)];
  if (options.loadLocalConfig) checks.push(await checkLocalSettings(options.loadLocalConfig));
  checks.push(await checkPorts(probes));
  checks.push(await checkStateDir(probes, options.stateDir));
  checks.push(checkPackages(probes));
  return checks;
}

/** Node.js: at least 20.19; 22 is what the functions run and what two dependencies declare. */
export function checkNode(version: string): CheckResult {
  const title = 'Node.js';
  const [major = 0, minor = 0] = version.split('.').map(Number);
  const atLeast = (m: number, n: number): boolean => major > m || (major === m && minor >= n);
  if (!atLeast(MIN_NODE.major, MIN_NODE.minor)) {
    return result(
      'node',
      title,
      'fail',
      `Node.js ${version} is older than ${MIN_NODE.major}.${MIN_NODE.minor}`,
      {
        fix: [
          `install Node.js ${FUNCTIONS_NODE_MAJOR} (what the deployed functions run), or ${MIN_NODE.major}.${MIN_NODE.minor} or later`,
        ],
      },
    );
  }
  if (major < FUNCTIONS_NODE_MAJOR) {
    return result('node', title, 'pass', `Node.js ${version}`, {
      details: [
        `aws-local-stepfunctions 3 and cookie 2 (under fauxqs) declare Node.js >= ${FUNCTIONS_NODE_MAJOR}, hence npm's EBADENGINE warnings: the workflow runner installs the one function it lacks on Node.js 20 (Promise.withResolvers, packages/local-aws/workflow/promise-polyfill.ts) and cookie is loaded only by fastify's inject(), which the runtime never calls`,
        `the deployed functions run Node.js ${FUNCTIONS_NODE_MAJOR} (nodejs${FUNCTIONS_NODE_MAJOR}.x): ${FUNCTIONS_NODE_MAJOR} runs them locally as they run in Lambda`,
      ],
    });
  }
  return result('node', title, 'pass', `Node.js ${version}`);
}

async function checkLocalSettings(load: () => Promise<unknown>): Promise<CheckResult> {
  const title = 'Local settings';
  try {
    await load();
    return result('settings', title, 'pass', 'cdk.json environments.local is valid');
  } catch (error) {
    return result('settings', title, 'fail', 'cdk.json environments.local is not valid', {
      details: describeError(error).split('\n'),
      fix: ['correct the named settings in cdk.json (README, Deploy settings, says what each means)'],
    });
  }
}

async function checkPorts(probes: LocalProbes): Promise<CheckResult> {
  const title = 'Loopback ports';
  try {
    await probes.listen(LOCAL_LISTENERS);
    return result(
      'ports',
      title,
      'pass',
      `${LOCAL_LISTENERS} listeners opened on 127.0.0.1 (ports the OS picks; no fixed port is needed)`,
    );
  } catch (error) {
    return result('ports', title, 'fail', `cannot listen on 127.0.0.1 (${describeError(error)})`, {
      fix: [
        'the local runtime serves its emulators on 127.0.0.1 with ports the OS picks: allow loopback listeners (a sandbox or a firewall refused them), or free ephemeral ports',
      ],
    });
  }
}

async function checkStateDir(probes: LocalProbes, stateDir: string): Promise<CheckResult> {
  const title = 'State directory';
  const dir = path.resolve(stateDir);
  try {
    await probes.prepareStateDir(dir);
  } catch (error) {
    return result('state-dir', title, 'fail', `${dir} is not writable (${describeError(error)})`, {
      fix: ['choose a writable directory with --state-dir DIR, or fix the permissions of this one'],
    });
  }
  const holder = await probes.stateDirHolder(dir);
  if (holder !== undefined) {
    return result(
      'state-dir',
      title,
      'warn',
      `${dir} is in use by process ${holder} (a corpus local run, or a --local command)`,
      {
        fix: [
          'wait for it to finish, or use another directory: --state-dir DIR (two runtimes need two directories)',
        ],
      },
    );
  }
  return result('state-dir', title, 'pass', `${dir} is writable and free`);
}

function checkPackages(probes: LocalProbes): CheckResult {
  const title = 'Emulators';
  const found: string[] = [];
  const missing: string[] = [];
  for (const [name, resolveOnly] of [
    ['s3rver', false],
    ['dynalite', true],
    ['aws-local-stepfunctions', true],
  ] as const) {
    try {
      found.push(`${name} ${probes.loadPackage(name, resolveOnly)}`);
    } catch (error) {
      missing.push(`${name}: ${describeError(error)}`);
    }
  }
  try {
    found.push(`fauxqs (${probes.fauxqsDist()})`);
  } catch (error) {
    missing.push(`fauxqs: ${describeError(error)}`);
  }
  if (missing.length > 0) {
    return result(
      'emulators',
      title,
      'fail',
      `cannot load ${missing.map((m) => m.split(':')[0]).join(', ')}`,
      {
        details: [...missing, ...found],
        fix: ['install the dependencies as locked: npm ci'],
      },
    );
  }
  const level = probes.levelDb();
  if (!level.ok) {
    return result(
      'emulators',
      title,
      'warn',
      'the emulators load; DynamoDB runs in memory (the LevelDB native binding does not load)',
      {
        details: [...found, `classic-level: ${level.reason}`],
        fix: [
          'a local run works, but the ledger and the runs table do not survive the run (a second run does not skip what the first published)',
          'for persistence: npm rebuild classic-level (needs a C++ toolchain), or a platform classic-level ships a prebuild for',
        ],
      },
    );
  }
  return result(
    'emulators',
    title,
    'pass',
    'S3, DynamoDB (persisted with LevelDB), SQS and the workflow runner load',
    {
      details: found,
    },
  );
}

/** The probes on this machine. The emulators module is loaded only when a probe needs it. */
function defaultProbes(): LocalProbes {
  const emulators = (): typeof import('@corpus-pipeline/local-aws/cloud/emulators') =>
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: it loads the emulator packages
    require('@corpus-pipeline/local-aws/cloud/emulators') as typeof import('@corpus-pipeline/local-aws/cloud/emulators');
  return {
    nodeVersion: process.versions.node,
    listen: listenOnLoopback,
    async prepareStateDir(dir) {
      await fs.mkdir(dir, { recursive: true });
      const probe = path.join(dir, `.doctor-${process.pid}`);
      await fs.writeFile(probe, 'ok');
      await fs.rm(probe, { force: true });
    },
    stateDirHolder: (dir) => emulators().stateDirHolder(dir),
    loadPackage(name, resolveOnly) {
      const entry = require.resolve(name);
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- probing whether the package loads
      if (!resolveOnly) require(name);
      return packageVersion(entry, name);
    },
    levelDb: () => emulators().probeNativeLevel(),
    fauxqsDist: () => emulators().fauxqsDistDir(),
  };
}

/** The version in the package.json above a package's resolved entry file. */
function packageVersion(entry: string, name: string): string {
  let dir = path.dirname(entry);
  for (let i = 0; i < 6; i++) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- reading a package's own manifest
      const manifest = require(path.join(dir, 'package.json')) as { name?: string; version?: string };
      if (manifest.name === name) return manifest.version ?? '?';
    } catch {
      // no package.json at this level
    }
    dir = path.dirname(dir);
  }
  return '?';
}

async function listenOnLoopback(count: number): Promise<void> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    }
  } finally {
    await Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())),
      ),
    );
  }
}
