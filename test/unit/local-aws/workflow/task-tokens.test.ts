import {
  InvalidOutput,
  InvalidToken,
  TaskTimedOut,
  type TaskCall,
} from '@corpus-pipeline/local-aws/workflow';
import { makeWorkflow, parse, sleep, until } from './helpers';

function callbackMachine(task: Record<string, unknown>) {
  return {
    StartAt: 'Submit',
    States: {
      Submit: {
        Type: 'Task',
        Resource: 'arn:aws:states:::sqs:sendMessage.waitForTaskToken',
        Parameters: {
          QueueUrl: 'q',
          MessageBody: { 'token.$': '$$.Task.Token', 'again.$': '$$.Task.Token', 'job.$': '$.job' },
        },
        Catch: [
          { ErrorEquals: ['States.TaskFailed'], ResultPath: '$.caught', Next: 'TaskFailedCatcher' },
          { ErrorEquals: ['States.ALL'], ResultPath: '$.caught', Next: 'OtherCatcher' },
        ],
        End: true,
        ...task,
      },
      TaskFailedCatcher: {
        Type: 'Pass',
        Parameters: { by: 'States.TaskFailed', 'error.$': '$.caught.Error' },
        End: true,
      },
      OtherCatcher: {
        Type: 'Pass',
        Parameters: { by: 'States.ALL', 'error.$': '$.caught.Error' },
        End: true,
      },
    },
  };
}

describe('task tokens', () => {
  it('hands $$.Task.Token to the task and completes on SendTaskSuccess', async () => {
    const calls: TaskCall[] = [];
    const { workflow } = makeWorkflow(callbackMachine({ ResultPath: '$.result' }), async (call) => {
      calls.push(call);
      return { MessageId: 'ignored' };
    });
    const handle = workflow.start({ name: 'cb', input: { job: 'j1' } });
    await until(() => workflow.waitingTasks().length === 1, 'a waiting task');

    const [waiting] = workflow.waitingTasks();
    const [call] = calls;
    const body = (call?.parameters as { MessageBody: { token: string; again: string; job: string } })
      .MessageBody;
    expect(call?.taskToken).toBe(waiting?.taskToken);
    expect(body).toEqual({ token: waiting?.taskToken, again: waiting?.taskToken, job: 'j1' });
    expect(waiting).toMatchObject({ executionArn: handle.executionArn, stateName: 'Submit' });

    workflow.sendTaskSuccess(body.token, JSON.stringify({ jobArn: 'arn:job/1' }));
    const done = await handle.wait();
    expect(done.status).toBe('SUCCEEDED');
    expect(parse(done.output)).toEqual({ job: 'j1', result: { jobArn: 'arn:job/1' } });
    expect(workflow.waitingTasks()).toEqual([]);
    // A used token is no longer waiting; one never issued is invalid.
    expect(() => workflow.sendTaskSuccess(body.token, '{}')).toThrow(TaskTimedOut);
    expect(() => workflow.sendTaskFailure('not-a-token', 'X')).toThrow(InvalidToken);
    const types = workflow.history('cb').map((e) => e.type);
    expect(types).toEqual([
      'ExecutionStarted',
      'StateEntered',
      'TaskScheduled',
      'TaskSubmitted',
      'TaskSucceeded',
      'StateExited',
      'ExecutionSucceeded',
    ]);
  });

  it('fails the task with the SendTaskFailure error, which States.TaskFailed catches', async () => {
    const { workflow } = makeWorkflow(callbackMachine({}), async () => undefined);
    const handle = workflow.start({ input: { job: 'j2' } });
    await until(() => workflow.waitingTasks().length === 1, 'a waiting task');
    const token = workflow.waitingTasks()[0]?.taskToken ?? '';
    expect(() => workflow.sendTaskSuccess(token, 'not json')).toThrow(InvalidOutput);
    workflow.sendTaskFailure(token, 'Bedrock.JobFailed', 'job failed');
    const done = await handle.wait();
    expect(parse(done.output)).toEqual({ by: 'States.TaskFailed', error: 'Bedrock.JobFailed' });
  });

  it('issues a new token per attempt when the task is retried', async () => {
    const tokens: string[] = [];
    const { workflow } = makeWorkflow(
      callbackMachine({ Retry: [{ ErrorEquals: ['Transient'], MaxAttempts: 1 }] }),
      async (call) => {
        tokens.push(call.taskToken ?? '');
        return undefined;
      },
      { retryIntervalOverrides: { Submit: 0 } },
    );
    const handle = workflow.start({ input: { job: 'j3' } });
    await until(() => workflow.waitingTasks().length === 1, 'first attempt');
    workflow.sendTaskFailure(tokens[0] ?? '', 'Transient', 'try again');
    await until(() => tokens.length === 2 && workflow.waitingTasks().length === 1, 'second attempt');
    expect(tokens[1]).not.toBe(tokens[0]);
    expect(() => workflow.sendTaskSuccess(tokens[0] ?? '', '1')).toThrow(TaskTimedOut);
    workflow.sendTaskSuccess(tokens[1] ?? '', '"ok"');
    expect((await handle.wait()).output).toBe('"ok"');
  });

  it('times out after TimeoutSeconds with States.Timeout, which States.TaskFailed does not catch', async () => {
    const { workflow } = makeWorkflow(callbackMachine({ TimeoutSeconds: 1 }), async () => undefined);
    const handle = workflow.start({ name: 'slow', input: { job: 'j4' } });
    await until(() => workflow.waitingTasks().length === 1, 'a waiting task');
    const token = workflow.waitingTasks()[0]?.taskToken ?? '';
    const done = await handle.wait();
    expect(parse(done.output)).toEqual({ by: 'States.ALL', error: 'States.Timeout' });
    expect(() => workflow.sendTaskSuccess(token, '{}')).toThrow(TaskTimedOut);
    expect(workflow.history('slow').map((e) => e.type)).toContain('TaskTimedOut');
  });

  it('keeps waiting while heartbeats arrive and fails with States.HeartbeatTimeout when they stop', async () => {
    const { workflow } = makeWorkflow(
      callbackMachine({ HeartbeatSeconds: 1, TimeoutSeconds: 30 }),
      async () => undefined,
    );
    const handle = workflow.start({ input: { job: 'j5' } });
    await until(() => workflow.waitingTasks().length === 1, 'a waiting task');
    const token = workflow.waitingTasks()[0]?.taskToken ?? '';
    for (let i = 0; i < 6; i += 1) {
      await sleep(250);
      workflow.sendTaskHeartbeat(token);
    }
    // 1.5 s have passed, more than HeartbeatSeconds, and the task still waits.
    expect(workflow.waitingTasks().map((t) => t.taskToken)).toEqual([token]);
    expect(workflow.waitingTasks()[0]?.lastHeartbeat).toBeInstanceOf(Date);
    const done = await handle.wait();
    expect(parse(done.output)).toEqual({ by: 'States.TaskFailed', error: 'States.HeartbeatTimeout' });
    expect(() => workflow.sendTaskHeartbeat(token)).toThrow(TaskTimedOut);
  });

  it('takes TimeoutSecondsPath and HeartbeatSecondsPath from the effective input, not the Parameters output', async () => {
    const calls: TaskCall[] = [];
    const { workflow } = makeWorkflow(
      callbackMachine({ TimeoutSecondsPath: '$.limits.timeout', HeartbeatSecondsPath: '$.limits.heartbeat' }),
      async (call) => {
        calls.push(call);
        return undefined;
      },
    );
    const handle = workflow.start({ input: { job: 'j6', limits: { timeout: 600, heartbeat: 120 } } });
    await until(() => workflow.waitingTasks().length === 1, 'a waiting task');
    expect(calls[0]).toMatchObject({ timeoutSeconds: 600, heartbeatSeconds: 120 });
    expect(Object.keys((calls[0]?.parameters ?? {}) as object)).toEqual(['QueueUrl', 'MessageBody']);
    expect(workflow.waitingTasks()[0]).toMatchObject({ timeoutSeconds: 600, heartbeatSeconds: 120 });
    workflow.stop(handle.executionArn);
    expect((await handle.wait()).status).toBe('ABORTED');
    expect(workflow.waitingTasks()).toEqual([]);
  });

  it('routes tokens of tasks inside Distributed Map children', async () => {
    const { workflow } = makeWorkflow(
      {
        StartAt: 'Jobs',
        States: {
          Jobs: {
            Type: 'Map',
            ItemsPath: '$.shards',
            MaxConcurrency: 2,
            ItemProcessor: {
              ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' },
              StartAt: 'SubmitJob',
              States: {
                SubmitJob: {
                  Type: 'Task',
                  Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
                  Parameters: { 'shard.$': '$', 'token.$': '$$.Task.Token' },
                  End: true,
                },
              },
            },
            End: true,
          },
        },
      },
      async () => undefined,
    );
    const handle = workflow.start({ input: { shards: ['a', 'b', 'c'] } });
    const answered = new Set<string>();
    while (answered.size < 3) {
      await until(() => workflow.waitingTasks().some((t) => !answered.has(t.taskToken)), 'a child waiting');
      for (const task of workflow.waitingTasks()) {
        if (answered.has(task.taskToken)) continue;
        expect(task.executionArn).toMatch(/:execution:Pipeline\/Jobs:/);
        answered.add(task.taskToken);
        workflow.sendTaskSuccess(
          task.taskToken,
          JSON.stringify((task.parameters as { shard: string }).shard.toUpperCase()),
        );
      }
    }
    expect(parse((await handle.wait()).output)).toEqual(['A', 'B', 'C']);
  });
});
