/** Loading a synthesized template: from a template file or a cdk.out directory. */
import { readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { TemplateResolutionError, type CfnTemplate } from './intrinsics';
// ---------------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------------

/** A template read from disk. */
export interface LoadedTemplate {
  /** The parsed template. */
  template: CfnTemplate;
  /** The template file. */
  file: string;
  /** The stack name from the cloud assembly manifest, when loaded from a cdk.out directory. */
  stackName: string | undefined;
  /** The directory holding the template's assets (cdk.out), for `DefinitionS3Location` and the like. */
  assetDirectory: string;
}

/**
 * Reads a CloudFormation template: a `.json` file, or a cdk.out directory (its manifest.json names the stacks;
 * `stackName` picks one when there are several).
 */
export function loadTemplate(fileOrCdkOut: string, options: { stackName?: string } = {}): LoadedTemplate {
  const location = path.resolve(fileOrCdkOut);
  if (!statSync(location).isDirectory()) {
    return {
      template: parseTemplate(location),
      file: location,
      stackName: undefined,
      assetDirectory: path.dirname(location),
    };
  }
  const manifestFile = path.join(location, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as {
    artifacts?: Record<
      string,
      { type?: string; displayName?: string; properties?: { templateFile?: string; stackName?: string } }
    >;
  };
  const stacks = Object.entries(manifest.artifacts ?? {})
    .filter(
      ([, artifact]) => artifact.type === 'aws:cloudformation:stack' && artifact.properties?.templateFile,
    )
    .map(([id, artifact]) => ({
      stackName: artifact.properties?.stackName ?? id,
      id,
      templateFile: artifact.properties!.templateFile!,
    }));
  const wanted = options.stackName;
  const chosen =
    wanted === undefined
      ? stacks.length === 1
        ? stacks[0]
        : undefined
      : stacks.find((stack) => stack.stackName === wanted || stack.id === wanted);
  if (chosen === undefined) {
    const names = stacks.map((stack) => stack.stackName).join(', ') || 'none';
    throw new TemplateResolutionError(
      manifestFile,
      wanted === undefined
        ? `several stacks (${names}): choose one with stackName`
        : `no stack ${wanted} (stacks: ${names})`,
    );
  }
  const file = path.join(location, chosen.templateFile);
  return { template: parseTemplate(file), file, stackName: chosen.stackName, assetDirectory: location };
}

function parseTemplate(file: string): CfnTemplate {
  const template = JSON.parse(readFileSync(file, 'utf8')) as CfnTemplate;
  if (typeof template !== 'object' || template === null || typeof template.Resources !== 'object') {
    throw new TemplateResolutionError(file, 'not a CloudFormation template (no Resources section)');
  }
  return template;
}
