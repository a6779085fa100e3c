/**
 * Shared fixtures of the workflow runner tests.
 */
import {
  InMemoryObjectStore,
  LocalWorkflow,
  type InvokeTask,
  type LocalWorkflowOptions,
} from '@corpus-pipeline/local-aws/workflow';

/** State machine ARN every test workflow uses. */
export const STATE_MACHINE_ARN = 'arn:aws:states:us-east-1:123456789012:stateMachine:Pipeline';

/** A workflow over an in-memory store, Retry pauses disabled. */
export function makeWorkflow(
  definition: object,
  invokeTask: InvokeTask,
  extra: Partial<LocalWorkflowOptions> & { store?: InMemoryObjectStore } = {},
): { workflow: LocalWorkflow; store: InMemoryObjectStore } {
  const { store = new InMemoryObjectStore({ chunkSize: 13 }), ...options } = extra;
  const workflow = new LocalWorkflow({
    stateMachineArn: STATE_MACHINE_ARN,
    definition,
    invokeTask,
    objectStore: store,
    ...options,
  });
  return { workflow, store };
}

/** An Error with an ASL error name. */
export function aslError(name: string, message: string): Error {
  const error = new Error(message);
  error.name = name;
  return error;
}

/** A JSONL body of `count` records `{id, text}`. */
export function jsonl(count: number, text: (i: number) => string = (i) => `record ${i}`): string {
  return `${Array.from({ length: count }, (_, i) => JSON.stringify({ id: i, text: text(i) })).join('\n')}\n`;
}

/** Parses JSON text known to be there. */
export function parse<T = unknown>(text: string | undefined): T {
  if (text === undefined) throw new Error('expected JSON text, got undefined');
  return JSON.parse(text) as T;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until the predicate holds (bounded). */
export async function until(predicate: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
