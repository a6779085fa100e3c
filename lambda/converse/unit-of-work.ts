import { DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type {
  FailureLaneMessage,
  FailureLine,
  FailureStage,
  ModelCalls,
  RecordFormat,
  ResultLine,
  Usage,
} from '../shared/contracts';
import { callDependency } from '../shared/errors';
import type { FailureLaneSender, RefusedMessage } from '../shared/failure-lane';
import { faultPoint } from '../shared/fault-points';
import {
  isLaneOwner,
  type Claimant,
  type Ledger,
  type LedgerEntry,
  type TransitionOutcome,
} from '../shared/ledger';
import { mapWithConcurrency } from '../shared/pool';
import type { PublishedRecord, ResultsPublisher } from '../shared/results-queue';
import { openObject, putJsonl, readLines } from '../shared/s3-jsonl';

/**
 * What every unit of work that publishes records shares (a Converse batch, a shard's Collect, Finalize repairing a
 * batch whose child died): the attempts history, the ledger transitions, and writing the outcome files, results
 * queue messages and failure-lane hand-overs from what the ledger says this unit decided.
 *
 * A unit's files are rewritten whole by each attempt from the ledger and the history, never appended to, so an
 * attempt that follows a crash writes the same lines the crashed one would have, and a record's line is written only
 * once the ledger holds the unit's decision: results hold what the unit published, failures what it failed for
 * good; records handed to the failure lane are in neither until the lane settles them.
 */

/** A model's answer to one record. */
export interface Answer {
  modelOutput: unknown;
  usage: Usage;
}

/** An error as the outcome files and the ledger keep it. */
export interface Reason {
  code: string;
  message: string;
}

/**
 * One line of an attempt's history (`runs/<runId>/attempts/<unit>/<attempt>.jsonl`): what one attempt decided for a
 * record before it told the ledger. History, not outcome: the outcome is what the ledger holds.
 */
export interface AttemptLine {
  recordId: string;
  attempt: string;
  /** ISO-8601. */
  at: string;
  outcome: 'answered' | 'failed' | 'queued';
  error?: Reason;
  modelOutput?: unknown;
  usage?: Usage;
  /** On an attempt's first line: the model calls the attempt made (history: a crashed attempt's calls count too). */
  calls?: ModelCalls;
}

/** The attempts history of one unit: every earlier attempt's decisions. */
export class AttemptHistory {
  /** The model calls of the attempts read (and added). */
  readonly calls: ModelCalls = { total: 0, throttled: 0, retried: 0 };

  private constructor(
    private readonly answers: Map<string, Answer>,
    private readonly decisions: Map<string, AttemptLine>,
    /** Files read. */
    readonly attempts: number,
  ) {}

  /** No history (a unit's first attempt, or one that keeps none). */
  static empty(): AttemptHistory {
    return new AttemptHistory(new Map(), new Map(), 0);
  }

  /** Reads every attempt file under `prefix` (in key order). */
  static async load(s3: S3Client, bucket: string, prefix: string): Promise<AttemptHistory> {
    const answers = new Map<string, Answer>();
    const decisions = new Map<string, AttemptLine>();
    const keys = await listKeys(s3, bucket, prefix);
    const history = new AttemptHistory(answers, decisions, keys.length);
    for (const key of keys) {
      const body = await openObject(s3, bucket, key);
      if (!body) continue;
      const lines: AttemptLine[] = [];
      for await (const text of readLines(body)) if (text) lines.push(JSON.parse(text) as AttemptLine);
      history.add(lines);
    }
    return history;
  }

  /** The answer an earlier attempt staged for a record. */
  answer(recordId: string): Answer | undefined {
    return this.answers.get(recordId);
  }

  /** The failure or hand-over an earlier attempt decided for a record (when it staged no answer). */
  decision(recordId: string): AttemptLine | undefined {
    return this.decisions.get(recordId);
  }

  /** Adds an attempt's lines (this attempt's after they are written, so the files are built from one view). */
  add(lines: readonly AttemptLine[]): void {
    for (const line of lines) {
      if (line.calls) {
        this.calls.total += line.calls.total;
        this.calls.throttled += line.calls.throttled;
        this.calls.retried += line.calls.retried;
      }
      // The first answer a unit got for a record is its only answer: later attempts reuse it instead of asking again.
      if (line.outcome === 'answered') {
        if (!this.answers.has(line.recordId) && line.usage) {
          this.answers.set(line.recordId, { modelOutput: line.modelOutput, usage: line.usage });
        }
      } else this.decisions.set(line.recordId, line);
    }
  }
}

/** Where a record ended, for one unit (and one run). */
export type UnitOutcome =
  /** This unit published it: its line is in the unit's results file. */
  | { kind: 'succeeded'; answer: Answer; delivered: boolean }
  /** This unit failed it for good: its line is in the unit's failures file. `fresh`: decided by this attempt. */
  | { kind: 'failed'; error: Reason; fresh: boolean }
  /** Handed to the failure lane, which settles it. `send`: the lane message is (re)sent by this attempt. */
  | { kind: 'queued'; error: Reason; send: boolean }
  /** Another run holds or published it. */
  | { kind: 'skipped'; reason: string };

/** A record of a unit: what the outcome files and a lane message need of it. */
export interface UnitRecord {
  recordId: string;
  /** The corpus object the record's line is in, when known. */
  source?: string;
  /** 1-based line number in that object, when known. */
  line?: number;
  /** The request, for a failure-lane hand-over. */
  request?: { format: RecordFormat; modelInput: Record<string, unknown> };
}

/** Where a unit writes its outcome files. */
export interface UnitKeys {
  /** The unit's results file: its published records. */
  results: string;
  /** The unit's failures file: its final failures. */
  failures: string;
}

/** What {@link settleUnit} talks to. */
export interface SettleDeps {
  s3: S3Client;
  ledger: Pick<Ledger, 'markDelivered' | 'failQueued'>;
  failureLane: Pick<FailureLaneSender, 'add' | 'flush'>;
  resultsPublisher?: Pick<ResultsPublisher, 'publish'> | undefined;
  outputBucket: string;
}

/** The handler a unit runs in, for its fault points. */
export type UnitHandler = 'converse-batch' | 'collect';

/** Counts of a settled unit. */
export interface UnitCounts {
  succeeded: number;
  failed: number;
  skipped: number;
  queued: number;
  inputTokens: number;
  outputTokens: number;
}

/**
 * Writes a unit's outcome files from its records' outcomes and does its side effects: results file, results queue
 * (records not yet delivered, then marked delivered), failure-lane hand-overs (and the DLQ for fresh final failures),
 * then the failures file (a hand-over SQS refused becomes a failure). Each step is idempotent: a later attempt that
 * finds the same outcomes writes the same bytes.
 */
export async function settleUnit(
  handler: UnitHandler,
  unit: { who: Claimant; scope: string; stage: FailureStage; keys: UnitKeys },
  records: readonly UnitRecord[],
  outcomes: ReadonlyMap<string, UnitOutcome>,
  deps: SettleDeps,
): Promise<UnitCounts> {
  const counts: UnitCounts = {
    succeeded: 0,
    failed: 0,
    skipped: 0,
    queued: 0,
    inputTokens: 0,
    outputTokens: 0,
  };
  const results: ResultLine[] = [];
  const failures: FailureLine[] = [];
  const toDeliver: { recordId: string; usage: Usage }[] = [];
  const toLane: FailureLaneMessage[] = [];
  const toDlq: FailureLaneMessage[] = [];
  for (const record of records) {
    const outcome = outcomes.get(record.recordId);
    if (!outcome) continue;
    switch (outcome.kind) {
      case 'succeeded':
        counts.succeeded++;
        counts.inputTokens += outcome.answer.usage.inputTokens;
        counts.outputTokens += outcome.answer.usage.outputTokens;
        results.push({
          recordId: record.recordId,
          modelOutput: outcome.answer.modelOutput,
          usage: outcome.answer.usage,
        });
        if (!outcome.delivered) toDeliver.push({ recordId: record.recordId, usage: outcome.answer.usage });
        break;
      case 'failed': {
        counts.failed++;
        const failure: FailureLine = {
          recordId: record.recordId,
          ...(record.source !== undefined ? { source: record.source } : {}),
          ...(record.line !== undefined ? { line: record.line } : {}),
          stage: unit.stage,
          error: { ...outcome.error, retryable: false },
        };
        failures.push(failure);
        if (outcome.fresh) toDlq.push({ ...failure, runId: unit.who.runId, ledgerScope: unit.scope });
        break;
      }
      case 'queued':
        counts.queued++;
        if (outcome.send) {
          toLane.push({
            recordId: record.recordId,
            ...(record.source !== undefined ? { source: record.source } : {}),
            ...(record.line !== undefined ? { line: record.line } : {}),
            stage: unit.stage,
            error: { ...outcome.error, retryable: true },
            runId: unit.who.runId,
            ledgerScope: unit.scope,
            ...(record.request ?? {}),
          });
        }
        break;
      case 'skipped':
        counts.skipped++;
        break;
    }
  }

  await writeOrDelete(deps, unit.keys.results, results);
  faultPoint(handler, 'after-results');

  if (deps.resultsPublisher && toDeliver.length > 0) {
    await deps.resultsPublisher.publish(
      toDeliver.map((r) => ({
        runId: unit.who.runId,
        recordId: r.recordId,
        ledgerScope: unit.scope,
        resultKey: unit.keys.results,
        usage: r.usage,
      })) satisfies PublishedRecord[],
    );
    faultPoint(handler, 'after-queue-send');
    await mapWithConcurrency(toDeliver, 16, (r) =>
      deps.ledger.markDelivered(unit.scope, r.recordId, unit.who.owner),
    );
  }

  faultPoint(handler, 'after-release');
  // A hand-over SQS refuses would leave its record queued with nobody to settle it: it fails for good instead, with
  // SQS's reason (the ledger takes it back from `queued`; a later attempt finds it failed).
  const refused: RefusedMessage[] = [];
  for (const message of toLane) await deps.failureLane.add(message, (r) => void refused.push(r));
  for (const message of toDlq) await deps.failureLane.add(message);
  await deps.failureLane.flush();
  for (const { message, code, reason } of refused) {
    const recordId = message.recordId as string;
    const error = {
      code: 'FailureLaneRefused',
      message: `the failure queue refused this record's retry (${code}: ${reason}); run the corpus again to retry it`,
    };
    const taken = await deps.ledger.failQueued(unit.scope, recordId, unit.who, error);
    if (taken.kind === 'lost') continue;
    counts.queued--;
    counts.failed++;
    failures.push({
      recordId,
      ...(message.source !== undefined ? { source: message.source } : {}),
      ...(message.line !== undefined ? { line: message.line } : {}),
      stage: unit.stage,
      error: { ...error, retryable: false },
    });
  }
  await writeOrDelete(deps, unit.keys.failures, failures);
  return counts;
}

/** Writes a JSONL object, or deletes it when there are no lines (an earlier attempt may have written one). */
async function writeOrDelete(deps: Pick<SettleDeps, 's3' | 'outputBucket'>, key: string, lines: unknown[]) {
  if (lines.length > 0) {
    await putJsonl(deps.s3, deps.outputBucket, key, lines);
    return;
  }
  await callDependency('S3 DeleteObject', () =>
    deps.s3.send(new DeleteObjectCommand({ Bucket: deps.outputBucket, Key: key })),
  );
}

/**
 * The outcome of a record whose transition this attempt lost, or whose claim it did not get: what the ledger holds
 * decides. `answerOf` gives this unit's staged answer (for a record published by this unit).
 */
export function outcomeFromEntry(
  entry: LedgerEntry | undefined,
  who: Claimant,
  answerOf: (recordId: string) => Answer | undefined,
): UnitOutcome {
  if (!entry) return { kind: 'skipped', reason: 'the record left the ledger' };
  if (entry.owner === who.owner) {
    switch (entry.status) {
      case 'published': {
        const answer = answerOf(entry.recordId);
        if (answer) return { kind: 'succeeded', answer, delivered: entry.delivered === true };
        // Every path to `published` stages the answer first; a missing one means the history was removed.
        throw new LostAnswerError(
          `record ${entry.recordId} is published by ${who.owner} but its answer is not in the unit's attempts history`,
        );
      }
      case 'failed':
        return { kind: 'failed', error: entry.error ?? unknownReason(), fresh: false };
      case 'queued':
        return { kind: 'queued', error: entry.error ?? unknownReason(), send: true };
      case 'claimed':
        break;
    }
  }
  // The failure lane took over what this run's unit handed it: the lane settles it, this unit counts it handed over.
  if (isLaneOwner(entry.owner, who.runId)) {
    return { kind: 'queued', error: entry.error ?? unknownReason(), send: false };
  }
  return {
    kind: 'skipped',
    reason:
      entry.status === 'published'
        ? `published by run ${entry.runId}`
        : `${entry.status} by ${entry.owner} (run ${entry.runId})`,
  };
}

/** A unit's published record has no answer in its history (the attempts files were deleted). */
export class LostAnswerError extends Error {
  override readonly name = 'LostAnswerError';
}

function unknownReason(): Reason {
  return { code: 'Unknown', message: 'no reason was recorded' };
}

/**
 * Applies one decided transition and returns the record's outcome: the decided one when the ledger took it, else
 * what the ledger holds.
 */
export async function applyTransition(
  transition: () => Promise<TransitionOutcome>,
  decided: UnitOutcome,
  who: Claimant,
  answerOf: (recordId: string) => Answer | undefined,
): Promise<UnitOutcome> {
  const result = await transition();
  if (result.kind === 'done') return decided;
  return outcomeFromEntry(result.entry, who, answerOf);
}

async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const out = await callDependency('S3 ListObjectsV2', () =>
      s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token })),
    );
    for (const o of out.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}
