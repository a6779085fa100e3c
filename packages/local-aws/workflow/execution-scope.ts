/**
 * What the runner holds per execution: the record of a top-level execution (its description, history and Map
 * Runs) and the scope every run has (top-level or Distributed Map child), with its own `$$` context object.
 */
import type { JsonValue } from './asl-runtime';
import type { LocalContextObject, StateContext } from './context-paths';
import type { PreparedScope } from './prepare-definition';
import type { TaskTokenRegistry } from './task-tokens';
import type { ExecutionDescription, ExecutionStatus, HistoryEvent } from './types';

/** One running execution, top-level or a Distributed Map child. */
export interface ExecutionScope {
  arn: string;
  name: string;
  stateMachineArn: string;
  prepared: PreparedScope;
  local: LocalContextObject;
  /** Token issued by `$$.Task.Token` and not yet claimed by the Task handler. */
  pendingToken?: string;
  abort: AbortController;
  /** The top-level execution this scope belongs to. */
  root: ExecutionRecord;
  isChild: boolean;
}

/** A top-level execution: what DescribeExecution and GetExecutionHistory answer. */
export interface ExecutionRecord {
  description: ExecutionDescription;
  inputJson: string;
  history: HistoryEvent[];
  /** Distributed Map runs still going (including those of its children). */
  activeMapRuns: Set<Promise<JsonValue>>;
  /** Runner events not yet placed in the history (see ExecutionHistory.appendTaskEvent). */
  pendingEvents: (Omit<HistoryEvent, 'id'> & { timestamp: Date })[];
  done: Promise<ExecutionDescription>;
  scope?: ExecutionScope;
  stopRequest?: { error?: string; cause?: string; stopDate: Date };
}

/** How one run (top-level or child) ended. */
export interface RunOutcome {
  status: Exclude<ExecutionStatus, 'RUNNING'>;
  output?: JsonValue;
  error?: string;
  cause?: string;
}

/** What a new scope is. */
export interface ScopeArgs {
  arn: string;
  name: string;
  stateMachineArn: string;
  stateMachineName: string;
  prepared: PreparedScope;
  input: JsonValue;
  startDate: Date;
  root: ExecutionRecord;
  isChild: boolean;
}

/** What every scope of one workflow shares. */
export interface ScopeContext {
  /** `$$.Execution.RoleArn`. */
  readonly roleArn: string;
  /** `$$.State` of each state. */
  readonly stateContexts: StateContext[];
  /** Issues `$$.Task.Token`. */
  readonly tokens: TaskTokenRegistry;
}

const INVALID_NAME_CHARS = /[\s<>{}[\]?*"#%\\^|~`$&,;:/]/;

/** StartExecution's name rule: 1-80 characters, no whitespace, brackets, wildcards, specials or controls. */
export function isValidExecutionName(name: string): boolean {
  if (name.length < 1 || name.length > 80 || INVALID_NAME_CHARS.test(name)) return false;
  return ![...name].some((char) => {
    const code = char.codePointAt(0) ?? 0;
    return code <= 0x1f || (code >= 0x7f && code <= 0x9f);
  });
}

/** A RUNNING execution's record, before its run starts. */
export function newExecutionRecord(
  stateMachineArn: string,
  arn: string,
  name: string,
  inputJson: string,
  startDate: Date,
): ExecutionRecord {
  return {
    description: {
      executionArn: arn,
      stateMachineArn,
      name,
      status: 'RUNNING',
      startDate,
      input: inputJson,
      mapRuns: [],
    },
    inputJson,
    history: [],
    pendingEvents: [],
    activeMapRuns: new Set(),
    done: Promise.resolve(undefined as unknown as ExecutionDescription),
  };
}

/** A scope and its `$$` context object. */
export function createExecutionScope(args: ScopeArgs, context: ScopeContext): ExecutionScope {
  const { tokens } = context;
  const scope: ExecutionScope = {
    arn: args.arn,
    name: args.name,
    stateMachineArn: args.stateMachineArn,
    prepared: args.prepared,
    abort: new AbortController(),
    root: args.root,
    isChild: args.isChild,
    local: {
      Execution: {
        Id: args.arn,
        Name: args.name,
        Input: args.input,
        StartTime: args.startDate.toISOString(),
        RoleArn: context.roleArn,
        RedriveCount: 0,
      },
      StateMachine: { Id: args.stateMachineArn, Name: args.stateMachineName },
      States: context.stateContexts,
      Task: {
        // Parameters are evaluated synchronously right before the library calls the Task
        // handler, which claims the token; a token nobody claimed is dropped after that turn.
        get Token(): string {
          if (scope.pendingToken === undefined) {
            const token = tokens.issue();
            scope.pendingToken = token;
            queueMicrotask(() => {
              if (scope.pendingToken === token) scope.pendingToken = undefined;
            });
          }
          return scope.pendingToken;
        },
      },
    },
  };
  return scope;
}
