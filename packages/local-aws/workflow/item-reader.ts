/**
 * Distributed Map item readers: S3 objects as JSON, JSONL or CSV (streamed; JSONL and CSV are
 * read record by record with backpressure, never whole), and S3 listings.
 * Every failure surfaces as `States.ItemReaderFailed`, like the service.
 */
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

import type { JsonValue } from './asl-runtime';
import { StatesError } from './errors';
import type { ObjectStore } from './types';

/** ASL error name of every reader failure. */
export const ITEM_READER_FAILED = 'States.ItemReaderFailed';

/** A resolved ItemReader: its resource, evaluated Parameters, and ReaderConfig. */
export interface ItemReaderRequest {
  resource: string;
  parameters: JsonValue;
  readerConfig: {
    InputType?: string;
    CSVHeaderLocation?: string;
    CSVHeaders?: string[];
    CSVDelimiter?: string;
    /** Resolved MaxItems (or MaxItemsPath value); 0 or undefined reads everything. */
    MaxItems?: number;
  };
}

const DELIMITERS: Record<string, string> = { COMMA: ',', PIPE: '|', SEMICOLON: ';', SPACE: ' ', TAB: '\t' };

function readerFailed(message: string): StatesError {
  return new StatesError(ITEM_READER_FAILED, message);
}

function stringParam(parameters: JsonValue, name: string, required: boolean): string | undefined {
  const value =
    typeof parameters === 'object' && parameters !== null && !Array.isArray(parameters)
      ? parameters[name]
      : undefined;
  if (value === undefined || value === null) {
    if (required) throw readerFailed(`ItemReader Parameters.${name} is required`);
    return undefined;
  }
  if (typeof value !== 'string') throw readerFailed(`ItemReader Parameters.${name} must be a string`);
  return value;
}

/**
 * Splits a byte stream into lines (LF or CRLF), decoding UTF-8 across chunk boundaries. Reads
 * one chunk at a time, so a slow consumer slows the stream down.
 */
export async function* readLines(stream: Readable): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let carry = '';
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    carry += typeof chunk === 'string' ? chunk : decoder.write(chunk);
    let start = 0;
    let newline = carry.indexOf('\n', start);
    while (newline !== -1) {
      const end = newline > start && carry[newline - 1] === '\r' ? newline - 1 : newline;
      yield carry.slice(start, end);
      start = newline + 1;
      newline = carry.indexOf('\n', start);
    }
    carry = carry.slice(start);
  }
  carry += decoder.end();
  if (carry.length > 0) yield carry.endsWith('\r') ? carry.slice(0, -1) : carry;
}

/** Parses JSON Lines, skipping blank lines; a malformed line fails with States.ItemReaderFailed. */
async function* jsonLines(stream: Readable, source: string): AsyncGenerator<JsonValue> {
  let lineNumber = 0;
  for await (const line of readLines(stream)) {
    lineNumber += 1;
    if (line.trim() === '') continue;
    try {
      yield JSON.parse(line) as JsonValue;
    } catch (err) {
      throw readerFailed(`${source}: line ${lineNumber} is not valid JSON (${(err as Error).message})`);
    }
  }
}

async function readAll(stream: Readable): Promise<string> {
  const decoder = new StringDecoder('utf8');
  let text = '';
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    text += typeof chunk === 'string' ? chunk : decoder.write(chunk);
  }
  return text + decoder.end();
}

async function* jsonArray(stream: Readable, source: string): AsyncGenerator<JsonValue> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readAll(stream));
  } catch (err) {
    throw readerFailed(`${source} is not valid JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(parsed)) throw readerFailed(`${source} must hold a JSON array`);
  yield* parsed as JsonValue[];
}

/** Streams CSV records (RFC 4180 quoting, fields may span lines). */
export async function* csvRecords(stream: Readable, delimiter: string): AsyncGenerator<string[]> {
  const decoder = new StringDecoder('utf8');
  let field = '';
  let record: string[] = [];
  let inQuotes = false;
  let quotePending = false; // saw a quote inside a quoted field: either an escaped quote or the closing one
  let fieldStarted = false;
  const endRecord = function* (): Generator<string[]> {
    if (fieldStarted || record.length > 0 || field !== '') {
      record.push(field);
      // A blank line is no record.
      if (record.length > 1 || record[0] !== '') yield record;
    }
    record = [];
    field = '';
    fieldStarted = false;
  };
  const consume = function* (text: string): Generator<string[]> {
    for (const char of text) {
      if (inQuotes) {
        if (quotePending) {
          quotePending = false;
          if (char === '"') {
            field += '"';
            continue;
          }
          inQuotes = false;
        } else if (char === '"') {
          quotePending = true;
          continue;
        } else {
          field += char;
          continue;
        }
      }
      if (char === '"' && field === '') {
        inQuotes = true;
        fieldStarted = true;
      } else if (char === delimiter) {
        record.push(field);
        field = '';
        fieldStarted = true;
      } else if (char === '\n') {
        if (field.endsWith('\r')) field = field.slice(0, -1);
        yield* endRecord();
      } else {
        field += char;
        fieldStarted = true;
      }
    }
  };
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    yield* consume(typeof chunk === 'string' ? chunk : decoder.write(chunk));
  }
  yield* consume(decoder.end());
  if (inQuotes && !quotePending) throw readerFailed('CSV ends inside a quoted field');
  if (field.endsWith('\r')) field = field.slice(0, -1);
  yield* endRecord();
}

async function* csvItems(
  stream: Readable,
  source: string,
  config: ItemReaderRequest['readerConfig'],
): AsyncGenerator<JsonValue> {
  const delimiter = DELIMITERS[config.CSVDelimiter ?? 'COMMA'] ?? ',';
  let headers: string[] | undefined = config.CSVHeaderLocation === 'GIVEN' ? config.CSVHeaders : undefined;
  let row = 0;
  for await (const record of csvRecords(stream, delimiter)) {
    row += 1;
    if (headers === undefined) {
      headers = record;
      continue;
    }
    if (record.length !== headers.length) {
      throw readerFailed(
        `${source}: CSV row ${row} has ${record.length} fields, the header has ${headers.length}`,
      );
    }
    const item: Record<string, JsonValue> = {};
    headers.forEach((header, i) => {
      item[header] = record[i] ?? '';
    });
    yield item;
  }
}

async function* listedObjects(store: ObjectStore, bucket: string, prefix: string): AsyncGenerator<JsonValue> {
  for await (const object of store.listObjects(bucket, prefix)) {
    yield {
      Etag: object.ETag,
      Key: object.Key,
      LastModified: Math.floor(object.LastModified.getTime() / 1000),
      Size: object.Size,
      StorageClass: object.StorageClass,
    };
  }
}

async function* unlimited(request: ItemReaderRequest, store: ObjectStore): AsyncGenerator<JsonValue> {
  const bucket = stringParam(request.parameters, 'Bucket', true) ?? '';
  if (request.resource === 'arn:aws:states:::s3:listObjectsV2') {
    yield* listedObjects(store, bucket, stringParam(request.parameters, 'Prefix', false) ?? '');
    return;
  }
  const key = stringParam(request.parameters, 'Key', true) ?? '';
  const source = `s3://${bucket}/${key}`;
  let stream: Readable;
  try {
    stream = await store.getObjectStream(bucket, key);
  } catch (err) {
    const e = err as Error;
    throw readerFailed(`cannot read ${source}: ${e.name}: ${e.message}`);
  }
  switch (request.readerConfig.InputType ?? 'JSON') {
    case 'JSONL':
      yield* jsonLines(stream, source);
      return;
    case 'CSV':
      yield* csvItems(stream, source, request.readerConfig);
      return;
    default:
      yield* jsonArray(stream, source);
  }
}

/**
 * Streams the items of an ItemReader, stopping after MaxItems. Stream and listing errors fail
 * with States.ItemReaderFailed.
 */
export async function* readItems(request: ItemReaderRequest, store: ObjectStore): AsyncGenerator<JsonValue> {
  const max = request.readerConfig.MaxItems ?? 0;
  let count = 0;
  try {
    for await (const item of unlimited(request, store)) {
      yield item;
      count += 1;
      if (max > 0 && count >= max) return;
    }
  } catch (err) {
    if (err instanceof StatesError) throw err;
    const e = err as Error;
    throw readerFailed(`${e.name}: ${e.message}`);
  }
}
