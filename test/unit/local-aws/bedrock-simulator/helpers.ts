import http2 from 'node:http2';

import { BedrockRuntimeClient, type BedrockRuntimeClientConfig } from '@aws-sdk/client-bedrock-runtime';

/** Model used by most tests. */
export const HAIKU = 'anthropic.claude-haiku-4-5-20251001-v1:0';

/**
 * A real BedrockRuntimeClient pointed at the simulator, with fake credentials and no retries.
 * Without an endpoint it finds one the way deployed code does (AWS_ENDPOINT_URL_BEDROCK_RUNTIME).
 */
export function runtimeClient(
  endpoint: string | undefined,
  extra: Partial<BedrockRuntimeClientConfig> = {},
): BedrockRuntimeClient {
  return new BedrockRuntimeClient({
    ...(endpoint === undefined ? {} : { endpoint }),
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDSIMULATOR', secretAccessKey: 'simulator-secret' },
    maxAttempts: 1,
    ...extra,
  });
}

/** What an SDK service error looks like to a caller. */
export interface ServiceErrorShape {
  name: string;
  message: string;
  $metadata: { httpStatusCode?: number };
}

/** Runs a call that must fail and returns the error; fails the test if the call succeeds. */
export async function expectServiceError(call: Promise<unknown>): Promise<ServiceErrorShape> {
  let result: unknown;
  try {
    result = await call;
  } catch (err) {
    return err as ServiceErrorShape;
  }
  throw new Error(`expected a service error, got a response: ${JSON.stringify(result).slice(0, 300)}`);
}

/** A raw h2c request (for bodies the SDK cannot produce, like malformed JSON). */
export async function rawRequest(
  endpoint: string,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  const session = http2.connect(endpoint);
  try {
    return await new Promise((resolve, reject) => {
      session.on('error', reject);
      const stream = session.request({
        ':method': method,
        ':path': path,
        'content-type': 'application/json',
      });
      let headers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      stream.on('response', (h) => (headers = h));
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () =>
        resolve({
          status: Number(headers[':status']),
          headers,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      stream.on('error', reject);
      stream.end(body);
    });
  } finally {
    session.close();
  }
}
