import http2 from 'node:http2';

import { SimulatorError } from './errors';
import { listenLocal } from '../listen';
import {
  BedrockRuntimeService,
  toErrorResponse,
  type RuntimeOperation,
  type RuntimeResponse,
} from './runtime-service';

/** Where the HTTP/2 server listens. */
export interface ListenOptions {
  /** Interface to bind. @default '127.0.0.1' */
  readonly host?: string;
  /** TCP port; 0 picks a free one. @default 0 */
  readonly port?: number;
}

/** A running cleartext HTTP/2 (h2c, prior knowledge) server in front of a {@link BedrockRuntimeService}. */
export interface RuntimeServer {
  /** `http://host:port`, for `endpoint` / `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`. */
  readonly endpoint: string;
  /** The bound port. */
  readonly port: number;
  /** Stops accepting, finishes or drops open streams, and closes every session. */
  close(): Promise<void>;
}

const ROUTE = /^\/model\/([^/]+)\/([a-z-]+)$/;
const OPERATIONS: Readonly<Record<string, RuntimeOperation>> = { converse: 'converse', invoke: 'invoke' };
const STREAMING: Readonly<Record<string, string>> = {
  'converse-stream': 'ConverseStream',
  'invoke-with-response-stream': 'InvokeModelWithResponseStream',
};

/** Grace period for sessions to finish their streams on close before they are destroyed. */
const CLOSE_GRACE_MS = 1000;

function routeError(method: string, path: string): SimulatorError {
  const match = ROUTE.exec(path);
  const streaming = match?.[2] !== undefined ? STREAMING[match[2]] : undefined;
  if (streaming !== undefined) {
    return new SimulatorError(
      'UnknownOperationException',
      `The Bedrock simulator does not implement ${streaming}; call ${streaming === 'ConverseStream' ? 'Converse' : 'InvokeModel'} instead.`,
    );
  }
  return new SimulatorError(
    'UnknownOperationException',
    `No operation matches ${method} ${path}; the simulator serves POST /model/{modelId}/converse and POST /model/{modelId}/invoke.`,
  );
}

/**
 * Serves Converse and InvokeModel over cleartext HTTP/2, which is what BedrockRuntimeClient speaks
 * (its NodeHttp2Handler connects with prior knowledge, no TLS, no HTTP/1.1 upgrade).
 */
export async function listenRuntime(
  service: BedrockRuntimeService,
  options: ListenOptions = {},
): Promise<RuntimeServer> {
  const host = options.host ?? '127.0.0.1';
  const server = http2.createServer({ settings: { maxConcurrentStreams: 1000 } });
  const sessions = new Set<http2.ServerHttp2Session>();
  const { http } = service.stats;

  server.on('session', (session) => {
    http.sessions += 1;
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    // A client that drops its connection is not a simulator failure: count it.
    session.on('error', () => {
      http.streamErrors += 1;
    });
  });

  server.on('stream', (stream, headers) => {
    http.streams += 1;
    stream.on('error', () => {
      http.streamErrors += 1;
    });
    const method = String(headers[':method'] ?? '');
    const path = String(headers[':path'] ?? '').split('?')[0] ?? '';
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      answer(method, path, body)
        .then((response) => send(stream, response))
        .catch((err: unknown) => {
          http.internalErrors += 1;
          console.error('bedrock-simulator: failed to answer', method, path, err);
          stream.destroy(err instanceof Error ? err : new Error(String(err)));
        });
    });
  });

  async function answer(method: string, path: string, body: string): Promise<RuntimeResponse> {
    const match = ROUTE.exec(path);
    const operation = match?.[2] !== undefined ? OPERATIONS[match[2]] : undefined;
    if (method !== 'POST' || match?.[1] === undefined || operation === undefined) {
      http.unknownRoutes += 1;
      return toErrorResponse(routeError(method, path));
    }
    let modelIdentifier: string;
    try {
      modelIdentifier = decodeURIComponent(match[1]);
    } catch (err) {
      if (!(err instanceof URIError)) throw err;
      // An undecodable label cannot name a model: let the service answer "invalid model identifier".
      modelIdentifier = match[1];
    }
    try {
      return await service.handle(operation, modelIdentifier, body);
    } catch (err) {
      http.internalErrors += 1;
      console.error('bedrock-simulator: internal error while answering', method, path, err);
      const reason = err instanceof Error ? err.message : String(err);
      return toErrorResponse(
        new SimulatorError('InternalServerException', `Simulator internal error: ${reason}`),
      );
    }
  }

  function send(stream: http2.ServerHttp2Stream, response: RuntimeResponse): void {
    if (stream.closed || stream.destroyed) return;
    stream.respond({
      ':status': response.status,
      ...response.headers,
      'content-length': Buffer.byteLength(response.body),
    });
    stream.end(response.body);
  }

  const { port, endpoint } = await listenLocal(server, options.port ?? 0, host);
  return {
    endpoint,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        for (const session of sessions) {
          session.close();
          setTimeout(() => session.destroy(), CLOSE_GRACE_MS).unref();
        }
      }),
  };
}
