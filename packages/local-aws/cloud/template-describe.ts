/**
 * Describes a resolved template: everything the local runtime wires (event buses, rules, schedules, functions, event
 * source mappings, state machines, S3 -> EventBridge buckets), with local values, without touching any service.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';

import {
  TemplateResolutionError,
  TemplateResolver,
  type CfnResource,
  type CfnTemplate,
  type ResolveContext,
} from './intrinsics';
import {
  EventRuleDescription,
  EventSourceMappingDescription,
  IgnoredResource,
  KeyDescription,
  LambdaFunctionDescription,
  ProvisionedStack,
  QueueDescription,
  ScheduleDescription,
  StateMachineDescription,
  TableDescription,
  TargetDescription,
} from './stack-description';
/**
 * The Metadata key a Lambda function resource carries to name its TypeScript entry (repo-relative), which the local
 * cloud runs instead of the bundled asset: this package's convention; the app that synthesizes the template sets it
 * (this repository's Lambda construct does, and the CLI glue checks at compile time that both spell it the same).
 */
export const ENTRY_METADATA_KEY = 'corpus:entry';
/** The Metadata key our CDK Lambda construct sets to the handler's repo-relative TypeScript entry. */

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

/** Resolves and describes the stack without touching any service (queue URLs are then the AWS-style ones). */
export function describeStack(template: CfnTemplate, options: DescribeOptions): ProvisionedStack {
  return describeResolved(new TemplateResolver(template, options), options);
}

export function isTableType(type: string): boolean {
  return type === 'AWS::DynamoDB::Table' || type === 'AWS::DynamoDB::GlobalTable';
}

export function propertiesOf(resolver: TemplateResolver, logicalId: string): Record<string, unknown> {
  return resolver.resource(logicalId).Properties ?? {};
}

export function propertyPath(logicalId: string, property: string): string {
  return `Resources.${logicalId}.Properties.${property}`;
}

/** Logical ids referenced (Ref / Fn::GetAtt / Fn::Sub ${X...}) anywhere inside `value`. */
export function referencedLogicalIds(value: unknown, into = new Set<string>()): Set<string> {
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

/** The stack of a resolved template, described with local values. */
export function describeResolved(resolver: TemplateResolver, options: DescribeOptions): ProvisionedStack {
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

export function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export interface CfnKeySchemaElement {
  AttributeName: string;
  KeyType: 'HASH' | 'RANGE';
}

export interface CfnIndex {
  IndexName: string;
  KeySchema: CfnKeySchemaElement[];
  Projection?: { ProjectionType?: string; NonKeyAttributes?: string[] };
  ProvisionedThroughput?: { ReadCapacityUnits: number; WriteCapacityUnits: number };
}

export function keyOf(
  schema: ReadonlyArray<{ AttributeName?: string; KeyType?: string }> | undefined,
): KeyDescription {
  return {
    partitionKey: schema?.find((element) => element.KeyType === 'HASH')?.AttributeName ?? '',
    sortKey: schema?.find((element) => element.KeyType === 'RANGE')?.AttributeName,
  };
}

export function resolvedTableProperties(
  resolver: TemplateResolver,
  logicalId: string,
): Record<string, unknown> {
  const properties = resolver.resolve(propertiesOf(resolver, logicalId), `Resources.${logicalId}.Properties`);
  return (properties ?? {}) as Record<string, unknown>;
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

export function queueAttributes(resolver: TemplateResolver, logicalId: string): Record<string, string> {
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
export function resolveJsonProperty(
  resolver: TemplateResolver,
  logicalId: string,
  property: string,
): unknown {
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
