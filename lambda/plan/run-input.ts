import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { MODES, runInputSchema, type RequestedMode, type RunInput } from '../shared/contracts';
import { callDependency, CorpusNotFoundError, InvalidRunInputError } from '../shared/errors';

/** Where a run's corpus may be. */
export interface InputScope {
  /** The ingest bucket: corpora under `ingestPrefix` in it. */
  ingestBucket: string;
  /** The ingest prefix (`''`: any key of the ingest bucket). */
  ingestPrefix: string;
  /** Other buckets a run may read, any key (`ingest.allowedBuckets`). */
  allowedBuckets: readonly string[];
}

/**
 * The run input, validated.
 * @throws InvalidRunInputError naming every problem and the expected shape
 */
export function parseRunInput(input: unknown): RunInput {
  const parsed = runInputSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'input'}: ${i.message}`).join('; ');
  throw new InvalidRunInputError(
    `Invalid run input (${problems}). Expected {"bucket": "<ingest bucket>", "key": "<corpus.jsonl or prefix/>", "mode": "auto|batch|converse", "ledgerScope": "<optional>"}`,
  );
}

/**
 * Refuses a corpus outside the input scope: runs read the ingest bucket (under its prefix) and the allowed buckets,
 * never the output bucket, whose objects are runs' own files (an items file run as a corpus would process it again).
 */
export function checkInputScope(bucket: string, key: string, input: InputScope, outputBucket: string): void {
  const where = [
    `s3://${input.ingestBucket}/${input.ingestPrefix}`,
    ...input.allowedBuckets.map((b) => `s3://${b}/`),
  ].join(', ');
  if (bucket === outputBucket) {
    throw new InvalidRunInputError(
      `The run input names s3://${bucket}/${key}, in the pipeline's output bucket, which holds runs' own files and is never read as a corpus; a corpus must be under ${where}`,
    );
  }
  if (bucket === input.ingestBucket) {
    if (key.startsWith(input.ingestPrefix)) return;
    throw new InvalidRunInputError(
      `The run input names s3://${bucket}/${key}, outside the ingest prefix ${input.ingestPrefix}; a corpus must be under ${where}`,
    );
  }
  if (input.allowedBuckets.includes(bucket)) return;
  throw new InvalidRunInputError(
    `The run input names the bucket ${bucket}, which runs may not read; a corpus must be under ${where} (the environment's ingest.allowedBuckets setting allows other buckets)`,
  );
}

/** The longest ledger scope (as the run input allows). */
const MAX_LEDGER_SCOPE_CHARS = 200;
/** Control characters, U+FFFE / U+FFFF and lone surrogates: a ledger scope is a key in DynamoDB and in SQS messages. */
const LEDGER_SCOPE_REFUSED = /[\p{Cc}\uFFFE\uFFFF]|\p{Cs}/u;

/**
 * The ledger scope of a run: the run input's, else the corpus object's metadata `ledger-scope`, else the deployment's.
 * @throws InvalidRunInputError for a scope that is empty, too long, padded with spaces or holds control characters
 */
export function resolveLedgerScope(
  fromInput: string | undefined,
  fromMetadata: string | undefined,
  deployed: string,
): string {
  const [scope, source] =
    fromInput !== undefined
      ? [fromInput, "the run input's ledgerScope"]
      : fromMetadata !== undefined
        ? [fromMetadata, "the corpus object's metadata ledger-scope"]
        : [deployed, undefined];
  if (source === undefined) return scope;
  const problem =
    scope.trim() === ''
      ? 'is blank'
      : scope.length > MAX_LEDGER_SCOPE_CHARS
        ? `is longer than ${MAX_LEDGER_SCOPE_CHARS} characters`
        : scope !== scope.trim()
          ? 'starts or ends with a space'
          : LEDGER_SCOPE_REFUSED.test(scope)
            ? 'holds a control character, U+FFFE, U+FFFF or a lone surrogate'
            : undefined;
  if (problem) {
    throw new InvalidRunInputError(
      `${source} ${JSON.stringify(scope.slice(0, 80))} ${problem}; a ledger scope is 1 to ${MAX_LEDGER_SCOPE_CHARS} printable characters`,
    );
  }
  return scope;
}

/** The requested mode: the run input's, else the corpus object's metadata `mode`, else `auto`. */
export function resolveRequestedMode(
  fromInput: RequestedMode | undefined,
  fromMetadata: string | undefined,
): RequestedMode {
  if (fromInput) return fromInput;
  if (fromMetadata === undefined) return 'auto';
  const mode = MODES.find((m) => m === fromMetadata.toLowerCase());
  if (!mode) {
    throw new InvalidRunInputError(
      `The corpus object's metadata mode=${fromMetadata} is not one of ${MODES.join(', ')}`,
    );
  }
  return mode;
}

/** What HeadObject says of the corpus: its size and etag, and the run settings its metadata carries. */
export interface CorpusHead {
  size: number;
  etag?: string;
  metadataMode?: string;
  metadataLedgerScope?: string;
}

/**
 * Heads the corpus object.
 * @throws CorpusNotFoundError when it cannot be read
 */
export async function headCorpus(s3: S3Client, bucket: string, key: string): Promise<CorpusHead> {
  try {
    const head = await callDependency('S3 HeadObject', () =>
      s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })),
    );
    return {
      size: head.ContentLength ?? 0,
      ...(head.ETag ? { etag: head.ETag.replace(/"/g, '') } : {}),
      ...(head.Metadata?.mode ? { metadataMode: head.Metadata.mode } : {}),
      // User metadata arrives with lower-cased keys (x-amz-meta-ledger-scope).
      ...(head.Metadata?.['ledger-scope'] !== undefined
        ? { metadataLedgerScope: head.Metadata['ledger-scope'] }
        : {}),
    };
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name === 'NotFound' || name === 'NoSuchKey' || name === 'NoSuchBucket' || name === 'Forbidden') {
      throw new CorpusNotFoundError(
        `Cannot read the corpus s3://${bucket}/${key} (${name}): check the bucket and key, and that the pipeline may read it`,
      );
    }
    throw err;
  }
}
