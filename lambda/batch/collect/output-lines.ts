import type { RecordFormat, Usage } from '../../shared/contracts';
import { nativeUsage } from '../../shared/model-catalog';

/*
 * How Collect reads what Bedrock wrote: the error codes of error lines, the model output of success lines in the
 * shape Converse runs write, and a failed job's message.
 */

/** Error codes (names, or HTTP statuses as Bedrock writes them) after which a retry may succeed. */
const RETRYABLE_CODES = new Set([
  'ThrottlingException',
  'TooManyRequestsException',
  'ServiceUnavailableException',
  'ServiceQuotaExceededException',
  'InternalServerException',
  'InternalFailure',
  'ModelTimeoutException',
  'ModelNotReadyException',
  'RequestTimeout',
  'TimeoutError',
]);

/** The exception Bedrock's runtime API answers with for each HTTP status a batch error line carries. */
const STATUS_NAMES: Readonly<Record<string, string>> = {
  '400': 'ValidationException',
  '403': 'AccessDeniedException',
  '404': 'ResourceNotFoundException',
  '408': 'ModelTimeoutException',
  '424': 'ModelErrorException',
  '429': 'ThrottlingException',
  '500': 'InternalServerException',
  '503': 'ServiceUnavailableException',
};

/**
 * The failure code of a batch error line: Bedrock writes an HTTP status (`400`); the failure files use the name the
 * same request gets from the runtime API (`ValidationException`), so both modes report a rejection alike.
 */
export function batchErrorCode(raw: unknown): string {
  if (typeof raw !== 'number' && typeof raw !== 'string') return 'BatchRecordError';
  const code = String(raw);
  return STATUS_NAMES[code] ?? code;
}

/**
 * True when an error line's code is worth retrying: throttling, timeouts and server errors (HTTP 408, 429, 5xx or
 * their exception names). Validation and other client errors are not.
 */
export function isRetryableBatchError(code: string): boolean {
  if (/^\d{3}$/.test(code)) {
    const status = Number(code);
    return status === 408 || status === 429 || status >= 500;
  }
  return RETRYABLE_CODES.has(code);
}

/**
 * Normalises a success line's `modelOutput` to what converse mode writes: for a Converse response `{output, stopReason}`,
 * for a native body the body itself; usage from Converse's `usage` or, for a native body, the way its family reports
 * it (model-catalog.ts nativeUsage: Anthropic `usage.input_tokens`, Nova `usage.inputTokens`, Llama token counts,
 * gpt-oss `usage.prompt_tokens`; Mistral's body has none, so 0). Collect does not know the model: the body's shape
 * says which family it is.
 * @param format the shard's record format: a native Nova answer looks like a Converse one, and is kept whole as mode
 *   B keeps it; without it, a body with `output` and `stopReason` is taken for a Converse answer
 */
export function normaliseModelOutput(
  modelOutput: unknown,
  format?: RecordFormat,
): { modelOutput: unknown; usage: Usage } {
  if (!isObject(modelOutput)) return { modelOutput, usage: usageOf(0, 0) };
  if (format !== 'native' && 'output' in modelOutput && 'stopReason' in modelOutput) {
    const usage = isObject(modelOutput.usage) ? modelOutput.usage : {};
    const inputTokens = count(usage.inputTokens);
    const outputTokens = count(usage.outputTokens);
    return {
      modelOutput: { output: modelOutput.output, stopReason: modelOutput.stopReason },
      usage: usageOf(inputTokens, outputTokens, usage.totalTokens),
    };
  }
  const usage = nativeUsage(modelOutput);
  return {
    modelOutput,
    usage: usage ? usageOf(usage.inputTokens, usage.outputTokens, usage.totalTokens) : usageOf(0, 0),
  };
}

/** Token usage, its total given or summed. */
export function usageOf(inputTokens: number, outputTokens: number, total?: unknown): Usage {
  const totalTokens =
    typeof total === 'number' && Number.isFinite(total) ? total : inputTokens + outputTokens;
  return { inputTokens, outputTokens, totalTokens };
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
}

/** A JSON object (not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The job's message as a failure code, and whether every model call would meet the same error. */
export function batchJobFailure(message: string | undefined): { code: string; fatal: boolean } {
  const text = message ?? '';
  if (/access ?denied|not authori[sz]ed|accessdeniedexception|don't have access/i.test(text)) {
    return { code: 'AccessDeniedException', fatal: true };
  }
  if (
    /resourcenotfound|model[^.]*(not found|does not exist|end of life|is not supported)|could not find/i.test(
      text,
    )
  ) {
    return { code: 'ResourceNotFoundException', fatal: true };
  }
  return { code: 'BatchJobFailed', fatal: false };
}

/** What a person reads for each record of a job that `Failed` for a reason every call would meet. */
export function batchJobFailedMessage(jobArn: string, failureMessage: string | undefined): string {
  return (
    `the Bedrock batch job ${jobArn} failed (${failureMessage ?? 'Bedrock gave no failure message'}), ` +
    'and a Converse call would fail the same way, so this record was not processed; fix the cause (model access, ' +
    'the model id) and run the corpus again'
  );
}
