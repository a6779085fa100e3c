import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import {
  BatchGetCommand,
  GetCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';
import { callDependency, TransientDependencyError } from './errors';
import { jitteredBackoffMs, sleep } from './backoff';

/**
 * The idempotency ledger: one item per (ledger scope, recordId). It is the single source of truth for where each
 * record stands, and every transition is one conditional write, so whatever retries, redeliveries, redrives or
 * overlapping runs do, a record is published at most once in a scope.
 *
 * The protocol in two sentences: a unit of work (a Converse batch, a shard's Collect, the failure lane for one
 * record) claims a record under its owner name with a fresh attempt id, and only the attempt holding the claim may
 * move it on, to `published` (commit), `failed` or `queued` (given up and handed to the failure lane), each a
 * conditional write; a unit counts a record as succeeded only because its own commit took effect, and writes the
 * record's result line only after that. Another owner takes a claim over only once its lease has run out (the lease
 * outlasts any invocation of the holder), a later attempt of the same unit takes its own earlier claims back, and
 * whatever a unit decided (published, failed, queued) stays its decision when the unit runs again.
 *
 * Item: `{pk, scope, recordId, status, runId, owner, attempt, contentHash?, leaseUntil?, resultKey?, delivered?,
 * error?, updatedAt, expiresAt}`; `pk` is {@link ledgerKey}.
 */

/** Where a record stands in a ledger scope. */
export type LedgerStatus = 'claimed' | 'published' | 'failed' | 'queued';

/** Who claims: one unit of work of one run, in one attempt. */
export interface Claimant {
  /** The run the unit works for. */
  runId: string;
  /**
   * The unit of work, the same in every attempt: `<runId>/batch/<batchId>`, `<runId>/shard/<n>`,
   * `<runId>/lane/<recordId>` (see {@link unitOwner}).
   */
  owner: string;
  /** This attempt (one invocation of the unit): unique. */
  attempt: string;
}

/** A record's ledger item, as read. */
export interface LedgerEntry {
  recordId: string;
  status: LedgerStatus;
  runId: string;
  owner: string;
  attempt: string;
  contentHash?: string;
  /** Epoch ms until which a `claimed` entry's holder may commit. */
  leaseUntil?: number;
  /** `published`: the results file (output bucket key) that holds its line. */
  resultKey?: string;
  /** `published`: the results queue accepted its message. */
  delivered?: boolean;
  /** `failed` / `queued`: why. */
  error?: { code: string; message: string };
}

/** What the ledger holds about a published record (Plan's lookup). */
export interface PublishedEntry {
  /** The run that published it. */
  runId: string;
  /** Hash of the request it was published for, when the claim recorded one. */
  contentHash?: string;
}

/** The answer to a claim. */
export type ClaimOutcome =
  /** This attempt holds the claim now; `previous` is the entry it took over (a stale claim, a queued record, ...). */
  | { kind: 'claimed'; previous?: LedgerEntry }
  /** This unit decided the record in an earlier attempt (published, failed or queued it): its decision stands. */
  | { kind: 'mine'; entry: LedgerEntry }
  /** Another owner holds a claim whose lease has not run out. */
  | { kind: 'held'; entry: LedgerEntry }
  /** Another owner published it, for the same content. */
  | { kind: 'published'; entry: LedgerEntry }
  /** It was published for different content: a recordId reused for another record (or another prompt template). */
  | { kind: 'reused'; entry: LedgerEntry };

/** The answer to a commit, a failure or a hand-over: whether this attempt's transition is what the ledger holds. */
export type TransitionOutcome = { kind: 'done' } | { kind: 'lost'; entry: LedgerEntry | undefined };

/** Options of a claim. */
export interface ClaimOptions {
  /** Hash of the record's request (records.ts contentHashOf): tells a reused recordId from the same record. */
  contentHash?: string;
  /** How long before another owner may take the claim over, in ms: longer than the holder lives, so takeovers
   * only happen to dead holders (a takeover of a live one is safe, only wasteful: see {@link Ledger.commit}). */
  leaseMs: number;
  /**
   * Take back a record this owner itself handed back (`queued`: the failure lane's next receive), or also one it
   * failed for good (`queued-or-failed`: a redrive of the lane's dead-lettered message). @default none
   */
  reclaimOwn?: 'queued' | 'queued-or-failed';
}

/** Default lease: longer than any Lambda invocation (15 minutes), so a live holder is never taken over. */
export const DEFAULT_LEASE_MS = 20 * 60 * 1000;
const BATCH_GET_MAX = 100;
const MAX_ERROR_MESSAGE = 1_000;

/**
 * The ledger's partition key for a record. The scope is percent-encoded, so it holds no `#` and the first `#`
 * separates it from the recordId (which may contain `#`): no two (scope, recordId) pairs share a key.
 */
export function ledgerKey(scope: string, recordId: string): string {
  return `${encodeURIComponent(scope)}#${recordId}`;
}

/** The owner name of a unit of work (see {@link Claimant.owner}). */
export function unitOwner(runId: string, kind: 'batch' | 'shard' | 'lane' | 'finalize', id: string): string {
  return `${runId}/${kind}/${id}`;
}

/** True when `owner` is the failure lane's unit of a record in `runId`. */
export function isLaneOwner(owner: string, runId: string): boolean {
  return owner.startsWith(`${runId}/lane/`);
}

/** Where the ledger lives and how long its entries last. */
export interface LedgerOptions {
  client: DynamoDBDocumentClient;
  tableName: string;
  ttlDays: number;
  now?: () => number;
}

/** The ledger of one table. */
export class Ledger {
  private readonly now: () => number;

  constructor(private readonly options: LedgerOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The published entries among `recordIds` (at most 100) in `scope`, with the run and content hash of each. */
  async lookupPublished(scope: string, recordIds: readonly string[]): Promise<Map<string, PublishedEntry>> {
    const published = new Map<string, PublishedEntry>();
    for (const [id, entry] of await this.getMany(scope, recordIds)) {
      if (entry.status !== 'published') continue;
      published.set(id, {
        runId: entry.runId,
        ...(entry.contentHash !== undefined ? { contentHash: entry.contentHash } : {}),
      });
    }
    return published;
  }

  /**
   * The entries of `recordIds` (at most 100) in `scope`, strongly consistent (a record published a moment ago is
   * seen). Retries unprocessed keys with backoff.
   */
  async getMany(scope: string, recordIds: readonly string[]): Promise<Map<string, LedgerEntry>> {
    if (recordIds.length > BATCH_GET_MAX) throw new RangeError(`at most ${BATCH_GET_MAX} keys per lookup`);
    const entries = new Map<string, LedgerEntry>();
    let keys: Record<string, unknown>[] = [...new Set(recordIds)].map((id) => ({ pk: ledgerKey(scope, id) }));
    for (let attempt = 0; keys.length > 0; attempt++) {
      if (attempt > 0) {
        if (attempt > 8)
          throw new TransientDependencyError(`ledger lookup left ${keys.length} keys unprocessed`);
        await sleep(jitteredBackoffMs(attempt, 50, 2000));
      }
      const out = await callDependency('ledger BatchGetItem', () =>
        this.options.client.send(
          new BatchGetCommand({
            RequestItems: { [this.options.tableName]: { Keys: keys, ConsistentRead: true } },
          }),
        ),
      );
      for (const item of out.Responses?.[this.options.tableName] ?? []) {
        const entry = toEntry(item);
        if (entry) entries.set(entry.recordId, entry);
      }
      keys =
        (out.UnprocessedKeys?.[this.options.tableName]?.Keys as Record<string, unknown>[] | undefined) ?? [];
    }
    return entries;
  }

  /** A record's entry (strongly consistent), or undefined. */
  async get(scope: string, recordId: string): Promise<LedgerEntry | undefined> {
    const out = await callDependency('ledger GetItem', () =>
      this.options.client.send(
        new GetCommand({
          TableName: this.options.tableName,
          Key: { pk: ledgerKey(scope, recordId) },
          ConsistentRead: true,
        }),
      ),
    );
    return out.Item ? toEntry(out.Item) : undefined;
  }

  /**
   * Claims a record for one attempt of a unit. Succeeds when the record is new in the scope, claimed by this same
   * owner (an earlier attempt, which has ended), claimed by another owner whose lease ran out, or queued or failed
   * by another owner (the failure lane takes what a unit queued; a later run retries what an earlier one failed),
   * except what this run's own failure lane has queued or failed: the lane settles those for the run.
   */
  async claim(scope: string, recordId: string, who: Claimant, options: ClaimOptions): Promise<ClaimOutcome> {
    const now = this.now();
    const reclaimStatuses =
      options.reclaimOwn === 'queued-or-failed'
        ? '(:queued, :failed)'
        : options.reclaimOwn
          ? '(:queued)'
          : '';
    try {
      const out = await callDependency('ledger claim', () =>
        this.options.client.send(
          new UpdateCommand({
            TableName: this.options.tableName,
            Key: { pk: ledgerKey(scope, recordId) },
            UpdateExpression:
              'SET #scope = :scope, recordId = :rid, #s = :claimed, runId = :run, #owner = :owner, #attempt = :attempt, ' +
              'leaseUntil = :lease, updatedAt = :now, expiresAt = :exp' +
              (options.contentHash === undefined ? '' : ', contentHash = :hash') +
              ' REMOVE resultKey, #delivered, #error',
            ConditionExpression:
              'attribute_not_exists(pk) OR (#s = :claimed AND (#owner = :owner OR leaseUntil < :now)) OR ' +
              '(#s IN (:queued, :failed) AND #owner <> :owner AND NOT begins_with(#owner, :runLane))' +
              (reclaimStatuses ? ` OR (#s IN ${reclaimStatuses} AND #owner = :owner)` : ''),
            ExpressionAttributeNames: {
              '#s': 'status',
              '#scope': 'scope',
              '#owner': 'owner',
              '#attempt': 'attempt',
              '#delivered': 'delivered',
              '#error': 'error',
            },
            ExpressionAttributeValues: {
              ':scope': scope,
              ':rid': recordId,
              ':claimed': 'claimed',
              ':queued': 'queued',
              ':failed': 'failed',
              ':run': who.runId,
              ':runLane': `${who.runId}/lane/`,
              ':owner': who.owner,
              ':attempt': who.attempt,
              ':lease': now + options.leaseMs,
              ':now': now,
              ':exp': this.expiresAt(now),
              ...(options.contentHash === undefined ? {} : { ':hash': options.contentHash }),
            },
            ReturnValues: 'ALL_OLD',
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        ),
      );
      const previous = out.Attributes ? toEntry(out.Attributes) : undefined;
      return { kind: 'claimed', ...(previous ? { previous } : {}) };
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
      const entry = entryOfRefusal(err) ?? (await this.get(scope, recordId));
      if (!entry) {
        // Deleted between the write and the read (TTL): the next attempt claims a new record.
        throw new TransientDependencyError(`ledger claim of ${recordId} raced with its expiry`);
      }
      return classify(entry, who, options.contentHash);
    }
  }

  /**
   * This attempt's claim becomes `published`, its line being in `resultKey`. Only the attempt holding the claim may
   * commit: the commit is the one write every path to `published` goes through, so of two attempts that both
   * answered a record (a takeover of a slow holder), exactly one commits and only that one writes the result. The
   * lease decides when a takeover may start, not who wins it. A repeated commit that already took effect (a retried
   * request) counts as done.
   */
  async commit(
    scope: string,
    recordId: string,
    who: Claimant,
    resultKey: string,
  ): Promise<TransitionOutcome> {
    return this.transition(scope, recordId, who, 'published', { resultKey });
  }

  /** This attempt's claim becomes a final failure with its reason (a later run, or a redrive, may retry it). */
  async fail(
    scope: string,
    recordId: string,
    who: Claimant,
    error: { code: string; message: string },
  ): Promise<TransitionOutcome> {
    return this.transition(scope, recordId, who, 'failed', { error: trimError(error) });
  }

  /** This attempt gives its claim up to the failure lane (which claims `queued` records), with the reason. */
  async queue(
    scope: string,
    recordId: string,
    who: Claimant,
    error: { code: string; message: string },
  ): Promise<TransitionOutcome> {
    return this.transition(scope, recordId, who, 'queued', { error: trimError(error) });
  }

  /**
   * A record this attempt queued whose failure-lane message the queue refused: it becomes a final failure with the
   * refusal as its reason (nobody would ever settle it otherwise).
   */
  async failQueued(
    scope: string,
    recordId: string,
    who: Claimant,
    error: { code: string; message: string },
  ): Promise<TransitionOutcome> {
    return this.transition(scope, recordId, who, 'failed', { error: trimError(error) }, 'queued');
  }

  /** Notes that the results queue accepted a published record's message (any attempt of its owner may). */
  async markDelivered(scope: string, recordId: string, owner: string): Promise<void> {
    try {
      await callDependency('ledger mark delivered', () =>
        this.options.client.send(
          new UpdateCommand({
            TableName: this.options.tableName,
            Key: { pk: ledgerKey(scope, recordId) },
            UpdateExpression: 'SET #delivered = :true',
            ConditionExpression: '#s = :published AND #owner = :owner',
            ExpressionAttributeNames: { '#s': 'status', '#owner': 'owner', '#delivered': 'delivered' },
            ExpressionAttributeValues: { ':true': true, ':published': 'published', ':owner': owner },
          }),
        ),
      );
    } catch (err) {
      // Someone else owns the record now (a later run took it over after a TTL expiry): nothing of ours to mark.
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    }
  }

  private async transition(
    scope: string,
    recordId: string,
    who: Claimant,
    status: Exclude<LedgerStatus, 'claimed'>,
    fields: { resultKey?: string; error?: { code: string; message: string } },
    from: 'claimed' | 'queued' = 'claimed',
  ): Promise<TransitionOutcome> {
    const now = this.now();
    const set = ['#s = :status', 'updatedAt = :now', 'expiresAt = :exp'];
    const values: Record<string, unknown> = {
      ':status': status,
      ':from': from,
      ':owner': who.owner,
      ':attempt': who.attempt,
      ':now': now,
      ':exp': this.expiresAt(now),
    };
    if (fields.resultKey !== undefined) {
      set.push('resultKey = :resultKey');
      values[':resultKey'] = fields.resultKey;
    }
    if (fields.error !== undefined) {
      set.push('#error = :error');
      values[':error'] = fields.error;
    }
    try {
      await callDependency(`ledger ${status}`, () =>
        this.options.client.send(
          new UpdateCommand({
            TableName: this.options.tableName,
            Key: { pk: ledgerKey(scope, recordId) },
            UpdateExpression: `SET ${set.join(', ')} REMOVE leaseUntil`,
            ConditionExpression: '#s = :from AND #owner = :owner AND #attempt = :attempt',
            ExpressionAttributeNames: {
              '#s': 'status',
              '#owner': 'owner',
              '#attempt': 'attempt',
              ...(fields.error !== undefined ? { '#error': 'error' } : {}),
            },
            ExpressionAttributeValues: values,
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        ),
      );
      return { kind: 'done' };
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
      const entry = entryOfRefusal(err) ?? (await this.get(scope, recordId));
      // The SDK retried a write that had already taken effect: it is done.
      if (entry?.status === status && entry.owner === who.owner && entry.attempt === who.attempt) {
        return { kind: 'done' };
      }
      return { kind: 'lost', entry };
    }
  }

  private expiresAt(now: number): number {
    return Math.floor(now / 1000) + this.options.ttlDays * 86_400;
  }
}

/**
 * The item a refused conditional write returns (ReturnValuesOnConditionCheckFailure), in DynamoDB's wire format:
 * the document client does not convert exceptions. DynamoDB returns it; an emulator may not (then the caller reads).
 */
function entryOfRefusal(err: ConditionalCheckFailedException): LedgerEntry | undefined {
  return err.Item ? toEntry(unmarshall(err.Item)) : undefined;
}

/** Why a claim was refused. */
function classify(entry: LedgerEntry, who: Claimant, contentHash: string | undefined): ClaimOutcome {
  if (entry.owner === who.owner && entry.status !== 'claimed') return { kind: 'mine', entry };
  if (entry.status === 'published') {
    const differs =
      contentHash !== undefined && entry.contentHash !== undefined && entry.contentHash !== contentHash;
    return differs ? { kind: 'reused', entry } : { kind: 'published', entry };
  }
  // A claim another owner holds, or (racing) one that just changed hands.
  return { kind: 'held', entry };
}

function trimError(error: { code: string; message: string }): { code: string; message: string } {
  return {
    code: error.code.slice(0, 200),
    message:
      error.message.length > MAX_ERROR_MESSAGE
        ? `${error.message.slice(0, MAX_ERROR_MESSAGE - 1)}…`
        : error.message,
  };
}

const STATUSES: ReadonlySet<string> = new Set(['claimed', 'published', 'failed', 'queued']);

function toEntry(item: Record<string, unknown>): LedgerEntry | undefined {
  const { recordId, status, runId, owner, attempt } = item;
  if (typeof recordId !== 'string' || typeof status !== 'string' || !STATUSES.has(status)) return undefined;
  const error = item.error as { code?: unknown; message?: unknown } | undefined;
  return {
    recordId,
    status: status as LedgerStatus,
    runId: typeof runId === 'string' ? runId : '',
    owner: typeof owner === 'string' ? owner : '',
    attempt: typeof attempt === 'string' ? attempt : '',
    ...(typeof item.contentHash === 'string' ? { contentHash: item.contentHash } : {}),
    ...(typeof item.leaseUntil === 'number' ? { leaseUntil: item.leaseUntil } : {}),
    ...(typeof item.resultKey === 'string' ? { resultKey: item.resultKey } : {}),
    ...(item.delivered === true ? { delivered: true } : {}),
    ...(error && typeof error.code === 'string' && typeof error.message === 'string'
      ? { error: { code: error.code, message: error.message } }
      : {}),
  };
}
