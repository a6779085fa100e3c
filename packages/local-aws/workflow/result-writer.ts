/**
 * Distributed Map ResultWriter: the files Step Functions writes under
 * `<Prefix>/<mapRunId>/` (manifest.json, SUCCEEDED_0.json, FAILED_0.json, PENDING_0.json) and the
 * WriterConfig transformations, in the formats the Step Functions developer guide documents
 * ("ResultWriter (Map)": NONE records carry the execution metadata, Input and Output as JSON
 * text, keys in alphabetical order; failed, timed-out and aborted children go to FAILED_n.json
 * untransformed; children never started go to PENDING_n.json).
 */
import type { JsonValue } from './asl-runtime';
import { StatesError } from './errors';
import type { ObjectStore } from './types';

/** ASL error name of a failed export. */
export const RESULT_WRITER_FAILED = 'States.ResultWriterFailed';

/** The outcome of one child execution (or one child never started). */
export interface ChildOutcome {
  /** Position of the child in item order. */
  index: number;
  status: 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED' | 'PENDING';
  input: JsonValue;
  output?: JsonValue;
  error?: string;
  cause?: string;
  executionArn?: string;
  name?: string;
  startDate?: Date;
  stopDate?: Date;
}

/** WriterConfig, resolved. */
export interface WriterConfig {
  transformation: 'NONE' | 'COMPACT' | 'FLATTEN';
  outputType: 'JSON' | 'JSONL';
}

/** Where and how to export. */
export interface ResultWriterTarget {
  bucket: string;
  prefix: string;
  mapRunArn: string;
  mapRunId: string;
  childStateMachineArn: string;
  config: WriterConfig;
}

/** Resolves a WriterConfig; the defaults depend on whether results are exported to S3. */
export function writerConfig(raw: unknown, exporting: boolean): WriterConfig {
  const config = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>) : {};
  const transformation = config.Transformation ?? (exporting ? 'NONE' : 'COMPACT');
  const outputType = config.OutputType ?? 'JSON';
  if (transformation !== 'NONE' && transformation !== 'COMPACT' && transformation !== 'FLATTEN') {
    throw new StatesError(
      'States.Runtime',
      `WriterConfig.Transformation ${JSON.stringify(transformation)} is invalid`,
    );
  }
  if (outputType !== 'JSON' && outputType !== 'JSONL') {
    throw new StatesError(
      'States.Runtime',
      `WriterConfig.OutputType ${JSON.stringify(outputType)} is invalid`,
    );
  }
  return { transformation, outputType };
}

/** The metadata record of one child, as in SUCCEEDED_n.json / FAILED_n.json / PENDING_n.json. */
export function childRecord(outcome: ChildOutcome, childStateMachineArn: string): Record<string, unknown> {
  const input = JSON.stringify(outcome.input);
  if (outcome.status === 'PENDING') {
    return { Input: input, InputDetails: { Included: true }, Status: 'PENDING' };
  }
  const common = {
    ExecutionArn: outcome.executionArn,
    Input: input,
    InputDetails: { Included: true },
    Name: outcome.name,
  };
  const dates = {
    StartDate: outcome.startDate?.toISOString(),
    StateMachineArn: childStateMachineArn,
    Status: outcome.status,
    StopDate: outcome.stopDate?.toISOString(),
  };
  if (outcome.status === 'SUCCEEDED') {
    return {
      ...common,
      Output: JSON.stringify(outcome.output ?? null),
      OutputDetails: { Included: true },
      RedriveCount: 0,
      RedriveStatus: 'NOT_REDRIVABLE',
      RedriveStatusReason: 'Execution is SUCCEEDED and cannot be redriven',
      ...dates,
    };
  }
  return {
    ...(outcome.cause !== undefined && { Cause: outcome.cause }),
    ...(outcome.error !== undefined && { Error: outcome.error }),
    ...common,
    OutputDetails: { Included: true },
    RedriveCount: 0,
    RedriveStatus: 'REDRIVABLE_BY_MAP_RUN',
    ...dates,
  };
}

/** Applies a COMPACT or FLATTEN transformation to the outputs of successful children. */
export function transformOutputs(
  outcomes: ChildOutcome[],
  transformation: 'COMPACT' | 'FLATTEN',
): JsonValue[] {
  const outputs = outcomes.map((o) => o.output ?? null);
  return transformation === 'FLATTEN' ? outputs.flatMap((o) => (Array.isArray(o) ? o : [o])) : outputs;
}

function serialise(entries: unknown[], outputType: 'JSON' | 'JSONL'): string {
  return outputType === 'JSONL' ? entries.map((e) => JSON.stringify(e)).join('\n') : JSON.stringify(entries);
}

/** Result of writeResults: the state output and how many child results were written. */
export interface WrittenResults {
  output: { MapRunArn: string; ResultWriterDetails: { Bucket: string; Key: string } };
  resultsWritten: number;
}

/**
 * Writes the result files and manifest.json, returning the Map state's output
 * `{MapRunArn, ResultWriterDetails: {Bucket, Key}}`.
 *
 * @throws StatesError `States.ResultWriterFailed` when a write fails.
 */
export async function writeResults(
  store: ObjectStore,
  target: ResultWriterTarget,
  outcomes: ChildOutcome[],
): Promise<WrittenResults> {
  const byIndex = [...outcomes].sort((a, b) => a.index - b.index);
  const succeeded = byIndex.filter((o) => o.status === 'SUCCEEDED');
  const failed = byIndex.filter(
    (o) => o.status === 'FAILED' || o.status === 'TIMED_OUT' || o.status === 'ABORTED',
  );
  const pending = byIndex.filter((o) => o.status === 'PENDING');
  const base = `${target.prefix === '' || target.prefix.endsWith('/') ? target.prefix : `${target.prefix}/`}${target.mapRunId}/`;
  const { transformation, outputType } = target.config;

  const files: Record<'SUCCEEDED' | 'FAILED' | 'PENDING', { Key: string; Size: number }[]> = {
    FAILED: [],
    PENDING: [],
    SUCCEEDED: [],
  };
  const put = async (key: string, body: string): Promise<void> => {
    try {
      await store.putObject(target.bucket, key, body);
    } catch (err) {
      const e = err as Error;
      throw new StatesError(
        RESULT_WRITER_FAILED,
        `cannot write s3://${target.bucket}/${key}: ${e.name}: ${e.message}`,
      );
    }
  };
  const groups: ['SUCCEEDED' | 'FAILED' | 'PENDING', unknown[]][] = [
    [
      'SUCCEEDED',
      transformation === 'NONE'
        ? succeeded.map((o) => childRecord(o, target.childStateMachineArn))
        : transformOutputs(succeeded, transformation),
    ],
    ['FAILED', failed.map((o) => childRecord(o, target.childStateMachineArn))],
    ['PENDING', pending.map((o) => childRecord(o, target.childStateMachineArn))],
  ];
  for (const [kind, entries] of groups) {
    if (entries.length === 0) continue;
    const key = `${base}${kind}_0.json`;
    const body = serialise(entries, outputType);
    await put(key, body);
    files[kind].push({ Key: key, Size: Buffer.byteLength(body, 'utf8') });
  }
  const manifestKey = `${base}manifest.json`;
  await put(
    manifestKey,
    JSON.stringify({ DestinationBucket: target.bucket, MapRunArn: target.mapRunArn, ResultFiles: files }),
  );
  return {
    output: { MapRunArn: target.mapRunArn, ResultWriterDetails: { Bucket: target.bucket, Key: manifestKey } },
    resultsWritten: succeeded.length + failed.length,
  };
}
