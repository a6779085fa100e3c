/**
 * Fires the stack's schedules (scheduled EventBridge rules and EventBridge Scheduler schedules) on a
 * compressed clock: every `rate()` / `cron()` / `at()` expression is validated like the service does,
 * then fired on each tick of one short interval (2 s by default), so reconcilers run promptly offline.
 *
 * What a target receives follows the services:
 * - a scheduled rule (`events-rule`) sends the `Scheduled Event` envelope
 *   (`source: aws.events`, `resources: [ruleArn]`, `detail: {}`), shaped by the target's `Input`,
 *   `InputPath` or `InputTransformer` like any rule target;
 * - an EventBridge Scheduler schedule (`scheduler`) sends the target's `Input` with its context
 *   attributes (`<aws.scheduler.schedule-arn>`, `<aws.scheduler.scheduled-time>`,
 *   `<aws.scheduler.execution-id>`, `<aws.scheduler.attempt-number>`) replaced, or `{}` without one.
 *   A one-time `at()` schedule fires on the first tick only.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { formatEventTime, type EventBridgeEvent } from './bus';
import { computeTargetInput, type InputTransformerLike } from './input-transformer';

/** A target of a schedule, as `ScheduleDescription.targets` (packages/local-aws/cloud/template.ts) records it. */
export interface ScheduleTargetLike {
  readonly id: string;
  readonly arn: string;
  readonly input?: string | undefined;
  readonly inputPath?: string | undefined;
  readonly inputTransformer?: InputTransformerLike | undefined;
}

/** The part of a `ScheduleDescription` the scheduler reads. */
export interface ScheduleLike {
  readonly name: string;
  /** The rule's or schedule's ARN; region and account of the event come from it. */
  readonly arn?: string;
  /** `rate(5 minutes)`, `cron(0/5 * * * ? *)`, or (Scheduler only) `at(2030-01-01T00:00:00)`. */
  readonly scheduleExpression: string;
  /** `DISABLED` schedules never fire; anything else (or nothing) is enabled. */
  readonly state?: string;
  /** A scheduled EventBridge rule (default) or an EventBridge Scheduler schedule. */
  readonly source?: 'events-rule' | 'scheduler';
  /** Where each firing goes; without this field the schedule fires once with no target. */
  readonly targets?: readonly ScheduleTargetLike[];
}

/** The targets' type of a schedule type. */
export type ScheduleTargetOf<S extends ScheduleLike> = NonNullable<S['targets']>[number];

/**
 * Delivers one firing to one target.
 * @param schedule the schedule that fired
 * @param input what the target receives (JSON text): the event, or the target's Input
 * @param target the target (undefined when the schedule has no `targets` field)
 */
export type ScheduleFire<S extends ScheduleLike> = (
  schedule: S,
  input: string,
  target: ScheduleTargetOf<S> | undefined,
) => Promise<void>;

/** Receives a firing that failed (fire rejected, or the target input could not be built). */
export type ScheduleErrorHandler<S extends ScheduleLike> = (
  error: unknown,
  schedule: S,
  target: ScheduleTargetOf<S> | undefined,
) => void;

/** Options of {@link startScheduler}. */
export interface SchedulerOptions<S extends ScheduleLike> {
  /** Tick interval in ms, the compressed period of every schedule (default 2000); 0 disables the timer (tick() only). */
  readonly intervalMs?: number;
  /** Clock of the events' `time` (default: real time). */
  readonly now?: () => Date;
  /** Where failed firings are reported (default: console.error). */
  readonly onError?: ScheduleErrorHandler<S>;
  /** Region and account of events when a schedule has no ARN (default us-east-1 / 000000000000). */
  readonly region?: string;
  readonly account?: string;
}

/** A running scheduler. */
export interface Scheduler {
  /**
   * Fires every enabled schedule that is not still running from an earlier tick; resolves when the
   * firings this tick started have finished (their failures go to `onError`, never here).
   */
  tick(): Promise<void>;
  /** Stops ticking and waits for running firings. Later ticks do nothing. */
  stop(): Promise<void>;
}

/** Default tick interval. */
export const DEFAULT_SCHEDULE_INTERVAL_MS = 2000;

/** A schedule expression the services would refuse. */
export class InvalidScheduleExpressionError extends Error {
  override readonly name = 'InvalidScheduleExpressionError';

  /**
   * @param expression the refused expression
   * @param reason what is wrong with it
   * @param scheduleName the schedule it belongs to, when known
   */
  constructor(
    readonly expression: string,
    readonly reason: string,
    scheduleName?: string,
  ) {
    super(
      `${scheduleName === undefined ? '' : `Schedule ${scheduleName}: `}Parameter ScheduleExpression is not valid: '${expression}' (${reason}).`,
    );
  }
}

/** A parsed schedule expression. */
export type ParsedScheduleExpression =
  | {
      readonly kind: 'rate';
      readonly value: number;
      readonly unit: 'minute' | 'hour' | 'day';
      readonly periodMs: number;
    }
  | {
      readonly kind: 'cron';
      readonly minutes: string;
      readonly hours: string;
      readonly dayOfMonth: string;
      readonly month: string;
      readonly dayOfWeek: string;
      readonly year: string;
    }
  | { readonly kind: 'at'; readonly date: Date };

const UNIT_MS = { minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;
const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const DAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

interface CronField {
  readonly label: string;
  readonly min: number;
  readonly max: number;
  readonly names?: readonly string[];
  /** Extra single-token forms the field accepts (L, W, #...). */
  readonly special?: RegExp;
  readonly question?: boolean;
}

const CRON_FIELDS: readonly CronField[] = [
  { label: 'minutes', min: 0, max: 59 },
  { label: 'hours', min: 0, max: 23 },
  { label: 'day-of-month', min: 1, max: 31, special: /^(L|\d{1,2}W)$/, question: true },
  { label: 'month', min: 1, max: 12, names: MONTHS },
  {
    label: 'day-of-week',
    min: 1,
    max: 7,
    names: DAYS,
    special: /^([1-7]|[A-Z]{3})(L|#[1-5])$|^L$/,
    question: true,
  },
  { label: 'year', min: 1970, max: 2199 },
];

function fieldValue(token: string, field: CronField, expression: string): number {
  const named = field.names?.indexOf(token.toUpperCase()) ?? -1;
  if (named !== -1) return named + 1;
  if (!/^\d+$/.test(token)) {
    throw new InvalidScheduleExpressionError(expression, `'${token}' is not a valid ${field.label} value`);
  }
  const value = Number(token);
  if (value < field.min || value > field.max) {
    throw new InvalidScheduleExpressionError(
      expression,
      `${field.label} value ${value} is outside ${field.min}-${field.max}`,
    );
  }
  return value;
}

function checkCronField(text: string, field: CronField, expression: string): void {
  if (text === '?') {
    if (!field.question) {
      throw new InvalidScheduleExpressionError(
        expression,
        `'?' is only allowed in day-of-month or day-of-week`,
      );
    }
    return;
  }
  for (const part of text.split(',')) {
    if (field.special?.test(part.toUpperCase())) continue;
    const [range, step, ...extra] = part.split('/');
    if (range === undefined || range === '' || extra.length > 0) {
      throw new InvalidScheduleExpressionError(expression, `'${part}' is not a valid ${field.label} value`);
    }
    if (step !== undefined && (!/^\d+$/.test(step) || Number(step) === 0)) {
      throw new InvalidScheduleExpressionError(
        expression,
        `'${step}' is not a valid ${field.label} increment`,
      );
    }
    if (range === '*') continue;
    const bounds = range.split('-');
    if (bounds.length > 2) {
      throw new InvalidScheduleExpressionError(expression, `'${range}' is not a valid ${field.label} range`);
    }
    for (const bound of bounds) fieldValue(bound, field, expression);
  }
}

/**
 * Parses and validates a schedule expression the way PutRule / CreateSchedule do: `rate(1 minute)`,
 * `rate(5 minutes)` (singular unit for 1, plural otherwise), six-field `cron(...)` with exactly one
 * of day-of-month and day-of-week set to `?`, and (EventBridge Scheduler only) `at(yyyy-mm-ddThh:mm:ss)`.
 *
 * @param expression the expression
 * @param allowAt true for EventBridge Scheduler schedules, which also accept one-time `at()` expressions
 * @throws InvalidScheduleExpressionError
 */
export function parseScheduleExpression(expression: string, allowAt = false): ParsedScheduleExpression {
  const call = /^(rate|cron|at)\((.*)\)$/.exec(expression.trim());
  if (call === null) {
    throw new InvalidScheduleExpressionError(
      expression,
      `expected rate(...) or cron(...)${allowAt ? ' or at(...)' : ''}`,
    );
  }
  const [, kind, body = ''] = call;
  if (kind === 'rate') {
    const rate = /^\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*$/.exec(body);
    if (rate === null) {
      throw new InvalidScheduleExpressionError(
        expression,
        'a rate is a positive integer then minute(s), hour(s) or day(s)',
      );
    }
    const value = Number(rate[1]);
    const word = rate[2] ?? '';
    const unit = word.replace(/s$/, '') as 'minute' | 'hour' | 'day';
    if (value < 1) throw new InvalidScheduleExpressionError(expression, 'the rate value must be positive');
    if ((value === 1) !== (word === unit)) {
      throw new InvalidScheduleExpressionError(
        expression,
        value === 1
          ? `use the singular '${unit}' for a value of 1`
          : `use the plural '${unit}s' for a value above 1`,
      );
    }
    return { kind: 'rate', value, unit, periodMs: value * UNIT_MS[unit] };
  }
  if (kind === 'cron') {
    const fields = body.trim().split(/\s+/);
    if (fields.length !== 6) {
      throw new InvalidScheduleExpressionError(
        expression,
        `a cron expression has 6 fields (minutes hours day-of-month month day-of-week year), not ${fields.length}`,
      );
    }
    fields.forEach((text, i) => checkCronField(text, CRON_FIELDS[i] as CronField, expression));
    const [minutes = '', hours = '', dayOfMonth = '', month = '', dayOfWeek = '', year = ''] = fields;
    if ((dayOfMonth === '?') === (dayOfWeek === '?')) {
      throw new InvalidScheduleExpressionError(
        expression,
        'exactly one of day-of-month and day-of-week must be ?',
      );
    }
    return { kind: 'cron', minutes, hours, dayOfMonth, month, dayOfWeek, year };
  }
  if (!allowAt) {
    throw new InvalidScheduleExpressionError(
      expression,
      'at(...) is only valid for EventBridge Scheduler schedules',
    );
  }
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/.test(body)) {
    throw new InvalidScheduleExpressionError(expression, 'an at() expression is at(yyyy-mm-ddThh:mm:ss)');
  }
  const date = new Date(`${body}Z`);
  if (Number.isNaN(date.getTime()) || date.toISOString().slice(0, 19) !== body) {
    throw new InvalidScheduleExpressionError(expression, `'${body}' is not a valid date and time`);
  }
  return { kind: 'at', date };
}

/** Region and account of an ARN (`arn:aws:events:REGION:ACCOUNT:rule/NAME`). */
function arnParts(arn: string | undefined): { region?: string; account?: string } {
  const parts = arn?.split(':') ?? [];
  if (parts[0] !== 'arn' || parts.length < 6) return {};
  return { ...(parts[3] ? { region: parts[3] } : {}), ...(parts[4] ? { account: parts[4] } : {}) };
}

const SCHEDULER_ATTRIBUTES = /<aws\.scheduler\.(schedule-arn|scheduled-time|execution-id|attempt-number)>/g;

/** Parses every schedule's expression, naming the schedule in the error of the first invalid one. */
function parseSchedules<S extends ScheduleLike>(schedules: readonly S[]): Map<S, ParsedScheduleExpression> {
  const parsed = new Map<S, ParsedScheduleExpression>();
  for (const schedule of schedules) {
    try {
      parsed.set(
        schedule,
        parseScheduleExpression(schedule.scheduleExpression, schedule.source === 'scheduler'),
      );
    } catch (err) {
      if (err instanceof InvalidScheduleExpressionError) {
        throw new InvalidScheduleExpressionError(err.expression, err.reason, schedule.name);
      }
      throw err;
    }
  }
  return parsed;
}

/** Hands a failed firing to `onError` (console.error by default); a throwing handler is logged, never thrown. */
function errorReporter<S extends ScheduleLike>(
  onError: ScheduleErrorHandler<S> | undefined,
): ScheduleErrorHandler<S> {
  const handler: ScheduleErrorHandler<S> =
    onError ??
    ((error, schedule, target) =>
      console.error(
        `local scheduler: schedule ${schedule.name}${target === undefined ? '' : ` target ${target.id}`} failed:`,
        error,
      ));
  return (error, schedule, target) => {
    try {
      handler(error, schedule, target);
    } catch (handlerError) {
      console.error(`local scheduler: the onError handler threw while reporting`, error, handlerError);
    }
  };
}

/** What an EventBridge Scheduler target receives: its Input with the context attributes replaced, or `{}`. */
function schedulerTargetInput(
  schedule: ScheduleLike,
  target: ScheduleTargetLike | undefined,
  time: Date,
): string {
  const input = target?.input;
  if (input === undefined) return '{}';
  const executionId = randomBytes(8).toString('hex');
  return input.replace(SCHEDULER_ATTRIBUTES, (_match, attribute: string) => {
    if (attribute === 'schedule-arn') return schedule.arn ?? '';
    if (attribute === 'scheduled-time') return formatEventTime(time);
    if (attribute === 'execution-id') return executionId;
    return '1';
  });
}

/** What a scheduled rule's target receives: the `Scheduled Event` envelope, shaped by the target's input settings. */
function scheduledRuleInput(
  schedule: ScheduleLike,
  target: ScheduleTargetLike | undefined,
  time: Date,
  defaults: { readonly region?: string; readonly account?: string },
): string {
  const { region, account } = arnParts(schedule.arn);
  const event: EventBridgeEvent = {
    version: '0',
    id: randomUUID(),
    'detail-type': 'Scheduled Event',
    source: 'aws.events',
    account: account ?? defaults.account ?? '000000000000',
    time: formatEventTime(time),
    region: region ?? defaults.region ?? 'us-east-1',
    resources: schedule.arn === undefined ? [] : [schedule.arn],
    detail: {},
  };
  if (target === undefined) return JSON.stringify(event);
  return computeTargetInput(
    {
      ...(target.input !== undefined && { input: target.input }),
      ...(target.inputPath !== undefined && { inputPath: target.inputPath }),
      ...(target.inputTransformer !== undefined && { inputTransformer: target.inputTransformer }),
    },
    event as unknown as Record<string, unknown>,
    { ruleArn: schedule.arn ?? '', ruleName: schedule.name, ingestionTime: time },
  );
}

/**
 * Starts firing `schedules`. Expressions are validated at once (all of them, disabled ones too,
 * as the services refuse them on creation).
 *
 * @param schedules the stack's schedules (`stack.schedules`) or anything of their shape
 * @param fire delivers one firing to one target: called once per target per tick
 * @param options interval, clock, error handler
 * @throws InvalidScheduleExpressionError naming the first schedule whose expression is invalid
 */
export function startScheduler<S extends ScheduleLike>(
  schedules: readonly S[],
  fire: ScheduleFire<S>,
  options: SchedulerOptions<S> = {},
): Scheduler {
  const intervalMs = options.intervalMs ?? DEFAULT_SCHEDULE_INTERVAL_MS;
  if (!Number.isFinite(intervalMs) || intervalMs < 0) {
    throw new RangeError(`intervalMs must be a non-negative number, got ${intervalMs}`);
  }
  const now = options.now ?? (() => new Date());
  const report = errorReporter(options.onError);
  const parsed = parseSchedules(schedules);
  const running = new Map<S, Promise<void>>();
  const firedOnce = new Set<S>();
  let stopped = false;

  const inputFor = (schedule: S, target: ScheduleTargetOf<S> | undefined, time: Date): string =>
    schedule.source === 'scheduler'
      ? schedulerTargetInput(schedule, target, time)
      : scheduledRuleInput(schedule, target, time, options);

  const fireSchedule = async (schedule: S): Promise<void> => {
    const time = now();
    const targets: (ScheduleTargetOf<S> | undefined)[] =
      schedule.targets === undefined
        ? [undefined]
        : [...(schedule.targets as readonly ScheduleTargetOf<S>[])];
    await Promise.all(
      targets.map(async (target) => {
        try {
          await fire(schedule, inputFor(schedule, target, time), target);
        } catch (err) {
          report(err, schedule, target);
        }
      }),
    );
  };

  /** Whether a schedule fires this tick: enabled, not still running, and a one-time `at()` not yet fired. */
  const isDue = (schedule: S): boolean => {
    if (schedule.state === 'DISABLED' || running.has(schedule)) return false;
    if (parsed.get(schedule)?.kind !== 'at') return true;
    if (firedOnce.has(schedule)) return false;
    firedOnce.add(schedule);
    return true;
  };

  const tick = async (): Promise<void> => {
    if (stopped) return;
    const started: Promise<void>[] = [];
    for (const schedule of schedules) {
      if (!isDue(schedule)) continue;
      const firing = fireSchedule(schedule).finally(() => running.delete(schedule));
      running.set(schedule, firing);
      started.push(firing);
    }
    await Promise.all(started);
  };

  const timer =
    intervalMs > 0
      ? setInterval(() => {
          // Fire and forget: fireSchedule reports each failure, so a tick never rejects; stop() awaits it.
          void tick();
        }, intervalMs)
      : undefined;
  // The scheduler alone must not keep the process alive.
  timer?.unref();

  return {
    tick,
    stop: async () => {
      stopped = true;
      if (timer !== undefined) clearInterval(timer);
      await Promise.all([...running.values()]);
    },
  };
}
