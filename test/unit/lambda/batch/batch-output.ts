import type { CollectShardInput } from '../../../../lambda/batch/collect/collect-contract';
import type { FakeS3 } from '../helpers';
import { OUTPUT_BUCKET } from '../../../support/names';

/**
 * Builders for a Bedrock batch job's input and output files as Bedrock lays them out: one `<input>.out` per input
 * file under `<prefix>/<jobId>/`, lines in an order that is not the input order, and `manifest.json.out`.
 */

/** The bucket every test file lives in: the handlers' output bucket. */
export const BUCKET = OUTPUT_BUCKET;

/** One batch input line. */
export interface InputRecord {
  recordId: string;
  modelInput: Record<string, unknown>;
}

/** A Converse request body (a Converse job's modelInput). */
export function converseInput(recordId: string): InputRecord {
  return {
    recordId,
    modelInput: {
      messages: [{ role: 'user', content: [{ text: `question ${recordId}` }] }],
      inferenceConfig: { maxTokens: 64 },
    },
  };
}

/** An Anthropic Messages body (an InvokeModel job's modelInput). */
export function nativeInput(recordId: string): InputRecord {
  return {
    recordId,
    modelInput: {
      anthropic_version: 'bedrock-2023-05-31',
      max_tokens: 64,
      messages: [{ role: 'user', content: [{ type: 'text', text: `question ${recordId}` }] }],
    },
  };
}

/** A Converse job's success line. */
export function converseSuccess(record: InputRecord, inputTokens = 10, outputTokens = 5): unknown {
  return {
    recordId: record.recordId,
    modelInput: record.modelInput,
    modelOutput: {
      output: { message: { role: 'assistant', content: [{ text: `answer ${record.recordId}` }] } },
      stopReason: 'end_turn',
      usage: { inputTokens, outputTokens, totalTokens: inputTokens + outputTokens },
      metrics: { latencyMs: 120 },
    },
  };
}

/** An InvokeModel (Anthropic) job's success line. */
export function nativeSuccess(record: InputRecord, inputTokens = 12, outputTokens = 7): unknown {
  return {
    recordId: record.recordId,
    modelInput: record.modelInput,
    modelOutput: {
      id: `msg_${record.recordId}`,
      type: 'message',
      role: 'assistant',
      model: 'claude-haiku-4-5-20251001',
      content: [{ type: 'text', text: `answer ${record.recordId}` }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: inputTokens, output_tokens: outputTokens },
    },
  };
}

/** An error line; Bedrock writes the HTTP status the runtime API would have answered as `errorCode`. */
export function errorLine(
  record: InputRecord,
  errorCode: number | string,
  errorMessage: string,
  withInput = true,
): unknown {
  return {
    recordId: record.recordId,
    ...(withInput ? { modelInput: record.modelInput } : {}),
    error: { errorCode, errorMessage },
  };
}

/** A deterministic shuffle (mulberry32), as Bedrock's output order is not the input order. */
export function shuffled<T>(values: readonly T[], seed = 7): T[] {
  let a = seed >>> 0;
  const random = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...values];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** Counts for `manifest.json.out`. */
export interface ManifestCounts {
  total: number;
  success: number;
  error: number;
  /** Defaults to success + error. */
  processed?: number;
}

/** One shard staged in the fake S3: its input files, the job's output files and (optionally) its manifest. */
export interface StagedShard {
  runId: string;
  shard: number;
  jobId: string;
  /** Input records per input file. */
  inputs: InputRecord[][];
  /** Output lines per input file (same order as `inputs`); already in the order Bedrock wrote them. */
  outputs: unknown[][];
  manifest?: ManifestCounts;
}

/** Writes a staged shard into the fake S3 and returns Collect's input for it. */
export function stageShard(
  s3: FakeS3,
  staged: StagedShard,
  extra: Partial<CollectShardInput> = {},
): CollectShardInput {
  const inputPrefix = `runs/${staged.runId}/batch/shard-${staged.shard}/input/`;
  const outputPrefix = `runs/${staged.runId}/batch/shard-${staged.shard}/output/${staged.jobId}/`;
  const inputKeys = staged.inputs.map((records, i) => {
    const key = `${inputPrefix}part-${i}.jsonl`;
    s3.putLines(BUCKET, key, records);
    return key;
  });
  staged.outputs.forEach((lines, i) => s3.putLines(BUCKET, `${outputPrefix}part-${i}.jsonl.out`, lines));
  if (staged.manifest) {
    const m = staged.manifest;
    s3.putJson(BUCKET, `${outputPrefix}manifest.json.out`, {
      totalRecordCount: m.total,
      processedRecordCount: m.processed ?? m.success + m.error,
      successRecordCount: m.success,
      errorRecordCount: m.error,
      inputTokenCount: 0,
      outputTokenCount: 0,
    });
  }
  return {
    runId: staged.runId,
    ledgerScope: 'test/model',
    shard: staged.shard,
    jobArn: `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/${staged.jobId}`,
    jobStatus: 'Completed',
    inputKeys,
    outputPrefix,
    ...extra,
  };
}

/** Record ids `<prefix>-0 .. <prefix>-(n-1)`. */
export function ids(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
}
