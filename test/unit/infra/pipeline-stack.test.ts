import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CfnElement } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { JOBS_TABLE_KEYS } from '../../../lambda/shared/batch-jobs';
import { flattenForNag } from '../../../lib/nag';
import { PROJECT_ROOT } from '../../../lib/paths';
import { MAP_RUNS_PREFIX } from '../../../lib/storage';
import { DEFAULT_DEFINITION_PATH, listDefinitionPlaceholders } from '../../../lib/workflow';
import {
  asList,
  asRecord,
  type CfnTemplate,
  resourcesOfType,
  environmentSettings,
  synthEnvironment,
  type Synthesized,
  unacknowledgedFindings,
} from './synth-helpers';
import { NEW_ACCOUNT_MAX_MEMORY_MB, parseEnvironmentConfig } from '../../../lib/config';

// Resource "*" is allowed only for these actions, which the services authorise on no narrower resource.
const WILDCARD_RESOURCE_EXCEPTIONS: Record<string, string> = {
  'xray:PutTraceSegments': 'X-Ray: no resource-level permissions',
  'xray:PutTelemetryRecords': 'X-Ray: no resource-level permissions',
  'xray:GetSamplingRules': 'X-Ray: no resource-level permissions',
  'xray:GetSamplingTargets': 'X-Ray: no resource-level permissions',
  'logs:CreateLogDelivery': 'CloudWatch Logs vended log delivery (Step Functions logging): "*" only',
  'logs:GetLogDelivery': 'CloudWatch Logs vended log delivery: "*" only',
  'logs:UpdateLogDelivery': 'CloudWatch Logs vended log delivery: "*" only',
  'logs:DeleteLogDelivery': 'CloudWatch Logs vended log delivery: "*" only',
  'logs:ListLogDeliveries': 'CloudWatch Logs vended log delivery: "*" only',
  'logs:PutResourcePolicy': 'CloudWatch Logs vended log delivery: "*" only',
  'logs:DescribeResourcePolicies': 'CloudWatch Logs vended log delivery: "*" only',
  'logs:DescribeLogGroups': 'CloudWatch Logs vended log delivery: "*" only',
  'servicequotas:ListServiceQuotas': 'Service Quotas list actions: no resource-level permissions',
  'servicequotas:ListAWSDefaultServiceQuotas': 'Service Quotas list actions: no resource-level permissions',
  'bedrock:ListModelInvocationJobs': 'Bedrock list of batch jobs: no resource-level permissions',
  'bedrock:GetFoundationModelAvailability': 'Bedrock model access check: no resource-level permissions',
};

const XRAY = ['xray:PutTelemetryRecords', 'xray:PutTraceSegments'];
const S3_WRITE = ['s3:AbortMultipartUpload', 's3:ListMultipartUploadParts', 's3:PutObject'];
const IDEMPOTENCY = ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'];
const LEDGER_RECORD = ['dynamodb:BatchGetItem', 'dynamodb:GetItem', 'dynamodb:UpdateItem'];
const RUN_STATE = ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:UpdateItem'];

interface Statement {
  readonly Effect: string;
  readonly Action: unknown;
  readonly Resource?: unknown;
  readonly NotAction?: unknown;
  readonly NotResource?: unknown;
}

/** Every identity-policy statement of the template, with where it came from. */
function identityStatements(json: CfnTemplate): { source: string; statement: Statement }[] {
  const out: { source: string; statement: Statement }[] = [];
  for (const [id, resource] of Object.entries(json.Resources)) {
    const props = resource.Properties ?? {};
    const documents: unknown[] = [];
    if (resource.Type === 'AWS::IAM::Policy' || resource.Type === 'AWS::IAM::ManagedPolicy') {
      documents.push(props.PolicyDocument);
    }
    if (resource.Type === 'AWS::IAM::Role' && Array.isArray(props.Policies)) {
      documents.push(...props.Policies.map((p) => asRecord(p, `${id} policy`).PolicyDocument));
    }
    for (const document of documents) {
      for (const statement of asList(asRecord(document, `${id} document`).Statement)) {
        out.push({ source: id, statement: statement as Statement });
      }
    }
  }
  return out;
}

/** A role's permissions as `flattened resource -> sorted actions`, merged over all its policies. */
function permissionsOf(s: Synthesized, role: IConstruct): Record<string, string[]> {
  const roleId = s.stack.getLogicalId(role.node.defaultChild as CfnElement);
  const perms: Record<string, Set<string>> = {};
  for (const [, policy] of resourcesOfType(s.json, 'AWS::IAM::Policy')) {
    const props = policy.Properties ?? {};
    const attached = asList(props.Roles).some((r) => asRecord(r, 'role ref').Ref === roleId);
    if (!attached) {
      continue;
    }
    for (const statement of asList(asRecord(props.PolicyDocument, 'document').Statement) as Statement[]) {
      expect(statement.Effect).toBe('Allow');
      for (const resource of asList(statement.Resource)) {
        const key = flattenForNag(resource);
        perms[key] ??= new Set();
        for (const action of asList(statement.Action)) {
          perms[key].add(action as string);
        }
      }
    }
  }
  return Object.fromEntries(Object.entries(perms).map(([k, v]) => [k, [...v].sort()]));
}

/** A role's policy statements with their conditions, resources flattened the way cdk-nag names them. */
function statementsOf(
  s: Synthesized,
  role: IConstruct,
): { actions: string[]; resources: string[]; condition?: unknown }[] {
  const roleId = s.stack.getLogicalId(role.node.defaultChild as CfnElement);
  const out: { actions: string[]; resources: string[]; condition?: unknown }[] = [];
  for (const [, policy] of resourcesOfType(s.json, 'AWS::IAM::Policy')) {
    const props = policy.Properties ?? {};
    if (!asList(props.Roles).some((r) => asRecord(r, 'role ref').Ref === roleId)) continue;
    for (const statement of asList(asRecord(props.PolicyDocument, 'document').Statement) as (Statement & {
      Condition?: unknown;
    })[]) {
      out.push({
        actions: (asList(statement.Action) as string[]).slice().sort(),
        resources: asList(statement.Resource).map(flattenForNag),
        ...(statement.Condition === undefined ? {} : { condition: flattenConditions(statement.Condition) }),
      });
    }
  }
  return out;
}

/** A statement's Condition block with every value flattened (`<AWS::AccountId>`), for comparisons. */
function flattenConditions(condition: unknown): unknown {
  return Object.fromEntries(
    Object.entries(asRecord(condition, 'condition')).map(([operator, keys]) => [
      operator,
      Object.fromEntries(
        Object.entries(asRecord(keys, operator)).map(([key, value]) => [
          key,
          Array.isArray(value) ? value.map(flattenForNag) : flattenForNag(value),
        ]),
      ),
    ]),
  );
}

/** `<LogicalId.Arn>`-style name of a token, as in permissionsOf keys. */
function ref(s: Synthesized, token: string): string {
  return flattenForNag(s.stack.resolve(token));
}

interface AslState {
  readonly Type: string;
  readonly Retry?: unknown[];
  readonly ItemProcessor?: { readonly States: Record<string, AslState>; readonly ProcessorConfig?: unknown };
  readonly Iterator?: { readonly States: Record<string, AslState> };
  readonly Branches?: { readonly States: Record<string, AslState> }[];
  readonly [key: string]: unknown;
}

/** Every state of a definition at any depth (Map processors, Parallel branches), with its path. */
function allStates(states: Record<string, AslState>, prefix = ''): [string, AslState][] {
  return Object.entries(states).flatMap(([name, state]) => {
    const here = `${prefix}${name}`;
    const nested = [
      ...(state.ItemProcessor ? [state.ItemProcessor.States] : []),
      ...(state.Iterator ? [state.Iterator.States] : []),
      ...(state.Branches ?? []).map((b) => b.States),
    ];
    return [[here, state] as [string, AslState], ...nested.flatMap((s) => allStates(s, `${here}/`))];
  });
}

/** The MemorySize of every pipeline function (CDK's own deploy-time handlers left out), by entry file. */
function functionMemory(s: Synthesized): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [, fn] of resourcesOfType(s.json, 'AWS::Lambda::Function')) {
    const entry = fn.Metadata?.['corpus:entry'];
    if (typeof entry === 'string') out[entry] = Number(fn.Properties?.MemorySize);
  }
  return out;
}

function definitionOf(s: Synthesized): { States: Record<string, AslState> } {
  const [, machine] = resourcesOfType(s.json, 'AWS::StepFunctions::StateMachine')[0] ?? [];
  const definition = machine?.Properties?.DefinitionString;
  if (typeof definition !== 'string') {
    throw new Error('DefinitionString is not a plain string');
  }
  return JSON.parse(definition) as { States: Record<string, AslState> };
}

describe('PipelineStack (dev: service-managed encryption)', () => {
  let s: Synthesized;
  beforeAll(() => {
    s = synthEnvironment('dev');
  });
  afterAll(() => s?.cleanup());

  test('cdk-nag AwsSolutions reports no unacknowledged finding', () => {
    expect(unacknowledgedFindings(s.report)).toEqual([]);
  });

  test('no identity policy allows Resource "*" beyond the documented exceptions, nor service-wide actions', () => {
    const statements = identityStatements(s.json);
    expect(statements.length).toBeGreaterThan(10);
    for (const { source, statement } of statements) {
      expect({ source, NotAction: statement.NotAction, NotResource: statement.NotResource }).toEqual({
        source,
      });
      const actions = asList(statement.Action) as string[];
      for (const action of actions) {
        expect({ source, action, wildcard: /^(\*|[a-z0-9-]+:\*)$/.test(action) }).toEqual({
          source,
          action,
          wildcard: false,
        });
      }
      if (asList(statement.Resource).includes('*')) {
        const unexplained = actions.filter((a) => !(a in WILDCARD_RESOURCE_EXCEPTIONS));
        expect({ source, unexplained }).toEqual({ source, unexplained: [] });
      }
    }
  });

  test('Plan may read corpora, read/write runs/, look the ledger up, use idempotency, dead-letter, ask about the model', () => {
    const { plan } = s.stack.functions;
    const out = s.stack.storage.outputBucket.bucketArn;
    const ingest = s.stack.storage.ingestBucket.bucketArn;
    expect(permissionsOf(s, plan.role)).toEqual({
      [ref(s, plan.logGroup.logGroupArn)]: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      '*': [
        'bedrock:GetFoundationModelAvailability',
        'servicequotas:ListAWSDefaultServiceQuotas',
        'servicequotas:ListServiceQuotas',
        ...XRAY,
      ],
      // Plan asks once whether the model can serve a run: its profile, and the model behind it, here.
      'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0': ['bedrock:GetFoundationModel'],
      'arn:aws:bedrock:us-east-1:<AWS::AccountId>:inference-profile/us.amazon.nova-lite-v1:0': [
        'bedrock:GetInferenceProfile',
      ],
      [`${ref(s, ingest)}/corpora/*`]: ['s3:GetObject'],
      [ref(s, ingest)]: ['s3:ListBucket'],
      [`${ref(s, out)}/runs/*`]: ['s3:GetObject', ...S3_WRITE].sort(),
      [ref(s, out)]: ['s3:ListBucket'],
      [ref(s, s.stack.ledger.ledgerTable.tableArn)]: ['dynamodb:BatchGetItem', 'dynamodb:GetItem'],
      [ref(s, s.stack.ledger.idempotencyTable.tableArn)]: IDEMPOTENCY,
      [ref(s, s.stack.failureLane.deadLetterQueue.queueArn)]: ['sqs:SendMessage'],
    });
  });

  test('Plan lists the ingest bucket only under the ingest prefix (a corpus may be a prefix of files)', () => {
    const ingest = ref(s, s.stack.storage.ingestBucket.bucketArn);
    const listing = statementsOf(s, s.stack.functions.plan.role).filter(
      (st) => st.actions.includes('s3:ListBucket') && st.resources.includes(ingest),
    );
    expect(listing).toEqual([
      {
        actions: ['s3:ListBucket'],
        resources: [ingest],
        condition: { StringLike: { 's3:prefix': ['corpora/*'] } },
      },
    ]);
  });

  test('ConverseBatch may invoke only the configured model, use runs/, move records on in the ledger, send failures', () => {
    const { converse } = s.stack.functions;
    const out = s.stack.storage.outputBucket.bucketArn;
    expect(permissionsOf(s, converse.role)).toEqual({
      [ref(s, converse.logGroup.logGroupArn)]: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      '*': XRAY,
      // The default model is Nova Lite through the US profile: the profile, and the model in the Regions it routes to.
      'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0': ['bedrock:InvokeModel'],
      'arn:aws:bedrock:us-east-1:<AWS::AccountId>:inference-profile/us.amazon.nova-lite-v1:0': [
        'bedrock:InvokeModel',
      ],
      'arn:aws:bedrock:*::foundation-model/amazon.nova-lite-v1:0': ['bedrock:InvokeModel'],
      [`${ref(s, out)}/runs/*`]: ['s3:GetObject', ...S3_WRITE].sort(),
      [`${ref(s, out)}/runs/*/results/*`]: ['s3:DeleteObject'],
      [`${ref(s, out)}/runs/*/failures/*`]: ['s3:DeleteObject'],
      [ref(s, out)]: ['s3:ListBucket'],
      [ref(s, s.stack.ledger.ledgerTable.tableArn)]: LEDGER_RECORD,
      [ref(s, s.stack.failureLane.queue.queueArn)]: ['sqs:SendMessage'],
      [ref(s, s.stack.failureLane.deadLetterQueue.queueArn)]: ['sqs:SendMessage'],
    });
  });

  test('Finalize may read/write runs/, read map-runs/, finish units through the ledger, keep run state, put events', () => {
    const { finalize } = s.stack.functions;
    const out = s.stack.storage.outputBucket.bucketArn;
    expect(permissionsOf(s, finalize.role)).toEqual({
      [ref(s, finalize.logGroup.logGroupArn)]: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      '*': XRAY,
      [`${ref(s, out)}/runs/*`]: ['s3:GetObject', ...S3_WRITE].sort(),
      [`${ref(s, out)}/runs/*/results/*`]: ['s3:DeleteObject'],
      [`${ref(s, out)}/runs/*/failures/*`]: ['s3:DeleteObject'],
      [`${ref(s, out)}/runs/*/redrive/*`]: ['s3:DeleteObject'],
      [`${ref(s, out)}/map-runs/*`]: ['s3:GetObject'],
      [ref(s, out)]: ['s3:ListBucket'],
      [ref(s, s.stack.bus.eventBus.eventBusArn)]: ['events:PutEvents'],
      [ref(s, s.stack.ledger.idempotencyTable.tableArn)]: IDEMPOTENCY,
      [ref(s, s.stack.ledger.ledgerTable.tableArn)]: LEDGER_RECORD,
      [ref(s, s.stack.ledger.runsTable.tableArn)]: RUN_STATE,
      [ref(s, s.stack.failureLane.queue.queueArn)]: ['sqs:SendMessage'],
      [ref(s, s.stack.failureLane.deadLetterQueue.queueArn)]: ['sqs:SendMessage'],
    });
  });

  test('the state machine may invoke its functions, run its Distributed Map and use runs/ and map-runs/', () => {
    const { plan, converse, finalize, submitJob, collect, converseItems } = s.stack.functions;
    const out = s.stack.storage.outputBucket.bucketArn;
    const states = 'arn:aws:states:us-east-1:<AWS::AccountId>';
    const invoke = ['lambda:InvokeFunction'];
    const invokes = Object.fromEntries(
      [plan, converse, finalize, submitJob, collect, converseItems].flatMap((fn) => [
        [ref(s, fn.functionArn), invoke],
        [`${ref(s, fn.functionArn)}:*`, invoke],
      ]),
    );
    expect(permissionsOf(s, s.stack.workflow.stateMachine.role)).toEqual({
      '*': Object.keys(WILDCARD_RESOURCE_EXCEPTIONS)
        .filter((a) => a.startsWith('logs:') || a.startsWith('xray:'))
        .sort(),
      [`${states}:stateMachine:CorpusPipeline-dev`]: ['states:StartExecution'],
      [`${states}:execution:CorpusPipeline-dev:*`]: ['states:DescribeExecution', 'states:StopExecution'],
      [`${states}:execution:CorpusPipeline-dev/*`]: ['states:DescribeExecution', 'states:StopExecution'],
      [`${states}:express:CorpusPipeline-dev:*`]: ['states:DescribeExecution', 'states:StopExecution'],
      [`${states}:express:CorpusPipeline-dev/*`]: ['states:DescribeExecution', 'states:StopExecution'],
      [`${states}:execution:CorpusPipeline-dev/*:*`]: ['states:RedriveExecution'],
      ...invokes,
      [`${ref(s, out)}/runs/*`]: ['s3:GetObject'],
      [`${ref(s, out)}/map-runs/*`]: ['s3:GetObject', ...S3_WRITE].sort(),
    });
  });

  test('the failure lane dead-letters after maxReceiveCount from config, visibility = 6x consumer timeout', () => {
    const lane = s.stack.failureLane;
    const queueId = s.stack.getLogicalId(lane.queue.node.defaultChild as CfnElement);
    const dlqId = s.stack.getLogicalId(lane.deadLetterQueue.node.defaultChild as CfnElement);
    const queue = asRecord(s.json.Resources[queueId]?.Properties, 'queue');
    expect(queue.RedrivePolicy).toEqual({
      deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] },
      maxReceiveCount: s.config.failureLane.maxReceiveCount,
    });
    expect(queue.VisibilityTimeout).toBeGreaterThanOrEqual(6 * lane.consumerTimeout.toSeconds());
    // Under the results queue's five-minute deduplication window.
    expect(queue.VisibilityTimeout).toBe(270);
    // The consumer: partial batch responses, a few invocations at once, its timeout behind the visibility timeout.
    s.template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [queueId, 'Arn'] },
      BatchSize: 10,
      MaximumBatchingWindowInSeconds: 5,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: 2 },
    });
    expect(s.stack.functions.failureLaneConsumer.lambdaFunction.timeout?.toSeconds()).toBe(
      lane.consumerTimeout.toSeconds(),
    );
    expect(s.json.Resources[dlqId]?.Properties?.MessageRetentionPeriod).toBe(14 * 24 * 3600);
  });

  test('buckets, queues and tables are encrypted with service-managed keys', () => {
    for (const [id, bucket] of resourcesOfType(s.json, 'AWS::S3::Bucket')) {
      expect({ id, encryption: bucket.Properties?.BucketEncryption }).toEqual({
        id,
        encryption: {
          ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
        },
      });
    }
    const queues = resourcesOfType(s.json, 'AWS::SQS::Queue');
    // Failure queue, its DLQ, and the DLQs of the ingest rule and the batch job-state rule.
    expect(queues).toHaveLength(4);
    for (const [id, queue] of queues) {
      expect({ id, sse: queue.Properties?.SqsManagedSseEnabled }).toEqual({ id, sse: true });
    }
    for (const [id, table] of resourcesOfType(s.json, 'AWS::DynamoDB::Table')) {
      expect({ id, sse: table.Properties?.SSESpecification }).toEqual({ id, sse: { SSEEnabled: true } });
    }
    s.template.resourceCountIs('AWS::KMS::Key', 0);
  });

  test('every bucket and queue policy denies requests without TLS', () => {
    const buckets = resourcesOfType(s.json, 'AWS::S3::Bucket').map(([id]) => id);
    expect(buckets).toHaveLength(3);
    for (const bucketId of buckets) {
      s.template.hasResourceProperties('AWS::S3::BucketPolicy', {
        Bucket: { Ref: bucketId },
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: 'Deny',
              Principal: { AWS: '*' },
              Action: 's3:*',
              Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            }),
          ]),
        },
      });
    }
    for (const [queueId] of resourcesOfType(s.json, 'AWS::SQS::Queue')) {
      s.template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: queueId }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
  });

  test('buckets block public access; ingest and output log access to the logs bucket and keep versions', () => {
    const blockAll = {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    };
    for (const [id, bucket] of resourcesOfType(s.json, 'AWS::S3::Bucket')) {
      expect({ id, block: bucket.Properties?.PublicAccessBlockConfiguration }).toEqual({
        id,
        block: blockAll,
      });
    }
    const logsId = s.stack.getLogicalId(s.stack.storage.accessLogsBucket.node.defaultChild as CfnElement);
    for (const bucket of [s.stack.storage.ingestBucket, s.stack.storage.outputBucket]) {
      const props = asRecord(
        s.json.Resources[s.stack.getLogicalId(bucket.node.defaultChild as CfnElement)]?.Properties,
        'bucket',
      );
      expect(asRecord(props.LoggingConfiguration, 'logging').DestinationBucketName).toEqual({ Ref: logsId });
      expect(props.VersioningConfiguration).toEqual({ Status: 'Enabled' });
      expect(JSON.stringify(props.LifecycleConfiguration)).toContain('NoncurrentVersionExpiration');
    }
  });

  test('the ingest bucket sends events to EventBridge; the output bucket expires map-runs/ after 30 days', () => {
    s.template.hasResourceProperties('Custom::S3BucketNotifications', {
      BucketName: { Ref: s.stack.getLogicalId(s.stack.storage.ingestBucket.node.defaultChild as CfnElement) },
      NotificationConfiguration: { EventBridgeConfiguration: {} },
    });
    s.template.hasResourceProperties('AWS::S3::Bucket', {
      LifecycleConfiguration: {
        Rules: Match.arrayWith([
          Match.objectLike({ Prefix: MAP_RUNS_PREFIX, ExpirationInDays: 30, Status: 'Enabled' }),
        ]),
      },
    });
  });

  test('ledger: pk/expiresAt, idempotency: id/expiration, runs: runId+item/expiresAt; on-demand with PITR', () => {
    s.template.resourceCountIs('AWS::DynamoDB::Table', 4);
    s.template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: 'runId', KeyType: 'HASH' },
        { AttributeName: 'item', KeyType: 'RANGE' },
      ],
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      TimeToLiveSpecification: { AttributeName: 'expiresAt', Enabled: true },
    });
    for (const [pk, ttl] of [
      ['jobArn', 'expiresAt'],
      ['pk', 'expiresAt'],
      ['id', 'expiration'],
    ]) {
      s.template.hasResourceProperties('AWS::DynamoDB::Table', {
        KeySchema: [{ AttributeName: pk, KeyType: 'HASH' }],
        AttributeDefinitions: Match.arrayWith([{ AttributeName: pk, AttributeType: 'S' }]),
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        TimeToLiveSpecification: { AttributeName: ttl, Enabled: true },
      });
    }
  });

  test('the Distributed Map reads JSONL items, batches, takes its limits from paths and writes results', () => {
    const maps = allStates(definitionOf(s).States).filter(
      ([, state]) =>
        state.Type === 'Map' && JSON.stringify(state.ItemProcessor?.ProcessorConfig).includes('DISTRIBUTED'),
    );
    expect(maps.map(([name]) => name)).toEqual([
      'CountLines',
      'PlanSegments',
      'WriteShardSlices',
      'BatchJobs',
      'FanOut',
    ]);
    // Plan's Maps: STANDARD children (a segment may take minutes), items from the prepare step's JSON lists, at most
    // plan.mapConcurrency at once, their results dropped (each segment writes its own files).
    for (const [name, plan] of maps.slice(0, 3) as [string, AslState][]) {
      expect({ name, config: plan.ItemProcessor?.ProcessorConfig }).toEqual({
        name,
        config: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' },
      });
      expect(plan.ItemReader).toMatchObject({ ReaderConfig: { InputType: 'JSON' } });
      expect(plan.MaxConcurrencyPath).toBe(
        name === 'WriteShardSlices' ? '$.batch.sliceConcurrency' : '$.segments.maxConcurrency',
      );
      expect(plan.ResultPath).toBeNull();
    }
    const map = maps.find(([name]) => name === 'FanOut')?.[1] as AslState;
    expect(map.ItemProcessor?.ProcessorConfig).toEqual({ Mode: 'DISTRIBUTED', ExecutionType: 'EXPRESS' });
    expect(map.ItemReader).toMatchObject({
      Resource: 'arn:aws:states:::s3:getObject',
      ReaderConfig: { InputType: 'JSONL' },
      Parameters: { Bucket: '${OutputBucketName}', 'Key.$': '$.fanOut.itemsKey' },
    });
    expect(asRecord(map.ItemBatcher, 'ItemBatcher').MaxItemsPerBatchPath).toEqual(
      expect.stringMatching(/^\$\./),
    );
    expect(map.MaxConcurrencyPath).toEqual(expect.stringMatching(/^\$\./));
    expect(map.ToleratedFailurePercentagePath).toEqual(expect.stringMatching(/^\$\./));
    const writer = asRecord(map.ResultWriter, 'ResultWriter');
    expect(writer.Resource).toBe('arn:aws:states:::s3:putObject');
    // The ResultWriter prefix is the one the bucket lifecycle expires and the role may write.
    expect(writer.Parameters).toEqual({
      Bucket: '${OutputBucketName}',
      Prefix: MAP_RUNS_PREFIX.replace(/\/$/, ''),
    });
  });

  test('batch mode: a Distributed Map over the shards, STANDARD children that wait on a task token, then Collect', () => {
    const states = allStates(definitionOf(s).States);
    const map = states.find(([name]) => name === 'BatchJobs')?.[1] as AslState;
    expect(map.ItemProcessor?.ProcessorConfig).toEqual({ Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' });
    expect(map.ItemReader).toMatchObject({
      Resource: 'arn:aws:states:::s3:getObject',
      ReaderConfig: { InputType: 'JSON' },
      Parameters: { Bucket: '${OutputBucketName}', 'Key.$': '$.batch.shardsKey' },
    });
    // One job per shard, never more in flight than the concurrent-jobs quota Plan read.
    expect(map.MaxConcurrencyPath).toBe('$.batch.maxConcurrency');
    expect(map.ToleratedFailurePercentagePath).toBe('$.batch.toleratedFailurePercentage');
    const submit = states.find(([name]) => name === 'BatchJobs/SubmitJob')?.[1] as AslState & {
      Resource: string;
      TimeoutSecondsPath?: string;
      HeartbeatSecondsPath?: string;
      Next?: string;
    };
    expect(submit.Resource).toBe('arn:aws:states:::lambda:invoke.waitForTaskToken');
    expect(JSON.stringify(submit)).toContain('$$.Task.Token');
    expect(submit.TimeoutSecondsPath).toBe('$.jobWaitSeconds');
    expect(submit.HeartbeatSecondsPath).toBe('$.heartbeatSeconds');
    expect(submit.Next).toBe('CollectShard');
    // Slots held by other runs: back off and retry, never fail the run.
    const quotaRetry = (submit.Retry ?? []).find((r) =>
      (r as { ErrorEquals: string[] }).ErrorEquals.includes('BatchQuotaBusyError'),
    ) as { MaxAttempts: number; MaxDelaySeconds: number } | undefined;
    expect(quotaRetry?.MaxAttempts).toBeGreaterThanOrEqual(100);
    expect(quotaRetry?.MaxDelaySeconds).toBeLessThanOrEqual(900);
  });

  test('every Task state, at any depth, has a Retry', () => {
    const tasks = allStates(definitionOf(s).States).filter(([, state]) => state.Type === 'Task');
    expect(tasks.map(([name]) => name).sort()).toEqual([
      'BatchJobs/CollectShard',
      'BatchJobs/SubmitJob',
      'ConverseItems',
      'CountLines/CountPartLines',
      'FanOut/ConverseBatch',
      'Finalize',
      'JoinConverseTail',
      'MergePlan',
      'Plan',
      'PlanSegments/PlanSegment',
      'WriteShardSlices/WriteSegmentSlices',
    ]);
    for (const [name, task] of tasks) {
      expect({ name, retries: (task.Retry ?? []).length > 0 }).toEqual({ name, retries: true });
    }
  });

  test("every Lambda Task's TimeoutSeconds outlasts its function's timeout (Step Functions never abandons a live invocation)", () => {
    const [, machine] = resourcesOfType(s.json, 'AWS::StepFunctions::StateMachine')[0] ?? [];
    const substitutions = asRecord(machine?.Properties?.DefinitionSubstitutions, 'substitutions');
    const timeoutOf = (functionName: unknown): number => {
      const placeholder = /^\$\{([A-Za-z]+)\}$/.exec(String(functionName))?.[1] ?? '';
      const arn = asRecord(substitutions[placeholder], `substitution ${placeholder}`);
      const [functionId] = asList(arn['Fn::GetAtt']) as string[];
      const fn = s.json.Resources[functionId ?? ''];
      expect(fn?.Type).toBe('AWS::Lambda::Function');
      return Number(fn?.Properties?.Timeout);
    };
    const lambdaTasks = allStates(definitionOf(s).States).filter(
      ([, state]) =>
        state.Type === 'Task' && String(state.Resource).startsWith('arn:aws:states:::lambda:invoke'),
    );
    expect(lambdaTasks).toHaveLength(11);
    const checked: Record<string, string> = {};
    for (const [name, task] of lambdaTasks) {
      const functionTimeout = timeoutOf(asRecord(task.Parameters, `${name} parameters`).FunctionName);
      expect(functionTimeout).toBeGreaterThan(0);
      if (String(task.Resource).endsWith('.waitForTaskToken')) {
        // The wait covers the whole batch job: its timeout comes from Plan (the job's own timeout plus six hours),
        // never less than a day, far beyond the submitting invocation.
        expect(task.TimeoutSecondsPath).toBe('$.jobWaitSeconds');
        expect(24 * 3600).toBeGreaterThan(functionTimeout);
        checked[name] = `path > ${functionTimeout}`;
        continue;
      }
      const taskTimeout = Number(task.TimeoutSeconds);
      // At least ten seconds above: the invocation's own start and the Lambda service's answer fit in between.
      expect({ name, margin: taskTimeout - functionTimeout >= 10 }).toEqual({ name, margin: true });
      checked[name] = `${taskTimeout} > ${functionTimeout}`;
    }
    expect(checked).toEqual({
      Plan: '960 > 900',
      'CountLines/CountPartLines': '960 > 900',
      'PlanSegments/PlanSegment': '960 > 900',
      MergePlan: '960 > 900',
      'WriteShardSlices/WriteSegmentSlices': '960 > 900',
      JoinConverseTail: '960 > 900',
      'BatchJobs/SubmitJob': 'path > 60',
      'BatchJobs/CollectShard': '960 > 900',
      ConverseItems: '960 > 900',
      'FanOut/ConverseBatch': '130 > 120',
      Finalize: '960 > 900',
    });
  });

  test("the definition's placeholders are exactly the substitution keys", () => {
    const placeholders = listDefinitionPlaceholders(fs.readFileSync(DEFAULT_DEFINITION_PATH, 'utf8'));
    expect(placeholders).toEqual([
      'CollectFunctionArn',
      'ConverseFunctionArn',
      'ConverseItemsFunctionArn',
      'FinalizeFunctionArn',
      'OutputBucketName',
      'PlanFunctionArn',
      'SubmitJobFunctionArn',
    ]);
    const [, machine] = resourcesOfType(s.json, 'AWS::StepFunctions::StateMachine')[0] ?? [];
    expect(
      Object.keys(asRecord(machine?.Properties?.DefinitionSubstitutions, 'substitutions')).sort(),
    ).toEqual(placeholders);
  });

  test('the state machine is STANDARD, named, logs ALL events without execution data, and is traced', () => {
    s.template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      StateMachineName: 'CorpusPipeline-dev',
      StateMachineType: 'STANDARD',
      TracingConfiguration: { Enabled: true },
      LoggingConfiguration: { Level: 'ALL', IncludeExecutionData: false, Destinations: Match.anyValue() },
    });
    // Retained, so its name must differ each time the stack is created: it ends with the stack id's UUID.
    s.template.hasResourceProperties('AWS::Logs::LogGroup', {
      LogGroupName: {
        'Fn::Join': [
          '',
          [
            '/aws/vendedlogs/states/CorpusPipeline-dev-',
            { 'Fn::Select': [2, { 'Fn::Split': ['/', { Ref: 'AWS::StackId' }] }] },
          ],
        ],
      },
      RetentionInDays: 30,
    });
    const logGroupId = s.stack.getLogicalId(s.stack.workflow.logGroup.node.defaultChild as CfnElement);
    expect(s.json.Outputs?.WorkflowLogGroupName).toEqual({ Value: { Ref: logGroupId } });
  });

  test('an upload under the ingest prefix starts the workflow with {bucket, key, etag, size, trigger}', () => {
    const ingestId = s.stack.getLogicalId(s.stack.storage.ingestBucket.node.defaultChild as CfnElement);
    const machineId = s.stack.getLogicalId(s.stack.workflow.stateMachine.node.defaultChild as CfnElement);
    const dlqId = s.stack.getLogicalId(s.stack.ingestTrigger.deadLetterQueue.node.defaultChild as CfnElement);
    const ruleId = s.stack.getLogicalId(s.stack.ingestTrigger.rule.node.defaultChild as CfnElement);
    const rule = asRecord(s.json.Resources[ruleId]?.Properties, 'rule');
    const busId = s.stack.getLogicalId(s.stack.ingestTrigger.bus.node.defaultChild as CfnElement);
    const forwardId = s.stack.getLogicalId(s.stack.ingestTrigger.forwardRule.node.defaultChild as CfnElement);
    const forward = asRecord(s.json.Resources[forwardId]?.Properties, 'forward rule');
    // The forward rule is on the default bus, where S3 sends its events; the rule that starts runs on the ingest bus.
    expect(forward.EventBusName).toBeUndefined();
    expect(rule.EventBusName).toEqual({ Ref: busId });
    const uploads = (key: unknown[]): unknown => ({
      source: ['aws.s3'],
      'detail-type': ['Object Created'],
      detail: { bucket: { name: [{ Ref: ingestId }] }, object: { key } },
    });
    expect(forward.EventPattern).toEqual(
      uploads([{ 'anything-but': { wildcard: 'corpora/*/*' } }, { wildcard: 'corpora/*/_SUCCESS' }]),
    );
    expect(asList(forward.Targets).map((t) => asRecord(t, 'target').Arn)).toEqual([
      { 'Fn::GetAtt': [busId, 'Arn'] },
    ]);
    expect(rule.EventPattern).toEqual(
      uploads([
        { wildcard: 'corpora/*.jsonl' },
        { wildcard: 'corpora/*.gz' },
        { wildcard: 'corpora/*/_SUCCESS' },
      ]),
    );
    const targets = asList(rule.Targets).map((t) => asRecord(t, 'target'));
    expect(targets).toHaveLength(1);
    const target = targets[0] as Record<string, unknown>;
    expect(target.Arn).toEqual({ Ref: machineId });
    expect(target.DeadLetterConfig).toEqual({ Arn: { 'Fn::GetAtt': [dlqId, 'Arn'] } });
    expect(asRecord(target.RetryPolicy, 'retry').MaximumRetryAttempts).toBeGreaterThan(0);
    const transformer = asRecord(target.InputTransformer, 'input');
    const paths = asRecord(transformer.InputPathsMap, 'paths');
    const template = String(transformer.InputTemplate).replace(/<([^>]+)>/g, (_m, name: string) =>
      JSON.stringify(`@${String(paths[name])}`),
    );
    expect(JSON.parse(template)).toEqual({
      bucket: '@$.detail.bucket.name',
      key: '@$.detail.object.key',
      etag: '@$.detail.object.etag',
      size: '@$.detail.object.size',
      trigger: 's3',
    });
  });

  test('EventBridge may assume the ingest target role only for the ingest rule of this account', () => {
    const { rule, role } = s.stack.ingestTrigger;
    const ruleId = s.stack.getLogicalId(rule.node.defaultChild as CfnElement);
    const roleId = s.stack.getLogicalId(role.node.defaultChild as CfnElement);
    const ruleProps = asRecord(s.json.Resources[ruleId]?.Properties, 'rule');
    expect(ruleProps.Name).toBe('CorpusPipeline-dev-ingest');
    expect(asRecord(asList(ruleProps.Targets)[0], 'target').RoleArn).toEqual({
      'Fn::GetAtt': [roleId, 'Arn'],
    });
    const trust = asRecord(s.json.Resources[roleId]?.Properties?.AssumeRolePolicyDocument, 'trust');
    expect(
      (asList(trust.Statement) as Record<string, unknown>[]).map((st) => ({
        ...st,
        Condition: flattenConditions(st.Condition),
      })),
    ).toEqual([
      {
        Action: 'sts:AssumeRole',
        Effect: 'Allow',
        Principal: { Service: 'events.amazonaws.com' },
        Condition: {
          StringEquals: { 'aws:SourceAccount': '<AWS::AccountId>' },
          ArnEquals: {
            'aws:SourceArn':
              'arn:aws:events:us-east-1:<AWS::AccountId>:rule/CorpusPipeline-dev-ingest/CorpusPipeline-dev-ingest',
          },
        },
      },
    ]);
    // It may start this workflow and nothing else.
    const machine = ref(s, s.stack.workflow.stateMachine.stateMachineArn);
    expect(permissionsOf(s, role)).toEqual({ [machine]: ['states:StartExecution'] });
  });

  test('EventBridge may assume the forwarding role only for the forward rule of this account, to put on the ingest bus', () => {
    const { forwardRule, forwardRole, bus } = s.stack.ingestTrigger;
    const ruleId = s.stack.getLogicalId(forwardRule.node.defaultChild as CfnElement);
    const roleId = s.stack.getLogicalId(forwardRole.node.defaultChild as CfnElement);
    const ruleProps = asRecord(s.json.Resources[ruleId]?.Properties, 'forward rule');
    expect(ruleProps.Name).toBe('CorpusPipeline-dev-ingest-forward');
    expect(asRecord(asList(ruleProps.Targets)[0], 'target').RoleArn).toEqual({
      'Fn::GetAtt': [roleId, 'Arn'],
    });
    const trust = asRecord(s.json.Resources[roleId]?.Properties?.AssumeRolePolicyDocument, 'trust');
    expect(
      (asList(trust.Statement) as Record<string, unknown>[]).map((st) => flattenConditions(st.Condition)),
    ).toEqual([
      {
        StringEquals: { 'aws:SourceAccount': '<AWS::AccountId>' },
        ArnEquals: {
          'aws:SourceArn': 'arn:aws:events:us-east-1:<AWS::AccountId>:rule/CorpusPipeline-dev-ingest-forward',
        },
      },
    ]);
    expect(permissionsOf(s, forwardRole)).toEqual({ [ref(s, bus.eventBusArn)]: ['events:PutEvents'] });
  });

  test('the pipeline bus is named after the environment', () => {
    s.template.hasResourceProperties('AWS::Events::EventBus', { Name: 'CorpusPipeline-dev' });
  });

  test('functions: Node.js 22+, arm64, active tracing, exact environment variables, corpus:entry metadata', () => {
    const expected: Record<string, string[]> = {
      'lambda/plan.ts': [
        'OUTPUT_BUCKET',
        'INGEST_BUCKET',
        'INGEST_PREFIX',
        'CONVERSE_BATCH_SIZE',
        'CONVERSE_MAP_CONCURRENCY',
        'FAILURE_DLQ_URL',
        'IDEMPOTENCY_TABLE',
        'LEDGER_SCOPE',
        'LEDGER_TABLE',
        'MODEL_ID',
        'PROMPT_MAX_TOKENS',
        'PROMPT_TEMPLATE',
        'TOLERATED_FAILURE_PERCENTAGE',
        'LEDGER_TTL_DAYS',
        'BATCH_READ_SERVICE_QUOTAS',
        'BATCH_QUOTA_MIN_RECORDS_PER_JOB',
        'BATCH_QUOTA_MAX_RECORDS_PER_JOB',
        'BATCH_QUOTA_MAX_RECORDS_PER_FILE',
        'BATCH_QUOTA_MAX_BYTES_PER_FILE',
        'BATCH_QUOTA_MAX_BYTES_PER_JOB',
        'BATCH_QUOTA_MAX_CONCURRENT_JOBS',
        'BATCH_MAP_CONCURRENCY',
        'BATCH_TOLERATED_FAILURE_PERCENTAGE',
        'BATCH_JOB_TIMEOUT_HOURS',
        'BATCH_RECONCILE_INTERVAL_MINUTES',
        'PLAN_MAP_CONCURRENCY',
        'PLAN_PARSE_WORKERS',
        'PLAN_SEGMENT_BYTES',
        'MALLOC_ARENA_MAX',
      ],
      'lambda/converse-batch.ts': [
        'OUTPUT_BUCKET',
        'CONVERSE_MAP_CONCURRENCY',
        'FAILURE_DLQ_URL',
        'FAILURE_QUEUE_URL',
        'CLAIM_LEASE_SECONDS',
        'EXPRESS_CHILD_BUDGET_SECONDS',
        'ITEM_CONCURRENCY',
        'LEDGER_TABLE',
        'LEDGER_TTL_DAYS',
        'MAX_ATTEMPTS',
        'MODEL_ID',
        'TOKENS_PER_MINUTE',
      ],
      'lambda/finalize.ts': [
        'OUTPUT_BUCKET',
        'EVENT_BUS_NAME',
        'IDEMPOTENCY_TABLE',
        'LEDGER_TABLE',
        'RUNS_TABLE',
        'FAILURE_QUEUE_URL',
        'FAILURE_DLQ_URL',
        'LEDGER_TTL_DAYS',
        'CLAIM_LEASE_SECONDS',
      ],
      'lambda/submit-job.ts': [
        'OUTPUT_BUCKET',
        'JOBS_TABLE',
        'JOBS_TTL_DAYS',
        'MODEL_ID',
        'BATCH_ROLE_ARN',
        'BATCH_JOB_TIMEOUT_HOURS',
        'BATCH_JOB_NAME_PREFIX',
        'BATCH_JOB_TAGS',
      ],
      'lambda/job-state.ts': ['JOBS_TABLE', 'JOBS_TTL_DAYS'],
      'lambda/reconcile.ts': ['JOBS_TABLE', 'JOBS_TTL_DAYS'],
      'lambda/collect.ts': [
        'OUTPUT_BUCKET',
        'LEDGER_TABLE',
        'FAILURE_QUEUE_URL',
        'FAILURE_DLQ_URL',
        'LEDGER_TTL_DAYS',
        'CLAIM_LEASE_SECONDS',
      ],
      'lambda/converse-items.ts': ['OUTPUT_BUCKET'],
      'lambda/failure-lane-consumer.ts': [
        'OUTPUT_BUCKET',
        'LEDGER_TABLE',
        'RUNS_TABLE',
        'EVENT_BUS_NAME',
        'CLAIM_LEASE_SECONDS',
        'FAILURE_DLQ_URL',
        'MODEL_ID',
        'MAX_ATTEMPTS',
        'LEDGER_TTL_DAYS',
        'MAX_RECEIVE_COUNT',
      ],
    };
    const common = [
      'NODE_OPTIONS',
      'POWERTOOLS_METRICS_NAMESPACE',
      'POWERTOOLS_SERVICE_NAME',
      'POWERTOOLS_TRACE_ENABLED',
    ];
    const seen: string[] = [];
    for (const [id, fn] of resourcesOfType(s.json, 'AWS::Lambda::Function')) {
      const entry = fn.Metadata?.['corpus:entry'];
      if (entry === undefined) {
        continue; // CDK's own deploy-time handlers
      }
      expect(typeof entry === 'string' && /^lambda\/[a-z0-9-]+\.ts$/.test(entry)).toBe(true);
      expect(fs.existsSync(path.join(PROJECT_ROOT, String(entry)))).toBe(true);
      seen.push(String(entry));
      const props = asRecord(fn.Properties, id);
      const major = Number(/^nodejs(\d+)\.x$/.exec(String(props.Runtime))?.[1]);
      expect({ id, major: major >= 22 }).toEqual({ id, major: true });
      expect(props.Architectures).toEqual(['arm64']);
      expect(props.TracingConfig).toEqual({ Mode: 'Active' });
      const variables = asRecord(asRecord(props.Environment, 'env').Variables, 'vars');
      expect(Object.keys(variables).sort()).toEqual([...(expected[String(entry)] ?? []), ...common].sort());
      // No function sets V8 heap flags: the Lambda runtime's own, on the command line, would win over NODE_OPTIONS.
      expect(variables.NODE_OPTIONS).toBe('--enable-source-maps');
      expect(variables.POWERTOOLS_METRICS_NAMESPACE).toBe('CorpusPipeline');
      // SDK subsegments are off unless `sdkTracing` asks for them; active tracing is on either way.
      expect(variables.POWERTOOLS_TRACE_ENABLED).toBe('false');
    }
    expect(seen.sort()).toEqual(Object.keys(expected).sort());
  });

  test('every function fits what a new account accepts (3,008 MB at most)', () => {
    const memory = functionMemory(s);
    expect(Object.keys(memory)).toHaveLength(9);
    for (const [entry, mb] of Object.entries(memory)) {
      expect({ entry, fits: mb <= NEW_ACCOUNT_MAX_MEMORY_MB }).toEqual({ entry, fits: true });
    }
  });

  test('function settings come from config', () => {
    const plan = s.stack.functions.plan.lambdaFunction;
    const converse = s.stack.functions.converse.lambdaFunction;
    const vars = (fn: IConstruct): Record<string, unknown> =>
      asRecord(
        asRecord(
          asRecord(
            s.json.Resources[s.stack.getLogicalId(fn.node.defaultChild as CfnElement)]?.Properties,
            'fn',
          ).Environment,
          'env',
        ).Variables,
        'vars',
      );
    expect(vars(plan)).toMatchObject({
      INGEST_BUCKET: {
        Ref: s.stack.getLogicalId(s.stack.storage.ingestBucket.node.defaultChild as CfnElement),
      },
      INGEST_PREFIX: 'corpora/',
      MODEL_ID: s.config.modelId,
      LEDGER_SCOPE: 'dev/us.amazon.nova-lite-v1:0',
      PROMPT_TEMPLATE: '{{text}}',
      CONVERSE_BATCH_SIZE: '25',
      CONVERSE_MAP_CONCURRENCY: '4',
      BATCH_MAP_CONCURRENCY: '4',
      TOLERATED_FAILURE_PERCENTAGE: '5',
    });
    expect(vars(converse)).toMatchObject({
      ITEM_CONCURRENCY: '4',
      LEDGER_TTL_DAYS: '90',
      TOKENS_PER_MINUTE: '2000000',
    });
    // dev sets no requests-per-minute quota (Bedrock's runtime quotas are token quotas): ConverseBatch paces by tokens.
    expect(vars(converse)).not.toHaveProperty('REQUESTS_PER_MINUTE');
    s.template.hasResourceProperties('AWS::Lambda::Function', {
      Handler: 'index.handler',
      Timeout: 900,
      // What a new account accepts (3,008 MB): two vCPUs, the main thread and one parse worker.
      MemorySize: 3008,
      Environment: {
        Variables: Match.objectLike({ POWERTOOLS_SERVICE_NAME: 'corpus-plan', PLAN_PARSE_WORKERS: '1' }),
      },
    });
    s.template.hasResourceProperties('AWS::Lambda::Function', {
      Timeout: 120,
      MemorySize: 512,
      Environment: { Variables: Match.objectLike({ POWERTOOLS_SERVICE_NAME: 'corpus-converse-batch' }) },
    });
  });

  test('outputs for the CLI', () => {
    expect(Object.keys(s.json.Outputs ?? {}).sort()).toEqual(
      [
        'AlarmTopicArn',
        'BatchServiceRoleArn',
        'EventBusName',
        'FailureDlqUrl',
        'FailureQueueUrl',
        'IdempotencyTableName',
        'IngestBucketName',
        'IngestPrefix',
        'JobsTableName',
        'LedgerTableName',
        'OutputBucketName',
        'RunsTableName',
        'ReconcileFunctionName',
        'StateMachineArn',
        'WorkflowLogGroupName',
      ].sort(),
    );
    expect(s.json.Outputs?.IngestPrefix).toEqual({ Value: 'corpora/' });
  });

  test('batch mode: the Bedrock service role trusts Bedrock jobs of this account only, reads shard inputs, writes shard outputs, invokes the model', () => {
    const role = s.stack.batchJobs.serviceRole;
    const roleId = s.stack.getLogicalId(role.node.defaultChild as CfnElement);
    const trust = asRecord(s.json.Resources[roleId]?.Properties?.AssumeRolePolicyDocument, 'trust');
    expect(trust.Statement).toEqual([
      {
        Action: 'sts:AssumeRole',
        Effect: 'Allow',
        Principal: { Service: 'bedrock.amazonaws.com' },
        Condition: {
          StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
          ArnLike: {
            'aws:SourceArn': {
              'Fn::Join': [
                '',
                ['arn:aws:bedrock:us-east-1:', { Ref: 'AWS::AccountId' }, ':model-invocation-job/*'],
              ],
            },
          },
        },
      },
    ]);
    const out = ref(s, s.stack.storage.outputBucket.bucketArn);
    expect(permissionsOf(s, role)).toEqual({
      [`${out}/runs/*/shards/*/input/*`]: ['s3:GetObject'],
      [out]: ['s3:ListBucket'],
      [`${out}/runs/*/shards/*/output/*`]: ['s3:PutObject'],
      // The default model is Nova Lite through the US profile: the profile, and the model in the Regions it routes to.
      'arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0': ['bedrock:InvokeModel'],
      'arn:aws:bedrock:us-east-1:<AWS::AccountId>:inference-profile/us.amazon.nova-lite-v1:0': [
        'bedrock:InvokeModel',
      ],
      'arn:aws:bedrock:*::foundation-model/amazon.nova-lite-v1:0': ['bedrock:InvokeModel'],
    });
    // The documented policy lists the input and the output location for s3:ListBucket; both are held to shard prefixes.
    const list = statementsOf(s, role).find((st) => st.actions.includes('s3:ListBucket'));
    expect(list?.condition).toEqual({
      StringLike: {
        's3:prefix': [
          'runs/*/shards/*/input/*',
          'runs/*/shards/*/input/',
          'runs/*/shards/*/output/*',
          'runs/*/shards/*/output/',
        ],
      },
    });
    // No VPC configured: no network permissions.
    expect(
      statementsOf(s, role)
        .flatMap((st) => st.actions)
        .filter((a) => a.startsWith('ec2:')),
    ).toEqual([]);
  });

  test('no principal may PutItem (or DeleteItem) on the ledger: records move on by conditional UpdateItem only', () => {
    const ledger = ref(s, s.stack.ledger.ledgerTable.tableArn);
    for (const { source, statement } of identityStatements(s.json)) {
      if (!asList(statement.Resource).some((r) => flattenForNag(r) === ledger)) continue;
      const actions = asList(statement.Action) as string[];
      expect({
        source,
        actions: actions.filter(
          (a) => !['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:UpdateItem'].includes(a),
        ),
      }).toEqual({
        source,
        actions: [],
      });
    }
  });

  test('batch mode: SubmitJob may create and find jobs, pass only the service role to Bedrock, and record tokens', () => {
    const { submitJob } = s.stack.functions;
    const jobs = 'arn:aws:bedrock:us-east-1:<AWS::AccountId>:model-invocation-job/*';
    const perms = permissionsOf(s, submitJob.role);
    expect(perms[jobs]).toEqual([
      'bedrock:CreateModelInvocationJob',
      'bedrock:GetModelInvocationJob',
      'bedrock:TagResource',
    ]);
    expect(perms['*']).toEqual(['bedrock:ListModelInvocationJobs', ...XRAY].sort());
    expect(perms[ref(s, s.stack.batchJobs.serviceRole.roleArn)]).toEqual(['iam:PassRole']);
    expect(perms[ref(s, s.stack.batchJobs.jobsTable.tableArn)]).toEqual(['dynamodb:UpdateItem']);
    expect(perms['arn:aws:states:us-east-1:<AWS::AccountId>:stateMachine:CorpusPipeline-dev']).toEqual([
      'states:SendTaskHeartbeat',
      'states:SendTaskSuccess',
    ]);
    s.template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: 'iam:PassRole',
            Condition: { StringEquals: { 'iam:PassedToService': 'bedrock.amazonaws.com' } },
          }),
        ]),
      },
    });
  });

  test('batch mode: terminal job events of this environment resume the wait; the reconciler runs on a schedule', () => {
    const tracking = s.stack.batchJobTracking;
    const ruleId = s.stack.getLogicalId(tracking.stateChangeRule.node.defaultChild as CfnElement);
    const rule = asRecord(s.json.Resources[ruleId]?.Properties, 'rule');
    expect(rule.EventBusName).toBeUndefined(); // Bedrock publishes on the default bus
    expect(rule.EventPattern).toEqual({
      source: ['aws.bedrock'],
      'detail-type': ['Batch Inference Job State Change'],
      detail: {
        batchJobName: [{ prefix: 'corpus-dev-' }],
        status: ['Completed', 'PartiallyCompleted', 'Failed', 'Stopped', 'Expired'],
      },
    });
    const jobStateId = s.stack.getLogicalId(
      s.stack.functions.jobState.lambdaFunction.node.defaultChild as CfnElement,
    );
    expect(asList(rule.Targets)).toEqual([
      expect.objectContaining({
        Arn: { 'Fn::GetAtt': [jobStateId, 'Arn'] },
        DeadLetterConfig: expect.anything(),
        RetryPolicy: expect.objectContaining({ MaximumRetryAttempts: 10 }),
      }),
    ]);
    const scheduleId = s.stack.getLogicalId(tracking.reconcileSchedule.node.defaultChild as CfnElement);
    expect(s.json.Resources[scheduleId]?.Properties?.ScheduleExpression).toBe('rate(5 minutes)');
  });

  test('batch mode: the jobs table keys and indexes are the ones the handlers use', () => {
    const tableId = s.stack.getLogicalId(s.stack.batchJobs.jobsTable.node.defaultChild as CfnElement);
    const props = asRecord(s.json.Resources[tableId]?.Properties, 'jobs table');
    expect(props.KeySchema).toEqual([{ AttributeName: JOBS_TABLE_KEYS.partitionKey, KeyType: 'HASH' }]);
    const indexes = asList(props.GlobalSecondaryIndexes).map((i) => asRecord(i, 'index'));
    expect(indexes.map((i) => [i.IndexName, i.KeySchema])).toEqual([
      [
        JOBS_TABLE_KEYS.byRunIndex,
        [
          { AttributeName: JOBS_TABLE_KEYS.byRunPartitionKey, KeyType: 'HASH' },
          { AttributeName: JOBS_TABLE_KEYS.byRunSortKey, KeyType: 'RANGE' },
        ],
      ],
      [
        JOBS_TABLE_KEYS.inFlightIndex,
        [
          { AttributeName: JOBS_TABLE_KEYS.inFlightPartitionKey, KeyType: 'HASH' },
          { AttributeName: JOBS_TABLE_KEYS.inFlightSortKey, KeyType: 'RANGE' },
        ],
      ],
    ]);
  });

  test('stateful resources are destroyed with a dev stack', () => {
    for (const type of ['AWS::S3::Bucket', 'AWS::DynamoDB::Table', 'AWS::SQS::Queue']) {
      s.template.allResources(type, { DeletionPolicy: 'Delete' });
    }
    s.template.resourceCountIs('Custom::S3AutoDeleteObjects', 3);
  });
});

describe('PipelineStack with ingest.allowedBuckets', () => {
  let s: Synthesized;
  beforeAll(() => {
    s = synthEnvironment('dev', {
      dev: {
        ...environmentSettings('dev'),
        ingest: { allowedBuckets: ['partner-corpora', 'archive.example'] },
      },
    });
  });
  afterAll(() => s?.cleanup());

  test('Plan is told the allowed buckets and may read exactly them, besides the ingest prefix', () => {
    const { plan } = s.stack.functions;
    const planId = s.stack.getLogicalId(plan.lambdaFunction.node.defaultChild as CfnElement);
    const variables = asRecord(
      asRecord(asRecord(s.json.Resources[planId]?.Properties, 'plan').Environment, 'env').Variables,
      'vars',
    );
    expect(variables.ALLOWED_INPUT_BUCKETS).toBe('partner-corpora,archive.example');
    const permissions = permissionsOf(s, plan.role);
    const ingest = ref(s, s.stack.storage.ingestBucket.bucketArn);
    const read = Object.entries(permissions)
      .filter(([, actions]) => actions.includes('s3:GetObject') || actions.includes('s3:ListBucket'))
      .map(([resource, actions]) => [resource, actions])
      .filter(([resource]) => !String(resource).startsWith(ref(s, s.stack.storage.outputBucket.bucketArn)));
    expect(Object.fromEntries(read)).toEqual({
      [`${ingest}/corpora/*`]: ['s3:GetObject'],
      [ingest]: ['s3:ListBucket'],
      'arn:aws:s3:::partner-corpora/*': ['s3:GetObject'],
      'arn:aws:s3:::partner-corpora': ['s3:ListBucket'],
      'arn:aws:s3:::archive.example/*': ['s3:GetObject'],
      'arn:aws:s3:::archive.example': ['s3:ListBucket'],
    });
    // No other function gains access to them.
    for (const fn of [s.stack.functions.converse, s.stack.functions.finalize, s.stack.functions.collect]) {
      expect(Object.keys(permissionsOf(s, fn.role)).filter((r) => r.includes('partner-corpora'))).toEqual([]);
    }
  });

  test('cdk-nag AwsSolutions reports no unacknowledged finding', () => {
    expect(unacknowledgedFindings(s.report)).toEqual([]);
  });

  test('an allowed bucket must be a bucket name, listed once', () => {
    const dev = environmentSettings('dev');
    expect(() => parseEnvironmentConfig('dev', { ...dev, ingest: { allowedBuckets: ['s3://x/'] } })).toThrow(
      /ingest\.allowedBuckets\.0: ingest\.allowedBuckets: each entry must be an S3 bucket name/,
    );
    expect(() =>
      parseEnvironmentConfig('dev', { ...dev, ingest: { allowedBuckets: ['abc', 'abc'] } }),
    ).toThrow(/ingest\.allowedBuckets: ingest\.allowedBuckets lists a bucket twice/);
    expect(parseEnvironmentConfig('dev', dev).ingest.allowedBuckets).toEqual([]);
  });
});

describe('PipelineStack with batch.vpc', () => {
  let s: Synthesized;
  beforeAll(() => {
    s = synthEnvironment('dev', {
      dev: {
        ...environmentSettings('dev'),
        batch: {
          ...(environmentSettings('dev').batch as object),
          vpc: { subnetIds: ['subnet-0a1', 'subnet-0b2'], securityGroupIds: ['sg-0c3'] },
        },
      },
    });
  });
  afterAll(() => s?.cleanup());

  test("Bedrock's batch role may manage the jobs' network interfaces as the VPC guide documents, in these subnets only", () => {
    const ec2 = (resource: string) => `arn:aws:ec2:us-east-1:<AWS::AccountId>:${resource}`;
    const jobs = 'arn:aws:bedrock:us-east-1:<AWS::AccountId>:model-invocation-job/*';
    const network = statementsOf(s, s.stack.batchJobs.serviceRole).filter((st) =>
      st.actions.some((a) => a.startsWith('ec2:')),
    );
    expect(network).toEqual([
      {
        actions: [
          'ec2:DescribeDhcpOptions',
          'ec2:DescribeNetworkInterfaces',
          'ec2:DescribeSecurityGroups',
          'ec2:DescribeSubnets',
          'ec2:DescribeVpcs',
        ],
        resources: ['*'],
      },
      {
        actions: ['ec2:CreateNetworkInterface'],
        resources: [
          ec2('network-interface/*'),
          ec2('security-group/sg-0c3'),
          ec2('subnet/subnet-0a1'),
          ec2('subnet/subnet-0b2'),
        ],
        condition: {
          StringEquals: { 'aws:RequestTag/BedrockManaged': ['true'] },
          ArnEquals: { 'aws:RequestTag/BedrockModelInvocationJobArn': [jobs] },
        },
      },
      {
        actions: [
          'ec2:CreateNetworkInterfacePermission',
          'ec2:DeleteNetworkInterface',
          'ec2:DeleteNetworkInterfacePermission',
        ],
        resources: ['*'],
        condition: {
          StringEquals: { 'ec2:Subnet': [ec2('subnet/subnet-0a1'), ec2('subnet/subnet-0b2')] },
          ArnEquals: { 'ec2:ResourceTag/BedrockModelInvocationJobArn': [jobs] },
        },
      },
      {
        actions: ['ec2:CreateTags'],
        resources: [ec2('network-interface/*')],
        condition: {
          StringEquals: { 'ec2:CreateAction': ['CreateNetworkInterface'] },
          'ForAllValues:StringEquals': { 'aws:TagKeys': ['BedrockManaged', 'BedrockModelInvocationJobArn'] },
        },
      },
    ]);
    // SubmitJob passes the VPC to CreateModelInvocationJob.
    s.template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          POWERTOOLS_SERVICE_NAME: 'corpus-submit-job',
          BATCH_VPC_SUBNET_IDS: 'subnet-0a1,subnet-0b2',
          BATCH_VPC_SECURITY_GROUP_IDS: 'sg-0c3',
        }),
      },
    });
  });

  test('cdk-nag AwsSolutions reports no unacknowledged finding', () => {
    expect(unacknowledgedFindings(s.report)).toEqual([]);
  });
});

describe('PipelineStack (prod: customer managed key)', () => {
  let s: Synthesized;
  let keyId: string;
  beforeAll(() => {
    s = synthEnvironment('prod');
    const key = s.stack.encryption.key;
    if (!key) {
      throw new Error('prod must create a customer managed key');
    }
    keyId = s.stack.getLogicalId(key.node.defaultChild as CfnElement);
  });
  afterAll(() => s?.cleanup());

  test('cdk-nag AwsSolutions reports no unacknowledged finding', () => {
    expect(unacknowledgedFindings(s.report)).toEqual([]);
  });

  test('every function fits what a new account accepts; plan.memorySize is the opt-in above it', () => {
    expect(Math.max(...Object.values(functionMemory(s)))).toBe(NEW_ACCOUNT_MAX_MEMORY_MB);
    const large = synthEnvironment('prod', {
      prod: { ...environmentSettings('prod'), plan: { memorySize: 10_240 } },
    });
    try {
      expect(functionMemory(large)['lambda/plan.ts']).toBe(10_240);
      large.template.hasResourceProperties('AWS::Lambda::Function', {
        MemorySize: 10_240,
        Environment: { Variables: Match.objectLike({ PLAN_PARSE_WORKERS: '5' }) },
      });
    } finally {
      large.cleanup();
    }
  });

  test('one rotated key encrypts the data buckets, queues, tables and log groups', () => {
    s.template.resourceCountIs('AWS::KMS::Key', 1);
    s.template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    const keyArn = { 'Fn::GetAtt': [keyId, 'Arn'] };
    const logsBucketId = s.stack.getLogicalId(
      s.stack.storage.accessLogsBucket.node.defaultChild as CfnElement,
    );
    for (const [id, bucket] of resourcesOfType(s.json, 'AWS::S3::Bucket')) {
      const rule = (bucket.Properties?.BucketEncryption as { ServerSideEncryptionConfiguration: unknown[] })
        .ServerSideEncryptionConfiguration[0];
      // Server access logging cannot deliver to an SSE-KMS bucket, so the logs bucket keeps SSE-S3.
      const expected =
        id === logsBucketId
          ? { ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }
          : {
              BucketKeyEnabled: true,
              ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: keyArn },
            };
      expect({ id, rule }).toEqual({ id, rule: expected });
    }
    for (const [id, queue] of resourcesOfType(s.json, 'AWS::SQS::Queue')) {
      expect({ id, key: queue.Properties?.KmsMasterKeyId }).toEqual({ id, key: keyArn });
    }
    for (const [id, table] of resourcesOfType(s.json, 'AWS::DynamoDB::Table')) {
      expect({ id, sse: table.Properties?.SSESpecification }).toEqual({
        id,
        sse: { KMSMasterKeyId: keyArn, SSEEnabled: true, SSEType: 'KMS' },
      });
    }
    for (const [id, group] of resourcesOfType(s.json, 'AWS::Logs::LogGroup')) {
      expect({ id, key: group.Properties?.KmsKeyId }).toEqual({ id, key: keyArn });
    }
  });

  test('the key policy lets CloudWatch Logs and EventBridge use it only for this account', () => {
    const policy = asRecord(s.json.Resources[keyId]?.Properties?.KeyPolicy, 'key policy');
    const services = (asList(policy.Statement) as Record<string, unknown>[]).map((statement) => ({
      service: flattenForNag(asRecord(statement.Principal, 'principal').Service),
      condition: JSON.stringify(statement.Condition ? s.stack.resolve(statement.Condition) : undefined),
    }));
    expect(services).toEqual(
      expect.arrayContaining([
        {
          service: 'logs.us-east-1.<AWS::URLSuffix>',
          condition: expect.stringContaining('kms:EncryptionContext:aws:logs:arn'),
        },
        { service: 'events.amazonaws.com', condition: expect.stringContaining('"aws:SourceAccount"') },
      ]),
    );
  });

  test('KMS permissions are on the key only, and only for principals that touch encrypted data', () => {
    const keyArn = `<${keyId}.Arn>`;
    const { plan, converse, finalize } = s.stack.functions;
    const kmsOf = (role: IConstruct): string[] | undefined => permissionsOf(s, role)[keyArn];
    // S3 (SSE-KMS objects) and SQS (SSE-KMS messages) need GenerateDataKey and Decrypt; DynamoDB only Decrypt.
    expect(kmsOf(plan.role)).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    expect(kmsOf(converse.role)).toEqual(kmsOf(plan.role));
    expect(kmsOf(finalize.role)).toEqual(kmsOf(plan.role));
    expect(kmsOf(s.stack.workflow.stateMachine.role)).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    // Functions that only touch tables get Decrypt, only through DynamoDB.
    for (const fn of [s.stack.functions.jobState, s.stack.functions.reconcile]) {
      expect(statementsOf(s, fn.role).filter((st) => st.actions.some((a) => a.startsWith('kms:')))).toEqual([
        {
          actions: ['kms:Decrypt'],
          resources: [keyArn],
          condition: { StringEquals: { 'kms:ViaService': 'dynamodb.us-east-1.<AWS::URLSuffix>' } },
        },
      ]);
    }
    // Bedrock's batch role uses the key only through S3, as the batch service role page documents it.
    expect(
      statementsOf(s, s.stack.batchJobs.serviceRole).filter((st) =>
        st.actions.some((a) => a.startsWith('kms:')),
      ),
    ).toEqual([
      {
        actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
        resources: [keyArn],
        condition: { StringEquals: { 'kms:ViaService': 's3.us-east-1.<AWS::URLSuffix>' } },
      },
    ]);
    for (const { source, statement } of identityStatements(s.json)) {
      const kmsActions = (asList(statement.Action) as string[]).filter((a) => a.startsWith('kms:'));
      // No wildcard KMS action family on any identity: every principal gets the calls its services make.
      expect({ source, wildcards: kmsActions.filter((a) => a.includes('*')) }).toEqual({
        source,
        wildcards: [],
      });
      if (kmsActions.length > 0) {
        expect({ source, resource: asList(statement.Resource).map(flattenForNag) }).toEqual({
          source,
          resource: [keyArn],
        });
      }
    }
  });

  test('stateful resources are retained with a prod stack', () => {
    for (const type of ['AWS::S3::Bucket', 'AWS::DynamoDB::Table', 'AWS::SQS::Queue', 'AWS::KMS::Key']) {
      s.template.allResources(type, { DeletionPolicy: 'Retain' });
    }
    s.template.resourceCountIs('Custom::S3AutoDeleteObjects', 0);
  });
});
