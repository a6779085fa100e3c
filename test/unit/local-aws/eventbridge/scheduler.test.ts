/** The local scheduler: expression validation, what each target receives, and tick semantics (driven by tick()). */
import {
  InvalidScheduleExpressionError,
  parseScheduleExpression,
  startScheduler,
  type ScheduleLike,
  type ScheduleTargetLike,
} from '@corpus-pipeline/local-aws/eventbridge';
import type { ScheduleDescription, TargetDescription } from '@corpus-pipeline/local-aws/cloud/template';

const RULE_ARN = 'arn:aws:events:eu-west-1:123456789012:rule/Reconcile';
const FUNCTION_ARN = 'arn:aws:lambda:eu-west-1:123456789012:function:reconciler';
const NOW = new Date('2024-06-01T10:20:30.456Z');

function target(extra: Partial<TargetDescription> = {}): TargetDescription {
  return {
    id: 'Target0',
    arn: FUNCTION_ARN,
    logicalId: 'Reconciler',
    service: 'lambda',
    input: undefined,
    inputPath: undefined,
    inputTransformer: undefined,
    roleArn: undefined,
    sqsMessageGroupId: undefined,
    deadLetterArn: undefined,
    retryPolicy: undefined,
    ...extra,
  };
}

function rule(extra: Partial<ScheduleDescription> = {}): ScheduleDescription {
  return {
    logicalId: 'ReconcileRule',
    source: 'events-rule',
    name: 'Reconcile',
    arn: RULE_ARN,
    scheduleExpression: 'rate(5 minutes)',
    state: 'ENABLED',
    targets: [target()],
    ...extra,
  };
}

/** A promise with its resolve function. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('parseScheduleExpression', () => {
  test.each([
    ['rate(1 minute)', { kind: 'rate', value: 1, unit: 'minute', periodMs: 60_000 }],
    ['rate(5 minutes)', { kind: 'rate', value: 5, unit: 'minute', periodMs: 300_000 }],
    ['rate(2 hours)', { kind: 'rate', value: 2, unit: 'hour', periodMs: 7_200_000 }],
    ['rate(1 day)', { kind: 'rate', value: 1, unit: 'day', periodMs: 86_400_000 }],
    ['cron(0/5 * * * ? *)', { kind: 'cron', minutes: '0/5', dayOfMonth: '*', dayOfWeek: '?' }],
    ['cron(15 10 ? * MON-FRI *)', { kind: 'cron', hours: '10', dayOfWeek: 'MON-FRI' }],
    ['cron(0 18 L * ? 2024-2030)', { kind: 'cron', dayOfMonth: 'L', year: '2024-2030' }],
    ['cron(0 8 ? JAN,JUL 6#3 *)', { kind: 'cron', month: 'JAN,JUL', dayOfWeek: '6#3' }],
  ])('accepts %s', (expression, expected) => {
    expect(parseScheduleExpression(expression)).toMatchObject(expected);
  });

  test.each([
    ['every 5 minutes', 'expected rate(...) or cron(...)'],
    ['rate(5 minute)', "plural 'minutes'"],
    ['rate(1 minutes)', "singular 'minute'"],
    ['rate(0 minutes)', 'positive'],
    ['rate(5 weeks)', 'minute(s), hour(s) or day(s)'],
    ['rate(-1 hours)', 'positive integer'],
    ['cron(0 12 * * *)', '6 fields'],
    ['cron(0 12 * * * *)', 'exactly one of day-of-month and day-of-week'],
    ['cron(0 12 ? * ? *)', 'exactly one of day-of-month and day-of-week'],
    ['cron(60 12 * * ? *)', 'minutes value 60 is outside 0-59'],
    ['cron(0 24 * * ? *)', 'hours value 24'],
    ['cron(0 12 * 13 ? *)', 'month value 13'],
    ['cron(0 12 * FOO ? *)', "'FOO' is not a valid month value"],
    ['cron(0/0 12 * * ? *)', 'increment'],
    ['cron(? 12 * * ? *)', "'?' is only allowed"],
    ['at(2030-01-01T00:00:00)', 'only valid for EventBridge Scheduler'],
  ])('rejects %s', (expression, reason) => {
    expect(() => parseScheduleExpression(expression)).toThrow(InvalidScheduleExpressionError);
    expect(() => parseScheduleExpression(expression)).toThrow(reason);
  });

  test('at() for EventBridge Scheduler schedules', () => {
    expect(parseScheduleExpression('at(2030-01-02T03:04:05)', true)).toEqual({
      kind: 'at',
      date: new Date('2030-01-02T03:04:05Z'),
    });
    expect(() => parseScheduleExpression('at(2030-02-30T00:00:00)', true)).toThrow('not a valid date');
    expect(() => parseScheduleExpression('at(tomorrow)', true)).toThrow('at(yyyy-mm-ddThh:mm:ss)');
  });
});

describe('startScheduler', () => {
  test('refuses an invalid expression up front, naming the schedule (disabled ones too)', () => {
    const fire = jest.fn(async () => undefined);
    const start = (): unknown =>
      startScheduler(
        [rule(), rule({ name: 'Broken', state: 'DISABLED', scheduleExpression: 'rate(often)' })],
        fire,
        {
          intervalMs: 0,
        },
      );
    expect(start).toThrow(InvalidScheduleExpressionError);
    expect(start).toThrow(/^Schedule Broken: Parameter ScheduleExpression is not valid: 'rate\(often\)'/);
    expect(fire).not.toHaveBeenCalled();
  });

  test('each tick fires every enabled rule once with the Scheduled Event, skipping disabled ones', async () => {
    const fired: { name: string; input: string; target: string | undefined }[] = [];
    const scheduler = startScheduler(
      [rule(), rule({ name: 'Off', arn: `${RULE_ARN}-off`, state: 'DISABLED' })],
      async (schedule, input, t) => {
        fired.push({ name: schedule.name, input, target: t?.id });
      },
      { intervalMs: 0, now: () => NOW },
    );
    await scheduler.tick();
    await scheduler.tick();
    await scheduler.stop();

    expect(fired.map((f) => [f.name, f.target])).toEqual([
      ['Reconcile', 'Target0'],
      ['Reconcile', 'Target0'],
    ]);
    const events = fired.map((f) => JSON.parse(f.input) as Record<string, unknown>);
    expect(events[0]).toEqual({
      version: '0',
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: '123456789012',
      time: '2024-06-01T10:20:30Z',
      region: 'eu-west-1',
      resources: [RULE_ARN],
      detail: {},
    });
    expect(events[1]?.id).not.toBe(events[0]?.id);
  });

  test('targets get their constant Input, InputPath or InputTransformer applied to the event', async () => {
    const inputs = new Map<string, string>();
    const scheduler = startScheduler(
      [
        rule({
          targets: [
            target({ id: 'constant', input: '{"action":"reconcile"}' }),
            target({ id: 'path', inputPath: '$.time' }),
            target({
              id: 'transformed',
              inputTransformer: {
                inputPathsMap: { t: '$.time' },
                inputTemplate: '{"at": <t>, "rule": <aws.events.rule-name>}',
              },
            }),
          ],
        }),
      ],
      async (_schedule, input, t) => {
        inputs.set(t?.id ?? '', input);
      },
      { intervalMs: 0, now: () => NOW },
    );
    await scheduler.tick();
    await scheduler.stop();
    expect(Object.fromEntries(inputs)).toEqual({
      constant: '{"action":"reconcile"}',
      path: '"2024-06-01T10:20:30Z"',
      transformed: '{"at":"2024-06-01T10:20:30Z","rule":"Reconcile"}',
    });
  });

  test('EventBridge Scheduler schedules send their Input with context attributes; at() fires once', async () => {
    const scheduleArn = 'arn:aws:scheduler:eu-west-1:123456789012:schedule/default/nightly';
    const fired: string[] = [];
    const scheduler = startScheduler(
      [
        rule({
          source: 'scheduler',
          name: 'nightly',
          arn: scheduleArn,
          scheduleExpression: 'cron(0 2 * * ? *)',
          targets: [
            target({
              input:
                '{"arn":"<aws.scheduler.schedule-arn>","at":"<aws.scheduler.scheduled-time>","n":<aws.scheduler.attempt-number>}',
            }),
          ],
        }),
        rule({
          source: 'scheduler',
          name: 'once',
          scheduleExpression: 'at(2030-01-01T00:00:00)',
          targets: [target()],
        }),
      ],
      async (schedule, input) => {
        fired.push(`${schedule.name} ${input}`);
      },
      { intervalMs: 0, now: () => NOW },
    );
    await scheduler.tick();
    await scheduler.tick();
    await scheduler.stop();
    const nightly = `nightly {"arn":"${scheduleArn}","at":"2024-06-01T10:20:30Z","n":1}`;
    expect(fired).toEqual([nightly, 'once {}', nightly]);
  });

  test('a schedule still firing is skipped by the next tick, others still fire', async () => {
    const gate = deferred();
    const counts = new Map<string, number>();
    const scheduler = startScheduler(
      [rule({ name: 'Slow' }), rule({ name: 'Fast', arn: `${RULE_ARN}-fast` })],
      async (schedule) => {
        counts.set(schedule.name, (counts.get(schedule.name) ?? 0) + 1);
        if (schedule.name === 'Slow') await gate.promise;
      },
      { intervalMs: 0 },
    );
    const first = scheduler.tick();
    // Let the first tick's fast fire settle (Slow stays blocked on the gate).
    await new Promise((resolve) => setImmediate(resolve));
    await scheduler.tick();
    await scheduler.tick();
    expect(Object.fromEntries(counts)).toEqual({ Slow: 1, Fast: 3 });
    gate.resolve();
    await first;
    await scheduler.tick();
    expect(Object.fromEntries(counts)).toEqual({ Slow: 2, Fast: 4 });
    await scheduler.stop();
  });

  test('a failing fire is reported through onError and the scheduler keeps going', async () => {
    const errors: { message: string; schedule: string; target: string | undefined }[] = [];
    let attempts = 0;
    const scheduler = startScheduler(
      [
        rule({
          targets: [
            target({ id: 'bad' }),
            target({ id: 'good' }),
            target({ id: 'no-match', inputPath: '$.nope' }),
          ],
        }),
      ],
      async (_schedule, _input, t) => {
        attempts += 1;
        if (t?.id === 'bad') throw new Error('delivery failed');
      },
      {
        intervalMs: 0,
        onError: (error, schedule, t) =>
          errors.push({ message: (error as Error).message, schedule: schedule.name, target: t?.id }),
      },
    );
    await scheduler.tick();
    await scheduler.tick();
    await scheduler.stop();
    expect(attempts).toBe(4);
    expect(errors).toHaveLength(4);
    const firstTick = errors.slice(0, 2).sort((a, b) => String(a.target).localeCompare(String(b.target)));
    expect(firstTick).toEqual([
      { message: 'delivery failed', schedule: 'Reconcile', target: 'bad' },
      {
        message: expect.stringContaining('InputPath $.nope selects nothing'),
        schedule: 'Reconcile',
        target: 'no-match',
      },
    ]);
  });

  test('the default onError writes to console.error', async () => {
    const spy = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const scheduler = startScheduler(
        [rule()],
        async () => {
          throw new Error('boom');
        },
        { intervalMs: 0 },
      );
      await scheduler.tick();
      await scheduler.stop();
      expect(spy).toHaveBeenCalledWith(
        'local scheduler: schedule Reconcile target Target0 failed:',
        expect.any(Error),
      );
    } finally {
      spy.mockRestore();
    }
  });

  test('stop() waits for running fires, and later ticks fire nothing', async () => {
    const gate = deferred();
    let finished = false;
    let calls = 0;
    const scheduler = startScheduler(
      [rule()],
      async () => {
        calls += 1;
        await gate.promise;
        finished = true;
      },
      { intervalMs: 0 },
    );
    // Left running on purpose: stop() must wait for this fire, which the gate holds open.
    void scheduler.tick();
    let stopped = false;
    const stopping = scheduler.stop().then(() => {
      stopped = true;
    });
    await Promise.resolve();
    expect(stopped).toBe(false);
    gate.resolve();
    await stopping;
    expect(finished).toBe(true);
    await scheduler.tick();
    expect(calls).toBe(1);
  });

  test('a minimal schedule shape without targets fires once per tick with no target', async () => {
    const minimal: ScheduleLike[] = [{ name: 'tiny', scheduleExpression: 'rate(1 hour)' }];
    const seen: (ScheduleTargetLike | undefined)[] = [];
    const inputs: string[] = [];
    const scheduler = startScheduler(
      minimal,
      async (_schedule, input, t) => {
        seen.push(t);
        inputs.push(input);
      },
      { intervalMs: 0, region: 'ap-south-1', account: '111122223333' },
    );
    await scheduler.tick();
    await scheduler.stop();
    expect(seen).toEqual([undefined]);
    expect(JSON.parse(inputs[0] ?? '{}')).toMatchObject({
      region: 'ap-south-1',
      account: '111122223333',
      resources: [],
    });
  });

  test('the interval timer ticks on its own', async () => {
    const fired = deferred();
    const scheduler = startScheduler([rule()], async () => fired.resolve(), { intervalMs: 5 });
    await fired.promise;
    await scheduler.stop();
  });
});
