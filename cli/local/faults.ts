import type { BatchFaultOptions, FaultOptions } from '@corpus-pipeline/local-aws/bedrock-simulator';
import type { CrashFault } from '@corpus-pipeline/local-aws/cloud/lambda-runner';
import type { RuntimeFaults } from './runtime';
import {
  FAULT_POINTS,
  RETURN_STEP,
  RETURN_STEP_DESCRIPTION,
  crashStepsOf,
  isFaultHandler,
  type FaultHandler,
} from '../../lambda/shared/fault-points';

/** A `--faults` spec that names an unknown fault or gives a bad value. */
export class FaultSpecError extends Error {
  override readonly name = 'FaultSpecError';
}

/** What a `--faults` spec turns into: settings of the Bedrock simulator's runtime and batch sides. */
export interface FaultPlan {
  /** Runtime (Converse) faults. */
  runtime: FaultOptions;
  /** Batch job faults. */
  batch: BatchFaultOptions;
  /** Faults of the local runtime itself (SQS redelivery, handler crashes). */
  local: RuntimeFaults;
  /** The spec's entries as given, for the run summary. */
  names: string[];
}

interface FaultDefinition {
  /** `name`, or `name=VALUE` with what VALUE is. */
  usage: string;
  /** What it does. */
  help: string;
  apply: (plan: FaultPlan, value: string | undefined) => void;
}

function fraction(name: string, value: string | undefined, fallback?: number): number {
  if (value === undefined) {
    if (fallback !== undefined) return fallback;
    throw new FaultSpecError(`--faults ${name} needs a value: ${name}=F with F between 0 and 1`);
  }
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) {
    throw new FaultSpecError(`--faults ${name}=${value}: the value must be a fraction between 0 and 1`);
  }
  return n;
}

function count(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new FaultSpecError(`--faults ${name}=${value}: the value must be a whole number >= 0`);
  }
  return n;
}

/** Handlers `crash=` can name: the entry file names under lambda/ (the fault-point registry's handlers). */
export const CRASHABLE_HANDLERS: readonly FaultHandler[] = Object.keys(FAULT_POINTS) as FaultHandler[];

/** Every `HANDLER@STEP` a crash fault can name, with what has happened when an invocation gets there. */
export function crashPoints(): { point: string; help: string }[] {
  const points: { point: string; help: string }[] = [];
  for (const handler of CRASHABLE_HANDLERS) {
    for (const [step, help] of Object.entries(FAULT_POINTS[handler] as Record<string, string>)) {
      points.push({ point: `${handler}@${step}`, help });
    }
  }
  points.push({
    point: `HANDLER@${RETURN_STEP}`,
    help: `${RETURN_STEP_DESCRIPTION} (any handler: ${CRASHABLE_HANDLERS.join(', ')})`,
  });
  return points;
}

/** The crash points as help lines. */
function describeCrashPoints(): string {
  const points = crashPoints();
  const width = Math.max(...points.map((p) => p.point.length)) + 2;
  return points.map((p) => `  ${p.point.padEnd(width)} ${p.help}`).join('\n');
}

/** Parses one `crash=` value: `HANDLER@STEP:N`, or `HANDLER:N` for `HANDLER@return:N`. */
function parseCrash(value: string | undefined): CrashFault {
  const text = value ?? '';
  const match = /^([a-z-]+)(?:@([a-z-]+))?:(\d+)$/.exec(text);
  const usage = `expected crash=HANDLER@STEP:N (or crash=HANDLER:N for HANDLER@${RETURN_STEP}) with N >= 1`;
  if (!match) throw new FaultSpecError(`--faults crash=${text}: ${usage}`);
  const handler = match[1] ?? '';
  const step = match[2] ?? RETURN_STEP;
  const times = Number(match[3]);
  if (!isFaultHandler(handler)) {
    throw new FaultSpecError(
      `--faults crash=${text}: unknown handler "${handler}"; HANDLER is one of ${CRASHABLE_HANDLERS.join(', ')}. Crash points:\n${describeCrashPoints()}`,
    );
  }
  const steps = crashStepsOf(handler);
  if (!steps.includes(step)) {
    throw new FaultSpecError(
      `--faults crash=${text}: ${handler} has no step "${step}"; its points are ${steps.map((s) => `${handler}@${s}`).join(', ')}. Crash points:\n${describeCrashPoints()}`,
    );
  }
  if (times < 1) throw new FaultSpecError(`--faults crash=${text}: ${usage}`);
  return { handler, step, times, fault: `crash=${handler}@${step}:${times}` };
}

/** The faults the local runtime can inject, by name. */
export const FAULTS: Readonly<Record<string, FaultDefinition>> = {
  crash: {
    usage: 'crash=HANDLER@STEP:N',
    help:
      'HANDLER dies at STEP (a crash point, listed below), N times: no further code of that invocation runs, it ' +
      `fails as Runtime.ExitError and its execution environment is replaced. crash=HANDLER:N is HANDLER@${RETURN_STEP}:N. ` +
      'Several crash entries may be given',
    apply: (plan, value) => {
      const crash = parseCrash(value);
      const crashes = plan.local.crashes ?? [];
      if (crashes.some((c) => c.handler === crash.handler && c.step === crash.step)) {
        throw new FaultSpecError(
          `--faults crash=${value ?? ''}: ${crash.handler}@${crash.step} is given twice; give it once with the total N`,
        );
      }
      plan.local = { ...plan.local, crashes: [...crashes, crash] };
    },
  },
  redeliver: {
    usage: 'redeliver',
    help: 'every SQS message is delivered twice, as after a lapsed visibility timeout',
    apply: (plan) => {
      plan.local = { ...plan.local, redeliver: true };
    },
  },
  'drop-job-events': {
    usage: 'drop-job-events',
    help: 'no Bedrock batch job state-change event is delivered (the reconciler must finish the run)',
    apply: (plan) => {
      plan.batch = { ...plan.batch, dropEvents: 1 };
    },
  },
  'duplicate-job-events': {
    usage: 'duplicate-job-events',
    help: 'every batch job state-change event is delivered twice',
    apply: (plan) => {
      plan.batch = { ...plan.batch, duplicateEvents: 1 };
    },
  },
  'partial-job': {
    usage: 'partial-job[=F]',
    help: 'batch jobs lose a fraction F (default 0.05) of their records and end PartiallyCompleted',
    apply: (plan, value) => {
      plan.batch = { ...plan.batch, partialJob: fraction('partial-job', value, 0.05) };
    },
  },
  'fail-job': {
    usage: 'fail-job[=N]',
    help: 'the next N batch jobs (default 1) end Failed',
    apply: (plan, value) => {
      plan.batch = { ...plan.batch, failJobs: count('fail-job', value, 1) };
    },
  },
  throttle: {
    usage: 'throttle=F',
    help: 'a fraction F of Converse calls is throttled (ThrottlingException)',
    apply: (plan, value) => {
      plan.runtime = { ...plan.runtime, throttleFraction: fraction('throttle', value) };
    },
  },
  'slow-model': {
    usage: 'slow-model=MS',
    help: 'every model call takes MS milliseconds longer',
    apply: (plan, value) => {
      const ms = count('slow-model', value, Number.NaN);
      if (Number.isNaN(ms)) throw new FaultSpecError('--faults slow-model needs a value: slow-model=MS');
      plan.runtime = { ...plan.runtime, slowMs: ms };
      plan.batch = { ...plan.batch, slowMs: ms };
    },
  },
};

/** One line per known fault, then every crash point, for help text and error messages. */
export function describeFaults(): string {
  const faults = Object.values(FAULTS)
    .map((f) => `  ${f.usage.padEnd(22)} ${f.help}`)
    .join('\n');
  return `${faults}\n\nCrash points (crash=HANDLER@STEP:N):\n${describeCrashPoints()}`;
}

/**
 * Parses a comma-separated `--faults` spec (`drop-job-events,partial-job=0.1,crash=collect@after-results:2`).
 * @throws FaultSpecError naming the unknown fault or bad value, with the list of known faults
 */
export function parseFaults(spec: string): FaultPlan {
  const plan: FaultPlan = { runtime: {}, batch: {}, local: {}, names: [] };
  for (const raw of spec.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    const name = eq === -1 ? entry : entry.slice(0, eq);
    const value = eq === -1 ? undefined : entry.slice(eq + 1);
    const fault = FAULTS[name];
    if (!fault) {
      throw new FaultSpecError(`--faults: unknown fault "${name}". Known faults:\n${describeFaults()}`);
    }
    fault.apply(plan, value);
    plan.names.push(entry);
  }
  return plan;
}
