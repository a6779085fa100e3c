import 'aws-sdk-client-mock-jest';
import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { ConditionalCheckFailedException, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchGetCommand, DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { Ledger, ledgerKey, STALE_CLAIM_MS } from '../../../lambda/shared/ledger';
import { awsError } from './helpers';

const ddbMock = mockClient(DynamoDBDocumentClient);
const TABLE = 'ledger-table';
const NOW = 1_700_000_000_000;

function ledger(): Ledger {
  return new Ledger({
    client: DynamoDBDocumentClient.from(new DynamoDBClient({})),
    tableName: TABLE,
    ttlDays: 30,
    now: () => NOW,
  });
}

beforeEach(() => {
  ddbMock.reset();
  jest.spyOn(Math, 'random').mockReturnValue(0);
});

afterEach(() => {
  jest.restoreAllMocks();
});

describe('Ledger.claim', () => {
  it('claims with a conditional update: new, same run, or a stale claim of another run', async () => {
    ddbMock.on(UpdateCommand).resolves({});
    expect(await ledger().claim('scope', 'r1', 'run-1')).toBe('claimed');
    expect(ddbMock).toHaveReceivedCommandWith(UpdateCommand, {
      TableName: TABLE,
      Key: { pk: 'scope#r1' },
      UpdateExpression:
        'SET #scope = :scope, recordId = :rid, runId = :run, claimedAt = :now, expiresAt = :exp, #s = if_not_exists(#s, :claimed)',
      ConditionExpression:
        'attribute_not_exists(pk) OR runId = :run OR (#s = :claimed AND claimedAt < :stale)',
      ExpressionAttributeNames: { '#s': 'status', '#scope': 'scope' },
      ExpressionAttributeValues: {
        ':scope': 'scope',
        ':rid': 'r1',
        ':run': 'run-1',
        ':now': NOW,
        ':exp': Math.floor(NOW / 1000) + 30 * 86_400,
        ':claimed': 'claimed',
        ':stale': NOW - STALE_CLAIM_MS,
      },
    });
  });

  it('keeps the content hash with the claim when given', async () => {
    ddbMock.on(UpdateCommand).resolves({});
    await ledger().claim('scope', 'r1', 'run-1', 'abc123');
    const input = ddbMock.commandCalls(UpdateCommand)[0]?.args[0].input;
    expect(input?.UpdateExpression).toMatch(/, contentHash = :hash$/);
    expect(input?.ExpressionAttributeValues?.[':hash']).toBe('abc123');
  });

  it('says held when the condition fails (another run holds or published it)', async () => {
    ddbMock
      .on(UpdateCommand)
      .rejects(
        new ConditionalCheckFailedException({ message: 'The conditional request failed', $metadata: {} }),
      );
    expect(await ledger().claim('scope', 'r1', 'run-2')).toBe('held');
  });

  it('maps a throttled claim to TransientDependencyError and rethrows other errors', async () => {
    ddbMock
      .on(UpdateCommand)
      .rejectsOnce(awsError('ProvisionedThroughputExceededException', 400))
      .rejectsOnce(awsError('ValidationException', 400));
    await expect(ledger().claim('scope', 'r1', 'run-1')).rejects.toMatchObject({
      name: 'TransientDependencyError',
    });
    await expect(ledger().claim('scope', 'r1', 'run-1')).rejects.toMatchObject({
      name: 'ValidationException',
    });
  });
});

describe('Ledger.markPublished', () => {
  it('sets the status only where this run holds the claim', async () => {
    ddbMock.on(UpdateCommand).resolves({});
    await ledger().markPublished('scope', 'r1', 'run-1');
    expect(ddbMock).toHaveReceivedCommandWith(UpdateCommand, {
      TableName: TABLE,
      Key: { pk: 'scope#r1' },
      UpdateExpression: 'SET #s = :published, publishedAt = :now',
      ConditionExpression: 'runId = :run',
      ExpressionAttributeNames: { '#s': 'status' },
      ExpressionAttributeValues: { ':published': 'published', ':now': NOW, ':run': 'run-1' },
    });
  });
});

describe('Ledger.findPublished', () => {
  it('returns the ids whose item says published, not the ones only claimed', async () => {
    ddbMock.on(BatchGetCommand).resolves({
      Responses: {
        [TABLE]: [
          { recordId: 'a', status: 'published' },
          { recordId: 'b', status: 'claimed' },
        ],
      },
    });
    const published = await ledger().findPublished('scope', ['a', 'b', 'c']);
    expect([...published]).toEqual(['a']);
    expect(ddbMock).toHaveReceivedCommandWith(BatchGetCommand, {
      RequestItems: {
        [TABLE]: {
          Keys: [{ pk: 'scope#a' }, { pk: 'scope#b' }, { pk: 'scope#c' }],
          ProjectionExpression: 'recordId, runId, contentHash, #s',
          ExpressionAttributeNames: { '#s': 'status' },
        },
      },
    });
  });

  it('retries unprocessed keys until none are left', async () => {
    ddbMock
      .on(BatchGetCommand)
      .resolvesOnce({
        Responses: { [TABLE]: [] },
        UnprocessedKeys: { [TABLE]: { Keys: [{ pk: 'scope#a' }] } },
      })
      .resolvesOnce({
        Responses: { [TABLE]: [{ recordId: 'a', status: 'published' }] },
        UnprocessedKeys: {},
      });
    expect([...(await ledger().findPublished('scope', ['a', 'b']))]).toEqual(['a']);
    expect(ddbMock).toHaveReceivedNthCommandWith(2, BatchGetCommand, {
      RequestItems: { [TABLE]: expect.objectContaining({ Keys: [{ pk: 'scope#a' }] }) },
    });
  });

  it('gives up with TransientDependencyError when keys stay unprocessed', async () => {
    ddbMock.on(BatchGetCommand).resolves({ UnprocessedKeys: { [TABLE]: { Keys: [{ pk: 'scope#a' }] } } });
    await expect(ledger().findPublished('scope', ['a'])).rejects.toMatchObject({
      name: 'TransientDependencyError',
      message: 'ledger lookup left 1 keys unprocessed',
    });
    expect(ddbMock).toHaveReceivedCommandTimes(BatchGetCommand, 9);
  });

  it('refuses more than 100 keys (BatchGetItem limit)', async () => {
    await expect(
      ledger().findPublished(
        'scope',
        Array.from({ length: 101 }, (_, i) => `r${i}`),
      ),
    ).rejects.toThrow(RangeError);
    expect(ddbMock).not.toHaveReceivedAnyCommand();
  });

  it('keys records by scope and recordId', () => {
    expect(ledgerKey('dev/model', 'r#1')).toBe('dev/model#r#1');
  });
});
