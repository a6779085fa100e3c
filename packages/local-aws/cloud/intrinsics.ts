/**
 * CloudFormation template resolution for the local cloud: intrinsic functions, conditions, parameters, pseudo
 * parameters, deterministic physical names and ARNs in the real formats.
 */
import { createHash } from 'node:crypto';

/** A CloudFormation resource as it appears in a template. */
export interface CfnResource {
  Type: string;
  Properties?: Record<string, unknown>;
  Metadata?: Record<string, unknown>;
  Condition?: string;
  DependsOn?: string | string[];
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
}

/** A template parameter. */
export interface CfnParameter {
  Type: string;
  Default?: unknown;
  Description?: string;
  AllowedValues?: unknown[];
}

/** A CloudFormation template (JSON form). */
export interface CfnTemplate {
  AWSTemplateFormatVersion?: string;
  Description?: string;
  Transform?: string | string[];
  Parameters?: Record<string, CfnParameter>;
  Mappings?: Record<string, Record<string, Record<string, unknown>>>;
  Conditions?: Record<string, unknown>;
  Resources: Record<string, CfnResource>;
  Outputs?: Record<string, { Value: unknown; Description?: string; Export?: unknown; Condition?: string }>;
  Rules?: Record<string, unknown>;
}

/** The stack-level values pseudo parameters and names derive from. */
export interface ResolveContext {
  /** Stack name: `AWS::StackName`, and the prefix of generated physical names. */
  stackName: string;
  /** `AWS::Region`. */
  region: string;
  /** `AWS::AccountId`. @default '000000000000' */
  accountId?: string;
  /** Values for template parameters (else their Default). Lists for List<...>/CommaDelimitedList parameters. */
  parameters?: Record<string, string | string[]>;
}

/** The default local account id (also the one fauxqs puts in queue ARNs). */
export const DEFAULT_ACCOUNT_ID = '000000000000';

/** A reference or intrinsic in the template cannot be resolved; `path` says where (e.g. `Resources.Fn.Properties.Environment.Variables.X`). */
export class TemplateResolutionError extends Error {
  override readonly name = 'TemplateResolutionError';
  /** Where in the template the failing value sits. */
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(`${path}: ${message}`, options);
    this.path = path;
  }
}

/** Marks a value removed by `Ref: AWS::NoValue`. */
const NO_VALUE: unique symbol = Symbol('AWS::NoValue');

/** Name property and length limit per resource type (for explicit and generated physical names). */
const NAMING: Record<string, { property?: string; maxLength: number }> = {
  'AWS::S3::Bucket': { property: 'BucketName', maxLength: 63 },
  'AWS::DynamoDB::Table': { property: 'TableName', maxLength: 255 },
  'AWS::DynamoDB::GlobalTable': { property: 'TableName', maxLength: 255 },
  'AWS::SQS::Queue': { property: 'QueueName', maxLength: 80 },
  'AWS::Lambda::Function': { property: 'FunctionName', maxLength: 64 },
  'AWS::StepFunctions::StateMachine': { property: 'StateMachineName', maxLength: 80 },
  'AWS::Events::EventBus': { property: 'Name', maxLength: 256 },
  'AWS::Events::Rule': { property: 'Name', maxLength: 64 },
  'AWS::Scheduler::Schedule': { property: 'Name', maxLength: 64 },
  'AWS::SNS::Topic': { property: 'TopicName', maxLength: 256 },
  'AWS::IAM::Role': { property: 'RoleName', maxLength: 64 },
  'AWS::IAM::Policy': { property: 'PolicyName', maxLength: 128 },
  'AWS::IAM::ManagedPolicy': { property: 'ManagedPolicyName', maxLength: 128 },
  'AWS::Logs::LogGroup': { property: 'LogGroupName', maxLength: 512 },
  'AWS::CloudWatch::Alarm': { property: 'AlarmName', maxLength: 255 },
  'AWS::CloudWatch::Dashboard': { property: 'DashboardName', maxLength: 255 },
  'AWS::KMS::Alias': { property: 'AliasName', maxLength: 256 },
};

/** Resolves intrinsic functions and names against one template and one stack context. */
export class TemplateResolver {
  /** The template being resolved. */
  readonly template: CfnTemplate;
  /** Stack name. */
  readonly stackName: string;
  /** Region. */
  readonly region: string;
  /** Account id. */
  readonly accountId: string;
  /** `aws`. */
  readonly partition = 'aws';
  /** `amazonaws.com`. */
  readonly urlSuffix = 'amazonaws.com';

  private readonly parameterValues: Record<string, string | string[]>;
  private readonly conditionCache = new Map<string, boolean>();
  private readonly nameCache = new Map<string, string>();
  private readonly overrides = new Map<string, Record<string, string>>();
  private readonly inProgress = new Set<string>();

  constructor(template: CfnTemplate, context: ResolveContext) {
    if (typeof template !== 'object' || template === null || typeof template.Resources !== 'object') {
      throw new TemplateResolutionError('Resources', 'not a CloudFormation template (no Resources section)');
    }
    this.template = template;
    this.stackName = context.stackName;
    this.region = context.region;
    this.accountId = context.accountId ?? DEFAULT_ACCOUNT_ID;
    this.parameterValues = context.parameters ?? {};
  }

  /** The stack id `AWS::StackId` resolves to (deterministic). */
  get stackId(): string {
    return `arn:${this.partition}:cloudformation:${this.region}:${this.accountId}:stack/${this.stackName}/${uuidFrom(this.stackName)}`;
  }

  /** Whether the resource exists in this stack (declared, and its Condition, if any, holds). */
  has(logicalId: string): boolean {
    const resource = this.template.Resources[logicalId];
    if (resource === undefined) return false;
    return (
      resource.Condition === undefined ||
      this.condition(resource.Condition, `Resources.${logicalId}.Condition`)
    );
  }

  /** The logical ids of the resources that exist, in template order. */
  logicalIds(): string[] {
    return Object.keys(this.template.Resources).filter((id) => this.has(id));
  }

  /** The resource declaration; throws when absent or excluded by its condition. */
  resource(logicalId: string, path = `Resources.${logicalId}`): CfnResource {
    const resource = this.template.Resources[logicalId];
    if (resource === undefined)
      throw new TemplateResolutionError(path, `no resource with logical id ${logicalId}`);
    if (!this.has(logicalId)) {
      throw new TemplateResolutionError(
        path,
        `resource ${logicalId} is excluded by condition ${resource.Condition}`,
      );
    }
    return resource;
  }

  /**
   * Replaces attribute values with those of the provisioned local resource (e.g. a queue's local URL and ARN).
   * Later Ref/GetAtt resolutions see them.
   */
  setAttributes(logicalId: string, attributes: Record<string, string>): void {
    this.overrides.set(logicalId, { ...this.overrides.get(logicalId), ...attributes });
  }

  /**
   * The resource's physical name: its explicit name property when present, else `<stackName>-<logicalId>` fitted
   * to the service's rules (S3: lower case, valid characters, <= 63; FIFO queues end in `.fifo`), with a hash
   * suffix when shortened so distinct logical ids stay distinct.
   */
  physicalName(logicalId: string): string {
    const cached = this.nameCache.get(logicalId);
    if (cached !== undefined) return cached;
    const resource = this.resource(logicalId);
    const naming = NAMING[resource.Type];
    const explicit = naming?.property === undefined ? undefined : resource.Properties?.[naming.property];
    let name: string;
    if (explicit !== undefined) {
      const path = `Resources.${logicalId}.Properties.${naming?.property}`;
      name = this.guarded(`name:${logicalId}`, path, () => this.resolveString(explicit, path));
    } else {
      name = generatedName(this.stackName, logicalId, resource, naming?.maxLength ?? 255);
    }
    this.nameCache.set(logicalId, name);
    return name;
  }

  /** The value `Ref` returns for the resource. */
  ref(logicalId: string, path: string): string {
    const override = this.overrides.get(logicalId)?.['Ref'];
    if (override !== undefined) return override;
    const resource = this.resource(logicalId, path);
    switch (resource.Type) {
      case 'AWS::SQS::Queue':
        return this.attribute(logicalId, 'QueueUrl', path);
      case 'AWS::StepFunctions::StateMachine':
        return this.attribute(logicalId, 'Arn', path);
      case 'AWS::SNS::Topic':
        return this.attribute(logicalId, 'TopicArn', path);
      case 'AWS::IAM::ManagedPolicy':
        return this.attribute(logicalId, 'PolicyArn', path);
      case 'AWS::Events::Rule': {
        const bus = this.ruleBusName(logicalId);
        const name = this.physicalName(logicalId);
        return bus === 'default' ? name : `${bus}|${name}`;
      }
      case 'AWS::Lambda::EventSourceMapping':
        return uuidFrom(`${this.stackName}/${logicalId}`);
      case 'AWS::KMS::Key':
        return uuidFrom(`${this.stackName}/${logicalId}`);
      default:
        return this.physicalName(logicalId);
    }
  }

  /** The value `Fn::GetAtt` returns; throws a TemplateResolutionError naming `path` when unknown. */
  attribute(logicalId: string, attributeName: string, path: string): string {
    const override = this.overrides.get(logicalId)?.[attributeName];
    if (override !== undefined) return override;
    const value = this.attributes(logicalId, path)[attributeName];
    if (value === undefined) {
      const type = this.resource(logicalId, path).Type;
      throw new TemplateResolutionError(
        path,
        `attribute ${attributeName} of ${logicalId} (${type}) is not known to the local runtime`,
      );
    }
    return value;
  }

  /** The resource's ARN when its type has one the local runtime can compute, else undefined. */
  arn(logicalId: string): string | undefined {
    const attributes = {
      ...this.attributes(logicalId, `Resources.${logicalId}`),
      ...this.overrides.get(logicalId),
    };
    return attributes['Arn'] ?? attributes['TopicArn'] ?? attributes['PolicyArn'];
  }

  /** All attributes the local runtime knows for the resource (with provisioned overrides applied). */
  knownAttributes(logicalId: string): Record<string, string> {
    return { ...this.attributes(logicalId, `Resources.${logicalId}`), ...this.overrides.get(logicalId) };
  }

  /** The event bus name a rule is attached to (`default` when absent; the name part of an ARN). */
  ruleBusName(logicalId: string): string {
    const raw = this.resource(logicalId).Properties?.['EventBusName'];
    if (raw === undefined) return 'default';
    const value = this.resolveString(raw, `Resources.${logicalId}.Properties.EventBusName`);
    return value.startsWith('arn:') ? value.slice(value.indexOf('event-bus/') + 'event-bus/'.length) : value;
  }

  private attributes(logicalId: string, path: string): Record<string, string> {
    const resource = this.resource(logicalId, path);
    const { partition: p, region: r, accountId: a } = this;
    const name = (): string => this.physicalName(logicalId);
    switch (resource.Type) {
      case 'AWS::S3::Bucket':
        return {
          Arn: `arn:${p}:s3:::${name()}`,
          DomainName: `${name()}.s3.${this.urlSuffix}`,
          RegionalDomainName: `${name()}.s3.${r}.${this.urlSuffix}`,
          DualStackDomainName: `${name()}.s3.dualstack.${r}.${this.urlSuffix}`,
          WebsiteURL: `http://${name()}.s3-website-${r}.${this.urlSuffix}`,
        };
      case 'AWS::DynamoDB::Table':
      case 'AWS::DynamoDB::GlobalTable': {
        const arn = `arn:${p}:dynamodb:${r}:${a}:table/${name()}`;
        return { Arn: arn, StreamArn: `${arn}/stream/1970-01-01T00:00:00.000`, TableId: uuidFrom(arn) };
      }
      case 'AWS::SQS::Queue':
        return {
          Arn: `arn:${p}:sqs:${r}:${a}:${name()}`,
          QueueName: name(),
          QueueUrl: `https://sqs.${r}.${this.urlSuffix}/${a}/${name()}`,
        };
      case 'AWS::Lambda::Function':
        return { Arn: `arn:${p}:lambda:${r}:${a}:function:${name()}` };
      case 'AWS::StepFunctions::StateMachine':
        return {
          Arn: `arn:${p}:states:${r}:${a}:stateMachine:${name()}`,
          Name: name(),
          StateMachineRevisionId: `arn:${p}:states:${r}:${a}:stateMachine:${name()}`,
        };
      case 'AWS::Events::EventBus':
        return { Arn: `arn:${p}:events:${r}:${a}:event-bus/${name()}`, Name: name() };
      case 'AWS::Events::Rule': {
        const bus = this.ruleBusName(logicalId);
        return { Arn: `arn:${p}:events:${r}:${a}:rule/${bus === 'default' ? '' : `${bus}/`}${name()}` };
      }
      case 'AWS::Scheduler::Schedule': {
        const group =
          this.optionalString(resource.Properties?.['GroupName'], `${path}.Properties.GroupName`) ??
          'default';
        return { Arn: `arn:${p}:scheduler:${r}:${a}:schedule/${group}/${name()}` };
      }
      case 'AWS::SNS::Topic':
        return { TopicArn: `arn:${p}:sns:${r}:${a}:${name()}`, TopicName: name() };
      case 'AWS::IAM::Role':
        return {
          Arn: `arn:${p}:iam::${a}:role/${name()}`,
          RoleId: `AROA${hashOf(name(), 17).toUpperCase()}`,
        };
      case 'AWS::IAM::ManagedPolicy':
        return {
          PolicyArn: `arn:${p}:iam::${a}:policy/${name()}`,
          Arn: `arn:${p}:iam::${a}:policy/${name()}`,
        };
      case 'AWS::KMS::Key': {
        const keyId = uuidFrom(`${this.stackName}/${logicalId}`);
        return { Arn: `arn:${p}:kms:${r}:${a}:key/${keyId}`, KeyId: keyId };
      }
      case 'AWS::Logs::LogGroup':
        return { Arn: `arn:${p}:logs:${r}:${a}:log-group:${name()}:*` };
      case 'AWS::CloudWatch::Alarm':
        return { Arn: `arn:${p}:cloudwatch:${r}:${a}:alarm:${name()}` };
      case 'AWS::Lambda::EventSourceMapping': {
        const id = uuidFrom(`${this.stackName}/${logicalId}`);
        return { Id: id, EventSourceMappingArn: `arn:${p}:lambda:${r}:${a}:event-source-mapping:${id}` };
      }
      default:
        return {};
    }
  }

  /** Evaluates a named condition of the Conditions section. */
  condition(name: string, path: string): boolean {
    const cached = this.conditionCache.get(name);
    if (cached !== undefined) return cached;
    const definition = this.template.Conditions?.[name];
    if (definition === undefined) throw new TemplateResolutionError(path, `no condition named ${name}`);
    const value = this.guarded(`condition:${name}`, `Conditions.${name}`, () =>
      this.evaluateCondition(definition, `Conditions.${name}`),
    );
    this.conditionCache.set(name, value);
    return value;
  }

  private evaluateCondition(value: unknown, path: string): boolean {
    if (typeof value === 'boolean') return value;
    if (typeof value === 'string' && (value === 'true' || value === 'false')) return value === 'true';
    const intrinsic = singleKey(value);
    if (intrinsic !== undefined) {
      const [key, argument] = intrinsic;
      if (key === 'Condition') {
        if (typeof argument !== 'string') throw new TemplateResolutionError(path, 'Condition takes a name');
        return this.condition(argument, path);
      }
      if (['Fn::Equals', 'Fn::Not', 'Fn::And', 'Fn::Or'].includes(key)) {
        const result = this.resolve(value, path);
        if (typeof result === 'boolean') return result;
      }
    }
    throw new TemplateResolutionError(
      path,
      'not a condition (expected Fn::Equals, Fn::Not, Fn::And, Fn::Or or Condition)',
    );
  }

  /** Resolves every intrinsic in `value`; `Ref: AWS::NoValue` removes the enclosing property or list item. */
  resolve(value: unknown, path: string): unknown {
    const resolved = this.resolveValue(value, path);
    return resolved === NO_VALUE ? undefined : resolved;
  }

  /** Resolves `value` and requires a string (numbers and booleans are stringified, as CloudFormation does). */
  resolveString(value: unknown, path: string): string {
    const resolved = this.resolve(value, path);
    if (typeof resolved === 'string') return resolved;
    if (typeof resolved === 'number' || typeof resolved === 'boolean') return String(resolved);
    throw new TemplateResolutionError(path, `expected a string, got ${describe(resolved)}`);
  }

  /** Like resolveString, but undefined stays undefined. */
  optionalString(value: unknown, path: string): string | undefined {
    return value === undefined ? undefined : this.resolveString(value, path);
  }

  private resolveValue(value: unknown, path: string): unknown {
    if (value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) {
      return value
        .map((item, index) => this.resolveValue(item, `${path}[${index}]`))
        .filter((item) => item !== NO_VALUE);
    }
    const intrinsic = singleKey(value);
    if (intrinsic !== undefined && (intrinsic[0] === 'Ref' || intrinsic[0].startsWith('Fn::'))) {
      return this.intrinsic(intrinsic[0], intrinsic[1], `${path}.${intrinsic[0]}`);
    }
    const result: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      const resolved = this.resolveValue(item, `${path}.${key}`);
      if (resolved !== NO_VALUE) result[key] = resolved;
    }
    return result;
  }

  private intrinsic(name: string, argument: unknown, path: string): unknown {
    switch (name) {
      case 'Ref':
        return this.resolveRef(argument, path);
      case 'Fn::GetAtt':
        return this.resolveGetAtt(argument, path);
      case 'Fn::Join': {
        const [delimiter, list] = this.arguments(argument, 2, path);
        const items = this.resolveValue(list, `${path}[1]`);
        if (!Array.isArray(items)) throw new TemplateResolutionError(path, 'Fn::Join needs a list');
        return items
          .map((item, index) => this.scalar(item, `${path}[1][${index}]`))
          .join(this.scalar(delimiter, path));
      }
      case 'Fn::Sub':
        return this.resolveSub(argument, path);
      case 'Fn::Select': {
        const [indexArgument, list] = this.arguments(argument, 2, path);
        const index = Number(this.resolveValue(indexArgument, `${path}[0]`));
        const items = this.resolveValue(list, `${path}[1]`);
        if (!Array.isArray(items)) throw new TemplateResolutionError(path, 'Fn::Select needs a list');
        if (!Number.isInteger(index) || index < 0 || index >= items.length) {
          throw new TemplateResolutionError(
            path,
            `Fn::Select index ${index} out of range (list of ${items.length})`,
          );
        }
        return items[index];
      }
      case 'Fn::Split': {
        const [delimiter, source] = this.arguments(argument, 2, path);
        return this.scalar(this.resolveValue(source, `${path}[1]`), `${path}[1]`).split(
          this.scalar(delimiter, path),
        );
      }
      case 'Fn::If': {
        const [conditionName, whenTrue, whenFalse] = this.arguments(argument, 3, path);
        if (typeof conditionName !== 'string')
          throw new TemplateResolutionError(path, 'Fn::If needs a condition name');
        return this.condition(conditionName, path)
          ? this.resolveValue(whenTrue, `${path}[1]`)
          : this.resolveValue(whenFalse, `${path}[2]`);
      }
      case 'Fn::Equals': {
        const [left, right] = this.arguments(argument, 2, path);
        return (
          JSON.stringify(this.resolveValue(left, `${path}[0]`)) ===
          JSON.stringify(this.resolveValue(right, `${path}[1]`))
        );
      }
      case 'Fn::Not': {
        const [operand] = this.arguments(argument, 1, path);
        return !this.evaluateCondition(operand, `${path}[0]`);
      }
      case 'Fn::And':
      case 'Fn::Or': {
        if (!Array.isArray(argument)) throw new TemplateResolutionError(path, `${name} needs a list`);
        const values = argument.map((operand, index) => this.evaluateCondition(operand, `${path}[${index}]`));
        return name === 'Fn::And' ? values.every(Boolean) : values.some(Boolean);
      }
      case 'Fn::Base64':
        return Buffer.from(this.scalar(this.resolveValue(argument, path), path), 'utf8').toString('base64');
      case 'Fn::GetAZs': {
        const region = this.scalar(this.resolveValue(argument, path), path) || this.region;
        return ['a', 'b', 'c'].map((zone) => `${region}${zone}`);
      }
      case 'Fn::FindInMap': {
        if (!Array.isArray(argument) || argument.length < 3) {
          throw new TemplateResolutionError(path, 'Fn::FindInMap needs [map, topKey, secondKey]');
        }
        const [mapName, topKey, secondKey] = argument
          .slice(0, 3)
          .map((item, index) =>
            this.scalar(this.resolveValue(item, `${path}[${index}]`), `${path}[${index}]`),
          );
        const found = this.template.Mappings?.[mapName!]?.[topKey!]?.[secondKey!];
        if (found !== undefined) return found;
        const fallback = (argument[3] as { DefaultValue?: unknown } | undefined)?.DefaultValue;
        if (fallback !== undefined) return this.resolveValue(fallback, `${path}[3].DefaultValue`);
        throw new TemplateResolutionError(path, `no mapping ${mapName}.${topKey}.${secondKey}`);
      }
      case 'Fn::ToJsonString':
        return JSON.stringify(this.resolve(argument, path));
      case 'Fn::Length': {
        const items = this.resolveValue(argument, path);
        if (!Array.isArray(items)) throw new TemplateResolutionError(path, 'Fn::Length needs a list');
        return items.length;
      }
      case 'Fn::ImportValue':
        throw new TemplateResolutionError(
          path,
          'Fn::ImportValue (a cross-stack export) is not supported by the local runtime: deploy one stack, or pass the value as a parameter',
        );
      default:
        throw new TemplateResolutionError(
          path,
          `intrinsic function ${name} is not supported by the local runtime`,
        );
    }
  }

  private resolveRef(argument: unknown, path: string): unknown {
    if (typeof argument !== 'string')
      throw new TemplateResolutionError(path, 'Ref takes a logical id or parameter name');
    switch (argument) {
      case 'AWS::Region':
        return this.region;
      case 'AWS::AccountId':
        return this.accountId;
      case 'AWS::Partition':
        return this.partition;
      case 'AWS::URLSuffix':
        return this.urlSuffix;
      case 'AWS::StackName':
        return this.stackName;
      case 'AWS::StackId':
        return this.stackId;
      case 'AWS::NotificationARNs':
        return [];
      case 'AWS::NoValue':
        return NO_VALUE;
    }
    if (this.template.Parameters?.[argument] !== undefined) return this.parameter(argument, path);
    if (this.template.Resources[argument] !== undefined)
      return this.guarded(`ref:${argument}`, path, () => this.ref(argument, path));
    throw new TemplateResolutionError(path, `Ref to unknown logical id or parameter ${argument}`);
  }

  private parameter(name: string, path: string): string | string[] {
    const declaration = this.template.Parameters?.[name];
    const given = this.parameterValues[name];
    const value = given ?? (declaration?.Default === undefined ? undefined : declaration.Default);
    if (value === undefined) {
      throw new TemplateResolutionError(path, `parameter ${name} has no Default and no value was given`);
    }
    const isList =
      declaration?.Type === 'CommaDelimitedList' || declaration?.Type.startsWith('List<') === true;
    if (isList && typeof value === 'string') return value.split(',').map((item) => item.trim());
    return Array.isArray(value) ? value.map(String) : String(value);
  }

  private resolveGetAtt(argument: unknown, path: string): string {
    let logicalId: unknown;
    let attributeName: unknown;
    if (typeof argument === 'string') {
      const dot = argument.indexOf('.');
      [logicalId, attributeName] =
        dot < 0 ? [argument, ''] : [argument.slice(0, dot), argument.slice(dot + 1)];
    } else if (Array.isArray(argument) && argument.length === 2) {
      logicalId = argument[0];
      attributeName = this.resolveValue(argument[1], `${path}[1]`);
    }
    if (typeof logicalId !== 'string' || typeof attributeName !== 'string' || attributeName === '') {
      throw new TemplateResolutionError(path, 'Fn::GetAtt takes [logicalId, attributeName]');
    }
    if (this.template.Resources[logicalId] === undefined) {
      throw new TemplateResolutionError(path, `Fn::GetAtt on unknown logical id ${logicalId}`);
    }
    const id = logicalId;
    const attribute = attributeName;
    return this.guarded(`getatt:${id}.${attribute}`, path, () => this.attribute(id, attribute, path));
  }

  private resolveSub(argument: unknown, path: string): string {
    let template: unknown = argument;
    let variables: Record<string, unknown> = {};
    if (Array.isArray(argument)) {
      if (argument.length !== 2 || typeof argument[1] !== 'object' || argument[1] === null) {
        throw new TemplateResolutionError(path, 'Fn::Sub takes a string or [string, {variables}]');
      }
      [template, variables] = argument as [unknown, Record<string, unknown>];
    }
    if (typeof template !== 'string') throw new TemplateResolutionError(path, 'Fn::Sub needs a string');
    return template.replace(/\$\{([^}]*)\}/g, (_match, expression: string) => {
      if (expression.startsWith('!')) return `\${${expression.slice(1)}}`;
      const name = expression.trim();
      if (Object.hasOwn(variables, name))
        return this.scalar(this.resolveValue(variables[name], `${path}[1].${name}`), path);
      if (name.includes('.') && !name.startsWith('AWS::')) {
        const dot = name.indexOf('.');
        return this.resolveGetAtt([name.slice(0, dot), name.slice(dot + 1)], `${path}(\${${name}})`);
      }
      return this.scalar(this.resolveRef(name, `${path}(\${${name}})`), path);
    });
  }

  private arguments(argument: unknown, count: number, path: string): unknown[] {
    if (!Array.isArray(argument) || argument.length !== count) {
      throw new TemplateResolutionError(path, `expected a list of ${count} arguments`);
    }
    return argument;
  }

  private scalar(value: unknown, path: string): string {
    const resolved = this.resolveValue(value, path);
    if (typeof resolved === 'string') return resolved;
    if (typeof resolved === 'number' || typeof resolved === 'boolean') return String(resolved);
    throw new TemplateResolutionError(path, `expected a string, got ${describe(resolved)}`);
  }

  /** Runs `compute` while detecting reference cycles (a name defined through itself). */
  private guarded<T>(key: string, path: string, compute: () => T): T {
    if (this.inProgress.has(key)) throw new TemplateResolutionError(path, `circular reference (${key})`);
    this.inProgress.add(key);
    try {
      return compute();
    } finally {
      this.inProgress.delete(key);
    }
  }
}

function singleKey(value: unknown): [string, unknown] | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const keys = Object.keys(value);
  if (keys.length !== 1) return undefined;
  const key = keys[0]!;
  return [key, (value as Record<string, unknown>)[key]];
}

function describe(value: unknown): string {
  if (value === NO_VALUE) return 'AWS::NoValue';
  if (Array.isArray(value)) return 'a list';
  return value === null ? 'null' : typeof value;
}

function hashOf(text: string, length: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/** A deterministic UUID-shaped id derived from `seed`. */
export function uuidFrom(seed: string): string {
  const hex = hashOf(seed, 32);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

/** `<stackName>-<logicalId>` fitted to the type's rules. */
function generatedName(
  stackName: string,
  logicalId: string,
  resource: CfnResource,
  maxLength: number,
): string {
  const base = `${stackName}-${logicalId}`;
  if (resource.Type === 'AWS::S3::Bucket') return s3BucketName(base, maxLength);
  if (resource.Type === 'AWS::SQS::Queue' && isTrue(resource.Properties?.['FifoQueue'])) {
    return `${shorten(base, maxLength - '.fifo'.length)}.fifo`;
  }
  return shorten(base.replace(/[^A-Za-z0-9_.-]/g, '-'), maxLength);
}

function s3BucketName(base: string, maxLength: number): string {
  const cleaned = base
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, '-')
    .replace(/\.{2,}/g, '.')
    .replace(/^[^a-z0-9]+/, '')
    .replace(/[^a-z0-9]+$/, '');
  const padded = cleaned.length >= 3 ? cleaned : `${cleaned}-${hashOf(base, 6)}`;
  return shorten(padded, maxLength);
}

/** Truncates to `maxLength`, replacing the tail with a hash of the whole so truncated names stay distinct. */
function shorten(name: string, maxLength: number): string {
  if (name.length <= maxLength) return name;
  const hash = hashOf(name, 8);
  return `${name.slice(0, maxLength - hash.length - 1).replace(/[^A-Za-z0-9]+$/, '')}-${hash}`;
}

function isTrue(value: unknown): boolean {
  return value === true || value === 'true';
}
