import { DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import * as z from 'zod';
import {
  BATCH_JOB_TERMINAL_STATUSES,
  runKeys,
  type BatchJobTerminalStatus,
  type FailureLaneMessage,
  type FailureLine,
  type FailureStage,
  type ResultLine,
  type Usage,
  type WorkItem,
} from './contracts';
import { callDependency, errorMessage } from './errors';
import type { FailureLaneSender } from './failure-lane';
import type { Ledger } from './ledger';
import { logger, metrics } from './observability';
import { InFlightLimiter } from './pool';
import { cleanLine, detectFormat } from './records';
import type { PublishedRecord, ResultsPublisher } from './results-queue';
import { getJson, JsonlObjectWriter, openObject, putJson, readLines } from './s3-jsonl';

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

/** What Collect returns for one shard (and keeps as its marker). Always `records = succeeded + failed + skipped + missing`. */
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
  /** Records without an output line: written to `redriveKey` for mode B. */
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
  ledger: Pick<Ledger, 'claim' | 'markPublished'>;
  failureLane: Pick<FailureLaneSender, 'add' | 'flush'>;
  /** The results queue, when one is configured: each record this collect publishes is sent to it. */
  resultsPublisher?: Pick<ResultsPublisher, 'publish'>;
  /** The bucket holding the shard's input files, the job's output and the run's files. */
  outputBucket: string;
  /** Ledger calls in flight at once (default 32). */
  concurrency?: number;
}

/**
 * The batch job ended `Failed`: its records are recorded as failed (and sent to the failure lane for a Converse
 * retry), and the workflow's Map tolerance decides the run.
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
 * for a native body the body itself; usage from Converse's `usage` or the native body's (Anthropic `input_tokens` /
 * `output_tokens`, Llama and Titan token counts).
 */
export function normaliseModelOutput(modelOutput: unknown): { modelOutput: unknown; usage: Usage } {
  if (!isObject(modelOutput)) return { modelOutput, usage: usageOf(0, 0) };
  if ('output' in modelOutput && 'stopReason' in modelOutput) {
    const usage = isObject(modelOutput.usage) ? modelOutput.usage : {};
    const inputTokens = count(usage.inputTokens);
    const outputTokens = count(usage.outputTokens);
    return {
      modelOutput: { output: modelOutput.output, stopReason: modelOutput.stopReason },
      usage: usageOf(inputTokens, outputTokens, usage.totalTokens),
    };
  }
  return { modelOutput, usage: nativeUsage(modelOutput) };
}

function nativeUsage(body: Record<string, unknown>): Usage {
  if (isObject(body.usage)) {
    const u = body.usage;
    // Anthropic writes snake_case; Nova's native body uses Converse's camelCase.
    if ('input_tokens' in u || 'output_tokens' in u)
      return usageOf(count(u.input_tokens), count(u.output_tokens));
    return usageOf(count(u.inputTokens), count(u.outputTokens), u.totalTokens);
  }
  if ('prompt_token_count' in body || 'generation_token_count' in body) {
    return usageOf(count(body.prompt_token_count), count(body.generation_token_count));
  }
  if ('inputTextTokenCount' in body) {
    const results = Array.isArray(body.results) ? body.results : [];
    const out = results.reduce<number>((sum, r) => sum + (isObject(r) ? count(r.tokenCount) : 0), 0);
    return usageOf(count(body.inputTextTokenCount), out);
  }
  return usageOf(0, 0);
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
  /** Success line; claimed (or being claimed) by this run: to be marked published. */
  Claimed: 1,
  /** Success line; another run holds the claim. */
  Held: 2,
  /** Error line. */
  Failed: 3,
  /** Error line, retryable, without modelInput: its failure-lane message is sent from the input pass. */
  FailedNeedsInput: 4,
  /** No output line; written to the redrive file. */
  Redriven: 5,
} as const;
type RecordState = (typeof RecordState)[keyof typeof RecordState];

/**
 * Collects one shard's batch job output. Successes are published through the ledger exactly as mode B does (claim,
 * results file, then mark published), error lines go to the failures file and the failure lane, records without an
 * output line go to the redrive file for mode B. A `Failed` job produced nothing to collect: each of its records is
 * written as a retryable failure (and sent to the failure queue with its request), the marker is written, and
 * BatchJobFailedError is thrown so the shard's child fails. Idempotent: a repeated collect of the same job returns
 * the summary it wrote last time (or throws the same error for a `Failed` job, sending nothing again); one
 * interrupted before that re-claims its own records and rewrites the same files.
 * @throws BatchJobFailedError when the job ended `Failed` (after its records were recorded as failed)
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
    if (earlier.status === 'Failed') {
      throw new BatchJobFailedError(input.jobArn, input.shard, earlier.message ?? input.failureMessage);
    }
    return earlier;
  }
  const collector = new ShardCollector(input, deps);
  const summary = input.jobStatus === 'Failed' ? await collector.failAll() : await collector.run();
  await putJson(deps.s3, deps.outputBucket, markerKey, summary);
  if (summary.status === 'Failed') {
    throw new BatchJobFailedError(input.jobArn, input.shard, input.failureMessage);
  }
  return summary;
}

/** What a person reads for each record of a `Failed` job. */
export function batchJobFailedMessage(jobArn: string, failureMessage: string | undefined): string {
  return (
    `the Bedrock batch job ${jobArn} failed (${failureMessage ?? 'Bedrock gave no failure message'}), ` +
    'so this record was not processed; it was sent to the failure queue to be retried through Converse. ' +
    "If the job's message points at the input (format, size, model access), fix that and run the corpus again."
  );
}

interface PendingClaim {
  position: number;
  result: ResultLine;
  claim: Promise<'claimed' | 'held'>;
}

/** One collect of one shard: holds the record index and the tallies. */
class ShardCollector {
  private readonly concurrency: number;
  private readonly outputPrefix: string;
  /** recordId -> 0-based position among the shard's distinct input records. */
  private index = new Map<string, number>();
  private state = new Uint8Array(0);
  /** Retryable error lines without modelInput: their lane message waits for the input pass. */
  private readonly needInput = new Map<string, { code: string; message: string }>();
  private readonly tally = { succeeded: 0, failed: 0, skipped: 0, inputTokens: 0, outputTokens: 0 };
  private ignoredLines = 0;
  private readonly ignoredSamples: string[] = [];
  private readonly failures: LazyJsonlWriter;

  constructor(
    private readonly input: CollectShardInput,
    private readonly deps: CollectDeps,
  ) {
    this.concurrency = Math.max(1, deps.concurrency ?? DEFAULT_CONCURRENCY);
    this.outputPrefix = input.outputPrefix.endsWith('/') ? input.outputPrefix : `${input.outputPrefix}/`;
    this.failures = new LazyJsonlWriter(
      deps.s3,
      deps.outputBucket,
      collectKeys.failures(input.runId, input.shard),
    );
  }

  async run(): Promise<CollectShardSummary> {
    const { input, deps } = this;
    await this.indexInputs();
    const manifest = await getJson<BatchOutputManifest>(
      deps.s3,
      deps.outputBucket,
      `${this.outputPrefix}${MANIFEST_NAME}`,
    );
    const outputKeys = await this.listOutputFiles();
    for (const [part, key] of outputKeys.entries()) await this.collectFile(key, part);
    const wroteFailures = await this.failures.finish();
    await this.markPublished();

    const missing = this.countState(RecordState.Pending);
    const redriveKey = await this.inputPass(missing);
    await deps.failureLane.flush();

    const manifestCheck = this.checkManifest(manifest);
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
    if (!manifestCheck.ok) {
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
   * A `Failed` job: streams the shard's input once and records each distinct record as a retryable failure, in the
   * failures file and on the failure queue with its request (the queue's consumer retries it through Converse).
   */
  async failAll(): Promise<CollectShardSummary> {
    const { input, deps } = this;
    const message = batchJobFailedMessage(input.jobArn, input.failureMessage);
    for await (const { recordId, modelInput } of this.inputRecords()) {
      if (this.index.has(recordId)) continue;
      this.index.set(recordId, this.index.size);
      const failure: CollectFailureLine = {
        recordId,
        stage: STAGE,
        error: { code: 'BatchJobFailed', message, retryable: true },
      };
      await this.failures.write(failure);
      await deps.failureLane.add(laneMessage(input, failure, modelInput));
    }
    const wroteFailures = await this.failures.finish();
    await deps.failureLane.flush();
    const records = this.index.size;
    const summary: CollectShardSummary = {
      shard: input.shard,
      jobArn: input.jobArn,
      status: input.jobStatus,
      records,
      succeeded: 0,
      failed: records,
      skipped: 0,
      missing: 0,
      ...(wroteFailures ? { failuresKey: collectKeys.failures(input.runId, input.shard) } : {}),
      inputTokens: 0,
      outputTokens: 0,
      manifestCheck: {
        expected: null,
        seen: 0,
        ok: false,
        ignoredLines: 0,
        detail: 'the job failed: its output was not read',
      },
      ...this.jobTimes(),
    };
    metrics.addMetric('RecordsFailed', 'Count', records);
    logger.warn('batch job failed: its records were recorded as failed', { ...summary });
    return summary;
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

  /** Reads the input files once for the shard's record ids and their positions. */
  private async indexInputs(): Promise<void> {
    let duplicates = 0;
    for await (const { recordId } of this.inputRecords()) {
      if (this.index.has(recordId)) duplicates++;
      else this.index.set(recordId, this.index.size);
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
   * Streams one output file: error lines straight to the failures file and the lane, success lines through a window
   * of at most `concurrency` claims in flight, written to this file's results part in output order (so a repeated
   * collect writes the same bytes).
   */
  private async collectFile(key: string, part: number): Promise<void> {
    const { input, deps } = this;
    const body = await openObject(deps.s3, deps.outputBucket, key);
    if (!body) throw new Error(`output file s3://${deps.outputBucket}/${key} vanished while collecting`);
    const resultKey = collectKeys.results(input.runId, input.shard, part);
    const results = new LazyJsonlWriter(deps.s3, deps.outputBucket, resultKey);
    // Held until the file is complete: a record goes to the results queue only once its line is durable.
    const toQueue: PublishedRecord[] | undefined = deps.resultsPublisher ? [] : undefined;
    const window: PendingClaim[] = [];
    let lineNo = 0;
    for await (const raw of readLines(body)) {
      lineNo++;
      const text = cleanLine(raw, lineNo === 1);
      if (text.trim() === '') continue;
      const line = this.parseOutputLine(text, key, lineNo);
      if (!line) continue;
      if (line.kind === 'error') {
        await this.recordError(line.recordId, line.position, line.error, line.modelInput);
        continue;
      }
      this.state[line.position] = RecordState.Claimed;
      const claim = deps.ledger.claim(input.ledgerScope, line.recordId, input.runId);
      // Awaited in order below; this keeps a rejection behind an earlier failure from going unhandled.
      claim.catch(() => undefined);
      const { modelOutput, usage } = normaliseModelOutput(line.modelOutput);
      window.push({
        position: line.position,
        result: { recordId: line.recordId, modelOutput, usage },
        claim,
      });
      if (window.length >= this.concurrency) await this.settle(window.shift(), results, resultKey, toQueue);
    }
    while (window.length > 0) await this.settle(window.shift(), results, resultKey, toQueue);
    await results.finish();
    // A collect interrupted after marking records published is repeated with the same records: those were sent then.
    if (toQueue && toQueue.length > 0) await deps.resultsPublisher?.publish(toQueue, { skipPublished: true });
  }

  private async settle(
    pending: PendingClaim | undefined,
    results: LazyJsonlWriter,
    resultKey: string,
    toQueue: PublishedRecord[] | undefined,
  ): Promise<void> {
    if (!pending) return;
    if ((await pending.claim) === 'held') {
      this.state[pending.position] = RecordState.Held;
      this.tally.skipped++;
      return;
    }
    await results.write(pending.result);
    toQueue?.push({
      runId: this.input.runId,
      recordId: pending.result.recordId,
      ledgerScope: this.input.ledgerScope,
      resultKey,
      usage: pending.result.usage,
    });
    this.tally.succeeded++;
    this.tally.inputTokens += pending.result.usage.inputTokens;
    this.tally.outputTokens += pending.result.usage.outputTokens;
  }

  /** Parses an output line; an unusable one is counted, sampled for the log, and leaves its record pending. */
  private parseOutputLine(
    text: string,
    key: string,
    lineNo: number,
  ):
    | { kind: 'success'; recordId: string; position: number; modelOutput: unknown }
    | {
        kind: 'error';
        recordId: string;
        position: number;
        error: Record<string, unknown>;
        modelInput: unknown;
      }
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
    if (isObject(value.error)) {
      return { kind: 'error', recordId, position, error: value.error, modelInput: value.modelInput };
    }
    if ('modelOutput' in value)
      return { kind: 'success', recordId, position, modelOutput: value.modelOutput };
    return this.ignore(`${key} line ${lineNo}: ${recordId} has neither modelOutput nor error`);
  }

  private ignore(reason: string): undefined {
    this.ignoredLines++;
    if (this.ignoredSamples.length < 5) this.ignoredSamples.push(reason);
    return undefined;
  }

  private async recordError(
    recordId: string,
    position: number,
    error: Record<string, unknown>,
    modelInput: unknown,
  ): Promise<void> {
    const code = batchErrorCode(error.errorCode);
    const message =
      typeof error.errorMessage === 'string' && error.errorMessage !== ''
        ? error.errorMessage
        : 'the batch job gave no error message';
    const retryable = isRetryableBatchError(code);
    const failure: CollectFailureLine = { recordId, stage: STAGE, error: { code, message, retryable } };
    await this.failures.write(failure);
    this.tally.failed++;
    if (retryable && !isObject(modelInput)) {
      // The queue's consumer needs the request: it is read from the input file in the input pass.
      this.state[position] = RecordState.FailedNeedsInput;
      this.needInput.set(recordId, { code, message });
      return;
    }
    this.state[position] = RecordState.Failed;
    await this.deps.failureLane.add(
      laneMessage(this.input, failure, retryable && isObject(modelInput) ? modelInput : undefined),
    );
  }

  /** Marks every record this collect claimed as published, with bounded concurrency. */
  private async markPublished(): Promise<void> {
    const { input, deps } = this;
    const limiter = new InFlightLimiter(this.concurrency);
    for (const [recordId, position] of this.index) {
      if (this.state[position] !== RecordState.Claimed) continue;
      await limiter.add(() => deps.ledger.markPublished(input.ledgerScope, recordId, input.runId));
    }
    await limiter.drain();
  }

  /**
   * Reads the input files a second time when needed: records without output go to the redrive file as WorkItems,
   * and retryable error lines that lacked modelInput get their failure-lane message. `line` of a redrive WorkItem
   * is the record's 1-based position among the shard's input records (batch input files do not carry the corpus
   * line number).
   * @returns the redrive key, when records are missing
   */
  private async inputPass(missing: number): Promise<string | undefined> {
    const { input, deps } = this;
    const redriveKey = collectKeys.redrive(input.runId, input.shard);
    const redrive = new LazyJsonlWriter(deps.s3, deps.outputBucket, redriveKey);
    if (missing > 0 || this.needInput.size > 0) {
      for await (const { recordId, modelInput } of this.inputRecords()) {
        const position = this.index.get(recordId);
        if (position === undefined) continue;
        const state = this.state[position];
        if (state === RecordState.Pending) {
          this.state[position] = RecordState.Redriven;
          const item: WorkItem = {
            recordId,
            format: detectFormat(modelInput),
            modelInput,
            line: position + 1,
          };
          await redrive.write(item);
        } else if (state === RecordState.FailedNeedsInput) {
          this.state[position] = RecordState.Failed;
          const error = this.needInput.get(recordId) ?? { code: 'BatchRecordError', message: 'unknown' };
          await deps.failureLane.add(
            laneMessage(input, { recordId, stage: STAGE, error: { ...error, retryable: true } }, modelInput),
          );
        }
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
    const seen = succeeded + skipped + failed;
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
    if (manifest.errorRecordCount !== undefined && manifest.errorRecordCount !== failed) {
      problems.push(`errorRecordCount ${manifest.errorRecordCount} but ${failed} error lines`);
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

/**
 * A failure-lane message for an error line. Retryable ones carry the request (the queue's consumer retries it
 * through Converse); the rest go to the DLQ with their reason.
 */
function laneMessage(
  input: CollectShardInput,
  failure: CollectFailureLine,
  modelInput: Record<string, unknown> | undefined,
): FailureLaneMessage {
  const message = {
    ...failure,
    runId: input.runId,
    ledgerScope: input.ledgerScope,
    ...(modelInput ? { format: detectFormat(modelInput), modelInput } : {}),
  };
  return message;
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
