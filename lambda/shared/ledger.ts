import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { BatchGetCommand, UpdateCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { callDependency, TransientDependencyError } from './errors';

/**
 * The idempotency ledger: one item per (scope, recordId), `pk = <scope>#<recordId>`. A record is published
 * (written to the results) only by the run that holds its claim, and a record whose item says `published` is never
 * processed again in that scope. Claims are conditional writes, so however often a batch is retried, redriven or
 * re-run, each record is published once.
 *
 * Item: `{pk, scope, recordId, status: 'claimed' | 'published', runId, contentHash?, claimedAt, publishedAt?,
 * expiresAt}`. `contentHash` (of the record's modelInput) lets a later run tell the same record from a different one
 * that reuses its recordId.
 */

/** What the ledger holds about a published record. */
export interface PublishedEntry {
  /** The run that published it. */
  runId: string;
  /** Hash of the modelInput it was published for, when the claim recorded one. */
  contentHash?: string;
}

/** How long a claim may sit unpublished before another run may take it over (longer than any Lambda timeout). */
export const STALE_CLAIM_MS = 20 * 60 * 1000;
const BATCH_GET_MAX = 100;

/** The ledger's partition key for a record. */
export function ledgerKey(scope: string, recordId: string): string {
  return `${scope}#${recordId}`;
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

  /** Which of `recordIds` (at most 100) are already published in `scope`. */
  async findPublished(scope: string, recordIds: readonly string[]): Promise<Set<string>> {
    return new Set((await this.lookupPublished(scope, recordIds)).keys());
  }

  /**
   * The published entries among `recordIds` (at most 100) in `scope`, with the run and content hash of each.
   * Retries unprocessed keys with backoff.
   */
  async lookupPublished(scope: string, recordIds: readonly string[]): Promise<Map<string, PublishedEntry>> {
    if (recordIds.length > BATCH_GET_MAX) throw new RangeError(`at most ${BATCH_GET_MAX} keys per lookup`);
    const published = new Map<string, PublishedEntry>();
    let keys: Record<string, unknown>[] = recordIds.map((id) => ({ pk: ledgerKey(scope, id) }));
    for (let attempt = 0; keys.length > 0; attempt++) {
      if (attempt > 0) {
        if (attempt > 8)
          throw new TransientDependencyError(`ledger lookup left ${keys.length} keys unprocessed`);
        await sleep(Math.min(2000, 50 * 2 ** attempt) * Math.random());
      }
      const out = await callDependency('ledger BatchGetItem', () =>
        this.options.client.send(
          new BatchGetCommand({
            RequestItems: {
              [this.options.tableName]: {
                Keys: keys,
                ProjectionExpression: 'recordId, runId, contentHash, #s',
                ExpressionAttributeNames: { '#s': 'status' },
              },
            },
          }),
        ),
      );
      for (const item of out.Responses?.[this.options.tableName] ?? []) {
        if (item.status === 'published' && typeof item.recordId === 'string') {
          published.set(item.recordId, {
            runId: typeof item.runId === 'string' ? item.runId : '',
            ...(typeof item.contentHash === 'string' ? { contentHash: item.contentHash } : {}),
          });
        }
      }
      keys =
        (out.UnprocessedKeys?.[this.options.tableName]?.Keys as Record<string, unknown>[] | undefined) ?? [];
    }
    return published;
  }

  /**
   * Claims a record for `runId`. Succeeds when the record is new in the scope, already claimed or published by this
   * same run (a retried batch re-publishes into the same files), or claimed by a run that went quiet long ago.
   * @param contentHash hash of the record's modelInput (records.ts contentHashOf), kept so a later run can tell a
   *   different record reusing this recordId
   * @returns `claimed`, or `held` when another run holds or has published it
   */
  async claim(
    scope: string,
    recordId: string,
    runId: string,
    contentHash?: string,
  ): Promise<'claimed' | 'held'> {
    const now = this.now();
    try {
      await callDependency('ledger claim', () =>
        this.options.client.send(
          new UpdateCommand({
            TableName: this.options.tableName,
            Key: { pk: ledgerKey(scope, recordId) },
            UpdateExpression:
              'SET #scope = :scope, recordId = :rid, runId = :run, claimedAt = :now, expiresAt = :exp, #s = if_not_exists(#s, :claimed)' +
              (contentHash === undefined ? '' : ', contentHash = :hash'),
            ConditionExpression:
              'attribute_not_exists(pk) OR runId = :run OR (#s = :claimed AND claimedAt < :stale)',
            ExpressionAttributeNames: { '#s': 'status', '#scope': 'scope' },
            ExpressionAttributeValues: {
              ':scope': scope,
              ':rid': recordId,
              ':run': runId,
              ':now': now,
              ':exp': Math.floor(now / 1000) + this.options.ttlDays * 86_400,
              ':claimed': 'claimed',
              ':stale': now - STALE_CLAIM_MS,
              ...(contentHash === undefined ? {} : { ':hash': contentHash }),
            },
          }),
        ),
      );
      return 'claimed';
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return 'held';
      throw err;
    }
  }

  /** Marks a record this run claimed as published (after its result is durably written). */
  async markPublished(scope: string, recordId: string, runId: string): Promise<void> {
    await callDependency('ledger publish', () =>
      this.options.client.send(
        new UpdateCommand({
          TableName: this.options.tableName,
          Key: { pk: ledgerKey(scope, recordId) },
          UpdateExpression: 'SET #s = :published, publishedAt = :now',
          ConditionExpression: 'runId = :run',
          ExpressionAttributeNames: { '#s': 'status' },
          ExpressionAttributeValues: { ':published': 'published', ':now': this.now(), ':run': runId },
        }),
      ),
    );
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
