import {
  BedrockRuntimeClient,
  ConverseCommand,
  InvokeModelCommand,
  type ConverseCommandInput,
} from '@aws-sdk/client-bedrock-runtime';
import { ConfiguredRetryStrategy } from '@smithy/util-retry';
import type { Usage, WorkItem } from '../shared/contracts';
import { errorMessage, errorName } from '../shared/errors';
import {
  CONVERSE_REQUEST_FIELDS,
  FAMILY_FORMATS,
  nativeUsage,
  type ModelFamily,
} from '../shared/model-catalog';
import { jitteredBackoffMs } from '../shared/backoff';

/**
 * Calling the model for one record, shared by ConverseBatch and the failure-lane consumer: the request (Converse or
 * InvokeModel), the throttling backoff, and which errors are worth a later retry. Kept out of the handlers' entry
 * files, which read their environment when loaded.
 */

/** What a model call needs of a record. */
export type ModelRequest = Pick<WorkItem, 'recordId' | 'format' | 'modelInput'>;

/** The model call for one record: Converse for Converse bodies, InvokeModel for native ones. */
export type ModelCaller = (
  item: ModelRequest,
  signal: AbortSignal,
) => Promise<{ modelOutput: unknown; usage: Usage }>;

/** Errors after which a later retry may succeed: they go to the failure queue, the rest to the DLQ. */
const RETRYABLE_MODEL_ERRORS = new Set([
  'ThrottlingException',
  'ServiceUnavailableException',
  'InternalServerException',
  'ModelTimeoutException',
  'ModelNotReadyException',
  'ServiceQuotaExceededException',
  'TimeoutError',
  'AbortError',
  'NotAttempted',
  'TransientDependencyError',
]);

/** True when a model error code (the error's name) is worth retrying later. */
export function isRetryableModelError(code: string): boolean {
  return RETRYABLE_MODEL_ERRORS.has(code);
}

/** A failed model call, as the failure files and the failure lane record it. */
export interface ModelFailure {
  code: string;
  message: string;
  retryable: boolean;
}

/**
 * Describes a model call that threw.
 * @param aborted true when the call was cut short by the caller's deadline (reported as `TimeoutError`)
 */
export function classifyModelError(err: unknown, aborted: boolean): ModelFailure {
  const code = aborted ? 'TimeoutError' : errorName(err);
  const attempts = (err as { $metadata?: { attempts?: number } }).$metadata?.attempts ?? 1;
  return {
    code,
    message: describeModelError(code, errorMessage(err), attempts),
    retryable: isRetryableModelError(code),
  };
}

/** A message a person can act on for a model error. */
export function describeModelError(code: string, message: string, attempts: number): string {
  const tries = attempts > 1 ? ` (after ${attempts} attempts)` : '';
  switch (code) {
    case 'ValidationException':
      return `the model API rejected the request: ${message}`;
    case 'ThrottlingException':
      return `throttled by the model's quota${tries}: ${message}`;
    case 'AccessDeniedException':
      return `not allowed to invoke the model (check model access and the function's role): ${message}`;
    default:
      return `${message}${tries}`;
  }
}

/**
 * Builds the Converse request for a record, refusing fields Converse does not have (the SDK would drop them).
 * @param family the model's family, named in the message (a native body of another family lands here)
 */
export function toConverseInput(
  modelId: string,
  modelInput: Record<string, unknown>,
  family?: ModelFamily,
): ConverseCommandInput {
  const unknown = Object.keys(modelInput).filter((k) => !CONVERSE_REQUEST_FIELDS.has(k));
  if (unknown.length > 0) {
    const native = family
      ? `; ${modelId} takes a Converse request or a native ${FAMILY_FORMATS[family].label} body (${FAMILY_FORMATS[family].source})`
      : '';
    const err = new Error(`modelInput has fields Converse does not accept: ${unknown.join(', ')}${native}`);
    err.name = 'ValidationException';
    throw err;
  }
  return { ...(modelInput as Omit<ConverseCommandInput, 'modelId'>), modelId };
}

/** The response headers Bedrock reports an InvokeModel call's tokens in (the body of some families has none). */
const TOKEN_HEADERS = {
  input: 'x-amzn-bedrock-input-token-count',
  output: 'x-amzn-bedrock-output-token-count',
} as const;

function headerCount(headers: Record<string, string | undefined>, name: string): number | undefined {
  const value = headers[name];
  if (value === undefined) return undefined;
  const n = Number(value);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/**
 * The model caller for a Bedrock Runtime client. Native answers' usage is read the way the model's family reports it
 * (model-catalog.ts), else from the `X-Amzn-Bedrock-Input-Token-Count` / `-Output-Token-Count` response headers
 * (https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring.html), which Mistral's native answers rely on.
 * @param family the model's family; undefined reads whichever known usage shape the body has
 */
export function bedrockCaller(
  client: BedrockRuntimeClient,
  modelId: string,
  family?: ModelFamily,
): ModelCaller {
  return async (item, signal) => {
    if (item.format === 'converse') {
      const out = await client.send(new ConverseCommand(toConverseInput(modelId, item.modelInput, family)), {
        abortSignal: signal,
      });
      const inputTokens = out.usage?.inputTokens ?? 0;
      const outputTokens = out.usage?.outputTokens ?? 0;
      return {
        modelOutput: { output: out.output, stopReason: out.stopReason },
        usage: {
          inputTokens,
          outputTokens,
          totalTokens: out.usage?.totalTokens ?? inputTokens + outputTokens,
        },
      };
    }
    const command = new InvokeModelCommand({
      modelId,
      body: JSON.stringify(item.modelInput),
      contentType: 'application/json',
      accept: 'application/json',
    });
    let headers: Record<string, string | undefined> = {};
    command.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        headers = (result.response as { headers?: Record<string, string> } | undefined)?.headers ?? {};
        return result;
      },
      { step: 'deserialize', name: 'corpusTokenCountHeaders' },
    );
    const out = await client.send(command, { abortSignal: signal });
    const body: unknown = JSON.parse(new TextDecoder().decode(out.body));
    const fromBody = nativeUsage(body, family);
    const inputTokens = fromBody?.inputTokens ?? headerCount(headers, TOKEN_HEADERS.input) ?? 0;
    const outputTokens = fromBody?.outputTokens ?? headerCount(headers, TOKEN_HEADERS.output) ?? 0;
    return {
      modelOutput: body,
      usage: { inputTokens, outputTokens, totalTokens: fromBody?.totalTokens ?? inputTokens + outputTokens },
    };
  };
}

/** Full-jitter exponential backoff for throttling, in the order of a per-minute quota's refill: up to 20 s. */
export function throttleBackoffMs(attempt: number): number {
  return Math.round(jitteredBackoffMs(attempt, 500, 20_000));
}

/** Model calls as the client saw them: every HTTP attempt, including the SDK's retries. */
export interface ModelCallStats {
  /** Attempts sent to the model (calls plus their retries). */
  total: number;
  /** Attempts the model answered with ThrottlingException. */
  throttled: number;
  /** Attempts that were retries of an earlier attempt of the same call. */
  retried: number;
}

/** Counts a client's model calls; {@link ModelCallCounter.since} gives one invocation's share. */
export class ModelCallCounter {
  private readonly counts: ModelCallStats = { total: 0, throttled: 0, retried: 0 };

  /** The counts so far (a copy). */
  snapshot(): ModelCallStats {
    return { ...this.counts };
  }

  /** The calls made since `start` (a snapshot taken earlier). */
  since(start: ModelCallStats): ModelCallStats {
    return {
      total: this.counts.total - start.total,
      throttled: this.counts.throttled - start.throttled,
      retried: this.counts.retried - start.retried,
    };
  }

  /** Counts one attempt: whether it retried an earlier one, and whether the model throttled it. */
  record(attempt: { retry: boolean; throttled: boolean }): void {
    this.counts.total++;
    if (attempt.retry) this.counts.retried++;
    if (attempt.throttled) this.counts.throttled++;
  }
}

/**
 * A Bedrock Runtime client that retries throttling with {@link throttleBackoffMs}, `maxAttempts` tries in all, and
 * counts every attempt into `counter`: the counting middleware sits below the retry middleware, so it sees each
 * attempt and the error the model answered it with.
 */
export function bedrockRuntimeClient(maxAttempts: number, counter?: ModelCallCounter): BedrockRuntimeClient {
  const client = new BedrockRuntimeClient({
    retryStrategy: new ConfiguredRetryStrategy(maxAttempts, throttleBackoffMs),
  });
  if (counter) {
    client.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as { headers?: Record<string, string> } | undefined;
        // The retry middleware stamps `amz-sdk-request: attempt=N; max=M` on every attempt.
        const retry = /attempt=(\d+)/.exec(request?.headers?.['amz-sdk-request'] ?? '')?.[1] ?? '1';
        try {
          const out = await next(args);
          counter.record({ retry: retry !== '1', throttled: false });
          return out;
        } catch (err) {
          counter.record({ retry: retry !== '1', throttled: errorName(err) === 'ThrottlingException' });
          throw err;
        }
      },
      { step: 'finalizeRequest', priority: 'low', name: 'corpusModelCallCounter' },
    );
  }
  return client;
}
