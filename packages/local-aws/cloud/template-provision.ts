/**
 * Creating a template's buckets, tables and queues in the emulators, idempotently.
 */

import {
  CreateTableCommand,
  DescribeTableCommand,
  type CreateTableCommandInput,
  type DynamoDBClient,
  type TableDescription as DynamoTableDescription,
} from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import {
  CreateQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  SetQueueAttributesCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';

import { TemplateResolutionError, TemplateResolver, type CfnTemplate } from './intrinsics';
import {
  CfnIndex,
  CfnKeySchemaElement,
  DescribeOptions,
  describeResolved,
  errorMessage,
  errorName,
  isTableType,
  keyOf,
  propertiesOf,
  queueAttributes,
  referencedLogicalIds,
  resolvedTableProperties,
} from './template-describe';
import { ProvisionedStack } from './stack-description';
/** Options of {@link provision}. */
export interface ProvisionOptions extends DescribeOptions {
  /** SDK clients pointed at the emulators. */
  clients: { s3: S3Client; dynamodb: DynamoDBClient; sqs: SQSClient };
}

/** Creating a resource in an emulator failed. */
export class ProvisioningError extends Error {
  override readonly name = 'ProvisioningError';
  /** The resource that failed. */
  readonly logicalId: string;

  constructor(logicalId: string, message: string, options?: { cause?: unknown }) {
    super(`${logicalId}: ${message}`, options);
    this.logicalId = logicalId;
  }
}
/**
 * Creates the template's buckets, tables (with GSIs/LSIs) and queues (dead-letter queues first, redrive policies
 * pointing at the local DLQ ARNs) in the emulators, idempotently (a second run against persisted state changes
 * nothing, and updates queue attributes that changed), then describes the whole stack with local values.
 */
export async function provision(template: CfnTemplate, options: ProvisionOptions): Promise<ProvisionedStack> {
  const resolver = new TemplateResolver(template, options);
  const ids = resolver.logicalIds();
  for (const id of ids.filter((logicalId) => template.Resources[logicalId]!.Type === 'AWS::S3::Bucket')) {
    await provisionBucket(resolver, id, options.clients.s3);
  }
  for (const id of ids.filter((logicalId) => isTableType(template.Resources[logicalId]!.Type))) {
    await provisionTable(resolver, id, options.clients.dynamodb);
  }
  for (const id of queuesInCreationOrder(resolver)) {
    await provisionQueue(resolver, id, options.clients.sqs);
  }
  return describeResolved(resolver, options);
}

async function provisionBucket(resolver: TemplateResolver, logicalId: string, s3: S3Client): Promise<void> {
  const name = resolver.physicalName(logicalId);
  try {
    await s3.send(new CreateBucketCommand({ Bucket: name }));
  } catch (error) {
    // s3rver answers BucketAlreadyExists for a bucket it already has (state from an earlier run).
    if (errorName(error) === 'BucketAlreadyExists' || errorName(error) === 'BucketAlreadyOwnedByYou') return;
    throw new ProvisioningError(logicalId, `cannot create bucket ${name}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

async function provisionTable(
  resolver: TemplateResolver,
  logicalId: string,
  dynamodb: DynamoDBClient,
): Promise<void> {
  const name = resolver.physicalName(logicalId);
  const properties = resolvedTableProperties(resolver, logicalId);
  const input = createTableInput(name, properties);
  let existing: DynamoTableDescription | undefined;
  try {
    existing = (await dynamodb.send(new DescribeTableCommand({ TableName: name }))).Table;
  } catch (error) {
    if (errorName(error) !== 'ResourceNotFoundException') {
      throw new ProvisioningError(logicalId, `cannot describe table ${name}: ${errorMessage(error)}`, {
        cause: error,
      });
    }
  }
  if (existing !== undefined) {
    assertSameTableSchema(logicalId, input, existing);
    return;
  }
  try {
    await dynamodb.send(new CreateTableCommand(input));
  } catch (error) {
    throw new ProvisioningError(logicalId, `cannot create table ${name}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  await waitForActiveTable(logicalId, name, dynamodb);
}

function createTableInput(name: string, properties: Record<string, unknown>): CreateTableCommandInput {
  const billingMode = properties['BillingMode'] === 'PAY_PER_REQUEST' ? 'PAY_PER_REQUEST' : 'PROVISIONED';
  const defaultThroughput = { ReadCapacityUnits: 5, WriteCapacityUnits: 5 };
  const throughput =
    (properties['ProvisionedThroughput'] as CfnIndex['ProvisionedThroughput']) ?? defaultThroughput;
  const projection = (index: CfnIndex) => ({
    ProjectionType: (index.Projection?.ProjectionType ?? 'ALL') as 'ALL' | 'KEYS_ONLY' | 'INCLUDE',
    ...(index.Projection?.NonKeyAttributes ? { NonKeyAttributes: index.Projection.NonKeyAttributes } : {}),
  });
  const gsis = (properties['GlobalSecondaryIndexes'] as CfnIndex[] | undefined) ?? [];
  const lsis = (properties['LocalSecondaryIndexes'] as CfnIndex[] | undefined) ?? [];
  return {
    TableName: name,
    KeySchema: properties['KeySchema'] as CfnKeySchemaElement[],
    AttributeDefinitions: properties[
      'AttributeDefinitions'
    ] as CreateTableCommandInput['AttributeDefinitions'],
    BillingMode: billingMode,
    ...(billingMode === 'PROVISIONED' ? { ProvisionedThroughput: throughput } : {}),
    ...(gsis.length > 0
      ? {
          GlobalSecondaryIndexes: gsis.map((index) => ({
            IndexName: index.IndexName,
            KeySchema: index.KeySchema,
            Projection: projection(index),
            ...(billingMode === 'PROVISIONED'
              ? { ProvisionedThroughput: index.ProvisionedThroughput ?? defaultThroughput }
              : {}),
          })),
        }
      : {}),
    ...(lsis.length > 0
      ? {
          LocalSecondaryIndexes: lsis.map((index) => ({
            IndexName: index.IndexName,
            KeySchema: index.KeySchema,
            Projection: projection(index),
          })),
        }
      : {}),
  };
}

/** dynalite cannot add or drop indexes on an existing table, so a changed schema needs fresh state. */
function assertSameTableSchema(
  logicalId: string,
  wanted: CreateTableCommandInput,
  existing: DynamoTableDescription,
): void {
  const describeKeys = (
    key: ReadonlyArray<{ AttributeName?: string; KeyType?: string }> | undefined,
    indexes:
      | ReadonlyArray<{
          IndexName?: string;
          KeySchema?: ReadonlyArray<{ AttributeName?: string; KeyType?: string }>;
        }>
      | undefined,
  ) =>
    JSON.stringify({
      key: keyOf(key),
      indexes: (indexes ?? [])
        .map((index) => `${index.IndexName}:${JSON.stringify(keyOf(index.KeySchema))}`)
        .sort(),
    });
  const wantedShape = describeKeys(wanted.KeySchema, [
    ...(wanted.GlobalSecondaryIndexes ?? []),
    ...(wanted.LocalSecondaryIndexes ?? []),
  ]);
  const existingShape = describeKeys(existing.KeySchema, [
    ...(existing.GlobalSecondaryIndexes ?? []),
    ...(existing.LocalSecondaryIndexes ?? []),
  ]);
  if (wantedShape !== existingShape) {
    throw new ProvisioningError(
      logicalId,
      `table ${wanted.TableName} already exists with a different key schema or indexes (${existingShape}, template wants ${wantedShape}); ` +
        'the local DynamoDB cannot change them: delete the local state directory to start fresh',
    );
  }
}

async function waitForActiveTable(logicalId: string, name: string, dynamodb: DynamoDBClient): Promise<void> {
  // dynalite is started with createTableMs 0: the table turns ACTIVE on the next timer tick.
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const table = (await dynamodb.send(new DescribeTableCommand({ TableName: name }))).Table;
    const indexesActive = (table?.GlobalSecondaryIndexes ?? []).every(
      (index) => index.IndexStatus === 'ACTIVE',
    );
    if (table?.TableStatus === 'ACTIVE' && indexesActive) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new ProvisioningError(logicalId, `table ${name} did not become ACTIVE`);
}

/** Queues ordered so that every dead-letter queue is created before the queues that redrive to it. */
function queuesInCreationOrder(resolver: TemplateResolver): string[] {
  const queues = resolver
    .logicalIds()
    .filter((id) => resolver.template.Resources[id]!.Type === 'AWS::SQS::Queue');
  const queueSet = new Set(queues);
  const ordered: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (id: string, trail: string[]): void => {
    if (state.get(id) === 'done') return;
    if (state.get(id) === 'visiting') {
      throw new TemplateResolutionError(
        `Resources.${id}.Properties.RedrivePolicy`,
        `redrive cycle: ${[...trail, id].join(' -> ')}`,
      );
    }
    state.set(id, 'visiting');
    const redrive = propertiesOf(resolver, id)['RedrivePolicy'];
    for (const dependency of referencedLogicalIds(redrive)) {
      if (queueSet.has(dependency) && dependency !== id) visit(dependency, [...trail, id]);
    }
    state.set(id, 'done');
    ordered.push(id);
  };
  for (const id of queues) visit(id, []);
  return ordered;
}

async function provisionQueue(resolver: TemplateResolver, logicalId: string, sqs: SQSClient): Promise<void> {
  const name = resolver.physicalName(logicalId);
  const attributes = queueAttributes(resolver, logicalId);
  let url: string | undefined;
  try {
    url = (await sqs.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl;
  } catch (error) {
    if (
      errorName(error) !== 'QueueDoesNotExist' &&
      errorName(error) !== 'AWS.SimpleQueueService.NonExistentQueue'
    ) {
      throw new ProvisioningError(logicalId, `cannot look up queue ${name}: ${errorMessage(error)}`, {
        cause: error,
      });
    }
  }
  try {
    if (url === undefined) {
      url = (await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }))).QueueUrl;
    } else {
      // The queue survived from an earlier run: bring its mutable attributes up to date with the template.
      const { FifoQueue: _immutable, ...mutable } = attributes;
      if (Object.keys(mutable).length > 0)
        await sqs.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: mutable }));
    }
    if (url === undefined) throw new ProvisioningError(logicalId, `queue ${name} has no URL`);
    const arn = (
      await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn'] }))
    ).Attributes?.['QueueArn'];
    if (arn === undefined) throw new ProvisioningError(logicalId, `queue ${name} has no ARN`);
    resolver.setAttributes(logicalId, { QueueUrl: url, Arn: arn, QueueName: name });
  } catch (error) {
    if (error instanceof ProvisioningError) throw error;
    throw new ProvisioningError(logicalId, `cannot provision queue ${name}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}
