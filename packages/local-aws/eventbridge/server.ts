/**
 * An HTTP/1.1 front end for {@link LocalEventBus} speaking the EventBridge JSON 1.1 protocol, so the real
 * `EventBridgeClient` (with `endpoint`, or `AWS_ENDPOINT_URL_EVENTBRIDGE`) can call PutEvents on it.
 * Every other action answers an `UnknownOperationException`.
 */
import {
  JsonProtocolError,
  parseJsonBody,
  startJsonProtocolServer,
  type JsonProtocolCall,
} from '../json-protocol-server';
import type { LocalEventBus, PutEventsRequestEntryLike } from './bus';
import { LocalEventBridgeError, type EventBridgeErrorCode } from './errors';

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

/** A request refused before it reaches the bus, with an EventBridge error shape. */
class RequestError extends JsonProtocolError {
  override readonly name: string = 'RequestError';

  constructor(code: EventBridgeErrorCode, message: string) {
    super(code, message);
  }
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
  const request = parseJsonBody(body);
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

function handle(bus: LocalEventBus, { method, target, operation = target, body }: JsonProtocolCall): unknown {
  if (method !== 'POST' || operation !== 'PutEvents') {
    throw new RequestError(
      'UnknownOperationException',
      `Operation ${operation || '(none)'} is not supported by the local EventBridge; only PutEvents is.`,
    );
  }
  return handlePutEvents(bus, body);
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
  return startJsonProtocolServer({
    ...options,
    serviceName: 'EventBridge',
    targetPrefix: 'AWSEvents.',
    contentType: 'application/x-amz-json-1.1',
    internalErrorCode: 'InternalException',
    toWireError: (err) =>
      err instanceof LocalEventBridgeError
        ? { code: err.code, message: err.message, status: 400 }
        : undefined,
    handle: (call) => handle(bus, call),
  });
}
