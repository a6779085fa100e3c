import {
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  InvalidName,
  MAX_TIMER_SECONDS,
  WorkflowDefinitionError,
  prepareDefinition,
  type ExecutionDescription,
} from '@corpus-pipeline/local-aws/workflow';
import { STATE_MACHINE_ARN, aslError, makeWorkflow, parse, until } from './helpers';

const PASS_ONLY = { StartAt: 'P', States: { P: { Type: 'Pass', End: true } } };

describe('LocalWorkflow context object', () => {
  it('resolves $$.Execution, $$.StateMachine and $$.State from the runner (with an injected clock)', async () => {
    const now = new Date('2030-01-02T03:04:05.678Z');
    const { workflow } = makeWorkflow(
      {
        StartAt: 'Describe',
        States: {
          Describe: {
            Type: 'Pass',
            Parameters: {
              'name.$': '$$.Execution.Name',
              'id.$': '$$.Execution.Id',
              'start.$': '$$.Execution.StartTime',
              'input.$': '$$.Execution.Input',
              'role.$': '$$.Execution.RoleArn',
              'machine.$': '$$.StateMachine.Name',
              'machineId.$': '$$.StateMachine.Id',
              'state.$': '$$.State.Name',
              'entered.$': '$$.State.EnteredTime',
              'greeting.$': "States.Format('hello {} in {}', $$.Execution.Name, '$$.Execution.Name')",
            },
            Next: 'Each',
          },
          Each: {
            Type: 'Map',
            ItemsPath: '$.input.items',
            ItemSelector: { 'item.$': '$$.Map.Item.Value' },
            ItemProcessor: {
              StartAt: 'Inner',
              States: {
                Inner: {
                  Type: 'Pass',
                  Parameters: {
                    'item.$': '$.item',
                    'executionInput.$': '$$.Execution.Input',
                    'state.$': '$$.State.Name',
                  },
                  End: true,
                },
              },
            },
            ResultPath: '$.inner',
            End: true,
          },
        },
      },
      async () => null,
      { clock: { now: () => now } },
    );
    const done = await workflow.start({ name: 'ctx-1', input: { items: [1, 2] } }).wait();
    const arn = 'arn:aws:states:us-east-1:123456789012:execution:Pipeline:ctx-1';
    expect(done).toMatchObject({ status: 'SUCCEEDED', executionArn: arn, startDate: now, stopDate: now });
    expect(parse(done.output)).toEqual({
      name: 'ctx-1',
      id: arn,
      start: '2030-01-02T03:04:05.678Z',
      input: { items: [1, 2] },
      role: 'arn:aws:iam::123456789012:role/LocalWorkflowRole',
      machine: 'Pipeline',
      machineId: STATE_MACHINE_ARN,
      state: 'Describe',
      entered: '2030-01-02T03:04:05.678Z',
      greeting: 'hello ctx-1 in $$.Execution.Name',
      inner: [
        { item: 1, executionInput: { items: [1, 2] }, state: 'Inner' },
        { item: 2, executionInput: { items: [1, 2] }, state: 'Inner' },
      ],
    });
  });
});

describe('LocalWorkflow executions', () => {
  it('rejects a reused name like StartExecution, unless the same input is still running', async () => {
    let release: (() => void) | undefined;
    const { workflow } = makeWorkflow(
      {
        StartAt: 'T',
        States: { T: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
      },
      () =>
        new Promise((resolve) => {
          release = () => resolve('done');
        }),
    );
    const first = workflow.start({ name: 'same', input: { a: 1 } });
    expect(workflow.start({ name: 'same', input: { a: 1 } }).executionArn).toBe(first.executionArn);
    expect(() => workflow.start({ name: 'same', input: { a: 2 } })).toThrow(ExecutionAlreadyExists);
    expect(() => workflow.start({ name: 'bad name' })).toThrow(InvalidName);
    expect(workflow.describe('same').status).toBe('RUNNING');
    await until(() => release !== undefined, 'the task to start');
    release?.();
    await workflow.wait(first.executionArn);
    expect(() => workflow.start({ name: 'same', input: { a: 1 } })).toThrow(ExecutionAlreadyExists);
    expect(() => workflow.describe('missing')).toThrow(ExecutionDoesNotExist);
  });

  it('lists, describes, reports failures and emits execution events', async () => {
    const events: ExecutionDescription[] = [];
    const { workflow } = makeWorkflow(
      {
        StartAt: 'T',
        States: { T: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
      },
      async (call) => {
        if ((call.parameters as { fail?: boolean }).fail) throw aslError('Lambda.Unknown', 'boom');
        return { ok: true };
      },
    );
    workflow.on('execution', (e) => events.push(e));
    const ok = await workflow.start({ name: 'ok' }).wait();
    const bad = await workflow.start({ name: 'bad', input: { fail: true } }).wait();
    expect(ok).toMatchObject({ status: 'SUCCEEDED', output: '{"ok":true}', input: '{}' });
    expect(bad).toMatchObject({
      status: 'FAILED',
      error: 'Lambda.Unknown',
      cause: 'boom',
      input: '{"fail":true}',
    });
    expect(
      workflow
        .list()
        .map((e) => e.name)
        .sort(),
    ).toEqual(['bad', 'ok']);
    expect(workflow.list({ statusFilter: 'FAILED' }).map((e) => e.name)).toEqual(['bad']);
    expect(events.map((e) => `${e.name}:${e.status}`)).toEqual([
      'ok:RUNNING',
      'ok:SUCCEEDED',
      'bad:RUNNING',
      'bad:FAILED',
    ]);
    expect(workflow.history('bad').map((e) => e.type)).toEqual([
      'ExecutionStarted',
      'StateEntered',
      'TaskScheduled',
      'TaskFailed',
      'StateFailed',
      'ExecutionFailed',
    ]);
  });

  it('fails the execution with the Fail state error, and times out on the machine TimeoutSeconds', async () => {
    const failing = makeWorkflow(
      { StartAt: 'F', States: { F: { Type: 'Fail', Error: 'Pipeline.Invalid', Cause: 'bad input' } } },
      async () => null,
    ).workflow;
    expect(await failing.start({}).wait()).toMatchObject({
      status: 'FAILED',
      error: 'Pipeline.Invalid',
      cause: 'bad input',
    });

    const slow = makeWorkflow(
      {
        TimeoutSeconds: 1,
        StartAt: 'T',
        States: { T: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
      },
      () => new Promise(() => undefined),
    ).workflow;
    expect(await slow.start({}).wait()).toMatchObject({ status: 'TIMED_OUT' });
  });
});

describe('definition preparation', () => {
  it('gives tasks without a timeout the largest timer instead of the library 60 s default', () => {
    const prepared = prepareDefinition({
      StartAt: 'A',
      States: {
        A: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', Next: 'B' },
        B: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', TimeoutSeconds: 900, End: true },
      },
    });
    const states = prepared.root.definition.States as Record<string, { TimeoutSeconds?: number }>;
    expect(states.A?.TimeoutSeconds).toBe(MAX_TIMER_SECONDS);
    expect(states.B?.TimeoutSeconds).toBe(900);
    expect(prepared.root.tasks.get('A')?.timeoutSeconds).toBeUndefined();
  });

  it('replaces a Distributed Map by a Task of the same name that keeps the Map control fields', () => {
    const prepared = prepareDefinition({
      StartAt: 'M',
      States: {
        M: {
          Type: 'Map',
          InputPath: '$.in',
          ResultPath: '$.out',
          Retry: [{ ErrorEquals: ['States.ALL'] }],
          Catch: [{ ErrorEquals: ['States.ALL'], Next: 'Z' }],
          ItemProcessor: {
            ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'EXPRESS' },
            StartAt: 'T',
            States: { T: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
          },
          Label: 'Fan',
          Next: 'Z',
        },
        Z: { Type: 'Succeed' },
      },
    });
    expect((prepared.root.definition.States as Record<string, unknown>).M).toEqual({
      Type: 'Task',
      Resource: 'arn:aws:states:::local:distributedMap',
      TimeoutSeconds: MAX_TIMER_SECONDS,
      InputPath: '$.in',
      ResultPath: '$.out',
      Retry: [{ ErrorEquals: ['States.ALL'] }],
      Catch: [{ ErrorEquals: ['States.ALL'], Next: 'Z' }],
      Next: 'Z',
    });
    const spec = prepared.root.distributedMaps.get('M');
    expect(spec).toMatchObject({ label: 'Fan', executionType: 'EXPRESS' });
    expect([...(spec?.processor.tasks.keys() ?? [])]).toEqual(['T']);
  });

  it.each([
    ['JSONata', { QueryLanguage: 'JSONata', ...PASS_ONLY }, /QueryLanguage "JSONata" is not supported/],
    [
      'Assign',
      { StartAt: 'P', States: { P: { Type: 'Pass', Assign: { x: 1 }, End: true } } },
      /`Assign` \(workflow variables\) is not supported/,
    ],
    [
      'Arguments',
      {
        StartAt: 'P',
        States: { P: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', Arguments: {}, End: true } },
      },
      /`Arguments` is a JSONata field/,
    ],
    [
      'a timeout beyond the timer limit',
      { StartAt: 'P', States: { P: { Type: 'Task', Resource: 'x', TimeoutSeconds: 3_000_000, End: true } } },
      /TimeoutSeconds 3000000 exceeds 2147483 s/,
    ],
    [
      'a Wait beyond the timer limit',
      { StartAt: 'P', States: { P: { Type: 'Wait', Seconds: 2_147_484, End: true } } },
      /Seconds 2147484 exceeds/,
    ],
    [
      '$$.State.RetryCount',
      {
        StartAt: 'P',
        States: { P: { Type: 'Pass', Parameters: { 'n.$': '$$.State.RetryCount' }, End: true } },
      },
      /\$\$\.State\.RetryCount is not supported/,
    ],
    [
      'an unsupported ItemReader InputType',
      {
        StartAt: 'M',
        States: {
          M: {
            Type: 'Map',
            ItemReader: {
              Resource: 'arn:aws:states:::s3:getObject',
              ReaderConfig: { InputType: 'PARQUET' },
              Parameters: {},
            },
            ItemProcessor: {
              ProcessorConfig: { Mode: 'DISTRIBUTED' },
              StartAt: 'P',
              States: { P: { Type: 'Pass', End: true } },
            },
            End: true,
          },
        },
      },
      /InputType "PARQUET" is not supported locally/,
    ],
  ])('rejects %s with a clear error', (_what, definition, message) => {
    expect(() => makeWorkflow(definition, async () => null)).toThrow(WorkflowDefinitionError);
    expect(() => makeWorkflow(definition, async () => null)).toThrow(message);
  });

  it('accepts the definition as JSON text and rejects text that is not JSON', () => {
    expect(
      makeWorkflow(JSON.stringify(PASS_ONLY) as unknown as object, async () => null).workflow
        .stateMachineName,
    ).toBe('Pipeline');
    expect(() => makeWorkflow('{nope' as unknown as object, async () => null)).toThrow(
      /definition is not JSON/,
    );
  });
});
