import { resolve } from 'node:path';
import type { Backend, BackendChoice } from '../cli/backend';
import { CliUsageError } from '../cli/errors';
import { runCli } from '../cli/program';
import { ConfigError, type PipelineConfig } from '../lib/config';

/**
 * The `corpus` CLI (commands in cli/). This entry is the one place that reads configuration: the environment's
 * settings come from cdk.json context (validated as the CDK app validates them), the AWS SDK finds credentials in
 * the process environment as usual. Exit codes: 0 ok, 1 not found, the run failed or a doctor check failed, 2 bad
 * usage, 3 AWS or the local runtime could not answer (for `local run`: could not start or run).
 */

/** The repository root: cdk.json, and the handler entries the local template names. */
const PROJECT_ROOT = resolve(__dirname, '..');

/**
 * An environment's validated settings from cdk.json. Loaded on demand: the config lives beside the CDK app, which
 * takes a while to load and is not needed for `--help`.
 */
async function environmentConfig(envName: string): Promise<PipelineConfig> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: the CDK takes seconds to load
  const builder = require('../lib/app-builder') as typeof import('../lib/app-builder');
  try {
    return builder.resolveEnvironment(envName, builder.readCdkJsonContext(PROJECT_ROOT).environments);
  } catch (error) {
    if (error instanceof ConfigError)
      throw new CliUsageError(error.message.replace('-c env=<name>', '--env <name>'));
    throw error;
  }
}

/** Opens the backend a command chose. */
async function openBackend(choice: BackendChoice): Promise<Backend> {
  if (choice.kind === 'aws') {
    const config = await environmentConfig(choice.envName);
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: only the AWS commands need it
    const { openAwsBackend } = require('../cli/aws-backend') as typeof import('../cli/aws-backend');
    return openAwsBackend({ config });
  }
  const config = await environmentConfig('local');
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: it loads the emulators
  const { openLocalBackend } = require('../cli/local-backend') as typeof import('../cli/local-backend');
  return openLocalBackend({
    config,
    stateDir: resolve(choice.stateDir),
    projectRoot: PROJECT_ROOT,
    onWarning: (message: string) => process.stderr.write(`${message}\n`),
  });
}

runCli(process.argv.slice(2), {
  openBackend,
  loadEnvironment: environmentConfig,
  stdout: process.stdout,
  stderr: process.stderr,
}).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`corpus: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 3;
  },
);
