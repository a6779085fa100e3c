import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import {
  GetCommand,
  PutCommand,
  QueryCommand,
  UpdateCommand,
  type DynamoDBDocumentClient,
} from '@aws-sdk/lib-dynamodb';
import type { S3Client } from '@aws-sdk/client-s3';
import { runKeys, type ModelCalls, type RunManifest } from './contracts';
import { callDependency } from './errors';
import { putJson } from './s3-jsonl';

/**
 * The state of a run that outlives its execution, in the runs table (`pk` runId, `sk` item):
 * - `sk = "run"`: the manifest Finalize wrote (`base`, before the failure lane's part), the manifest's `revision`,
 *   and the failure lane's model calls;
 * - `sk = "lane#<recordId>"`: one item per record of the run the failure lane settled, with its final outcome.
 *
 * The manifest is always composed from these (Finalize's part plus the lane's items, read strongly consistent), so
 * it equals the files whoever writes it and whenever: a record the lane settles after the run moves from `pending`
 * to `succeeded` (and `recovered`) or `failed`, and the manifest gets a new revision.
 */

/** A record's final outcome in the failure lane. */
export interface LaneOutcome {
  outcome: 'succeeded' | 'failed' | 'skipped';
  inputTokens: number;
  outputTokens: number;
  /** The failure's code (failed). */
  code?: string;
}

/** The failure lane's part of a run: its settled records. */
export interface LaneTotals {
  succeeded: number;
  failed: number;
  skipped: number;
  inputTokens: number;
  outputTokens: number;
  modelCalls: ModelCalls;
}

/** The manifest without the failure lane's part, as Finalize computed it. */
export type ManifestBase = Omit<RunManifest, 'revision'>;

const RUN_ITEM = 'run';
const LANE_PREFIX = 'lane#';

/** The runs table of one stack. */
export class RunState {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    private readonly tableName: string,
    private readonly ttlDays: number,
  ) {}

  /** Records a record's final outcome in the failure lane (a later outcome replaces it: a redrive that succeeds). */
  async putLaneOutcome(runId: string, recordId: string, outcome: LaneOutcome): Promise<void> {
    await callDependency('runs table PutItem', () =>
      this.client.send(
        new PutCommand({
          TableName: this.tableName,
          Item: { runId, item: `${LANE_PREFIX}${recordId}`, ...outcome, expiresAt: this.expiresAt() },
        }),
      ),
    );
  }

  /** Adds the failure lane's model calls to the run (history, not outcomes: a crashed attempt's calls count too). */
  async addLaneModelCalls(runId: string, calls: ModelCalls): Promise<void> {
    if (calls.total === 0) return;
    await callDependency('runs table UpdateItem', () =>
      this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { runId, item: RUN_ITEM },
          UpdateExpression:
            'ADD laneCallsTotal :t, laneCallsThrottled :th, laneCallsRetried :r SET expiresAt = :exp',
          ExpressionAttributeValues: {
            ':t': calls.total,
            ':th': calls.throttled,
            ':r': calls.retried,
            ':exp': this.expiresAt(),
          },
        }),
      ),
    );
  }

  /** The failure lane's settled records of a run (strongly consistent). */
  async laneTotals(runId: string): Promise<LaneTotals> {
    const totals: LaneTotals = {
      succeeded: 0,
      failed: 0,
      skipped: 0,
      inputTokens: 0,
      outputTokens: 0,
      modelCalls: { total: 0, throttled: 0, retried: 0 },
    };
    let start: Record<string, unknown> | undefined;
    do {
      const out = await callDependency('runs table Query', () =>
        this.client.send(
          new QueryCommand({
            TableName: this.tableName,
            KeyConditionExpression: 'runId = :run AND begins_with(#item, :lane)',
            ExpressionAttributeNames: { '#item': 'item', '#outcome': 'outcome' },
            ExpressionAttributeValues: { ':run': runId, ':lane': LANE_PREFIX },
            ProjectionExpression: '#outcome, inputTokens, outputTokens',
            ConsistentRead: true,
            ExclusiveStartKey: start,
          }),
        ),
      );
      for (const item of out.Items ?? []) {
        const outcome = item.outcome as LaneOutcome['outcome'];
        if (outcome === 'succeeded' || outcome === 'failed' || outcome === 'skipped') totals[outcome]++;
        totals.inputTokens += Number(item.inputTokens ?? 0);
        totals.outputTokens += Number(item.outputTokens ?? 0);
      }
      start = out.LastEvaluatedKey;
    } while (start);
    const run = await this.getRun(runId);
    totals.modelCalls = run.laneCalls;
    return totals;
  }

  /**
   * Stores Finalize's part of the manifest and takes the next revision (1 the first time).
   * @returns the revision to write
   */
  async putBase(runId: string, base: ManifestBase): Promise<number> {
    const out = await callDependency('runs table UpdateItem', () =>
      this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { runId, item: RUN_ITEM },
          UpdateExpression:
            'SET #base = :base, #revision = if_not_exists(#revision, :zero) + :one, expiresAt = :exp',
          ExpressionAttributeNames: { '#base': 'base', '#revision': 'revision' },
          ExpressionAttributeValues: {
            ':base': JSON.stringify(base),
            ':zero': 0,
            ':one': 1,
            ':exp': this.expiresAt(),
          },
          ReturnValues: 'UPDATED_NEW',
        }),
      ),
    );
    return Number(out.Attributes?.revision ?? 1);
  }

  /**
   * Takes the next revision of a run whose manifest Finalize has written.
   * @returns the revision, or undefined when Finalize has not written the run's manifest yet (it will count what
   *   the lane settled)
   */
  async nextRevision(runId: string): Promise<number | undefined> {
    try {
      const out = await callDependency('runs table UpdateItem', () =>
        this.client.send(
          new UpdateCommand({
            TableName: this.tableName,
            Key: { runId, item: RUN_ITEM },
            UpdateExpression: 'ADD #revision :one',
            ConditionExpression: 'attribute_exists(#base)',
            ExpressionAttributeNames: { '#base': 'base', '#revision': 'revision' },
            ExpressionAttributeValues: { ':one': 1 },
            ReturnValues: 'UPDATED_NEW',
          }),
        ),
      );
      return Number(out.Attributes?.revision);
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return undefined;
      throw err;
    }
  }

  /** The run item: Finalize's part of the manifest (if written), the revision, the lane's model calls. */
  async getRun(runId: string): Promise<{
    base: ManifestBase | undefined;
    revision: number;
    laneCalls: ModelCalls;
    /** Finalize put the run's outcome event. */
    announced: boolean;
  }> {
    const out = await callDependency('runs table GetItem', () =>
      this.client.send(
        new GetCommand({ TableName: this.tableName, Key: { runId, item: RUN_ITEM }, ConsistentRead: true }),
      ),
    );
    const item = out.Item ?? {};
    return {
      base: typeof item.base === 'string' ? (JSON.parse(item.base) as ManifestBase) : undefined,
      revision: Number(item.revision ?? 0),
      announced: item.announced === true,
      laneCalls: {
        total: Number(item.laneCallsTotal ?? 0),
        throttled: Number(item.laneCallsThrottled ?? 0),
        retried: Number(item.laneCallsRetried ?? 0),
      },
    };
  }

  /** Notes that the run's outcome event (Completed / Failed) was put, so a repeated Finalize does not put another. */
  async markAnnounced(runId: string): Promise<void> {
    await callDependency('runs table UpdateItem', () =>
      this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { runId, item: RUN_ITEM },
          UpdateExpression: 'SET announced = :true',
          ExpressionAttributeValues: { ':true': true },
        }),
      ),
    );
  }

  private expiresAt(): number {
    return Math.floor(Date.now() / 1000) + this.ttlDays * 86_400;
  }
}

/** The manifest: Finalize's part with the failure lane's settled records folded in. */
export function composeManifest(base: ManifestBase, lane: LaneTotals, revision: number): RunManifest {
  const settled = lane.succeeded + lane.failed + lane.skipped;
  return {
    ...base,
    revision,
    counts: {
      ...base.counts,
      succeeded: base.counts.succeeded + lane.succeeded,
      failed: base.counts.failed + lane.failed,
      skipped: base.counts.skipped + lane.skipped,
      pending: Math.max(0, base.counts.pending - settled),
      recovered: lane.succeeded,
    },
    tokens: {
      input: base.tokens.input + lane.inputTokens,
      output: base.tokens.output + lane.outputTokens,
    },
    modelCalls: {
      total: base.modelCalls.total + lane.modelCalls.total,
      throttled: base.modelCalls.throttled + lane.modelCalls.throttled,
      retried: base.modelCalls.retried + lane.modelCalls.retried,
    },
  };
}

/**
 * Writes the run's manifest from the runs table at `revision`, then checks no newer revision was taken meanwhile:
 * if one was, it writes again from the newer state, so concurrent writers end with the newest manifest in S3.
 * @returns the manifest written last
 */
export async function writeManifest(
  runs: Pick<RunState, 'getRun' | 'laneTotals'>,
  s3: S3Client,
  bucket: string,
  runId: string,
  revision: number,
): Promise<RunManifest> {
  let current = revision;
  for (;;) {
    const run = await runs.getRun(runId);
    if (!run.base) throw new Error(`run ${runId} has no manifest base to write`);
    const manifest = composeManifest(run.base, await runs.laneTotals(runId), Math.max(current, run.revision));
    await putJson(s3, bucket, runKeys.manifest(runId), manifest);
    const after = await runs.getRun(runId);
    if (after.revision <= manifest.revision) return manifest;
    current = after.revision;
  }
}
