/**
 * An HTTP/1.1 front end for a {@link LocalWorkflow} speaking the Step Functions wire protocol
 * (awsJson1_0: `POST /`, `X-Amz-Target: AWSStepFunctions.<Operation>`, JSON bodies, dates as epoch
 * seconds), so the real `SFNClient` (with `endpoint`, or `AWS_ENDPOINT_URL_SFN` in a local Lambda)
 * can complete task tokens and start, watch and stop executions. See {@link OPERATIONS}.
 */
import { parseJsonBody, startJsonProtocolServer, type JsonProtocolCall } from '../json-protocol-server';
import type { LocalWorkflow } from '../workflow';
import { sfnErrorType, StepFunctionsServiceError } from './errors';
import {
  OPERATIONS,
  operationContext,
  toServiceError,
  type OperationContext,
  type RequestBody,
} from './operations';

/** Options of {@link startStepFunctionsServer}. */
export interface StepFunctionsServerOptions {
  /** Port to listen on; 0 (default) picks a free one. */
  readonly port?: number;
  /** Interface to bind (default 127.0.0.1). */
  readonly host?: string;
  /** Largest request body accepted (default 1 MiB; inputs and task outputs stop at 256 KiB). */
  readonly maxBodyBytes?: number;
}

/** A running server. */
export interface StepFunctionsServer {
  /** Base URL for the SDK's `endpoint` option (or `AWS_ENDPOINT_URL_SFN`), e.g. `http://127.0.0.1:49152`. */
  readonly endpoint: string;
  readonly port: number;
  /** Stops listening and closes open connections. */
  stop(): Promise<void>;
}

function parseBody(text: string): RequestBody {
  const parsed = parseJsonBody(text);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new StepFunctionsServiceError('SerializationException', 'The request body must be a JSON object.');
  }
  return parsed as RequestBody;
}

function handle(context: OperationContext, { method, target, operation, body }: JsonProtocolCall): unknown {
  const handler = operation === undefined ? undefined : OPERATIONS[operation];
  if (method !== 'POST' || handler === undefined) {
    throw new StepFunctionsServiceError(
      'UnknownOperationException',
      `Operation ${target || '(no X-Amz-Target)'} is not supported by the local Step Functions; it serves ${Object.keys(
        OPERATIONS,
      ).join(', ')}.`,
    );
  }
  return handler(context, parseBody(body));
}

/**
 * Starts the Step Functions endpoint of a workflow: SendTaskSuccess / SendTaskFailure /
 * SendTaskHeartbeat, StartExecution, DescribeExecution, ListExecutions, StopExecution,
 * GetExecutionHistory, ListMapRuns and DescribeMapRun.
 *
 * @param workflow the workflow whose executions and task tokens the endpoint serves
 * @param options port, host and body limit
 */
export async function startStepFunctionsServer(
  workflow: LocalWorkflow,
  options: StepFunctionsServerOptions = {},
): Promise<StepFunctionsServer> {
  const context = operationContext(workflow);
  return startJsonProtocolServer({
    ...options,
    serviceName: 'Step Functions',
    targetPrefix: 'AWSStepFunctions.',
    contentType: 'application/x-amz-json-1.0',
    internalErrorCode: 'InternalFailure',
    errorType: sfnErrorType,
    toWireError: toServiceError,
    handle: (call) => handle(context, call),
  });
}
