/**
 * The local SQS accepts exactly the text SQS accepts. fauxqs 1.9.2 checks message bodies with a regular expression
 * written without the `u` flag, so it sees an astral character (any emoji, 𝐀) as two lone surrogates and refuses it,
 * which SQS never does; and it does not check String attribute values at all.
 *
 * SQS's rule (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html): bodies
 * may hold only `#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`, and String attribute
 * values have the same restrictions (API_MessageAttributeValue.html) and must not be empty. A body breaking it is
 * refused with `InvalidMessageContents`; an attribute value with `InvalidParameterValue` (as the service answers,
 * measured against it by LocalStack's SQS provider). In a SendMessageBatch each entry fails on its own (SenderFault).
 *
 * What reaches the wire: the JS SDK serializes the request as JSON, so a lone surrogate travels as a `\ud800` escape
 * (JSON.parse on the server turns it back into a lone surrogate, which is refused), C0 controls as `\u0000`-style
 * escapes (refused the same way), U+FFFE / U+FFFF as their raw UTF-8 bytes (refused).
 */

/** One character SQS refuses in a body or a String attribute value (a lone surrogate counts as one). */
export const SQS_REFUSED_CHARACTER = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

/** The message SQS gives for a body (or attribute value) with a character it refuses. */
export const INVALID_CHARACTERS_MESSAGE =
  'Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF';

/** SendMessageBatch's limits, checked for the whole request before any entry (fauxqs answers those errors). */
const MAX_BATCH_ENTRIES = 10;
const MAX_BATCH_BYTES = 1_048_576;
const BATCH_ENTRY_ID = /^[A-Za-z0-9_-]{1,80}$/;

/** The members of a Fastify request the rules read. */
export interface RulesRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** The members of a Fastify reply the rules use. */
export interface RulesReply {
  readonly statusCode: number;
  code(status: number): RulesReply;
  header(name: string, value: string): RulesReply;
  send(payload: unknown): RulesReply;
}

/** The hooks of fauxqs' Fastify app the rules add. */
export interface RulesApp {
  addHook(
    name: 'preHandler',
    hook: (request: RulesRequest, reply: RulesReply) => Promise<RulesReply | undefined>,
  ): void;
  addHook(
    name: 'onSend',
    hook: (request: RulesRequest, reply: RulesReply, payload: unknown) => Promise<unknown>,
  ): void;
}

interface MessageAttributeInput {
  DataType?: unknown;
  StringValue?: unknown;
  BinaryValue?: unknown;
}

interface MessageInput {
  Id?: unknown;
  MessageBody?: unknown;
  MessageAttributes?: Record<string, MessageAttributeInput>;
}

/** Why SQS would refuse a message, as its error code and message. */
interface Refusal {
  code: 'InvalidMessageContents' | 'InvalidParameterValue';
  message: string;
}

/** The SendMessageBatch entries the rules refused, kept for the answer fauxqs gives about the others. */
const refusedEntries = new WeakMap<
  object,
  { Id: string; SenderFault: true; Code: string; Message: string }[]
>();

/** Guards the one-time patch of fauxqs' shared body check. */
const bodyCheckPatched = Symbol.for('corpus.local.sqs.bodyCheck');

/**
 * Makes fauxqs check characters as SQS does.
 * @param app fauxqs' Fastify app, before it listens
 * @param fauxqsBodyCheck fauxqs' `INVALID_MESSAGE_BODY_CHAR` (dist/sqs/sqsTypes.js, the module instance its handlers
 *   use): its `test` is replaced, for every emulator in the process, by SQS's rule
 */
export function applySqsCharacterRules(app: RulesApp, fauxqsBodyCheck: RegExp): void {
  const check = fauxqsBodyCheck as RegExp & { [bodyCheckPatched]?: true };
  if (!check[bodyCheckPatched]) {
    // fauxqs calls `.test` on this one shared object; an own property shadows RegExp.prototype.test.
    Object.defineProperty(check, 'test', { value: (text: string) => SQS_REFUSED_CHARACTER.test(text) });
    check[bodyCheckPatched] = true;
  }
  app.addHook('preHandler', async (request, reply) => {
    const operation = sqsOperation(request);
    if (operation === 'SendMessage') {
      const refusal = refusalOf(request.body as MessageInput);
      if (!refusal) return undefined;
      return reply
        .code(400)
        .header('content-type', 'application/x-amz-json-1.0')
        .header('x-amzn-query-error', `${refusal.code};Sender`)
        .send({ __type: `com.amazonaws.sqs#${refusal.code}`, message: refusal.message });
    }
    if (operation !== 'SendMessageBatch') return undefined;
    const body = request.body as { Entries?: unknown };
    const entries = body.Entries;
    // A request that fails as a whole (no entries, too many, bad or repeated ids, too large) is fauxqs' to answer.
    if (!Array.isArray(entries) || !wellFormedBatch(entries as MessageInput[])) return undefined;
    const refused: { Id: string; SenderFault: true; Code: string; Message: string }[] = [];
    const kept: MessageInput[] = [];
    for (const entry of entries as MessageInput[]) {
      const refusal = refusalOf(entry);
      if (refusal)
        refused.push({
          Id: String(entry.Id),
          SenderFault: true,
          Code: refusal.code,
          Message: refusal.message,
        });
      else kept.push(entry);
    }
    if (refused.length === 0) return undefined;
    if (kept.length === 0) {
      return reply
        .header('content-type', 'application/x-amz-json-1.0')
        .send({ Successful: [], Failed: refused });
    }
    // fauxqs sends the others; its answer gets these entries' failures added (onSend below).
    body.Entries = kept;
    refusedEntries.set(request, refused);
    return undefined;
  });
  app.addHook('onSend', async (request, reply, payload) => {
    const refused = refusedEntries.get(request);
    if (!refused || reply.statusCode !== 200 || typeof payload !== 'string') return payload;
    const answer = JSON.parse(payload) as { Successful?: unknown[]; Failed?: unknown[] };
    return JSON.stringify({ ...answer, Failed: [...(answer.Failed ?? []), ...refused] });
  });
}

/** The SQS JSON-protocol operation of a request, if it is one. */
function sqsOperation(request: RulesRequest): string | undefined {
  const target = request.headers['x-amz-target'];
  const contentType = String(request.headers['content-type'] ?? '');
  if (request.method !== 'POST' || typeof target !== 'string' || !contentType.includes('x-amz-json-1.0')) {
    return undefined;
  }
  return target.replace(/^AmazonSQS\./, '');
}

/** Why SQS would refuse this message's body or String attributes; undefined when it would take them. */
function refusalOf(message: MessageInput): Refusal | undefined {
  if (typeof message.MessageBody === 'string' && SQS_REFUSED_CHARACTER.test(message.MessageBody)) {
    return { code: 'InvalidMessageContents', message: INVALID_CHARACTERS_MESSAGE };
  }
  for (const [name, attribute] of Object.entries(message.MessageAttributes ?? {})) {
    if (typeof attribute.DataType !== 'string' || !attribute.DataType.startsWith('String')) continue;
    const value = attribute.StringValue;
    if (typeof value !== 'string' || value === '') {
      return {
        code: 'InvalidParameterValue',
        message: `Message (user) attribute '${name}' must contain a non-empty value of type 'String'.`,
      };
    }
    if (SQS_REFUSED_CHARACTER.test(value)) {
      return { code: 'InvalidParameterValue', message: INVALID_CHARACTERS_MESSAGE };
    }
  }
  return undefined;
}

/** Whether a SendMessageBatch passes the checks SQS makes on the request as a whole. */
function wellFormedBatch(entries: MessageInput[]): boolean {
  if (entries.length === 0 || entries.length > MAX_BATCH_ENTRIES) return false;
  const ids = new Set<unknown>();
  let bytes = 0;
  for (const entry of entries) {
    if (typeof entry.Id !== 'string' || !BATCH_ENTRY_ID.test(entry.Id) || ids.has(entry.Id)) return false;
    ids.add(entry.Id);
    if (typeof entry.MessageBody === 'string') bytes += Buffer.byteLength(entry.MessageBody);
    for (const [name, attribute] of Object.entries(entry.MessageAttributes ?? {})) {
      bytes += Buffer.byteLength(name) + Buffer.byteLength(String(attribute.DataType ?? ''));
      if (typeof attribute.StringValue === 'string') bytes += Buffer.byteLength(attribute.StringValue);
    }
  }
  return bytes <= MAX_BATCH_BYTES;
}
