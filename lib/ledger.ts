import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

/** Properties of {@link PipelineLedger}. */
export interface PipelineLedgerProps {
  /**
   * Customer managed key for both tables.
   * @default the AWS managed key for DynamoDB (aws/dynamodb)
   */
  readonly encryptionKey?: kms.IKey;
  /**
   * What happens to the tables on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** The partition key of the ledger table (`<percent-encoded ledgerScope>#<recordId>`, written by the handlers). */
export const LEDGER_PARTITION_KEY = 'pk';
/** The TTL attribute of the ledger table (epoch seconds). */
export const LEDGER_TTL_ATTRIBUTE = 'expiresAt';
/** The partition key Powertools idempotency expects. */
export const IDEMPOTENCY_PARTITION_KEY = 'id';
/** The TTL attribute Powertools idempotency writes. */
export const IDEMPOTENCY_TTL_ATTRIBUTE = 'expiration';

/** The keys of the runs table: one partition per run, items `run` and `lane#<recordId>` (lambda/shared/run-state.ts). */
export const RUNS_TABLE_KEYS = { partitionKey: 'runId', sortKey: 'item', ttl: 'expiresAt' } as const;

/**
 * Lets `grantee` read and write items of tables encrypted with `key`: kms:Decrypt, only through DynamoDB in this
 * Region. DynamoDB encrypts items with a table key that it keeps encrypted under the KMS key and decrypts through AWS
 * KMS on the caller's behalf when a connection first uses the table (then every five minutes of use); reads and writes
 * make no other KMS call ("Table keys" and "Table key caching",
 * https://docs.aws.amazon.com/kms/latest/developerguide/services-dynamodb.html; a PutItem without kms:Decrypt fails,
 * https://github.com/aws/aws-cdk/issues/10010). The other actions that page lists (Encrypt, ReEncrypt*,
 * GenerateDataKey*, DescribeKey, CreateGrant) are for the principal that chooses the key for a table, which is
 * CloudFormation at deploy time with the deploying role's permissions, not the functions.
 */
export function grantTableKeyUse(key: kms.IKey, grantee: iam.IGrantable): iam.Grant {
  const stack = Stack.of(key);
  return iam.Grant.addToPrincipal({
    grantee,
    actions: ['kms:Decrypt'],
    resourceArns: [key.keyArn],
    conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${stack.region}.${stack.urlSuffix}` } },
  });
}

/**
 * The record ledger (one item per record and scope, moved on only by conditional writes so every record is published
 * at most once), the runs table (each run's manifest revisions and the records the failure lane settled for it), and
 * the Powertools idempotency table that guards Plan and Finalize.
 */
export class PipelineLedger extends Construct {
  /** The record ledger: partition key `pk`, TTL `expiresAt`. */
  public readonly ledgerTable: dynamodb.Table;
  /** The Powertools idempotency store: partition key `id`, TTL `expiration`. */
  public readonly idempotencyTable: dynamodb.Table;
  /** The runs table: partition key `runId`, sort key `item`, TTL `expiresAt`. */
  public readonly runsTable: dynamodb.Table;
  private readonly encryptionKey?: kms.IKey;

  constructor(scope: Construct, id: string, props: PipelineLedgerProps = {}) {
    super(scope, id);
    this.encryptionKey = props.encryptionKey;
    const common: Omit<dynamodb.TableProps, 'partitionKey'> = {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      ...(props.encryptionKey
        ? { encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED, encryptionKey: props.encryptionKey }
        : { encryption: dynamodb.TableEncryption.AWS_MANAGED }),
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    };
    this.ledgerTable = new dynamodb.Table(this, 'LedgerTable', {
      ...common,
      partitionKey: { name: LEDGER_PARTITION_KEY, type: dynamodb.AttributeType.STRING },
      timeToLiveAttribute: LEDGER_TTL_ATTRIBUTE,
    });
    this.idempotencyTable = new dynamodb.Table(this, 'IdempotencyTable', {
      ...common,
      partitionKey: { name: IDEMPOTENCY_PARTITION_KEY, type: dynamodb.AttributeType.STRING },
      timeToLiveAttribute: IDEMPOTENCY_TTL_ATTRIBUTE,
    });
    this.runsTable = new dynamodb.Table(this, 'RunsTable', {
      ...common,
      partitionKey: { name: RUNS_TABLE_KEYS.partitionKey, type: dynamodb.AttributeType.STRING },
      sortKey: { name: RUNS_TABLE_KEYS.sortKey, type: dynamodb.AttributeType.STRING },
      timeToLiveAttribute: RUNS_TABLE_KEYS.ttl,
    });
  }

  /** Lets `grantee` look records up in the ledger (GetItem, BatchGetItem): the planner's skip check. */
  public grantLedgerLookup(grantee: iam.IGrantable): iam.Grant {
    const grant = this.ledgerTable.grant(grantee, 'dynamodb:GetItem', 'dynamodb:BatchGetItem');
    this.grantKeyUse(grantee);
    return grant;
  }

  /** Lets `grantee` look records up and move them on with conditional writes (UpdateItem). */
  public grantLedgerRecord(grantee: iam.IGrantable): iam.Grant {
    const grant = this.ledgerTable.grant(
      grantee,
      'dynamodb:GetItem',
      'dynamodb:BatchGetItem',
      'dynamodb:UpdateItem',
    );
    this.grantKeyUse(grantee);
    return grant;
  }

  /** Lets `grantee` read and write runs' state: manifest revisions and settled lane records (no deletes, no scans). */
  public grantRunState(grantee: iam.IGrantable): iam.Grant {
    const grant = this.runsTable.grant(
      grantee,
      'dynamodb:GetItem',
      'dynamodb:PutItem',
      'dynamodb:UpdateItem',
      'dynamodb:Query',
    );
    this.grantKeyUse(grantee);
    return grant;
  }

  /** Lets `grantee` (operators' tooling) read runs' state. */
  public grantRunStateRead(grantee: iam.IGrantable): iam.Grant {
    const grant = this.runsTable.grant(grantee, 'dynamodb:GetItem', 'dynamodb:Query');
    this.grantKeyUse(grantee);
    return grant;
  }

  /** Lets `grantee` use the Powertools idempotency store (GetItem, PutItem, UpdateItem, DeleteItem). */
  public grantIdempotency(grantee: iam.IGrantable): iam.Grant {
    const grant = this.idempotencyTable.grant(
      grantee,
      'dynamodb:GetItem',
      'dynamodb:PutItem',
      'dynamodb:UpdateItem',
      'dynamodb:DeleteItem',
    );
    this.grantKeyUse(grantee);
    return grant;
  }

  private grantKeyUse(grantee: iam.IGrantable): void {
    if (this.encryptionKey) grantTableKeyUse(this.encryptionKey, grantee);
  }
}
