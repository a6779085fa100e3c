import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildApp } from '../../lib/app-builder';

/** The repository root, where cdk.json lives. */
const ROOT = resolve(__dirname, '..', '..');

/** A synthesized CloudFormation template and its stack name. */
export interface SynthesizedStack {
  stackName: string;
  template: Record<string, unknown>;
}

/**
 * Synthesizes the `local` environment in-process, with the feature flags and environments of cdk.json and without
 * bundling (the local runtime runs the handler sources), and returns the stack's template.
 */
export function synthLocalTemplate(outdir: string, envName = 'local'): SynthesizedStack {
  const cdkJson = JSON.parse(readFileSync(join(ROOT, 'cdk.json'), 'utf8')) as {
    context: Record<string, unknown>;
  };
  const { app, stack } = buildApp({
    envName,
    context: cdkJson.context,
    outdir,
    skipBundling: true,
  });
  const assembly = app.synth();
  const artifact = assembly.getStackByName(stack.stackName);
  return { stackName: stack.stackName, template: artifact.template as Record<string, unknown> };
}
