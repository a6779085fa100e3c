import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import {
  describeStack,
  loadTemplate,
  TemplateResolutionError,
  TemplateResolver,
  type CfnTemplate,
} from '@corpus-pipeline/local-aws/cloud/template';

const fixtures = path.join(__dirname, 'fixtures');
const readFixture = (name: string): CfnTemplate =>
  JSON.parse(readFileSync(path.join(fixtures, name), 'utf8')) as CfnTemplate;

const context = { stackName: 'Corpus-Test', region: 'eu-west-1', accountId: '123456789012' };

/** Runs `fn` and returns the TemplateResolutionError it throws. */
function resolutionError(fn: () => unknown): TemplateResolutionError {
  try {
    fn();
  } catch (error) {
    if (error instanceof TemplateResolutionError) return error;
    throw error;
  }
  throw new Error('expected a TemplateResolutionError');
}

describe('template resolution (hand-written template)', () => {
  const template = readFixture('intrinsics.template.json');
  const stack = describeStack(template, { ...context, projectRoot: '/repo' });
  const plan = stack.findFunction('PlanFunction')!;

  it('resolves Ref, GetAtt, Join, Sub, Select, Split, If, FindInMap, pseudo parameters and parameter defaults', () => {
    expect(plan.environment).toEqual({
      INGEST_BUCKET: 'corpus-test-ingest',
      RESULTS_ARN: 'arn:aws:s3:::results-test-123456789012',
      TABLE: 'Corpus-Test-ledger',
      STREAM:
        'arn:aws:dynamodb:eu-west-1:123456789012:table/Corpus-Test-ledger/stream/1970-01-01T00:00:00.000',
      LANE_URL: 'https://sqs.eu-west-1.amazonaws.com/123456789012/Corpus-Test-Lane',
      LANE_NAME: 'Corpus-Test-Lane',
      BUS: 'Corpus-Test-bus',
      MACHINE: 'arn:aws:states:eu-west-1:123456789012:stateMachine:pipeline',
      MACHINE_NAME: 'pipeline',
      SUB: 'eu-west-1/aws/amazonaws.com/arn:aws:sqs:eu-west-1:123456789012:Corpus-Test-Lane/${Literal}',
      SUB_VARS: 'Corpus-Test-test',
      SECOND_ZONE: 'b',
      SPLIT: 'z',
      IF_TEST: 'yes',
      NOT_PROD: 'not-prod',
      AND_OR: 'any',
      KEY_ARN: expect.stringMatching(/^arn:aws:kms:eu-west-1:123456789012:key\/[0-9a-f-]{36}$/),
      COUNT: '7',
    });
    // Ref AWS::NoValue removed DROPPED; FindInMap gave the memory size.
    expect(plan.environment).not.toHaveProperty('DROPPED');
    expect(plan).toMatchObject({
      name: 'Corpus-Test-PlanFunction',
      arn: 'arn:aws:lambda:eu-west-1:123456789012:function:Corpus-Test-PlanFunction',
      handler: 'index.planHandler',
      handlerExport: 'planHandler',
      runtime: 'nodejs22.x',
      timeoutSeconds: 30,
      memoryMb: 256,
      entry: 'lambda/plan.ts',
      entryPath: path.resolve('/repo', 'lambda/plan.ts'),
    });
  });

  it('uses explicit names, else <stack>-<logicalId> fitted to the service rules', () => {
    expect(stack.buckets.map((bucket) => bucket.name)).toEqual([
      'corpus-test-ingest',
      'results-test-123456789012',
    ]);
    expect(stack.tables[0]!.name).toBe('Corpus-Test-ledger');
    expect(stack.queues.map((queue) => queue.name)).toEqual([
      'Corpus-Test-Dlq',
      'Corpus-Test-Lane',
      'Corpus-Test-Ordered.fifo',
    ]);
    expect(stack.findFunction('consumer')!.name).toBe('consumer');
    expect(stack.eventBuses).toEqual([
      {
        logicalId: 'Bus',
        name: 'Corpus-Test-bus',
        arn: 'arn:aws:events:eu-west-1:123456789012:event-bus/Corpus-Test-bus',
      },
    ]);

    const long = describeStack(
      {
        Resources: {
          ABucketWithAVeryLongLogicalIdThatGoesOnAndOnAndOnForeverAndEver1234: { Type: 'AWS::S3::Bucket' },
          ABucketWithAVeryLongLogicalIdThatGoesOnAndOnAndOnForeverAndEver5678: { Type: 'AWS::S3::Bucket' },
          F: { Type: 'AWS::Lambda::Function', Metadata: { 'corpus:entry': 'x.ts' } },
        },
      },
      { stackName: 'My_Stack', region: 'us-east-1' },
    );
    const names = long.buckets.map((bucket) => bucket.name);
    for (const name of names) expect(name).toMatch(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/);
    expect(new Set(names).size).toBe(2);
    expect(long.functions[0]!.name).toBe('My_Stack-F');
    expect(long.accountId).toBe('000000000000');
  });

  it('describes tables, queues and their redrive policy', () => {
    expect(stack.tables[0]).toEqual({
      logicalId: 'Ledger',
      name: 'Corpus-Test-ledger',
      arn: 'arn:aws:dynamodb:eu-west-1:123456789012:table/Corpus-Test-ledger',
      key: { partitionKey: 'pk', sortKey: 'sk' },
      billingMode: 'PAY_PER_REQUEST',
      globalSecondaryIndexes: [{ name: 'byJob', key: { partitionKey: 'jobArn', sortKey: undefined } }],
      localSecondaryIndexes: [],
      timeToLiveAttribute: 'expiresAt',
    });
    expect(stack.findQueue('Lane')).toMatchObject({
      visibilityTimeoutSeconds: 45,
      fifo: false,
      redrivePolicy: {
        deadLetterTargetArn: 'arn:aws:sqs:eu-west-1:123456789012:Corpus-Test-Dlq',
        maxReceiveCount: 4,
        deadLetterQueueLogicalId: 'Dlq',
      },
    });
    expect(stack.findQueue('Dlq')).toMatchObject({
      messageRetentionPeriodSeconds: 1_209_600,
      redrivePolicy: undefined,
    });
    expect(stack.findQueue('Ordered')!.fifo).toBe(true);
  });

  it('describes rules (default and custom bus, string patterns), schedules and their targets', () => {
    expect(stack.rules).toHaveLength(2);
    const ingest = stack.rules.find((rule) => rule.logicalId === 'IngestRule')!;
    expect(ingest).toMatchObject({
      name: 'Corpus-Test-IngestRule',
      eventBusName: 'default',
      state: 'ENABLED',
      eventPattern: {
        source: ['aws.s3'],
        'detail-type': ['Object Created'],
        detail: { bucket: { name: ['corpus-test-ingest'] } },
      },
    });
    expect(ingest.targets).toEqual([
      expect.objectContaining({
        id: 'Start',
        arn: 'arn:aws:states:eu-west-1:123456789012:stateMachine:pipeline',
        logicalId: 'Machine',
        service: 'states',
        roleArn: 'arn:aws:iam::123456789012:role/Corpus-Test-Role',
        inputTransformer: { inputPathsMap: { key: '$.detail.object.key' }, inputTemplate: '{"key": <key>}' },
      }),
    ]);
    const done = stack.rules.find((rule) => rule.logicalId === 'DoneRule')!;
    expect(done).toMatchObject({
      name: 'run-done',
      eventBusName: 'Corpus-Test-bus',
      arn: 'arn:aws:events:eu-west-1:123456789012:rule/Corpus-Test-bus/run-done',
      state: 'DISABLED',
      eventPattern: { 'detail-type': ['Corpus Run Completed'] },
    });
    expect(done.targets[0]).toMatchObject({ service: 'sqs', logicalId: 'Dlq', inputPath: '$.detail' });
    expect(stack.schedules).toEqual([
      expect.objectContaining({
        logicalId: 'Reconcile',
        source: 'events-rule',
        scheduleExpression: 'rate(5 minutes)',
        targets: [
          expect.objectContaining({
            service: 'lambda',
            logicalId: 'ConsumerFunction',
            input: '{"reconcile":true}',
          }),
        ],
      }),
    ]);
  });

  it('describes event source mappings and state machines with substitutions applied', () => {
    expect(stack.eventSourceMappings).toEqual([
      expect.objectContaining({
        logicalId: 'LaneMapping',
        eventSourceArn: 'arn:aws:sqs:eu-west-1:123456789012:Corpus-Test-Lane',
        queueLogicalId: 'Lane',
        functionLogicalId: 'ConsumerFunction',
        functionName: 'consumer',
        batchSize: 5,
        maximumBatchingWindowInSeconds: 2,
        functionResponseTypes: ['ReportBatchItemFailures'],
        enabled: true,
        maximumConcurrency: 3,
      }),
    ]);
    expect(stack.stateMachines).toEqual([
      {
        logicalId: 'Machine',
        name: 'pipeline',
        arn: 'arn:aws:states:eu-west-1:123456789012:stateMachine:pipeline',
        type: 'STANDARD',
        roleArn: 'arn:aws:iam::123456789012:role/Corpus-Test-Role',
        definition: {
          StartAt: 'Plan',
          States: {
            Plan: {
              Type: 'Task',
              Resource: 'arn:aws:lambda:eu-west-1:123456789012:function:Corpus-Test-PlanFunction',
              Parameters: { Table: 'Corpus-Test-ledger' },
              End: true,
            },
          },
        },
      },
    ]);
  });

  it('drops resources whose condition is false and lists ignored types', () => {
    expect(stack.byLogicalId('ProdOnlyBucket')).toBeUndefined();
    expect(stack.ignored.map((resource) => resource.type).sort()).toEqual([
      'AWS::CDK::Metadata',
      'AWS::IAM::Role',
      'AWS::KMS::Key',
      'AWS::SNS::Topic',
    ]);
    expect(stack.bucketsWithEventBridge.map((bucket) => bucket.logicalId)).toEqual(['Ingest']);
  });

  it('looks resources up by logical id, ARN and name', () => {
    expect(stack.byLogicalId('Lane')).toMatchObject({
      type: 'AWS::SQS::Queue',
      physicalId: 'https://sqs.eu-west-1.amazonaws.com/123456789012/Corpus-Test-Lane',
      name: 'Corpus-Test-Lane',
      arn: 'arn:aws:sqs:eu-west-1:123456789012:Corpus-Test-Lane',
      ignored: false,
    });
    expect(stack.byArn('arn:aws:states:eu-west-1:123456789012:stateMachine:pipeline')?.logicalId).toBe(
      'Machine',
    );
    expect(stack.byName('consumer')?.logicalId).toBe('ConsumerFunction');
    expect(stack.byName('https://sqs.eu-west-1.amazonaws.com/123456789012/Corpus-Test-Dlq')?.logicalId).toBe(
      'Dlq',
    );
    expect(stack.byLogicalId('ImportsSomething')).toMatchObject({
      physicalId: 'arn:aws:sns:eu-west-1:123456789012:Corpus-Test-ImportsSomething',
      ignored: true,
    });
    expect(
      stack.findFunction('arn:aws:lambda:eu-west-1:123456789012:function:consumer:$LATEST')?.logicalId,
    ).toBe('ConsumerFunction');
    expect(stack.byArn('arn:aws:sqs:eu-west-1:123456789012:nope')).toBeUndefined();
  });

  it('resolves outputs on demand and refuses Fn::ImportValue with the path', () => {
    expect(stack.output('MachineArn')).toBe('arn:aws:states:eu-west-1:123456789012:stateMachine:pipeline');
    const error = resolutionError(() => stack.output('Imported'));
    expect(error.name).toBe('TemplateResolutionError');
    expect(error.path).toBe('Outputs.Imported.Value.Fn::ImportValue');
    expect(error.message).toMatch(/Fn::ImportValue/);
  });

  it('names the path of unresolvable references', () => {
    const resolver = new TemplateResolver(template, context);
    expect(resolutionError(() => resolver.resolve({ Ref: 'Nowhere' }, 'X')).path).toBe('X.Ref');
    expect(resolutionError(() => resolver.resolve({ Ref: 'Required' }, 'X')).message).toMatch(
      /parameter Required has no Default/,
    );
    expect(
      resolutionError(() => resolver.resolve({ 'Fn::GetAtt': ['Lane', 'Colour'] }, 'Y')).message,
    ).toMatch(/attribute Colour of Lane \(AWS::SQS::Queue\)/);
    expect(resolutionError(() => resolver.resolve({ 'Fn::Sub': '${Ghost.Arn}' }, 'Z')).path).toBe(
      'Z.Fn::Sub(${Ghost.Arn})',
    );
    expect(resolutionError(() => resolver.resolve({ 'Fn::Select': [5, ['a']] }, 'S')).message).toMatch(
      /out of range/,
    );
    expect(
      resolutionError(() => resolver.resolve({ 'Fn::Cidr': ['10.0.0.0/16', 2, 8] }, 'C')).message,
    ).toMatch(/not supported/);
    expect(resolver.resolve({ Ref: 'BootstrapVersion' }, 'P')).toBe('/cdk-bootstrap/hnb659fds/version');
    expect(resolver.resolve({ Ref: 'AWS::StackId' }, 'P')).toMatch(
      /^arn:aws:cloudformation:eu-west-1:123456789012:stack\/Corpus-Test\/[0-9a-f-]{36}$/,
    );
  });

  it('accepts parameter values and reports a missing corpus:entry clearly', () => {
    const resolver = new TemplateResolver(template, {
      ...context,
      parameters: { Stage: 'prod', Required: 'r' },
    });
    expect(resolver.resolve({ 'Fn::If': ['IsProd', 'kept', { Ref: 'AWS::NoValue' }] }, 'X')).toBe('kept');
    expect(resolver.has('ProdOnlyBucket')).toBe(true);
    expect(resolver.resolve({ Ref: 'Required' }, 'X')).toBe('r');

    const withoutEntry: CfnTemplate = {
      Resources: { Plain: { Type: 'AWS::Lambda::Function', Properties: { Handler: 'index.handler' } } },
    };
    const error = resolutionError(() => describeStack(withoutEntry, context));
    expect(error.path).toBe('Resources.Plain.Metadata.corpus:entry');
    expect(error.message).toMatch(/no 'corpus:entry' metadata/);
  });

  it('detects circular names', () => {
    const circular: CfnTemplate = {
      Resources: {
        A: { Type: 'AWS::SQS::Queue', Properties: { QueueName: { 'Fn::GetAtt': ['B', 'QueueName'] } } },
        B: { Type: 'AWS::SQS::Queue', Properties: { QueueName: { 'Fn::GetAtt': ['A', 'QueueName'] } } },
      },
    };
    expect(resolutionError(() => describeStack(circular, context)).message).toMatch(/circular reference/);
  });
});

describe('template resolution (a template synthesized by CDK)', () => {
  // Regenerate with: node --import tsx test/unit/local-aws/cloud/fixtures/synth-cdk-stack.ts
  const loaded = loadTemplate(path.join(fixtures, 'cdk-stack.template.json'));
  const stack = describeStack(loaded.template, { stackName: 'CorpusLocal', region: 'us-east-1' });

  it('wires what CDK emits and ignores its infrastructure', () => {
    expect(stack.bucketsWithEventBridge.map((bucket) => bucket.logicalId)).toEqual(['IngestBucket2B3522FA']);
    expect(stack.tables[0]).toMatchObject({
      key: { partitionKey: 'pk', sortKey: 'sk' },
      globalSecondaryIndexes: [{ name: 'byJob' }],
      timeToLiveAttribute: 'expiresAt',
    });
    expect(stack.functions.map((fn) => fn.entry).sort()).toEqual([
      'lambda/failure-consumer.ts',
      'lambda/job-state.ts',
      'lambda/plan.ts',
    ]);
    // The bucket-notification and auto-delete handlers are CDK's own functions, not ours.
    expect(stack.ignored.filter((resource) => resource.type === 'AWS::Lambda::Function')).toHaveLength(2);
    const plan = stack.functions.find((fn) => fn.entry === 'lambda/plan.ts')!;
    expect(plan.environment['QUEUE_URL']).toBe(
      'https://sqs.us-east-1.amazonaws.com/000000000000/CorpusLocal-FailureLane9302E451',
    );
    const machine = stack.stateMachines[0]!;
    const states = machine.definition['States'] as Record<string, { Parameters?: { FunctionName?: string } }>;
    expect(states['Plan']?.Parameters?.FunctionName).toBe(plan.arn);
    expect(stack.eventSourceMappings[0]).toMatchObject({
      queueLogicalId: 'FailureLane9302E451',
      functionName: 'CorpusLocal-FailureConsumer6BA27948',
      batchSize: 5,
      functionResponseTypes: ['ReportBatchItemFailures'],
    });
    const ingestRule = stack.rules.find((rule) => rule.logicalId.startsWith('IngestRule'))!;
    expect(ingestRule.targets[0]).toMatchObject({ service: 'states', logicalId: machine.logicalId });
    expect(ingestRule.targets[0]!.inputTransformer?.inputPathsMap).toEqual({
      'detail-bucket-name': '$.detail.bucket.name',
      'detail-object-key': '$.detail.object.key',
    });
    expect(stack.rules.find((rule) => rule.logicalId.startsWith('CompletedRule'))!.eventBusName).toBe(
      stack.eventBuses[0]!.name,
    );
    expect(stack.schedules[0]!.scheduleExpression).toBe('rate(5 minutes)');
    expect(stack.output('StateMachineArn')).toBe(machine.arn);
    expect(stack.summary()).toContain('state machines: CorpusLocal-PipelineC660917D (STANDARD)');
  });
});
