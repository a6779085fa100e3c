import { createReadStream, createWriteStream, existsSync, statSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { finished } from 'node:stream/promises';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { Upload } from '@aws-sdk/lib-storage';
import type { RequestedMode, RunManifest } from '../../lambda/shared/contracts';
import { DROP_MARKER, runKeys } from '../../lambda/shared/contracts';
import { getJson, openObject } from '../../lambda/shared/s3-jsonl';
import { STACK_OUTPUTS } from '../../lambda/shared/contracts/outputs';
import { formatFaultReport, type FaultReport } from './fault-report';
import { formatMapProgress, type MapRunProgress } from './progress';
import {
  startLocalRuntime,
  type ExecutionSummary,
  type LocalRuntime,
  type LocalRuntimeOptions,
} from './runtime';

/** Whether a file name is one the ingest rule starts a run for (directly under the prefix) and Plan reads in a drop. */
function isCorpusName(name: string): boolean {
  return !name.startsWith('.') && (name.endsWith('.jsonl') || name.endsWith('.gz'));
}

/** The key name of a corpus file: its own, or `<name>.jsonl` for a name the ingest rule would not start a run for. */
function corpusName(name: string): string {
  return isCorpusName(name) ? name : `${name}.jsonl`;
}

/** Puts a file (or an empty object) into S3, streaming it. */
async function putFile(
  s3: S3Client,
  bucket: string,
  key: string,
  file: string | undefined,
  metadata?: Record<string, string>,
): Promise<void> {
  await new Upload({
    client: s3,
    params: {
      Bucket: bucket,
      Key: key,
      Body: file === undefined ? '' : createReadStream(file),
      ContentType:
        file === undefined
          ? 'text/plain'
          : file.endsWith('.gz')
            ? 'application/gzip'
            : 'application/x-ndjson',
      ...(metadata ? { Metadata: metadata } : {}),
    },
  }).done();
}

/** A mistake in how the command was called: exit code 2, no stack trace. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** What `corpus local run` needs. */
export interface LocalRunOptions {
  /**
   * A corpus file (`.jsonl`, `.jsonl.gz`, `.gz`; another name is put as `<name>.jsonl`), or a folder: its `.jsonl`,
   * `.jsonl.gz` and `.gz` files are put under a drop prefix, then its `_SUCCESS`, which starts the run of the drop.
   */
  corpusFile: string;
  mode: RequestedMode;
  /**
   * The ledger scope of the run (its records are deduplicated in it), sent as the corpus object's metadata
   * `ledger-scope`, which Plan reads. S3 metadata travels in HTTP headers: printable ASCII only.
   * @default the environment's scope
   */
  ledgerScope?: string;
  stateDir: string;
  /** @default <stateDir>/runs/<runId> */
  outDir?: string;
  /** Receives progress lines while the run goes on (and the Maps' progress as lines, without `mapProgress`). */
  progress?: ((line: string) => void) | undefined;
  /** Receives each Distributed Map's progress while the run goes on. */
  mapProgress?: ((progress: MapRunProgress) => void) | undefined;
  /** How long to wait for the run. @default 30 minutes */
  timeoutMs?: number;
  /** How long to wait after the run for the failure-lane consumer to empty its queue. @default 5 minutes */
  laneTimeoutMs?: number;
  /** Local runtime settings (Bedrock simulator behaviour and faults, schedule interval). */
  runtime?: Omit<LocalRuntimeOptions, 'stateDir'>;
}

/** What a local run produced. */
export interface LocalRunOutcome {
  runId: string;
  manifest: RunManifest;
  execution: ExecutionSummary;
  outDir: string;
  files: { manifest: string; results: string; failures: string; faults: string; published?: string };
  /** The failure lane after the run: messages still queued (0 when the consumer finished) and in the DLQ. */
  lane: FailureLaneState;
  /** What the faults did: crashes fired by point, throttled and faulted model calls (also in `files.faults`). */
  faults: FaultReport;
}

/** Where the failure lane stands. */
export interface FailureLaneState {
  pending: number;
  deadLettered: number;
}

const START_TIMEOUT_MS = 60_000;
/**
 * How long a local run waits for the failure lane to settle what the run handed it: each message may take its
 * maxReceiveCount receives, and a crashed consumer's batch waits out its retry delay.
 */
const LANE_TIMEOUT_MS = 300_000;
/** A ledger scope that can travel as S3 metadata (an HTTP header value): printable ASCII, trimmed, 1 to 200. */
const LEDGER_SCOPE_METADATA = /^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$/;

/**
 * Runs a corpus through the pipeline on the local runtime: puts the file into the ingest bucket (the run starts
 * through S3 -> EventBridge -> Step Functions as in AWS), waits for the execution and for the failure lane to settle
 * what the run handed it, then copies the manifest, the results and the failures into the output directory.
 */
export async function runLocalCorpus(options: LocalRunOptions): Promise<LocalRunOutcome> {
  const [outcome] = await runLocalCorpora({ ...options, corpusFiles: [options.corpusFile] });
  if (!outcome) throw new Error('the local run produced no outcome');
  return outcome;
}

/**
 * Several corpora at once through one local runtime (overlapping runs, as when several files land in the ingest
 * bucket together): each is put into the ingest bucket at the same time, under its own key, and each run's files go
 * to `<outDir>/<index>-<file name>/` (one corpus: `outDir` itself). The results queue's messages are split by run.
 */
export async function runLocalCorpora(
  options: Omit<LocalRunOptions, 'corpusFile'> & { corpusFiles: string[] },
): Promise<LocalRunOutcome[]> {
  for (const file of options.corpusFiles) {
    if (!existsSync(file) || !(statSync(file).isFile() || statSync(file).isDirectory())) {
      throw new UsageError(`--corpus ${file}: no such file or folder`);
    }
  }
  if (options.ledgerScope !== undefined && !LEDGER_SCOPE_METADATA.test(options.ledgerScope)) {
    throw new UsageError(
      `--ledger-scope ${JSON.stringify(options.ledgerScope)}: a ledger scope here is 1 to 200 printable ASCII characters, without leading or trailing spaces`,
    );
  }
  const progress = options.progress ?? (() => undefined);
  const mapProgress = options.mapProgress ?? ((p: MapRunProgress) => progress(formatMapProgress(p)));
  progress('starting the local runtime (emulators, Bedrock simulator, workflow runner)...');
  const runtime = await startLocalRuntime({ ...options.runtime, stateDir: options.stateDir });
  try {
    const single = options.corpusFiles.length === 1;
    const runs = await Promise.all(
      options.corpusFiles.map(async (corpusFile, index) => {
        const name = single ? basename(corpusFile) : `${index}-${basename(corpusFile)}`;
        const metadata = {
          mode: options.mode,
          ...(options.ledgerScope !== undefined ? { 'ledger-scope': options.ledgerScope } : {}),
        };
        const drop = statSync(corpusFile).isDirectory();
        // The key whose upload starts the run: the file itself, or the drop's _SUCCESS (the ingest rule's convention).
        const key = drop
          ? `${runtime.ingestPrefix}${name}/${DROP_MARKER}`
          : `${runtime.ingestPrefix}${corpusName(name)}`;
        const started = runtime.nextExecution(
          (e) => (JSON.parse(e.input) as { key?: unknown }).key === key,
          START_TIMEOUT_MS,
        );
        const settings = `mode ${options.mode}${options.ledgerScope !== undefined ? `, ledger scope ${options.ledgerScope}` : ''}`;
        if (drop) {
          const files = (await readdir(corpusFile, { withFileTypes: true }))
            .filter((f) => f.isFile() && isCorpusName(f.name))
            .map((f) => f.name)
            .sort();
          if (files.length === 0) {
            throw new UsageError(`--corpus ${corpusFile}: the folder holds no .jsonl, .jsonl.gz or .gz file`);
          }
          const dropPrefix = `${runtime.ingestPrefix}${name}/`;
          progress(
            `putting ${files.length} files of ${basename(corpusFile)}/ into s3://${runtime.ingestBucket}/${dropPrefix}`,
          );
          for (const file of files) {
            await putFile(runtime.s3, runtime.ingestBucket, `${dropPrefix}${file}`, join(corpusFile, file));
          }
          progress(`closing the drop with s3://${runtime.ingestBucket}/${key} (${settings})`);
          await putFile(runtime.s3, runtime.ingestBucket, key, undefined, metadata);
        } else {
          progress(`putting ${basename(corpusFile)} into s3://${runtime.ingestBucket}/${key} (${settings})`);
          await putFile(runtime.s3, runtime.ingestBucket, key, corpusFile, metadata);
        }
        const execution = await started.catch((err: unknown) => {
          throw new Error(
            `no execution started for s3://${runtime.ingestBucket}/${key}: the S3 -> EventBridge -> Step Functions path did not fire (${String(err)})`,
          );
        });
        progress(`run ${execution.name} started`);
        const done = await runtime.waitForExecution(
          execution.executionArn,
          options.timeoutMs ?? 30 * 60_000,
          mapProgress,
        );
        const runId = done.name;
        const first = await getJson<RunManifest>(runtime.s3, runtime.outputBucket, runKeys.manifest(runId));
        if (!first) {
          throw new Error(
            `run ${runId} ended ${done.status} without a manifest: ${done.error ?? ''} ${done.cause ?? ''}`.trim(),
          );
        }
        return { runId, done, first, name };
      }),
    );
    // Records the runs handed to the failure lane are settled by its consumer after the run, each settled record
    // revising the manifest: let it finish, so the files below are the settled state and equal the manifest.
    const lane = await waitForFailureLane(runtime, options.laneTimeoutMs ?? LANE_TIMEOUT_MS, progress);
    const faults = runtime.faultReport();
    const resultsQueueUrl = runtime.stack.optionalOutput('ResultsQueueUrl');
    const published = resultsQueueUrl ? await drainQueue(runtime.sqs, resultsQueueUrl) : undefined;
    const outcomes: LocalRunOutcome[] = [];
    for (const { runId, done, first, name } of runs) {
      const manifest =
        (await getJson<RunManifest>(runtime.s3, runtime.outputBucket, runKeys.manifest(runId))) ?? first;
      const base = options.outDir ?? join(options.stateDir, 'runs', runId);
      const outDir = single || !options.outDir ? base : join(base, name);
      await mkdir(outDir, { recursive: true });
      const files = {
        manifest: join(outDir, 'manifest.json'),
        results: join(outDir, 'results.jsonl'),
        failures: join(outDir, 'failures.jsonl'),
        faults: join(outDir, 'faults.json'),
      };
      await writeFile(files.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
      await concatenate(runtime.s3, runtime.outputBucket, runKeys.resultsPrefix(runId), files.results);
      await concatenate(runtime.s3, runtime.outputBucket, runKeys.failuresPrefix(runId), files.failures);
      await writeFile(files.faults, `${JSON.stringify(faults, null, 2)}\n`);
      if (published) {
        const file = join(outDir, 'published.jsonl');
        const mine = published.filter((body) => runOf(body) === runId);
        await writeFile(file, mine.map((l) => `${l}\n`).join(''));
        outcomes.push({
          runId,
          manifest,
          execution: done,
          outDir,
          files: { ...files, published: file },
          lane,
          faults,
        });
      } else {
        outcomes.push({ runId, manifest, execution: done, outDir, files, lane, faults });
      }
    }
    return outcomes;
  } finally {
    await runtime.stop();
  }
}

/** The runId of a results-queue message body. */
function runOf(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { runId?: string }).runId;
  } catch {
    return undefined;
  }
}

/** Concatenates every object under a prefix (in key order) into one local file. */
async function concatenate(s3: S3Client, bucket: string, prefix: string, file: string): Promise<void> {
  const out = createWriteStream(file);
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const object of page.Contents ?? []) {
      const body = object.Key ? await openObject(s3, bucket, object.Key) : undefined;
      if (!body) continue;
      for await (const chunk of body)
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  out.end();
  await finished(out);
}

/** A readable summary of a finished local run. */
export function formatSummary(outcome: LocalRunOutcome): string {
  const { manifest: m } = outcome;
  const c = m.counts;
  const seconds = (m.durationMs / 1000).toFixed(1);
  const lines = [
    `Run ${m.runId}: ${m.status} in ${seconds} s (mode ${m.mode ?? 'none'}, model ${m.modelId ?? 'n/a'})`,
    `  lines ${c.lines} = records ${c.records} + invalid ${c.invalid} + duplicates ${c.duplicates}`,
    `  records ${c.records} = succeeded ${c.succeeded} + failed ${c.failed} + skipped (already in the ledger) ${c.skipped}` +
      (c.pending > 0 ? ` + pending in the failure lane ${c.pending}` : ''),
    `  tokens: ${m.tokens.input} in, ${m.tokens.output} out`,
    `  model calls: ${m.modelCalls.total} (${m.modelCalls.throttled} throttled, ${m.modelCalls.retried} retried)`,
  ];
  if (m.revision > 1 || c.recovered > 0) {
    lines.push(`  failure lane: ${c.recovered} recovered after the run (manifest revision ${m.revision})`);
  }
  if (m.jobs && m.jobs.length > 0) {
    lines.push(`  batch jobs: ${m.jobs.length} (one per shard)`);
    for (const j of m.jobs) {
      const took =
        j.submittedAt && j.endedAt
          ? ` in ${((Date.parse(j.endedAt) - Date.parse(j.submittedAt)) / 1000).toFixed(1)} s`
          : '';
      lines.push(
        `    shard ${j.shard}: ${j.status}${took}, ${j.records} records: ${j.succeeded} succeeded, ${j.failed} failed, ${j.redriven} re-driven through Converse${j.message ? ` (${j.message})` : ''}`,
      );
    }
  }
  if (m.error) lines.push(`  error: ${m.error.code}: ${m.error.message}`);
  lines.push(...formatFaultReport(outcome.faults));
  lines.push(
    `  results:  ${outcome.files.results}`,
    `  failures: ${outcome.files.failures}${c.failed + c.invalid > 0 ? ` (${c.failed + c.invalid} lines, each with its reason)` : ''}`,
    `  manifest: ${outcome.files.manifest}`,
  );
  return lines.join('\n');
}

async function queueDepth(sqs: SQSClient, url: string): Promise<number> {
  const out = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: url,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  const a = out.Attributes ?? {};
  return Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesNotVisible ?? 0);
}

/** Waits until the failure queue is empty (its consumer retried or dead-lettered everything), or the timeout. */
async function waitForFailureLane(
  runtime: LocalRuntime,
  timeoutMs: number,
  progress: (line: string) => void,
): Promise<FailureLaneState> {
  const queueUrl = runtime.stack.output(STACK_OUTPUTS.failureQueueUrl);
  const dlqUrl = runtime.stack.output(STACK_OUTPUTS.failureDlqUrl);
  const deadline = Date.now() + timeoutMs;
  let pending = await queueDepth(runtime.sqs, queueUrl);
  if (pending > 0) progress(`  failure lane: ${pending} messages being retried...`);
  while (pending > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    pending = await queueDepth(runtime.sqs, queueUrl);
  }
  return { pending, deadLettered: await queueDepth(runtime.sqs, dlqUrl) };
}

/** Takes every message off a queue (the local stand-in for a downstream consumer): their bodies. */
async function drainQueue(sqs: SQSClient, url: string): Promise<string[]> {
  const lines: string[] = [];
  for (let empty = 0; empty < 2;) {
    const out = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }),
    );
    const messages = out.Messages ?? [];
    if (messages.length === 0) {
      empty++;
      continue;
    }
    for (const m of messages) lines.push(m.Body ?? '');
    await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: url,
        Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? '' })),
      }),
    );
  }
  return lines;
}
