/**
 * A Distributed Map state of an execution: its Map Run started (see distributed-map.ts), tracked until it
 * settles, and each of its reports placed in the execution's description and history.
 */
import type { JsonValue } from './asl-runtime';
import { LOCAL_CONTEXT_KEY } from './context-paths';
import {
  runDistributedMap,
  type ChildExecutionRequest,
  type ChildExecutionResult,
  type DistributedMapRun,
} from './distributed-map';
import type { ExecutionHistory } from './execution-history';
import type { ExecutionScope } from './execution-scope';
import type { DistributedMapSpec } from './prepare-definition';
import type { MapRunDescription } from './types';

/** What running a Distributed Map state needs from the workflow. */
export interface MapRunStateContext extends Pick<
  DistributedMapRun,
  'evaluator' | 'objectStore' | 'now' | 'concurrencyCap' | 'expressTimeoutMs'
> {
  readonly history: ExecutionHistory;
  /** Runs one child execution of the Map Run under its parent scope. */
  runChild(request: ChildExecutionRequest, parent: ExecutionScope): Promise<ChildExecutionResult>;
  /** Receives every snapshot of the Map Run (DescribeMapRun, the `mapRun` event). */
  onMapRun(description: MapRunDescription): void;
}

/**
 * Runs one Distributed Map state to its output. The run counts as active on the execution until it settles,
 * so the execution's final description shows the Map Run's final state.
 */
export function runMapRunState(
  scope: ExecutionScope,
  spec: DistributedMapSpec,
  input: JsonValue,
  ctx: MapRunStateContext,
): Promise<JsonValue> {
  let started = false;
  const active = scope.root.activeMapRuns;
  const run = runDistributedMap({
    spec,
    input,
    context: { [LOCAL_CONTEXT_KEY]: scope.local },
    executionArn: scope.arn,
    stateMachineArn: scope.stateMachineArn,
    signal: scope.abort.signal,
    evaluator: ctx.evaluator,
    objectStore: ctx.objectStore,
    now: ctx.now,
    concurrencyCap: ctx.concurrencyCap,
    ...(ctx.expressTimeoutMs !== undefined && { expressTimeoutMs: ctx.expressTimeoutMs }),
    runChild: (request) => ctx.runChild(request, scope),
    report: (description) => {
      const first = !started;
      started = true;
      recordMapRun(scope, spec, description, first, ctx);
    },
  });
  active.add(run);
  // Bookkeeping only: the caller awaits `run` itself; both outcomes are handled here.
  void run.then(
    () => active.delete(run),
    () => active.delete(run),
  );
  return run;
}

/** Places one Map Run snapshot in the execution's description and history (MapRunStarted, then its end). */
function recordMapRun(
  scope: ExecutionScope,
  spec: DistributedMapSpec,
  description: MapRunDescription,
  first: boolean,
  ctx: MapRunStateContext,
): void {
  const runs = scope.root.description.mapRuns;
  const at = runs.findIndex((r) => r.mapRunArn === description.mapRunArn);
  if (at === -1) runs.push(description);
  else runs[at] = description;
  if (first) {
    ctx.history.appendTaskEvent(scope, {
      type: 'MapRunStarted',
      stateName: spec.stateName,
      details: { mapRunArn: description.mapRunArn },
    });
  }
  if (description.status !== 'RUNNING') {
    ctx.history.appendTaskEvent(scope, {
      type: endEventOf(description.status),
      stateName: spec.stateName,
      ...(description.error !== undefined && { error: description.error }),
      ...(description.cause !== undefined && { cause: description.cause }),
      details: { mapRunArn: description.mapRunArn },
    });
  }
  ctx.onMapRun(description);
}

function endEventOf(
  status: Exclude<MapRunDescription['status'], 'RUNNING'>,
): 'MapRunSucceeded' | 'MapRunAborted' | 'MapRunFailed' {
  return status === 'SUCCEEDED' ? 'MapRunSucceeded' : status === 'ABORTED' ? 'MapRunAborted' : 'MapRunFailed';
}
