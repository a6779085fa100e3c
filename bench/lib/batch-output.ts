import type { S3Client } from '@aws-sdk/client-s3';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { FaultInjector, processBatchRecord } from '@corpus-pipeline/local-aws/bedrock-simulator';
import { CATALOG_MODELS } from '../../cli/local/simulator-models';
import { mulberry32 } from '@corpus-pipeline/local-aws/bedrock-simulator/engine';
import { uploadChunks } from './services';

/** Records whose text holds this are rejected by the simulator's marker fault: the error lines. */
export const REJECT_MARKER = 'BENCH-REJECT';

/** A generated shard: its input file, the job output in Bedrock's layout and what it holds. */
export interface GeneratedShard {
  runId: string;
  inputKey: string;
  /** `<shard output prefix><jobId>/` */
  outputPrefix: string;
  outputKey: string;
  jobArn: string;
  records: number;
  errors: number;
  /** Size of the `.jsonl.out`. */
  outputBytes: number;
}

/**
 * Writes one shard as a finished Bedrock batch job leaves it: the input file (`{recordId, modelInput}` lines, as Plan
 * writes them), `<jobId>/part-00000.jsonl.out` with each record's line in the simulator's output format
 * (processBatchRecord: `{recordId, modelInput, modelOutput}` or `{recordId, modelInput, error}`), in shuffled order as
 * Bedrock writes it, and `manifest.json.out`.
 * @param errorShare share of records the model rejects (error lines)
 * @param textChars average length of a record's text
 */
export async function writeBatchShard(
  s3: S3Client,
  bucket: string,
  runId: string,
  records: number,
  errorShare: number,
  textChars: number,
): Promise<GeneratedShard> {
  const random = mulberry32(records);
  const model = CATALOG_MODELS[0];
  if (!model) throw new Error('the simulator has no model');
  const faults = new FaultInjector({ rejectWhenTextIncludes: REJECT_MARKER });
  const jobId = 'benchjob0001';
  const prefix = `runs/${runId}/shards/00000`;
  const inputKey = `${prefix}/input/part-00000.jsonl`;
  const outputPrefix = `${prefix}/output/${jobId}/`;
  const outputKey = `${outputPrefix}part-00000.jsonl.out`;
  const words =
    'the report says delivery was late but support fixed it quickly and the product is good'.split(' ');
  const text = (n: number): string => {
    const parts: string[] = [];
    let length = 0;
    while (length < n) {
      const word = words[Math.floor(random() * words.length)] ?? 'word';
      parts.push(word);
      length += word.length + 1;
    }
    return parts.join(' ');
  };

  const inputs: string[] = [];
  let errors = 0;
  for (let i = 0; i < records; i++) {
    const reject = random() < errorShare;
    if (reject) errors++;
    const chars = Math.round(textChars * (0.3 + random() * 1.4));
    const modelInput = {
      messages: [{ role: 'user', content: [{ text: `${reject ? `${REJECT_MARKER} ` : ''}${text(chars)}` }] }],
      inferenceConfig: { maxTokens: 512 },
    };
    inputs.push(JSON.stringify({ recordId: `rec-${String(i).padStart(6, '0')}`, modelInput }));
  }
  await uploadChunks(s3, bucket, inputKey, chunked(inputs));

  // Output order is not input order: shuffled within windows, as the simulator's writer does.
  const counts = { success: 0, error: 0, inputTokens: 0, outputTokens: 0 };
  const outputs = function* (): Generator<string> {
    const window = 1024;
    for (let start = 0; start < inputs.length; start += window) {
      const lines = inputs.slice(start, start + window).map((line) => {
        const result = processBatchRecord(line, {
          model,
          invocationType: 'Converse',
          faults,
          fallbackRecordId: () => 'missing-id',
        });
        if (result.ok) counts.success++;
        else counts.error++;
        counts.inputTokens += result.inputTokens;
        counts.outputTokens += result.outputTokens;
        return JSON.stringify(result.line);
      });
      for (let i = lines.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [lines[i], lines[j]] = [lines[j] as string, lines[i] as string];
      }
      yield `${lines.join('\n')}\n`;
    }
  };
  const outputBytes = await uploadChunks(s3, bucket, outputKey, outputs());
  await s3.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: `${outputPrefix}manifest.json.out`,
      Body: JSON.stringify({
        totalRecordCount: records,
        processedRecordCount: records,
        successRecordCount: counts.success,
        errorRecordCount: counts.error,
        inputTokenCount: counts.inputTokens,
        outputTokenCount: counts.outputTokens,
      }),
    }),
  );
  return {
    runId,
    inputKey,
    outputPrefix,
    outputKey,
    jobArn: `arn:aws:bedrock:us-east-1:000000000000:model-invocation-job/${jobId}`,
    records,
    errors,
    outputBytes,
  };
}

function* chunked(lines: string[]): Generator<string> {
  for (let i = 0; i < lines.length; i += 1000) yield `${lines.slice(i, i + 1000).join('\n')}\n`;
}
