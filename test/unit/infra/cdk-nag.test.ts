import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Validations } from 'aws-cdk-lib';
import type { CfnElement } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { buildApp } from '../../../lib/app-builder';
import { flattenForNag } from '../../../lib/nag';
import {
  asList,
  asRecord,
  CDK_CONTEXT,
  environmentSettings,
  resourcesOfType,
  synthEnvironment,
  unacknowledgedFindings,
} from './synth-helpers';

const ACK_KEY = Validations.ACKNOWLEDGED_RULES_METADATA_KEY;

/** Every acknowledgement recorded under `root`: construct path, finding id, reason. */
function acknowledgements(root: IConstruct): { path: string; id: string; reason: string }[] {
  return root.node.findAll().flatMap((c) =>
    c.node.metadata
      .filter((m) => m.type === ACK_KEY)
      .flatMap((m) =>
        Object.entries(m.data as Record<string, string>).map(([id, reason]) => ({
          path: c.node.path,
          id: id.replace(/^annotation::/i, ''),
          reason,
        })),
      ),
  );
}

describe('cdk-nag (AwsSolutions) through CDK Validations', () => {
  test('the local environment synthesizes with no unacknowledged finding', () => {
    const s = synthEnvironment('local');
    try {
      expect(unacknowledgedFindings(s.report)).toEqual([]);
      expect(s.stack.account).toBe('000000000000');
    } finally {
      s.cleanup();
    }
  });

  test('an inference profile model grants the profile and the model in every Region, and stays clean', () => {
    const modelId = 'us.anthropic.claude-haiku-4-5-20251001-v1:0';
    const s = synthEnvironment('dev', { dev: { ...environmentSettings('dev'), modelId } });
    try {
      expect(unacknowledgedFindings(s.report)).toEqual([]);
      const roleId = s.stack.getLogicalId(s.stack.functions.converse.role.node.defaultChild as CfnElement);
      const bedrockResources = resourcesOfType(s.json, 'AWS::IAM::Policy')
        .filter(([, p]) => asList(p.Properties?.Roles).some((r) => asRecord(r, 'role').Ref === roleId))
        .flatMap(([, p]) => asList(asRecord(p.Properties?.PolicyDocument, 'doc').Statement))
        .map((st) => asRecord(st, 'statement'))
        .filter((st) => asList(st.Action).includes('bedrock:InvokeModel'))
        .flatMap((st) => asList(st.Resource).map(flattenForNag))
        .sort();
      expect(bedrockResources).toEqual(
        [
          'arn:aws:bedrock:*::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0',
          'arn:aws:bedrock:us-east-1:<AWS::AccountId>:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0',
          'arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0',
        ].sort(),
      );
    } finally {
      s.cleanup();
    }
  });

  test('a violation fails the synth (the checks really run)', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'corpus-infra-nag-'));
    try {
      const { app, stack } = buildApp({ envName: 'dev', skipBundling: true, outdir });
      new sqs.Queue(stack, 'PlainQueue', { encryption: sqs.QueueEncryption.UNENCRYPTED });
      expect(() => app.synth()).toThrow(
        /AwsSolutions-SQS4[\s\S]*PlainQueue|PlainQueue[\s\S]*AwsSolutions-SQS4/,
      );
    } finally {
      fs.rmSync(outdir, { recursive: true, force: true });
    }
  });

  describe.each(['dev', 'prod'])('acknowledgements in %s', (envName) => {
    // Build without recording acknowledgements, run the pack directly, and compare what it finds with what the
    // constructs acknowledge: every finding must be acknowledged (clean synth) and every acknowledgement must
    // match a real finding on its construct or below (no stale or speculative acknowledgement).
    const recorded: { path: string; id: string; reason: string }[] = [];
    let findings: { id: string; path: string }[] = [];
    beforeAll(() => {
      const spy = jest.spyOn(Validations.prototype, 'acknowledge').mockImplementation(function (
        this: Validations,
        ...rules
      ) {
        const scope = (this as unknown as { scope: IConstruct }).scope;
        for (const rule of rules) {
          recorded.push({ path: scope.node.path, id: rule.id, reason: rule.reason });
        }
      });
      try {
        const { stack } = buildApp({ envName, skipBundling: true, context: CDK_CONTEXT });
        const report = new AwsSolutionsChecks().validateScope(stack);
        findings = report.violations.flatMap((v) =>
          v.violatingResources.map((r) => ({ id: v.ruleName, path: r.constructPath ?? '?' })),
        );
      } finally {
        spy.mockRestore();
      }
    });

    test('every finding is acknowledged on its construct or an ancestor below the stack', () => {
      const stackPath = `CorpusPipeline-${envName}`;
      const uncovered = findings.filter(
        (f) =>
          !recorded.some((a) => a.id === f.id && a.path !== stackPath && f.path.startsWith(`${a.path}/`)),
      );
      expect(uncovered).toEqual([]);
      expect(findings.length).toBeGreaterThan(0);
    });

    test('every acknowledgement matches a finding', () => {
      const stale = recorded.filter(
        (a) => !findings.some((f) => f.id === a.id && f.path.startsWith(`${a.path}/`)),
      );
      expect(stale).toEqual([]);
    });

    test('IAM4/IAM5 are acknowledged per finding id, each with a specific reason', () => {
      for (const a of recorded) {
        expect({ id: a.id, blanket: /^AwsSolutions-IAM[45]$/.test(a.id) }).toEqual({
          id: a.id,
          blanket: false,
        });
        expect({ id: a.id, reasonLength: a.reason.length >= 40 }).toEqual({ id: a.id, reasonLength: true });
      }
    });
  });

  test('the synthesized app carries the acknowledgements as metadata, none on the stack itself', () => {
    const { stack } = buildApp({ envName: 'dev', skipBundling: true, context: CDK_CONTEXT });
    const acks = acknowledgements(stack);
    expect(acks.length).toBeGreaterThan(0);
    expect(acks.filter((a) => a.path === stack.node.path)).toEqual([]);
  });
});
