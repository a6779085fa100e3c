import { randomUUID } from 'node:crypto';
import http from 'node:http';

import { BatchServiceError } from './batch-errors';
import type { BatchJobService } from './batch-service';
import { closeServer, listenLocal } from '../listen';

/** Where the control-plane server listens. */
export interface ControlListenOptions {
  /** Interface to bind. @default '127.0.0.1' */
  readonly host?: string;
  /** TCP port; 0 picks a free one. @default 0 */
  readonly port?: number;
}

/** A running HTTP/1.1 server in front of a {@link BatchJobService}. */
export interface ControlServer {
  /** `http://host:port`, for BedrockClient's `endpoint` or `AWS_ENDPOINT_URL_BEDROCK`. */
  readonly endpoint: string;
  /** The bound port. */
  readonly port: number;
  /** Stops accepting connections and closes the open ones. */
  close(): Promise<void>;
}

/** A transport-independent HTTP answer of the control plane. */
export interface ControlResponse {
  /** HTTP status code. */
  readonly status: number;
  /** JSON body text. */
  readonly body: string;
  /** `x-amzn-errortype` of an error answer. */
  readonly errorType?: string;
}

const OPERATIONS_SERVED =
  'CreateModelInvocationJob (POST /model-invocation-job), GetModelInvocationJob (GET /model-invocation-job/{jobIdentifier}), ListModelInvocationJobs (GET /model-invocation-jobs), StopModelInvocationJob (POST /model-invocation-job/{jobIdentifier}/stop), GetFoundationModel (GET /foundation-models/{modelIdentifier}), GetInferenceProfile (GET /inference-profiles/{inferenceProfileIdentifier}) and GetFoundationModelAvailability (GET /foundation-model-availability/{modelId})';

/** The model questions, by path segment (the SDK's restJson1 routes in @aws-sdk/client-bedrock). */
const MODEL_ROUTES: Readonly<Record<string, (service: BatchJobService, id: string) => unknown>> = {
  'foundation-models': (service, id) => service.foundationModel(id),
  'inference-profiles': (service, id) => service.inferenceProfile(id),
  'foundation-model-availability': (service, id) => service.foundationModelAvailability(id),
};

function ok(value: unknown): ControlResponse {
  return { status: 200, body: JSON.stringify(value) };
}

function errorResponse(error: BatchServiceError): ControlResponse {
  return {
    status: error.statusCode,
    body: JSON.stringify({ message: error.message }),
    errorType: error.errorName,
  };
}

function decodeLabel(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch (err) {
    if (!(err instanceof URIError)) throw err;
    // An undecodable label names no job: let the identifier check reject it.
    return raw;
  }
}

/**
 * Routes one restJson1 request of the Bedrock control plane to the service.
 * @param service the batch job service
 * @param method HTTP method
 * @param url the request target (path and query)
 * @param body the request body text
 */
export function answerControlRequest(
  service: BatchJobService,
  method: string,
  url: string,
  body: string,
): ControlResponse {
  const parsed = new URL(url, 'http://localhost');
  const segments = parsed.pathname.split('/').slice(1);
  try {
    if (segments[0] === 'model-invocation-job') {
      if (segments.length === 1 && method === 'POST') {
        let json: unknown;
        try {
          json = body.length === 0 ? {} : JSON.parse(body);
        } catch (err) {
          const reason = err instanceof Error ? err.message : String(err);
          throw new BatchServiceError('ValidationException', `The request body is not valid JSON: ${reason}`);
        }
        return ok(service.create(json));
      }
      const label = segments[1];
      if (segments.length === 2 && method === 'GET' && label !== undefined && label.length > 0) {
        return ok(service.get(decodeLabel(label)));
      }
      if (segments.length === 3 && segments[2] === 'stop' && method === 'POST' && label !== undefined) {
        service.stop(decodeLabel(label));
        return ok({});
      }
    }
    if (segments.length === 1 && segments[0] === 'model-invocation-jobs' && method === 'GET') {
      return ok(service.list(parsed.searchParams));
    }
    const route = MODEL_ROUTES[segments[0] ?? ''];
    // An ARN label arrives percent-encoded as one segment; decoded, it may hold slashes.
    if (route && method === 'GET' && segments.length >= 2) {
      return ok(route(service, decodeLabel(segments.slice(1).join('/'))));
    }
    return errorResponse(
      new BatchServiceError(
        'UnknownOperationException',
        `No operation matches ${method} ${parsed.pathname}; the Bedrock simulator's control plane serves ${OPERATIONS_SERVED}.`,
      ),
    );
  } catch (err) {
    if (err instanceof BatchServiceError) return errorResponse(err);
    throw err;
  }
}

/**
 * Serves the Bedrock control plane's batch inference operations over HTTP/1.1 (restJson1), which is what
 * BedrockClient speaks.
 */
export async function listenControl(
  service: BatchJobService,
  options: ControlListenOptions = {},
): Promise<ControlServer> {
  const host = options.host ?? '127.0.0.1';
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', (err) => console.error('bedrock-simulator: control-plane request failed', err));
    req.on('end', () => {
      const method = req.method ?? 'GET';
      const url = req.url ?? '/';
      let response: ControlResponse;
      try {
        response = answerControlRequest(service, method, url, Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        console.error('bedrock-simulator: internal error while answering', method, url, err);
        const reason = err instanceof Error ? err.message : String(err);
        response = errorResponse(
          new BatchServiceError('InternalServerException', `Simulator internal error: ${reason}`),
        );
      }
      res.writeHead(response.status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(response.body),
        'x-amzn-requestid': randomUUID(),
        ...(response.errorType === undefined ? {} : { 'x-amzn-errortype': response.errorType }),
      });
      res.end(response.body);
    });
  });

  const { port, endpoint } = await listenLocal(server, options.port ?? 0, host);
  return {
    endpoint,
    port,
    close: () => closeServer(server),
  };
}
