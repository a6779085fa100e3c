import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { describeStack, type CfnTemplate } from '@corpus-pipeline/local-aws/cloud/template';
import { synthEnvironment, type Synthesized } from './synth-helpers';

// The workflow definition as deployed, checked by a validator this repository did not write: asl-validator (JSON
// schemas of the Amazon States Language, path syntax, transition targets, terminal states, ARN-shaped Resources).
// The definition is the synthesized one, its DefinitionSubstitutions resolved the way CloudFormation does (function
// ARNs, the bucket name) by the local runtime's template resolver.

/** What asl-validator reports. */
interface AslValidation {
  isValid: boolean;
  errors: { 'Error code': string; Message: string }[];
  errorsText(separator?: string): string;
}

/** asl-validator's entry point (CommonJS, no type declarations). */
type AslValidator = (
  definition: unknown,
  options?: { checkPaths?: boolean; checkArn?: boolean },
) => AslValidation;

// eslint-disable-next-line @typescript-eslint/no-require-imports -- untyped CommonJS package
const aslValidator = require('asl-validator') as AslValidator;

/** Runs asl-validator with every check on (it annotates the definition it is given: it gets a copy). */
function validate(definition: unknown): AslValidation {
  return aslValidator(structuredClone(definition), { checkPaths: true, checkArn: true });
}

interface AslState {
  Type: string;
  Next?: string;
  ItemProcessor?: { States: Record<string, AslState> };
  [key: string]: unknown;
}

describe('the synthesized workflow definition under asl-validator', () => {
  let synthesized: Synthesized;
  let definition: { StartAt: string; States: Record<string, AslState> };

  beforeAll(() => {
    synthesized = synthEnvironment('dev');
    const stack = describeStack(synthesized.json as unknown as CfnTemplate, {
      stackName: synthesized.stack.stackName,
      region: synthesized.config.region,
      accountId: '123456789012',
    });
    const [machine] = stack.stateMachines;
    if (!machine) throw new Error('the template declares no state machine');
    definition = machine.definition as typeof definition;
  });

  afterAll(() => synthesized.cleanup());

  it('has every placeholder substituted by a real ARN or name', () => {
    const text = JSON.stringify(definition);
    expect(text).not.toMatch(/\$\{[A-Za-z]+\}/);
    expect(text).toMatch(/arn:aws:lambda:[a-z0-9-]+:123456789012:function:/);
  });

  it('is valid: schemas, paths, transitions, terminal states and Resource ARNs', () => {
    const result = validate(definition);
    expect(result.errorsText('\n')).toBe('');
    expect(result.isValid).toBe(true);
  });

  it('would be caught broken (the validator is really looking)', () => {
    const broken = structuredClone(definition);
    const [name, first] = Object.entries(broken.States).find(([, state]) => state.Next !== undefined) ?? [];
    if (!name || !first) throw new Error('the definition has no state with Next');
    first.Next = 'NoSuchState';
    const result = validate(broken);
    expect(result.isValid).toBe(false);
    expect(result.errors.map((e) => e['Error code'])).toContain('MISSING_TRANSITION_TARGET');

    const badArn = structuredClone(definition);
    const task = Object.values(badArn.States).find((state) => state.Type === 'Task');
    if (!task) throw new Error('the definition has no Task state');
    task.Resource = 'lambda:invoke';
    expect(validate(badArn).isValid).toBe(false);
  });
});
