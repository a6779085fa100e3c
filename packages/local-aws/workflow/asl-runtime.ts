/**
 * The one place that loads aws-local-stepfunctions, after the Node 20 polyfill it needs.
 */
import './promise-polyfill';

import {
  ExecutionAbortedError,
  ExecutionError,
  ExecutionTimeoutError,
  StateMachine,
  type RunOptions,
  type StateMachineDefinition,
} from 'aws-local-stepfunctions';

export { ExecutionAbortedError, ExecutionError, ExecutionTimeoutError, StateMachine };
export type { RunOptions, StateMachineDefinition };

/** A JSON value as the library passes it around. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object. */
export type JsonObject = { [key: string]: JsonValue };

/**
 * Builds a library state machine from an already prepared definition.
 *
 * Validation (asl-validator) runs once for the top-level definition; nested processors are
 * validated as part of it, so they skip it.
 */
export function createLibraryStateMachine(definition: object, validate: boolean): StateMachine {
  return new StateMachine(
    definition as unknown as StateMachineDefinition,
    validate ? { validationOptions: { checkArn: false } } : { validationOptions: { noValidate: true } },
  );
}
