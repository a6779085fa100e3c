/**
 * The history of top-level executions: the library's events translated to GetExecutionHistory's, with the
 * runner's own events (TaskScheduled, TaskSubmitted, TaskSucceeded, MapRunStarted ...) placed among them.
 */
import type { StateMachine } from './asl-runtime';
import type { ExecutionRecord, ExecutionScope } from './execution-scope';
import type { HistoryEvent } from './types';

/** An event of the library's run log. */
export type LibraryEvent =
  ReturnType<StateMachine['run']>['eventLogs'] extends AsyncGenerator<infer E> ? E : never;

/** A history event before it has an id (and, for runner events, a timestamp). */
export type HistoryEventInput = Omit<HistoryEvent, 'id' | 'timestamp'>;

/** Library events that open a state: runner events queued before them happened after them. */
const OPENING_EVENTS = new Set<string>([
  'ExecutionStarted',
  'StateEntered',
  'MapIterationStarted',
  'ParallelBranchStarted',
]);

function causeText(cause: unknown): string | undefined {
  if (cause === undefined || cause === null) return undefined;
  return typeof cause === 'string' ? cause : cause instanceof Error ? cause.message : JSON.stringify(cause);
}

/** Records the history of top-level executions (children have none) and tells a listener of each event. */
export class ExecutionHistory {
  /**
   * @param now the clock of the timestamps
   * @param onEvent called with each event as it is recorded
   */
  constructor(
    private readonly now: () => Date,
    private readonly onEvent: (executionArn: string, event: HistoryEvent) => void,
  ) {}

  /**
   * Records a runner event for a top-level execution. The library's own events reach us through
   * an async generator a few microtasks late, so runner events wait in a queue: it is flushed
   * on the next macrotask, or just before a library event that closes a state (StateExited,
   * StateFailed...) is recorded. That keeps StateEntered before TaskScheduled, and
   * TaskSucceeded or MapRunSucceeded before StateExited.
   */
  appendTaskEvent(scope: ExecutionScope, event: HistoryEventInput): void {
    if (scope.isChild) return;
    const record = scope.root;
    record.pendingEvents.push({ ...event, timestamp: this.now() });
    if (record.pendingEvents.length === 1) setImmediate(() => this.flushTaskEvents(record));
  }

  /** Places the queued runner events in the history. */
  flushTaskEvents(record: ExecutionRecord): void {
    const pending = record.pendingEvents.splice(0);
    for (const event of pending) this.append(record, event);
  }

  /** Records the library's run log as it comes, until the run ends. */
  async consume(events: AsyncGenerator<LibraryEvent>, record: ExecutionRecord): Promise<void> {
    for await (const event of events) {
      if (!OPENING_EVENTS.has(event.type)) this.flushTaskEvents(record);
      this.append(record, fromLibraryEvent(event));
    }
  }

  private append(record: ExecutionRecord, event: HistoryEventInput & { timestamp?: Date }): void {
    const full: HistoryEvent = {
      ...event,
      id: record.history.length + 1,
      timestamp: event.timestamp ?? this.now(),
    };
    record.history.push(full);
    this.onEvent(record.description.executionArn, full);
  }
}

/** A library event as GetExecutionHistory reports it. */
export function fromLibraryEvent(event: LibraryEvent): HistoryEventInput {
  switch (event.type) {
    case 'ExecutionStarted':
      return { type: 'ExecutionStarted', input: event.input };
    case 'ExecutionSucceeded':
      return { type: 'ExecutionSucceeded', output: event.output };
    case 'ExecutionFailed':
      return { type: 'ExecutionFailed', error: event.Error, cause: causeText(event.Cause) };
    case 'ExecutionAborted':
      return { type: 'ExecutionAborted' };
    case 'ExecutionTimeout':
      return { type: 'ExecutionTimedOut' };
    case 'StateEntered':
      return {
        type: 'StateEntered',
        stateName: event.state.name,
        input: event.state.input,
        index: event.index,
      };
    case 'StateExited':
      return {
        type: 'StateExited',
        stateName: event.state.name,
        output: event.state.output,
        index: event.index,
      };
    case 'StateFailed':
      return {
        type: 'StateFailed',
        stateName: event.state.name,
        index: event.index,
        error: event.Error,
        cause: causeText(event.Cause),
      };
    case 'StateRetried':
      return {
        type: 'StateRetried',
        stateName: event.state.name,
        index: event.index,
        details: { attempt: event.retry.attempt, retrier: event.retry.retrier },
      };
    case 'StateCaught':
      return {
        type: 'StateCaught',
        stateName: event.state.name,
        index: event.index,
        details: { catcher: event.catch.catcher },
      };
    case 'MapIterationStarted':
    case 'MapIterationSucceeded':
      return { type: event.type, stateName: event.parentState.name, index: event.index };
    case 'MapIterationFailed':
      return {
        type: event.type,
        stateName: event.parentState.name,
        index: event.index,
        error: event.Error,
        cause: causeText(event.Cause),
      };
    case 'ParallelBranchStarted':
    case 'ParallelBranchSucceeded':
      return { type: event.type, stateName: event.parentState.name };
    case 'ParallelBranchFailed':
      return {
        type: event.type,
        stateName: event.parentState.name,
        error: event.Error,
        cause: causeText(event.Cause),
      };
  }
}
