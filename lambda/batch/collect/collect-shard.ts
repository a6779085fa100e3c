import { DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import * as z from 'zod';
import { randomUUID } from 'node:crypto';
import {
  BATCH_JOB_TERMINAL_STATUSES,
  runKeys,
  type BatchJobTerminalStatus,
  type FailureLine,
  type FailureStage,
  type RecordFormat,
  type ResultLine,
  type Usage,
  type WorkItem,
} from '../../shared/contracts';
import { callDependency, errorMessage } from '../../shared/errors';
import type { FailureLaneSender } from '../../shared/failure-lane';
import { faultPoint } from '../../shared/fault-points';
import { unitOwner, type Claimant, type Ledger, type LedgerEntry } from '../../shared/ledger';
import { nativeUsage } from '../../shared/model-catalog';
import { logger, metrics } from '../../shared/observability';
import { InFlightLimiter } from '../../shared/pool';
import { cleanLine, contentHashOf, detectFormat } from '../../shared/records';
import type { PublishedRecord, ResultsPublisher } from '../../shared/results-queue';
import { getJson, JsonlObjectWriter, openObject, putJson, readLines } from '../../shared/s3-jsonl';

/**
 * Mode A's Collect step: turns the output of one shard's Bedrock batch job into the pipeline's result and failure
 * files, with the same ledger semantics as mode B (claim, write the results file, then mark published), and hands the
 * records the job left without output back for re-drive through mode B.
 *
 * Bedrock writes, under `<outputS3Uri>/<jobId>/`, one `<inputFileName>.out` per input file (lines
 * `{recordId, modelInput, modelOutput}` or `{recordId, modelInput, error: {errorCode, errorMessage}}`, in an order
 * that is not the input order) and a `manifest.json.out` with the job's counts.
 *
 * Memory stays flat whatever the file sizes: lines are streamed, and only the shard's record ids are held (one map
 * entry and one state byte per record; a shard holds at most 50,000 records).
 */

/** The terminal statuses a batch job reaches; Collect runs on each (the contract's list). */
export const BATCH_JOB_END_STATUSES = BATCH_JOB_TERMINAL_STATUSES;
/** A terminal batch job status. */
export type BatchJobEndStatus = BatchJobTerminalStatus;

const STAGE = 'batch' satisfies FailureStage;

/** A line of the shard's failures file: a failure at the `batch` stage. */
export type CollectFailureLine = FailureLine & { stage: typeof STAGE };

/** What Collect is given for one shard. */
export const collectShardInputSchema = z.object({
  runId: z.string().min(1),
  ledgerScope: z.string().min(1),
  shard: z.number().int().nonnegative(),
  jobArn: z.string().min(1),
  jobStatus: z.enum(BATCH_JOB_END_STATUSES),
  /** The job's `message` from GetModelInvocationJob (why it failed or stopped). */
  failureMessage: z.string().optional(),
  /** The shard's input files (the batch job's input) in the output bucket, in shard order. */
  inputKeys: z.array(z.string().min(1)).min(1),
  /**
   * The shard's record format (Plan gives every record of a shard the same), which re-driven records keep. Without it
   * the format is detected again without the model's family (only `anthropic_version` marks a native messages body).
   */
  format: z.enum(['converse', 'native']).optional(),
  /** Where the job wrote its output in the output bucket: `<prefix>/<jobId>/`. */
  outputPrefix: z.string().min(1),
  /** When the job was submitted (ISO-8601), kept in the marker for the run manifest. */
  submittedAt: z.string().min(1).optional(),
  /** When the job ended (ISO-8601), kept in the marker for the run manifest. */
  endedAt: z.string().min(1).optional(),
});
/** What Collect is given for one shard. */
export type CollectShardInput = z.infer<typeof collectShardInputSchema>;

/** `manifest.json.out`, the counts Bedrock writes beside a job's output files. */
export interface BatchOutputManifest {
  totalRecordCount?: number;
  processedRecordCount?: number;
  successRecordCount?: number;
  errorRecordCount?: number;
  inputTokenCount?: number;
  outputTokenCount?: number;
}

/** The cross-check of the output lines against `manifest.json.out`. A mismatch is reported, never fatal. */
export interface ManifestCheck {
  /** `processedRecordCount` from the manifest; null when the job wrote no manifest. */
  expected: number | null;
  /** Records of the shard with an output line (success or error). */
  seen: number;
  /** True when the manifest exists and its counts match what was seen. */
  ok: boolean;
  /** Output lines that could not be used: unreadable, a recordId outside the shard, or a repeated recordId. */
  ignoredLines: number;
  /** What did not match, when something did not. */
  detail?: string;
}

/**
 * What Collect returns for one shard (and keeps as its marker). Always `records = succeeded + failed + skipped +
 * missing`; `missing` counts every record the shard hands to the Converse fan-out of the same run (no output line, a
 * retryable error line, or every record of a job that ended `Failed` for a reason a model call could get past).
 */
export interface CollectShardSummary {
  shard: number;
  jobArn: string;
  status: BatchJobEndStatus;
  /** Distinct records in the shard's input files. */
  records: number;
  /** Records published by this run. */
  succeeded: number;
  /** Records with an error line. */
  failed: number;
  /** Records answered but held or published by another run (lost the ledger claim). */
  skipped: number;
  /** Records re-driven through Converse in the same run: written to `redriveKey`. */
  missing: number;
  /** `runs/<runId>/redrive/shard-<n>.jsonl` (WorkItems), when records are missing. */
  redriveKey?: string;
  /** `runs/<runId>/failures/shard-<n>.jsonl`, when records failed. */
  failuresKey?: string;
  /** Tokens of the records published by this run. */
  inputTokens: number;
  outputTokens: number;
  manifestCheck: ManifestCheck;
  /** When the job was submitted (ISO-8601), when known. */
  submittedAt?: string;
  /** When the job ended (ISO-8601), when known. */
  endedAt?: string;
  /** The job's message (why it failed or stopped), when it has one. */
  message?: string;
}

/** What Collect talks to. */
export interface CollectDeps {
  s3: S3Client;
  ledger: Pick<Ledger, 'claim' | 'commit' | 'fail' | 'markDelivered'>;
  failureLane: Pick<FailureLaneSender, 'add' | 'flush'>;
  /** How long Collect's claims hold before another owner may take them over, in ms. */
  leaseMs: number;
  /** A new attempt id. @default randomUUID */
  newAttempt?: () => string;
  /** The results queue, when one is configured: each record this collect publishes is sent to it. */
  resultsPublisher?: Pick<ResultsPublisher, 'publish'>;
  /** The bucket holding the shard's input files, the job's output and the run's files. */
  outputBucket: string;
  /** Ledger calls in flight at once (default 32). */
  concurrency?: number;
}

/**
 * The batch job ended `Failed` for a reason every model call would meet too (access denied, the model not found):
 * its records are recorded as failed with the job's message, and the workflow's Map tolerance decides the run.
 */
export class BatchJobFailedError extends Error {
  override readonly name = 'BatchJobFailedError';
  constructor(
    readonly jobArn: string,
    readonly shard: number,
    readonly failureMessage: string | undefined,
  ) {
    super(
      `Bedrock batch job ${jobArn} (shard ${shard}) failed: ${failureMessage ?? 'Bedrock gave no failure message'}`,
    );
  }
}

/** A shard input file is missing or holds a line Plan could not have written (a wiring bug, not bad data). */
export class InvalidShardInputError extends Error {
  override readonly name = 'InvalidShardInputError';
}

/** The keys Collect writes besides the results parts. */
export const collectKeys = {
  /** Results of one output file of the shard: `runs/<runId>/results/shard-<n>-<part>.jsonl`. */
  results: (runId: string, shard: number, part: number): string =>
    runKeys.results(runId, `shard-${shard}-${part}`),
  /** The shard's failures file. */
  failures: (runId: string, shard: number): string => runKeys.failures(runId, `shard-${shard}`),
  /** The shard's records without output, as WorkItems for mode B. */
  redrive: (runId: string, shard: number): string => `runs/${runId}/redrive/shard-${shard}.jsonl`,
  /** The summary of a finished collect: a repeated collect of the same job returns it unchanged. */
  marker: (runId: string, shard: number): string => `runs/${runId}/collect/shard-${shard}.json`,
};

/** The name Bedrock gives a job's manifest. */
export const MANIFEST_NAME = 'manifest.json.out';

const DEFAULT_CONCURRENCY = 32;

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
 * Normalises a success line's `modelOutput` to what mode B writes: for a Converse response `{output, stopReason}`,
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

function usageOf(inputTokens: number, outputTokens: number, total?: unknown): Usage {
  const totalTokens =
    typeof total === 'number' && Number.isFinite(total) ? total : inputTokens + outputTokens;
  return { inputTokens, outputTokens, totalTokens };
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Per-record state, one byte per record of the shard. */
const RecordState = {
  /** No output line seen (yet). */
  Pending: 0,
  /** Success line being settled through the ledger. */
  Settling: 1,
  /** Published by this shard: its line is in a results part. */
  Succeeded: 2,
  /** Held or published by another run. */
  Skipped: 3,
  /** Failed for good: its line is in the failures file. */
  Failed: 4,
  /** To go through Converse in the same run (no output line, or a retryable error line). */
  Redrive: 5,
} as const;
type RecordState = (typeof RecordState)[keyof typeof RecordState];

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

/**
 * Collects one shard's batch job output as a unit of work (`<runId>/shard/<n>`), with the ledger protocol every unit
 * follows: each answered record is claimed with its request's content hash and committed before its line is written
 * to the results part of its output file; error lines the model would reject again fail for good (failures file,
 * DLQ); retryable error lines and records without output are re-driven through Converse in the same run, as are all
 * the records of a job that ended `Failed`, unless its error would fail every call too (access denied, model not
 * found): then they fail with the job's message and BatchJobFailedError fails the shard. Idempotent: a repeated
 * collect of the same job returns the summary it wrote; one interrupted before that finds its own decisions in the
 * ledger and rewrites the same files (the output files are immutable, so the answers are the same).
 * @throws BatchJobFailedError when the job failed for a reason no retry can get past (after recording its records)
 * @throws TransientDependencyError when S3, DynamoDB or SQS fails in a way worth retrying
 */
export async function collectShard(
  input: CollectShardInput,
  deps: CollectDeps,
): Promise<CollectShardSummary> {
  const markerKey = collectKeys.marker(input.runId, input.shard);
  const earlier = await getJson<CollectShardSummary>(deps.s3, deps.outputBucket, markerKey);
  if (earlier && earlier.jobArn === input.jobArn && earlier.status === input.jobStatus) {
    logger.info('shard already collected', { shard: input.shard, jobArn: input.jobArn });
    if (earlier.status === 'Failed' && earlier.missing === 0) {
      throw new BatchJobFailedError(input.jobArn, input.shard, earlier.message ?? input.failureMessage);
    }
    return earlier;
  }
  const collector = new ShardCollector(input, deps);
  const summary = await collector.run();
  faultPoint('collect', 'before-marker');
  await putJson(deps.s3, deps.outputBucket, markerKey, summary);
  if (summary.status === 'Failed' && summary.missing === 0) {
    throw new BatchJobFailedError(input.jobArn, input.shard, input.failureMessage);
  }
  return summary;
}

/** What a person reads for each record of a job that `Failed` for a reason every call would meet. */
export function batchJobFailedMessage(jobArn: string, failureMessage: string | undefined): string {
  return (
    `the Bedrock batch job ${jobArn} failed (${failureMessage ?? 'Bedrock gave no failure message'}), ` +
    'and a Converse call would fail the same way, so this record was not processed; fix the cause (model access, ' +
    'the model id) and run the corpus again'
  );
}

/** Where a record of the shard stands once settled through the ledger. */
interface Settled {
  state: RecordState;
  /** Published and already sent to the results queue (by an earlier attempt). */
  delivered: boolean;
  /** Its failure line, when it failed for good. */
  failure?: CollectFailureLine;
}

interface PendingLine {
  position: number;
  result: ResultLine;
  /** Settles the record in the ledger: the record's state when done. */
  settled: Promise<Settled>;
}

/** One collect of one shard: holds the record index and the tallies. */
class ShardCollector {
  private readonly concurrency: number;
  private readonly outputPrefix: string;
  private readonly who: Claimant;
  /** recordId -> 0-based position among the shard's distinct input records. */
  private index = new Map<string, number>();
  /** Content hash of each record's request, by position. */
  private hashes: string[] = [];
  private state = new Uint8Array(0);
  private readonly tally = { succeeded: 0, failed: 0, skipped: 0, inputTokens: 0, outputTokens: 0 };
  /** Non-retryable failures decided by this attempt: their lane message goes to the DLQ. */
  private readonly freshFailures: CollectFailureLine[] = [];
  private ignoredLines = 0;
  private readonly ignoredSamples: string[] = [];
  private readonly failures: LazyJsonlWriter;

  constructor(
    private readonly input: CollectShardInput,
    private readonly deps: CollectDeps,
  ) {
    this.concurrency = Math.max(1, deps.concurrency ?? DEFAULT_CONCURRENCY);
    this.outputPrefix = input.outputPrefix.endsWith('/') ? input.outputPrefix : `${input.outputPrefix}/`;
    this.who = {
      runId: input.runId,
      owner: unitOwner(input.runId, 'shard', String(input.shard)),
      attempt: (deps.newAttempt ?? randomUUID)(),
    };
    this.failures = new LazyJsonlWriter(
      deps.s3,
      deps.outputBucket,
      collectKeys.failures(input.runId, input.shard),
    );
  }

  async run(): Promise<CollectShardSummary> {
    const { input, deps } = this;
    await this.indexInputs();
    let manifestCheck: ManifestCheck;
    if (input.jobStatus === 'Failed') {
      manifestCheck = await this.jobFailed();
    } else {
      const manifest = await getJson<BatchOutputManifest>(
        deps.s3,
        deps.outputBucket,
        `${this.outputPrefix}${MANIFEST_NAME}`,
      );
      const outputKeys = await this.listOutputFiles();
      for (const [part, key] of outputKeys.entries()) await this.collectFile(key, part);
      manifestCheck = this.checkManifest(manifest);
    }
    const wroteFailures = await this.failures.finish();
    faultPoint('collect', 'after-release');
    for (const failure of this.freshFailures) {
      await deps.failureLane.add({ ...failure, runId: input.runId, ledgerScope: input.ledgerScope });
    }
    await deps.failureLane.flush();
    for (const [position, state] of this.state.entries()) {
      if (state === RecordState.Pending) this.state[position] = RecordState.Redrive;
    }
    const missing = this.countState(RecordState.Redrive);
    const redriveKey = await this.writeRedrive(missing);

    const summary: CollectShardSummary = {
      shard: input.shard,
      jobArn: input.jobArn,
      status: input.jobStatus,
      records: this.index.size,
      succeeded: this.tally.succeeded,
      failed: this.tally.failed,
      skipped: this.tally.skipped,
      missing,
      ...(redriveKey ? { redriveKey } : {}),
      ...(wroteFailures ? { failuresKey: collectKeys.failures(input.runId, input.shard) } : {}),
      inputTokens: this.tally.inputTokens,
      outputTokens: this.tally.outputTokens,
      manifestCheck,
      ...this.jobTimes(),
    };
    if (!manifestCheck.ok && input.jobStatus !== 'Failed') {
      logger.warn('batch job output does not match its manifest', {
        shard: input.shard,
        jobArn: input.jobArn,
        manifestCheck,
        ignoredSamples: this.ignoredSamples,
      });
    }
    metrics.addMetric('RecordsSucceeded', 'Count', summary.succeeded);
    metrics.addMetric('RecordsFailed', 'Count', summary.failed);
    metrics.addMetric('RecordsMissing', 'Count', summary.missing);
    metrics.addMetric('InputTokens', 'Count', summary.inputTokens);
    metrics.addMetric('OutputTokens', 'Count', summary.outputTokens);
    logger.info('shard collected', { ...summary });
    return summary;
  }

  /**
   * A `Failed` job wrote no output to collect. When a model call could get past its error, every record is re-driven
   * through Converse in the same run; when not (access denied, model not found), each fails for good with the job's
   * message.
   */
  private async jobFailed(): Promise<ManifestCheck> {
    const { input } = this;
    const job = batchJobFailure(input.failureMessage);
    const detail = `the job failed (${input.failureMessage ?? 'no message'}): its output was not read`;
    if (!job.fatal) {
      this.state.fill(RecordState.Redrive);
      logger.warn('batch job failed: its records go through Converse in this run', {
        shard: input.shard,
        jobArn: input.jobArn,
        message: input.failureMessage,
      });
      return { expected: null, seen: 0, ok: false, ignoredLines: 0, detail };
    }
    const reason = { code: job.code, message: batchJobFailedMessage(input.jobArn, input.failureMessage) };
    for (const [recordId, position] of this.index) {
      const { state, failure } = await this.failRecord(recordId, position, reason);
      this.state[position] = state;
      if (failure) await this.failures.write(failure);
    }
    logger.warn('batch job failed: its records were recorded as failed', {
      shard: input.shard,
      jobArn: input.jobArn,
      message: input.failureMessage,
    });
    return { expected: null, seen: 0, ok: false, ignoredLines: 0, detail };
  }

  /** The job's times and message, for the marker. */
  private jobTimes(): Pick<CollectShardSummary, 'submittedAt' | 'endedAt' | 'message'> {
    const { submittedAt, endedAt, failureMessage } = this.input;
    return {
      ...(submittedAt ? { submittedAt } : {}),
      ...(endedAt ? { endedAt } : {}),
      ...(failureMessage ? { message: failureMessage } : {}),
    };
  }

  /** Reads the input files once for the shard's record ids, their positions and their requests' hashes. */
  private async indexInputs(): Promise<void> {
    let duplicates = 0;
    for await (const { recordId, modelInput } of this.inputRecords()) {
      if (this.index.has(recordId)) duplicates++;
      else {
        this.index.set(recordId, this.index.size);
        this.hashes.push(contentHashOf(modelInput));
      }
    }
    if (duplicates > 0)
      logger.warn('shard input repeats record ids', { shard: this.input.shard, duplicates });
    this.state = new Uint8Array(this.index.size);
  }

  /** Streams the shard's input records in order. */
  private async *inputRecords(): AsyncGenerator<{ recordId: string; modelInput: Record<string, unknown> }> {
    const { deps } = this;
    for (const key of this.input.inputKeys) {
      const body = await openObject(deps.s3, deps.outputBucket, key);
      if (!body)
        throw new InvalidShardInputError(`shard input file s3://${deps.outputBucket}/${key} is missing`);
      let lineNo = 0;
      for await (const raw of readLines(body)) {
        lineNo++;
        const text = cleanLine(raw, lineNo === 1);
        if (text.trim() === '') continue;
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch (err) {
          throw new InvalidShardInputError(`${key} line ${lineNo} is not JSON: ${errorMessage(err)}`);
        }
        if (!isObject(value) || typeof value.recordId !== 'string' || !isObject(value.modelInput)) {
          throw new InvalidShardInputError(
            `${key} line ${lineNo} is not a batch input record {"recordId": "...", "modelInput": {...}}`,
          );
        }
        yield { recordId: value.recordId, modelInput: value.modelInput };
      }
    }
  }

  /** The job's output files (every `.out` but the manifest), in the order S3 lists them. */
  private async listOutputFiles(): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const out = await callDependency('S3 ListObjectsV2', () =>
        this.deps.s3.send(
          new ListObjectsV2Command({
            Bucket: this.deps.outputBucket,
            Prefix: this.outputPrefix,
            ContinuationToken: token,
          }),
        ),
      );
      for (const o of out.Contents ?? []) {
        if (o.Key && o.Key.endsWith('.out') && !o.Key.endsWith(`/${MANIFEST_NAME}`)) keys.push(o.Key);
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }

  /**
   * Streams one output file: each line settled through the ledger with at most `concurrency` records in flight, the
   * published ones written to this file's results part in output order (so a repeated collect writes the same
   * bytes), then the part's results-queue messages.
   */
  private async collectFile(key: string, part: number): Promise<void> {
    const { input, deps } = this;
    const body = await openObject(deps.s3, deps.outputBucket, key);
    if (!body) throw new Error(`output file s3://${deps.outputBucket}/${key} vanished while collecting`);
    const resultKey = collectKeys.results(input.runId, input.shard, part);
    const results = new LazyJsonlWriter(deps.s3, deps.outputBucket, resultKey);
    const toDeliver: PublishedRecord[] = [];
    const window: PendingLine[] = [];
    const drain = async (pending: PendingLine | undefined): Promise<void> => {
      if (!pending) return;
      const { state, delivered, failure } = await pending.settled;
      this.state[pending.position] = state;
      if (state === RecordState.Succeeded) {
        await results.write(pending.result);
        this.tally.succeeded++;
        this.tally.inputTokens += pending.result.usage.inputTokens;
        this.tally.outputTokens += pending.result.usage.outputTokens;
        if (!delivered) {
          toDeliver.push({
            runId: input.runId,
            recordId: pending.result.recordId,
            ledgerScope: input.ledgerScope,
            resultKey,
            usage: pending.result.usage,
          });
        }
      }
      if (failure) await this.failures.write(failure);
    };
    let lineNo = 0;
    for await (const raw of readLines(body)) {
      lineNo++;
      const text = cleanLine(raw, lineNo === 1);
      if (text.trim() === '') continue;
      const line = this.parseOutputLine(text, key, lineNo);
      if (!line) continue;
      let settled: PendingLine['settled'];
      let result: ResultLine = { recordId: line.recordId, modelOutput: null, usage: usageOf(0, 0) };
      if (line.kind === 'error') {
        const code = batchErrorCode(line.error.errorCode);
        const message =
          typeof line.error.errorMessage === 'string' && line.error.errorMessage !== ''
            ? line.error.errorMessage
            : 'the batch job gave no error message';
        if (isRetryableBatchError(code)) {
          // A model call may get past it: the record goes through Converse in this run.
          this.state[line.position] = RecordState.Redrive;
          continue;
        }
        settled = this.failRecord(line.recordId, line.position, { code, message });
      } else {
        result = { recordId: line.recordId, ...normaliseModelOutput(line.modelOutput, this.input.format) };
        settled = this.publishRecord(line.recordId, line.position, resultKey);
      }
      this.state[line.position] = RecordState.Settling;
      // Awaited in order below; this keeps a rejection behind an earlier failure from going unhandled.
      settled.catch(() => undefined);
      window.push({ position: line.position, result, settled });
      if (window.length >= this.concurrency) await drain(window.shift());
    }
    while (window.length > 0) await drain(window.shift());
    await results.finish();
    faultPoint('collect', 'after-results');
    if (deps.resultsPublisher && toDeliver.length > 0) {
      await deps.resultsPublisher.publish(toDeliver);
      faultPoint('collect', 'after-queue-send');
      const limiter = new InFlightLimiter(this.concurrency);
      for (const r of toDeliver) {
        await limiter.add(() => deps.ledger.markDelivered(input.ledgerScope, r.recordId, this.who.owner));
      }
      await limiter.drain();
    }
  }

  /** Claims and commits an answered record: succeeded when this shard published it, skipped when another run has it. */
  private publishRecord(recordId: string, position: number, resultKey: string): Promise<Settled> {
    return this.settleClaimed(recordId, position, async () => {
      faultPoint('collect', 'after-claim');
      const committed = await this.deps.ledger.commit(this.input.ledgerScope, recordId, this.who, resultKey);
      faultPoint('collect', 'after-commit');
      if (committed.kind === 'done') return { state: RecordState.Succeeded, delivered: false };
      return this.byEntry(committed.entry);
    });
  }

  /** Claims and fails a record for good (its error line, or its job's fatal error). */
  private failRecord(
    recordId: string,
    position: number,
    reason: { code: string; message: string },
  ): Promise<Settled> {
    return this.settleClaimed(recordId, position, async () => {
      const failed = await this.deps.ledger.fail(this.input.ledgerScope, recordId, this.who, reason);
      if (failed.kind === 'lost') return this.byEntry(failed.entry);
      const failure = this.failureLine(recordId, reason);
      this.freshFailures.push(failure);
      return { state: RecordState.Failed, delivered: false, failure };
    });
  }

  /**
   * Claims a record with its request's hash, then `decide`s it when this attempt holds the claim; otherwise the
   * ledger says where it stands (this shard decided it earlier, another run has it, or its id was reused).
   */
  private async settleClaimed(
    recordId: string,
    position: number,
    decide: () => Promise<Settled>,
  ): Promise<Settled> {
    const claim = await this.deps.ledger.claim(this.input.ledgerScope, recordId, this.who, {
      contentHash: this.hashes[position] as string,
      leaseMs: this.deps.leaseMs,
    });
    switch (claim.kind) {
      case 'claimed':
        return decide();
      case 'reused':
        return this.reused(recordId, claim.entry.runId);
      default:
        return this.byEntry(claim.entry);
    }
  }

  /** A record this attempt does not hold: what the ledger says this shard (or another owner) did with it. */
  private byEntry(entry: LedgerEntry | undefined): Settled {
    if (entry && entry.owner === this.who.owner) {
      if (entry.status === 'published')
        return { state: RecordState.Succeeded, delivered: entry.delivered === true };
      if (entry.status === 'failed') {
        const reason = entry.error ?? { code: 'Unknown', message: 'no reason was recorded' };
        return {
          state: RecordState.Failed,
          delivered: false,
          failure: this.failureLine(entry.recordId, reason),
        };
      }
    }
    this.tally.skipped++;
    return { state: RecordState.Skipped, delivered: false };
  }

  private reused(recordId: string, publishedBy: string): Settled {
    const failure = this.failureLine(recordId, {
      code: 'RecordIdReused',
      message:
        `recordId ${JSON.stringify(recordId)} was already published in ledger scope ` +
        `${JSON.stringify(this.input.ledgerScope)} (run ${publishedBy}) for a different request (other content, or ` +
        'another prompt template); give this record its own recordId, or run the corpus under another ledgerScope',
    });
    this.freshFailures.push(failure);
    return { state: RecordState.Failed, delivered: false, failure };
  }

  private failureLine(recordId: string, reason: { code: string; message: string }): CollectFailureLine {
    this.tally.failed++;
    return {
      recordId,
      stage: STAGE,
      error: { code: reason.code, message: reason.message, retryable: false },
    };
  }

  /** Parses an output line; an unusable one is counted, sampled for the log, and leaves its record pending. */
  private parseOutputLine(
    text: string,
    key: string,
    lineNo: number,
  ):
    | { kind: 'success'; recordId: string; position: number; modelOutput: unknown }
    | { kind: 'error'; recordId: string; position: number; error: Record<string, unknown> }
    | undefined {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return this.ignore(`${key} line ${lineNo}: not JSON`);
    }
    if (!isObject(value) || typeof value.recordId !== 'string') {
      return this.ignore(`${key} line ${lineNo}: no recordId`);
    }
    const { recordId } = value;
    const position = this.index.get(recordId);
    if (position === undefined) return this.ignore(`${key} line ${lineNo}: ${recordId} is not in the shard`);
    if (this.state[position] !== RecordState.Pending) {
      return this.ignore(`${key} line ${lineNo}: ${recordId} repeats an earlier output line`);
    }
    if (isObject(value.error)) return { kind: 'error', recordId, position, error: value.error };
    if ('modelOutput' in value)
      return { kind: 'success', recordId, position, modelOutput: value.modelOutput };
    return this.ignore(`${key} line ${lineNo}: ${recordId} has neither modelOutput nor error`);
  }

  private ignore(reason: string): undefined {
    this.ignoredLines++;
    if (this.ignoredSamples.length < 5) this.ignoredSamples.push(reason);
    return undefined;
  }

  /**
   * Reads the input files a second time when records are to be re-driven, writing them to the redrive file as
   * WorkItems. `line` of a redrive WorkItem is the record's 1-based position among the shard's input records (batch
   * input files do not carry the corpus line number).
   * @returns the redrive key, when records are re-driven
   */
  private async writeRedrive(count: number): Promise<string | undefined> {
    const { input, deps } = this;
    const redriveKey = collectKeys.redrive(input.runId, input.shard);
    const redrive = new LazyJsonlWriter(deps.s3, deps.outputBucket, redriveKey);
    if (count > 0) {
      for await (const { recordId, modelInput } of this.inputRecords()) {
        const position = this.index.get(recordId);
        if (position === undefined || this.state[position] !== RecordState.Redrive) continue;
        // Written once even when the input repeats the id.
        this.state[position] = RecordState.Pending;
        const item: WorkItem = {
          recordId,
          format: input.format ?? detectFormat(modelInput),
          modelInput,
          line: position + 1,
        };
        await redrive.write(item);
      }
    }
    return (await redrive.finish()) ? redriveKey : undefined;
  }

  private countState(wanted: RecordState): number {
    let n = 0;
    for (const s of this.state) if (s === wanted) n++;
    return n;
  }

  private checkManifest(manifest: BatchOutputManifest | undefined): ManifestCheck {
    const { succeeded, skipped, failed } = this.tally;
    const retriable = this.countState(RecordState.Redrive);
    const seen = this.index.size - this.countState(RecordState.Pending);
    const base = { seen, ignoredLines: this.ignoredLines };
    if (!manifest) {
      return { expected: null, ...base, ok: false, detail: `${MANIFEST_NAME} was not found` };
    }
    const expected = typeof manifest.processedRecordCount === 'number' ? manifest.processedRecordCount : null;
    const problems: string[] = [];
    if (expected !== seen) problems.push(`processedRecordCount ${expected} but ${seen} records have output`);
    if (manifest.successRecordCount !== undefined && manifest.successRecordCount !== succeeded + skipped) {
      problems.push(
        `successRecordCount ${manifest.successRecordCount} but ${succeeded + skipped} success lines`,
      );
    }
    if (manifest.errorRecordCount !== undefined && manifest.errorRecordCount !== failed + retriable) {
      problems.push(`errorRecordCount ${manifest.errorRecordCount} but ${failed + retriable} error lines`);
    }
    if (manifest.totalRecordCount !== undefined && manifest.totalRecordCount !== this.index.size) {
      problems.push(
        `totalRecordCount ${manifest.totalRecordCount} but the shard has ${this.index.size} records`,
      );
    }
    return {
      expected,
      ...base,
      ok: problems.length === 0,
      ...(problems.length ? { detail: problems.join('; ') } : {}),
    };
  }
}

/** A JSONL object opened on its first line; with no line, a stale object an earlier attempt left is deleted. */
class LazyJsonlWriter {
  private writer: JsonlObjectWriter | undefined;

  constructor(
    private readonly s3: S3Client,
    private readonly bucket: string,
    private readonly key: string,
  ) {}

  async write(value: unknown): Promise<void> {
    this.writer ??= new JsonlObjectWriter(this.s3, this.bucket, this.key);
    await this.writer.write(value);
  }

  /** Completes the object; true when it holds lines. */
  async finish(): Promise<boolean> {
    if (this.writer) {
      await this.writer.close();
      return true;
    }
    await callDependency('S3 DeleteObject', () =>
      this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key })),
    );
    return false;
  }
}
