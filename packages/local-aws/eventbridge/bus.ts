/**
 * An in-process EventBridge: several event buses (`default` plus custom ones), rules with event patterns
 * and targets, PutEvents with the service's validation, and asynchronous, best-effort delivery through an
 * injected callback (retried with exponential backoff, then recorded as failed), like the real service.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { EventBridgeNotFoundError, EventBridgeValidationError, EventBusAlreadyExistsError } from './errors';
import { computeTargetInput, validateTargetInput, type TargetInputConfig } from './input-transformer';
import { compilePattern, flattenEvent, type CompiledEventPattern } from './pattern';

/** An event as EventBridge hands it to rules and targets. */
export interface EventBridgeEvent {
  version: string;
  id: string;
  'detail-type': string;
  source: string;
  account: string;
  time: string;
  region: string;
  resources: string[];
  detail: Record<string, unknown>;
  /** Set on events replayed from an archive. */
  'replay-name'?: string;
}

/** A rule target: where matched events go and how their input is built. */
export interface LocalTarget extends TargetInputConfig {
  /** Target id, unique within the rule. */
  readonly id: string;
  /** ARN of the target resource (queue, function, state machine, bus, ...). */
  readonly arn: string;
}

/** Rule state: only ENABLED rules route events. */
export type RuleState = 'ENABLED' | 'DISABLED';

/** What {@link LocalEventBus.addRule} takes (PutRule + PutTargets in one). */
export interface LocalRuleDefinition {
  readonly name: string;
  /** Rule ARN; derived from the bus, account, region and name when omitted. */
  readonly arn?: string;
  /** Bus name or ARN; `default` when omitted. */
  readonly eventBusName?: string;
  /** The event pattern: an object (as in a template) or its JSON text. */
  readonly eventPattern: unknown;
  /** `ENABLED` when omitted. */
  readonly state?: RuleState;
  readonly targets?: readonly LocalTarget[];
}

/** A registered rule. */
export interface LocalRule {
  readonly name: string;
  readonly arn: string;
  readonly eventBusName: string;
  readonly eventPattern: unknown;
  readonly state: RuleState;
  readonly targets: readonly LocalTarget[];
}

/** One PutEvents entry, shaped like the SDK's `PutEventsRequestEntry`. */
export interface PutEventsRequestEntryLike {
  readonly Time?: Date | string;
  readonly Source?: string;
  readonly Resources?: readonly string[];
  readonly DetailType?: string;
  readonly Detail?: string;
  readonly EventBusName?: string;
  readonly TraceHeader?: string;
}

/** One PutEvents result entry: an event id, or why the entry was refused. */
export type PutEventsResultEntry = { EventId: string } | { ErrorCode: string; ErrorMessage: string };

/** The PutEvents response. */
export interface PutEventsResult {
  FailedEntryCount: number;
  Entries: PutEventsResultEntry[];
}

/** Extra facts handed to the delivery callback. */
export interface DeliveryContext {
  readonly rule: LocalRule;
  readonly busName: string;
  /** 1 for the first try, 2 for the first retry, ... */
  readonly attempt: number;
}

/**
 * Delivers one event to one target; reject (throw) to have the bus retry.
 * @param target the rule target
 * @param inputJson the text the target receives (the event, or its Input / InputPath / InputTransformer)
 * @param event the matched event
 * @param context the rule, the bus and the attempt number
 */
export type DeliverFn = (
  target: LocalTarget,
  inputJson: string,
  event: EventBridgeEvent,
  context: DeliveryContext,
) => Promise<void>;

/** Retry policy of failed deliveries. */
export interface RetryPolicy {
  /** Tries in all, first included (the service allows up to 185 retries over 24 h; locally a few do). */
  readonly maxAttempts: number;
  /** Delay before the first retry; doubled at each further retry. */
  readonly baseDelayMs: number;
  /** Upper bound of a single delay. */
  readonly maxDelayMs: number;
  /** Randomise each delay between half and all of its value. */
  readonly jitter: boolean;
}

/** Options of {@link LocalEventBus}. */
export interface LocalEventBusOptions {
  /** Called for every target of every matching rule. */
  readonly deliver: DeliverFn;
  /** Account id put in events and ARNs (default `000000000000`). */
  readonly account?: string;
  /** Region put in events and ARNs (default `us-east-1`). */
  readonly region?: string;
  readonly retry?: Partial<RetryPolicy>;
  /** How many recent events each bus keeps for {@link LocalEventBus.recentEvents} (default 1000). */
  readonly archiveSize?: number;
  /** Clock, for tests (default `() => new Date()`). */
  readonly now?: () => Date;
  /** Called once a delivery has failed for good (a dead-letter hook). */
  readonly onDeliveryFailed?: (failure: DeliveryFailure) => void;
}

/** A delivery that failed for good. */
export interface DeliveryFailure {
  readonly busName: string;
  readonly ruleName: string;
  readonly targetId: string;
  readonly targetArn: string;
  readonly eventId: string;
  /** Tries made (0 when the input could not even be built). */
  readonly attempts: number;
  readonly error: string;
  readonly at: string;
}

/** Counters of a {@link LocalEventBus}. */
export interface LocalEventBusStats {
  /** Events accepted (PutEvents entries that passed validation, plus emitted events). */
  eventsAccepted: number;
  /** PutEvents entries refused. */
  entriesRejected: number;
  /** (event, rule) pairs that matched. */
  ruleMatches: number;
  /** (event, target) deliveries started. */
  invocations: number;
  deliveriesSucceeded: number;
  deliveriesFailed: number;
  retries: number;
  /** Deliveries not finished yet (including those waiting for a retry). */
  inFlight: number;
  /** Errors thrown by {@link LocalEventBus.onEvent} listeners. */
  listenerErrors: number;
  /** The most recent failed deliveries (up to 100). */
  failures: DeliveryFailure[];
}

/** What {@link LocalEventBus.emit} takes: a ready-made event; missing envelope fields get defaults. */
export type EmittedEvent = Partial<EventBridgeEvent> &
  Pick<EventBridgeEvent, 'source' | 'detail-type' | 'detail'>;

/** Listener of every accepted event. */
export type EventListener = (event: EventBridgeEvent, busName: string) => void;

/** Name of the bus every account has. */
export const DEFAULT_EVENT_BUS = 'default';
/** PutEvents accepts at most this many entries. */
export const MAX_PUT_EVENTS_ENTRIES = 10;
/** PutEvents refuses requests whose entries total this many bytes or more (256 KB). */
export const MAX_PUT_EVENTS_SIZE = 256 * 1024;

const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 5_000, jitter: true };
const MAX_RECORDED_FAILURES = 100;
const BUS_NAME = /^[/.\-_A-Za-z0-9]{1,256}$/;

interface RuleRecord {
  rule: LocalRule;
  compiled: CompiledEventPattern;
}

/** Formats a time like event envelopes do (`2015-11-11T21:29:54Z`). */
export function formatEventTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Size of a PutEvents entry as the service counts it ("Calculating PutEvents event entry size"). */
export function putEventsEntrySize(entry: PutEventsRequestEntryLike): number {
  let size = entry.Time !== undefined ? 14 : 0;
  size += Buffer.byteLength(entry.Source ?? '', 'utf8');
  size += Buffer.byteLength(entry.DetailType ?? '', 'utf8');
  size += Buffer.byteLength(entry.Detail ?? '', 'utf8');
  for (const resource of entry.Resources ?? []) size += Buffer.byteLength(resource, 'utf8');
  return size;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    setTimeout(resolve, ms).unref();
  });
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** The local EventBridge: buses, rules, PutEvents, delivery. */
export class LocalEventBus {
  /** Account id used in events and ARNs. */
  readonly account: string;
  /** Region used in events and ARNs. */
  readonly region: string;

  private readonly deliver: DeliverFn;
  private readonly retry: RetryPolicy;
  private readonly archiveSize: number;
  private readonly now: () => Date;
  private readonly onDeliveryFailed: ((failure: DeliveryFailure) => void) | undefined;
  private readonly buses = new Map<string, Map<string, RuleRecord>>();
  private readonly archives = new Map<string, EventBridgeEvent[]>();
  private readonly listeners = new Set<EventListener>();
  private readonly pending = new Set<Promise<void>>();
  private readonly counters: Omit<LocalEventBusStats, 'inFlight' | 'failures'> = {
    eventsAccepted: 0,
    entriesRejected: 0,
    ruleMatches: 0,
    invocations: 0,
    deliveriesSucceeded: 0,
    deliveriesFailed: 0,
    retries: 0,
    listenerErrors: 0,
  };
  private readonly failures: DeliveryFailure[] = [];

  /** @param options the delivery callback, identity, retry policy and archive size */
  constructor(options: LocalEventBusOptions) {
    this.deliver = options.deliver;
    this.account = options.account ?? '000000000000';
    this.region = options.region ?? 'us-east-1';
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    if (!Number.isInteger(this.retry.maxAttempts) || this.retry.maxAttempts < 1) {
      throw new RangeError(`retry.maxAttempts must be a positive integer, got ${this.retry.maxAttempts}`);
    }
    this.archiveSize = options.archiveSize ?? 1000;
    this.now = options.now ?? (() => new Date());
    this.onDeliveryFailed = options.onDeliveryFailed;
    this.buses.set(DEFAULT_EVENT_BUS, new Map());
    this.archives.set(DEFAULT_EVENT_BUS, []);
  }

  /** ARN of a bus of this account and region. */
  eventBusArn(busName: string): string {
    return `arn:aws:events:${this.region}:${this.account}:event-bus/${busName}`;
  }

  /** ARN a rule gets on a bus (rules on custom buses carry the bus name). */
  ruleArn(ruleName: string, busName: string = DEFAULT_EVENT_BUS): string {
    const path = busName === DEFAULT_EVENT_BUS ? ruleName : `${busName}/${ruleName}`;
    return `arn:aws:events:${this.region}:${this.account}:rule/${path}`;
  }

  /**
   * Creates a custom event bus.
   * @throws EventBusAlreadyExistsError when it exists; EventBridgeValidationError for a bad name
   */
  createEventBus(name: string): void {
    if (!BUS_NAME.test(name) || name.startsWith('aws.')) {
      throw new EventBridgeValidationError(`Event bus name ${name} is not valid.`);
    }
    if (this.buses.has(name)) throw new EventBusAlreadyExistsError(name);
    this.buses.set(name, new Map());
    this.archives.set(name, []);
  }

  /** Whether a bus (name or ARN) exists. */
  hasEventBus(nameOrArn: string): boolean {
    return this.buses.has(this.busName(nameOrArn));
  }

  /** Names of all buses, `default` first. */
  listEventBuses(): string[] {
    return [...this.buses.keys()];
  }

  /**
   * Adds a rule with its targets, or replaces the rule of the same name on that bus (like PutRule).
   * @throws InvalidEventPatternError for a malformed pattern; EventBridgeValidationError for bad targets;
   *   EventBridgeNotFoundError when the bus does not exist
   */
  addRule(definition: LocalRuleDefinition): LocalRule {
    const busName = this.busName(definition.eventBusName ?? DEFAULT_EVENT_BUS);
    const rules = this.rulesOf(busName);
    const compiled = compilePattern(definition.eventPattern);
    const targets = definition.targets ?? [];
    const ids = new Set<string>();
    for (const target of targets) {
      if (!target.id || !target.arn) {
        throw new EventBridgeValidationError(
          `Every target of rule ${definition.name} needs an id and an arn.`,
        );
      }
      if (ids.has(target.id)) {
        throw new EventBridgeValidationError(`Rule ${definition.name} has two targets with id ${target.id}.`);
      }
      ids.add(target.id);
      validateTargetInput(target, target.id);
    }
    const rule: LocalRule = {
      name: definition.name,
      arn: definition.arn ?? this.ruleArn(definition.name, busName),
      eventBusName: busName,
      eventPattern: definition.eventPattern,
      state: definition.state ?? 'ENABLED',
      targets: targets.map((t) => ({ ...t })),
    };
    rules.set(rule.name, { rule, compiled });
    return rule;
  }

  /** Removes a rule; returns whether it existed. */
  removeRule(name: string, eventBusName: string = DEFAULT_EVENT_BUS): boolean {
    return this.rulesOf(this.busName(eventBusName)).delete(name);
  }

  /**
   * Enables or disables a rule.
   * @throws EventBridgeNotFoundError when the rule or bus does not exist
   */
  setRuleState(name: string, state: RuleState, eventBusName: string = DEFAULT_EVENT_BUS): void {
    const busName = this.busName(eventBusName);
    const record = this.rulesOf(busName).get(name);
    if (!record) throw new EventBridgeNotFoundError(`Rule ${name} does not exist on EventBus ${busName}.`);
    record.rule = { ...record.rule, state };
  }

  /** The rules of a bus, in the order they were added. */
  listRules(eventBusName: string = DEFAULT_EVENT_BUS): LocalRule[] {
    return [...this.rulesOf(this.busName(eventBusName)).values()].map((record) => record.rule);
  }

  /**
   * PutEvents: validates every entry like the service, builds the event envelopes, routes them to the
   * matching rules of their bus and answers at once; deliveries run in the background.
   * @throws EventBridgeValidationError for the whole request (no entries, more than 10, 256 KB or more)
   */
  putEvents(entries: readonly PutEventsRequestEntryLike[]): PutEventsResult {
    if (entries.length < 1 || entries.length > MAX_PUT_EVENTS_ENTRIES) {
      const bound =
        entries.length < 1
          ? 'Member must have length greater than or equal to 1'
          : `Member must have length less than or equal to ${MAX_PUT_EVENTS_ENTRIES}`;
      throw new EventBridgeValidationError(
        `1 validation error detected: Value at 'entries' failed to satisfy constraint: ${bound}`,
      );
    }
    const total = entries.reduce((sum, entry) => sum + putEventsEntrySize(entry), 0);
    if (total >= MAX_PUT_EVENTS_SIZE) {
      throw new EventBridgeValidationError('Total size of the entries in the request is over the limit.');
    }
    const results: PutEventsResultEntry[] = [];
    let failed = 0;
    for (const entry of entries) {
      const outcome = this.buildEvent(entry);
      if ('ErrorCode' in outcome) {
        failed += 1;
        this.counters.entriesRejected += 1;
        results.push(outcome);
      } else {
        this.ingest(outcome.event, outcome.busName);
        results.push({ EventId: outcome.event.id });
      }
    }
    return { FailedEntryCount: failed, Entries: results };
  }

  /**
   * Puts a ready-made event on a bus, as an AWS service does (e.g. S3 "Object Created" on `default`);
   * skips PutEvents' checks (such as the reserved `aws.` sources). Missing envelope fields get defaults.
   * @returns the event as routed
   * @throws EventBridgeNotFoundError when the bus does not exist
   */
  emit(event: EmittedEvent, eventBusName: string = DEFAULT_EVENT_BUS): EventBridgeEvent {
    const busName = this.busName(eventBusName);
    this.rulesOf(busName);
    if (!isPlainObject(event.detail)) throw new EventBridgeValidationError('Detail is malformed.');
    const full: EventBridgeEvent = {
      version: event.version ?? '0',
      id: event.id ?? randomUUID(),
      'detail-type': event['detail-type'],
      source: event.source,
      account: event.account ?? this.account,
      time: event.time ?? formatEventTime(this.now()),
      region: event.region ?? this.region,
      resources: event.resources ?? [],
      detail: event.detail,
      ...(event['replay-name'] !== undefined ? { 'replay-name': event['replay-name'] } : {}),
    };
    this.ingest(full, busName);
    return full;
  }

  /** The most recent events accepted on a bus, oldest first (a copy). */
  recentEvents(eventBusName: string = DEFAULT_EVENT_BUS): EventBridgeEvent[] {
    const busName = this.busName(eventBusName);
    const archive = this.archives.get(busName);
    if (!archive) throw new EventBridgeNotFoundError(`Event bus ${busName} does not exist.`);
    return [...archive];
  }

  /**
   * Subscribes to every accepted event of every bus (called synchronously, before routing).
   * @returns a function that unsubscribes
   */
  onEvent(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Counters and the most recent failed deliveries. */
  stats(): LocalEventBusStats {
    return { ...this.counters, inFlight: this.pending.size, failures: [...this.failures] };
  }

  /** Resolves once every delivery started so far (retries included) has finished. */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  private busName(nameOrArn: string): string {
    if (nameOrArn.startsWith('arn:')) {
      const marker = nameOrArn.indexOf(':event-bus/');
      return marker === -1 ? nameOrArn : nameOrArn.slice(marker + ':event-bus/'.length);
    }
    return nameOrArn;
  }

  private rulesOf(busName: string): Map<string, RuleRecord> {
    const rules = this.buses.get(busName);
    if (!rules) throw new EventBridgeNotFoundError(`Event bus ${busName} does not exist.`);
    return rules;
  }

  private buildEvent(
    entry: PutEventsRequestEntryLike,
  ): { event: EventBridgeEvent; busName: string } | { ErrorCode: string; ErrorMessage: string } {
    const invalid = (name: string) => ({
      ErrorCode: 'InvalidArgument',
      ErrorMessage: `Parameter ${name} is not valid. Reason: ${name} is a required argument.`,
    });
    if (!entry.Source) return invalid('Source');
    if (!entry.DetailType) return invalid('DetailType');
    if (entry.Detail === undefined || entry.Detail === '') return invalid('Detail');
    let detail: unknown;
    try {
      detail = JSON.parse(entry.Detail) as unknown;
    } catch {
      return { ErrorCode: 'MalformedDetail', ErrorMessage: 'Detail is malformed.' };
    }
    if (!isPlainObject(detail)) return { ErrorCode: 'MalformedDetail', ErrorMessage: 'Detail is malformed.' };
    if (entry.Source.startsWith('aws.')) {
      return { ErrorCode: 'NotAuthorizedForSourceException', ErrorMessage: 'Not authorized for the source.' };
    }
    let time = this.now();
    if (entry.Time !== undefined) {
      time = entry.Time instanceof Date ? entry.Time : new Date(entry.Time);
      if (Number.isNaN(time.getTime())) {
        return { ErrorCode: 'InvalidArgument', ErrorMessage: 'Parameter Time is not valid.' };
      }
    }
    const busName = this.busName(entry.EventBusName || DEFAULT_EVENT_BUS);
    if (!this.buses.has(busName)) {
      return { ErrorCode: 'ResourceNotFoundException', ErrorMessage: `Event bus ${busName} does not exist.` };
    }
    const event: EventBridgeEvent = {
      version: '0',
      id: randomUUID(),
      'detail-type': entry.DetailType,
      source: entry.Source,
      account: this.account,
      time: formatEventTime(time),
      region: this.region,
      resources: [...(entry.Resources ?? [])],
      detail,
    };
    return { event, busName };
  }

  private ingest(event: EventBridgeEvent, busName: string): void {
    this.counters.eventsAccepted += 1;
    const archive = this.archives.get(busName) as EventBridgeEvent[];
    archive.push(event);
    if (archive.length > this.archiveSize) archive.splice(0, archive.length - this.archiveSize);
    for (const listener of this.listeners) {
      try {
        listener(event, busName);
      } catch (err) {
        // A faulty observer must not stop routing; it is counted and reported instead.
        this.counters.listenerErrors += 1;
        console.error(`LocalEventBus: onEvent listener failed for event ${event.id}: ${errorText(err)}`);
      }
    }
    const flat = flattenEvent(event);
    const ingestionTime = this.now();
    for (const { rule, compiled } of this.rulesOf(busName).values()) {
      if (rule.state !== 'ENABLED' || !compiled.matches(flat)) continue;
      this.counters.ruleMatches += 1;
      for (const target of rule.targets) {
        this.counters.invocations += 1;
        let input: string;
        try {
          input = computeTargetInput(target, event as unknown as Record<string, unknown>, {
            ruleArn: rule.arn,
            ruleName: rule.name,
            ingestionTime,
          });
        } catch (err) {
          // An input that cannot be built is a failed invocation of this target, not of the PutEvents call.
          this.recordFailure(busName, rule, target, event, 0, err);
          continue;
        }
        this.track(this.runDelivery(busName, rule, target, event, input));
      }
    }
  }

  private track(delivery: Promise<void>): void {
    this.pending.add(delivery);
    // Bookkeeping only: runDelivery records its own failures and never rejects; drain() awaits `pending`.
    void delivery.finally(() => this.pending.delete(delivery));
  }

  private backoff(retryNumber: number): number {
    const base = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (retryNumber - 1));
    return this.retry.jitter ? base / 2 + Math.random() * (base / 2) : base;
  }

  private async runDelivery(
    busName: string,
    rule: LocalRule,
    target: LocalTarget,
    event: EventBridgeEvent,
    input: string,
  ): Promise<void> {
    // Delivery is asynchronous: PutEvents answers before any target sees the event.
    await new Promise<void>((resolve) => setImmediate(resolve));
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.retry.maxAttempts; attempt += 1) {
      try {
        await this.deliver(target, input, event, { rule, busName, attempt });
        this.counters.deliveriesSucceeded += 1;
        return;
      } catch (err) {
        lastError = err;
        if (attempt < this.retry.maxAttempts) {
          this.counters.retries += 1;
          await sleep(this.backoff(attempt));
        }
      }
    }
    this.recordFailure(busName, rule, target, event, this.retry.maxAttempts, lastError);
  }

  private recordFailure(
    busName: string,
    rule: LocalRule,
    target: LocalTarget,
    event: EventBridgeEvent,
    attempts: number,
    err: unknown,
  ): void {
    this.counters.deliveriesFailed += 1;
    const failure: DeliveryFailure = {
      busName,
      ruleName: rule.name,
      targetId: target.id,
      targetArn: target.arn,
      eventId: event.id,
      attempts,
      error: errorText(err),
      at: new Date().toISOString(),
    };
    this.failures.push(failure);
    if (this.failures.length > MAX_RECORDED_FAILURES) this.failures.shift();
    if (this.onDeliveryFailed) {
      try {
        this.onDeliveryFailed(failure);
      } catch (hookError) {
        console.error(`LocalEventBus: onDeliveryFailed hook threw: ${errorText(hookError)}`);
      }
    }
  }
}

/** What {@link s3ObjectCreatedEvent} takes. */
export interface S3ObjectCreatedInput {
  readonly bucket: string;
  readonly key: string;
  readonly size: number;
  /** The object's ETag, with or without the quotes S3 puts around it in headers. */
  readonly etag: string;
  /** Ordering token of the bucket's events; generated (monotonic) when omitted. */
  readonly sequencer?: string;
  /** Set for versioned buckets only. */
  readonly versionId?: string;
  /** Account that owns the bucket. */
  readonly account: string;
  readonly region: string;
  /** Account (or principal) that made the request; the bucket owner when omitted. */
  readonly requesterId?: string;
  /** `PutObject` (default), `POST Object`, `CopyObject` or `CompleteMultipartUpload`. */
  readonly reason?: 'PutObject' | 'POST Object' | 'CopyObject' | 'CompleteMultipartUpload';
  readonly sourceIpAddress?: string;
  readonly requestId?: string;
  readonly time?: Date;
}

let sequencerCounter = 0n;

function nextSequencer(time: Date): string {
  sequencerCounter += 1n;
  return ((BigInt(time.getTime()) << 20n) | (sequencerCounter & 0xfffffn))
    .toString(16)
    .toUpperCase()
    .padStart(16, '0');
}

/** The `reason` of an Object Created event for each S3 notification event name (the S3 API that created the object). */
const CREATED_REASONS: Readonly<Record<string, NonNullable<S3ObjectCreatedInput['reason']>>> = {
  'ObjectCreated:Put': 'PutObject',
  'ObjectCreated:Post': 'POST Object',
  'ObjectCreated:Copy': 'CopyObject',
  'ObjectCreated:CompleteMultipartUpload': 'CompleteMultipartUpload',
};

/**
 * The `reason` an Object Created event gives for an S3 notification event name (`ObjectCreated:Put` ->
 * `PutObject`, ...; S3 User Guide, "EventBridge event message structure", field `reason`:
 * https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html).
 * @throws EventBridgeValidationError for a name that is not an object creation
 */
export function s3CreatedReason(eventName: string): NonNullable<S3ObjectCreatedInput['reason']> {
  const reason = CREATED_REASONS[eventName];
  if (reason === undefined)
    throw new EventBridgeValidationError(`${eventName} is not an S3 object creation.`);
  return reason;
}

/** An object creation as the local S3 emulator reports it. */
export interface S3CreationNotice {
  readonly bucket: string;
  readonly key: string;
  readonly size: number;
  readonly etag: string;
  readonly sequencer: string;
  /** `ObjectCreated:Put`, `ObjectCreated:Post`, `ObjectCreated:Copy` or `ObjectCreated:CompleteMultipartUpload`. */
  readonly eventName: string;
}

/**
 * The Object Created event S3 sends for an object creation the local S3 emulator reported: the local runtime's
 * bridge from the emulator to the default bus. The emulator keeps no object versions, so the event has no
 * `version-id`, which the documented example (and so the event of the versioned ingest bucket) has; nothing in the
 * pipeline reads it (the ingest rule passes bucket, key, ETag and size).
 */
export function s3ObjectCreatedEventFor(
  notice: S3CreationNotice,
  where: { readonly account: string; readonly region: string },
): EventBridgeEvent {
  return s3ObjectCreatedEvent({
    bucket: notice.bucket,
    key: notice.key,
    size: notice.size,
    etag: notice.etag,
    ...(notice.sequencer === '' ? {} : { sequencer: notice.sequencer }),
    reason: s3CreatedReason(notice.eventName),
    account: where.account,
    region: where.region,
  });
}

/**
 * The "Object Created" event an EventBridge-enabled bucket sends to the default bus (S3 User Guide,
 * "EventBridge event message structure"). Object keys appear as written, not URL-encoded.
 */
export function s3ObjectCreatedEvent(input: S3ObjectCreatedInput): EventBridgeEvent {
  const time = input.time ?? new Date();
  const object: Record<string, unknown> = {
    key: input.key,
    size: input.size,
    etag: input.etag.replace(/^"(.*)"$/, '$1'),
  };
  if (input.versionId !== undefined) object['version-id'] = input.versionId;
  object.sequencer = input.sequencer ?? nextSequencer(time);
  return {
    version: '0',
    id: randomUUID(),
    'detail-type': 'Object Created',
    source: 'aws.s3',
    account: input.account,
    time: formatEventTime(time),
    region: input.region,
    resources: [`arn:aws:s3:::${input.bucket}`],
    detail: {
      version: '0',
      bucket: { name: input.bucket },
      object,
      'request-id': input.requestId ?? randomBytes(8).toString('hex').toUpperCase(),
      requester: input.requesterId ?? input.account,
      'source-ip-address': input.sourceIpAddress ?? '127.0.0.1',
      reason: input.reason ?? 'PutObject',
    },
  };
}
