/** The local Step Functions endpoint, driven by the real AWS SDK v3 SFNClient over HTTP against a real LocalWorkflow. */
import {
  DescribeExecutionCommand,
  DescribeMapRunCommand,
  ExecutionAlreadyExists,
  GetExecutionHistoryCommand,
  InvalidToken,
  ListExecutionsCommand,
  ListMapRunsCommand,
  ListStateMachinesCommand,
  SendTaskFailureCommand,
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  SFNClient,
  StartExecutionCommand,
  StopExecutionCommand,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import { startStepFunctionsServer, type StepFunctionsServer } from '@corpus-pipeline/local-aws/stepfunctions';
import { InMemoryObjectStore, LocalWorkflow, type TaskCall } from '@corpus-pipeline/local-aws/workflow';

const ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:Callbacks';
const MAP_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:FanOut';

const CALLBACK_MACHINE = {
  StartAt: 'Submit',
  States: {
    Submit: {
      Type: 'Task',
      Resource: 'arn:aws:states:::sqs:sendMessage.waitForTaskToken',
      Parameters: { QueueUrl: 'q', MessageBody: { 'token.$': '$$.Task.Token', 'job.$': '$.job' } },
      HeartbeatSeconds: 600,
      ResultPath: '$.result',
      Next: 'Done',
    },
    Done: { Type: 'Pass', End: true },
  },
};

const MAP_MACHINE = {
  StartAt: 'FanOut',
  States: {
    FanOut: {
      Type: 'Map',
      ItemReader: {
        Resource: 'arn:aws:states:::s3:getObject',
        ReaderConfig: { InputType: 'JSONL' },
        Parameters: { Bucket: 'in', Key: 'items.jsonl' },
      },
      ItemBatcher: { MaxItemsPerBatch: 2 },
      MaxConcurrency: 2,
      ItemProcessor: {
        ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' },
        StartAt: 'Work',
        States: { Work: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
      },
      End: true,
    },
  },
};

/** Polls until the predicate holds (bounded). */
async function until<T>(get: () => T | undefined, what: string): Promise<T> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The error a promise rejects with (fails when it resolves). */
async function rejection(
  promise: Promise<unknown>,
): Promise<Error & { $metadata?: { httpStatusCode?: number } }> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('startStepFunctionsServer', () => {
  const calls: TaskCall[] = [];
  const workflow = new LocalWorkflow({
    stateMachineArn: ARN,
    definition: CALLBACK_MACHINE,
    objectStore: new InMemoryObjectStore(),
    invokeTask: async (call) => {
      calls.push(call);
      return { MessageId: 'm' };
    },
  });
  let server: StepFunctionsServer;
  let client: SFNClient;

  /** The task token the execution of `job` was given. */
  const tokenOf = (job: string): Promise<string> =>
    until(
      () =>
        calls.find((c) => (c.parameters as { MessageBody: { job: string } }).MessageBody.job === job)
          ?.taskToken,
      `the task token of ${job}`,
    );

  const start = async (name: string, job: string): Promise<string> => {
    const started = await client.send(
      new StartExecutionCommand({ stateMachineArn: ARN, name, input: JSON.stringify({ job }) }),
    );
    return started.executionArn ?? '';
  };

  beforeAll(async () => {
    server = await startStepFunctionsServer(workflow, { port: 0 });
    client = new SFNClient({
      endpoint: server.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      maxAttempts: 1,
    });
  });

  afterAll(async () => {
    for (const execution of workflow.list({ statusFilter: 'RUNNING' })) workflow.stop(execution.executionArn);
    client.destroy();
    await server.stop();
  });

  test('listens on 127.0.0.1', () => {
    expect(server.endpoint).toBe(`http://127.0.0.1:${server.port}`);
  });

  test('SendTaskSuccess resumes the execution with the output; a second one is TaskTimedOut', async () => {
    const before = Date.now();
    const started = await client.send(
      new StartExecutionCommand({ stateMachineArn: ARN, name: 'ok', input: JSON.stringify({ job: 'a' }) }),
    );
    expect(started.executionArn).toBe('arn:aws:states:us-east-1:123456789012:execution:Callbacks:ok');
    expect(started.startDate).toBeInstanceOf(Date);
    expect(started.startDate?.getTime()).toBeGreaterThanOrEqual(before - 1000);

    const token = await tokenOf('a');
    await client.send(
      new SendTaskSuccessCommand({ taskToken: token, output: JSON.stringify({ jobArn: 'j-1' }) }),
    );
    await workflow.wait('ok');

    const described = await client.send(new DescribeExecutionCommand({ executionArn: started.executionArn }));
    expect(described).toMatchObject({
      executionArn: started.executionArn,
      stateMachineArn: ARN,
      name: 'ok',
      status: 'SUCCEEDED',
      input: JSON.stringify({ job: 'a' }),
    });
    expect(described.stopDate).toBeInstanceOf(Date);
    expect(JSON.parse(described.output ?? 'null')).toEqual({ job: 'a', result: { jobArn: 'j-1' } });

    const again = await rejection(
      client.send(new SendTaskSuccessCommand({ taskToken: token, output: '{}' })),
    );
    expect(again.name).toBe('TaskTimedOut');
    expect(again).toBeInstanceOf(TaskTimedOut);
    expect(again.$metadata?.httpStatusCode).toBe(400);
    const late = await rejection(client.send(new SendTaskHeartbeatCommand({ taskToken: token })));
    expect(late.name).toBe('TaskTimedOut');
    const lateFailure = await rejection(client.send(new SendTaskFailureCommand({ taskToken: token })));
    expect(lateFailure.name).toBe('TaskTimedOut');
  });

  test('a token never issued is InvalidToken on every SendTask* operation', async () => {
    const garbage = 'AQBgarbage-token';
    const success = await rejection(
      client.send(new SendTaskSuccessCommand({ taskToken: garbage, output: '{}' })),
    );
    expect(success.name).toBe('InvalidToken');
    expect(success).toBeInstanceOf(InvalidToken);
    const failure = await rejection(
      client.send(new SendTaskFailureCommand({ taskToken: garbage, error: 'E' })),
    );
    expect(failure.name).toBe('InvalidToken');
    const heartbeat = await rejection(client.send(new SendTaskHeartbeatCommand({ taskToken: garbage })));
    expect(heartbeat.name).toBe('InvalidToken');
  });

  test('heartbeats keep the task alive; SendTaskFailure fails it with its error and cause', async () => {
    const arn = await start('fails', 'b');
    const token = await tokenOf('b');
    await client.send(new SendTaskHeartbeatCommand({ taskToken: token }));
    const waiting = workflow.waitingTasks().find((t) => t.taskToken === token);
    expect(waiting?.lastHeartbeat).toBeInstanceOf(Date);

    const notJson = await rejection(
      client.send(new SendTaskSuccessCommand({ taskToken: token, output: 'not json' })),
    );
    expect(notJson.name).toBe('InvalidOutput');
    const noOutput = await rejection(
      client.send(new SendTaskSuccessCommand({ taskToken: token } as { taskToken: string; output: string })),
    );
    expect(noOutput.name).toBe('ValidationException');
    expect(noOutput.message).toContain("'output'");
    const longError = await rejection(
      client.send(new SendTaskFailureCommand({ taskToken: token, error: 'E'.repeat(257) })),
    );
    expect(longError.name).toBe('ValidationException');

    await client.send(
      new SendTaskFailureCommand({ taskToken: token, error: 'Bedrock.JobFailed', cause: 'the job failed' }),
    );
    await workflow.wait(arn);
    const described = await client.send(new DescribeExecutionCommand({ executionArn: arn }));
    expect(described).toMatchObject({
      status: 'FAILED',
      error: 'Bedrock.JobFailed',
      cause: 'the job failed',
    });
    expect(described.output).toBeUndefined();
  });

  test('StartExecution validation: names, input, state machine and ARNs', async () => {
    await start('dup', 'c');
    const again = await rejection(
      client.send(new StartExecutionCommand({ stateMachineArn: ARN, name: 'dup', input: '{"job":"other"}' })),
    );
    expect(again.name).toBe('ExecutionAlreadyExists');
    expect(again).toBeInstanceOf(ExecutionAlreadyExists);
    // The same name and input while running returns the running execution, like the service.
    const same = await client.send(
      new StartExecutionCommand({ stateMachineArn: ARN, name: 'dup', input: JSON.stringify({ job: 'c' }) }),
    );
    expect(same.executionArn).toBe('arn:aws:states:us-east-1:123456789012:execution:Callbacks:dup');

    const badName = await rejection(
      client.send(new StartExecutionCommand({ stateMachineArn: ARN, name: 'a b' })),
    );
    expect(badName.name).toBe('InvalidName');
    const badInput = await rejection(
      client.send(new StartExecutionCommand({ stateMachineArn: ARN, input: '{' })),
    );
    expect(badInput.name).toBe('InvalidExecutionInput');
    const other = await rejection(
      client.send(new StartExecutionCommand({ stateMachineArn: `${ARN}Other`, input: '{}' })),
    );
    expect(other.name).toBe('StateMachineDoesNotExist');
    const notArn = await rejection(client.send(new StartExecutionCommand({ stateMachineArn: 'Callbacks' })));
    expect(notArn.name).toBe('InvalidArn');
    const missing = await rejection(
      client.send(
        new DescribeExecutionCommand({ executionArn: `${ARN.replace('stateMachine', 'execution')}:nope` }),
      ),
    );
    expect(missing.name).toBe('ExecutionDoesNotExist');
    const wrongType = await rejection(client.send(new DescribeExecutionCommand({ executionArn: ARN })));
    expect(wrongType.name).toBe('InvalidArn');
  });

  test('ListExecutions: newest first, status filter, pages', async () => {
    await start('list-1', 'd');
    await start('list-2', 'e');
    const all = await client.send(new ListExecutionsCommand({ stateMachineArn: ARN }));
    const names = (all.executions ?? []).map((e) => e.name);
    expect(names).toEqual(workflow.list().map((e) => e.name));
    expect(names).toEqual(expect.arrayContaining(['ok', 'fails', 'dup', 'list-1', 'list-2']));
    expect(all.nextToken).toBeUndefined();
    expect(all.executions?.[0]?.startDate).toBeInstanceOf(Date);

    const running = await client.send(
      new ListExecutionsCommand({ stateMachineArn: ARN, statusFilter: 'RUNNING' }),
    );
    expect((running.executions ?? []).map((e) => e.name).sort()).toEqual(['dup', 'list-1', 'list-2']);
    const failed = await client.send(
      new ListExecutionsCommand({ stateMachineArn: ARN, statusFilter: 'FAILED' }),
    );
    expect(failed.executions).toEqual([
      expect.objectContaining({ name: 'fails', status: 'FAILED', stateMachineArn: ARN }),
    ]);

    const paged: string[] = [];
    let nextToken: string | undefined;
    do {
      const page = await client.send(
        new ListExecutionsCommand({ stateMachineArn: ARN, maxResults: 2, nextToken }),
      );
      expect((page.executions ?? []).length).toBeLessThanOrEqual(2);
      paged.push(...(page.executions ?? []).map((e) => e.name ?? ''));
      nextToken = page.nextToken;
    } while (nextToken !== undefined);
    expect(paged).toEqual(names);

    const badToken = await rejection(
      client.send(new ListExecutionsCommand({ stateMachineArn: ARN, nextToken: 'garbage' })),
    );
    expect(badToken.name).toBe('InvalidToken');
    const badStatus = await rejection(
      client.send(new ListExecutionsCommand({ stateMachineArn: ARN, statusFilter: 'DONE' as 'RUNNING' })),
    );
    expect(badStatus.name).toBe('ValidationException');
    const tooMany = await rejection(
      client.send(new ListExecutionsCommand({ stateMachineArn: ARN, maxResults: 1001 })),
    );
    expect(tooMany.name).toBe('ValidationException');
  });

  test('StopExecution aborts a running execution with its error and cause', async () => {
    const arn = await start('stopped', 'f');
    await tokenOf('f');
    const stopped = await client.send(
      new StopExecutionCommand({ executionArn: arn, error: 'Operator.Stop', cause: 'by hand' }),
    );
    expect(stopped.stopDate).toBeInstanceOf(Date);
    await workflow.wait(arn);
    const described = await client.send(new DescribeExecutionCommand({ executionArn: arn }));
    expect(described).toMatchObject({ status: 'ABORTED', error: 'Operator.Stop', cause: 'by hand' });
    const token = await tokenOf('f');
    const late = await rejection(client.send(new SendTaskSuccessCommand({ taskToken: token, output: '{}' })));
    expect(late.name).toBe('TaskTimedOut');
  });

  test('GetExecutionHistory: service event types and details, reverse order, pages', async () => {
    const arn = 'arn:aws:states:us-east-1:123456789012:execution:Callbacks:ok';
    const history = await client.send(new GetExecutionHistoryCommand({ executionArn: arn }));
    const events = history.events ?? [];
    expect(events.map((e) => e.type)).toEqual([
      'ExecutionStarted',
      'TaskStateEntered',
      'TaskScheduled',
      'TaskSubmitted',
      'TaskSucceeded',
      'TaskStateExited',
      'PassStateEntered',
      'PassStateExited',
      'ExecutionSucceeded',
    ]);
    expect(events.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(events[0]?.timestamp).toBeInstanceOf(Date);
    expect(JSON.parse(events[0]?.executionStartedEventDetails?.input ?? 'null')).toEqual({ job: 'a' });
    expect(events[1]?.stateEnteredEventDetails?.name).toBe('Submit');
    expect(events[2]?.taskScheduledEventDetails).toMatchObject({
      resourceType: 'sqs',
      resource: 'sendMessage.waitForTaskToken',
      region: 'us-east-1',
    });
    expect(JSON.parse(events[4]?.taskSucceededEventDetails?.output ?? 'null')).toEqual({ jobArn: 'j-1' });

    const reversed = await client.send(
      new GetExecutionHistoryCommand({ executionArn: arn, reverseOrder: true, maxResults: 4 }),
    );
    expect(reversed.events?.map((e) => e.id)).toEqual([9, 8, 7, 6]);
    const rest = await client.send(
      new GetExecutionHistoryCommand({
        executionArn: arn,
        reverseOrder: true,
        nextToken: reversed.nextToken,
      }),
    );
    expect(rest.events?.map((e) => e.id)).toEqual([5, 4, 3, 2, 1]);
    expect(rest.nextToken).toBeUndefined();

    const noData = await client.send(
      new GetExecutionHistoryCommand({ executionArn: arn, includeExecutionData: false }),
    );
    expect(noData.events?.[0]?.executionStartedEventDetails?.input).toBeUndefined();

    const failed = await client.send(
      new GetExecutionHistoryCommand({
        executionArn: 'arn:aws:states:us-east-1:123456789012:execution:Callbacks:fails',
      }),
    );
    const taskFailed = failed.events?.find((e) => e.type === 'TaskFailed');
    expect(taskFailed?.taskFailedEventDetails).toMatchObject({
      error: 'Bedrock.JobFailed',
      cause: 'the job failed',
    });
    expect(failed.events?.at(-1)?.executionFailedEventDetails).toMatchObject({ error: 'Bedrock.JobFailed' });
  });

  test('protocol errors: unknown operation, bad JSON, wrong field type', async () => {
    const unknown = await rejection(client.send(new ListStateMachinesCommand({})));
    expect(unknown.name).toBe('UnknownOperationException');

    const post = (target: string, body: string): Promise<Response> =>
      fetch(server.endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': target },
        body,
      });
    const badJson = await post('AWSStepFunctions.SendTaskSuccess', '{"taskToken":');
    expect(badJson.status).toBe(400);
    expect(badJson.headers.get('content-type')).toBe('application/x-amz-json-1.0');
    expect(await badJson.json()).toMatchObject({ __type: 'com.amazon.coral.service#SerializationException' });

    const wrongType = await post('AWSStepFunctions.SendTaskHeartbeat', '{"taskToken": 5}');
    expect(await wrongType.json()).toMatchObject({
      __type: 'com.amazon.coral.service#SerializationException',
    });

    const garbage = await post('AWSStepFunctions.SendTaskHeartbeat', '{"taskToken": "nope"}');
    expect(garbage.status).toBe(400);
    expect(await garbage.json()).toMatchObject({ __type: 'com.amazonaws.sfn#InvalidToken' });

    const noTarget = await post('', '{}');
    expect(await noTarget.json()).toMatchObject({
      __type: 'com.amazon.coral.service#UnknownOperationException',
    });
  });
});

describe('startStepFunctionsServer: Map Runs', () => {
  const store = new InMemoryObjectStore();
  const workflow = new LocalWorkflow({
    stateMachineArn: MAP_ARN,
    definition: MAP_MACHINE,
    objectStore: store,
    invokeTask: async (call) => ({ seen: (call.parameters as { Items: unknown[] }).Items.length }),
  });
  let server: StepFunctionsServer;
  let client: SFNClient;

  beforeAll(async () => {
    await store.putObject(
      'in',
      'items.jsonl',
      ['1', '2', '3', '4', '5'].map((id) => JSON.stringify({ id })).join('\n'),
    );
    server = await startStepFunctionsServer(workflow);
    client = new SFNClient({
      endpoint: server.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
      maxAttempts: 1,
    });
  });

  afterAll(async () => {
    client.destroy();
    await server.stop();
  });

  test('ListMapRuns and DescribeMapRun report the Distributed Map run and its counts', async () => {
    const { executionArn } = await client.send(
      new StartExecutionCommand({ stateMachineArn: MAP_ARN, name: 'fan' }),
    );
    const done = await workflow.wait(executionArn ?? '');
    expect(done.status).toBe('SUCCEEDED');

    const listed = await client.send(new ListMapRunsCommand({ executionArn }));
    expect(listed.mapRuns).toHaveLength(1);
    const [item] = listed.mapRuns ?? [];
    expect(item).toMatchObject({
      executionArn,
      stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:FanOut/FanOut',
    });
    expect(item?.mapRunArn).toMatch(/^arn:aws:states:us-east-1:123456789012:mapRun:FanOut\/FanOut:/);
    expect(item?.startDate).toBeInstanceOf(Date);

    const run = await client.send(new DescribeMapRunCommand({ mapRunArn: item?.mapRunArn }));
    expect(run).toMatchObject({
      mapRunArn: item?.mapRunArn,
      executionArn,
      status: 'SUCCEEDED',
      maxConcurrency: 2,
      itemCounts: expect.objectContaining({ total: 5, succeeded: 5, failed: 0 }),
      executionCounts: expect.objectContaining({ total: 3, succeeded: 3 }),
    });
    expect(run.stopDate).toBeInstanceOf(Date);

    const history = await client.send(new GetExecutionHistoryCommand({ executionArn }));
    const types = history.events?.map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['MapStateEntered', 'MapRunStarted', 'MapRunSucceeded']));
    expect(
      history.events?.find((e) => e.type === 'MapRunStarted')?.mapRunStartedEventDetails?.mapRunArn,
    ).toBe(item?.mapRunArn);

    const missingRun = await rejection(
      client.send(new DescribeMapRunCommand({ mapRunArn: `${item?.mapRunArn ?? ''}x` })),
    );
    expect(missingRun.name).toBe('ResourceNotFound');
    const missingExecution = await rejection(
      client.send(new ListMapRunsCommand({ executionArn: `${executionArn ?? ''}-nope` })),
    );
    expect(missingExecution.name).toBe('ExecutionDoesNotExist');
  });
});
