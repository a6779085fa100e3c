import { createHash } from 'node:crypto';

import type { BatchInvocationType } from './batch-status';
import {
  generate,
  toConverseResponse,
  toNativeResponse,
  validateNativeRequest,
  type OutputLengthOptions,
} from './engine';
import { SimulatorError } from './errors';
import type { FaultInjector } from './faults';
import type { ModelSpec } from './models';
import { validateConverseRequest, type SimulationRequest } from './validation';

/** The `error` member of an output line. */
export interface BatchRecordError {
  /** HTTP status the same request would have got from the runtime API (400 for validation errors). */
  readonly errorCode: number;
  readonly errorMessage: string;
}

/** One line of a `.jsonl.out` file: the record id, its input, and either the model's output or an error. */
export type BatchOutputLine =
  | { readonly recordId: string; readonly modelInput?: unknown; readonly modelOutput: unknown }
  | { readonly recordId: string; readonly modelInput?: unknown; readonly error: BatchRecordError };

/** What processing one input line gave. */
export interface BatchRecordResult {
  readonly line: BatchOutputLine;
  /** True when the line carries a modelOutput. */
  readonly ok: boolean;
  /** Input tokens of a success (0 for errors). */
  readonly inputTokens: number;
  /** Output tokens of a success (0 for errors). */
  readonly outputTokens: number;
}

/** What a record is processed with. */
export interface BatchRecordContext {
  /** The job's model. */
  readonly model: ModelSpec;
  /** Native InvokeModel bodies or Converse request bodies. */
  readonly invocationType: BatchInvocationType;
  /** The simulator's fault injector: its marker makes records fail here as they do on the runtime side. */
  readonly faults: Pick<FaultInjector, 'checkMarker'>;
  /** Answer length range (the runtime's, so answers match). */
  readonly outputLength?: OutputLengthOptions;
  /** The record id to use when a line has none (Bedrock adds one). */
  readonly fallbackRecordId: () => string;
}

const RECORD_ID_ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ';

/**
 * The 11-character id Bedrock gives a record without one; deterministic here (job, file and line), so reruns
 * of a test see the same ids.
 */
export function generatedRecordId(jobId: string, fileName: string, lineNumber: number): string {
  const digest = createHash('sha256').update(`${jobId}\n${fileName}\n${lineNumber}`).digest();
  let id = '';
  for (let i = 0; i < 11; i += 1) id += RECORD_ID_ALPHABET[(digest[i] as number) % RECORD_ID_ALPHABET.length];
  return id;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function failed(
  recordId: string,
  modelInput: unknown,
  errorCode: number,
  errorMessage: string,
): BatchRecordResult {
  const line: BatchOutputLine =
    modelInput === undefined
      ? { recordId, error: { errorCode, errorMessage } }
      : { recordId, modelInput, error: { errorCode, errorMessage } };
  return { line, ok: false, inputTokens: 0, outputTokens: 0 };
}

/**
 * Processes one input line the way the runtime API would answer the same request: the model's native body
 * (InvokeModel jobs) or a Converse request (Converse jobs) is validated with the runtime's rules, the marker
 * fault applies, and the deterministic model answers. Anything the runtime would refuse becomes an error line.
 * @param text the line, without its newline (not blank)
 * @param ctx the job's model, invocation type and faults
 */
export function processBatchRecord(text: string, ctx: BatchRecordContext): BatchRecordResult {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    return failed(
      ctx.fallbackRecordId(),
      undefined,
      400,
      `Malformed record: the line is not valid JSON (${reason}).`,
    );
  }
  if (!isRecord(parsed)) {
    return failed(
      ctx.fallbackRecordId(),
      undefined,
      400,
      'Malformed record: each line must be a JSON object.',
    );
  }
  const rawId = parsed.recordId;
  const recordId = typeof rawId === 'string' && rawId.length > 0 ? rawId : ctx.fallbackRecordId();
  const modelInput = parsed.modelInput;
  if (rawId !== undefined && typeof rawId !== 'string') {
    return failed(
      recordId,
      modelInput,
      400,
      `Malformed record: recordId must be a string, got ${JSON.stringify(rawId)}.`,
    );
  }
  if (!isRecord(modelInput)) {
    return failed(
      recordId,
      modelInput,
      400,
      'Malformed record: modelInput is missing or not a JSON object; it must hold the request body for the model.',
    );
  }
  try {
    const request: SimulationRequest =
      ctx.invocationType === 'Converse'
        ? validateConverseRequest(modelInput, ctx.model)
        : validateNativeRequest(modelInput, ctx.model);
    const fault = ctx.faults.checkMarker(request);
    if (fault) return failed(recordId, modelInput, fault.error.statusCode, fault.error.message);
    const generation = generate(request, ctx.outputLength);
    const modelOutput =
      ctx.invocationType === 'Converse'
        ? toConverseResponse(generation, 0)
        : toNativeResponse(generation, ctx.model, request);
    return {
      line: { recordId, modelInput, modelOutput },
      ok: true,
      inputTokens: generation.inputTokens,
      outputTokens: generation.outputTokens,
    };
  } catch (err) {
    if (!(err instanceof SimulatorError)) throw err;
    return failed(recordId, modelInput, err.statusCode, err.message);
  }
}
