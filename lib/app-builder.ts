import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ConfigError, parseEnvironmentConfig, type PipelineConfig } from './config';
import { PROJECT_ROOT } from './paths';
import { pipelineName } from '../lambda/shared/contracts/names';
import { PipelineStack } from './pipeline-stack';

/** Options of {@link buildApp}. */
export interface BuildAppOptions {
  /** The environment to build (`-c env=<name>`); a ConfigError lists the known ones when missing or unknown. */
  readonly envName: unknown;
  /**
   * The raw `environments` context (name -> settings).
   * @default `context.environments`
   */
  readonly environments?: unknown;
  /**
   * Context for a new App: the feature flags matter, as they change the template.
   * @default the `context` block of the project's cdk.json (ignored when `app` is given)
   */
  readonly context?: Record<string, unknown>;
  /**
   * An App to build into; bin/ passes the CLI's, which already holds cdk.json context and the CLI's outdir.
   * @default a new App with `context` and `outdir`
   */
  readonly app?: App;
  /**
   * Cloud assembly directory of a new App.
   * @default a temporary directory chosen by the CDK
   */
  readonly outdir?: string;
  /**
   * Skip esbuild bundling of the functions (tests and the local runtime, which run the TypeScript entries).
   * @default false
   */
  readonly skipBundling?: boolean;
  /**
   * The account to deploy into when the environment names none (bin/ passes CDK_DEFAULT_ACCOUNT).
   * @default an environment-agnostic account
   */
  readonly defaultAccount?: string;
  /**
   * The project root (cdk.json, package-lock.json, lambda/ and statemachine/).
   * @default the repository root
   */
  readonly projectRoot?: string;
}

/** What {@link buildApp} built. */
export interface BuiltApp {
  /** The App, not yet synthesized. */
  readonly app: App;
  /** The environment's stack (`CorpusPipeline-<env>`). */
  readonly stack: PipelineStack;
  /** The validated settings it was built from. */
  readonly config: PipelineConfig;
}

/**
 * Picks `envName` out of `environments` and validates it.
 * @throws ConfigError when the name is missing or unknown (listing the known ones) or the settings are invalid
 */
export function resolveEnvironment(envName: unknown, environments: unknown): PipelineConfig {
  const known =
    typeof environments === 'object' && environments !== null && !Array.isArray(environments)
      ? (environments as Record<string, unknown>)
      : undefined;
  const names = known ? Object.keys(known).sort() : [];
  const hint = names.length > 0 ? `known environments: ${names.join(', ')}` : 'cdk.json context defines none';
  if (typeof envName !== 'string' || envName.length === 0) {
    throw new ConfigError(`Choose an environment with -c env=<name> (${hint})`);
  }
  if (!known || !Object.hasOwn(known, envName)) {
    throw new ConfigError(`Unknown environment "${envName}" (${hint})`);
  }
  return parseEnvironmentConfig(envName, known[envName]);
}

/** The `context` block of a project's cdk.json (feature flags and `environments`). */
export function readCdkJsonContext(projectRoot: string = PROJECT_ROOT): Record<string, unknown> {
  const cdkJson: unknown = JSON.parse(fs.readFileSync(path.join(projectRoot, 'cdk.json'), 'utf8'));
  const context = (cdkJson as { context?: unknown }).context;
  return typeof context === 'object' && context !== null ? (context as Record<string, unknown>) : {};
}

/**
 * Builds the app for one environment without reading process.env, with the cdk-nag AwsSolutions checks
 * registered (they run on every synth). Used by bin/app.ts, the tests and the local runtime.
 * @throws ConfigError for a missing, unknown or invalid environment
 */
export function buildApp(options: BuildAppOptions): BuiltApp {
  const projectRoot = options.projectRoot ?? PROJECT_ROOT;
  const context = options.app ? {} : (options.context ?? readCdkJsonContext(projectRoot));
  const config = resolveEnvironment(options.envName, options.environments ?? context.environments);

  const app =
    options.app ??
    new App({
      context: { ...context, ...(options.skipBundling ? { 'aws:cdk:bundling-stacks': [] } : {}) },
      ...(options.outdir ? { outdir: options.outdir } : {}),
    });
  if (options.app && options.skipBundling) {
    app.node.setContext('aws:cdk:bundling-stacks', []);
  }
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

  const name = pipelineName(config.envName);
  const account = config.account ?? options.defaultAccount;
  const stack = new PipelineStack(app, name, {
    stackName: name,
    description: `Bedrock corpus pipeline (${config.envName}): Step Functions fan-out of a model over JSONL corpora`,
    env: { region: config.region, ...(account ? { account } : {}) },
    config,
    projectRoot,
  });
  return { app, stack, config };
}
