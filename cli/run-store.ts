import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { StoredJob } from '../lambda/shared/batch-jobs';
import { collectKeys, type CollectShardSummary } from '../lambda/batch/collect/collect-contract';
import {
  runKeys,
  type FailureLine,
  type PlanOutput,
  type RunManifest,
  type ShardItem,
} from '../lambda/shared/contracts';
import { getJson, openObject, readLines } from '../lambda/shared/s3-jsonl';
import { mapWithConcurrency } from '../lambda/shared/pool';
import type { JobInfo } from './backend';
import { CliUsageError } from './errors';

/**
 * Reads what a run leaves in the output bucket (`runs/<runId>/...`: plan.json, manifest.json, shards.json, collect
 * markers, failure files). The same on AWS and locally: both backends hand over an S3 client.
 */

/** A Step Functions execution name, which is what a runId is. */
const RUN_ID = /^[A-Za-z0-9_-]{1,80}$/;

/**
 * Checks a RUN argument (an execution name), so it can never point outside `runs/<runId>/`.
 * @throws CliUsageError for anything that is not an execution name
 */
export function checkRunId(runId: string): string {
  if (!RUN_ID.test(runId)) {
    throw new CliUsageError(
      `"${runId}" is not a run id (an execution name: letters, digits, - and _, at most 80)`,
    );
  }
  return runId;
}

/** The execution ARN of a run: the state machine ARN with `execution` for `stateMachine`, plus the runId. */
export function executionArnOf(stateMachineArn: string, runId: string): string {
  return `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${runId}`;
}

/** A jobs table item as a {@link JobInfo} (the status last recorded). */
export function storedJobInfo(job: StoredJob): JobInfo {
  return {
    shard: job.shard,
    jobArn: job.jobArn,
    jobName: job.jobName,
    status: job.lastStatus ?? 'Submitted',
    submittedAt: job.submittedAt,
    ...(job.endedAt ? { endedAt: job.endedAt } : {}),
    ...(job.counts ? { counts: job.counts } : {}),
  };
}

/** A failure line and the file it came from. */
export type FailureRecord = FailureLine & { readonly file: string };

/** The run files in one output bucket. */
export class RunStore {
  constructor(
    private readonly s3: S3Client,
    readonly bucket: string,
  ) {}

  /** Plan's output (`runs/<runId>/plan.json`), once Plan has run. */
  plan(runId: string): Promise<PlanOutput | undefined> {
    return getJson<PlanOutput>(this.s3, this.bucket, runKeys.plan(runId));
  }

  /** The run manifest, once Finalize has run. */
  manifest(runId: string): Promise<RunManifest | undefined> {
    return getJson<RunManifest>(this.s3, this.bucket, runKeys.manifest(runId));
  }

  /** Batch mode's shard list. */
  shards(runId: string): Promise<ShardItem[] | undefined> {
    return getJson<ShardItem[]>(this.s3, this.bucket, runKeys.shards(runId));
  }

  /** Batch mode: the summaries Collect left for each shard it finished (`runs/<runId>/collect/shard-<n>.json`). */
  async collectMarkers(runId: string): Promise<CollectShardSummary[]> {
    const keys = await this.listKeys(collectPrefix(runId));
    const markers = await mapWithConcurrency(keys, 8, (key) =>
      getJson<CollectShardSummary>(this.s3, this.bucket, key),
    );
    return markers.filter((m): m is CollectShardSummary => m !== undefined).sort((a, b) => a.shard - b.shard);
  }

  /** The runIds with files in the bucket (`runs/<runId>/`), in key order. */
  async listRunIds(): Promise<string[]> {
    const ids: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.s3.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: 'runs/',
          Delimiter: '/',
          ...(token ? { ContinuationToken: token } : {}),
        }),
      );
      for (const p of page.CommonPrefixes ?? []) {
        const id = p.Prefix?.slice('runs/'.length, -1);
        if (id) ids.push(id);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return ids;
  }

  /** Every failure line of a run, file by file in key order, streamed. */
  async *failures(runId: string): AsyncGenerator<FailureRecord> {
    for (const key of await this.listKeys(runKeys.failuresPrefix(runId))) {
      const body = await openObject(this.s3, this.bucket, key);
      if (!body) continue;
      for await (const raw of readLines(body)) {
        const line = raw.trim();
        if (!line) continue;
        yield { ...failureLineOf(line), file: key };
      }
    }
  }

  private async listKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.s3.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          ...(token ? { ContinuationToken: token } : {}),
        }),
      );
      for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }
}

/** A failure line as written, or one that says it could not be read (shown, never dropped). */
export function failureLineOf(text: string): FailureLine {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const line = parsed as Partial<FailureLine> | undefined;
  if (
    typeof line === 'object' &&
    line !== null &&
    typeof line.stage === 'string' &&
    typeof line.error === 'object' &&
    line.error !== null &&
    typeof line.error.code === 'string'
  ) {
    return { ...line, error: { ...line.error, message: String(line.error.message ?? '') } } as FailureLine;
  }
  return {
    stage: 'finalize',
    error: { code: 'MalformedFailureLine', message: `not a failure line: ${text.slice(0, 200)}` },
  };
}

/** `runs/<runId>/collect/`: the folder of {@link collectKeys.marker}. */
function collectPrefix(runId: string): string {
  const marker = collectKeys.marker(runId, 0);
  return marker.slice(0, marker.lastIndexOf('/') + 1);
}
