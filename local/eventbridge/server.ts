/**
 * An HTTP/1.1 front end for {@link LocalEventBus} speaking the EventBridge JSON 1.1 protocol, so the real
 * `EventBridgeClient` (with `endpoint`, or `AWS_ENDPOINT_URL_EVENTBRIDGE`) can call PutEvents on it.
 * Every other action answers an `UnknownOperationException`.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { LocalEventBus, PutEventsRequestEntryLike } from './bus';
import { LocalEventBridgeError, type EventBridgeErrorCode } from './errors';
import { listenLocal } from '../listen';

/** Options of {@link startEventBridgeServer}. */
export interface EventBridgeServerOptions {
  /** Port to listen on; 0 (default) picks a free one. */
  readonly port?: number;
  /** Interface to bind (default 127.0.0.1). */
  readonly host?: string;
  /** Largest request body accepted (default 1 MiB; PutEvents itself stops at 256 KB of entries). */
  readonly maxBodyBytes?: number;
}

/** A running server. */
export interface EventBridgeServer {
  /** Base URL for the SDK's `endpoint` option, e.g. `http://127.0.0.1:49152`. */
  readonly endpoint: string;
  readonly port: number;
  /** Stops listening and closes open connections. */
  stop(): Promise<void>;
}

const CONTENT_TYPE = 'application/x-amz-json-1.1';
const TARGET_PREFIX = 'AWSEvents.';

class RequestError extends Error {
  constructor(
    readonly code: EventBridgeErrorCode | 'InternalException',
    message: string,
    readonly status: number = 400,
  ) {
    super(message);
    this.name = 'RequestError';
  }
}

function readBody(request: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new RequestError('ValidationException', `Request body is larger than ${limit} bytes.`, 413));
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function optionalString(entry: Record<string, unknown>, name: string): string | undefined {
  const value = entry[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string')
    throw new RequestError('SerializationException', `${name} must be a string.`);
  return value;
}

/** Turns a JSON 1.1 PutEvents entry into the bus's shape (timestamps travel as epoch seconds). */
function toEntry(raw: unknown): PutEventsRequestEntryLike {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new RequestError('SerializationException', 'Each entry must be a JSON object.');
  }
  const entry = raw as Record<string, unknown>;
  let time: Date | string | undefined;
  if (typeof entry.Time === 'number') time = new Date(entry.Time * 1000);
  else if (typeof entry.Time === 'string') time = entry.Time;
  else if (entry.Time !== undefined && entry.Time !== null) {
    throw new RequestError('SerializationException', 'Time must be a timestamp.');
  }
  const resources = entry.Resources;
  if (resources !== undefined && resources !== null) {
    if (!Array.isArray(resources) || resources.some((r) => typeof r !== 'string')) {
      throw new RequestError('SerializationException', 'Resources must be a list of strings.');
    }
  }
  return {
    Time: time,
    Source: optionalString(entry, 'Source'),
    DetailType: optionalString(entry, 'DetailType'),
    Detail: optionalString(entry, 'Detail'),
    EventBusName: optionalString(entry, 'EventBusName'),
    TraceHeader: optionalString(entry, 'TraceHeader'),
    Resources: (resources as string[] | undefined | null) ?? undefined,
  };
}

function handlePutEvents(bus: LocalEventBus, body: string): unknown {
  let request: unknown;
  try {
    request = JSON.parse(body === '' ? '{}' : body) as unknown;
  } catch {
    throw new RequestError('SerializationException', 'The request body is not valid JSON.');
  }
  if (
    typeof request !== 'object' ||
    request === null ||
    !Array.isArray((request as { Entries?: unknown }).Entries)
  ) {
    throw new RequestError(
      'ValidationException',
      "1 validation error detected: Value null at 'entries' failed to satisfy constraint: Member must not be null",
    );
  }
  const entries = (request as { Entries: unknown[] }).Entries.map(toEntry);
  return bus.putEvents(entries);
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
  if (errorType) headers['x-amzn-errortype'] = errorType;
  response.writeHead(status, headers);
  response.end(body);
}

async function handle(
  bus: LocalEventBus,
  request: IncomingMessage,
  response: ServerResponse,
  limit: number,
): Promise<void> {
  const requestId = randomUUID();
  try {
    const body = await readBody(request, limit);
    const target = String(request.headers['x-amz-target'] ?? '');
    const operation = target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : target;
    if (request.method !== 'POST' || operation !== 'PutEvents') {
      throw new RequestError(
        'UnknownOperationException',
        `Operation ${operation || '(none)'} is not supported by the local EventBridge; only PutEvents is.`,
      );
    }
    send(response, 200, requestId, handlePutEvents(bus, body));
  } catch (err) {
    if (err instanceof RequestError) {
      send(response, err.status, requestId, { __type: err.code, message: err.message }, err.code);
    } else if (err instanceof LocalEventBridgeError) {
      send(response, 400, requestId, { __type: err.code, message: err.message }, err.code);
    } else {
      console.error(`local EventBridge server: request ${requestId} failed:`, err);
      const message = err instanceof Error ? err.message : String(err);
      send(response, 500, requestId, { __type: 'InternalException', message }, 'InternalException');
    }
  }
}

/**
 * Starts the EventBridge endpoint for a bus.
 * @param bus the bus PutEvents feeds
 * @param options port, host and body limit
 */
export async function startEventBridgeServer(
  bus: LocalEventBus,
  options: EventBridgeServerOptions = {},
): Promise<EventBridgeServer> {
  const host = options.host ?? '127.0.0.1';
  const limit = options.maxBodyBytes ?? 1024 * 1024;
  const server = createServer((request, response) => {
    void handle(bus, request, response, limit);
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
