import { BatchServiceError } from './batch-errors';
import {
  BATCH_JOB_STATUSES,
  isBatchJobStatus,
  type BatchInvocationType,
  type BatchJobStatus,
} from './batch-status';
import {
  inferenceRefusal,
  INVALID_MODEL_IDENTIFIER_MESSAGE,
  type ModelTable,
  type ResolvedModel,
} from './models';

/** Smithy patterns of the CreateModelInvocationJob members (Bedrock API reference). */
export const BATCH_PATTERNS = {
  jobName: '[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\\+\\-\\.]){0,63}',
  clientRequestToken: '[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}',
  roleArn: 'arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+',
  modelId:
    '(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:(([0-9]{12}:custom-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-:]{1,63}/[a-z0-9]{12}$)|(:foundation-model/[a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}$)))|([a-z0-9-]{1,63}[.]{1}[a-z0-9-]{1,63}([.]?[a-z0-9-]{1,63})([:][a-z0-9-]{1,63}){0,2})|(([0-9a-zA-Z][_-]?)+)',
  s3Uri: "s3://[a-z0-9][-.a-z0-9]{1,61}(?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?",
  accountId: '[0-9]{12}',
  jobIdentifier: '((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?[a-z0-9]{12})',
} as const;

const MODEL_INVOCATION_TYPES: readonly BatchInvocationType[] = ['InvokeModel', 'Converse'];

/** Shortest and longest timeout a job may ask for. */
export const TIMEOUT_HOURS_RANGE = { min: 24, max: 168 } as const;

function fullMatch(pattern: string): RegExp {
  return new RegExp(`^(?:${pattern})$`);
}

const REGEX = Object.fromEntries(
  Object.entries(BATCH_PATTERNS).map(([name, pattern]) => [name, fullMatch(pattern)]),
) as Record<keyof typeof BATCH_PATTERNS, RegExp>;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function quote(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Collects smithy constraint violations and throws them as one ValidationException, as the service does. */
class Violations {
  private readonly items: string[] = [];

  add(value: unknown, path: string, constraint: string): void {
    const shown = value === undefined || value === null ? 'null' : `'${quote(value)}'`;
    this.items.push(`Value ${shown} at '${path}' failed to satisfy constraint: ${constraint}`);
  }

  /** A required string with length bounds and a pattern; returns it when valid. */
  string(
    value: unknown,
    path: string,
    rule: { required?: boolean; min?: number; max: number; pattern?: keyof typeof BATCH_PATTERNS },
  ): string | undefined {
    if (value === undefined || value === null) {
      if (rule.required) this.add(value, path, 'Member must not be null');
      return undefined;
    }
    if (typeof value !== 'string') {
      this.add(value, path, 'Member must be a string');
      return undefined;
    }
    const before = this.items.length;
    if (rule.min !== undefined && value.length < rule.min) {
      this.add(value, path, `Member must have length greater than or equal to ${rule.min}`);
    }
    if (value.length > rule.max) {
      this.add(value, path, `Member must have length less than or equal to ${rule.max}`);
    }
    if (rule.pattern !== undefined && !REGEX[rule.pattern].test(value)) {
      this.add(
        value,
        path,
        `Member must satisfy regular expression pattern: ${BATCH_PATTERNS[rule.pattern]}`,
      );
    }
    return this.items.length === before ? value : undefined;
  }

  enumValue<T extends string>(value: unknown, path: string, allowed: readonly T[]): T | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
    this.add(value, path, `Member must satisfy enum value set: [${allowed.join(', ')}]`);
    return undefined;
  }

  get count(): number {
    return this.items.length;
  }

  throwIfAny(): void {
    const n = this.items.length;
    if (n === 0) return;
    throw new BatchServiceError(
      'ValidationException',
      `${n} validation error${n === 1 ? '' : 's'} detected: ${this.items.join('; ')}`,
    );
  }
}

/** `s3InputDataConfig` of a job. */
export interface BatchS3InputConfig {
  readonly s3Uri: string;
  readonly s3InputFormat?: 'JSONL';
  readonly s3BucketOwner?: string;
}

/** `s3OutputDataConfig` of a job. */
export interface BatchS3OutputConfig {
  readonly s3Uri: string;
  readonly s3EncryptionKeyId?: string;
  readonly s3BucketOwner?: string;
}

/** `vpcConfig` of a job. */
export interface BatchVpcConfig {
  readonly subnetIds: readonly string[];
  readonly securityGroupIds: readonly string[];
}

/** A CreateModelInvocationJob request that passed validation. */
export interface CreateJobInput {
  readonly jobName: string;
  readonly roleArn: string;
  readonly clientRequestToken?: string;
  /** The model id as sent. */
  readonly modelId: string;
  /** The model it names. */
  readonly model: ResolvedModel;
  readonly inputDataConfig: { readonly s3InputDataConfig: BatchS3InputConfig };
  readonly outputDataConfig: { readonly s3OutputDataConfig: BatchS3OutputConfig };
  readonly vpcConfig?: BatchVpcConfig;
  /** The requested timeout, or undefined to use the service default. */
  readonly timeoutDurationInHours?: number;
  readonly tags?: readonly { key: string; value: string }[];
  /** The requested invocation type, if any (InvokeModel when absent). */
  readonly modelInvocationType?: BatchInvocationType;
}

function stringList(violations: Violations, value: unknown, path: string): string[] | undefined {
  if (value === undefined || value === null) {
    violations.add(value, path, 'Member must not be null');
    return undefined;
  }
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    violations.add(value, path, 'Member must be a list of strings');
    return undefined;
  }
  return value as string[];
}

/** Reads a union member (`{s3InputDataConfig: {...}}`), reporting a missing or unknown member. */
function unionStruct(
  violations: Violations,
  value: unknown,
  path: string,
  member: string,
): Record<string, unknown> | undefined {
  if (value === undefined || value === null) {
    violations.add(value, path, 'Member must not be null');
    return undefined;
  }
  const inner = isRecord(value) ? value[member] : undefined;
  if (!isRecord(value) || !isRecord(inner)) {
    violations.add(value, path, `Member must be a union with exactly one member set: ${member}`);
    return undefined;
  }
  return inner;
}

/**
 * Validates a CreateModelInvocationJob body the way the service does: smithy constraints first (all reported
 * in one ValidationException), then the model id against the model table.
 * @param body the parsed JSON body
 * @param models the simulator's model table
 * @throws BatchServiceError ValidationException
 */
export function validateCreateJobRequest(body: unknown, models: ModelTable): CreateJobInput {
  if (!isRecord(body)) {
    throw new BatchServiceError('ValidationException', 'The request body must be a JSON object.');
  }
  const v = new Violations();
  const jobName = v.string(body.jobName, 'jobName', { required: true, min: 1, max: 63, pattern: 'jobName' });
  const roleArn = v.string(body.roleArn, 'roleArn', { required: true, max: 2048, pattern: 'roleArn' });
  const clientRequestToken = v.string(body.clientRequestToken, 'clientRequestToken', {
    min: 1,
    max: 256,
    pattern: 'clientRequestToken',
  });
  const modelId = v.string(body.modelId, 'modelId', {
    required: true,
    min: 1,
    max: 2048,
    pattern: 'modelId',
  });

  const input = unionStruct(v, body.inputDataConfig, 'inputDataConfig', 's3InputDataConfig');
  const inPath = 'inputDataConfig.s3InputDataConfig';
  const inUri =
    input &&
    v.string(input.s3Uri, `${inPath}.s3Uri`, { required: true, min: 1, max: 1024, pattern: 's3Uri' });
  const inFormat = input && v.enumValue(input.s3InputFormat, `${inPath}.s3InputFormat`, ['JSONL'] as const);
  const inOwner =
    input && v.string(input.s3BucketOwner, `${inPath}.s3BucketOwner`, { max: 12, pattern: 'accountId' });

  const output = unionStruct(v, body.outputDataConfig, 'outputDataConfig', 's3OutputDataConfig');
  const outPath = 'outputDataConfig.s3OutputDataConfig';
  const outUri =
    output &&
    v.string(output.s3Uri, `${outPath}.s3Uri`, { required: true, min: 1, max: 1024, pattern: 's3Uri' });
  const outKey =
    output && v.string(output.s3EncryptionKeyId, `${outPath}.s3EncryptionKeyId`, { min: 1, max: 2048 });
  const outOwner =
    output && v.string(output.s3BucketOwner, `${outPath}.s3BucketOwner`, { max: 12, pattern: 'accountId' });

  let vpcConfig: BatchVpcConfig | undefined;
  if (body.vpcConfig !== undefined && body.vpcConfig !== null) {
    if (!isRecord(body.vpcConfig)) {
      v.add(body.vpcConfig, 'vpcConfig', 'Member must be a VpcConfig object');
    } else {
      const subnetIds = stringList(v, body.vpcConfig.subnetIds, 'vpcConfig.subnetIds');
      const securityGroupIds = stringList(v, body.vpcConfig.securityGroupIds, 'vpcConfig.securityGroupIds');
      if (subnetIds && securityGroupIds) vpcConfig = { subnetIds, securityGroupIds };
    }
  }

  const timeout = body.timeoutDurationInHours;
  if (timeout !== undefined && timeout !== null) {
    if (typeof timeout !== 'number' || !Number.isInteger(timeout)) {
      v.add(timeout, 'timeoutDurationInHours', 'Member must be an integer');
    } else if (timeout < TIMEOUT_HOURS_RANGE.min) {
      v.add(
        timeout,
        'timeoutDurationInHours',
        `Member must have value greater than or equal to ${TIMEOUT_HOURS_RANGE.min}`,
      );
    } else if (timeout > TIMEOUT_HOURS_RANGE.max) {
      v.add(
        timeout,
        'timeoutDurationInHours',
        `Member must have value less than or equal to ${TIMEOUT_HOURS_RANGE.max}`,
      );
    }
  }

  let tags: { key: string; value: string }[] | undefined;
  if (body.tags !== undefined && body.tags !== null) {
    const list = body.tags;
    if (
      !Array.isArray(list) ||
      !list.every((t) => isRecord(t) && typeof t.key === 'string' && typeof t.value === 'string')
    ) {
      v.add(list, 'tags', 'Member must be a list of Tag objects ({key, value})');
    } else {
      tags = list.map((t: Record<string, unknown>) => ({ key: t.key as string, value: t.value as string }));
    }
  }

  const modelInvocationType = v.enumValue(
    body.modelInvocationType,
    'modelInvocationType',
    MODEL_INVOCATION_TYPES,
  );
  v.throwIfAny();

  const model = models.tryResolve(modelId as string);
  if (!model) throw new BatchServiceError('ValidationException', INVALID_MODEL_IDENTIFIER_MESSAGE);
  // As at run time: a retired model is not found, a profile-only model needs its profile. (The stored documentation
  // quotes the runtime's end-of-life answer only; the control plane is taken to answer alike.)
  const refusal = inferenceRefusal(model);
  if (refusal) {
    throw new BatchServiceError(
      refusal.errorName === 'ResourceNotFoundException' ? 'ResourceNotFoundException' : 'ValidationException',
      refusal.message,
    );
  }

  return {
    jobName: jobName as string,
    roleArn: roleArn as string,
    ...(clientRequestToken === undefined ? {} : { clientRequestToken }),
    modelId: modelId as string,
    model,
    inputDataConfig: {
      s3InputDataConfig: {
        s3Uri: inUri as string,
        ...(inFormat === undefined ? {} : { s3InputFormat: inFormat }),
        ...(inOwner === undefined ? {} : { s3BucketOwner: inOwner }),
      },
    },
    outputDataConfig: {
      s3OutputDataConfig: {
        s3Uri: outUri as string,
        ...(outKey === undefined ? {} : { s3EncryptionKeyId: outKey }),
        ...(outOwner === undefined ? {} : { s3BucketOwner: outOwner }),
      },
    },
    ...(vpcConfig === undefined ? {} : { vpcConfig }),
    ...(typeof timeout === 'number' ? { timeoutDurationInHours: timeout } : {}),
    ...(tags === undefined ? {} : { tags }),
    ...(modelInvocationType === undefined ? {} : { modelInvocationType }),
  };
}

/** A job identifier split into what it names. */
export interface ParsedJobIdentifier {
  /** The 12-character job id. */
  readonly jobId: string;
  /** Region and account when the identifier was an ARN. */
  readonly arn?: { readonly region: string; readonly accountId: string };
}

/**
 * Parses the `{jobIdentifier}` label of Get/StopModelInvocationJob: a job id or a job ARN.
 * @throws BatchServiceError ValidationException when it matches neither
 */
export function parseJobIdentifier(identifier: string): ParsedJobIdentifier {
  const v = new Violations();
  v.string(identifier, 'jobIdentifier', { required: true, max: 1011, pattern: 'jobIdentifier' });
  v.throwIfAny();
  const arn =
    /^arn:aws(?:-[^:]+)?:bedrock:([a-z0-9-]{1,20}):([0-9]{12}):model-invocation-job\/([a-z0-9]{12})$/.exec(
      identifier,
    );
  if (arn) {
    return { jobId: arn[3] as string, arn: { region: arn[1] as string, accountId: arn[2] as string } };
  }
  return { jobId: identifier };
}

/** ListModelInvocationJobs query, validated. */
export interface ListJobsQuery {
  readonly submitTimeAfter?: number;
  readonly submitTimeBefore?: number;
  readonly statusEquals?: BatchJobStatus;
  readonly nameContains?: string;
  readonly maxResults: number;
  readonly nextToken?: string;
  readonly sortOrder: 'Ascending' | 'Descending';
}

/** Default page size of ListModelInvocationJobs. */
export const DEFAULT_LIST_MAX_RESULTS = 100;

function parseTime(v: Violations, raw: string | null, path: string): number | undefined {
  if (raw === null) return undefined;
  const ms = Date.parse(raw);
  if (Number.isNaN(ms)) {
    v.add(raw, path, 'Member must be a timestamp (ISO 8601)');
    return undefined;
  }
  return ms;
}

/**
 * Validates the query string of ListModelInvocationJobs.
 * @throws BatchServiceError ValidationException
 */
export function parseListJobsQuery(query: URLSearchParams): ListJobsQuery {
  const v = new Violations();
  const submitTimeAfter = parseTime(v, query.get('submitTimeAfter'), 'submitTimeAfter');
  const submitTimeBefore = parseTime(v, query.get('submitTimeBefore'), 'submitTimeBefore');
  const status = query.get('statusEquals');
  if (status !== null && !isBatchJobStatus(status)) {
    v.add(status, 'statusEquals', `Member must satisfy enum value set: [${BATCH_JOB_STATUSES.join(', ')}]`);
  }
  const nameContains = v.string(query.get('nameContains') ?? undefined, 'nameContains', {
    min: 1,
    max: 63,
    pattern: 'jobName',
  });
  const rawMax = query.get('maxResults');
  let maxResults = DEFAULT_LIST_MAX_RESULTS;
  if (rawMax !== null) {
    const n = Number(rawMax);
    if (!Number.isInteger(n) || n < 1 || n > 1000) {
      v.add(rawMax, 'maxResults', 'Member must have value between 1 and 1000');
    } else {
      maxResults = n;
    }
  }
  const nextToken = v.string(query.get('nextToken') ?? undefined, 'nextToken', { min: 1, max: 2048 });
  v.enumValue(query.get('sortBy') ?? undefined, 'sortBy', ['CreationTime'] as const);
  const sortOrder = v.enumValue(query.get('sortOrder') ?? undefined, 'sortOrder', [
    'Ascending',
    'Descending',
  ] as const);
  v.throwIfAny();
  return {
    ...(submitTimeAfter === undefined ? {} : { submitTimeAfter }),
    ...(submitTimeBefore === undefined ? {} : { submitTimeBefore }),
    ...(status !== null && isBatchJobStatus(status) ? { statusEquals: status } : {}),
    ...(nameContains === undefined ? {} : { nameContains }),
    maxResults,
    ...(nextToken === undefined ? {} : { nextToken }),
    sortOrder: sortOrder ?? 'Descending',
  };
}
