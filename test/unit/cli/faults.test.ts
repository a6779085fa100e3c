// The `--faults` parser: every fault, crash points validated against the registry in lambda/shared/fault-points.
import { basename } from 'node:path';

import {
  FAULT_POINTS,
  RETURN_STEP,
  crashStepsOf,
  faultPoint,
  type FaultPointHook,
} from '../../../lambda/shared/fault-points';
import { FUNCTION_ENTRIES } from '../../../lib/functions';
import { FaultSpecError, crashPoints, describeFaults, parseFaults } from '../../../cli/local/faults';

/** The FaultSpecError message a spec is refused with. */
function refusal(spec: string): string {
  try {
    parseFaults(spec);
  } catch (error) {
    if (error instanceof FaultSpecError) return error.message;
    throw error;
  }
  throw new Error(`--faults ${spec} was accepted`);
}

describe('the fault-point registry', () => {
  it('names exactly the handlers the stack deploys (the lambda/ entry file names)', () => {
    const entries = Object.values(FUNCTION_ENTRIES).map((entry) => basename(entry, '.ts'));
    expect(Object.keys(FAULT_POINTS).sort()).toEqual([...entries].sort());
  });

  it('gives every step a description and keeps `return` for the pseudo-step', () => {
    for (const [handler, steps] of Object.entries(FAULT_POINTS)) {
      for (const [step, help] of Object.entries(steps as Record<string, string>)) {
        expect(step).toMatch(/^[a-z]+(-[a-z]+)*$/);
        expect(step).not.toBe(RETURN_STEP);
        expect(help.length).toBeGreaterThan(10);
      }
      expect(crashStepsOf(handler as keyof typeof FAULT_POINTS).at(-1)).toBe(RETURN_STEP);
    }
  });

  it('faultPoint does nothing without a hook and calls the installed hook with its handler and step', () => {
    expect(globalThis.__corpusFaultPoint).toBeUndefined();
    expect(() => faultPoint('converse-batch', 'after-claim')).not.toThrow();
    const seen: [string, string][] = [];
    const hook: FaultPointHook = (handler, step) => seen.push([handler, step]);
    globalThis.__corpusFaultPoint = hook;
    try {
      faultPoint('collect', 'before-marker');
      faultPoint('plan', 'after-items');
    } finally {
      globalThis.__corpusFaultPoint = undefined;
    }
    expect(seen).toEqual([
      ['collect', 'before-marker'],
      ['plan', 'after-items'],
    ]);
  });
});

describe('parseFaults', () => {
  it('parses several crash entries at named points, and HANDLER:N as HANDLER@return:N', () => {
    const plan = parseFaults(
      'crash=converse-batch@after-commit:1, crash=collect@after-results:2,crash=finalize:3',
    );
    expect(plan.local.crashes).toEqual([
      {
        handler: 'converse-batch',
        step: 'after-commit',
        times: 1,
        fault: 'crash=converse-batch@after-commit:1',
      },
      { handler: 'collect', step: 'after-results', times: 2, fault: 'crash=collect@after-results:2' },
      { handler: 'finalize', step: 'return', times: 3, fault: 'crash=finalize@return:3' },
    ]);
    expect(plan.names).toEqual([
      'crash=converse-batch@after-commit:1',
      'crash=collect@after-results:2',
      'crash=finalize:3',
    ]);
    // A handler without marked steps still has `return`.
    expect(parseFaults('crash=submit-job@return:1').local.crashes).toEqual([
      { handler: 'submit-job', step: 'return', times: 1, fault: 'crash=submit-job@return:1' },
    ]);
  });

  it('refuses an unknown handler or step with the list of valid points, a bad count, a point given twice', () => {
    const handler = refusal('crash=converse@after-claim:1');
    expect(handler).toMatch(/unknown handler "converse"; HANDLER is one of plan, converse-batch/);
    expect(handler).toMatch(/^ {2}converse-batch@after-claim +records claimed, before any model call$/m);
    const step = refusal('crash=finalize@after-claim:1');
    expect(step).toMatch(
      /finalize has no step "after-claim"; its points are finalize@after-manifest, finalize@return/,
    );
    expect(step).toMatch(/^ {2}collect@before-marker +/m);
    expect(refusal('crash=collect@after-results:0')).toMatch(/N >= 1/);
    expect(refusal('crash=collect@after-results')).toMatch(/expected crash=HANDLER@STEP:N/);
    expect(refusal('crash=collect:1,crash=collect@return:2')).toMatch(/collect@return is given twice/);
  });

  it('parses the other faults as before', () => {
    const plan = parseFaults('throttle=0.3,slow-model=5,partial-job,fail-job=2,redeliver,drop-job-events');
    expect(plan.runtime).toEqual({ throttleFraction: 0.3, slowMs: 5 });
    expect(plan.batch).toEqual({ slowMs: 5, partialJob: 0.05, failJobs: 2, dropEvents: 1 });
    expect(plan.local).toEqual({ redeliver: true });
    expect(refusal('throttle=2')).toMatch(/fraction between 0 and 1/);
    expect(refusal('gremlins')).toMatch(/unknown fault "gremlins"/);
  });

  it('describes every crash point from the registry', () => {
    const points = crashPoints().map((p) => p.point);
    for (const [handler, steps] of Object.entries(FAULT_POINTS)) {
      for (const step of Object.keys(steps)) expect(points).toContain(`${handler}@${step}`);
    }
    expect(points.at(-1)).toBe('HANDLER@return');
    expect(describeFaults()).toMatch(/Crash points \(crash=HANDLER@STEP:N\):/);
  });
});
