/**
 * Turns a real (CDK-synthesized, JSONPath) state machine definition into what
 * aws-local-stepfunctions 3.0.0 can run faithfully:
 *
 * - rejects what the library would silently get wrong: JSONata (`QueryLanguage: JSONata`,
 *   `Arguments`, `Output`, `Condition`), `Assign`, and any TimeoutSeconds / HeartbeatSeconds /
 *   Wait Seconds above 2,147,483 (Node's timer limit, which the library turns into an
 *   immediate timeout);
 * - gives every Task without a timeout 2,147,483 s instead of the library's 60 s default
 *   (Step Functions has no default task timeout);
 * - rewrites `$$` references to the runner's own context object (see context-paths.ts);
 * - moves TimeoutSecondsPath / HeartbeatSecondsPath values into hidden Parameters keys when the
 *   task has Parameters, because the library evaluates TimeoutSecondsPath against the input
 *   AFTER Parameters (Step Functions evaluates it against the effective input);
 * - replaces every Distributed Map (`ItemProcessor.ProcessorConfig.Mode: DISTRIBUTED`) by a Task
 *   state of the same name whose local handler emulates the Map Run, and prepares its
 *   ItemProcessor as a separate scope (its children are separate executions).
 */
import { rewriteContextReferences } from './context-paths';
import { WorkflowDefinitionError } from './errors';

/** Largest timer Node (and so the library) can arm, in seconds. */
export const MAX_TIMER_SECONDS = 2_147_483;

/** Resource given to the Task states that stand in for Distributed Maps. */
export const DISTRIBUTED_MAP_RESOURCE = 'arn:aws:states:::local:distributedMap';

/** Hidden Parameters key carrying a TimeoutSecondsPath value to the task handler. */
export const HIDDEN_TIMEOUT_KEY = '__LocalRunnerTimeoutSeconds';

/** Hidden Parameters key carrying a HeartbeatSecondsPath value to the task handler. */
export const HIDDEN_HEARTBEAT_KEY = '__LocalRunnerHeartbeatSeconds';

/** Everything the runner needs to know about one Task state. */
export interface TaskStateInfo {
  stateName: string;
  resource: string;
  /** Resource ends with `.waitForTaskToken`. */
  waitForTaskToken: boolean;
  /** Static TimeoutSeconds, when declared. */
  timeoutSeconds?: number;
  /** TimeoutSecondsPath to evaluate on the effective input (tasks without Parameters). */
  timeoutSecondsPath?: string;
  /** The TimeoutSecondsPath value arrives in the parameters under HIDDEN_TIMEOUT_KEY. */
  hiddenTimeout: boolean;
  heartbeatSeconds?: number;
  heartbeatSecondsPath?: string;
  hiddenHeartbeat: boolean;
}

/** A Distributed Map state, with its fields' `$$` references already rewritten. */
export interface DistributedMapSpec {
  stateName: string;
  /** Map Run label: `Label`, or the state name made label-safe. */
  label: string;
  executionType: 'STANDARD' | 'EXPRESS';
  itemReader?: {
    resource: string;
    parameters: unknown;
    readerConfig: Record<string, unknown>;
  };
  itemsPath?: string;
  itemSelector?: unknown;
  itemBatcher?: Record<string, unknown>;
  resultWriter?: Record<string, unknown>;
  maxConcurrency?: number;
  maxConcurrencyPath?: string;
  toleratedFailurePercentage?: number;
  toleratedFailurePercentagePath?: string;
  toleratedFailureCount?: number;
  toleratedFailureCountPath?: string;
  /** TimeoutSeconds declared on the Map state, enforced by the emulation. */
  timeoutSeconds?: number;
  /** The ItemProcessor, prepared as its own scope. */
  processor: PreparedScope;
}

/**
 * A definition the library runs in one go (the top level, or a Distributed Map's processor):
 * its inline Maps and Parallels share its task handlers, so state names must be unique in it.
 */
export interface PreparedScope {
  /** The definition as the library sees it. */
  definition: Record<string, unknown>;
  /** Task states by name (at any inline depth). */
  tasks: Map<string, TaskStateInfo>;
  /** Distributed Map states by name (at any inline depth). */
  distributedMaps: Map<string, DistributedMapSpec>;
}

/** Result of prepareDefinition. */
export interface PreparedDefinition {
  root: PreparedScope;
  /** Names of every state; `$$.State` of state i is `$$.__local.States[i]`. */
  stateNames: string[];
}

type Json = Record<string, unknown>;

const PATH_FIELDS = [
  'InputPath',
  'OutputPath',
  'ItemsPath',
  'MaxConcurrencyPath',
  'TimeoutSecondsPath',
  'HeartbeatSecondsPath',
  'SecondsPath',
  'TimestampPath',
  'ErrorPath',
  'CausePath',
  'ToleratedFailurePercentagePath',
  'ToleratedFailureCountPath',
] as const;

const TEMPLATE_FIELDS = ['Parameters', 'ResultSelector', 'ItemSelector'] as const;

const JSONATA_FIELDS = ['Arguments', 'Output', 'Items'] as const;

const SUPPORTED_INPUT_TYPES = ['JSON', 'JSONL', 'CSV'];

const CSV_DELIMITERS = ['COMMA', 'PIPE', 'SEMICOLON', 'SPACE', 'TAB'];

/** True for a plain JSON object. */
export function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function fail(where: string, message: string): never {
  throw new WorkflowDefinitionError(`${where}: ${message}`);
}

function rewriteTemplate(template: unknown, stateIndex: number, where: string): unknown {
  if (Array.isArray(template)) return template.map((v) => rewriteTemplate(v, stateIndex, where));
  if (!isRecord(template)) return template;
  const out: Json = {};
  for (const [key, value] of Object.entries(template)) {
    out[key] =
      key.endsWith('.$') && typeof value === 'string'
        ? rewriteContextReferences(value, stateIndex, `${where}.${key}`)
        : rewriteTemplate(value, stateIndex, `${where}.${key}`);
  }
  return out;
}

function rewritePathField(obj: Json, field: string, stateIndex: number, where: string): void {
  const value = obj[field];
  if (typeof value === 'string')
    obj[field] = rewriteContextReferences(value, stateIndex, `${where}.${field}`);
}

function rewriteChoiceRule(rule: unknown, stateIndex: number, where: string): unknown {
  if (!isRecord(rule)) return rule;
  if ('Condition' in rule)
    fail(where, 'JSONata Choice conditions are not supported; keep the definition on JSONPath');
  if ('Assign' in rule) fail(where, '`Assign` (workflow variables) is not supported by the local runner');
  const out: Json = { ...rule };
  for (const [key, value] of Object.entries(rule)) {
    if (typeof value === 'string' && (key === 'Variable' || key.endsWith('Path'))) {
      out[key] = rewriteContextReferences(value, stateIndex, `${where}.${key}`);
    } else if ((key === 'And' || key === 'Or') && Array.isArray(value)) {
      out[key] = value.map((r, i) => rewriteChoiceRule(r, stateIndex, `${where}.${key}[${i}]`));
    } else if (key === 'Not') {
      out[key] = rewriteChoiceRule(value, stateIndex, `${where}.Not`);
    }
  }
  return out;
}

function checkTimerSeconds(value: unknown, where: string, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    fail(where, `${field} must be a positive number, got ${JSON.stringify(value)}`);
  }
  if (value > MAX_TIMER_SECONDS) {
    fail(
      where,
      `${field} ${value} exceeds ${MAX_TIMER_SECONDS} s, the longest timer the local runner can arm ` +
        '(aws-local-stepfunctions would time out at once)',
    );
  }
  return value;
}

function checkQueryLanguage(obj: Json, where: string): void {
  const ql = obj.QueryLanguage;
  if (ql === undefined) return;
  if (ql !== 'JSONPath') {
    fail(
      where,
      `QueryLanguage ${JSON.stringify(ql)} is not supported: aws-local-stepfunctions ignores JSONata ` +
        'silently; keep the definition on JSONPath',
    );
  }
  delete obj.QueryLanguage;
}

function labelFor(stateName: string, label: unknown, where: string): string {
  if (label !== undefined) {
    if (typeof label !== 'string' || !/^[A-Za-z0-9_-]{1,40}$/.test(label)) {
      fail(where, `Label must be 1-40 letters, digits, '-' or '_', got ${JSON.stringify(label)}`);
    }
    return label;
  }
  const safe = stateName.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40);
  return safe.length > 0 ? safe : 'Map';
}

function optionalNumber(obj: Json, field: string, where: string): number | undefined {
  const value = obj[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(where, `${field} must be a number`);
  return value;
}

function optionalString(obj: Json, field: string, where: string): string | undefined {
  const value = obj[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') fail(where, `${field} must be a string`);
  return value;
}

class Preparer {
  readonly stateNames: string[] = [];

  prepareMachine(definition: unknown, where: string, isRoot: boolean): PreparedScope {
    const scope: PreparedScope = { definition: {}, tasks: new Map(), distributedMaps: new Map() };
    scope.definition = this.prepareContainer(definition, where, scope, isRoot);
    return scope;
  }

  /** Prepares a `{StartAt, States}` container into `scope`, returning the library view. */
  private prepareContainer(container: unknown, where: string, scope: PreparedScope, isRoot: boolean): Json {
    if (!isRecord(container)) fail(where, 'must be an object with StartAt and States');
    const out: Json = structuredClone(container);
    checkQueryLanguage(out, where);
    if (typeof out.StartAt !== 'string') fail(where, 'StartAt must be a string');
    if (!isRecord(out.States)) fail(where, 'States must be an object');
    if (isRoot) {
      checkTimerSeconds(out.TimeoutSeconds, where, 'TimeoutSeconds');
    } else {
      // A processor's ProcessorConfig is Map metadata, not part of the machine the library runs.
      delete out.ProcessorConfig;
    }
    const states: Json = {};
    for (const [name, state] of Object.entries(out.States)) {
      states[name] = this.prepareState(name, state, `${where} > ${name}`, scope);
    }
    out.States = states;
    return out;
  }

  private prepareState(name: string, raw: unknown, where: string, scope: PreparedScope): Json {
    if (!isRecord(raw)) fail(where, 'state must be an object');
    const state: Json = raw;
    const index = this.stateNames.push(name) - 1;
    checkQueryLanguage(state, where);
    if ('Assign' in state) {
      fail(
        where,
        '`Assign` (workflow variables) is not supported by aws-local-stepfunctions; it would throw',
      );
    }
    for (const field of JSONATA_FIELDS) {
      if (field in state && !(field === 'Items' && state.Type !== 'Map')) {
        fail(where, `\`${field}\` is a JSONata field; keep the definition on JSONPath`);
      }
    }
    for (const catcher of Array.isArray(state.Catch) ? state.Catch : []) {
      if (isRecord(catcher) && 'Assign' in catcher) {
        fail(where, '`Assign` in Catch is not supported by the local runner');
      }
    }
    for (const field of PATH_FIELDS) rewritePathField(state, field, index, where);
    for (const field of TEMPLATE_FIELDS) {
      if (field in state) state[field] = rewriteTemplate(state[field], index, `${where}.${field}`);
    }

    switch (state.Type) {
      case 'Task':
        return this.prepareTask(name, state, where, scope);
      case 'Wait':
        checkTimerSeconds(state.Seconds, where, 'Seconds');
        return state;
      case 'Choice':
        if (Array.isArray(state.Choices)) {
          state.Choices = state.Choices.map((rule, i) =>
            rewriteChoiceRule(rule, index, `${where}.Choices[${i}]`),
          );
        }
        return state;
      case 'Parallel':
        if (!Array.isArray(state.Branches)) fail(where, 'Branches must be an array');
        state.Branches = state.Branches.map((branch, i) =>
          this.prepareContainer(branch, `${where}.Branches[${i}]`, scope, false),
        );
        return state;
      case 'Map':
        return this.prepareMap(name, state, index, where, scope);
      default:
        return state;
    }
  }

  private registerName(scope: PreparedScope, name: string, where: string): void {
    if (scope.tasks.has(name) || scope.distributedMaps.has(name)) {
      fail(
        where,
        `another Task or Distributed Map is also named ${JSON.stringify(name)} in the same state machine; ` +
          'the runner binds task handlers by state name',
      );
    }
  }

  private prepareTask(name: string, state: Json, where: string, scope: PreparedScope): Json {
    if (typeof state.Resource !== 'string') fail(where, 'Resource must be a string');
    this.registerName(scope, name, where);
    const info: TaskStateInfo = {
      stateName: name,
      resource: state.Resource,
      waitForTaskToken: state.Resource.endsWith('.waitForTaskToken'),
      hiddenTimeout: false,
      hiddenHeartbeat: false,
    };
    const hasParameters = 'Parameters' in state;
    const injectHidden = (key: string, path: string): void => {
      if (!isRecord(state.Parameters)) {
        fail(where, 'a *SecondsPath field with non-object Parameters is not supported by the local runner');
      }
      state.Parameters = { ...state.Parameters, [`${key}.$`]: path };
    };

    info.timeoutSeconds = checkTimerSeconds(state.TimeoutSeconds, where, 'TimeoutSeconds');
    const timeoutPath = optionalString(state, 'TimeoutSecondsPath', where);
    if (info.timeoutSeconds === undefined && timeoutPath !== undefined) {
      if (hasParameters) {
        injectHidden(HIDDEN_TIMEOUT_KEY, timeoutPath);
        state.TimeoutSecondsPath = `$.${HIDDEN_TIMEOUT_KEY}`;
        info.hiddenTimeout = true;
      } else {
        info.timeoutSecondsPath = timeoutPath;
      }
    } else if (info.timeoutSeconds === undefined) {
      // Step Functions has no default task timeout; the library's is 60 s.
      state.TimeoutSeconds = MAX_TIMER_SECONDS;
    }

    info.heartbeatSeconds = checkTimerSeconds(state.HeartbeatSeconds, where, 'HeartbeatSeconds');
    const heartbeatPath = optionalString(state, 'HeartbeatSecondsPath', where);
    if (info.heartbeatSeconds === undefined && heartbeatPath !== undefined) {
      if (hasParameters) {
        injectHidden(HIDDEN_HEARTBEAT_KEY, heartbeatPath);
        info.hiddenHeartbeat = true;
      } else {
        info.heartbeatSecondsPath = heartbeatPath;
      }
    }
    delete state.HeartbeatSecondsPath;
    scope.tasks.set(name, info);
    return state;
  }

  private prepareMap(name: string, state: Json, index: number, where: string, scope: PreparedScope): Json {
    const processor = state.ItemProcessor ?? state.Iterator;
    const processorConfig = isRecord(processor) ? processor.ProcessorConfig : undefined;
    const mode = isRecord(processorConfig) ? processorConfig.Mode : undefined;
    if (mode !== 'DISTRIBUTED') {
      for (const field of ['ItemReader', 'ItemBatcher', 'ResultWriter'] as const) {
        if (field in state) fail(where, `${field} is only valid on a Distributed Map`);
      }
      if (state.ItemProcessor !== undefined) {
        state.ItemProcessor = this.prepareContainer(
          state.ItemProcessor,
          `${where}.ItemProcessor`,
          scope,
          false,
        );
      }
      if (state.Iterator !== undefined) {
        state.Iterator = this.prepareContainer(state.Iterator, `${where}.Iterator`, scope, false);
      }
      return state;
    }
    this.registerName(scope, name, where);
    const spec = this.distributedMapSpec(name, state, processor, processorConfig, index, where);
    scope.distributedMaps.set(name, spec);

    const task: Json = {
      Type: 'Task',
      Resource: DISTRIBUTED_MAP_RESOURCE,
      TimeoutSeconds: MAX_TIMER_SECONDS,
    };
    for (const field of [
      'Comment',
      'InputPath',
      'ResultSelector',
      'ResultPath',
      'OutputPath',
      'Retry',
      'Catch',
      'Next',
      'End',
    ]) {
      if (state[field] !== undefined) task[field] = state[field];
    }
    return task;
  }

  private distributedMapSpec(
    name: string,
    state: Json,
    processor: unknown,
    processorConfig: unknown,
    index: number,
    where: string,
  ): DistributedMapSpec {
    const executionType = isRecord(processorConfig)
      ? (processorConfig.ExecutionType ?? 'STANDARD')
      : 'STANDARD';
    if (executionType !== 'STANDARD' && executionType !== 'EXPRESS') {
      fail(
        where,
        `ProcessorConfig.ExecutionType must be STANDARD or EXPRESS, got ${JSON.stringify(executionType)}`,
      );
    }
    const spec: DistributedMapSpec = {
      stateName: name,
      label: labelFor(name, state.Label, where),
      executionType,
      itemsPath: optionalString(state, 'ItemsPath', where),
      maxConcurrency: optionalNumber(state, 'MaxConcurrency', where),
      maxConcurrencyPath: optionalString(state, 'MaxConcurrencyPath', where),
      toleratedFailurePercentage: optionalNumber(state, 'ToleratedFailurePercentage', where),
      toleratedFailurePercentagePath: optionalString(state, 'ToleratedFailurePercentagePath', where),
      toleratedFailureCount: optionalNumber(state, 'ToleratedFailureCount', where),
      toleratedFailureCountPath: optionalString(state, 'ToleratedFailureCountPath', where),
      timeoutSeconds: checkTimerSeconds(state.TimeoutSeconds, where, 'TimeoutSeconds'),
      processor: this.prepareMachine(processor, `${where}.ItemProcessor`, false),
    };
    // `Parameters` is the legacy name of ItemSelector.
    const selector = state.ItemSelector ?? state.Parameters;
    if (selector !== undefined) spec.itemSelector = selector;

    if (state.ItemReader !== undefined) {
      if (spec.itemsPath !== undefined) fail(where, 'ItemsPath and ItemReader are mutually exclusive');
      spec.itemReader = this.itemReader(state.ItemReader, index, `${where}.ItemReader`);
    }
    if (state.ItemBatcher !== undefined) spec.itemBatcher = this.itemBatcher(state.ItemBatcher, index, where);
    if (state.ResultWriter !== undefined)
      spec.resultWriter = this.resultWriter(state.ResultWriter, index, where);
    return spec;
  }

  private itemReader(
    raw: unknown,
    index: number,
    where: string,
  ): NonNullable<DistributedMapSpec['itemReader']> {
    if (!isRecord(raw)) fail(where, 'must be an object');
    const resource = raw.Resource;
    if (resource !== 'arn:aws:states:::s3:getObject' && resource !== 'arn:aws:states:::s3:listObjectsV2') {
      fail(
        where,
        `Resource ${JSON.stringify(resource)} is not supported (arn:aws:states:::s3:getObject or :listObjectsV2)`,
      );
    }
    const readerConfig: Json = isRecord(raw.ReaderConfig) ? { ...raw.ReaderConfig } : {};
    rewritePathField(readerConfig, 'MaxItemsPath', index, where);
    if (resource === 'arn:aws:states:::s3:getObject') {
      const inputType = readerConfig.InputType ?? 'JSON';
      if (typeof inputType !== 'string' || !SUPPORTED_INPUT_TYPES.includes(inputType)) {
        fail(
          where,
          `ReaderConfig.InputType ${JSON.stringify(inputType)} is not supported locally (JSON, JSONL, CSV)`,
        );
      }
      const delimiter = readerConfig.CSVDelimiter;
      if (delimiter !== undefined && (typeof delimiter !== 'string' || !CSV_DELIMITERS.includes(delimiter))) {
        fail(where, `ReaderConfig.CSVDelimiter must be one of ${CSV_DELIMITERS.join(', ')}`);
      }
      if (
        inputType === 'CSV' &&
        readerConfig.CSVHeaderLocation === 'GIVEN' &&
        !Array.isArray(readerConfig.CSVHeaders)
      ) {
        fail(where, 'CSVHeaderLocation GIVEN needs ReaderConfig.CSVHeaders');
      }
    }
    return {
      resource,
      parameters: rewriteTemplate(raw.Parameters ?? {}, index, `${where}.Parameters`),
      readerConfig,
    };
  }

  private itemBatcher(raw: unknown, index: number, where: string): Json {
    if (!isRecord(raw)) fail(`${where}.ItemBatcher`, 'must be an object');
    const batcher: Json = { ...raw };
    for (const field of ['MaxItemsPerBatchPath', 'MaxInputBytesPerBatchPath']) {
      rewritePathField(batcher, field, index, `${where}.ItemBatcher`);
    }
    if ('BatchInput' in batcher)
      batcher.BatchInput = rewriteTemplate(batcher.BatchInput, index, `${where}.BatchInput`);
    const limits = [
      'MaxItemsPerBatch',
      'MaxItemsPerBatchPath',
      'MaxInputBytesPerBatch',
      'MaxInputBytesPerBatchPath',
    ];
    if (!limits.some((field) => field in batcher)) {
      fail(`${where}.ItemBatcher`, 'needs MaxItemsPerBatch(Path) or MaxInputBytesPerBatch(Path)');
    }
    return batcher;
  }

  private resultWriter(raw: unknown, index: number, where: string): Json {
    if (!isRecord(raw)) fail(`${where}.ResultWriter`, 'must be an object');
    const writer: Json = { ...raw };
    if (writer.Resource !== undefined && writer.Resource !== 'arn:aws:states:::s3:putObject') {
      fail(`${where}.ResultWriter`, `Resource must be arn:aws:states:::s3:putObject`);
    }
    if (writer.Resource === undefined && writer.WriterConfig === undefined) {
      fail(`${where}.ResultWriter`, 'needs Resource and Parameters, WriterConfig, or all three');
    }
    if ('Parameters' in writer)
      writer.Parameters = rewriteTemplate(writer.Parameters, index, `${where}.ResultWriter`);
    return writer;
  }
}

/**
 * Prepares a definition for the local runner (see the module comment for what that means).
 *
 * @param definition The parsed ASL definition.
 * @throws WorkflowDefinitionError when the definition uses something the runner cannot execute faithfully.
 */
export function prepareDefinition(definition: unknown): PreparedDefinition {
  const preparer = new Preparer();
  const root = preparer.prepareMachine(definition, 'definition', true);
  return { root, stateNames: preparer.stateNames };
}

/**
 * Parses a definition given as an object or JSON text.
 *
 * @throws WorkflowDefinitionError when the text is not JSON or not an object.
 */
export function parseDefinition(definition: object | string): Json {
  let parsed: unknown = definition;
  if (typeof definition === 'string') {
    try {
      parsed = JSON.parse(definition);
    } catch (err) {
      throw new WorkflowDefinitionError(`definition is not JSON: ${(err as Error).message}`);
    }
  }
  if (!isRecord(parsed)) throw new WorkflowDefinitionError('definition must be a JSON object');
  return parsed;
}
