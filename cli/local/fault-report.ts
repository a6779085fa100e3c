/**
 * What the faults of a local run actually did, so a fault test can first prove its fault happened: the crashes that
 * fired, by point, and the Bedrock simulator's counts of throttled and faulted model calls.
 */
import type { ModelStats, SimulatorStats } from '@corpus-pipeline/local-aws/bedrock-simulator';
import type { FiredCrash } from '@corpus-pipeline/local-aws/cloud/lambda-runner';
import type { EventSourcePollerStats } from '@corpus-pipeline/local-aws/cloud/sqs-poller';

/** The fired-fault counts of a local run. */
export interface FaultReport {
  /** Every crash fault asked for, with how many invocations it killed. */
  crashes: FiredCrash[];
  /** The Bedrock runtime (Converse and InvokeModel calls), all models together. */
  bedrock: {
    /** Model calls received. */
    requests: number;
    /** Calls answered successfully. */
    succeeded: number;
    /** ThrottlingException answers: by the quota windows (rpm, tpm) and injected by `throttle=F`. */
    throttled: ModelStats['throttled'];
    /** Injected faults by kind. */
    injectedFaults: ModelStats['injectedFaults'];
  };
  /** The SQS event sources (the failure-lane consumer): deliveries, and the ones `redeliver` made twice. */
  sqs: { delivered: number; redelivered: number; failedInvocations: number };
}

/** Builds the report from the functions' crash counters and the simulator's stats. */
export function faultReport(
  functions: Iterable<{ faultsFired(): FiredCrash[] }>,
  stats: SimulatorStats,
  pollers: readonly Pick<EventSourcePollerStats, 'messages' | 'redelivered' | 'failedInvocations'>[] = [],
): FaultReport {
  const crashes: FiredCrash[] = [];
  for (const fn of new Set(functions)) crashes.push(...fn.faultsFired());
  const { requests, succeeded, throttled, injectedFaults } = stats.totals;
  return {
    crashes,
    bedrock: { requests, succeeded, throttled: { ...throttled }, injectedFaults: { ...injectedFaults } },
    sqs: {
      delivered: pollers.reduce((n, p) => n + p.messages, 0),
      redelivered: pollers.reduce((n, p) => n + p.redelivered, 0),
      failedInvocations: pollers.reduce((n, p) => n + p.failedInvocations, 0),
    },
  };
}

/** The report as summary lines (none when nothing reached the model and no crash was asked for). */
export function formatFaultReport(report: FaultReport): string[] {
  const lines: string[] = [];
  const b = report.bedrock;
  if (b.requests > 0) {
    const t = b.throttled;
    lines.push(
      `  Bedrock simulator: ${b.requests} calls received, ${b.succeeded} answered, ${t.rpm + t.tpm + t.injected} throttled ` +
        `(quota rpm ${t.rpm}, tpm ${t.tpm}; injected ${t.injected})`,
    );
  }
  if (report.sqs.redelivered > 0) {
    lines.push(
      `  SQS deliveries: ${report.sqs.delivered}, ${report.sqs.redelivered} delivered twice (redeliver)`,
    );
  }
  if (report.crashes.length > 0) {
    const fired = report.crashes.map((c) => `${c.handler}@${c.step} ${c.fired} of ${c.times}`);
    lines.push(`  crashes fired: ${fired.join(', ')}`);
  }
  return lines;
}
