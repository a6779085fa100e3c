import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { App, Stack, type CfnElement } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { IConstruct } from 'constructs';
import { buildProgram } from '../../../cli/program';
import { runInputSchema } from '../../../lambda/shared/contracts';
import {
  type MonitoredFunction,
  MonitoringConfigError,
  PipelineMonitoring,
  type PipelineMonitoringFunctions,
  type PipelineMonitoringProps,
} from '../../../lib/monitoring';
import { PROJECT_ROOT } from '../../../lib/paths';
import {
  asList,
  asRecord,
  type CfnResource,
  environmentSettings,
  resourcesOfType,
  synthEnvironment,
  type Synthesized,
  unacknowledgedFindings,
} from './synth-helpers';

interface Monitored {
  readonly s: Synthesized;
  readonly monitoring: PipelineMonitoring;
}

function synthWithMonitoring(envName: string, environments?: Record<string, unknown>): Monitored {
  const s = synthEnvironment(envName, environments);
  return { s, monitoring: s.stack.monitoring };
}

function logicalId(s: Synthesized, construct: IConstruct): string {
  return s.stack.getLogicalId(construct.node.defaultChild as CfnElement);
}

function alarmNamed(s: Synthesized, name: string): Record<string, unknown> {
  const found = resourcesOfType(s.json, 'AWS::CloudWatch::Alarm').filter(
    ([, r]) => r.Properties?.AlarmName === name,
  );
  expect(found.map(([id]) => id)).toHaveLength(1);
  return asRecord((found[0] as [string, CfnResource])[1].Properties, name);
}

/** A metric-math alarm's metric entries by id. */
function alarmMetrics(alarm: Record<string, unknown>): Record<string, Record<string, unknown>> {
  return Object.fromEntries(
    asList(alarm.Metrics).map((m) => {
      const entry = asRecord(m, 'metric entry');
      return [String(entry.Id), entry];
    }),
  );
}

describe('PipelineMonitoring on the dev stack (no customer key, no email)', () => {
  let m: Monitored;
  let topicRef: { Ref: string };
  beforeAll(() => {
    m = synthWithMonitoring('dev');
    topicRef = { Ref: logicalId(m.s, m.monitoring.alarmTopic) };
  });
  afterAll(() => m.s.cleanup());

  test('synthesizes with no unacknowledged cdk-nag finding', () => {
    expect(unacknowledgedFindings(m.s.report)).toEqual([]);
  });

  test('every alarm notifies the topic on ALARM and on OK', () => {
    const alarms = resourcesOfType(m.s.json, 'AWS::CloudWatch::Alarm');
    expect(alarms.map(([, a]) => a.Properties?.AlarmName).sort()).toEqual(
      [
        'CorpusPipeline-dev-ErrorRate',
        'CorpusPipeline-dev-FailureLane-DeadLetters',
        'CorpusPipeline-dev-IngestEvents-DeadLetters',
        'CorpusPipeline-dev-JobOverSla',
        'CorpusPipeline-dev-JobStateEvents-DeadLetters',
        'CorpusPipeline-dev-RunFailed',
      ].sort(),
    );
    for (const [, alarm] of alarms) {
      expect(alarm.Properties?.AlarmActions).toEqual([topicRef]);
      expect(alarm.Properties?.OKActions).toEqual([topicRef]);
      expect(alarm.Properties?.ComparisonOperator).toBe('GreaterThanThreshold');
      expect(alarm.Properties?.TreatMissingData).toBe('notBreaching');
    }
  });

  test('a dead-letter queue with any visible message alarms', () => {
    const alarm = alarmNamed(m.s, 'CorpusPipeline-dev-FailureLane-DeadLetters');
    expect(alarm).toMatchObject({
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Statistic: 'Maximum',
      Threshold: 0,
      EvaluationPeriods: 1,
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::GetAtt': [logicalId(m.s, m.s.stack.failureLane.deadLetterQueue), 'QueueName'] },
        },
      ],
    });
    const ingest = alarmNamed(m.s, 'CorpusPipeline-dev-IngestEvents-DeadLetters');
    expect(ingest.Dimensions).toEqual([
      {
        Name: 'QueueName',
        Value: { 'Fn::GetAtt': [logicalId(m.s, m.s.stack.ingestTrigger.deadLetterQueue), 'QueueName'] },
      },
    ]);
  });

  test('a failed run alarms on the state machine', () => {
    expect(alarmNamed(m.s, 'CorpusPipeline-dev-RunFailed')).toMatchObject({
      Namespace: 'AWS/States',
      MetricName: 'ExecutionsFailed',
      Statistic: 'Sum',
      Threshold: 0,
      Dimensions: [
        { Name: 'StateMachineArn', Value: { Ref: logicalId(m.s, m.s.stack.workflow.stateMachine) } },
      ],
    });
  });

  test('the job SLA alarm reads the reconciler metric against jobSlaHours', () => {
    expect(alarmNamed(m.s, 'CorpusPipeline-dev-JobOverSla')).toMatchObject({
      Namespace: 'CorpusPipeline',
      MetricName: 'OldestJobInFlightSeconds',
      Dimensions: [{ Name: 'service', Value: 'corpus-reconcile' }],
      Statistic: 'Maximum',
      Threshold: 24 * 3600,
      // Twice the default 5-minute reconcile interval, at least 15 minutes.
      Period: 900,
    });
  });

  test('the error rate alarm is failed / (succeeded + failed) x 100 of ConverseBatch and Collect over 15 min', () => {
    const alarm = alarmNamed(m.s, 'CorpusPipeline-dev-ErrorRate');
    expect(alarm.Threshold).toBe(5);
    expect(alarm.EvaluationPeriods).toBe(1);
    const metrics = alarmMetrics(alarm);
    const stat = (id: string): Record<string, unknown> =>
      asRecord(asRecord(metrics[id], id).MetricStat, `${id} stat`);
    const metricOf = (id: string): Record<string, unknown> => asRecord(stat(id).Metric, `${id} metric`);
    for (const [id, name, service] of [
      ['failed0', 'RecordsFailed', 'corpus-converse-batch'],
      ['succeeded0', 'RecordsSucceeded', 'corpus-converse-batch'],
      ['failed1', 'RecordsFailed', 'corpus-collect'],
      ['succeeded1', 'RecordsSucceeded', 'corpus-collect'],
    ] as const) {
      expect(metricOf(id)).toEqual({
        Namespace: 'CorpusPipeline',
        MetricName: name,
        Dimensions: [{ Name: 'service', Value: service }],
      });
      expect(stat(id)).toMatchObject({ Stat: 'Sum', Period: 900 });
      expect(asRecord(metrics[id], id).ReturnData).toBe(false);
    }
    const expressions = Object.values(metrics).filter((e) => e.Expression !== undefined);
    expect(expressions).toHaveLength(1);
    const expression = String(expressions[0]?.Expression);
    expect(expression).toBe(
      'IF((FILL(failed0, 0) + FILL(succeeded0, 0) + FILL(failed1, 0) + FILL(succeeded1, 0)) > 0, ' +
        '100 * (FILL(failed0, 0) + FILL(failed1, 0)) / ' +
        '(FILL(failed0, 0) + FILL(succeeded0, 0) + FILL(failed1, 0) + FILL(succeeded1, 0)), 0)',
    );
  });

  test("the alarms' service dimensions and namespace are the functions' own Powertools settings", () => {
    const variables = resourcesOfType(m.s.json, 'AWS::Lambda::Function')
      .filter(([, fn]) => fn.Metadata?.['corpus:entry'] !== undefined)
      .map(([id, fn]) =>
        asRecord(asRecord(asRecord(fn.Properties, id).Environment, `${id} env`).Variables, `${id} vars`),
      );
    const services = new Set(variables.map((v) => v.POWERTOOLS_SERVICE_NAME));
    const namespaces = new Set(variables.map((v) => v.POWERTOOLS_METRICS_NAMESPACE));
    const used = JSON.stringify(
      resourcesOfType(m.s.json, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties),
    );
    for (const service of ['corpus-reconcile', 'corpus-converse-batch', 'corpus-collect']) {
      expect(services.has(service)).toBe(true);
      expect(used).toContain(`"Value":"${service}"`);
    }
    expect([...namespaces]).toEqual(['CorpusPipeline']);
  });

  test('no email subscription unless configured', () => {
    m.s.template.resourceCountIs('AWS::SNS::Subscription', 0);
  });

  test('the topic is TLS only and CloudWatch may publish only for this pipeline', () => {
    const [[, topic]] = resourcesOfType(m.s.json, 'AWS::SNS::Topic') as [[string, CfnResource]];
    expect(topic.Properties?.KmsMasterKeyId).toBeUndefined();
    const statements = resourcesOfType(m.s.json, 'AWS::SNS::TopicPolicy').flatMap(([, p]) =>
      asList(asRecord(p.Properties?.PolicyDocument, 'doc').Statement).map((st) => asRecord(st, 'statement')),
    );
    expect(statements).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          Effect: 'Deny',
          Condition: { Bool: { 'aws:SecureTransport': 'false' } },
        }),
        expect.objectContaining({
          Effect: 'Allow',
          Principal: { Service: 'cloudwatch.amazonaws.com' },
          Action: 'sns:Publish',
          Resource: topicRef,
          Condition: {
            StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
            ArnLike: {
              'aws:SourceArn': {
                'Fn::Join': [
                  '',
                  ['arn:aws:cloudwatch:us-east-1:', { Ref: 'AWS::AccountId' }, ':alarm:CorpusPipeline-dev-*'],
                ],
              },
            },
          },
        }),
      ]),
    );
  });

  test('the dashboard CorpusPipeline-dev plots runs, Map Runs, records, tokens, jobs, functions and queues', () => {
    const dashboards = resourcesOfType(m.s.json, 'AWS::CloudWatch::Dashboard');
    expect(dashboards).toHaveLength(1);
    const props = (dashboards[0] as [string, CfnResource])[1].Properties ?? {};
    expect(props.DashboardName).toBe('CorpusPipeline-dev');
    const body = JSON.stringify(props.DashboardBody);
    for (const needle of [
      'ExecutionsStarted',
      'ExecutionsSucceeded',
      'ExecutionsFailed',
      '/FanOut',
      '/BatchJobs',
      'RecordsSucceeded',
      'RecordsFailed',
      'InputTokens',
      'OutputTokens',
      'Throttles',
      'BatchQuotaBusy',
      'BatchJobsInFlight',
      'OldestJobInFlightSeconds',
      'BatchJobDurationSeconds',
      'ApproximateNumberOfMessagesVisible',
      'ApproximateAgeOfOldestMessage',
      'AWS/Lambda',
      'corpus-submit-job',
      'corpus-job-state',
      'corpus-plan',
      'corpus-finalize',
      'LaneRecordsPublished',
      'corpus-failure-lane',
    ]) {
      expect({ needle, found: body.includes(needle) }).toEqual({ needle, found: true });
    }
    // One Errors and one Throttles line per function.
    expect(body.match(/AWS\/Lambda\\",\\"Errors\\"/g)?.length).toBe(9);
    expect(body.match(/AWS\/Lambda\\",\\"Throttles\\"/g)?.length).toBe(9);
  });
});

describe('PipelineMonitoring on the prod stack (customer key, email, tuned thresholds)', () => {
  let m: Monitored;
  beforeAll(() => {
    m = synthWithMonitoring('prod', {
      prod: {
        ...environmentSettings('prod'),
        monitoring: { alarmEmail: 'oncall@example.com', jobSlaHours: 36, errorRatePercent: 2.5 },
        batch: { ...asRecord(environmentSettings('prod').batch, 'batch'), reconcileIntervalMinutes: 30 },
        resultsQueue: { enabled: true },
      },
    });
  });
  afterAll(() => m.s.cleanup());

  test('synthesizes with no unacknowledged cdk-nag finding', () => {
    expect(unacknowledgedFindings(m.s.report)).toEqual([]);
  });

  test('the configured email is subscribed to the alarm topic', () => {
    m.s.template.resourceCountIs('AWS::SNS::Subscription', 1);
    m.s.template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'oncall@example.com',
      TopicArn: { Ref: logicalId(m.s, m.monitoring.alarmTopic) },
    });
  });

  test('the topic is encrypted with the pipeline key, whose policy lets only these alarms use it', () => {
    const key = m.s.stack.encryption.key as kms.Key;
    const keyId = logicalId(m.s, key);
    m.s.template.hasResourceProperties('AWS::SNS::Topic', {
      KmsMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] },
    });
    const keyPolicy = asRecord(m.s.json.Resources[keyId]?.Properties?.KeyPolicy, 'key policy');
    expect(asList(keyPolicy.Statement)).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          Effect: 'Allow',
          Principal: { Service: 'cloudwatch.amazonaws.com' },
          Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
          Condition: expect.objectContaining({
            StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
          }) as unknown,
        }),
      ]),
    );
  });

  test('thresholds, periods and watched queues follow the config', () => {
    expect(alarmNamed(m.s, 'CorpusPipeline-prod-JobOverSla')).toMatchObject({
      Threshold: 36 * 3600,
      Period: 3600,
    });
    expect(alarmNamed(m.s, 'CorpusPipeline-prod-ErrorRate').Threshold).toBe(2.5);
    // The results queue's DLQ is watched when the queue exists.
    expect(alarmNamed(m.s, 'CorpusPipeline-prod-ResultsQueue-DeadLetters').MetricName).toBe(
      'ApproximateNumberOfMessagesVisible',
    );
    m.s.template.hasResourceProperties('AWS::CloudWatch::Dashboard', {
      DashboardName: 'CorpusPipeline-prod',
    });
  });
});

describe('PipelineMonitoring settings', () => {
  type FunctionMaker = (name: string) => MonitoredFunction;

  function pipelineFunctions(fn: FunctionMaker): PipelineMonitoringFunctions {
    return {
      plan: fn('plan'),
      converse: fn('converse'),
      finalize: fn('finalize'),
      submitJob: fn('submit'),
      jobState: fn('state'),
      reconcile: fn('reconcile'),
      collect: fn('collect'),
      converseItems: fn('items'),
    };
  }

  /** Builds the construct in a bare stack from imported resources, with `overrides` applied to the props. */
  function standalone(
    overrides: (stack: Stack, fn: FunctionMaker) => Partial<PipelineMonitoringProps> = () => ({}),
  ): () => PipelineMonitoring {
    return () => {
      const stack = new Stack(new App(), 'Standalone', {
        env: { account: '123456789012', region: 'us-east-1' },
      });
      const fn: FunctionMaker = (name) => ({
        lambdaFunction:
          (stack.node.tryFindChild(name) as lambda.IFunction | undefined) ??
          lambda.Function.fromFunctionArn(
            stack,
            name,
            `arn:aws:lambda:us-east-1:123456789012:function:${name}`,
          ),
        serviceName: `corpus-${name}`,
      });
      const queue = (name: string): sqs.IQueue =>
        sqs.Queue.fromQueueArn(stack, name, `arn:aws:sqs:us-east-1:123456789012:${name}`);
      return new PipelineMonitoring(stack, 'Monitoring', {
        pipelineName: 'CorpusPipeline-test',
        stateMachine: sfn.StateMachine.fromStateMachineName(stack, 'Machine', 'CorpusPipeline-test'),
        functions: pipelineFunctions(fn),
        failureQueue: queue('failures'),
        deadLetterQueues: { FailureLane: { queue: queue('dlq') } },
        ...overrides(stack, fn),
      });
    };
  }

  function dashboardBody(monitoring: PipelineMonitoring): string {
    const cfn = monitoring.dashboard.node.defaultChild as CfnElement & { dashboardBody: unknown };
    return JSON.stringify(Stack.of(monitoring).resolve(cfn.dashboardBody));
  }

  test('defaults: four alarms, no Map Run panel without labels, no failure-lane panel without its consumer', () => {
    const monitoring = standalone()();
    expect(monitoring.alarms).toHaveLength(4);
    const body = dashboardBody(monitoring);
    expect(body).not.toContain('Map Run');
    expect(body).not.toContain('LaneRecordsPublished');
  });

  test('the failure-lane consumer adds its retry panel and its function lines', () => {
    const monitoring = standalone((_stack, fn) => ({
      functions: { ...pipelineFunctions(fn), failureLaneConsumer: fn('failure-lane') },
    }))();
    const body = dashboardBody(monitoring);
    expect(body).toContain('LaneRecordsPublished');
    expect(body).toContain('corpus-failure-lane');
    expect(body.match(/AWS\/Lambda\\",\\"Errors\\"/g)?.length).toBe(9);
  });

  test('a functions object with more properties (the PipelineFunctions construct has `node`) plots only the roles', () => {
    const monitoring = standalone((stack, fn) => {
      const withExtras = { ...pipelineFunctions(fn), node: stack.node, failureLaneConsumer: undefined };
      return { functions: withExtras };
    })();
    expect(dashboardBody(monitoring).match(/AWS\/Lambda\\",\\"Errors\\"/g)?.length).toBe(8);
  });

  test('an error rate outside 0..100 is refused', () => {
    expect(standalone(() => ({ errorRatePercent: 150 }))).toThrow(MonitoringConfigError);
    expect(standalone(() => ({ errorRatePercent: -1 }))).toThrow(/errorRatePercent must be 0 to 100/);
  });

  test('a dead-letter queue name that cannot name an alarm is refused', () => {
    const build = standalone((stack) => ({
      deadLetterQueues: {
        'failure-lane': { queue: sqs.Queue.fromQueueArn(stack, 'D', 'arn:aws:sqs:us-east-1:123456789012:d') },
      },
    }));
    expect(build).toThrow(/must be alphanumeric/);
  });

  test('an imported key (whose policy cannot change) is refused instead of silently dropping notifications', () => {
    const build = standalone((stack) => ({
      encryptionKey: kms.Key.fromKeyArn(
        stack,
        'Imported',
        'arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555',
      ),
    }));
    expect(build).toThrow(MonitoringConfigError);
  });
});

describe('console starts and the runbook, as documented', () => {
  const readme = fs.readFileSync(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
  /** The README text from `heading` to the next heading of the same or a higher level. */
  function section(heading: string): string {
    const start = readme.indexOf(`${heading}\n`);
    expect(start).toBeGreaterThanOrEqual(0);
    const level = /^#+/.exec(heading)?.[0] ?? '#';
    const rest = readme.slice(start + heading.length);
    const next = new RegExp(`\\n#{1,${level.length}} `).exec(rest);
    return next ? rest.slice(0, next.index) : rest;
  }

  test('docs/execution-input.example.json is a valid run input, as the console takes it', () => {
    const example: unknown = JSON.parse(
      fs.readFileSync(path.join(PROJECT_ROOT, 'docs', 'execution-input.example.json'), 'utf8'),
    );
    expect(runInputSchema.safeParse(example)).toMatchObject({ success: true, data: { trigger: 'console' } });
  });

  test('"Start from the console" documents every field of the run input schema, and only those', () => {
    const documented = [...section('### Start from the console').matchAll(/^\| `([A-Za-z]+)` +\|/gm)].map(
      (m) => m[1],
    );
    expect(documented.sort()).toEqual(Object.keys(runInputSchema.shape).sort());
  });

  test('every corpus command the Operate section names exists, with the options it uses', () => {
    const program = buildProgram({
      openBackend: () => Promise.reject(new Error('not opened in this test')),
      stdout: new PassThrough(),
      stderr: new PassThrough(),
      now: () => 0,
      sleep: () => Promise.resolve(),
      exitCode: 0,
    });
    const snippets = [...section('## Operate').matchAll(/`(corpus [^`]+)`/g)].map((m) => m[1] as string);
    expect(snippets.length).toBeGreaterThan(10);
    const named = new Set<string>();
    for (const snippet of snippets) {
      const [, name, ...rest] = snippet.split(/\s+/);
      const command = program.commands.find((c) => c.name() === name);
      expect({ snippet, exists: command !== undefined }).toEqual({ snippet, exists: true });
      named.add(String(name));
      for (const token of rest.filter((t) => t.startsWith('--'))) {
        const known = command?.options.some((o) => o.long === token) ?? false;
        expect({ snippet, option: token, known }).toEqual({ snippet, option: token, known: true });
      }
      const required = command?.registeredArguments.filter((a) => a.required).length ?? 0;
      const positional = rest.filter((t) => !t.startsWith('--')).length;
      expect({ snippet, hasArguments: positional >= required }).toEqual({ snippet, hasArguments: true });
    }
    expect([...named].sort()).toEqual([
      'doctor',
      'failures',
      'reconcile',
      'redrive',
      'report',
      'runs',
      'start',
      'status',
    ]);
  });
});
