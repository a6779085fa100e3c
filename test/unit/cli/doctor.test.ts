// `corpus doctor`: every check against mocked AWS clients (aws-sdk-client-mock) or stand-in machine probes, each on
// its passing and its failing path, then the command's output and exit codes.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  AccessDeniedException,
  BedrockClient,
  GetFoundationModelAvailabilityCommand,
  GetFoundationModelCommand,
  GetInferenceProfileCommand,
  GetUseCaseForModelAccessCommand,
  ResourceNotFoundException,
  type GetFoundationModelAvailabilityCommandOutput,
} from '@aws-sdk/client-bedrock';
import {
  CloudFormationClient,
  CloudFormationServiceException,
  DescribeStacksCommand,
} from '@aws-sdk/client-cloudformation';
import { GetAccountSettingsCommand, LambdaClient } from '@aws-sdk/client-lambda';
import {
  ListAWSDefaultServiceQuotasCommand,
  ListServiceQuotasCommand,
  ServiceQuotasClient,
} from '@aws-sdk/client-service-quotas';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import type { Backend } from '../../../cli/backend';
import {
  CDK_BOOTSTRAP_TEMPLATE_VERSION,
  CDK_REQUIRED_BOOTSTRAP_VERSION,
  checkLambdaLimits,
  runAwsDoctor,
  type DoctorAwsClients,
} from '../../../cli/doctor-aws';
import { checkNode, runLocalDoctor, type LocalProbes } from '../../../cli/doctor-local';
import { formatDoctorReport, reportOf, type CheckResult } from '../../../cli/doctor-report';
import { bedrockModelCheck, type CatalogLookup } from '../../../cli/model-check';
import { runCli } from '../../../cli/program';
import { batchQuotaNames } from '../../../lambda/batch/quotas';
import { ConfigError, type PipelineConfig } from '../../../lib/config';
import { PROJECT_ROOT } from '../../../lib/paths';
import { Capture, T0, testConfig as cliTestConfig } from './helpers';
import { useClientMocks } from '../../support/aws-mocks';

/**
 * An Anthropic model (the use-case form is asked of Anthropic models only) whose batch support the catalog leaves
 * unverified, so Service Quotas decides the batch check unless a test passes its own catalog lookup.
 */
const MODEL_ID = 'anthropic.claude-haiku-4-5-20251001-v1:0';
const testConfig = (overrides: Record<string, unknown> = {}): PipelineConfig =>
  cliTestConfig({ modelId: MODEL_ID, model: { batchQuotaModelName: 'Claude Haiku 4.5' }, ...overrides });

const [stsMock, cfnMock, bedrockMock, quotasMock, lambdaMock] = useClientMocks(
  STSClient,
  CloudFormationClient,
  BedrockClient,
  ServiceQuotasClient,
  LambdaClient,
);

const ACCOUNT = '123456789012';
const SONNET = 'anthropic.claude-sonnet-4-5-20250929-v1:0';
const NOVA = 'amazon.nova-lite-v1:0';

function clients(): DoctorAwsClients {
  return {
    sts: new STSClient({ region: 'us-east-1' }),
    cloudFormation: new CloudFormationClient({ region: 'us-east-1' }),
    bedrock: new BedrockClient({ region: 'us-east-1' }),
    serviceQuotas: new ServiceQuotasClient({ region: 'us-east-1' }),
    lambda: new LambdaClient({ region: 'us-east-1' }),
  };
}

const missingStack = (name: string) =>
  new CloudFormationServiceException({
    name: 'ValidationError',
    message: `Stack with id ${name} does not exist`,
    $fault: 'client',
    $metadata: {},
  });

const PIPELINE_OUTPUTS: Record<string, string> = {
  IngestBucketName: 'corpus-ingest',
  IngestPrefix: 'corpora/',
  OutputBucketName: 'corpus-output',
  StateMachineArn: `arn:aws:states:us-east-1:${ACCOUNT}:stateMachine:CorpusPipeline-dev`,
  FailureQueueUrl: `https://sqs.us-east-1.amazonaws.com/${ACCOUNT}/failures`,
  FailureDlqUrl: `https://sqs.us-east-1.amazonaws.com/${ACCOUNT}/failures-dlq`,
};

function stack(name: string, status: string, outputs: Record<string, string>) {
  return {
    Stacks: [
      {
        StackName: name,
        StackId: `arn:aws:cloudformation:us-east-1:${ACCOUNT}:stack/${name}/abc`,
        StackStatus: status,
        CreationTime: new Date(T0),
        Outputs: Object.entries(outputs).map(([OutputKey, OutputValue]) => ({ OutputKey, OutputValue })),
      },
    ],
  } as never;
}

/** Service Quotas holding the documented defaults of a model's batch quotas under its display name. */
function batchQuotas(displayName: string) {
  const values = {
    minRecordsPerJob: 100,
    maxRecordsPerJob: 50_000,
    maxRecordsPerFile: 50_000,
    maxBytesPerFile: 1,
    maxBytesPerJob: 5,
    maxConcurrentJobs: 20,
  } as const;
  return {
    Quotas: (Object.keys(values) as (keyof typeof values)[]).map((key, i) => ({
      QuotaName: batchQuotaNames(key, displayName)[0],
      QuotaCode: `L-${i}`,
      Value: values[key],
    })),
  };
}

const available: GetFoundationModelAvailabilityCommandOutput = {
  modelId: MODEL_ID,
  agreementAvailability: { status: 'AVAILABLE' },
  authorizationStatus: 'AUTHORIZED',
  entitlementAvailability: 'AVAILABLE',
  regionAvailability: 'AVAILABLE',
  $metadata: {},
};

/** A fresh account, bootstrapped, the model usable, the stack not deployed yet. */
function healthyAccount(): void {
  stsMock
    .on(GetCallerIdentityCommand)
    .resolves({ Account: ACCOUNT, Arn: `arn:aws:iam::${ACCOUNT}:user/dev` });
  cfnMock
    .on(DescribeStacksCommand, { StackName: 'CDKToolkit' })
    .resolves(
      stack('CDKToolkit', 'UPDATE_COMPLETE', { BootstrapVersion: String(CDK_BOOTSTRAP_TEMPLATE_VERSION) }),
    );
  cfnMock
    .on(DescribeStacksCommand, { StackName: 'CorpusPipeline-dev' })
    .rejects(missingStack('CorpusPipeline-dev'));
  bedrockMock.on(GetFoundationModelCommand).resolves({
    modelDetails: {
      modelArn: `arn:aws:bedrock:us-east-1::foundation-model/${MODEL_ID}`,
      modelId: MODEL_ID,
      modelName: 'Claude Haiku 4.5',
      providerName: 'Anthropic',
      modelLifecycle: { status: 'ACTIVE' },
    },
  });
  bedrockMock.on(GetFoundationModelAvailabilityCommand).resolves(available);
  bedrockMock.on(GetUseCaseForModelAccessCommand).resolves({ formData: new Uint8Array([123, 125]) });
  quotasMock.on(ListServiceQuotasCommand).resolves({ Quotas: [] });
  quotasMock.on(ListAWSDefaultServiceQuotasCommand).resolves(batchQuotas('Claude Haiku 4.5'));
  // What a new account reports.
  lambdaMock
    .on(GetAccountSettingsCommand)
    .resolves({ AccountLimit: { ConcurrentExecutions: 10, UnreservedConcurrentExecutions: 10 } });
}

beforeEach(() => {
  healthyAccount();
});

async function doctor(
  config: PipelineConfig = testConfig(),
  catalog?: CatalogLookup,
): Promise<Record<string, CheckResult>> {
  const checks = await runAwsDoctor(config, {
    clients: clients(),
    now: () => T0,
    ...(catalog ? { catalog } : {}),
  });
  return Object.fromEntries(checks.map((c) => [c.id, c]));
}

const text = (check: CheckResult | undefined): string =>
  [check?.summary, ...(check?.details ?? []), ...(check?.fix ?? [])].join('\n');

describe('corpus doctor --env: a new account, before the first deploy', () => {
  it('passes every check it can and warns only that the stack is not deployed yet', async () => {
    const checks = await doctor();
    expect(Object.fromEntries(Object.entries(checks).map(([id, c]) => [id, c.status]))).toEqual({
      credentials: 'pass',
      bootstrap: 'pass',
      model: 'pass',
      batch: 'pass',
      lambda: 'pass',
      stack: 'warn',
    });
    expect(checks.credentials?.summary).toBe(`account ${ACCOUNT}, Region us-east-1`);
    expect(checks.model?.summary).toBe(`${MODEL_ID} in us-east-1: Active, access granted`);
    expect(text(checks.model)).toMatch(/Anthropic use case details submitted/);
    expect(text(checks.batch)).toMatch(/Service Quotas lists the batch quotas of Claude Haiku 4.5/);
    expect(text(checks.batch)).toMatch(
      /shards in flight: 4 \(batch\.mapConcurrency 4, the model's concurrent-jobs quota 20\)/,
    );
    expect(text(checks.lambda)).toMatch(/concurrency 10 fits a run's 8; every function within 3,008 MB/);
    expect(checks.stack?.fix).toEqual(['deploy it: npx cdk deploy -c env=dev']);
  });
});

describe('credentials and Region', () => {
  it('fails without credentials, with how to configure them, and skips what needs them', async () => {
    stsMock.on(GetCallerIdentityCommand).rejects(
      Object.assign(new Error('Could not load credentials from any providers'), {
        name: 'CredentialsProviderError',
      }),
    );
    const checks = await doctor();
    expect(checks.credentials?.status).toBe('fail');
    expect(checks.credentials?.summary).toMatch(
      /no usable AWS credentials \(CredentialsProviderError: Could not load credentials/,
    );
    expect(text(checks.credentials)).toMatch(/aws sso login --profile P/);
    for (const id of ['bootstrap', 'model', 'batch', 'lambda', 'stack'])
      expect(checks[id]?.status).toBe('skip');
    expect(cfnMock.calls()).toHaveLength(0);
    expect(bedrockMock.calls()).toHaveLength(0);
  });

  it('fails when the credentials are for another account than the environment names', async () => {
    const checks = await doctor(testConfig({ account: '999999999999' }));
    expect(checks.credentials?.status).toBe('fail');
    expect(checks.credentials?.summary).toBe(
      `the credentials are for account ${ACCOUNT}; environment dev deploys to 999999999999`,
    );
  });
});

describe('CDK bootstrap', () => {
  it('fails when the account and Region are not bootstrapped, naming the command', async () => {
    cfnMock.on(DescribeStacksCommand, { StackName: 'CDKToolkit' }).rejects(missingStack('CDKToolkit'));
    const { bootstrap } = await doctor();
    expect(bootstrap?.status).toBe('fail');
    expect(bootstrap?.fix).toEqual([`npx cdk bootstrap aws://${ACCOUNT}/us-east-1`]);
  });

  it('fails below the version the app needs, warns below the current template, fails a rolled-back toolkit', async () => {
    const at = async (version: string, status = 'UPDATE_COMPLETE') => {
      cfnMock
        .on(DescribeStacksCommand, { StackName: 'CDKToolkit' })
        .resolves(stack('CDKToolkit', status, { BootstrapVersion: version }));
      return (await doctor()).bootstrap;
    };
    expect((await at(String(CDK_REQUIRED_BOOTSTRAP_VERSION - 1)))?.status).toBe('fail');
    expect((await at(String(CDK_REQUIRED_BOOTSTRAP_VERSION)))?.status).toBe('warn');
    expect((await at('20', 'ROLLBACK_COMPLETE'))?.summary).toBe('stack CDKToolkit is ROLLBACK_COMPLETE');
    expect((await at('20', 'ROLLBACK_COMPLETE'))?.status).toBe('fail');
    expect((await at('20', 'UPDATE_IN_PROGRESS'))?.status).toBe('warn');
    // A failed upgrade rolled back to the version before, which serves.
    expect((await at(String(CDK_BOOTSTRAP_TEMPLATE_VERSION), 'UPDATE_ROLLBACK_COMPLETE'))?.status).toBe(
      'pass',
    );
  });
});

describe('the model', () => {
  it("fails when Anthropic's first-time use form was not submitted, with the console and the CLI way", async () => {
    bedrockMock.on(GetUseCaseForModelAccessCommand).rejects(
      new ResourceNotFoundException({
        message: 'You have not filled out the request form.',
        $metadata: {},
      }),
    );
    const { model } = await doctor();
    expect(model?.status).toBe('fail');
    expect(model?.summary).toMatch(/Anthropic's first-time use form has not been submitted/);
    expect(text(model)).toMatch(/aws bedrock put-use-case-for-model-access/);
    expect(text(model)).toMatch(/Model catalog/);
  });

  it('fails without a Marketplace agreement, naming the permissions the subscribing identity needs', async () => {
    bedrockMock.on(GetFoundationModelAvailabilityCommand).resolves({
      ...available,
      agreementAvailability: { status: 'NOT_AVAILABLE' },
      entitlementAvailability: 'NOT_AVAILABLE',
    });
    const { model } = await doctor();
    expect(model?.status).toBe('fail');
    expect(text(model)).toMatch(/aws-marketplace:Subscribe/);
    expect(text(model)).toMatch(/aws-marketplace:ViewSubscriptions/);
    expect(text(model)).toMatch(/valid payment method/);
    // The Anthropic form is only asked about once the agreement is there.
    expect(bedrockMock.commandCalls(GetUseCaseForModelAccessCommand)).toHaveLength(0);
  });

  it('warns while the subscription is pending; fails when not authorized or not offered in the Region', async () => {
    const access = async (out: Partial<GetFoundationModelAvailabilityCommandOutput>) => {
      bedrockMock.on(GetFoundationModelAvailabilityCommand).resolves({ ...available, ...out });
      return (await doctor()).model;
    };
    expect((await access({ agreementAvailability: { status: 'PENDING' } }))?.status).toBe('warn');
    const denied = await access({ authorizationStatus: 'NOT_AUTHORIZED' });
    expect(denied?.status).toBe('fail');
    expect(text(denied)).toMatch(/service control policy/);
    const elsewhere = await access({ regionAvailability: 'NOT_AVAILABLE' });
    expect(elsewhere?.status).toBe('fail');
    expect(text(elsewhere)).toMatch(/cross-Region inference profile/);
  });

  it('warns on a Legacy model with its end of life, and fails once that date has passed', async () => {
    const legacy = (endOfLife: Date) =>
      bedrockMock.on(GetFoundationModelCommand).resolves({
        modelDetails: {
          modelArn: 'arn',
          modelId: MODEL_ID,
          providerName: 'Anthropic',
          modelLifecycle: {
            status: 'LEGACY',
            legacyTime: new Date('2029-06-01T00:00:00Z'),
            endOfLifeTime: endOfLife,
          },
        },
      });
    legacy(new Date(T0 + 86_400_000 * 90));
    const warned = (await doctor()).model;
    expect(warned?.status).toBe('warn');
    expect(warned?.summary).toBe(
      `${MODEL_ID} in us-east-1: Legacy since 2029-06-01, end of life on 2030-04-01; access granted`,
    );
    legacy(new Date(T0 - 1));
    expect((await doctor()).model?.status).toBe('fail');
  });

  it('fails when Bedrock does not offer the model in the Region', async () => {
    bedrockMock
      .on(GetFoundationModelCommand)
      .rejects(
        new ResourceNotFoundException({ message: 'Could not resolve the foundation model', $metadata: {} }),
      );
    const { model } = await doctor();
    expect(model?.status).toBe('fail');
    expect(model?.summary).toBe(`${MODEL_ID} in us-east-1: Bedrock does not offer it here`);
    expect(bedrockMock.commandCalls(GetFoundationModelAvailabilityCommand)).toHaveLength(0);
  });

  it('warns, naming the read-only actions, when the checking identity may not ask', async () => {
    bedrockMock.on(GetFoundationModelAvailabilityCommand).rejects(
      new AccessDeniedException({
        message: 'not authorized to perform bedrock:GetFoundationModelAvailability',
        $metadata: {},
      }),
    );
    const { model } = await doctor();
    expect(model?.status).toBe('warn');
    expect(text(model)).toMatch(/bedrock:GetFoundationModelAvailability/);
    expect(text(model)).toMatch(/aws bedrock get-foundation-model-availability --model-id/);
  });

  it('checks an inference profile, then the foundation model behind it', async () => {
    bedrockMock.on(GetInferenceProfileCommand).resolves({
      inferenceProfileId: `us.${SONNET}`,
      inferenceProfileName: 'US Claude Sonnet 4',
      inferenceProfileArn: 'arn',
      status: 'ACTIVE',
      type: 'SYSTEM_DEFINED',
      models: [
        { modelArn: `arn:aws:bedrock:us-east-1::foundation-model/${SONNET}` },
        { modelArn: `arn:aws:bedrock:us-west-2::foundation-model/${SONNET}` },
      ],
    });
    const facts = await bedrockModelCheck(new BedrockClient({ region: 'us-east-1' })).check(`us.${SONNET}`);
    expect(facts.foundationModelId).toBe(SONNET);
    expect(facts.profile).toEqual({ status: 'ACTIVE', regions: ['us-east-1', 'us-west-2'] });
    expect(bedrockMock.commandCalls(GetFoundationModelCommand)[0]?.args[0].input).toEqual({
      modelIdentifier: SONNET,
    });
    bedrockMock
      .on(GetInferenceProfileCommand)
      .rejects(new ResourceNotFoundException({ message: 'The profile does not exist', $metadata: {} }));
    const { model } = await doctor(testConfig({ region: 'eu-west-1', modelId: `eu.${SONNET}` }));
    expect(model?.status).toBe('fail');
  });

  it('asks no use case question of other providers', async () => {
    bedrockMock.on(GetFoundationModelCommand).resolves({
      modelDetails: {
        modelArn: 'arn',
        modelId: NOVA,
        providerName: 'Amazon',
        modelLifecycle: { status: 'ACTIVE' },
      },
    });
    bedrockMock.on(GetUseCaseForModelAccessCommand).rejects(new Error('must not be asked'));
    const { model } = await doctor(testConfig({ modelId: NOVA }));
    expect(model?.status).toBe('pass');
    expect(bedrockMock.commandCalls(GetUseCaseForModelAccessCommand)).toHaveLength(0);
  });
});

describe('batch inference', () => {
  it('warns when Service Quotas lists no batch quotas for the model', async () => {
    quotasMock.on(ListAWSDefaultServiceQuotasCommand).resolves({ Quotas: [] });
    const { batch } = await doctor();
    expect(batch?.status).toBe('warn');
    expect(batch?.summary).toBe(
      'Service Quotas lists no batch quotas for Claude Haiku 4.5: the model may take no batch jobs in us-east-1',
    );
    expect(text(batch)).toMatch(/mode converse/);
  });

  it("passes on the catalog's word when quotas are not named, and warns when the catalog says no batch", async () => {
    quotasMock.on(ListAWSDefaultServiceQuotasCommand).resolves({ Quotas: [] });
    expect((await doctor(testConfig(), () => ({ batchInference: true }))).batch?.status).toBe('pass');
    const none = (
      await doctor(testConfig(), (id) => (id === MODEL_ID ? { batchInference: false } : undefined))
    ).batch;
    expect(none?.status).toBe('warn');
    expect(none?.summary).toBe(`${MODEL_ID} takes no batch inference jobs (catalog)`);
  });

  it('warns when Service Quotas cannot be read, naming the permissions', async () => {
    const denied = Object.assign(new Error('not authorized'), { name: 'AccessDeniedException' });
    quotasMock.on(ListServiceQuotasCommand).rejects(denied);
    quotasMock.on(ListAWSDefaultServiceQuotasCommand).rejects(denied);
    const { batch } = await doctor();
    expect(batch?.status).toBe('warn');
    expect(text(batch)).toMatch(
      /servicequotas:ListServiceQuotas and servicequotas:ListAWSDefaultServiceQuotas/,
    );
  });
});

describe('Lambda limits', () => {
  it("fails when a run's fan-out exceeds the account's concurrency, with how to lower it or raise the quota", async () => {
    const { lambda } = await doctor(testConfig({ converse: { mapConcurrency: 40 } }));
    expect(lambda?.status).toBe('fail');
    expect(lambda?.summary).toMatch(/^a run needs up to 44 concurrent invocations, the account allows 10/);
    expect(text(lambda)).toMatch(/--quota-code L-B99A9384/);
    expect(text(lambda)).toMatch(/lower converse\.mapConcurrency and batch\.mapConcurrency/);
  });

  it('fails a memory above 3,008 MB on an account with new-account quotas, warns on an established one', async () => {
    const large = testConfig({ plan: { memorySize: 10_240 } });
    const held = (await doctor(large)).lambda;
    expect(held?.status).toBe('fail');
    expect(text(held)).toMatch(/Member must have value less than or equal to 3008/);
    expect(text(held)).toMatch(/set plan\.memorySize to 3008 or less/);
    lambdaMock
      .on(GetAccountSettingsCommand)
      .resolves({ AccountLimit: { ConcurrentExecutions: 1000, UnreservedConcurrentExecutions: 900 } });
    const established = (await doctor(large)).lambda;
    expect(established?.status).toBe('warn');
    expect(established?.summary).toMatch(/cannot be checked before a deploy/);
  });

  it('skips, naming the permission, when the account settings cannot be read', async () => {
    lambdaMock
      .on(GetAccountSettingsCommand)
      .rejects(Object.assign(new Error('denied'), { name: 'AccessDeniedException' }));
    const result = await checkLambdaLimits(new LambdaClient({ region: 'us-east-1' }), testConfig());
    expect(result.status).toBe('skip');
    expect(result.fix).toEqual(['the checking identity needs lambda:GetAccountSettings']);
  });
});

describe('the stack, once deployed', () => {
  const deployed = (status: string, outputs = PIPELINE_OUTPUTS) =>
    cfnMock
      .on(DescribeStacksCommand, { StackName: 'CorpusPipeline-dev' })
      .resolves(stack('CorpusPipeline-dev', status, outputs));

  it('passes with its outputs', async () => {
    deployed('UPDATE_COMPLETE');
    const result = (await doctor()).stack;
    expect(result?.status).toBe('pass');
    expect(result?.summary).toBe('CorpusPipeline-dev is UPDATE_COMPLETE');
    expect(result?.details).toContain('IngestBucketName = corpus-ingest');
  });

  it('fails a stack whose creation rolled back, with the events command and delete-then-deploy', async () => {
    deployed('ROLLBACK_COMPLETE');
    const result = (await doctor()).stack;
    expect(result?.status).toBe('fail');
    expect(text(result)).toMatch(/aws cloudformation describe-stack-events --stack-name CorpusPipeline-dev/);
    expect(text(result)).toMatch(/aws cloudformation delete-stack --stack-name CorpusPipeline-dev/);
  });

  it('warns while in progress or after a rolled-back update; fails when outputs are missing', async () => {
    deployed('UPDATE_IN_PROGRESS');
    expect((await doctor()).stack?.status).toBe('warn');
    deployed('UPDATE_ROLLBACK_COMPLETE');
    expect((await doctor()).stack?.status).toBe('warn');
    deployed('CREATE_COMPLETE', { IngestBucketName: 'x' });
    const missing = (await doctor()).stack;
    expect(missing?.status).toBe('fail');
    expect(missing?.summary).toMatch(/lacks the output\(s\) IngestPrefix/);
  });
});

describe('corpus doctor --local', () => {
  const probes = (over: Partial<LocalProbes> = {}): Partial<LocalProbes> => ({
    nodeVersion: '22.12.0',
    listen: () => Promise.resolve(),
    prepareStateDir: () => Promise.resolve(),
    stateDirHolder: () => Promise.resolve(undefined),
    loadPackage: () => '1.0.0',
    levelDb: () => ({ ok: true }),
    fauxqsDist: () => '/x/fauxqs/dist',
    ...over,
  });
  const local = async (over: Partial<LocalProbes> = {}, load?: () => Promise<unknown>) =>
    Object.fromEntries(
      (
        await runLocalDoctor({
          stateDir: '.corpus-local',
          probes: probes(over),
          ...(load ? { loadLocalConfig: load } : {}),
        })
      ).map((c) => [c.id, c]),
    );

  it('Node.js: 20.19 and later pass (20 with the reason npm warns), older fails', () => {
    expect(checkNode('22.12.0')).toMatchObject({ status: 'pass', summary: 'Node.js 22.12.0' });
    const twenty = checkNode('20.19.0');
    expect(twenty.status).toBe('pass');
    expect(text(twenty)).toMatch(/EBADENGINE/);
    expect(text(twenty)).toMatch(/promise-polyfill\.ts/);
    expect(checkNode('20.18.3').status).toBe('fail');
    expect(checkNode('18.20.0').fix?.[0]).toMatch(/install Node\.js 22/);
  });

  it('passes on a machine that can run it, and fails each probe that cannot', async () => {
    const all = await local({}, () => Promise.resolve());
    expect(Object.values(all).map((c) => `${c.id}:${c.status}`)).toEqual([
      'node:pass',
      'settings:pass',
      'ports:pass',
      'state-dir:pass',
      'emulators:pass',
    ]);
    expect(
      (await local({ listen: () => Promise.reject(new Error('listen EPERM 127.0.0.1')) })).ports?.status,
    ).toBe('fail');
    expect(
      (await local({ prepareStateDir: () => Promise.reject(new Error('EACCES')) }))['state-dir']?.status,
    ).toBe('fail');
    expect((await local({ stateDirHolder: () => Promise.resolve(4242) }))['state-dir']?.summary).toMatch(
      /in use by process 4242/,
    );
    const noS3 = await local({
      loadPackage: (name) => {
        if (name === 's3rver') throw new Error("Cannot find module 's3rver'");
        return '1.0.0';
      },
    });
    expect(noS3.emulators?.status).toBe('fail');
    expect(noS3.emulators?.fix).toEqual(['install the dependencies as locked: npm ci']);
    const memory = await local({ levelDb: () => ({ ok: false, reason: 'No native build was found' }) });
    expect(memory.emulators?.status).toBe('warn');
    expect(text(memory.emulators)).toMatch(/DynamoDB runs in memory/);
    const badSettings = await local({}, () =>
      Promise.reject(
        new ConfigError('Invalid settings for environment "local":\n  - converse.x: unknown setting'),
      ),
    );
    expect(badSettings.settings?.status).toBe('fail');
    expect(badSettings.settings?.details).toContain('  - converse.x: unknown setting');
  });

  it('really probes this machine by default: its Node.js, loopback ports, a temporary state directory', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'doctor-local-'));
    try {
      const checks = await runLocalDoctor({ stateDir: dir });
      expect(checks.find((c) => c.id === 'node')?.summary).toBe(`Node.js ${process.versions.node}`);
      expect(checks.find((c) => c.id === 'ports')?.status).toBe('pass');
      expect(checks.find((c) => c.id === 'state-dir')?.status).toBe('pass');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the command', () => {
  const noBackend = (): Promise<Backend> => Promise.reject(new Error('corpus doctor opens no backend'));
  async function cli(
    args: string[],
    options: { load?: (env: string) => Promise<PipelineConfig>; local?: Partial<LocalProbes> } = {},
  ) {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await runCli(args, {
      openBackend: noBackend,
      stdout,
      stderr,
      now: () => T0,
      loadEnvironment: options.load ?? (() => Promise.resolve(testConfig())),
      doctor: { aws: { clients: clients() }, ...(options.local ? { local: options.local } : {}) },
    });
    return { code, stdout: stdout.text(), stderr: stderr.text() };
  }

  it('prints a line per check with the fix, and exits 0 when only warnings remain', async () => {
    const res = await cli(['doctor', '--env', 'dev']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^corpus doctor: environment dev \(us-east-1\)$/m);
    expect(res.stdout).toMatch(/^ {2}PASS {2}Settings {16}cdk\.json environments\.dev is valid$/m);
    expect(res.stdout).toMatch(/^ {2}PASS {2}CDK bootstrap /m);
    expect(res.stdout).toMatch(/^ {2}WARN {2}Stack {19}CorpusPipeline-dev is not deployed yet$/m);
    expect(res.stdout).toMatch(/fix: deploy it: npx cdk deploy -c env=dev/);
    expect(res.stdout).toMatch(/6 passed, 1 warning: nothing blocks\.$/m);
  });

  it('exits 1 when a check fails, and says so', async () => {
    cfnMock.on(DescribeStacksCommand, { StackName: 'CDKToolkit' }).rejects(missingStack('CDKToolkit'));
    const res = await cli(['doctor', '--env', 'dev']);
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/^ {2}FAIL {2}CDK bootstrap /m);
    expect(res.stdout).toMatch(/fix: npx cdk bootstrap aws:\/\/123456789012\/us-east-1/);
    expect(res.stdout).toMatch(/1 failed: something blocks \(exit code 1\)/);
  });

  it('--json prints the report for scripts', async () => {
    const res = await cli(['doctor', '--env', 'dev', '--json']);
    const report = JSON.parse(res.stdout) as { target: string; blocking: boolean; checks: CheckResult[] };
    expect(report.blocking).toBe(false);
    expect(report.checks.map((c) => c.id)).toEqual([
      'settings',
      'credentials',
      'bootstrap',
      'model',
      'batch',
      'lambda',
      'stack',
    ]);
  });

  it('exits 1 on settings cdk.json refuses, before calling AWS', async () => {
    const res = await cli(['doctor', '--env', 'dev'], {
      load: () =>
        Promise.reject(
          new ConfigError(
            'Invalid settings for environment "dev":\n  - converse.mapConcurency: unknown setting',
          ),
        ),
    });
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/FAIL {2}Settings/);
    expect(res.stdout).toMatch(/converse\.mapConcurency: unknown setting/);
    expect(stsMock.calls()).toHaveLength(0);
  });

  it('exits 2 without a target or with both', async () => {
    expect((await cli(['doctor'])).code).toBe(2);
    const both = await cli(['doctor', '--env', 'dev', '--local']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/choose one of --env <name> and --local/);
  });

  it('--local exits 0 on a ready machine and 1 when a probe fails', async () => {
    const ready = {
      nodeVersion: '22.12.0',
      listen: () => Promise.resolve(),
      prepareStateDir: () => Promise.resolve(),
      stateDirHolder: () => Promise.resolve(undefined),
      loadPackage: () => '1.0.0',
      levelDb: () => ({ ok: true }) as const,
      fauxqsDist: () => '/x',
    };
    const ok = await cli(['doctor', '--local', '--state-dir', '/tmp/somewhere'], { local: ready });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^corpus doctor: the local runtime \(state directory \/tmp\/somewhere\)$/m);
    expect(ok.stdout).toMatch(/PASS {2}Local settings/);
    const old = await cli(['doctor', '--local'], { local: { ...ready, nodeVersion: '18.19.0' } });
    expect(old.code).toBe(1);
    expect(old.stdout).toMatch(/FAIL {2}Node\.js +Node\.js 18\.19\.0 is older than 20\.19/);
  });

  it('--help says what it checks and its exit codes', async () => {
    const res = await cli(['doctor', '--help']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/--env <name>/);
    expect(res.stdout).toMatch(/--local/);
    expect(res.stdout).toMatch(/Exit code 1 when a check failed/);
  });
});

describe('the report', () => {
  it('counts and names the verdict', () => {
    const report = reportOf('x', [
      { id: 'a', title: 'A', status: 'pass', summary: 'fine' },
      { id: 'b', title: 'B', status: 'skip', summary: 'not asked' },
    ]);
    expect(report.blocking).toBe(false);
    expect(formatDoctorReport(report)).toMatch(/1 passed, 1 skipped: nothing blocks\.$/);
  });
});

describe('the versions the doctor holds the bootstrap to', () => {
  it("match the bootstrap template of this project's CDK CLI", () => {
    const template = fs.readFileSync(
      path.join(PROJECT_ROOT, 'node_modules/aws-cdk/lib/api/bootstrap/bootstrap-template.yaml'),
      'utf8',
    );
    const version = /\n {2}BootstrapVersion:[\s\S]*?\n {4}Value: '(\d+)'/.exec(template)?.[1];
    expect(Number(version)).toBe(CDK_BOOTSTRAP_TEMPLATE_VERSION);
  });
});
