/**
 * Evaluates payload templates and reference paths exactly as aws-local-stepfunctions does (same
 * JSONPath engine, same intrinsic functions, same `$$` handling), by running a one-state Pass
 * machine whose Parameters is the template. Used for the Distributed Map fields the library
 * never sees (ItemReader.Parameters, ItemSelector, BatchInput, ResultWriter.Parameters, *Path).
 */
import { ExecutionError, StateMachine, type JsonValue, createLibraryStateMachine } from './asl-runtime';

/** Turns the library's ExecutionError into the state error it wraps. */
export function unwrapLibraryError(err: unknown): Error {
  if (err instanceof ExecutionError && err.cause instanceof Error) return err.cause;
  if (err instanceof Error) return err;
  return new Error(String(err));
}

/** Evaluates templates and paths against an input and a context object. */
export class PayloadEvaluator {
  private readonly templates = new WeakMap<object, StateMachine>();
  private readonly paths = new Map<string, StateMachine>();

  /**
   * Resolves a payload template (keys ending in `.$` hold paths or intrinsic functions).
   *
   * @throws the library's state error (e.g. `States.Runtime` for a path that matches nothing).
   */
  async template(template: unknown, input: JsonValue, context: Record<string, unknown>): Promise<JsonValue> {
    if (typeof template !== 'object' || template === null) return template as JsonValue;
    let machine = this.templates.get(template);
    if (machine === undefined) {
      machine = passMachine(template);
      this.templates.set(template, machine);
    }
    return run(machine, input, context);
  }

  /**
   * Resolves a reference path such as `$.maxConcurrency` or `$$.Execution.Name`.
   *
   * @throws the library's state error when the path matches nothing.
   */
  async path(path: string, input: JsonValue, context: Record<string, unknown>): Promise<JsonValue> {
    let machine = this.paths.get(path);
    if (machine === undefined) {
      machine = passMachine({ 'value.$': path });
      this.paths.set(path, machine);
    }
    const result = await run(machine, input, context);
    return (result as { value: JsonValue }).value;
  }
}

function passMachine(parameters: object): StateMachine {
  return createLibraryStateMachine(
    { StartAt: 'Evaluate', States: { Evaluate: { Type: 'Pass', Parameters: parameters, End: true } } },
    false,
  );
}

async function run(
  machine: StateMachine,
  input: JsonValue,
  context: Record<string, unknown>,
): Promise<JsonValue> {
  try {
    return await machine.run(input, { context }).result;
  } catch (err) {
    throw unwrapLibraryError(err);
  }
}
