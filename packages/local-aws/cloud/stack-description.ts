/** What a provisioned (or described) stack is: its resources, described with local values. */

import { TemplateResolutionError, TemplateResolver } from './intrinsics';
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
