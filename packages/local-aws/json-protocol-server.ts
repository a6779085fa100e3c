/**
 * The HTTP plumbing the local runtime's AWS JSON-protocol endpoints share (awsJson1_0 / awsJson1_1: `POST /`,
 * `X-Amz-Target: <Prefix>.<Operation>`, JSON bodies, errors as `{ __type, message }` with `x-amzn-errortype`):
 * body reading under a size limit, target parsing, error responses and start/stop. Each service supplies only its
 * operations and how its own errors look on the wire.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

import { closeServer, listenLocal } from './listen';

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** An error a JSON-protocol endpoint answers with: its error shape, message and HTTP status. */
export interface JsonProtocolWireError {
  /** The error shape (the `x-amzn-errortype` header; `__type` after {@link JsonProtocolServerOptions.errorType}). */
  readonly code: string;
  readonly message: string;
  /** The HTTP status. */
  readonly status: number;
}

/** A request refused by the protocol layer (or by an endpoint that has no error type of its own). */
export class JsonProtocolError extends Error implements JsonProtocolWireError {
  override readonly name: string = 'JsonProtocolError';

  /**
   * @param code the error shape (what `err.name` becomes in the SDK)
   * @param message the message, worded like the service's where it is known
   * @param status the HTTP status (400 for client errors)
   */
  constructor(
    readonly code: string,
    message: string,
    readonly status: number = 400,
  ) {
    super(message);
  }
}

/** One request as the endpoint's handler sees it. */
export interface JsonProtocolCall {
  /** The HTTP method (the protocol only uses POST). */
  readonly method: string;
  /** The `X-Amz-Target` header, `''` when absent. */
  readonly target: string;
  /** The target without {@link JsonProtocolServerOptions.targetPrefix}; undefined when it lacks that prefix. */
  readonly operation: string | undefined;
  /** The request body, read in full (at most `maxBodyBytes`). */
  readonly body: string;
}

/** Options of {@link startJsonProtocolServer}. */
export interface JsonProtocolServerOptions {
  /** What `X-Amz-Target` starts with before the operation name, e.g. `AWSEvents.`. */
  readonly targetPrefix: string;
  /** The `content-type` of every response, e.g. `application/x-amz-json-1.1`. */
  readonly contentType: string;
  /** Largest request body accepted (default 1 MiB); a larger one is refused with a 413 `ValidationException`. */
  readonly maxBodyBytes?: number;
  /** Interface to bind (default 127.0.0.1). */
  readonly host?: string;
  /** Port to listen on; 0 (default) picks a free one. */
  readonly port?: number;
  /** The service's name, in the log line of an internal failure (`local <name> server: ...`). */
  readonly serviceName: string;
  /** The error shape of an unexpected failure (answered with status 500), e.g. `InternalFailure`. */
  readonly internalErrorCode: string;
  /** The `__type` of an error body for an error shape (default: the shape itself). */
  readonly errorType?: (code: string) => string;
  /** The service's own errors on the wire; undefined for an unexpected failure. */
  readonly toWireError?: (err: unknown) => JsonProtocolWireError | undefined;
  /** Answers one request: the JSON response payload, or throws. */
  readonly handle: (call: JsonProtocolCall) => unknown;
}

/** A running JSON-protocol server. */
export interface JsonProtocolServer {
  /** Base URL for the SDK's `endpoint` option, e.g. `http://127.0.0.1:49152`. */
  readonly endpoint: string;
  readonly port: number;
  /** Stops listening and closes open connections. */
  stop(): Promise<void>;
}

/**
 * Parses a request body as JSON (an empty body is `{}`).
 *
 * @param text the request body
 * @throws JsonProtocolError `SerializationException` when it is not JSON
 */
export function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text === '' ? '{}' : text) as unknown;
  } catch {
    throw new JsonProtocolError('SerializationException', 'The request body is not valid JSON.');
  }
}

function readBody(request: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(
          new JsonProtocolError('ValidationException', `Request body is larger than ${limit} bytes.`, 413),
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

function send(
  response: ServerResponse,
  contentType: string,
  status: number,
  requestId: string,
  payload: unknown,
  errorType?: string,
): void {
  const body = JSON.stringify(payload);
  const headers: Record<string, string | number> = {
    'content-type': contentType,
    'content-length': Buffer.byteLength(body),
    'x-amzn-requestid': requestId,
  };
  if (errorType !== undefined) headers['x-amzn-errortype'] = errorType;
  response.writeHead(status, headers);
  response.end(body);
}

async function respond(
  options: JsonProtocolServerOptions,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const requestId = randomUUID();
  const errorType = options.errorType ?? ((code: string) => code);
  try {
    const body = await readBody(request, options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES);
    const target = String(request.headers['x-amz-target'] ?? '');
    const operation = target.startsWith(options.targetPrefix)
      ? target.slice(options.targetPrefix.length)
      : undefined;
    const payload = options.handle({ method: request.method ?? '', target, operation, body });
    send(response, options.contentType, 200, requestId, payload);
  } catch (err) {
    const wire = err instanceof JsonProtocolError ? err : options.toWireError?.(err);
    if (wire !== undefined) {
      const payload = { __type: errorType(wire.code), message: wire.message };
      send(response, options.contentType, wire.status, requestId, payload, wire.code);
      return;
    }
    console.error(`local ${options.serviceName} server: request ${requestId} failed:`, err);
    const message = err instanceof Error ? err.message : String(err);
    const code = options.internalErrorCode;
    send(response, options.contentType, 500, requestId, { __type: errorType(code), message }, code);
  }
}

/**
 * Starts an AWS JSON-protocol endpoint answering every request through `options.handle`.
 *
 * @param options the protocol's details, the address to listen on and the handler
 */
export async function startJsonProtocolServer(
  options: JsonProtocolServerOptions,
): Promise<JsonProtocolServer> {
  const server = createServer((request, response) => {
    // node's request listener returns nothing; respond answers every error itself, so it never rejects.
    void respond(options, request, response);
  });
  const { port, endpoint } = await listenLocal(server, options.port ?? 0, options.host ?? '127.0.0.1');
  return {
    endpoint,
    port,
    stop: () => closeServer(server),
  };
}
