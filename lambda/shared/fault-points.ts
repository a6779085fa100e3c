/**
 * Named points inside the handlers where the local runtime's `crash=HANDLER@STEP:N` fault can kill an invocation,
 * as a timeout or an out-of-memory kill would: no further code of that invocation runs.
 *
 * The registry below is the single source of truth: the handlers call {@link faultPoint} with a (handler, step) pair
 * from it, the local runtime's `--faults` parser validates against it, and `corpus local run --help` lists it.
 * A deployed function never has a hook installed, so {@link faultPoint} is a property read and nothing more.
 */

/**
 * Every handler (the entry file names under lambda/) with the steps it marks, each with what has happened when the
 * invocation reaches it. A handler with no steps can still be crashed at {@link RETURN_STEP}.
 */
export const FAULT_POINTS = {
  plan: {
    'segment-before-summary': "a segment's items, failures and index written, before its summary",
    'before-items': 'merge: recordIds resolved (its failures sent), before the items file is written',
    'after-items': 'merge: items file written, before plan.json',
  },
  'converse-batch': {
    'after-claim': 'records claimed, before any model call',
    'after-stage': 'answers and decisions staged in the attempts history, before the ledger hears of them',
    'after-commit': 'the ledger says published / failed / queued, before the results file is written',
    'after-results': 'results file written, before the failures file and the results-queue send',
    'after-queue-send': 'results queue sent, before the records are marked delivered',
    'after-release': 'everything published, before the failure-lane hand-overs are sent',
    'before-return': 'everything done, before the summary is returned',
  },
  collect: {
    'after-claim': 'a record claimed, before its commit',
    'after-commit': 'a record published in the ledger, before its line is in the results part',
    'after-results': "an output file's results part written, before its results-queue send",
    'after-queue-send': 'results queue sent, before the records are marked delivered',
    'after-release': 'all output collected, before the DLQ messages and the redrive file',
    'before-marker': 'everything done, before the shard is marked collected',
  },
  'converse-items': {},
  finalize: {
    'after-manifest': 'manifest written, before the run event',
  },
  'failure-lane-consumer': {
    'after-claim': 'a record claimed by the lane, before the model call',
    'after-commit': 'a record published in the ledger, before its result line is written',
    'after-results': 'result line written, before the outcome is recorded and the results-queue send',
    'after-queue-send': 'results queue sent, before the record is marked delivered',
    'after-dead-letter': 'a record failed for good and dead-lettered, before the batch response',
    'before-revision': 'records settled, before the run manifest is revised',
  },
  'submit-job': {},
  'job-state': {},
  reconcile: {},
} as const satisfies Record<string, Record<string, string>>;

/** A handler that has fault points: an entry file name under lambda/. */
export type FaultHandler = keyof typeof FAULT_POINTS;

/** A step a handler marks with {@link faultPoint}. */
export type FaultStep<H extends FaultHandler> = keyof (typeof FAULT_POINTS)[H] & string;

/** The pseudo-step every handler has: after the handler returned, before Lambda answers. */
export const RETURN_STEP = 'return';

/** What {@link RETURN_STEP} means, for help texts. */
export const RETURN_STEP_DESCRIPTION = 'the handler returned (its work done), before the answer is delivered';

/** The hook a local runtime installs on `globalThis` to act on fault points. */
export type FaultPointHook = (handler: string, step: string) => void;

declare global {
  var __corpusFaultPoint: FaultPointHook | undefined;
}

/**
 * Marks a step of a handler. Does nothing unless a local runtime installed a hook (a deployed function never has
 * one); under the local runtime's `crash=HANDLER@STEP:N` fault the hook may end the invocation right here, as a
 * crash would: no later line of the invocation runs, not even a `finally` block.
 * @example faultPoint('converse-batch', 'after-claim');
 */
export function faultPoint<H extends FaultHandler>(handler: H, step: FaultStep<H>): void {
  globalThis.__corpusFaultPoint?.(handler, step);
}

/** Whether `handler` names a handler of the registry. */
export function isFaultHandler(handler: string): handler is FaultHandler {
  return Object.prototype.hasOwnProperty.call(FAULT_POINTS, handler);
}

/** The steps a crash fault may name for `handler`: its marked steps, then {@link RETURN_STEP}. */
export function crashStepsOf(handler: FaultHandler): string[] {
  return [...Object.keys(FAULT_POINTS[handler]), RETURN_STEP];
}
