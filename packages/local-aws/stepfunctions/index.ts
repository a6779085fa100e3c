/**
 * The local Step Functions endpoint: the Step Functions API (task tokens, executions, history, Map
 * Runs) over HTTP for a LocalWorkflow, so the real SDK can drive it.
 */
export * from './errors';
export {
  stateTypesOf,
  splitResource,
  toServiceHistory,
  type ServiceHistoryEvent,
  type StateTypes,
} from './history';
export {
  DEFAULT_PAGE_SIZE,
  MAX_CAUSE_LENGTH,
  MAX_ERROR_LENGTH,
  MAX_PAGE_SIZE,
  MAX_PAYLOAD_LENGTH,
  MAX_TASK_TOKEN_LENGTH,
  OPERATIONS,
  operationContext,
  toServiceError,
  type OperationContext,
  type OperationHandler,
  type RequestBody,
} from './operations';
export {
  startStepFunctionsServer,
  type StepFunctionsServer,
  type StepFunctionsServerOptions,
} from './server';
