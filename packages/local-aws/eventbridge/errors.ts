/** AWS error codes the local EventBridge answers with (the `__type` of a JSON 1.1 error, `err.name` in the SDK). */
export type EventBridgeErrorCode =
  | 'InvalidEventPatternException'
  | 'ValidationException'
  | 'ResourceNotFoundException'
  | 'ResourceAlreadyExistsException'
  | 'SerializationException'
  | 'UnknownOperationException';

/**
 * Base class of every error the local EventBridge throws on purpose. `code` is the AWS error shape the real
 * service would answer with, so the HTTP front end can turn any of them into a faithful error response.
 */
export class LocalEventBridgeError extends Error {
  /**
   * @param code the AWS error shape name
   * @param message the human-readable message, worded like the service's where it is known
   */
  constructor(
    readonly code: EventBridgeErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'LocalEventBridgeError';
  }
}

/** Prefix EventBridge puts before every event pattern problem. */
export const INVALID_PATTERN_PREFIX = 'Event pattern is not valid. Reason: ';

/** A malformed event pattern (PutRule / TestEventPattern answer `InvalidEventPatternException`). */
export class InvalidEventPatternError extends LocalEventBridgeError {
  /** The reason alone, without the `Event pattern is not valid. Reason: ` prefix. */
  readonly reason: string;

  /** @param reason what is wrong with the pattern, worded like the service */
  constructor(reason: string) {
    super('InvalidEventPatternException', `${INVALID_PATTERN_PREFIX}${reason}`);
    this.name = 'InvalidEventPatternError';
    this.reason = reason;
  }
}

/** An event handed to the matcher that is not a JSON object (the service answers `Parameter Event is not valid.`). */
export class InvalidEventError extends LocalEventBridgeError {
  /** @param detail why the event was refused */
  constructor(detail: string) {
    super('ValidationException', `Parameter Event is not valid. ${detail}`);
    this.name = 'InvalidEventError';
  }
}

/** A request or a target definition the service would refuse with `ValidationException`. */
export class EventBridgeValidationError extends LocalEventBridgeError {
  /** @param message the validation message */
  constructor(message: string) {
    super('ValidationException', message);
    this.name = 'EventBridgeValidationError';
  }
}

/** A target input (Input / InputPath / InputTransformer) that cannot be built for an event. */
export class TargetInputError extends LocalEventBridgeError {
  /** @param message what went wrong while building the input */
  constructor(message: string) {
    super('ValidationException', message);
    this.name = 'TargetInputError';
  }
}

/** An event bus or rule that does not exist. */
export class EventBridgeNotFoundError extends LocalEventBridgeError {
  /** @param message which resource is missing */
  constructor(message: string) {
    super('ResourceNotFoundException', message);
    this.name = 'EventBridgeNotFoundError';
  }
}

/** An event bus created twice. */
export class EventBusAlreadyExistsError extends LocalEventBridgeError {
  /** @param busName the bus that already exists */
  constructor(busName: string) {
    super('ResourceAlreadyExistsException', `Event bus ${busName} already exists.`);
    this.name = 'EventBusAlreadyExistsError';
  }
}
