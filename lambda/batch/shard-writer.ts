import type { RecordFormat, WorkItem } from '../shared/contracts';
import { serializedItem } from '../shared/records';

/** The size of a record in a batch input file: its `{"recordId", "modelInput"}` line plus the newline. */
export function batchLineBytes(item: Pick<WorkItem, 'recordId' | 'modelInput'>): number {
  const known = fromItemJson(item);
  if (known !== undefined) return known;
  return Buffer.byteLength(JSON.stringify(batchLine(item))) + 1;
}

/**
 * The batch line size of an item parseLine serialized, without serializing it again: the item's JSON is
 * `{"recordId":R,"format":"F","modelInput":M,"line":N}` and its batch line `{"recordId":R,"modelInput":M}`, so the
 * difference is the ASCII of `,"format":"F"` and `,"line":N`. Undefined when the item's text is not known or not of
 * that shape.
 */
function fromItemJson(item: Pick<WorkItem, 'recordId' | 'modelInput'>): number | undefined {
  const known = serializedItem(item);
  const { format, line } = item as Partial<WorkItem>;
  if (!known || (format !== 'converse' && format !== 'native') || !Number.isSafeInteger(line))
    return undefined;
  const lineSuffix = `,"line":${String(line)}}`;
  if (!known.text.endsWith(lineSuffix)) return undefined;
  // `,"format":"` + format + `"` and `,"line":` + digits; the closing brace stays.
  return known.bytes - (12 + format.length) - (lineSuffix.length - 1) + 1;
}

const ITEM_HEAD = Buffer.from('{"recordId":"');
const FORMAT_KEYS: Record<RecordFormat, Buffer> = {
  converse: Buffer.from(',"format":"converse","modelInput":'),
  native: Buffer.from(',"format":"native","modelInput":'),
};
const MODEL_INPUT_KEY = Buffer.from(',"modelInput":');
const LINE_KEY = Buffer.from(',"line":');
const SOURCE_KEY = Buffer.from(',"source":"');
const CLOSE = Buffer.from('}');

/** An items-file line cut into what a batch line is made of, without parsing it. */
interface RawItem {
  format: RecordFormat;
  /** `{"recordId":"<id>"` */
  head: Buffer;
  /** The modelInput's JSON. */
  modelInput: Buffer;
}

/**
 * Cuts an items-file line as Plan writes it (`{"recordId":"<id>","format":"<f>","modelInput":<json>,"line":<n>}`)
 * into its parts, or undefined when it is not exactly of that shape (the caller then parses it). Safe on UTF-8
 * bytes: a quote or backslash byte never occurs inside a multi-byte character.
 */
export function cutItemLine(line: Buffer): RawItem | undefined {
  if (
    line.length < ITEM_HEAD.length ||
    line.compare(ITEM_HEAD, 0, ITEM_HEAD.length, 0, ITEM_HEAD.length) !== 0
  )
    return undefined;
  // The recordId's closing quote: the first quote not escaped by an odd run of backslashes.
  let idEnd = -1;
  for (
    let quote = line.indexOf(0x22, ITEM_HEAD.length);
    quote !== -1;
    quote = line.indexOf(0x22, quote + 1)
  ) {
    let slashes = 0;
    while (line[quote - 1 - slashes] === 0x5c) slashes++;
    if (slashes % 2 === 0) {
      idEnd = quote + 1;
      break;
    }
  }
  if (idEnd === -1) return undefined;
  let format: RecordFormat | undefined;
  for (const candidate of ['converse', 'native'] as const) {
    const key = FORMAT_KEYS[candidate];
    if (
      line.length >= idEnd + key.length &&
      line.compare(key, 0, key.length, idEnd, idEnd + key.length) === 0
    ) {
      format = candidate;
      break;
    }
  }
  if (!format) return undefined;
  const inputStart = idEnd + FORMAT_KEYS[format].length;
  const lineKey = line.lastIndexOf(LINE_KEY);
  if (lineKey <= inputStart || line[line.length - 1] !== 0x7d) return undefined;
  const digitsStart = lineKey + LINE_KEY.length;
  if (digitsStart >= line.length - 1) return undefined;
  for (let i = digitsStart; i < line.length - 1; i++) {
    const byte = line[i] as number;
    if (byte < 0x30 || byte > 0x39) return undefined;
  }
  // A modelInput ends in `}`; a quote before the line number ends the source string Plan writes between them (an
  // unescaped `,"source":"` cannot be inside that string, so the last one is where it starts).
  let inputEnd = lineKey;
  if (line[lineKey - 1] === 0x22) {
    inputEnd = line.lastIndexOf(SOURCE_KEY, lineKey);
    if (inputEnd <= inputStart) return undefined;
  }
  return { format, head: line.subarray(0, idEnd), modelInput: line.subarray(inputStart, inputEnd) };
}

/**
 * An items-file line as a batch input line: the parts of `{"recordId":R,"modelInput":M}` cut from its bytes, or, for a
 * line of another shape (an older writer), the object to serialize.
 */
export function batchLineOf(
  raw: Buffer,
): Buffer[] | { recordId: string; modelInput: Record<string, unknown> } {
  const cut = cutItemLine(raw);
  if (cut) return [cut.head, MODEL_INPUT_KEY, cut.modelInput, CLOSE];
  return batchLine(JSON.parse(raw.toString('utf8')) as WorkItem);
}

function batchLine(item: Pick<WorkItem, 'recordId' | 'modelInput'>): {
  recordId: string;
  modelInput: Record<string, unknown>;
} {
  return { recordId: item.recordId, modelInput: item.modelInput };
}

/** What the first pass counted, per record format, of the records to process. */
export interface FormatTotals {
  records: number;
  bytes: number;
}
