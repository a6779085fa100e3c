/**
 * A deterministic generator of realistic corpus lines: Converse records with and without recordId, multi-turn and
 * system prompts, plain `{id, text}` lines for the prompt template, a few native (Anthropic Messages) bodies, a few
 * bad lines and identical duplicates; text lengths from a few hundred characters to tens of thousands (about 2 KB a
 * line on average, so 10M records make about 20 GB), with quotes, escapes and non-ASCII text.
 */

import { mulberry32 } from '@corpus-pipeline/local-aws/bedrock-simulator/engine';

// prettier-ignore
const WORDS = [
  'the', 'customer', 'reported', 'that', 'delivery', 'was', 'late', 'and', 'packaging', 'damaged', 'however',
  'support', 'resolved', 'issue', 'quickly', 'product', 'quality', 'exceeded', 'expectations', 'price', 'fair',
  'would', 'recommend', 'to', 'friends', 'battery', 'life', 'screen', 'bright', 'café', 'naïve', 'résumé', '"quoted"',
  'back\\slash', 'tab\there', '数据', 'überprüfen', 'año', 'review', 'summary', 'contract', 'clause', 'liability',
  'invoice', 'shipment', 'warranty', 'refund', 'within', 'thirty', 'days', 'of', 'purchase', 'order', '#4411',
];

/** A pool of text to slice lines from: generating every word per line would dominate the setup time. */
function textPool(random: () => number, chars: number): string {
  const parts: string[] = [];
  let length = 0;
  while (length < chars) {
    const word = WORDS[Math.floor(random() * WORDS.length)] ?? 'word';
    parts.push(word);
    length += word.length + 1;
    if (random() < 0.06) {
      parts.push('.\n');
      length += 2;
    }
  }
  return parts.join(' ');
}

/** The text length of a record: mostly short, some medium, a few long (a skewed mix like real corpora). */
function textLength(random: () => number): number {
  const r = random();
  if (r < 0.7) return 150 + Math.floor(random() * 1400);
  if (r < 0.96) return 1500 + Math.floor(random() * 4500);
  return 6000 + Math.floor(random() * 20000);
}

/** What a generated corpus holds. */
export interface CorpusStats {
  lines: number;
  bytes: number;
  invalid: number;
  duplicates: number;
}

/**
 * Generates lines until `targetBytes` is reached, in chunks of about 1 MB.
 * @param stats filled in as the chunks are produced
 */
export function* corpusChunks(targetBytes: number, seed: number, stats: CorpusStats): Generator<string> {
  const random = mulberry32(seed);
  const pool = textPool(random, 1 << 20);
  const slice = (length: number): string => {
    const start = Math.floor(random() * (pool.length - length - 1));
    return pool.slice(start, start + length).trim() || 'empty';
  };
  let chunk: string[] = [];
  let chunkBytes = 0;
  let recent: string[] = [];
  let n = 0;
  while (stats.bytes < targetBytes) {
    n++;
    const kind = random();
    let line: string;
    if (kind < 0.002) {
      line = `{"recordId": "bad-${n}", "modelInput": {"messages": [`; // truncated line
      stats.invalid++;
    } else if (kind < 0.005 && recent.length > 0) {
      line = recent[Math.floor(random() * recent.length)] ?? '';
      stats.duplicates++;
    } else if (kind < 0.6) {
      line = JSON.stringify({
        recordId: `rec-${n}`,
        modelInput: {
          messages: [{ role: 'user', content: [{ text: slice(textLength(random)) }] }],
          inferenceConfig: { maxTokens: 256 + Math.floor(random() * 768), temperature: 0.2 },
        },
      });
    } else if (kind < 0.7) {
      line = JSON.stringify({
        recordId: `chat-${n}`,
        modelInput: {
          system: [{ text: 'You are a careful analyst. Answer in three sentences.' }],
          messages: [
            { role: 'user', content: [{ text: slice(textLength(random)) }] },
            { role: 'assistant', content: [{ text: slice(200) }] },
            { role: 'user', content: [{ text: `Follow-up: ${slice(300)}` }] },
          ],
          inferenceConfig: { maxTokens: 512 },
        },
      });
    } else if (kind < 0.75) {
      // No recordId: Plan derives one from the content.
      line = JSON.stringify({
        modelInput: { messages: [{ role: 'user', content: [{ text: slice(textLength(random)) }] }] },
      });
    } else if (kind < 0.97) {
      line = JSON.stringify({ id: `doc-${n}`, text: slice(textLength(random)) });
    } else {
      // A native body of the default model's family (Amazon Nova).
      line = JSON.stringify({
        recordId: `native-${n}`,
        modelInput: {
          schemaVersion: 'messages-v1',
          messages: [{ role: 'user', content: [{ text: slice(textLength(random)) }] }],
          inferenceConfig: { max_new_tokens: 512 },
        },
      });
    }
    if (recent.length < 64) recent.push(line);
    else if (random() < 0.01) recent = [line];
    const text = `${line}\n`;
    const bytes = Buffer.byteLength(text);
    stats.lines++;
    stats.bytes += bytes;
    chunk.push(text);
    chunkBytes += bytes;
    if (chunkBytes >= 1 << 20) {
      yield chunk.join('');
      chunk = [];
      chunkBytes = 0;
    }
  }
  if (chunk.length > 0) yield chunk.join('');
}
