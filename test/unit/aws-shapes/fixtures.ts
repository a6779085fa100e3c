import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import type { BedrockClientConfig } from '@aws-sdk/client-bedrock';
import type { BedrockRuntimeClientConfig } from '@aws-sdk/client-bedrock-runtime';
import { PROJECT_ROOT } from '../../../lib/paths';

/**
 * The payloads AWS documents, in `test/fixtures/aws/` (sources in its README.md), and a way to hand them to a real
 * SDK client as the service's answer, so the SDK's own deserializer reads them.
 */

/** Where the documented payloads live. */
const AWS_FIXTURES_DIR = path.join(PROJECT_ROOT, 'test', 'fixtures', 'aws');

/** The names of the fixtures, so a renamed file breaks the build, not a test at run time. */
export const AWS_FIXTURES = {
  batchJobStateChange: 'bedrock-batch-job-state-change.event.json',
  batchOutput: 'bedrock-batch-output.jsonl.out',
  batchOutputConverse: 'bedrock-batch-output-converse.jsonl.out',
  batchManifest: 'bedrock-batch-manifest.json.out',
  converseResponse: 'bedrock-converse-response.json',
  throttlingException: 'bedrock-throttling-exception.http',
  createModelInvocationJob: 'bedrock-create-model-invocation-job.response.json',
  getModelInvocationJob: 'bedrock-get-model-invocation-job.response.json',
  s3ObjectCreated: 's3-object-created.event.json',
} as const;

/** A fixture's file name. */
export type AwsFixtureName = (typeof AWS_FIXTURES)[keyof typeof AWS_FIXTURES];

/** A JSON object. */
export type JsonObject = Record<string, unknown>;

/** The text of a fixture. */
export function fixtureText(name: AwsFixtureName): string {
  return fs.readFileSync(path.join(AWS_FIXTURES_DIR, name), 'utf8');
}

/** A JSON fixture, parsed (a fresh copy each call, so a test may change it). */
export function fixtureJson(name: AwsFixtureName): JsonObject {
  const value: unknown = JSON.parse(fixtureText(name));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`${name} does not hold a JSON object`);
  }
  return value as JsonObject;
}

/** The non-blank lines of a JSONL fixture, as text. */
function fixtureLines(name: AwsFixtureName): string[] {
  return fixtureText(name)
    .split('\n')
    .filter((line) => line.trim() !== '');
}

/** The lines of a JSONL fixture, parsed. */
export function fixtureJsonLines(name: AwsFixtureName): JsonObject[] {
  return fixtureLines(name).map((line) => JSON.parse(line) as JsonObject);
}

/** An HTTP response fixture: status line, headers (names lower-cased), body. */
export interface HttpFixture {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** Parses an `.http` fixture (`HTTP/1.1 <status> <reason>`, headers, a blank line, the body). */
export function httpFixture(name: AwsFixtureName): HttpFixture {
  const text = fixtureText(name);
  const split = /\r?\n\r?\n/.exec(text);
  if (!split) throw new Error(`${name}: no blank line between the headers and the body`);
  const [statusLine = '', ...headerLines] = text.slice(0, split.index).split(/\r?\n/);
  const status = /^HTTP\/1\.1 (\d{3})\b/.exec(statusLine)?.[1];
  if (status === undefined) throw new Error(`${name}: not an HTTP/1.1 status line: ${statusLine}`);
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`${name}: not a header line: ${line}`);
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(status), headers, body: text.slice(split.index + split[0].length).trimEnd() };
}

/** A request handler for SDK clients: the HTTP layer, below signing and deserialization. */
export type FixtureRequestHandler = NonNullable<BedrockRuntimeClientConfig['requestHandler']> &
  NonNullable<BedrockClientConfig['requestHandler']>;

/** What a fixture request handler saw. */
export interface ServedRequests {
  /** `METHOD path` of every request, in order. */
  readonly requests: string[];
}

/**
 * A request handler that answers every request with `answer(request)`: the real client signs, sends and deserializes
 * as it does against the service, with the documented response in place of the network.
 */
export function servingFixture(
  answer: (request: { method: string; path: string; body: string }) => HttpFixture,
): FixtureRequestHandler & ServedRequests {
  const requests: string[] = [];
  const handler = {
    requests,
    handle: async (request: { method: string; path: string; body?: unknown }) => {
      requests.push(`${request.method} ${request.path}`);
      const body =
        typeof request.body === 'string'
          ? request.body
          : request.body instanceof Uint8Array
            ? new TextDecoder().decode(request.body)
            : '';
      const fixture = answer({ method: request.method, path: request.path, body });
      return {
        response: {
          statusCode: fixture.status,
          headers: { ...fixture.headers },
          body: Readable.from([Buffer.from(fixture.body, 'utf8')]),
        },
      };
    },
    updateHttpClientConfig: () => undefined,
    httpHandlerConfigs: () => ({}),
  };
  return handler as unknown as FixtureRequestHandler & ServedRequests;
}

/** A 200 `application/json` answer with a JSON body (a documented response body). */
export function jsonAnswer(body: unknown): HttpFixture {
  return {
    status: 200,
    headers: { 'content-type': 'application/json', 'x-amzn-requestid': 'fixture-request' },
    body: JSON.stringify(body),
  };
}

/** Region and fake credentials for an SDK client that never leaves the process. */
export const OFFLINE_CLIENT = {
  region: 'us-east-1',
  credentials: { accessKeyId: 'AKIDFIXTURE', secretAccessKey: 'fixture-secret' },
  maxAttempts: 1,
} as const;
