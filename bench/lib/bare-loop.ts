import type { Readable } from 'node:stream';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';

/** What the reference loop saw. */
export interface BareLoopResult {
  seconds: number;
  bytes: number;
  lines: number;
  /** Lines that were not JSON (counted, not fatal). */
  unparsable: number;
}

/**
 * The reference of the throughput benchmarks: the least a reader of a JSONL object must do. It GETs the object from
 * the same store, splits the bytes on newlines and JSON.parses each line, nothing else: no validation, no hashing, no
 * writes. The pipeline's figure is its throughput as a share of this one's, measured in the same run.
 */
export async function bareLoop(s3: S3Client, bucket: string, key: string): Promise<BareLoopResult> {
  const started = performance.now();
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const body = out.Body as Readable;
  let bytes = 0;
  let lines = 0;
  let unparsable = 0;
  let rest: Buffer | undefined;
  const parse = (buffer: Buffer, start: number, end: number): void => {
    if (end <= start) return;
    lines++;
    try {
      JSON.parse(buffer.toString('utf8', start, end));
    } catch {
      unparsable++;
    }
  };
  for await (const piece of body) {
    const chunk: Buffer = rest ? Buffer.concat([rest, piece as Buffer]) : (piece as Buffer);
    bytes += (piece as Buffer).length;
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      parse(chunk, start, nl);
      start = nl + 1;
    }
    rest = start < chunk.length ? chunk.subarray(start) : undefined;
  }
  if (rest) parse(rest, 0, rest.length);
  return { seconds: (performance.now() - started) / 1000, bytes, lines, unparsable };
}
