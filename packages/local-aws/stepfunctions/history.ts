/**
 * Turns the local runner's history into GetExecutionHistory's shape: service event types
 * (`TaskStateEntered`, `MapRunStarted`...) with their `...EventDetails` structures.
 */
import type { HistoryEvent } from '../workflow';

/** A HistoryEvent as GetExecutionHistory sends it over the JSON protocol (dates as epoch seconds). */
export type ServiceHistoryEvent = {
  id: number;
  previousEventId: number;
  timestamp: number;
  type: string;
} & Record<string, unknown>;

/** State types a state's `...StateEntered` / `...StateExited` events are named after. */
export type StateTypes = ReadonlyMap<string, string>;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Maps every state name of a definition (at any depth: Parallel branches, Map processors) to its
 * `Type`. A Distributed Map the runner replaced by a Task is reported as a Map.
 *
 * @param definition the (prepared) definition, `{ States: {...} }`
 * @param distributedMaps names of the Distributed Map states
 */
export function stateTypesOf(
  definition: unknown,
  distributedMaps: Iterable<string> = [],
): Map<string, string> {
  const types = new Map<string, string>();
  const visit = (container: unknown): void => {
    if (!isRecord(container) || !isRecord(container.States)) return;
    for (const [name, state] of Object.entries(container.States)) {
      if (!isRecord(state)) continue;
      if (typeof state.Type === 'string') types.set(name, state.Type);
      if (Array.isArray(state.Branches)) state.Branches.forEach(visit);
      visit(state.ItemProcessor);
      visit(state.Iterator);
    }
  };
  visit(definition);
  for (const name of distributedMaps) types.set(name, 'Map');
  return types;
}

/** Splits a Task `Resource` into the history's resourceType and resource, as the service reports them. */
export function splitResource(arn: string): { resourceType: string; resource: string } {
  // arn:aws:states:::sqs:sendMessage.waitForTaskToken -> sqs / sendMessage.waitForTaskToken
  // arn:aws:states:::aws-sdk:bedrock:getModelInvocationJob -> aws-sdk:bedrock / getModelInvocationJob
  const integration = /^arn:[^:]+:states:::(.+):([^:]+)$/.exec(arn);
  if (integration?.[1] !== undefined && integration[2] !== undefined) {
    return { resourceType: integration[1], resource: integration[2] };
  }
  return { resourceType: arn.split(':')[2] ?? 'unknown', resource: arn };
}

function jsonText(value: unknown): string {
  return JSON.stringify(value ?? null);
}

function seconds(date: Date): number {
  return date.getTime() / 1000;
}

function definedOnly(details: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(details).filter(([, value]) => value !== undefined));
}

/**
 * Converts the runner's history to the service's events. Runner events that have a service
 * counterpart get its type and details; the few the service has no name for (`StateRetried`,
 * `StateCaught`, `ParallelBranch*`, `StateFailed` of a non-Map/Parallel state) keep their local
 * type so nothing is hidden.
 *
 * @param events the runner's history, oldest first
 * @param options state name to state Type (see {@link stateTypesOf}), the execution's region, and
 *   `includeData: false` to drop inputs and outputs like `includeExecutionData: false`
 */
export function toServiceHistory(
  events: readonly HistoryEvent[],
  options: { stateTypes: StateTypes; region: string; includeData?: boolean },
): ServiceHistoryEvent[] {
  const { stateTypes, region, includeData = true } = options;
  const resources = new Map<string, { resourceType: string; resource: string }>();
  const data = (key: 'input' | 'output', value: unknown): Record<string, unknown> =>
    includeData ? { [key]: jsonText(value), [`${key}Details`]: { truncated: false } } : {};
  return events.map((event) => {
    const base = {
      id: event.id,
      previousEventId: event.id - 1,
      timestamp: seconds(event.timestamp),
    };
    const stateType = event.stateName === undefined ? undefined : stateTypes.get(event.stateName);
    const task = (): { resourceType: string; resource: string } =>
      resources.get(event.stateName ?? '') ?? { resourceType: 'unknown', resource: 'unknown' };
    const errorCause = definedOnly({ error: event.error, cause: event.cause });
    switch (event.type) {
      case 'ExecutionStarted':
        return { ...base, type: event.type, executionStartedEventDetails: data('input', event.input) };
      case 'ExecutionSucceeded':
        return { ...base, type: event.type, executionSucceededEventDetails: data('output', event.output) };
      case 'ExecutionFailed':
        return { ...base, type: event.type, executionFailedEventDetails: errorCause };
      case 'ExecutionAborted':
        return { ...base, type: event.type, executionAbortedEventDetails: errorCause };
      case 'ExecutionTimedOut':
        return {
          ...base,
          type: event.type,
          executionTimedOutEventDetails: { error: event.error ?? 'States.Timeout', ...errorCause },
        };
      case 'StateEntered':
        return {
          ...base,
          type: `${stateType ?? ''}StateEntered`,
          stateEnteredEventDetails: { name: event.stateName, ...data('input', event.input) },
        };
      case 'StateExited':
        return {
          ...base,
          type: `${stateType ?? ''}StateExited`,
          stateExitedEventDetails: { name: event.stateName, ...data('output', event.output) },
        };
      case 'StateFailed':
        if (stateType === 'Map' || stateType === 'Parallel') {
          return { ...base, type: `${stateType}StateFailed` };
        }
        return { ...base, type: event.type, localEventDetails: { name: event.stateName, ...errorCause } };
      case 'TaskScheduled': {
        const resource = splitResource(String(event.details?.resource ?? 'unknown'));
        resources.set(event.stateName ?? '', resource);
        return {
          ...base,
          type: event.type,
          taskScheduledEventDetails: {
            ...resource,
            region,
            ...(includeData && { parameters: jsonText(event.input) }),
          },
        };
      }
      case 'TaskSubmitted':
        return { ...base, type: event.type, taskSubmittedEventDetails: { ...task() } };
      case 'TaskSucceeded':
        return {
          ...base,
          type: event.type,
          taskSucceededEventDetails: { ...task(), ...data('output', event.output) },
        };
      case 'TaskFailed':
        return { ...base, type: event.type, taskFailedEventDetails: { ...task(), ...errorCause } };
      case 'TaskTimedOut':
        return { ...base, type: event.type, taskTimedOutEventDetails: { ...task(), ...errorCause } };
      case 'MapRunStarted':
        return {
          ...base,
          type: event.type,
          mapRunStartedEventDetails: { mapRunArn: event.details?.mapRunArn },
        };
      case 'MapRunFailed':
        return { ...base, type: event.type, mapRunFailedEventDetails: errorCause };
      case 'MapRunSucceeded':
      case 'MapRunAborted':
        return { ...base, type: event.type };
      case 'MapIterationStarted':
      case 'MapIterationSucceeded':
      case 'MapIterationFailed': {
        const key = `mapIteration${event.type.slice('MapIteration'.length)}EventDetails`;
        return { ...base, type: event.type, [key]: { name: event.stateName, index: event.index } };
      }
      case 'StateRetried':
      case 'StateCaught':
      case 'ParallelBranchStarted':
      case 'ParallelBranchSucceeded':
      case 'ParallelBranchFailed':
        return {
          ...base,
          type: event.type,
          localEventDetails: definedOnly({ name: event.stateName, ...errorCause, ...event.details }),
        };
    }
  });
}
