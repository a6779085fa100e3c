import { DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { randomUUID } from 'node:crypto';
import type { ResultLine, WorkItem } from '../../shared/contracts';
import { callDependency, errorMessage } from '../../shared/errors';
import { faultPoint } from '../../shared/fault-points';
import { unitOwner, type Claimant, type LedgerEntry } from '../../shared/ledger';
import { logger, metrics } from '../../shared/observability';
import { InFlightLimiter } from '../../shared/pool';
import { cleanLine, contentHashOf, detectFormat } from '../../shared/records';
import type { PublishedRecord } from '../../shared/results-queue';
import { getJson, JsonlObjectWriter, openObject, putJson, readLines } from '../../shared/s3-jsonl';
import {
  BatchJobFailedError,
  collectKeys,
  InvalidShardInputError,
  MANIFEST_NAME,
  STAGE,
  type BatchOutputManifest,
  type CollectDeps,
  type CollectFailureLine,
  type CollectShardInput,
  type CollectShardSummary,
  type ManifestCheck,
} from './collect-contract';
import {
  batchErrorCode,
  batchJobFailedMessage,
  batchJobFailure,
  isObject,
  isRetryableBatchError,
  normaliseModelOutput,
  usageOf,
} from './output-lines';
import { PIPELINE_METRICS } from '../../shared/contracts/metrics';

/*
 * Collect of one shard: the ledger protocol over the job's output files (collect-contract.ts says what Collect is
 * given and returns; output-lines.ts how it reads Bedrock's lines).
 */

const DEFAULT_CONCURRENCY = 32;

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
    metrics.addMetric(PIPELINE_METRICS.recordsSucceeded, 'Count', summary.succeeded);
    metrics.addMetric(PIPELINE_METRICS.recordsFailed, 'Count', summary.failed);
    metrics.addMetric(PIPELINE_METRICS.recordsMissing, 'Count', summary.missing);
    metrics.addMetric(PIPELINE_METRICS.inputTokens, 'Count', summary.inputTokens);
    metrics.addMetric(PIPELINE_METRICS.outputTokens, 'Count', summary.outputTokens);
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
