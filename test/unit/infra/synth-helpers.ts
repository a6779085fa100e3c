import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp, readCdkJsonContext } from '../../../lib/app-builder';
import type { PipelineConfig } from '../../../lib/config';
import type { PipelineStack } from '../../../lib/pipeline-stack';

/** One resource of a synthesized template. */
export interface CfnResource {
  readonly Type: string;
  readonly Properties?: Record<string, unknown>;
  readonly Metadata?: Record<string, unknown>;
}

/** The parts of a synthesized template the tests read. */
export interface CfnTemplate {
  readonly Resources: Record<string, CfnResource>;
  readonly Outputs?: Record<string, unknown>;
}

/** One violation in CDK's validation-report.json. */
export interface ReportedViolation {
  readonly ruleName: string;
  readonly severity?: string;
  readonly violatingConstructs?: { readonly constructPath: string }[];
}

/** CDK's validation-report.json (the part the tests read). */
export interface ValidationReport {
  readonly pluginReports: { readonly pluginName: string; readonly violations: ReportedViolation[] }[];
}

/** A synthesized environment. */
export interface Synthesized {
  readonly stack: PipelineStack;
  readonly config: PipelineConfig;
  readonly template: Template;
  readonly json: CfnTemplate;
  readonly report: ValidationReport;
  /** Removes the cloud assembly directory. */
  readonly cleanup: () => void;
}

/** The repository's cdk.json context (feature flags and environments). */
export const CDK_CONTEXT = readCdkJsonContext();

/** The raw settings of one cdk.json environment. */
export function environmentSettings(envName: string): Record<string, unknown> {
  const environments = CDK_CONTEXT.environments as Record<string, Record<string, unknown>>;
  const settings = environments[envName];
  if (!settings) {
    throw new Error(`cdk.json has no environment ${envName}`);
  }
  return settings;
}

/**
 * Builds and synthesizes one environment in process, without bundling, exactly as the local runtime does; the
 * cdk-nag checks run during the synth and their report is read back from the cloud assembly.
 */
export function synthEnvironment(
  envName: string,
  environments?: Record<string, unknown>,
  beforeSynth?: (stack: PipelineStack) => void,
): Synthesized {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'corpus-infra-test-'));
  const { app, stack, config } = buildApp({
    envName,
    ...(environments ? { environments } : {}),
    skipBundling: true,
    outdir,
  });
  beforeSynth?.(stack);
  const assembly = app.synth();
  const template = Template.fromStack(stack);
  const report = JSON.parse(
    fs.readFileSync(path.join(assembly.directory, 'validation-report.json'), 'utf8'),
  ) as ValidationReport;
  return {
    stack,
    config,
    template,
    json: template.toJSON() as CfnTemplate,
    report,
    cleanup: () => fs.rmSync(outdir, { recursive: true, force: true }),
  };
}

/** Every violation in a validation report, as `rule @ construct path` lines (empty when clean). */
export function unacknowledgedFindings(report: ValidationReport): string[] {
  return report.pluginReports.flatMap((plugin) =>
    plugin.violations.flatMap((v) =>
      (v.violatingConstructs ?? [{ constructPath: '?' }]).map(
        (c) => `${plugin.pluginName}: ${v.ruleName} (${v.severity ?? 'no severity'}) @ ${c.constructPath}`,
      ),
    ),
  );
}

/** The resources of one type, by logical id. */
export function resourcesOfType(json: CfnTemplate, type: string): [string, CfnResource][] {
  return Object.entries(json.Resources).filter(([, r]) => r.Type === type);
}

/** A value that must be a plain object. */
export function asRecord(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`${what} is not an object: ${JSON.stringify(value)}`);
  }
  return value as Record<string, unknown>;
}

/** A value as an array (IAM allows a single string where a list is expected). */
export function asList(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [value];
}
