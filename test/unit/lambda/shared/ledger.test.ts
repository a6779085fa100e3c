import 'aws-sdk-client-mock-jest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { ConditionalCheckFailedException, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchGetCommand, DynamoDBDocumentClient, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import {
  DEFAULT_LEASE_MS,
  isLaneOwner,
  Ledger,
  ledgerKey,
  unitOwner,
  type Claimant,
  type ClaimOutcome,
  type LedgerStatus,
  type TransitionOutcome,
} from '../../../../lambda/shared/ledger';
import {
  freshLedger,
  startLedgerServer,
  stopLedgerServer,
  type LedgerServer,
} from '../failure-lane/lane-fixtures';
import { awsError } from '../helpers';

// The ledger's conditional writes are the protocol, so they run against a real table on dynalite; only what dynalite
// cannot produce (unprocessed keys, throttling) is mocked.

const SCOPE = 'dev/anthropic.claude-3-haiku';
const LEASE = 60_000;
const T0 = 1_700_000_000_000;

let server: LedgerServer;
let tables = 0;
let table: string;
let ledger: Ledger;
/** The ledger's clock (epoch ms): tests move it to run a lease out. */
let clock: number;

beforeAll(async () => {
  server = await startLedgerServer();
});

afterAll(async () => {
  await stopLedgerServer(server);
});

beforeEach(async () => {
  clock = T0;
  ({ table } = await freshLedger(server, `ledger-${++tables}`));
  ledger = new Ledger({ client: server.doc, tableName: table, ttlDays: 30, now: () => clock });
});

/** A claimant: attempt `attempt` of the batch unit `batch` of run `run`. */
function who(batch: string, attempt: string, run = 'run-1'): Claimant {
  return { runId: run, owner: unitOwner(run, 'batch', batch), attempt };
}

function claim(
  recordId: string,
  claimant: Claimant,
  options: { contentHash?: string; reclaimOwn?: 'queued' | 'queued-or-failed' } = {},
) {
  return ledger.claim(SCOPE, recordId, claimant, { leaseMs: LEASE, ...options });
}

const REASON = { code: 'ThrottlingException', message: 'throttled' };

/** A transition of record r1 by a claimant. */
type Move = (c: Claimant) => Promise<TransitionOutcome>;

describe('ledgerKey', () => {
  it('percent-encodes the scope, so the first # separates it from the recordId', () => {
    expect(ledgerKey('dev/model', 'r1')).toBe('dev%2Fmodel#r1');
    expect(ledgerKey('a#b', 'c')).toBe('a%23b#c');
    expect(ledgerKey('a', 'b#c')).toBe('a#b#c');
  });

  it('gives no two (scope, recordId) pairs the same key, whatever # or % they hold', () => {
    const parts = ['', 'a', 'a#', '#a', 'a#b', 'a%23b', '%', '#', '##', 'a/b', 'b#c', 'a#b#c'];
    const keys = new Map<string, [string, string]>();
    for (const scope of parts.filter((p) => p !== '')) {
      for (const recordId of parts) {
        const key = ledgerKey(scope, recordId);
        const clash = keys.get(key);
        expect(clash === undefined ? undefined : { key, clash }).toBeUndefined();
        keys.set(key, [scope, recordId]);
        // The pair can be read back from the key.
        const cut = key.indexOf('#');
        expect([decodeURIComponent(key.slice(0, cut)), key.slice(cut + 1)]).toEqual([scope, recordId]);
      }
    }
    expect(keys.size).toBe(11 * 12);
  });

  it('keeps records whose scope and recordId split a # differently apart in the table', async () => {
    const a = who('b1', 'x1');
    const b = who('b2', 'y1');
    expect(await ledger.claim('s#1', 'r', a, { leaseMs: LEASE })).toEqual({ kind: 'claimed' });
    // Unencoded, both would be "s#1#r".
    expect(await ledger.claim('s', '1#r', b, { leaseMs: LEASE })).toEqual({ kind: 'claimed' });
    expect(await ledger.commit('s#1', 'r', a, 'k-a')).toEqual({ kind: 'done' });
    expect(await ledger.commit('s', '1#r', b, 'k-b')).toEqual({ kind: 'done' });
    expect(await ledger.get('s#1', 'r')).toMatchObject({ recordId: 'r', owner: a.owner, resultKey: 'k-a' });
    expect(await ledger.get('s', '1#r')).toMatchObject({ recordId: '1#r', owner: b.owner, resultKey: 'k-b' });
  });
});

describe('unit owners', () => {
  it('names a unit by run, kind and id, and tells the failure lane of a run apart', () => {
    expect(unitOwner('run-1', 'batch', 'abc')).toBe('run-1/batch/abc');
    expect(isLaneOwner(unitOwner('run-1', 'lane', 'r1'), 'run-1')).toBe(true);
    expect(isLaneOwner(unitOwner('run-1', 'batch', 'r1'), 'run-1')).toBe(false);
    expect(isLaneOwner(unitOwner('run-2', 'lane', 'r1'), 'run-1')).toBe(false);
  });
});

describe('Ledger.claim', () => {
  it('claims a new record for the attempt, with its lease, content hash and expiry', async () => {
    const a = who('b1', 'a1');
    expect(await claim('r1', a, { contentHash: 'h1' })).toEqual({ kind: 'claimed' });
    expect(await ledger.get(SCOPE, 'r1')).toEqual({
      recordId: 'r1',
      status: 'claimed',
      runId: 'run-1',
      owner: 'run-1/batch/b1',
      attempt: 'a1',
      contentHash: 'h1',
      leaseUntil: T0 + LEASE,
    });
    const raw = await server.doc.send(
      new GetCommand({ TableName: table, Key: { pk: ledgerKey(SCOPE, 'r1') } }),
    );
    expect(raw.Item).toMatchObject({
      scope: SCOPE,
      updatedAt: T0,
      expiresAt: Math.floor(T0 / 1000) + 30 * 86_400,
    });
  });

  it('lets a later attempt of the same unit take its claim back: the earlier attempt then loses its commit', async () => {
    const first = who('b1', 'a1');
    const second = who('b1', 'a2');
    await claim('r1', first);
    clock += 1_000; // well inside the lease: the same unit does not wait for it
    const again = await claim('r1', second);
    expect(again).toEqual({
      kind: 'claimed',
      previous: expect.objectContaining({ status: 'claimed', owner: first.owner, attempt: 'a1' }),
    });
    const lost = await ledger.commit(SCOPE, 'r1', first, 'results/old.jsonl');
    expect(lost).toEqual({
      kind: 'lost',
      entry: expect.objectContaining({ status: 'claimed', attempt: 'a2' }),
    });
    expect(await ledger.commit(SCOPE, 'r1', second, 'results/new.jsonl')).toEqual({ kind: 'done' });
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({
      status: 'published',
      attempt: 'a2',
      resultKey: 'results/new.jsonl',
    });
  });

  it('holds another owner off while the lease runs, and lets it take over after', async () => {
    const holder = who('b1', 'a1');
    const other = who('b2', 'z1', 'run-2');
    await claim('r1', holder);

    clock = T0 + LEASE - 1;
    expect(await claim('r1', other)).toEqual({
      kind: 'held',
      entry: expect.objectContaining({ status: 'claimed', owner: holder.owner, attempt: 'a1' }),
    });
    clock = T0 + LEASE; // the lease ends after leaseUntil, not at it
    expect((await claim('r1', other)).kind).toBe('held');
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ owner: holder.owner, leaseUntil: T0 + LEASE });

    clock = T0 + LEASE + 1;
    expect(await claim('r1', other)).toEqual({
      kind: 'claimed',
      previous: expect.objectContaining({ owner: holder.owner, attempt: 'a1' }),
    });
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({
      runId: 'run-2',
      owner: other.owner,
      leaseUntil: clock + LEASE,
    });
    // The slow holder wakes up: its commit does not take.
    expect((await ledger.commit(SCOPE, 'r1', holder, 'k')).kind).toBe('lost');
    expect(await ledger.commit(SCOPE, 'r1', other, 'k2')).toEqual({ kind: 'done' });
  });

  it.each([
    ['published', (c: Claimant) => ledger.commit(SCOPE, 'r1', c, 'results/b1.jsonl')],
    ['failed', (c: Claimant) => ledger.fail(SCOPE, 'r1', c, { code: 'ValidationException', message: 'bad' })],
    ['queued', (c: Claimant) => ledger.queue(SCOPE, 'r1', c, REASON)],
  ] as [LedgerStatus, Move][])(
    'answers mine to a later attempt of the unit that %s the record',
    async (status, decide) => {
      const first = who('b1', 'a1');
      await claim('r1', first, { contentHash: 'h1' });
      expect(await decide(first)).toEqual({ kind: 'done' });
      const outcome = await claim('r1', who('b1', 'a2'), { contentHash: 'h1' });
      expect(outcome).toEqual({
        kind: 'mine',
        entry: expect.objectContaining({ status, owner: first.owner, attempt: 'a1' }),
      });
      // The decision stands: the ledger still holds the first attempt's.
      expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ status, attempt: 'a1' });
    },
  );

  it.each(['queued', 'failed'] as const)(
    'lets another owner claim a %s record, and the same owner only with reclaimOwn',
    async (status) => {
      const batch = who('b1', 'a1');
      await claim('r1', batch);
      await (status === 'queued'
        ? ledger.queue(SCOPE, 'r1', batch, REASON)
        : ledger.fail(SCOPE, 'r1', batch, REASON));

      // The failure lane (another owner) takes it over.
      const lane: Claimant = { runId: 'run-1', owner: unitOwner('run-1', 'lane', 'r1'), attempt: 'l1' };
      expect(await claim('r1', lane, { reclaimOwn: 'queued-or-failed' })).toEqual({
        kind: 'claimed',
        previous: expect.objectContaining({ status, owner: batch.owner, error: REASON }),
      });
      // Its claim has no stale error or result left on it.
      const claimed = await ledger.get(SCOPE, 'r1');
      expect(claimed).toMatchObject({ status: 'claimed', owner: lane.owner });
      expect(claimed?.error).toBeUndefined();

      // The lane gives it up again; the lane's next try needs reclaimOwn to take its own record back.
      await (status === 'queued'
        ? ledger.queue(SCOPE, 'r1', lane, REASON)
        : ledger.fail(SCOPE, 'r1', lane, REASON));
      const nextTry = { ...lane, attempt: 'l2' };
      expect((await claim('r1', nextTry)).kind).toBe('mine');
      expect(await claim('r1', nextTry, { reclaimOwn: 'queued-or-failed' })).toMatchObject({
        kind: 'claimed',
      });

      // A later run retries it too.
      await ledger.queue(SCOPE, 'r1', nextTry, REASON);
      expect((await claim('r1', who('b9', 'c1', 'run-2'))).kind).toBe('claimed');
    },
  );

  it.each(['queued', 'failed'] as const)(
    "keeps a record the run's own failure lane %s from the run's other units; a later run may take it",
    async (status) => {
      const lane: Claimant = { runId: 'run-1', owner: unitOwner('run-1', 'lane', 'r1'), attempt: 'l1' };
      await claim('r1', lane);
      await (status === 'queued'
        ? ledger.queue(SCOPE, 'r1', lane, REASON)
        : ledger.fail(SCOPE, 'r1', lane, REASON));
      // A batch of the same run (a retry after the hand-over) must not reopen what the lane settles.
      expect(await claim('r1', who('b1', 'a2'))).toMatchObject({
        kind: 'held',
        entry: expect.objectContaining({ status, owner: lane.owner }),
      });
      expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ status, owner: lane.owner });
      expect((await claim('r1', who('b9', 'c1', 'run-2'))).kind).toBe('claimed');
    },
  );

  it('does not let reclaimOwn take back a published record or a live claim of another owner', async () => {
    const lane: Claimant = { runId: 'run-1', owner: unitOwner('run-1', 'lane', 'r1'), attempt: 'l1' };
    await claim('r1', lane);
    await ledger.commit(SCOPE, 'r1', lane, 'k');
    expect((await claim('r1', { ...lane, attempt: 'l2' }, { reclaimOwn: 'queued-or-failed' })).kind).toBe(
      'mine',
    );

    await claim('r2', who('b1', 'a1'));
    expect((await claim('r2', lane, { reclaimOwn: 'queued-or-failed' })).kind).toBe('held');
  });

  it('tells a record published for the same request from a recordId reused for another one', async () => {
    const publisher = who('b1', 'a1');
    await claim('r1', publisher, { contentHash: 'h1' });
    await ledger.commit(SCOPE, 'r1', publisher, 'k');
    await claim('r2', publisher);
    await ledger.commit(SCOPE, 'r2', publisher, 'k');

    const later = who('b7', 'c1', 'run-2');
    expect(await claim('r1', later, { contentHash: 'h1' })).toEqual({
      kind: 'published',
      entry: expect.objectContaining({ status: 'published', runId: 'run-1', contentHash: 'h1' }),
    });
    expect(await claim('r1', later, { contentHash: 'h2' })).toEqual({
      kind: 'reused',
      entry: expect.objectContaining({ status: 'published', runId: 'run-1', contentHash: 'h1' }),
    });
    // Without a hash on either side there is nothing to compare: published.
    expect((await claim('r1', later)).kind).toBe('published');
    expect((await claim('r2', later, { contentHash: 'h2' })).kind).toBe('published');
    // Refused claims leave the entry as it was.
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ owner: publisher.owner, contentHash: 'h1' });
  });
});

describe('Ledger transitions', () => {
  it.each([
    ['commit', (c: Claimant) => ledger.commit(SCOPE, 'r1', c, 'k'), 'published'],
    ['fail', (c: Claimant) => ledger.fail(SCOPE, 'r1', c, REASON), 'failed'],
    ['queue', (c: Claimant) => ledger.queue(SCOPE, 'r1', c, REASON), 'queued'],
  ] as [string, Move, LedgerStatus][])(
    '%s takes only for the attempt holding the claim',
    async (_name, move, status) => {
      const holder = who('b1', 'a1');
      // Not claimed by anyone yet: nothing moves, and no item appears.
      expect(await move(holder)).toEqual({ kind: 'lost', entry: undefined });
      expect(await ledger.get(SCOPE, 'r1')).toBeUndefined();
      await claim('r1', holder);

      expect(await move(who('b1', 'a0'))).toEqual({
        kind: 'lost',
        entry: expect.objectContaining({ status: 'claimed', attempt: 'a1' }),
      });
      expect((await move(who('b2', 'a1'))).kind).toBe('lost');
      expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ status: 'claimed', attempt: 'a1' });

      expect(await move(holder)).toEqual({ kind: 'done' });
      const entry = await ledger.get(SCOPE, 'r1');
      expect(entry).toMatchObject({ status, owner: holder.owner, attempt: 'a1' });
      expect(entry?.leaseUntil).toBeUndefined();
    },
  );

  it('records the result key of a commit and the reason of a failure or hand-over', async () => {
    const c = who('b1', 'a1');
    await claim('r1', c);
    await claim('r2', c);
    await claim('r3', c);
    await ledger.commit(SCOPE, 'r1', c, 'runs/run-1/results/b1.jsonl');
    await ledger.fail(SCOPE, 'r2', c, { code: 'ValidationException', message: 'x'.repeat(5_000) });
    await ledger.queue(SCOPE, 'r3', c, REASON);
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ resultKey: 'runs/run-1/results/b1.jsonl' });
    const failed = await ledger.get(SCOPE, 'r2');
    expect(failed?.error?.code).toBe('ValidationException');
    // Long reasons are cut to fit the item.
    expect(failed?.error?.message.length).toBeLessThanOrEqual(1_000);
    expect(failed?.error?.message.endsWith('…')).toBe(true);
    expect(await ledger.get(SCOPE, 'r3')).toMatchObject({ status: 'queued', error: REASON });
  });

  it('counts a repeated transition that already took effect as done (a retried request)', async () => {
    const c = who('b1', 'a1');
    await claim('r1', c);
    await claim('r2', c);
    expect(await ledger.commit(SCOPE, 'r1', c, 'k')).toEqual({ kind: 'done' });
    expect(await ledger.commit(SCOPE, 'r1', c, 'k')).toEqual({ kind: 'done' });
    expect(await ledger.queue(SCOPE, 'r2', c, REASON)).toEqual({ kind: 'done' });
    expect(await ledger.queue(SCOPE, 'r2', c, REASON)).toEqual({ kind: 'done' });
    // A different transition of the same attempt after the first one took is not the same request.
    expect(await ledger.fail(SCOPE, 'r1', c, REASON)).toEqual({
      kind: 'lost',
      entry: expect.objectContaining({ status: 'published' }),
    });
    expect(await ledger.commit(SCOPE, 'r2', c, 'k')).toMatchObject({ kind: 'lost' });
    // Another attempt of the same unit repeating the commit did not make it.
    expect((await ledger.commit(SCOPE, 'r1', who('b1', 'a2'), 'k')).kind).toBe('lost');
  });

  it('counts a commit whose response was lost and that the SDK resent as done', async () => {
    // The first UpdateItem takes effect but its response is lost; the retry then fails the condition.
    const c = who('b1', 'a1');
    await claim('r1', c);
    const flaky = DynamoDBDocumentClient.from(server.raw);
    let resent = false;
    const resending = {
      send: async (command: unknown) => {
        const out = await flaky.send(command as UpdateCommand);
        if (command instanceof UpdateCommand && !resent) {
          resent = true;
          return flaky.send(command);
        }
        return out;
      },
    } as unknown as DynamoDBDocumentClient;
    const retrying = new Ledger({ client: resending, tableName: table, ttlDays: 30, now: () => clock });
    expect(await retrying.commit(SCOPE, 'r1', c, 'k')).toEqual({ kind: 'done' });
    expect(resent).toBe(true);
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ status: 'published', attempt: 'a1' });
  });

  it("failQueued turns only this attempt's queued record into a failure", async () => {
    const c = who('b1', 'a1');
    const refusal = { code: 'FailureLaneRefused', message: 'the failure queue refused the message' };
    await claim('r1', c);
    // Still claimed: failQueued is not a way around fail.
    expect((await ledger.failQueued(SCOPE, 'r1', c, refusal)).kind).toBe('lost');
    await ledger.queue(SCOPE, 'r1', c, REASON);
    expect((await ledger.failQueued(SCOPE, 'r1', who('b1', 'a2'), refusal)).kind).toBe('lost');
    expect((await ledger.failQueued(SCOPE, 'r1', who('b2', 'a1'), refusal)).kind).toBe('lost');
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ status: 'queued', error: REASON });

    expect(await ledger.failQueued(SCOPE, 'r1', c, refusal)).toEqual({ kind: 'done' });
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ status: 'failed', attempt: 'a1', error: refusal });

    // Once the lane has taken the record over, the batch cannot fail it any more.
    await claim('r2', c);
    await ledger.queue(SCOPE, 'r2', c, REASON);
    const lane: Claimant = { runId: 'run-1', owner: unitOwner('run-1', 'lane', 'r2'), attempt: 'l1' };
    await claim('r2', lane, { reclaimOwn: 'queued-or-failed' });
    expect((await ledger.failQueued(SCOPE, 'r2', c, refusal)).kind).toBe('lost');
    expect(await ledger.get(SCOPE, 'r2')).toMatchObject({ status: 'claimed', owner: lane.owner });
  });

  it("markDelivered marks only the owner's published record, and is quiet otherwise", async () => {
    const c = who('b1', 'a1');
    await claim('r1', c);
    await ledger.markDelivered(SCOPE, 'r1', c.owner); // claimed, not published
    expect((await ledger.get(SCOPE, 'r1'))?.delivered).toBeUndefined();

    await ledger.commit(SCOPE, 'r1', c, 'k');
    await ledger.markDelivered(SCOPE, 'r1', 'run-2/batch/b1'); // not the owner
    expect((await ledger.get(SCOPE, 'r1'))?.delivered).toBeUndefined();
    await ledger.markDelivered(SCOPE, 'r404', c.owner); // no such record
    expect(await ledger.get(SCOPE, 'r404')).toBeUndefined();

    // Any attempt of the owner may mark it (the one that sent may have died).
    await ledger.markDelivered(SCOPE, 'r1', c.owner);
    expect(await ledger.get(SCOPE, 'r1')).toMatchObject({ status: 'published', delivered: true });

    // A new claim (a later run taking over after expiry is the same write) clears the mark.
    await claim('r3', c);
    await ledger.queue(SCOPE, 'r3', c, REASON);
    await ledger.markDelivered(SCOPE, 'r3', c.owner);
    expect((await ledger.get(SCOPE, 'r3'))?.delivered).toBeUndefined();
  });
});

describe('20 claimants racing for one record', () => {
  it('exactly one commit takes, whatever the mix of owners and attempts', async () => {
    for (let round = 0; round < 5; round++) {
      const recordId = `race-${round}`;
      const claimants: Claimant[] = [
        ...Array.from({ length: 10 }, (_, i) => who(`other-${i}`, `o${i}`, `run-${i}`)),
        ...Array.from({ length: 10 }, (_, i) => who('same', `s${i}`)),
      ].sort(() => Math.random() - 0.5);
      const claims: ClaimOutcome[] = [];
      const commits: { claimant: Claimant; outcome: TransitionOutcome }[] = [];
      await Promise.all(
        claimants.map(async (c) => {
          await new Promise((r) => setTimeout(r, Math.random() * 5));
          const outcome = await claim(recordId, c, { contentHash: 'h' });
          claims.push(outcome);
          if (outcome.kind !== 'claimed') return;
          await new Promise((r) => setTimeout(r, Math.random() * 5));
          commits.push({ claimant: c, outcome: await ledger.commit(SCOPE, recordId, c, `k-${c.attempt}`) });
        }),
      );
      const done = commits.filter((c) => c.outcome.kind === 'done');
      expect(done).toHaveLength(1);
      const winner = done[0]!.claimant;
      expect(await ledger.get(SCOPE, recordId)).toMatchObject({
        status: 'published',
        owner: winner.owner,
        attempt: winner.attempt,
        resultKey: `k-${winner.attempt}`,
      });
      // Nobody else's commit took, and every claim was answered.
      expect(commits.filter((c) => c.outcome.kind === 'lost')).toHaveLength(commits.length - 1);
      expect(claims).toHaveLength(20);
      // Another owner never took a live claim over.
      const otherOwners = new Set(
        claimants.filter((c) => c.owner !== who('same', '').owner).map((c) => c.owner),
      );
      const claimedByOthers = commits.filter((c) => otherOwners.has(c.claimant.owner));
      expect(claimedByOthers.length).toBeLessThanOrEqual(1);
    }
  });
});

/** A DynamoDB client on the dynalite server that records each request's operation and JSON body. */
function recordingClient(): {
  doc: DynamoDBDocumentClient;
  requests: { op: string; body: Record<string, unknown> }[];
} {
  const raw = new DynamoDBClient({
    endpoint: server.dynamodb.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  const requests: { op: string; body: Record<string, unknown> }[] = [];
  raw.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { headers: Record<string, string>; body?: string | Uint8Array };
      const body = typeof request.body === 'string' ? request.body : new TextDecoder().decode(request.body);
      requests.push({
        op: (request.headers['x-amz-target'] ?? '').split('.').pop() ?? '',
        body: JSON.parse(body || '{}') as Record<string, unknown>,
      });
      return next(args);
    },
    { step: 'finalizeRequest', name: 'recordRequests' },
  );
  return { doc: DynamoDBDocumentClient.from(raw), requests };
}

describe('Ledger reads', () => {
  it('getMany and lookupPublished read strongly consistent and see a commit at once', async () => {
    const { doc, requests } = recordingClient();
    const reader = new Ledger({ client: doc, tableName: table, ttlDays: 30 });
    const c = who('b1', 'a1');
    for (const id of ['p1', 'p2', 'c1', 'q1']) await claim(id, c, { contentHash: `h-${id}` });
    await ledger.commit(SCOPE, 'p1', c, 'k');
    await ledger.commit(SCOPE, 'p2', who('b2', 'x'), 'k'); // lost: p2 stays claimed
    await ledger.queue(SCOPE, 'q1', c, REASON);

    const entries = await reader.getMany(SCOPE, ['p1', 'p2', 'c1', 'q1', 'missing', 'p1']);
    expect([...entries.keys()].sort()).toEqual(['c1', 'p1', 'p2', 'q1']);
    expect(entries.get('p1')).toMatchObject({ status: 'published', contentHash: 'h-p1', resultKey: 'k' });
    expect(entries.get('q1')).toMatchObject({ status: 'queued', error: REASON });
    expect(await reader.lookupPublished(SCOPE, ['p1', 'p2', 'c1', 'q1', 'missing'])).toEqual(
      new Map([['p1', { runId: 'run-1', contentHash: 'h-p1' }]]),
    );
    // A record published a moment ago is seen by the next read.
    await ledger.commit(SCOPE, 'c1', c, 'k');
    expect([...(await reader.lookupPublished(SCOPE, ['p1', 'c1', 'q1'])).keys()].sort()).toEqual([
      'c1',
      'p1',
    ]);
    expect(await reader.get(SCOPE, 'c1')).toMatchObject({ status: 'published' });

    const batchGets = requests.filter((r) => r.op === 'BatchGetItem');
    expect(batchGets).toHaveLength(3);
    for (const { body } of batchGets) {
      expect((body.RequestItems as Record<string, { ConsistentRead?: boolean }>)[table]?.ConsistentRead).toBe(
        true,
      );
    }
    // Duplicate ids are asked for once.
    const keys = (batchGets[0]!.body.RequestItems as Record<string, { Keys: unknown[] }>)[table]?.Keys;
    expect(keys).toHaveLength(5);
    const gets = requests.filter((r) => r.op === 'GetItem');
    expect(gets.map((g) => g.body.ConsistentRead)).toEqual([true]);
  });

  it('refuses more than 100 ids without asking DynamoDB', async () => {
    const { doc, requests } = recordingClient();
    const reader = new Ledger({ client: doc, tableName: table, ttlDays: 30 });
    const ids = Array.from({ length: 101 }, (_, i) => `r${i}`);
    await expect(reader.getMany(SCOPE, ids)).rejects.toThrow(RangeError);
    await expect(reader.lookupPublished(SCOPE, ids)).rejects.toThrow(RangeError);
    expect(requests).toEqual([]);
    // 100 is fine.
    expect((await reader.getMany(SCOPE, ids.slice(0, 100))).size).toBe(0);
  });
});

describe('Ledger against a failing DynamoDB (mocked)', () => {
  const doc = DynamoDBDocumentClient.from(new DynamoDBClient({ region: 'us-east-1' }));
  const ddbMock = mockClient(doc);
  const mocked = () => new Ledger({ client: doc, tableName: 'ledger-table', ttlDays: 30, now: () => T0 });

  beforeEach(() => {
    ddbMock.reset();
    jest.spyOn(Math, 'random').mockReturnValue(0);
  });

  afterEach(() => {
    jest.restoreAllMocks();
  });

  afterAll(() => {
    ddbMock.restore();
  });

  it('asks again for the keys BatchGetItem left unprocessed', async () => {
    ddbMock
      .on(BatchGetCommand)
      .resolvesOnce({
        Responses: {
          'ledger-table': [{ recordId: 'b', status: 'published', runId: 'run-1', owner: 'o', attempt: 'x' }],
        },
        UnprocessedKeys: { 'ledger-table': { Keys: [{ pk: ledgerKey(SCOPE, 'a') }] } },
      })
      .resolvesOnce({
        Responses: {
          'ledger-table': [{ recordId: 'a', status: 'queued', runId: 'run-1', owner: 'o', attempt: 'x' }],
        },
      });
    const entries = await mocked().getMany(SCOPE, ['a', 'b']);
    expect(new Map([...entries].map(([id, e]) => [id, e.status]))).toEqual(
      new Map([
        ['b', 'published'],
        ['a', 'queued'],
      ]),
    );
    expect(ddbMock).toHaveReceivedCommandTimes(BatchGetCommand, 2);
    expect(ddbMock).toHaveReceivedNthCommandWith(2, BatchGetCommand, {
      RequestItems: { 'ledger-table': { Keys: [{ pk: ledgerKey(SCOPE, 'a') }], ConsistentRead: true } },
    });
  });

  it('gives up with TransientDependencyError when keys stay unprocessed', async () => {
    ddbMock
      .on(BatchGetCommand)
      .resolves({ UnprocessedKeys: { 'ledger-table': { Keys: [{ pk: ledgerKey(SCOPE, 'a') }] } } });
    await expect(mocked().lookupPublished(SCOPE, ['a'])).rejects.toMatchObject({
      name: 'TransientDependencyError',
      message: 'ledger lookup left 1 keys unprocessed',
    });
    expect(ddbMock.commandCalls(BatchGetCommand).length).toBeGreaterThan(1);
  });

  it.each([
    ['claim', (l: Ledger) => l.claim(SCOPE, 'r1', who('b1', 'a1'), { leaseMs: LEASE })],
    ['commit', (l: Ledger) => l.commit(SCOPE, 'r1', who('b1', 'a1'), 'k')],
    ['queue', (l: Ledger) => l.queue(SCOPE, 'r1', who('b1', 'a1'), REASON)],
    ['markDelivered', (l: Ledger) => l.markDelivered(SCOPE, 'r1', 'o')],
    ['get', (l: Ledger) => l.get(SCOPE, 'r1')],
    ['getMany', (l: Ledger) => l.getMany(SCOPE, ['r1'])],
  ] as [string, (l: Ledger) => Promise<unknown>][])(
    'maps a throttled %s to TransientDependencyError',
    async (_name, call) => {
      const throttled = awsError('ProvisionedThroughputExceededException', 400, 'slow down');
      ddbMock
        .on(UpdateCommand)
        .rejects(throttled)
        .on(GetCommand)
        .rejects(throttled)
        .on(BatchGetCommand)
        .rejects(throttled);
      await expect(call(mocked())).rejects.toMatchObject({
        name: 'TransientDependencyError',
        message: expect.stringContaining('slow down'),
      });
    },
  );

  it('rethrows an error that is not transient as it is', async () => {
    ddbMock.on(UpdateCommand).rejects(awsError('ValidationException', 400, 'bad expression'));
    await expect(mocked().claim(SCOPE, 'r1', who('b1', 'a1'), { leaseMs: LEASE })).rejects.toMatchObject({
      name: 'ValidationException',
    });
  });

  it('classifies a refused claim by what the ledger holds (the condition failure carries it in wire form)', async () => {
    const held = {
      recordId: 'r1',
      status: 'claimed',
      runId: 'run-2',
      owner: 'run-2/batch/x',
      attempt: 'z',
      leaseUntil: T0 + 5,
    };
    ddbMock.on(UpdateCommand).rejects(
      new ConditionalCheckFailedException({
        message: 'The conditional request failed',
        $metadata: {},
        // ReturnValuesOnConditionCheckFailure: the low-level client hands the old item over as AttributeValues.
        Item: {
          recordId: { S: 'r1' },
          status: { S: 'claimed' },
          runId: { S: 'run-2' },
          owner: { S: 'run-2/batch/x' },
          attempt: { S: 'z' },
          leaseUntil: { N: String(T0 + 5) },
        },
      }),
    );
    ddbMock.on(GetCommand).resolves({ Item: held });
    const outcome = await mocked().claim(SCOPE, 'r1', who('b1', 'a1'), { leaseMs: LEASE });
    expect(outcome).toEqual({ kind: 'held', entry: held });
  });

  it('uses the default lease of 20 minutes, beyond any Lambda invocation', () => {
    expect(DEFAULT_LEASE_MS).toBeGreaterThan(15 * 60 * 1000);
  });
});
