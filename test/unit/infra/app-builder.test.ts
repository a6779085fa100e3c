import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App, Duration, Stack, Token } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { CDK_REQUIRED_BOOTSTRAP_VERSION } from '../../../cli/doctor-aws';
import { buildApp, readCdkJsonContext, resolveEnvironment } from '../../../lib/app-builder';
import { baseModelId, isInferenceProfileId, modelInvokeResources } from '../../../lib/bedrock-model';
import {
  ConfigError,
  DEFAULT_PLAN_MEMORY_MB,
  lambdaCpuShare,
  lambdaVcpus,
  NEW_ACCOUNT_CONCURRENT_EXECUTIONS,
  NEW_ACCOUNT_MAX_MEMORY_MB,
  parseEnvironmentConfig,
  runLambdaConcurrency,
} from '../../../lib/config';
import { FailureLane } from '../../../lib/failure-lane';
import { toRetentionDays, UnsupportedRetentionError } from '../../../lib/log-retention';
import { flattenForNag, wildcardResourceFindingId } from '../../../lib/nag';
import { PROJECT_ROOT } from '../../../lib/paths';
import { PipelineFunction } from '../../../lib/pipeline-function';
import {
  DefinitionPlaceholderError,
  listDefinitionPlaceholders,
  PipelineWorkflow,
} from '../../../lib/workflow';
import { CDK_CONTEXT, environmentSettings } from './synth-helpers';

const ENVIRONMENTS = CDK_CONTEXT.environments;

describe('environment selection and validation', () => {
  test('a missing env name is a ConfigError listing the known environments', () => {
    expect(() => resolveEnvironment(undefined, ENVIRONMENTS)).toThrow(ConfigError);
    expect(() => resolveEnvironment(undefined, ENVIRONMENTS)).toThrow(
      'Choose an environment with -c env=<name> (known environments: dev, local, prod)',
    );
  });

  test('an unknown env name is a ConfigError listing the known environments', () => {
    expect(() => resolveEnvironment('staging', ENVIRONMENTS)).toThrow(
      'Unknown environment "staging" (known environments: dev, local, prod)',
    );
    expect(() => resolveEnvironment('toString', ENVIRONMENTS)).toThrow(ConfigError);
    expect(() => resolveEnvironment('dev', undefined)).toThrow('cdk.json context defines none');
  });

  test('invalid settings name the offending field', () => {
    const environments = { dev: { ...environmentSettings('dev'), region: 'nowhere', logRetentionDays: -1 } };
    expect(() => resolveEnvironment('dev', environments)).toThrow(/region: region must look like us-east-1/);
    expect(() => resolveEnvironment('dev', environments)).toThrow(/logRetentionDays/);
  });

  test('buildApp refuses a bad environment before building anything', () => {
    expect(() => buildApp({ envName: 'nope', environments: ENVIRONMENTS, context: {} })).toThrow(ConfigError);
  });

  test('the account comes from the environment, else the default account, else stays environment-agnostic', () => {
    const envs = {
      pinned: { ...environmentSettings('dev'), account: '123456789012' },
      open: environmentSettings('dev'),
    };
    const base = { environments: envs, context: CDK_CONTEXT, skipBundling: true };
    expect(buildApp({ ...base, envName: 'pinned', defaultAccount: '999999999999' }).stack.account).toBe(
      '123456789012',
    );
    const fallback = buildApp({ ...base, envName: 'open', defaultAccount: '999999999999' }).stack;
    expect(fallback.account).toBe('999999999999');
    expect(fallback.stackName).toBe('CorpusPipeline-open');
    expect(fallback.region).toBe('us-east-1');
    expect(Token.isUnresolved(buildApp({ ...base, envName: 'open' }).stack.account)).toBe(true);
  });

  test('the bootstrap version the synthesized stack requires is the one corpus doctor checks for', () => {
    const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'corpus-infra-bootstrap-'));
    try {
      const { app, stack } = buildApp({
        envName: 'dev',
        environments: ENVIRONMENTS,
        skipBundling: true,
        outdir,
      });
      const assembly = app.synth();
      const artifact = assembly.getStackByName(stack.stackName);
      expect(artifact.requiresBootstrapStackVersion).toBe(CDK_REQUIRED_BOOTSTRAP_VERSION);
    } finally {
      fs.rmSync(outdir, { recursive: true, force: true });
    }
  });

  test('the cdk.json context carries the feature flags the template depends on', () => {
    const context = readCdkJsonContext();
    expect(context['@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2']).toBe(true);
    expect(Object.keys(context.environments as object).sort()).toEqual(['dev', 'local', 'prod']);
  });
});

describe('bin/app.ts', () => {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'corpus-infra-bin-'));
  afterAll(() => fs.rmSync(outdir, { recursive: true, force: true }));

  const runBin = (context: Record<string, unknown>) =>
    spawnSync(process.execPath, ['--import', 'tsx', path.join(PROJECT_ROOT, 'bin/app.ts')], {
      cwd: PROJECT_ROOT,
      env: { ...process.env, CDK_CONTEXT_JSON: JSON.stringify(context), CDK_OUTDIR: outdir },
      encoding: 'utf8',
      timeout: 60_000,
    });

  test('exits 1 with the known environments for an unknown -c env', () => {
    const result = runBin({ environments: ENVIRONMENTS, env: 'qa' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(
      'ConfigError: Unknown environment "qa" (known environments: dev, local, prod)',
    );
    expect(result.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
  });

  test('exits 1 asking for -c env when none is given', () => {
    const result = runBin({ environments: ENVIRONMENTS });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('Choose an environment with -c env=<name>');
  });
});

describe('helpers', () => {
  test('inference profile ids are told apart from foundation model ids', () => {
    expect(isInferenceProfileId('us.anthropic.claude-3-5-haiku-20241022-v1:0')).toBe(true);
    expect(isInferenceProfileId('global.anthropic.claude-sonnet-4-20250514-v1:0')).toBe(true);
    expect(isInferenceProfileId('apac.amazon.nova-lite-v1:0')).toBe(true);
    expect(isInferenceProfileId('anthropic.claude-haiku-4-5-20251001-v1:0')).toBe(false);
    expect(isInferenceProfileId('amazon.nova-lite-v1:0')).toBe(false);
    expect(baseModelId('eu.meta.llama3-2-3b-instruct-v1:0')).toBe('meta.llama3-2-3b-instruct-v1:0');
    expect(baseModelId('meta.llama3-2-3b-instruct-v1:0')).toBe('meta.llama3-2-3b-instruct-v1:0');
  });

  test('model ARNs: one foundation model, or profile + model here + model in every Region', () => {
    const stack = new Stack(new App(), 'S', { env: { region: 'eu-west-1', account: '111122223333' } });
    const flat = (arns: string[]) => arns.map((a) => flattenForNag(stack.resolve(a)));
    const plain = modelInvokeResources(stack, 'amazon.nova-lite-v1:0');
    expect(flat(plain.arns)).toEqual([
      'arn:<AWS::Partition>:bedrock:eu-west-1::foundation-model/amazon.nova-lite-v1:0',
    ]);
    expect(plain.wildcardArns).toEqual([]);
    const profile = modelInvokeResources(stack, 'eu.amazon.nova-lite-v1:0');
    expect(flat(profile.arns)).toEqual([
      'arn:<AWS::Partition>:bedrock:eu-west-1::foundation-model/amazon.nova-lite-v1:0',
      'arn:<AWS::Partition>:bedrock:eu-west-1:111122223333:inference-profile/eu.amazon.nova-lite-v1:0',
      'arn:<AWS::Partition>:bedrock:*::foundation-model/amazon.nova-lite-v1:0',
    ]);
    expect(flat(profile.wildcardArns)).toEqual([
      'arn:<AWS::Partition>:bedrock:*::foundation-model/amazon.nova-lite-v1:0',
    ]);
  });

  test('finding ids are flattened the way cdk-nag names them', () => {
    expect(flattenForNag({ 'Fn::Join': ['', [{ 'Fn::GetAtt': ['Bucket1', 'Arn'] }, '/runs/*']] })).toBe(
      '<Bucket1.Arn>/runs/*',
    );
    expect(flattenForNag({ 'Fn::Sub': 'arn:${AWS::Partition}:s3:::x' })).toBe('arn:<AWS::Partition>:s3:::x');
    expect(flattenForNag({ Ref: 'Queue' })).toBe('<Queue>');
    const stack = new Stack(new App(), 'S');
    const bucket = new s3.Bucket(stack, 'B');
    expect(wildcardResourceFindingId(stack, bucket.arnForObjects('runs/*'))).toMatch(
      /^AwsSolutions-IAM5\[Resource::<B[0-9A-F]{8}\.Arn>\/runs\/\*\]$/,
    );
  });

  test('log retention accepts only CloudWatch Logs periods', () => {
    expect(toRetentionDays(30)).toBe(30);
    expect(toRetentionDays(3653)).toBe(3653);
    expect(() => toRetentionDays(31)).toThrow(UnsupportedRetentionError);
    expect(() => toRetentionDays(31)).toThrow(/use one of 1, 3, 5, 7, 14, 30/);
  });

  test('Lambda vCPUs follow memory: one per 1,769 MB, at least one, at most six', () => {
    expect([512, 1024, 1769, 3008, 3538, 7076, 10240].map(lambdaVcpus)).toEqual([1, 1, 1, 2, 2, 4, 6]);
  });

  test('Lambda CPU time follows memory without rounding: 1.7 vCPUs at 3,008 MB, six at most', () => {
    expect(lambdaCpuShare(3008)).toBeCloseTo(1.7, 2);
    expect(lambdaCpuShare(1769)).toBe(1);
    expect(lambdaCpuShare(10_240)).toBeCloseTo(5.79, 2);
    expect(lambdaCpuShare(20_000)).toBe(6);
  });

  test('plan.memorySize defaults to what a new account accepts; 10,240 MB is the opt-in', () => {
    const dev = { region: 'us-east-1', modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0' };
    expect(DEFAULT_PLAN_MEMORY_MB).toBe(3008);
    expect(parseEnvironmentConfig('dev', dev).plan.memorySize).toBe(NEW_ACCOUNT_MAX_MEMORY_MB);
    expect(lambdaVcpus(DEFAULT_PLAN_MEMORY_MB)).toBe(2);
    expect(parseEnvironmentConfig('dev', { ...dev, plan: { memorySize: 10_240 } }).plan.memorySize).toBe(
      10_240,
    );
    expect(() => parseEnvironmentConfig('dev', { ...dev, plan: { memorySize: 20_000 } })).toThrow(
      /plan\.memorySize/,
    );
  });

  test("the default concurrency settings fit a new account's Lambda concurrency, with room for the rest", () => {
    const config = parseEnvironmentConfig('dev', {
      region: 'us-east-1',
      modelId: 'us.amazon.nova-lite-v1:0',
    });
    expect(config.converse.mapConcurrency).toBe(4);
    expect(config.batch.mapConcurrency).toBe(4);
    expect(config.plan.mapConcurrency).toBe(4);
    expect(config.failureLane.consumerConcurrency).toBe(2);
    expect(runLambdaConcurrency(config)).toBe(8);
    expect(runLambdaConcurrency(config)).toBeLessThanOrEqual(NEW_ACCOUNT_CONCURRENT_EXECUTIONS);
    const raised = parseEnvironmentConfig('dev', {
      region: 'us-east-1',
      modelId: 'us.amazon.nova-lite-v1:0',
      converse: { mapConcurrency: 40 },
      batch: { mapConcurrency: 10 },
      failureLane: { consumerConcurrency: 5 },
    });
    expect(runLambdaConcurrency(raised)).toBe(47);
    // Plan's segments count too: a wider Plan Map than the others is the widest.
    expect(runLambdaConcurrency({ ...raised, plan: { mapConcurrency: 60 } })).toBe(67);
  });

  test('a misspelt setting is refused at every level, named by its full path', () => {
    const dev = { region: 'us-east-1', modelId: 'us.amazon.nova-lite-v1:0' };
    const refused = (raw: Record<string, unknown>): string => {
      try {
        parseEnvironmentConfig('dev', { ...dev, ...raw });
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as Error).message;
      }
      throw new Error(`accepted ${JSON.stringify(raw)}`);
    };
    expect(refused({ converse: { mapConcurency: 4 } })).toContain('converse.mapConcurency: unknown setting');
    expect(refused({ regoin: 'us-east-1' })).toContain('regoin: unknown setting');
    expect(refused({ batch: { quotas: { maxConcurentJobs: 2 } } })).toContain(
      'batch.quotas.maxConcurentJobs: unknown setting',
    );
    expect(
      refused({ batch: { vpc: { subnetIds: ['subnet-1'], securityGroupIds: ['sg-1'], vpcId: 'x' } } }),
    ).toContain('batch.vpc.vpcId: unknown setting');
    expect(
      refused({ pricing: { m: { inputPerMillion: 1, outputPerMillion: 2, batchDiscunt: 0.5 } } }),
    ).toContain('pricing.m.batchDiscunt: unknown setting');
    for (const block of [
      'onDemand',
      'plan',
      'monitoring',
      'prompt',
      'kms',
      'ledger',
      'ingest',
      'failureLane',
      'resultsQueue',
    ]) {
      expect(refused({ [block]: { nope: 1 } })).toContain(`${block}.nope: unknown setting`);
    }
    // Two at once: each is named.
    const both = refused({ converse: { a: 1, b: 2 } });
    expect(both).toContain('converse.a: unknown setting');
    expect(both).toContain('converse.b: unknown setting');
  });

  test('placeholders are listed once each, sorted', () => {
    expect(listDefinitionPlaceholders('{"a":"${B}","b":"${A}","c":"${B}","d":"$.x","e":"{}"}')).toEqual([
      'A',
      'B',
    ]);
  });
});

describe('constructs on their own', () => {
  test('FailureLane: maxReceiveCount and visibility timeout follow its props', () => {
    const stack = new Stack(new App(), 'S');
    const lane = new FailureLane(stack, 'Lane', {
      maxReceiveCount: 9,
      consumerTimeout: Duration.seconds(100),
    });
    const template = Template.fromStack(stack);
    template.hasResourceProperties('AWS::SQS::Queue', {
      VisibilityTimeout: 600,
      RedrivePolicy: { maxReceiveCount: 9 },
      SqsManagedSseEnabled: true,
    });
    expect(lane.maxReceiveCount).toBe(9);
  });

  test('PipelineFunction: X-Ray SDK subsegments only when sdkTracing asks, active tracing always', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const stack = new Stack(app, 'S');
    new PipelineFunction(stack, 'Off', { entry: 'lambda/job-state.ts', serviceName: 'off' });
    new PipelineFunction(stack, 'On', { entry: 'lambda/job-state.ts', serviceName: 'on', sdkTracing: true });
    const template = Template.fromStack(stack);
    for (const [service, enabled] of [
      ['off', 'false'],
      ['on', 'true'],
    ]) {
      template.hasResourceProperties('AWS::Lambda::Function', {
        TracingConfig: { Mode: 'Active' },
        Environment: {
          Variables: Match.objectLike({
            POWERTOOLS_SERVICE_NAME: service,
            POWERTOOLS_TRACE_ENABLED: enabled,
          }),
        },
      });
    }
    expect(
      parseEnvironmentConfig('dev', { region: 'us-east-1', modelId: 'us.amazon.nova-lite-v1:0' }).sdkTracing,
    ).toBe(false);
  });

  test('PipelineWorkflow refuses a definition whose placeholders it cannot fill', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corpus-infra-asl-'));
    try {
      const definitionPath = path.join(dir, 'bad.asl.json');
      fs.writeFileSync(
        definitionPath,
        JSON.stringify({
          StartAt: 'A',
          States: { A: { Type: 'Pass', Result: '${UnknownThing}', End: true } },
        }),
      );
      const stack = new Stack(new App(), 'S');
      const make = () =>
        new PipelineWorkflow(stack, 'Workflow', {
          stateMachineName: 'X',
          planFunctionArn: 'arn:aws:lambda:us-east-1:111122223333:function:p',
          converseFunctionArn: 'arn:aws:lambda:us-east-1:111122223333:function:c',
          finalizeFunctionArn: 'arn:aws:lambda:us-east-1:111122223333:function:f',
          submitJobFunctionArn: 'arn:aws:lambda:us-east-1:111122223333:function:s',
          collectFunctionArn: 'arn:aws:lambda:us-east-1:111122223333:function:o',
          converseItemsFunctionArn: 'arn:aws:lambda:us-east-1:111122223333:function:i',
          outputBucket: new s3.Bucket(stack, 'Out'),
          definitionPath,
        });
      expect(make).toThrow(DefinitionPlaceholderError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
