import { randomUUID } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import {
  converseUnitKeys,
  type ItemBatchEvent,
  type ItemBatchSummary,
  type WorkItem,
} from '../shared/contracts';
import { batchIdOf } from './item-batch-id';
import type { FailureLaneSender } from '../shared/failure-lane';
import { faultPoint } from '../shared/fault-points';
import { unitOwner, type Claimant, type ClaimOutcome, type Ledger } from '../shared/ledger';
import { classifyModelError, type ModelCaller, type ModelCallStats } from './model-caller';
import { mapWithConcurrency } from '../shared/pool';
import { contentHashOf } from '../shared/records';
import type { ResultsPublisher } from '../shared/results-queue';
import { putJsonl } from '../shared/s3-jsonl';
import {
  AttemptHistory,
  applyTransition,
  outcomeFromEntry,
  settleUnit,
  type Answer,
  type AttemptLine,
  type Reason,
  type UnitOutcome,
  type UnitRecord,
} from './unit-of-work';

/**
 * One Converse batch (a child of the fan-out Map) as a unit of work: claim each record, call the model for the ones
 * this unit has not decided yet, stage the answers and decisions in the attempts history, move each claim on in the
 * ledger (published, failed, or queued for the failure lane), then write the outcome files from what the ledger took.
 * The same function repairs a batch whose child died (Finalize): with no model caller, whatever the batch had not
 * decided is handed to the failure lane.
 */

/** The S3 keys of one Converse batch (unit), kept under this name for its callers. */
export { converseUnitKeys };

/** What a Converse batch talks to. */
export interface ConverseUnitDeps {
  s3: S3Client;
  ledger: Pick<
    Ledger,
    'claim' | 'commit' | 'fail' | 'queue' | 'failQueued' | 'markDelivered' | 'get' | 'getMany'
  >;
  failureLane: Pick<FailureLaneSender, 'add' | 'flush'>;
  /** The model; absent when Finalize repairs a batch (nothing is sent to the model then). */
  callModel?: ModelCaller;
  resultsPublisher?: Pick<ResultsPublisher, 'publish'> | undefined;
  outputBucket: string;
  itemConcurrency: number;
  /** How long a claim holds before another owner may take it over, in ms. */
  leaseMs: number;
  /** Milliseconds this attempt may still spend calling the model (the invocation's and the child's deadline). */
  remainingMs: () => number;
  /** Time kept back from the deadline to stage, commit and write. @default SAFETY_MARGIN_MS */
  safetyMarginMs?: number;
  /** Why records are given up without a model call (Finalize repairing a dead batch). */
  giveUp?: Reason;
  /** The model calls this attempt made so far. */
  modelCalls?: () => ModelCallStats;
  /**
   * The unit's batch id, when it is not the hash of the items (Finalize finishing a unit it knows by its ledger
   * owner, or a batch of its own). @default batchIdOf(runId, recordIds)
   */
  batchId?: string;
  /** A new attempt id. @default randomUUID */
  newAttempt?: () => string;
  now?: () => Date;
}

/**
 * Time kept back from the deadline to stage, commit and write before the invocation or the child ends: 30 s, or a
 * tenth of a shorter budget (see {@link safetyMarginFor}).
 */
export const SAFETY_MARGIN_MS = 30_000;

/** The safety margin for a child budget: 30 s of AWS's five minutes, a tenth of a shorter one. */
export function safetyMarginFor(childBudgetSeconds: number): number {
  return Math.min(SAFETY_MARGIN_MS, (childBudgetSeconds * 1000) / 10);
}
const LEDGER_CONCURRENCY = 16;
const NO_CALLS: ModelCallStats = { total: 0, throttled: 0, retried: 0 };

/** What this attempt must do for a record it holds the claim of. */
type Step =
  | { do: 'call' }
  | { do: 'commit'; answer: Answer; fresh: boolean }
  | { do: 'fail'; error: Reason; fresh: boolean }
  | { do: 'queue'; error: Reason; fresh: boolean };

/**
 * Processes one batch and returns its counts. A record never fails the batch: only a dependency failure (S3,
 * DynamoDB, SQS) throws, and the workflow retries the batch, which then finds its earlier decisions in the ledger
 * and its earlier answers in the attempts history (no second model call, no second line).
 */
export async function processBatch(event: ItemBatchEvent, deps: ConverseUnitDeps): Promise<ItemBatchSummary> {
  const { runId, ledgerScope: scope } = event.BatchInput;
  const items = event.Items;
  const batchId =
    deps.batchId ??
    batchIdOf(
      runId,
      items.map((i) => i.recordId),
    );
  const who: Claimant = {
    runId,
    owner: unitOwner(runId, 'batch', batchId),
    attempt: (deps.newAttempt ?? randomUUID)(),
  };
  const now = deps.now ?? (() => new Date());
  const history = await AttemptHistory.load(
    deps.s3,
    deps.outputBucket,
    converseUnitKeys.attemptsPrefix(runId, batchId),
  );
  const claims = await mapWithConcurrency(items, LEDGER_CONCURRENCY, (item) =>
    deps.ledger.claim(scope, item.recordId, who, {
      contentHash: contentHashOf(item.modelInput),
      leaseMs: deps.leaseMs,
    }),
  );
  faultPoint('converse-batch', 'after-claim');

  const answerOf = (recordId: string): Answer | undefined => history.answer(recordId);
  const outcomes = new Map<string, UnitOutcome>();
  const steps = new Map<string, Step>();
  items.forEach((item, i) => {
    const claim = claims[i] as ClaimOutcome;
    const settled = settledByClaim(claim, item, who, scope, answerOf);
    if (settled) outcomes.set(item.recordId, settled);
    else steps.set(item.recordId, stepFromHistory(history, item.recordId));
  });

  // The model, for the records this unit holds and has not decided yet.
  const calls = items.filter((i) => steps.get(i.recordId)?.do === 'call');
  const { staged, attemptCalls } = await callAndStage(calls, steps, deps, {
    runId,
    batchId,
    who,
    history,
    now,
  });
  faultPoint('converse-batch', 'after-stage');

  const resultKey = converseUnitKeys.results(runId, batchId);
  await mapWithConcurrency([...steps], LEDGER_CONCURRENCY, async ([recordId, step]) => {
    outcomes.set(recordId, await decide(deps, { scope, who, resultKey, answerOf }, recordId, step));
  });
  faultPoint('converse-batch', 'after-commit');

  const counts = await settleUnit(
    'converse-batch',
    {
      who,
      scope,
      stage: 'converse',
      keys: {
        results: resultKey,
        failures: converseUnitKeys.failures(runId, batchId),
      },
    },
    items.map(toUnitRecord),
    outcomes,
    deps,
  );
  faultPoint('converse-batch', 'before-return');
  // Every attempt's calls: the ones made by attempts that died count too (the history has them once staged).
  const modelCalls = staged > 0 ? history.calls : addCalls(history.calls, attemptCalls);
  return { batchId, records: items.length, ...counts, modelCalls };
}

/** Where one attempt of a unit stages its answers. */
interface AttemptContext {
  runId: string;
  batchId: string;
  who: Claimant;
  history: AttemptHistory;
  now: () => Date;
}

/**
 * Calls the model once for each record in `calls` (its step then says what to tell the ledger), and stages the
 * answers in the unit's attempts history before any of them reaches the ledger.
 * @returns the lines staged and the model calls this attempt made
 */
async function callAndStage(
  calls: WorkItem[],
  steps: Map<string, Step>,
  deps: ConverseUnitDeps,
  attempt: AttemptContext,
): Promise<{ staged: number; attemptCalls: ModelCallStats }> {
  const { runId, batchId, who, history, now } = attempt;
  const staged: AttemptLine[] = [];
  const callsAtStart = deps.modelCalls?.() ?? NO_CALLS;
  await mapWithConcurrency(calls, deps.itemConcurrency, async (item) => {
    const step = await callOnce(item, deps);
    steps.set(item.recordId, step);
    staged.push(historyLine(item.recordId, who.attempt, step, now()));
  });
  const attemptCalls = diffCalls(deps.modelCalls?.() ?? NO_CALLS, callsAtStart);
  // Replayed decisions of an earlier attempt that died before telling the ledger are already in the history.
  if (staged.length > 0) {
    const first = staged[0] as AttemptLine;
    staged[0] = { ...first, calls: attemptCalls };
    await putJsonl(deps.s3, deps.outputBucket, converseUnitKeys.attempt(runId, batchId, who.attempt), staged);
    history.add(staged);
  }
  return { staged: staged.length, attemptCalls };
}

/** What telling the ledger a decision needs. */
interface DecisionContext {
  scope: string;
  who: Claimant;
  resultKey: string;
  answerOf: (recordId: string) => Answer | undefined;
}

/** Tells the ledger this attempt's decision on one record (commit, fail or queue) and returns the record's outcome. */
function decide(
  deps: ConverseUnitDeps,
  ctx: DecisionContext,
  recordId: string,
  step: Step,
): Promise<UnitOutcome> {
  const { scope, who, resultKey, answerOf } = ctx;
  switch (step.do) {
    case 'commit':
      return applyTransition(
        () => deps.ledger.commit(scope, recordId, who, resultKey),
        { kind: 'succeeded', answer: step.answer, delivered: false },
        who,
        answerOf,
      );
    case 'fail':
      return applyTransition(
        () => deps.ledger.fail(scope, recordId, who, step.error),
        { kind: 'failed', error: step.error, fresh: step.fresh },
        who,
        answerOf,
      );
    case 'queue':
      return applyTransition(
        () => deps.ledger.queue(scope, recordId, who, step.error),
        { kind: 'queued', error: step.error, send: true },
        who,
        answerOf,
      );
    case 'call':
      throw new Error(`record ${recordId} was left without a decision`);
  }
}

/** A record the claim alone settles (this unit decided it earlier, or another owner has it); undefined: claimed. */
function settledByClaim(
  claim: ClaimOutcome,
  item: WorkItem,
  who: Claimant,
  scope: string,
  answerOf: (recordId: string) => Answer | undefined,
): UnitOutcome | undefined {
  switch (claim.kind) {
    case 'claimed':
      return undefined;
    case 'reused':
      return {
        kind: 'failed',
        error: {
          code: 'RecordIdReused',
          message:
            `recordId ${JSON.stringify(item.recordId)} was already published in ledger scope ${JSON.stringify(scope)} ` +
            `(run ${claim.entry.runId}) for a different request (other content, or another prompt template); give this ` +
            'record its own recordId, or run the corpus under another ledgerScope',
        },
        fresh: true,
      };
    case 'mine':
    case 'held':
    case 'published':
      return outcomeFromEntry(claim.entry, who, answerOf);
  }
}

/** What to do with a record this attempt claimed: what an earlier attempt staged for it, or a model call. */
function stepFromHistory(history: AttemptHistory, recordId: string): Step {
  const answer = history.answer(recordId);
  if (answer) return { do: 'commit', answer, fresh: false };
  const decided = history.decision(recordId);
  // Fresh: the attempt that staged the failure died before the ledger took it, so it never dead-lettered it either;
  // whichever attempt makes the transition sends it to the DLQ.
  if (decided?.outcome === 'failed' && decided.error)
    return { do: 'fail', error: decided.error, fresh: true };
  if (decided?.outcome === 'queued' && decided.error)
    return { do: 'queue', error: decided.error, fresh: false };
  return { do: 'call' };
}

/** One model call for a record (the SDK retries throttling inside it), or why it was not made. */
async function callOnce(item: WorkItem, deps: ConverseUnitDeps): Promise<Step> {
  if (!deps.callModel) {
    return {
      do: 'queue',
      error: deps.giveUp ?? { code: 'NotProcessed', message: 'the batch stopped before this record' },
      fresh: true,
    };
  }
  const remaining = deps.remainingMs() - (deps.safetyMarginMs ?? SAFETY_MARGIN_MS);
  if (remaining < 1_000) {
    return {
      do: 'queue',
      error: {
        code: 'NotAttempted',
        message: 'the batch ran out of time before this record was sent; the failure lane retries it',
      },
      fresh: true,
    };
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), remaining);
  try {
    const answer = await deps.callModel(item, controller.signal);
    return { do: 'commit', answer, fresh: true };
  } catch (err) {
    const failure = classifyModelError(err, controller.signal.aborted);
    const error = { code: failure.code, message: failure.message };
    return failure.retryable ? { do: 'queue', error, fresh: true } : { do: 'fail', error, fresh: true };
  } finally {
    clearTimeout(timer);
  }
}

function historyLine(recordId: string, attempt: string, step: Step, at: Date): AttemptLine {
  const base = { recordId, attempt, at: at.toISOString() };
  switch (step.do) {
    case 'commit':
      return { ...base, outcome: 'answered', modelOutput: step.answer.modelOutput, usage: step.answer.usage };
    case 'fail':
      return { ...base, outcome: 'failed', error: step.error };
    case 'queue':
      return { ...base, outcome: 'queued', error: step.error };
    case 'call':
      throw new Error('a call step has no history line');
  }
}

function toUnitRecord(item: WorkItem): UnitRecord {
  return {
    recordId: item.recordId,
    ...(item.source !== undefined ? { source: item.source } : {}),
    line: item.line,
    request: { format: item.format, modelInput: item.modelInput },
  };
}

function addCalls(a: ModelCallStats, b: ModelCallStats): ModelCallStats {
  return { total: a.total + b.total, throttled: a.throttled + b.throttled, retried: a.retried + b.retried };
}

function diffCalls(end: ModelCallStats, start: ModelCallStats): ModelCallStats {
  return {
    total: end.total - start.total,
    throttled: end.throttled - start.throttled,
    retried: end.retried - start.retried,
  };
}

/**
 * When an attempt must be done calling the model (epoch ms): before the invocation's timeout and before its EXPRESS
 * child's five minutes run out, whichever comes first (a retry late in the child gets what is left of it).
 * @param childStartedAt the child execution's start (ISO-8601), when the workflow passes it
 */
export function converseUnitDeadline(
  now: number,
  invocationRemainingMs: number,
  childStartedAt: string | undefined,
  childBudgetSeconds: number,
): number {
  const invocationEnd = now + invocationRemainingMs;
  const started = childStartedAt === undefined ? Number.NaN : Date.parse(childStartedAt);
  return Number.isFinite(started)
    ? Math.min(invocationEnd, started + childBudgetSeconds * 1000)
    : invocationEnd;
}
