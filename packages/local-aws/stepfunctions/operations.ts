/**
 * The Step Functions API operations the local endpoint serves, on top of a {@link LocalWorkflow}:
 * request validation worded like the service's, the workflow's typed errors mapped to the
 * service's error shapes, and responses in the awsJson1_0 shape (dates as epoch seconds).
 */
import {
  ExecutionAlreadyExists,
  ExecutionDoesNotExist,
  InvalidExecutionInput,
  InvalidName,
  InvalidOutput,
  InvalidToken,
  ResourceNotFound,
  TaskTimedOut,
  type ExecutionDescription,
  type ExecutionStatus,
  type LocalWorkflow,
  type MapRunCounts,
  type MapRunDescription,
} from '../workflow';
import { StepFunctionsServiceError, validationError, type SfnModeledErrorCode } from './errors';
import { stateTypesOf, toServiceHistory, type StateTypes } from './history';

/** A decoded request body. */
export type RequestBody = Readonly<Record<string, unknown>>;

/** One operation: the request body in, the response body out. */
export type OperationHandler = (context: OperationContext, body: RequestBody) => unknown;

/** What every operation works on. */
export interface OperationContext {
  readonly workflow: LocalWorkflow;
  /** State types by state name, for the history's `...StateEntered` names. */
  readonly stateTypes: StateTypes;
  /** The state machine's region, for the history's task events. */
  readonly region: string;
}

/** Builds the context of a workflow's operations. */
export function operationContext(workflow: LocalWorkflow): OperationContext {
  return {
    workflow,
    stateTypes: stateTypesOf(
      workflow.prepared.root.definition,
      workflow.prepared.root.distributedMaps.keys(),
    ),
    region: workflow.stateMachineArn.split(':')[3] ?? 'us-east-1',
  };
}

/** Largest input, output or task result the service accepts (characters). */
export const MAX_PAYLOAD_LENGTH = 262_144;
/** Largest task token the service accepts. */
export const MAX_TASK_TOKEN_LENGTH = 2048;
/** Largest `error` of SendTaskFailure / StopExecution. */
export const MAX_ERROR_LENGTH = 256;
/** Largest `cause` of SendTaskFailure / StopExecution. */
export const MAX_CAUSE_LENGTH = 32_768;
/** Page size when `maxResults` is 0 or omitted. */
export const DEFAULT_PAGE_SIZE = 100;
/** Largest `maxResults`. */
export const MAX_PAGE_SIZE = 1000;

const EXECUTION_STATUSES = ['RUNNING', 'SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED', 'PENDING_REDRIVE'];

// ---------------------------------------------------------------- field readers

function serializationError(message: string): StepFunctionsServiceError {
  return new StepFunctionsServiceError('SerializationException', message);
}

function optionalString(
  body: RequestBody,
  field: string,
  limits: { min?: number; max?: number } = {},
): string | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw serializationError(`Value of '${field}' must be a string.`);
  if (limits.min !== undefined && value.length < limits.min) {
    throw validationError(
      `Value at '${field}' failed to satisfy constraint: Member must have length greater than or equal to ${limits.min}`,
    );
  }
  if (limits.max !== undefined && value.length > limits.max) {
    throw validationError(
      `Value at '${field}' failed to satisfy constraint: Member must have length less than or equal to ${limits.max}`,
    );
  }
  return value;
}

function requiredString(
  body: RequestBody,
  field: string,
  limits: { min?: number; max?: number } = {},
): string {
  const value = optionalString(body, field, limits);
  if (value === undefined) {
    throw validationError(`Value null at '${field}' failed to satisfy constraint: Member must not be null`);
  }
  return value;
}

function optionalBoolean(body: RequestBody, field: string): boolean | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw serializationError(`Value of '${field}' must be a boolean.`);
  return value;
}

function pageSize(body: RequestBody): number {
  const value = body.maxResults;
  if (value === undefined || value === null) return DEFAULT_PAGE_SIZE;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw serializationError(`Value of 'maxResults' must be an integer.`);
  }
  if (value < 0 || value > MAX_PAGE_SIZE) {
    throw validationError(
      `Value '${value}' at 'maxResults' failed to satisfy constraint: Member must have value ${
        value < 0 ? 'greater than or equal to 0' : `less than or equal to ${MAX_PAGE_SIZE}`
      }`,
    );
  }
  return value === 0 ? DEFAULT_PAGE_SIZE : value;
}

// ---------------------------------------------------------------- ARNs

const EXECUTION_ARN = /^arn:[^:]+:states:[^:]*:[^:]*:(execution|express):[^:]+:[^:]+$/;
const STATE_MACHINE_ARN = /^arn:[^:]+:states:[^:]*:[^:]*:stateMachine:[^:]+(:[^:]+)?$/;
const MAP_RUN_ARN = /^arn:[^:]+:states:[^:]*:[^:]*:mapRun:[^:]+:[^:]+$/;

function invalidArn(arn: string, expected: string): StepFunctionsServiceError {
  const reason = arn.startsWith('arn:')
    ? `Resource type not valid in this context: ${arn.split(':')[5] ?? ''} (expected ${expected})`
    : `Invalid ARN prefix: ${arn}`;
  return new StepFunctionsServiceError('InvalidArn', `Invalid Arn: '${reason}'`);
}

function executionArnOf(body: RequestBody): string {
  const arn = requiredString(body, 'executionArn', { min: 1, max: 2048 });
  if (!EXECUTION_ARN.test(arn)) throw invalidArn(arn, 'execution');
  return arn;
}

function mapRunArnOf(body: RequestBody): string {
  const arn = requiredString(body, 'mapRunArn', { min: 1, max: 2048 });
  if (!MAP_RUN_ARN.test(arn)) throw invalidArn(arn, 'mapRun');
  return arn;
}

/** Checks that a state machine ARN names the workflow's state machine. */
function checkStateMachine(context: OperationContext, arn: string): void {
  if (!STATE_MACHINE_ARN.test(arn)) throw invalidArn(arn, 'stateMachine');
  if (arn !== context.workflow.stateMachineArn) {
    throw new StepFunctionsServiceError('StateMachineDoesNotExist', `State Machine Does Not Exist: '${arn}'`);
  }
}

// ---------------------------------------------------------------- pagination

interface PageCursor {
  /** Operation and list the token belongs to. */
  o: string;
  k: string;
  /** The last item of the previous page. */
  a: string | number;
}

function encodeToken(cursor: PageCursor): string {
  return Buffer.from(JSON.stringify(cursor), 'utf8').toString('base64url');
}

function invalidPageToken(): StepFunctionsServiceError {
  return new StepFunctionsServiceError('InvalidToken', "Invalid Token: 'Invalid pagination token'");
}

/**
 * One page of `items`: those after the token's cursor, at most `size`, plus the next token.
 * A cursor (the last item's key) rather than an offset keeps pages stable while items are added.
 */
function paginate<T>(
  items: readonly T[],
  keyOf: (item: T) => string | number,
  body: RequestBody,
  operation: string,
  listKey: string,
): { page: T[]; nextToken?: string } {
  const size = pageSize(body);
  const token = optionalString(body, 'nextToken', { min: 1, max: 1024 });
  let start = 0;
  if (token !== undefined) {
    let cursor: unknown;
    try {
      cursor = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    } catch {
      throw invalidPageToken();
    }
    const c = cursor as Partial<PageCursor> | null;
    if (c === null || typeof c !== 'object' || c.o !== operation || c.k !== listKey) throw invalidPageToken();
    const at = items.findIndex((item) => keyOf(item) === c.a);
    if (at === -1) throw invalidPageToken();
    start = at + 1;
  }
  const page = items.slice(start, start + size);
  const last = page[page.length - 1];
  if (start + size >= items.length || last === undefined) return { page };
  return { page, nextToken: encodeToken({ o: operation, k: listKey, a: keyOf(last) }) };
}

// ---------------------------------------------------------------- shapes

function seconds(date: Date): number {
  return date.getTime() / 1000;
}

function serviceCounts(counts: MapRunCounts): Record<string, number> {
  return { ...counts, failuresNotRedrivable: 0, pendingRedrive: 0 };
}

function describeExecutionShape(d: ExecutionDescription): Record<string, unknown> {
  return {
    executionArn: d.executionArn,
    stateMachineArn: d.stateMachineArn,
    name: d.name,
    status: d.status,
    startDate: seconds(d.startDate),
    ...(d.stopDate !== undefined && { stopDate: seconds(d.stopDate) }),
    input: d.input,
    inputDetails: { included: true },
    ...(d.output !== undefined && { output: d.output, outputDetails: { included: true } }),
    ...(d.error !== undefined && { error: d.error }),
    ...(d.cause !== undefined && { cause: d.cause }),
    redriveCount: 0,
  };
}

function executionListItem(d: ExecutionDescription): Record<string, unknown> {
  return {
    executionArn: d.executionArn,
    stateMachineArn: d.stateMachineArn,
    name: d.name,
    status: d.status,
    startDate: seconds(d.startDate),
    ...(d.stopDate !== undefined && { stopDate: seconds(d.stopDate) }),
    redriveCount: 0,
  };
}

/** `arn:...:mapRun:SM/Label:id` -> `arn:...:stateMachine:SM/Label`, the state machine the Map Run executes. */
function mapRunStateMachineArn(mapRunArn: string): string {
  return mapRunArn.replace(/:mapRun:/, ':stateMachine:').replace(/:[^:]+$/, '');
}

function describeMapRunShape(run: MapRunDescription): Record<string, unknown> {
  return {
    mapRunArn: run.mapRunArn,
    executionArn: run.executionArn,
    status: run.status,
    startDate: seconds(run.startDate),
    ...(run.stopDate !== undefined && { stopDate: seconds(run.stopDate) }),
    maxConcurrency: run.maxConcurrency,
    toleratedFailurePercentage: run.toleratedFailurePercentage,
    toleratedFailureCount: run.toleratedFailureCount,
    itemCounts: serviceCounts(run.itemCounts),
    executionCounts: serviceCounts(run.executionCounts),
    redriveCount: 0,
  };
}

// ---------------------------------------------------------------- errors

const WORKFLOW_ERRORS: readonly [abstract new (...args: never[]) => Error, SfnModeledErrorCode][] = [
  [InvalidToken, 'InvalidToken'],
  [TaskTimedOut, 'TaskTimedOut'],
  [InvalidOutput, 'InvalidOutput'],
  [ExecutionDoesNotExist, 'ExecutionDoesNotExist'],
  [ExecutionAlreadyExists, 'ExecutionAlreadyExists'],
  [InvalidName, 'InvalidName'],
  [InvalidExecutionInput, 'InvalidExecutionInput'],
  [ResourceNotFound, 'ResourceNotFound'],
];

/**
 * The service error a LocalWorkflow error stands for (`TaskTimedOut` for a token that is no longer
 * waiting, `InvalidToken` for one never issued...), or undefined for an unexpected error.
 */
export function toServiceError(err: unknown): StepFunctionsServiceError | undefined {
  if (err instanceof StepFunctionsServiceError) return err;
  for (const [type, code] of WORKFLOW_ERRORS) {
    if (err instanceof type) return new StepFunctionsServiceError(code, err.message);
  }
  return undefined;
}

// ---------------------------------------------------------------- operations

function sendTaskSuccess({ workflow }: OperationContext, body: RequestBody): unknown {
  const taskToken = requiredString(body, 'taskToken', { min: 1, max: MAX_TASK_TOKEN_LENGTH });
  const output = requiredString(body, 'output', { max: MAX_PAYLOAD_LENGTH });
  workflow.sendTaskSuccess(taskToken, output);
  return {};
}

function sendTaskFailure({ workflow }: OperationContext, body: RequestBody): unknown {
  const taskToken = requiredString(body, 'taskToken', { min: 1, max: MAX_TASK_TOKEN_LENGTH });
  const error = optionalString(body, 'error', { max: MAX_ERROR_LENGTH });
  const cause = optionalString(body, 'cause', { max: MAX_CAUSE_LENGTH });
  workflow.sendTaskFailure(taskToken, error, cause);
  return {};
}

function sendTaskHeartbeat({ workflow }: OperationContext, body: RequestBody): unknown {
  workflow.sendTaskHeartbeat(requiredString(body, 'taskToken', { min: 1, max: MAX_TASK_TOKEN_LENGTH }));
  return {};
}

function startExecution(context: OperationContext, body: RequestBody): unknown {
  checkStateMachine(context, requiredString(body, 'stateMachineArn', { min: 1, max: 256 }));
  const name = optionalString(body, 'name');
  const inputText = optionalString(body, 'input', { max: MAX_PAYLOAD_LENGTH }) ?? '{}';
  let input: unknown;
  try {
    input = JSON.parse(inputText);
  } catch (err) {
    throw new StepFunctionsServiceError(
      'InvalidExecutionInput',
      `Invalid State Machine Execution Input: '${(err as Error).message}'`,
    );
  }
  const handle = context.workflow.start({ ...(name !== undefined && { name }), input });
  return { executionArn: handle.executionArn, startDate: seconds(handle.startDate) };
}

function describeExecution({ workflow }: OperationContext, body: RequestBody): unknown {
  return describeExecutionShape(workflow.describe(executionArnOf(body)));
}

function listExecutions(context: OperationContext, body: RequestBody): unknown {
  const stateMachineArn = optionalString(body, 'stateMachineArn', { min: 1, max: 256 });
  const mapRunArn = optionalString(body, 'mapRunArn', { min: 1, max: 2048 });
  const statusFilter = optionalString(body, 'statusFilter');
  if (statusFilter !== undefined && !EXECUTION_STATUSES.includes(statusFilter)) {
    throw validationError(
      `Value '${statusFilter}' at 'statusFilter' failed to satisfy constraint: Member must satisfy enum value set: [${EXECUTION_STATUSES.join(', ')}]`,
    );
  }
  if ((stateMachineArn === undefined) === (mapRunArn === undefined)) {
    throw new StepFunctionsServiceError(
      'ValidationException',
      'Must provide either a StateMachine ARN or a MapRun ARN, but not both',
    );
  }
  if (mapRunArn !== undefined) {
    context.workflow.describeMapRun(mapRunArnOf(body));
    throw new StepFunctionsServiceError(
      'ValidationException',
      "The local Step Functions endpoint does not list a Map Run's child executions; use DescribeMapRun's counts.",
    );
  }
  checkStateMachine(context, stateMachineArn ?? '');
  const all =
    statusFilter === 'PENDING_REDRIVE'
      ? []
      : context.workflow.list(
          statusFilter === undefined ? {} : { statusFilter: statusFilter as ExecutionStatus },
        );
  const { page, nextToken } = paginate(
    all,
    (d) => d.executionArn,
    body,
    'ListExecutions',
    `${stateMachineArn ?? ''}|${statusFilter ?? ''}`,
  );
  return { executions: page.map(executionListItem), ...(nextToken !== undefined && { nextToken }) };
}

function stopExecution({ workflow }: OperationContext, body: RequestBody): unknown {
  const arn = executionArnOf(body);
  const error = optionalString(body, 'error', { max: MAX_ERROR_LENGTH });
  const cause = optionalString(body, 'cause', { max: MAX_CAUSE_LENGTH });
  return { stopDate: seconds(workflow.stop(arn, error, cause).stopDate) };
}

function getExecutionHistory(context: OperationContext, body: RequestBody): unknown {
  const arn = executionArnOf(body);
  const reverse = optionalBoolean(body, 'reverseOrder') ?? false;
  const includeData = optionalBoolean(body, 'includeExecutionData') ?? true;
  const events = toServiceHistory(context.workflow.history(arn), {
    stateTypes: context.stateTypes,
    region: context.region,
    includeData,
  });
  if (reverse) events.reverse();
  const { page, nextToken } = paginate(
    events,
    (e) => e.id,
    body,
    'GetExecutionHistory',
    `${arn}|${String(reverse)}`,
  );
  return { events: page, ...(nextToken !== undefined && { nextToken }) };
}

function listMapRuns({ workflow }: OperationContext, body: RequestBody): unknown {
  const arn = executionArnOf(body);
  const runs = new Map<string, MapRunDescription>();
  let known = false;
  for (const execution of workflow.list()) {
    if (execution.executionArn === arn) known = true;
    for (const run of execution.mapRuns) if (run.executionArn === arn) runs.set(run.mapRunArn, run);
  }
  if (!known && runs.size === 0) {
    throw new StepFunctionsServiceError('ExecutionDoesNotExist', `Execution Does Not Exist: '${arn}'`);
  }
  const sorted = [...runs.values()].sort((a, b) => b.startDate.getTime() - a.startDate.getTime());
  const { page, nextToken } = paginate(sorted, (r) => r.mapRunArn, body, 'ListMapRuns', arn);
  return {
    mapRuns: page.map((run) => ({
      executionArn: run.executionArn,
      mapRunArn: run.mapRunArn,
      stateMachineArn: mapRunStateMachineArn(run.mapRunArn),
      startDate: seconds(run.startDate),
      ...(run.stopDate !== undefined && { stopDate: seconds(run.stopDate) }),
    })),
    ...(nextToken !== undefined && { nextToken }),
  };
}

function describeMapRun({ workflow }: OperationContext, body: RequestBody): unknown {
  return describeMapRunShape(workflow.describeMapRun(mapRunArnOf(body)));
}

/** The operations served, by `X-Amz-Target` operation name. */
export const OPERATIONS: Readonly<Record<string, OperationHandler>> = {
  SendTaskSuccess: sendTaskSuccess,
  SendTaskFailure: sendTaskFailure,
  SendTaskHeartbeat: sendTaskHeartbeat,
  StartExecution: startExecution,
  DescribeExecution: describeExecution,
  ListExecutions: listExecutions,
  StopExecution: stopExecution,
  GetExecutionHistory: getExecutionHistory,
  ListMapRuns: listMapRuns,
  DescribeMapRun: describeMapRun,
};
