/**
 * An HTTP/1.1 front end for a {@link LocalWorkflow} speaking the Step Functions wire protocol
 * (awsJson1_0: `POST /`, `X-Amz-Target: AWSStepFunctions.<Operation>`, JSON bodies, dates as epoch
 * seconds), so the real `SFNClient` (with `endpoint`, or `AWS_ENDPOINT_URL_SFN` in a local Lambda)
 * can complete task tokens and start, watch and stop executions. See {@link OPERATIONS}.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

import { listenLocal } from '../listen';
import type { LocalWorkflow } from '../workflow';
import { StepFunctionsServiceError } from './errors';
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

const CONTENT_TYPE = 'application/x-amz-json-1.0';
const TARGET_PREFIX = 'AWSStepFunctions.';

function readBody(request: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(
          new StepFunctionsServiceError(
            'ValidationException',
            `Request body is larger than ${limit} bytes.`,
            413,
          ),
        );
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function parseBody(text: string): RequestBody {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text === '' ? '{}' : text) as unknown;
  } catch {
    throw new StepFunctionsServiceError('SerializationException', 'The request body is not valid JSON.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new StepFunctionsServiceError('SerializationException', 'The request body must be a JSON object.');
  }
  return parsed as RequestBody;
}

function send(
  response: ServerResponse,
  status: number,
  requestId: string,
  payload: unknown,
  errorType?: string,
): void {
  const body = JSON.stringify(payload);
  const headers: Record<string, string | number> = {
    'content-type': CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    'x-amzn-requestid': requestId,
  };
  if (errorType !== undefined) headers['x-amzn-errortype'] = errorType;
  response.writeHead(status, headers);
  response.end(body);
}

async function handle(
  context: OperationContext,
  request: IncomingMessage,
  response: ServerResponse,
  limit: number,
): Promise<void> {
  const requestId = randomUUID();
  try {
    const text = await readBody(request, limit);
    const target = String(request.headers['x-amz-target'] ?? '');
    const operation = target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : undefined;
    const handler = operation === undefined ? undefined : OPERATIONS[operation];
    if (request.method !== 'POST' || handler === undefined) {
      throw new StepFunctionsServiceError(
        'UnknownOperationException',
        `Operation ${target || '(no X-Amz-Target)'} is not supported by the local Step Functions; it serves ${Object.keys(
          OPERATIONS,
        ).join(', ')}.`,
      );
    }
    send(response, 200, requestId, handler(context, parseBody(text)));
  } catch (err) {
    const serviceError = toServiceError(err);
    if (serviceError !== undefined) {
      send(
        response,
        serviceError.status,
        requestId,
        { __type: serviceError.type, message: serviceError.message },
        serviceError.code,
      );
      return;
    }
    console.error(`local Step Functions server: request ${requestId} failed:`, err);
    const message = err instanceof Error ? err.message : String(err);
    send(
      response,
      500,
      requestId,
      { __type: 'com.amazon.coral.service#InternalFailure', message },
      'InternalFailure',
    );
  }
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
  const host = options.host ?? '127.0.0.1';
  const limit = options.maxBodyBytes ?? 1024 * 1024;
  const context = operationContext(workflow);
  const server = createServer((request, response) => {
    void handle(context, request, response, limit);
  });
  const { port, endpoint } = await listenLocal(server, options.port ?? 0, host);
  return {
    endpoint,
    port,
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
