/**
 * The jobs table the batch mode suites run against: the local runtime's dynalite (a real DynamoDB emulator, in memory, so conditions, if_not_exists and
 * the sparse in-flight index behave as in DynamoDB) on a free port for the whole file, and a fresh table per test.
 */
import { afterAll, beforeAll, beforeEach } from '@jest/globals';
import { mockClient, type AwsClientStub } from 'aws-sdk-client-mock';
import { BedrockClient, type GetModelInvocationJobCommandOutput } from '@aws-sdk/client-bedrock';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { jobsTableDefinition, JobStore, type JobStoreOptions } from '../../../../lambda/shared/batch-jobs';
import { startDynamoDbEmulator, type DynamoDbEmulator } from '@corpus-pipeline/local-aws/cloud/emulators';
import { useClientMocks } from '../../../support/aws-mocks';

/** A jobs table accessor used outside the tests' lifetime (before `beforeAll` or `beforeEach` ran). */
export class JobsTableNotReadyError extends Error {
  override readonly name = 'JobsTableNotReadyError';
}

/** Per-test settings of a {@link JobStore} on the current table (client and table name come from the helper). */
export type JobStoreSettings = Partial<Pick<JobStoreOptions, 'ttlDays' | 'queryPageSize'>>;

/** Options of {@link useJobsTable}. */
export interface JobsTableOptions {
  /** The clock of {@link JobsTable.store} (default `Date.now`). */
  readonly now?: () => number;
}

/** Accessors of the table {@link useJobsTable} manages; valid inside tests and hooks. */
export interface JobsTable {
  /** The low-level client on dynalite. */
  readonly raw: DynamoDBClient;
  /** The document client on dynalite. */
  readonly docClient: DynamoDBDocumentClient;
  /** This test's table (`jobs-<n>`, created empty before it). */
  readonly tableName: string;
  /** This test's store on its table: TTL 30 days, the clock of {@link JobsTableOptions.now}. */
  readonly store: JobStore;
  /**
   * A new store on this test's table.
   * @param now the store's clock
   * @param settings TTL (default 30 days) and page size
   */
  newStore(now: () => number, settings?: JobStoreSettings): JobStore;
}

function ready<T>(value: T | undefined, what: string): T {
  if (value === undefined)
    throw new JobsTableNotReadyError(`${what} is only available inside tests and hooks`);
  return value;
}

/**
 * Registers the hooks of a jobs table for the calling test file: dynalite starts before all tests and stops after
 * them; before each test a new, empty table is created with a store on it. Call it at the top level, before the
 * file's own hooks.
 * @param options the clock of the per-test store
 */
export function useJobsTable(options: JobsTableOptions = {}): JobsTable {
  let dynamodb: DynamoDbEmulator | undefined;
  let raw: DynamoDBClient | undefined;
  let docClient: DynamoDBDocumentClient | undefined;
  let tableName: string | undefined;
  let store: JobStore | undefined;
  let tables = 0;

  function newStore(now: (() => number) | undefined, settings: JobStoreSettings = {}): JobStore {
    return new JobStore({
      client: ready(docClient, 'the document client'),
      tableName: ready(tableName, 'the table'),
      ttlDays: 30,
      now,
      ...settings,
    });
  }

  beforeAll(async () => {
    dynamodb = await startDynamoDbEmulator();
    raw = new DynamoDBClient({
      endpoint: dynamodb.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    });
    docClient = DynamoDBDocumentClient.from(raw);
  });

  afterAll(async () => {
    raw?.destroy();
    await dynamodb?.stop();
  });

  beforeEach(async () => {
    tableName = `jobs-${++tables}`;
    await ready(raw, 'the DynamoDB client').send(new CreateTableCommand(jobsTableDefinition(tableName)));
    store = newStore(options.now);
  });

  return {
    get raw() {
      return ready(raw, 'the DynamoDB client');
    },
    get docClient() {
      return ready(docClient, 'the document client');
    },
    get tableName() {
      return ready(tableName, 'the table');
    },
    get store() {
      return ready(store, 'the store');
    },
    newStore,
  };
}

/** Mocks of the Bedrock and Step Functions client classes (every instance), reset before each test. */
export interface ServiceMocks {
  readonly bedrockMock: AwsClientStub<BedrockClient>;
  readonly sfnMock: AwsClientStub<SFNClient>;
  /** New Bedrock and Step Functions clients for a handler's deps (answered by the mocks). */
  clients(): { bedrock: BedrockClient; sfn: SFNClient };
}

/**
 * Mocks the Bedrock and Step Functions client classes for the calling test file and resets both mocks before each
 * test. Call it at the top level.
 */
export function useServiceMocks(): ServiceMocks {
  const [bedrockMock, sfnMock] = useClientMocks(BedrockClient, SFNClient);
  return {
    bedrockMock,
    sfnMock,
    clients: () => ({
      bedrock: new BedrockClient({ region: 'us-east-1' }),
      sfn: new SFNClient({ region: 'us-east-1' }),
    }),
  };
}

/**
 * Mocks the document client class for the calling describe block only (its beforeAll to its afterAll): the handler
 * modules build their clients at import, and mocking the class reaches them, while the suite's other tests keep the
 * real client against dynalite. Call it inside a describe.
 * @returns the mock (available inside that block's tests)
 */
export function useDocumentClientMock(): () => AwsClientStub<DynamoDBDocumentClient> {
  let mock: AwsClientStub<DynamoDBDocumentClient> | undefined;
  beforeAll(() => {
    mock = mockClient(DynamoDBDocumentClient);
  });
  afterAll(() => mock?.restore());
  return () => ready(mock, 'the document client mock');
}

/**
 * GetModelInvocationJob's answer for a job of the suites' model and role, submitted at `submitTime`.
 * @param overrides further fields (end time, message, counts, ...)
 */
export function invocationJob(
  jobArn: string,
  jobName: string,
  status: string,
  submitTime: Date,
  overrides: Partial<GetModelInvocationJobCommandOutput> = {},
): GetModelInvocationJobCommandOutput {
  return {
    $metadata: {},
    jobArn,
    jobName,
    modelId: 'anthropic.claude-haiku-4-5-20251001-v1:0',
    roleArn: 'arn:aws:iam::123456789012:role/corpus-batch',
    status: status as GetModelInvocationJobCommandOutput['status'],
    submitTime,
    inputDataConfig: undefined,
    outputDataConfig: undefined,
    ...overrides,
  };
}
