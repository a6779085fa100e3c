/**
 * Context object (`$$`) support.
 *
 * aws-local-stepfunctions builds each run's context as
 * `{...options.context, Execution: {...options.context.Execution, Input, StartTime: now}}`:
 * `$$.Execution.StartTime` is its own clock, `$$.Execution.Input` becomes the item inside an
 * inline Map iteration, and there is no `$$.State`, `$$.StateMachine` or `$$.Task`. Nested
 * objects of the context we pass are kept by reference, though, and getters on them are
 * evaluated when a path reads them. So the runner rewrites every context reference of the
 * definition to a private `$$.__local` object it owns:
 *
 *   $$.Execution...    -> $$.__local.Execution...      (Id, Name, Input, StartTime, RoleArn, RedriveCount)
 *   $$.StateMachine... -> $$.__local.StateMachine...   (Id, Name)
 *   $$.State...        -> $$.__local.States[i]...      (Name, EnteredTime; i is the state's index)
 *   $$.Task...         -> $$.__local.Task...           (Token: a getter issuing the attempt's token)
 *
 * `$$.Map.Item.*` is left alone: the library sets it for inline Maps, and the Distributed Map
 * emulation sets it itself.
 */
import { WorkflowDefinitionError } from './errors';

/** The private key under which the runner's context lives. */
export const LOCAL_CONTEXT_KEY = '__local';

const REWRITTEN_ROOTS = ['Execution', 'StateMachine', 'State', 'Task'] as const;

/** Context fields that exist in Step Functions but that the runner cannot provide. */
const UNSUPPORTED_FIELDS: Record<string, string> = {
  'State.RetryCount': 'the runner does not track retry attempts in the context object',
  'Execution.RedriveTime': 'executions are never redriven locally',
};

function isIdentifierChar(char: string | undefined): boolean {
  return char !== undefined && /[A-Za-z0-9_]/.test(char);
}

/**
 * Rewrites the `$$` references of a JSONPath or intrinsic-function expression, leaving
 * single-quoted string literals untouched.
 *
 * @param expression The path or intrinsic function, e.g. `States.Format('{}', $$.Execution.Name)`.
 * @param stateIndex Index of the state owning the expression in the runner's state table.
 * @param where Human-readable location, for error messages.
 */
export function rewriteContextReferences(expression: string, stateIndex: number, where: string): string {
  let out = '';
  let i = 0;
  while (i < expression.length) {
    const char = expression[i];
    if (char === "'") {
      // Copy a quoted literal verbatim, honouring backslash escapes.
      let j = i + 1;
      while (j < expression.length && expression[j] !== "'") j += expression[j] === '\\' ? 2 : 1;
      out += expression.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (expression.startsWith('$$.', i)) {
      const rest = expression.slice(i + 3);
      const root = REWRITTEN_ROOTS.find((r) => rest.startsWith(r) && !isIdentifierChar(rest[r.length]));
      if (root !== undefined) {
        const fieldMatch = /^\.([A-Za-z0-9_]+)/.exec(rest.slice(root.length));
        const field = fieldMatch?.[1];
        const unsupported = field === undefined ? undefined : UNSUPPORTED_FIELDS[`${root}.${field}`];
        if (unsupported !== undefined) {
          throw new WorkflowDefinitionError(
            `${where}: $$.${root}.${field ?? ''} is not supported by the local runner (${unsupported})`,
          );
        }
        out +=
          root === 'State'
            ? `$$.${LOCAL_CONTEXT_KEY}.States[${stateIndex}]`
            : `$$.${LOCAL_CONTEXT_KEY}.${root}`;
        i += 3 + root.length;
        continue;
      }
    }
    out += char;
    i += 1;
  }
  return out;
}

/** The `$$.State` object of one state. */
export interface StateContext {
  readonly Name: string;
  readonly EnteredTime: string;
}

/** The `$$.Execution` object of one execution. */
export interface ExecutionContextObject {
  Id: string;
  Name: string;
  Input: unknown;
  StartTime: string;
  RoleArn: string;
  RedriveCount: number;
}

/** What the runner puts under `$$.__local` for one execution. */
export interface LocalContextObject {
  Execution: ExecutionContextObject;
  StateMachine: { Id: string; Name: string };
  States: readonly StateContext[];
  Task: { readonly Token: string };
}

/**
 * Builds the per-state `$$.State` objects. EnteredTime reads the clock when a path evaluates it:
 * paths are evaluated as the state is entered (InputPath, Parameters), which is when Step
 * Functions stamps it.
 */
export function buildStateContexts(stateNames: readonly string[], now: () => Date): StateContext[] {
  return stateNames.map((name) => ({
    Name: name,
    get EnteredTime(): string {
      return now().toISOString();
    },
  }));
}
