/**
 * Brings a synthesized CloudFormation template to life locally: loads it (from cdk.out or an object), resolves it,
 * creates its buckets, tables and queues in the emulators, and describes everything else the local runtime wires
 * (event buses, rules, schedules, functions, event source mappings, state machines, S3 -> EventBridge buckets).
 */
import { ENTRY_METADATA_KEY } from '../../lambda/shared/contracts/names';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

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

import {
  TemplateResolutionError,
  TemplateResolver,
  type CfnResource,
  type CfnTemplate,
  type ResolveContext,
} from './intrinsics';

export {
  DEFAULT_ACCOUNT_ID,
  TemplateResolutionError,
  TemplateResolver,
  uuidFrom,
  type CfnParameter,
  type CfnResource,
  type CfnTemplate,
  type ResolveContext,
} from './intrinsics';

/** The Metadata key our CDK Lambda construct sets to the handler's repo-relative TypeScript entry. */
export { ENTRY_METADATA_KEY };

// ---------------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------------

/** A template read from disk. */
export interface LoadedTemplate {
  /** The parsed template. */
  template: CfnTemplate;
  /** The template file. */
  file: string;
  /** The stack name from the cloud assembly manifest, when loaded from a cdk.out directory. */
  stackName: string | undefined;
  /** The directory holding the template's assets (cdk.out), for `DefinitionS3Location` and the like. */
  assetDirectory: string;
}

/**
 * Reads a CloudFormation template: a `.json` file, or a cdk.out directory (its manifest.json names the stacks;
 * `stackName` picks one when there are several).
 */
export function loadTemplate(fileOrCdkOut: string, options: { stackName?: string } = {}): LoadedTemplate {
  const location = path.resolve(fileOrCdkOut);
  if (!statSync(location).isDirectory()) {
    return {
      template: parseTemplate(location),
      file: location,
      stackName: undefined,
      assetDirectory: path.dirname(location),
    };
  }
  const manifestFile = path.join(location, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as {
    artifacts?: Record<
      string,
      { type?: string; displayName?: string; properties?: { templateFile?: string; stackName?: string } }
    >;
  };
  const stacks = Object.entries(manifest.artifacts ?? {})
    .filter(
      ([, artifact]) => artifact.type === 'aws:cloudformation:stack' && artifact.properties?.templateFile,
    )
    .map(([id, artifact]) => ({
      stackName: artifact.properties?.stackName ?? id,
      id,
      templateFile: artifact.properties!.templateFile!,
    }));
  const wanted = options.stackName;
  const chosen =
    wanted === undefined
      ? stacks.length === 1
        ? stacks[0]
        : undefined
      : stacks.find((stack) => stack.stackName === wanted || stack.id === wanted);
  if (chosen === undefined) {
    const names = stacks.map((stack) => stack.stackName).join(', ') || 'none';
    throw new TemplateResolutionError(
      manifestFile,
      wanted === undefined
        ? `several stacks (${names}): choose one with stackName`
        : `no stack ${wanted} (stacks: ${names})`,
    );
  }
  const file = path.join(location, chosen.templateFile);
  return { template: parseTemplate(file), file, stackName: chosen.stackName, assetDirectory: location };
}

function parseTemplate(file: string): CfnTemplate {
  const template = JSON.parse(readFileSync(file, 'utf8')) as CfnTemplate;
  if (typeof template !== 'object' || template === null || typeof template.Resources !== 'object') {
    throw new TemplateResolutionError(file, 'not a CloudFormation template (no Resources section)');
  }
  return template;
}

// ---------------------------------------------------------------------------------------------------------------
// Descriptions
// ---------------------------------------------------------------------------------------------------------------

/** Any resource of the stack, provisioned locally or not. */
export interface ResourceDescription {
  logicalId: string;
  type: string;
  /** What `Ref` returns (a queue's URL, a state machine's ARN, otherwise mostly the name). */
  physicalId: string;
  /** The resource's name (the physical name the local runtime uses). */
  name: string;
  /** The ARN, when the type has one. */
  arn: string | undefined;
  /** The attributes `Fn::GetAtt` can read. */
  attributes: Record<string, string>;
  /** True when the local runtime does nothing with this type. */
  ignored: boolean;
}

/** An S3 bucket. */
export interface BucketDescription {
  logicalId: string;
  name: string;
  arn: string;
  /** EventBridge notifications are on (CDK `eventBridgeEnabled: true`, or the bucket's own NotificationConfiguration). */
  eventBridgeEnabled: boolean;
}

/** A key of a table or index. */
export interface KeyDescription {
  partitionKey: string;
  sortKey: string | undefined;
}

/** A DynamoDB table. */
export interface TableDescription {
  logicalId: string;
  name: string;
  arn: string;
  key: KeyDescription;
  billingMode: 'PAY_PER_REQUEST' | 'PROVISIONED';
  globalSecondaryIndexes: Array<{ name: string; key: KeyDescription }>;
  localSecondaryIndexes: Array<{ name: string; key: KeyDescription }>;
  /** TimeToLiveSpecification's attribute when enabled (dynalite has no TTL: the runtime may sweep it itself). */
  timeToLiveAttribute: string | undefined;
}

/** An SQS queue. */
export interface QueueDescription {
  logicalId: string;
  name: string;
  arn: string;
  /** The local, dialable queue URL after provisioning. */
  url: string;
  fifo: boolean;
  visibilityTimeoutSeconds: number;
  messageRetentionPeriodSeconds: number;
  delaySeconds: number;
  receiveMessageWaitTimeSeconds: number;
  redrivePolicy:
    | { deadLetterTargetArn: string; maxReceiveCount: number; deadLetterQueueLogicalId: string | undefined }
    | undefined;
}

/** An EventBridge event bus (the default bus is not listed: it always exists). */
export interface EventBusDescription {
  logicalId: string;
  name: string;
  arn: string;
}

/** A rule or schedule target. */
export interface TargetDescription {
  id: string;
  /** The target's ARN (resolved). */
  arn: string;
  /** The logical id of the target when it is a resource of this stack. */
  logicalId: string | undefined;
  /** The target's service, from its ARN. */
  service: 'lambda' | 'states' | 'sqs' | 'events' | 'sns' | 'other';
  input: string | undefined;
  inputPath: string | undefined;
  inputTransformer: { inputPathsMap: Record<string, string>; inputTemplate: string } | undefined;
  roleArn: string | undefined;
  sqsMessageGroupId: string | undefined;
  deadLetterArn: string | undefined;
  retryPolicy:
    { maximumEventAgeInSeconds: number | undefined; maximumRetryAttempts: number | undefined } | undefined;
}

/** An EventBridge rule with an event pattern. */
export interface EventRuleDescription {
  logicalId: string;
  name: string;
  arn: string;
  eventBusName: string;
  eventPattern: Record<string, unknown>;
  state: string;
  description: string | undefined;
  targets: TargetDescription[];
}

/** A scheduled rule (AWS::Events::Rule with ScheduleExpression) or an AWS::Scheduler::Schedule. */
export interface ScheduleDescription {
  logicalId: string;
  source: 'events-rule' | 'scheduler';
  name: string;
  arn: string;
  scheduleExpression: string;
  state: string;
  targets: TargetDescription[];
}

/** A Lambda function whose handler the local runtime runs. */
export interface LambdaFunctionDescription {
  logicalId: string;
  name: string;
  arn: string;
  /** `Handler`, e.g. `index.handler`. */
  handler: string;
  /** The export to call (after the last dot of `handler`). */
  handlerExport: string;
  runtime: string | undefined;
  timeoutSeconds: number;
  memoryMb: number;
  /** Environment.Variables with every reference resolved to local values. */
  environment: Record<string, string>;
  /** `Metadata['corpus:entry']`: the repo-relative TypeScript entry, e.g. `lambda/plan.ts`. */
  entry: string;
  /** `entry` resolved against the project root. */
  entryPath: string;
  reservedConcurrency: number | undefined;
}

/** An event source mapping (SQS queue -> function). */
export interface EventSourceMappingDescription {
  logicalId: string;
  uuid: string;
  eventSourceArn: string;
  /** The source queue's logical id when it is a queue of this stack. */
  queueLogicalId: string | undefined;
  functionLogicalId: string | undefined;
  functionName: string;
  functionArn: string;
  batchSize: number;
  maximumBatchingWindowInSeconds: number;
  functionResponseTypes: string[];
  enabled: boolean;
  /** ScalingConfig.MaximumConcurrency. */
  maximumConcurrency: number | undefined;
  filterCriteria: unknown;
}

/** A Step Functions state machine. */
export interface StateMachineDescription {
  logicalId: string;
  name: string;
  arn: string;
  type: 'STANDARD' | 'EXPRESS';
  /** The ASL definition, every reference resolved and DefinitionSubstitutions applied. */
  definition: Record<string, unknown>;
  roleArn: string | undefined;
}

/** A resource the local runtime does nothing with. */
export interface IgnoredResource {
  logicalId: string;
  type: string;
  reason: string;
}

// ---------------------------------------------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------------------------------------------

/** The resolved, provisioned stack: typed lists of what the local runtime wires, and lookups. */
export class ProvisionedStack {
  readonly stackName: string;
  readonly region: string;
  readonly accountId: string;
  readonly resources: readonly ResourceDescription[];
  readonly buckets: readonly BucketDescription[];
  readonly tables: readonly TableDescription[];
  readonly queues: readonly QueueDescription[];
  readonly eventBuses: readonly EventBusDescription[];
  readonly rules: readonly EventRuleDescription[];
  readonly schedules: readonly ScheduleDescription[];
  readonly functions: readonly LambdaFunctionDescription[];
  readonly eventSourceMappings: readonly EventSourceMappingDescription[];
  readonly stateMachines: readonly StateMachineDescription[];
  readonly ignored: readonly IgnoredResource[];
  private readonly resolver: TemplateResolver;

  /** @internal built by {@link describeStack} and {@link provision}. */
  constructor(resolver: TemplateResolver, parts: ProvisionedStackParts) {
    this.resolver = resolver;
    this.stackName = resolver.stackName;
    this.region = resolver.region;
    this.accountId = resolver.accountId;
    this.resources = parts.resources;
    this.buckets = parts.buckets;
    this.tables = parts.tables;
    this.queues = parts.queues;
    this.eventBuses = parts.eventBuses;
    this.rules = parts.rules;
    this.schedules = parts.schedules;
    this.functions = parts.functions;
    this.eventSourceMappings = parts.eventSourceMappings;
    this.stateMachines = parts.stateMachines;
    this.ignored = parts.ignored;
  }

  /** Buckets whose object-created events go to EventBridge. */
  get bucketsWithEventBridge(): BucketDescription[] {
    return this.buckets.filter((bucket) => bucket.eventBridgeEnabled);
  }

  /** The resource with this logical id. */
  byLogicalId(logicalId: string): ResourceDescription | undefined {
    return this.resources.find((resource) => resource.logicalId === logicalId);
  }

  /** The resource with this ARN. */
  byArn(arn: string): ResourceDescription | undefined {
    return this.resources.find((resource) => resource.arn === arn);
  }

  /** The resource with this name (or this physical id, e.g. a queue URL), preferring non-ignored resources. */
  byName(name: string): ResourceDescription | undefined {
    const matches = this.resources.filter(
      (resource) => resource.name === name || resource.physicalId === name,
    );
    return matches.find((resource) => !resource.ignored) ?? matches[0];
  }

  /** The function with this name, ARN (qualified or not) or logical id. */
  findFunction(nameArnOrLogicalId: string): LambdaFunctionDescription | undefined {
    const unqualified = nameArnOrLogicalId.replace(
      /^(arn:[^:]+:lambda:[^:]+:[^:]+:function:[^:]+):.*$/,
      '$1',
    );
    return this.functions.find(
      (fn) => fn.name === unqualified || fn.arn === unqualified || fn.logicalId === nameArnOrLogicalId,
    );
  }

  /** The queue with this URL, ARN, name or logical id. */
  findQueue(key: string): QueueDescription | undefined {
    return this.queues.find((queue) => [queue.url, queue.arn, queue.name, queue.logicalId].includes(key));
  }

  /** The state machine with this ARN, name or logical id. */
  findStateMachine(key: string): StateMachineDescription | undefined {
    return this.stateMachines.find((machine) => [machine.arn, machine.name, machine.logicalId].includes(key));
  }

  /** A stack output, resolved now (throws a TemplateResolutionError when it references what is unknown locally). */
  output(name: string): string {
    const output = this.resolver.template.Outputs?.[name];
    if (output === undefined) throw new TemplateResolutionError(`Outputs.${name}`, `no output ${name}`);
    return this.resolver.resolveString(output.Value, `Outputs.${name}.Value`);
  }

  /** A stack output when the template declares it (optional resources), else undefined. */
  optionalOutput(name: string): string | undefined {
    return this.resolver.template.Outputs?.[name] === undefined ? undefined : this.output(name);
  }

  /** A short human-readable summary of what the local runtime wires and ignores. */
  summary(): string {
    const ignoredByType = new Map<string, number>();
    for (const resource of this.ignored)
      ignoredByType.set(resource.type, (ignoredByType.get(resource.type) ?? 0) + 1);
    const lines = [
      `stack ${this.stackName} (${this.region}, ${this.accountId})`,
      `  buckets: ${this.buckets.map((b) => b.name + (b.eventBridgeEnabled ? ' [eventbridge]' : '')).join(', ') || '-'}`,
      `  tables: ${this.tables.map((t) => t.name).join(', ') || '-'}`,
      `  queues: ${this.queues.map((q) => q.name + (q.redrivePolicy ? ` -> dlq after ${q.redrivePolicy.maxReceiveCount}` : '')).join(', ') || '-'}`,
      `  event buses: ${this.eventBuses.map((b) => b.name).join(', ') || '-'}`,
      `  rules: ${this.rules.map((r) => `${r.name}@${r.eventBusName} -> ${r.targets.length} target(s)`).join(', ') || '-'}`,
      `  schedules: ${this.schedules.map((s) => `${s.name} ${s.scheduleExpression}`).join(', ') || '-'}`,
      `  functions: ${this.functions.map((f) => `${f.name} (${f.entry})`).join(', ') || '-'}`,
      `  event source mappings: ${this.eventSourceMappings.map((m) => `${m.queueLogicalId ?? m.eventSourceArn} -> ${m.functionName}`).join(', ') || '-'}`,
      `  state machines: ${this.stateMachines.map((m) => `${m.name} (${m.type})`).join(', ') || '-'}`,
      `  ignored: ${[...ignoredByType].map(([type, count]) => `${type} x${count}`).join(', ') || '-'}`,
    ];
    return lines.join('\n');
  }
}

/** The typed lists a ProvisionedStack is made of. */
export interface ProvisionedStackParts {
  resources: ResourceDescription[];
  buckets: BucketDescription[];
  tables: TableDescription[];
  queues: QueueDescription[];
  eventBuses: EventBusDescription[];
  rules: EventRuleDescription[];
  schedules: ScheduleDescription[];
  functions: LambdaFunctionDescription[];
  eventSourceMappings: EventSourceMappingDescription[];
  stateMachines: StateMachineDescription[];
  ignored: IgnoredResource[];
}

// ---------------------------------------------------------------------------------------------------------------
// Describe (no service calls) and provision
// ---------------------------------------------------------------------------------------------------------------

/** Options shared by {@link describeStack} and {@link provision}. */
export interface DescribeOptions extends ResolveContext {
  /** Root that `corpus:entry` paths are relative to. @default process.cwd() */
  projectRoot?: string;
  /** Where `DefinitionS3Location` assets live (cdk.out). */
  assetDirectory?: string;
}

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

/** The types the local runtime acts on; every other type is listed as ignored. */
const HANDLED_TYPES = new Set([
  'AWS::S3::Bucket',
  'AWS::DynamoDB::Table',
  'AWS::DynamoDB::GlobalTable',
  'AWS::SQS::Queue',
  'AWS::Events::EventBus',
  'AWS::Events::Rule',
  'AWS::Scheduler::Schedule',
  'AWS::Lambda::Function',
  'AWS::Lambda::EventSourceMapping',
  'AWS::StepFunctions::StateMachine',
  'Custom::S3BucketNotifications',
]);

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

/** Resolves and describes the stack without touching any service (queue URLs are then the AWS-style ones). */
export function describeStack(template: CfnTemplate, options: DescribeOptions): ProvisionedStack {
  return describeResolved(new TemplateResolver(template, options), options);
}

function isTableType(type: string): boolean {
  return type === 'AWS::DynamoDB::Table' || type === 'AWS::DynamoDB::GlobalTable';
}

function propertiesOf(resolver: TemplateResolver, logicalId: string): Record<string, unknown> {
  return resolver.resource(logicalId).Properties ?? {};
}

function propertyPath(logicalId: string, property: string): string {
  return `Resources.${logicalId}.Properties.${property}`;
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

interface CfnKeySchemaElement {
  AttributeName: string;
  KeyType: 'HASH' | 'RANGE';
}

interface CfnIndex {
  IndexName: string;
  KeySchema: CfnKeySchemaElement[];
  Projection?: { ProjectionType?: string; NonKeyAttributes?: string[] };
  ProvisionedThroughput?: { ReadCapacityUnits: number; WriteCapacityUnits: number };
}

function keyOf(
  schema: ReadonlyArray<{ AttributeName?: string; KeyType?: string }> | undefined,
): KeyDescription {
  return {
    partitionKey: schema?.find((element) => element.KeyType === 'HASH')?.AttributeName ?? '',
    sortKey: schema?.find((element) => element.KeyType === 'RANGE')?.AttributeName,
  };
}

function resolvedTableProperties(resolver: TemplateResolver, logicalId: string): Record<string, unknown> {
  const properties = resolver.resolve(propertiesOf(resolver, logicalId), `Resources.${logicalId}.Properties`);
  return (properties ?? {}) as Record<string, unknown>;
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

/** Logical ids referenced (Ref / Fn::GetAtt / Fn::Sub ${X...}) anywhere inside `value`. */
function referencedLogicalIds(value: unknown, into = new Set<string>()): Set<string> {
  if (value === null || typeof value !== 'object') return into;
  if (Array.isArray(value)) {
    for (const item of value) referencedLogicalIds(item, into);
    return into;
  }
  for (const [key, item] of Object.entries(value)) {
    if (key === 'Ref' && typeof item === 'string') into.add(item);
    else if (key === 'Fn::GetAtt' && Array.isArray(item) && typeof item[0] === 'string') into.add(item[0]);
    else if (key === 'Fn::GetAtt' && typeof item === 'string') into.add(item.split('.')[0]!);
    else if (key === 'Fn::Sub') {
      const text = Array.isArray(item) ? item[0] : item;
      if (typeof text === 'string') {
        for (const match of text.matchAll(/\$\{([^!}][^}.]*)[^}]*\}/g)) into.add(match[1]!.trim());
      }
      if (Array.isArray(item)) referencedLogicalIds(item[1], into);
    } else referencedLogicalIds(item, into);
  }
  return into;
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

/**
 * The CloudFormation queue properties that map to SQS attributes (KMS settings are irrelevant locally). The
 * high-throughput FIFO settings (DeduplicationScope, FifoThroughputLimit) are left out: the local SQS refuses them,
 * and they change throughput, not what is delivered (per-group deduplication of ids that are unique per record
 * deduplicates exactly as queue-wide deduplication does).
 */
const QUEUE_ATTRIBUTE_PROPERTIES = [
  'VisibilityTimeout',
  'MessageRetentionPeriod',
  'DelaySeconds',
  'MaximumMessageSize',
  'ReceiveMessageWaitTimeSeconds',
  'ContentBasedDeduplication',
] as const;

function queueAttributes(resolver: TemplateResolver, logicalId: string): Record<string, string> {
  const properties = propertiesOf(resolver, logicalId);
  const attributes: Record<string, string> = {};
  if (properties['FifoQueue'] !== undefined) {
    const fifo = resolver.resolveString(properties['FifoQueue'], propertyPath(logicalId, 'FifoQueue'));
    if (fifo === 'true') attributes['FifoQueue'] = 'true';
  }
  for (const property of QUEUE_ATTRIBUTE_PROPERTIES) {
    if (properties[property] === undefined) continue;
    const value = resolver.resolve(properties[property], propertyPath(logicalId, property));
    if (value !== undefined) attributes[property] = String(value);
  }
  const redrive = resolveJsonProperty(resolver, logicalId, 'RedrivePolicy');
  if (redrive !== undefined) {
    const policy = redrive as { deadLetterTargetArn?: unknown; maxReceiveCount?: unknown };
    if (typeof policy.deadLetterTargetArn !== 'string' || policy.maxReceiveCount === undefined) {
      throw new TemplateResolutionError(
        propertyPath(logicalId, 'RedrivePolicy'),
        'RedrivePolicy needs deadLetterTargetArn and maxReceiveCount',
      );
    }
    attributes['RedrivePolicy'] = JSON.stringify({
      deadLetterTargetArn: policy.deadLetterTargetArn,
      maxReceiveCount: Number(policy.maxReceiveCount),
    });
  }
  const redriveAllow = resolveJsonProperty(resolver, logicalId, 'RedriveAllowPolicy');
  if (redriveAllow !== undefined) attributes['RedriveAllowPolicy'] = JSON.stringify(redriveAllow);
  return attributes;
}

/** A property CloudFormation accepts as a JSON object or a JSON string. */
function resolveJsonProperty(resolver: TemplateResolver, logicalId: string, property: string): unknown {
  const raw = propertiesOf(resolver, logicalId)[property];
  if (raw === undefined) return undefined;
  const resolved = resolver.resolve(raw, propertyPath(logicalId, property));
  if (typeof resolved !== 'string') return resolved;
  try {
    return JSON.parse(resolved) as unknown;
  } catch (error) {
    throw new TemplateResolutionError(propertyPath(logicalId, property), 'not valid JSON', { cause: error });
  }
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

function describeResolved(resolver: TemplateResolver, options: DescribeOptions): ProvisionedStack {
  const projectRoot = options.projectRoot ?? process.cwd();
  const ids = resolver.logicalIds();
  const typeOf = (id: string): string => resolver.template.Resources[id]!.Type;
  const ofType = (...types: string[]): string[] => ids.filter((id) => types.includes(typeOf(id)));
  const infrastructureFunctions = findInfrastructureFunctions(resolver);
  const ignored: IgnoredResource[] = [];
  for (const id of ids) {
    if (!HANDLED_TYPES.has(typeOf(id)))
      ignored.push({ logicalId: id, type: typeOf(id), reason: ignoreReason(typeOf(id)) });
  }

  const eventBridgeBuckets = bucketsWithEventBridgeNotifications(resolver);
  const buckets = ofType('AWS::S3::Bucket').map((id) => ({
    logicalId: id,
    name: resolver.physicalName(id),
    arn: resolver.attribute(id, 'Arn', `Resources.${id}`),
    eventBridgeEnabled: eventBridgeBuckets.has(id),
  }));
  const tables = ofType('AWS::DynamoDB::Table', 'AWS::DynamoDB::GlobalTable').map((id) =>
    describeTable(resolver, id),
  );
  const queues = ofType('AWS::SQS::Queue').map((id) => describeQueue(resolver, id));
  const eventBuses = ofType('AWS::Events::EventBus').map((id) => ({
    logicalId: id,
    name: resolver.physicalName(id),
    arn: resolver.attribute(id, 'Arn', `Resources.${id}`),
  }));
  const rules: EventRuleDescription[] = [];
  const schedules: ScheduleDescription[] = [];
  for (const id of ofType('AWS::Events::Rule')) {
    const described = describeRule(resolver, id);
    if (described.rule) rules.push(described.rule);
    if (described.schedule) schedules.push(described.schedule);
  }
  for (const id of ofType('AWS::Scheduler::Schedule'))
    schedules.push(describeSchedulerSchedule(resolver, id));
  const functions: LambdaFunctionDescription[] = [];
  for (const id of ofType('AWS::Lambda::Function')) {
    if (infrastructureFunctions.has(id)) {
      ignored.push({
        logicalId: id,
        type: typeOf(id),
        reason: 'CDK infrastructure function (custom resource handler)',
      });
    } else {
      functions.push(describeFunction(resolver, id, projectRoot));
    }
  }
  const eventSourceMappings = ofType('AWS::Lambda::EventSourceMapping').map((id) =>
    describeEventSourceMapping(resolver, id, functions, queues),
  );
  const stateMachines = ofType('AWS::StepFunctions::StateMachine').map((id) =>
    describeStateMachine(resolver, id, options.assetDirectory),
  );
  const ignoredIds = new Set(ignored.map((resource) => resource.logicalId));
  const resources = ids.map((id) => {
    const name = tolerant(resolver, id, () => resolver.physicalName(id), `${resolver.stackName}-${id}`);
    return {
      logicalId: id,
      type: typeOf(id),
      physicalId: tolerant(resolver, id, () => resolver.ref(id, `Resources.${id}`), name),
      name,
      arn: tolerant(resolver, id, () => resolver.arn(id), undefined),
      attributes: tolerant(resolver, id, () => resolver.knownAttributes(id), {}),
      ignored: ignoredIds.has(id),
    };
  });
  return new ProvisionedStack(resolver, {
    resources,
    buckets,
    tables,
    queues,
    eventBuses,
    rules,
    schedules,
    functions,
    eventSourceMappings,
    stateMachines,
    ignored,
  });
}

/**
 * Computes a value of a resource. For a type the runtime ignores, the value may rest on something unknown locally
 * (an import, a custom resource's attribute, ...): it then takes `fallback` instead of failing the whole stack.
 * For handled types every resolution error propagates.
 */
function tolerant<T>(resolver: TemplateResolver, logicalId: string, compute: () => T, fallback: T): T {
  if (HANDLED_TYPES.has(resolver.template.Resources[logicalId]!.Type)) return compute();
  try {
    return compute();
  } catch (error) {
    if (error instanceof TemplateResolutionError) return fallback;
    throw error;
  }
}

function ignoreReason(type: string): string {
  if (type.startsWith('AWS::IAM::')) return 'IAM is not enforced locally';
  if (type.startsWith('AWS::KMS::')) return 'encryption at rest is not emulated';
  if (type.startsWith('AWS::Logs::')) return 'function logs go to local files';
  if (type.startsWith('AWS::CloudWatch::')) return 'metrics, alarms and dashboards are not emulated';
  if (type.startsWith('Custom::') || type === 'AWS::CloudFormation::CustomResource')
    return 'custom resources do not run locally';
  if (type === 'AWS::CDK::Metadata') return 'CDK metadata';
  if (
    type === 'AWS::S3::BucketPolicy' ||
    type === 'AWS::SQS::QueuePolicy' ||
    type === 'AWS::Events::EventBusPolicy'
  ) {
    return 'resource policies are not enforced locally';
  }
  if (type === 'AWS::Lambda::Permission') return 'invoke permissions are not enforced locally';
  return 'not emulated by the local runtime';
}

/**
 * Functions that exist only to serve CDK custom resources (bucket notifications, auto-delete objects, log
 * retention, AwsCustomResource, provider frameworks): the ServiceToken targets of custom resources, and functions
 * whose construct path says so. They have no `corpus:entry` and never run locally.
 */
function findInfrastructureFunctions(resolver: TemplateResolver): Set<string> {
  const found = new Set<string>();
  for (const id of resolver.logicalIds()) {
    const resource = resolver.template.Resources[id]!;
    if (resource.Type.startsWith('Custom::') || resource.Type === 'AWS::CloudFormation::CustomResource') {
      for (const target of referencedLogicalIds(resource.Properties?.['ServiceToken'])) found.add(target);
    }
  }
  const markers = [
    'BucketNotificationsHandler',
    'LogRetention',
    'CustomResourceProvider',
    'AWS679f53fac002430cb0da5b7982bd2287',
    'Custom::',
    'framework-on',
  ];
  for (const id of resolver.logicalIds()) {
    const resource = resolver.template.Resources[id]!;
    if (resource.Type !== 'AWS::Lambda::Function') continue;
    const cdkPath = String(resource.Metadata?.['aws:cdk:path'] ?? '');
    if (resource.Metadata?.[ENTRY_METADATA_KEY] !== undefined) found.delete(id);
    else if (markers.some((marker) => id.startsWith(marker) || cdkPath.includes(marker))) found.add(id);
  }
  return found;
}

/** Buckets whose EventBridge notifications are enabled, by logical id. */
function bucketsWithEventBridgeNotifications(resolver: TemplateResolver): Set<string> {
  const enabled = new Set<string>();
  const bucketIdsByName = new Map<string, string>();
  for (const id of resolver.logicalIds()) {
    const resource = resolver.template.Resources[id]!;
    if (resource.Type !== 'AWS::S3::Bucket') continue;
    bucketIdsByName.set(resolver.physicalName(id), id);
    const native = (
      resource.Properties?.['NotificationConfiguration'] as { EventBridgeConfiguration?: unknown } | undefined
    )?.EventBridgeConfiguration;
    if (native !== undefined) {
      const flag = resolver.resolve(
        native,
        propertyPath(id, 'NotificationConfiguration.EventBridgeConfiguration'),
      ) as { EventBridgeEnabled?: unknown } | undefined;
      if (
        flag?.EventBridgeEnabled === undefined ||
        flag.EventBridgeEnabled === true ||
        flag.EventBridgeEnabled === 'true'
      ) {
        enabled.add(id);
      }
    }
  }
  for (const id of resolver.logicalIds()) {
    const resource: CfnResource = resolver.template.Resources[id]!;
    if (resource.Type !== 'Custom::S3BucketNotifications') continue;
    const configuration = resource.Properties?.['NotificationConfiguration'] as
      { EventBridgeConfiguration?: unknown } | undefined;
    if (configuration?.EventBridgeConfiguration === undefined) continue;
    const bucketName = resolver.resolveString(
      resource.Properties?.['BucketName'],
      propertyPath(id, 'BucketName'),
    );
    const bucketId = bucketIdsByName.get(bucketName);
    if (bucketId === undefined) {
      throw new TemplateResolutionError(
        propertyPath(id, 'BucketName'),
        `bucket ${bucketName} is not a bucket of this stack`,
      );
    }
    enabled.add(bucketId);
  }
  return enabled;
}

function describeTable(resolver: TemplateResolver, logicalId: string): TableDescription {
  const properties = resolvedTableProperties(resolver, logicalId);
  const indexes = (key: string) =>
    ((properties[key] as CfnIndex[] | undefined) ?? []).map((index) => ({
      name: index.IndexName,
      key: keyOf(index.KeySchema),
    }));
  const ttl = properties['TimeToLiveSpecification'] as
    { AttributeName?: string; Enabled?: boolean } | undefined;
  return {
    logicalId,
    name: resolver.physicalName(logicalId),
    arn: resolver.attribute(logicalId, 'Arn', `Resources.${logicalId}`),
    key: keyOf(properties['KeySchema'] as CfnKeySchemaElement[] | undefined),
    billingMode: properties['BillingMode'] === 'PAY_PER_REQUEST' ? 'PAY_PER_REQUEST' : 'PROVISIONED',
    globalSecondaryIndexes: indexes('GlobalSecondaryIndexes'),
    localSecondaryIndexes: indexes('LocalSecondaryIndexes'),
    timeToLiveAttribute: ttl?.Enabled === false ? undefined : ttl?.AttributeName,
  };
}

function describeQueue(resolver: TemplateResolver, logicalId: string): QueueDescription {
  const attributes = queueAttributes(resolver, logicalId);
  const number = (key: string, fallback: number) =>
    attributes[key] === undefined ? fallback : Number(attributes[key]);
  const redrive =
    attributes['RedrivePolicy'] === undefined
      ? undefined
      : (JSON.parse(attributes['RedrivePolicy']) as {
          deadLetterTargetArn: string;
          maxReceiveCount: number;
        });
  const dlqId = [...referencedLogicalIds(propertiesOf(resolver, logicalId)['RedrivePolicy'])].find(
    (id) => resolver.template.Resources[id]?.Type === 'AWS::SQS::Queue',
  );
  const at = `Resources.${logicalId}`;
  return {
    logicalId,
    name: resolver.attribute(logicalId, 'QueueName', at),
    arn: resolver.attribute(logicalId, 'Arn', at),
    url: resolver.attribute(logicalId, 'QueueUrl', at),
    fifo: attributes['FifoQueue'] === 'true',
    visibilityTimeoutSeconds: number('VisibilityTimeout', 30),
    messageRetentionPeriodSeconds: number('MessageRetentionPeriod', 345_600),
    delaySeconds: number('DelaySeconds', 0),
    receiveMessageWaitTimeSeconds: number('ReceiveMessageWaitTimeSeconds', 0),
    redrivePolicy:
      redrive === undefined
        ? undefined
        : {
            deadLetterTargetArn: redrive.deadLetterTargetArn,
            maxReceiveCount: redrive.maxReceiveCount,
            deadLetterQueueLogicalId: dlqId,
          },
  };
}

function describeTargets(
  resolver: TemplateResolver,
  logicalId: string,
  raw: unknown,
  at: string,
): TargetDescription[] {
  const targets = resolver.resolve(raw ?? [], at);
  if (!Array.isArray(targets)) throw new TemplateResolutionError(at, 'Targets must be a list');
  return targets.map((target: Record<string, unknown>, index) =>
    describeTarget(resolver, target, `${at}[${index}]`, `${logicalId}-${index}`),
  );
}

function describeTarget(
  resolver: TemplateResolver,
  target: Record<string, unknown>,
  at: string,
  fallbackId: string,
): TargetDescription {
  const arn = target['Arn'];
  if (typeof arn !== 'string') throw new TemplateResolutionError(`${at}.Arn`, 'target has no Arn');
  const transformer = target['InputTransformer'] as
    { InputPathsMap?: Record<string, string>; InputTemplate?: string } | undefined;
  const retry = target['RetryPolicy'] as
    { MaximumEventAgeInSeconds?: number; MaximumRetryAttempts?: number } | undefined;
  const service = arn.split(':')[2];
  const owner = resolver
    .logicalIds()
    .find((id) => HANDLED_TYPES.has(resolver.template.Resources[id]!.Type) && resolver.arn(id) === arn);
  return {
    id: typeof target['Id'] === 'string' ? target['Id'] : fallbackId,
    arn,
    logicalId: owner,
    service:
      service === 'lambda' ||
      service === 'states' ||
      service === 'sqs' ||
      service === 'events' ||
      service === 'sns'
        ? service
        : 'other',
    input: optionalString(target['Input']),
    inputPath: optionalString(target['InputPath']),
    inputTransformer:
      transformer === undefined
        ? undefined
        : { inputPathsMap: transformer.InputPathsMap ?? {}, inputTemplate: transformer.InputTemplate ?? '' },
    roleArn: optionalString(target['RoleArn']),
    sqsMessageGroupId: optionalString(
      (target['SqsParameters'] as { MessageGroupId?: unknown } | undefined)?.MessageGroupId,
    ),
    deadLetterArn: optionalString((target['DeadLetterConfig'] as { Arn?: unknown } | undefined)?.Arn),
    retryPolicy:
      retry === undefined
        ? undefined
        : {
            maximumEventAgeInSeconds: retry.MaximumEventAgeInSeconds,
            maximumRetryAttempts: retry.MaximumRetryAttempts,
          },
  };
}

function optionalString(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function describeRule(
  resolver: TemplateResolver,
  logicalId: string,
): { rule?: EventRuleDescription; schedule?: ScheduleDescription } {
  const properties = propertiesOf(resolver, logicalId);
  const at = `Resources.${logicalId}.Properties`;
  const name = resolver.physicalName(logicalId);
  const arn = resolver.attribute(logicalId, 'Arn', `Resources.${logicalId}`);
  const state = resolver.optionalString(properties['State'], `${at}.State`) ?? 'ENABLED';
  const targets = describeTargets(resolver, logicalId, properties['Targets'], `${at}.Targets`);
  const result: { rule?: EventRuleDescription; schedule?: ScheduleDescription } = {};
  const pattern = resolveJsonProperty(resolver, logicalId, 'EventPattern');
  if (pattern !== undefined) {
    if (typeof pattern !== 'object' || pattern === null || Array.isArray(pattern)) {
      throw new TemplateResolutionError(`${at}.EventPattern`, 'EventPattern must be a JSON object');
    }
    result.rule = {
      logicalId,
      name,
      arn,
      eventBusName: resolver.ruleBusName(logicalId),
      eventPattern: pattern as Record<string, unknown>,
      state,
      description: resolver.optionalString(properties['Description'], `${at}.Description`),
      targets,
    };
  }
  const scheduleExpression = resolver.optionalString(
    properties['ScheduleExpression'],
    `${at}.ScheduleExpression`,
  );
  if (scheduleExpression !== undefined) {
    result.schedule = { logicalId, source: 'events-rule', name, arn, scheduleExpression, state, targets };
  }
  if (pattern === undefined && scheduleExpression === undefined) {
    throw new TemplateResolutionError(at, 'rule has neither EventPattern nor ScheduleExpression');
  }
  return result;
}

function describeSchedulerSchedule(resolver: TemplateResolver, logicalId: string): ScheduleDescription {
  const properties = propertiesOf(resolver, logicalId);
  const at = `Resources.${logicalId}.Properties`;
  const target = resolver.resolve(properties['Target'], `${at}.Target`) as
    Record<string, unknown> | undefined;
  if (target === undefined) throw new TemplateResolutionError(`${at}.Target`, 'schedule has no Target');
  return {
    logicalId,
    source: 'scheduler',
    name: resolver.physicalName(logicalId),
    arn: resolver.attribute(logicalId, 'Arn', `Resources.${logicalId}`),
    scheduleExpression: resolver.resolveString(properties['ScheduleExpression'], `${at}.ScheduleExpression`),
    state: resolver.optionalString(properties['State'], `${at}.State`) ?? 'ENABLED',
    targets: [describeTarget(resolver, target, `${at}.Target`, `${logicalId}-0`)],
  };
}

function describeFunction(
  resolver: TemplateResolver,
  logicalId: string,
  projectRoot: string,
): LambdaFunctionDescription {
  const resource = resolver.resource(logicalId);
  const properties = resource.Properties ?? {};
  const at = `Resources.${logicalId}.Properties`;
  const entry = resource.Metadata?.[ENTRY_METADATA_KEY];
  if (typeof entry !== 'string' || entry === '') {
    throw new TemplateResolutionError(
      `Resources.${logicalId}.Metadata.${ENTRY_METADATA_KEY}`,
      `function ${logicalId} has no '${ENTRY_METADATA_KEY}' metadata: the local runtime cannot find its TypeScript ` +
        `entry (create handlers with the project's Lambda construct, which sets it to the repo-relative entry such as lambda/plan.ts)`,
    );
  }
  const handler = resolver.optionalString(properties['Handler'], `${at}.Handler`) ?? 'index.handler';
  const variables = resolver.resolve(
    (properties['Environment'] as { Variables?: unknown } | undefined)?.Variables ?? {},
    `${at}.Environment.Variables`,
  ) as Record<string, unknown>;
  const environment = Object.fromEntries(
    Object.entries(variables).map(([key, value]) => [
      key,
      typeof value === 'string' ? value : JSON.stringify(value),
    ]),
  );
  const numberProperty = (key: string, fallback: number): number => {
    const value = resolver.resolve(properties[key], `${at}.${key}`);
    return value === undefined ? fallback : Number(value);
  };
  const reserved = resolver.resolve(
    properties['ReservedConcurrentExecutions'],
    `${at}.ReservedConcurrentExecutions`,
  );
  return {
    logicalId,
    name: resolver.physicalName(logicalId),
    arn: resolver.attribute(logicalId, 'Arn', `Resources.${logicalId}`),
    handler,
    handlerExport: handler.slice(handler.lastIndexOf('.') + 1),
    runtime: resolver.optionalString(properties['Runtime'], `${at}.Runtime`),
    timeoutSeconds: numberProperty('Timeout', 3),
    memoryMb: numberProperty('MemorySize', 128),
    environment,
    entry,
    entryPath: path.resolve(projectRoot, entry),
    reservedConcurrency: reserved === undefined ? undefined : Number(reserved),
  };
}

function describeEventSourceMapping(
  resolver: TemplateResolver,
  logicalId: string,
  functions: LambdaFunctionDescription[],
  queues: QueueDescription[],
): EventSourceMappingDescription {
  const properties = resolver.resolve(
    propertiesOf(resolver, logicalId),
    `Resources.${logicalId}.Properties`,
  ) as Record<string, unknown>;
  const at = `Resources.${logicalId}.Properties`;
  const eventSourceArn = properties['EventSourceArn'];
  const functionName = properties['FunctionName'];
  if (typeof eventSourceArn !== 'string')
    throw new TemplateResolutionError(`${at}.EventSourceArn`, 'missing EventSourceArn');
  if (typeof functionName !== 'string')
    throw new TemplateResolutionError(`${at}.FunctionName`, 'missing FunctionName');
  const unqualified = functionName.replace(/^(arn:[^:]+:lambda:[^:]+:[^:]+:function:[^:]+):.*$/, '$1');
  const fn = functions.find((candidate) => candidate.name === unqualified || candidate.arn === unqualified);
  const scaling = properties['ScalingConfig'] as { MaximumConcurrency?: number } | undefined;
  return {
    logicalId,
    uuid: resolver.ref(logicalId, `Resources.${logicalId}`),
    eventSourceArn,
    queueLogicalId: queues.find((queue) => queue.arn === eventSourceArn)?.logicalId,
    functionLogicalId: fn?.logicalId,
    functionName: fn?.name ?? unqualified.split(':').at(-1)!,
    functionArn:
      fn?.arn ??
      (unqualified.startsWith('arn:')
        ? unqualified
        : `arn:aws:lambda:${resolver.region}:${resolver.accountId}:function:${unqualified}`),
    batchSize: properties['BatchSize'] === undefined ? 10 : Number(properties['BatchSize']),
    maximumBatchingWindowInSeconds:
      properties['MaximumBatchingWindowInSeconds'] === undefined
        ? 0
        : Number(properties['MaximumBatchingWindowInSeconds']),
    functionResponseTypes: (properties['FunctionResponseTypes'] as string[] | undefined) ?? [],
    enabled:
      properties['Enabled'] === undefined
        ? true
        : properties['Enabled'] === true || properties['Enabled'] === 'true',
    maximumConcurrency:
      scaling?.MaximumConcurrency === undefined ? undefined : Number(scaling.MaximumConcurrency),
    filterCriteria: properties['FilterCriteria'],
  };
}

function describeStateMachine(
  resolver: TemplateResolver,
  logicalId: string,
  assetDirectory: string | undefined,
): StateMachineDescription {
  const properties = propertiesOf(resolver, logicalId);
  const at = `Resources.${logicalId}.Properties`;
  const substitutions = Object.fromEntries(
    Object.entries((properties['DefinitionSubstitutions'] as Record<string, unknown> | undefined) ?? {}).map(
      ([key, value]) => [key, resolver.resolveString(value, `${at}.DefinitionSubstitutions.${key}`)],
    ),
  );
  const substitute = (text: string): string =>
    text.replace(/\$\{([^}]+)\}/g, (match, key: string) =>
      Object.hasOwn(substitutions, key) ? substitutions[key]! : match,
    );
  let definitionText: string;
  if (properties['DefinitionString'] !== undefined) {
    definitionText = resolver.resolveString(properties['DefinitionString'], `${at}.DefinitionString`);
  } else if (properties['Definition'] !== undefined) {
    definitionText = JSON.stringify(resolver.resolve(properties['Definition'], `${at}.Definition`));
  } else if (properties['DefinitionS3Location'] !== undefined) {
    definitionText = readDefinitionAsset(resolver, logicalId, assetDirectory);
  } else {
    throw new TemplateResolutionError(
      at,
      'state machine has no DefinitionString, Definition or DefinitionS3Location',
    );
  }
  let definition: unknown;
  try {
    definition = JSON.parse(substitute(definitionText));
  } catch (error) {
    throw new TemplateResolutionError(
      `${at}.DefinitionString`,
      'the definition is not valid JSON after substitution',
      {
        cause: error,
      },
    );
  }
  const type =
    resolver.optionalString(properties['StateMachineType'], `${at}.StateMachineType`) ?? 'STANDARD';
  if (type !== 'STANDARD' && type !== 'EXPRESS') {
    throw new TemplateResolutionError(`${at}.StateMachineType`, `unknown state machine type ${type}`);
  }
  return {
    logicalId,
    name: resolver.physicalName(logicalId),
    arn: resolver.attribute(logicalId, 'Arn', `Resources.${logicalId}`),
    type,
    definition: definition as Record<string, unknown>,
    roleArn: safeOptional(() => resolver.optionalString(properties['RoleArn'], `${at}.RoleArn`)),
  };
}

/** A role ARN is informational locally; one built from something unknown locally is left out. */
function safeOptional(compute: () => string | undefined): string | undefined {
  try {
    return compute();
  } catch (error) {
    if (error instanceof TemplateResolutionError) return undefined;
    throw error;
  }
}

/** CDK's `DefinitionBody.fromFile` uploads the ASL as an asset: cdk.out holds it as `asset.<key>`. */
function readDefinitionAsset(
  resolver: TemplateResolver,
  logicalId: string,
  assetDirectory: string | undefined,
): string {
  const at = `Resources.${logicalId}.Properties.DefinitionS3Location`;
  const location = resolver.resolve(propertiesOf(resolver, logicalId)['DefinitionS3Location'], at) as
    { Key?: string } | undefined;
  if (assetDirectory === undefined || typeof location?.Key !== 'string') {
    throw new TemplateResolutionError(
      at,
      'the definition is an S3 asset: pass assetDirectory (the cdk.out directory)',
    );
  }
  for (const candidate of [
    path.resolve(assetDirectory, `asset.${location.Key}`),
    path.resolve(assetDirectory, location.Key),
  ]) {
    if (existsSync(candidate) && statSync(candidate).isFile()) return readFileSync(candidate, 'utf8');
  }
  throw new TemplateResolutionError(at, `asset ${location.Key} not found in ${assetDirectory}`);
}

function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
