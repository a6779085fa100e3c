import { basename } from 'node:path';
import { FUNCTION_ENTRIES } from '../lib/functions';
import type { BatchFaultOptions, FaultOptions } from './bedrock-simulator';
import type { RuntimeFaults } from './runtime';

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

/** Handlers `crash=` can name: the entry file names under lambda/. */
export const CRASHABLE_HANDLERS: readonly string[] = Object.values(FUNCTION_ENTRIES).map((e) =>
  basename(e, '.ts'),
);

/** The faults the local runtime can inject, by name. */
export const FAULTS: Readonly<Record<string, FaultDefinition>> = {
  crash: {
    usage: 'crash=HANDLER:N',
    help: `HANDLER throws after doing its work, N times (${CRASHABLE_HANDLERS.join(', ')})`,
    apply: (plan, value) => {
      const match = /^([a-z-]+):(\d+)$/.exec(value ?? '');
      const handler = match?.[1];
      if (!match || !handler || !CRASHABLE_HANDLERS.includes(handler)) {
        throw new FaultSpecError(
          `--faults crash=${value ?? ''}: expected crash=HANDLER:N with HANDLER one of ${CRASHABLE_HANDLERS.join(', ')}`,
        );
      }
      plan.local = { ...plan.local, crash: { handler, times: Number(match[2]) } };
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

/** One line per known fault, for help text and error messages. */
export function describeFaults(): string {
  return Object.values(FAULTS)
    .map((f) => `  ${f.usage.padEnd(22)} ${f.help}`)
    .join('\n');
}

/**
 * Parses a comma-separated `--faults` spec (`drop-job-events,partial-job=0.1`).
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
