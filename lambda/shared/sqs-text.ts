/**
 * Text SQS accepts. Message bodies and String message attribute values may only hold
 * `#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`
 * (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html, and
 * API_MessageAttributeValue.html for attributes): no other C0 control, no U+FFFE / U+FFFF, no lone surrogate. Emoji
 * and every other astral character are fine. A message with any other character is refused
 * (`InvalidMessageContents` for a body), so whatever builds an SQS message from record data goes through here.
 */

/** One character SQS refuses in a body or a String attribute value (a lone surrogate counts as one). */
export const SQS_REFUSED_CHARACTER = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
const SQS_REFUSED_CHARACTERS = new RegExp(SQS_REFUSED_CHARACTER.source, 'gu');
/** The only characters JSON.stringify leaves in its output that SQS refuses. */
const NONCHARACTERS = /[\uFFFE\uFFFF]/g;

/** Whether SQS accepts `text` as a message body or a String attribute value (empty text aside). */
export function sqsAccepts(text: string): boolean {
  return !SQS_REFUSED_CHARACTER.test(text);
}

/**
 * A value as JSON text SQS accepts as a message body, whatever strings it holds: JSON.stringify already escapes the
 * C0 controls and lone surrogates; U+FFFE and U+FFFF, the only refused characters it leaves as they are, become
 * `\ufffe` / `\uffff` escapes, so the body still parses to the same value.
 */
export function sqsJsonBody(value: unknown): string {
  const text = JSON.stringify(value) as string | undefined;
  if (text === undefined) throw new TypeError('an SQS message body must be a JSON value');
  // Only inside JSON strings can these characters occur, and an escape there means the same character.
  return text.replace(NONCHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

/**
 * A String message attribute value SQS accepts: each refused character becomes U+FFFD, and an empty value (which SQS
 * refuses too) becomes `fallback`.
 */
export function sqsAttributeValue(text: string, fallback = 'Unknown'): string {
  const clean = text.replace(SQS_REFUSED_CHARACTERS, '\uFFFD');
  return clean === '' ? fallback : clean;
}
