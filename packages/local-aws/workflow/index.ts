/**
 * The local workflow runner: executes the real state machine definition offline, with
 * Distributed Map semantics and task tokens. See local-workflow.ts.
 */
export {
  DEFAULT_DISTRIBUTED_CONCURRENCY_CAP,
  LocalWorkflow,
  type ExecutionHandle,
  type LocalWorkflowOptions,
  type StartExecutionOptions,
} from './local-workflow';
export {
  DISTRIBUTED_MAP_RESOURCE,
  MAX_TIMER_SECONDS,
  parseDefinition,
  prepareDefinition,
  type DistributedMapSpec,
  type PreparedDefinition,
  type PreparedScope,
  type TaskStateInfo,
} from './prepare-definition';
export {
  InMemoryObjectStore,
  NoSuchKey,
  s3ObjectStore,
  type InMemoryObjectStoreOptions,
} from './object-store';
export {
  EXCEED_TOLERATED_FAILURE_CAUSE,
  EXCEED_TOLERATED_FAILURE_THRESHOLD,
  EXPRESS_EXECUTION_TIMEOUT_MS,
  MAX_INPUT_BYTES_PER_BATCH,
} from './distributed-map';
export { ITEM_READER_FAILED, csvRecords, readLines } from './item-reader';
export { RESULT_WRITER_FAILED } from './result-writer';
export { HEARTBEAT_TIMEOUT } from './task-tokens';
export * from './errors';
export type * from './types';
