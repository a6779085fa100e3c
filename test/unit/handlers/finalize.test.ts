import 'aws-sdk-client-mock-jest';
import { beforeEach, describe, expect, it } from '@jest/globals';
import { mockClient } from 'aws-sdk-client-mock';
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { finalizeRun, type FinalizeDeps, type FinalizeEvent } from '../../../lambda/finalize';
import { batchIdOf } from '../../../lambda/shared/batches';
import { collectKeys, type CollectShardSummary } from '../../../lambda/shared/collect';
import {
  runKeys,
  type BatchEvent,
  type BatchJobOutcome,
  type BatchSummary,
  type FailureLine,
  type ManifestJob,
  type PlanOutput,
  type ResultLine,
  type RunManifest,
  type ShardItem,
  type WorkItem,
} from '../../../lambda/shared/contracts';
import { FakeS3 } from './helpers';

const s3Mock = mockClient(S3Client);
const ebMock = mockClient(EventBridgeClient);

const OUT = 'output-bucket';
const RUN = 'run-42';
const STARTED = '2025-01-02T03:00:00.000Z';
const FINISHED = new Date('2025-01-02T03:10:00.000Z');
const MAP_PREFIX = 'map-runs/5f2c1a/';

let s3: FakeS3;

function deps(): FinalizeDeps {
  return {
    s3: new S3Client({}),
    events: new EventBridgeClient({}),
    outputBucket: OUT,
    eventBusName: 'corpus-bus',
    now: () => FINISHED,
  };
}

function event(state: object): FinalizeEvent {
  return { runId: RUN, startedAt: STARTED, state: { ...state } };
}

function item(recordId: string, line: number): WorkItem {
  return {
    recordId,
    line,
    format: 'converse',
    modelInput: { messages: [{ role: 'user', content: [{ text: recordId }] }] },
  };
}

function plan(counts: Partial<PlanOutput['counts']> = {}): PlanOutput {
  return {
    runId: RUN,
    startedAt: STARTED,
    mode: 'converse',
    requestedMode: 'auto',
    corpus: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl', etag: 'e', size: 100 },
    output: { bucket: OUT, prefix: `runs/${RUN}/` },
    itemsKey: `runs/${RUN}/items.jsonl`,
    ledgerScope: 'test/model',
    modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
    counts: { lines: 9, records: 6, invalid: 2, duplicates: 1, skipped: 1, toProcess: 5, ...counts },
    fanOut: {
      itemsKey: `runs/${RUN}/items.jsonl`,
      batchSize: 3,
      maxConcurrency: 2,
      toleratedFailurePercentage: 50,
    },
  };
}

function result(recordId: string, input = 10, output = 4): ResultLine {
  return {
    recordId,
    modelOutput: { text: recordId },
    usage: { inputTokens: input, outputTokens: output, totalTokens: input + output },
  };
}

function batchEvent(...items: WorkItem[]): BatchEvent {
  return { BatchInput: { runId: RUN, ledgerScope: 'test/model' }, Items: items };
}

/** One entry of a ResultWriter SUCCEEDED_n / FAILED_n / PENDING_n file, in the AWS format. */
function childResult(
  input: BatchEvent,
  status: 'SUCCEEDED' | 'FAILED' | 'PENDING',
  extra: Record<string, unknown>,
): Record<string, unknown> {
  return {
    ExecutionArn: `arn:aws:states:us-east-1:123456789012:express:pipeline/FanOut:${status}-${input.Items[0]?.recordId}`,
    Input: JSON.stringify(input),
    InputDetails: { Included: true },
    Name: `child-${input.Items[0]?.recordId}`,
    StartDate: '2025-01-02T03:01:00.000Z',
    StateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:pipeline/FanOut',
    Status: status,
    StopDate: '2025-01-02T03:02:00.000Z',
    RedriveCount: 0,
    RedriveStatus: 'NOT_REDRIVABLE',
    ...extra,
  };
}

function lambdaCause(errorType: string, errorMessage: string): string {
  return JSON.stringify({
    errorType,
    errorMessage,
    trace: [`${errorType}: ${errorMessage}`, '    at processBatch (/var/task/index.js:1:1)'],
  });
}

function manifest(): RunManifest {
  return s3.json<RunManifest>(OUT, `runs/${RUN}/manifest.json`);
}

function putEvent(): {
  DetailType?: string;
  Source?: string;
  EventBusName?: string;
  detail: Record<string, unknown>;
} {
  const entry = ebMock.commandCalls(PutEventsCommand)[0]?.args[0].input.Entries?.[0];
  if (!entry) throw new Error('no event was put');
  return { ...entry, detail: JSON.parse(entry.Detail ?? '{}') as Record<string, unknown> };
}

function expectInvariants(m: RunManifest): void {
  expect(m.counts.lines).toBe(m.counts.records + m.counts.invalid + m.counts.duplicates);
  expect(m.counts.records).toBe(m.counts.succeeded + m.counts.failed + m.counts.skipped);
}

beforeEach(() => {
  s3Mock.reset();
  ebMock.reset();
  s3 = new FakeS3(s3Mock, { listPageSize: 1 }).install();
  ebMock.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'evt-1' }] });
});

describe('finalizeRun from the Map ResultWriter files', () => {
  const done = batchEvent(item('r1', 1), item('r2', 2), item('r3', 4));
  const broken = batchEvent(item('r4', 5), item('r5', 7));
  const never = batchEvent(item('r6', 8));
  const summary: BatchSummary = {
    batchId: batchIdOf(RUN, ['r1', 'r2', 'r3']),
    records: 3,
    succeeded: 2,
    failed: 1,
    skipped: 0,
    throttled: 1,
    inputTokens: 20,
    outputTokens: 8,
  };

  beforeEach(async () => {
    s3.putJson(OUT, `${MAP_PREFIX}manifest.json`, {
      DestinationBucket: OUT,
      MapRunArn: 'arn:aws:states:us-east-1:123456789012:mapRun:pipeline/FanOut:5f2c1a',
      ResultFiles: {
        FAILED: [{ Key: `${MAP_PREFIX}FAILED_0.json`, Size: 1 }],
        PENDING: [{ Key: `${MAP_PREFIX}PENDING_0.json`, Size: 1 }],
        SUCCEEDED: [{ Key: `${MAP_PREFIX}SUCCEEDED_0.json`, Size: 1 }],
      },
    });
    s3.putJson(OUT, `${MAP_PREFIX}SUCCEEDED_0.json`, [
      childResult(done, 'SUCCEEDED', { Output: JSON.stringify(summary), OutputDetails: { Included: true } }),
    ]);
    s3.putJson(OUT, `${MAP_PREFIX}FAILED_0.json`, [
      childResult(broken, 'FAILED', {
        Error: 'TransientDependencyError',
        Cause: lambdaCause('TransientDependencyError', 'ledger publish failed transiently: Rate exceeded'),
      }),
    ]);
    s3.putJson(OUT, `${MAP_PREFIX}PENDING_0.json`, [childResult(never, 'PENDING', {})]);
    // The failed child had written r4's answer before it failed.
    s3.putLines(OUT, `runs/${RUN}/results/${batchIdOf(RUN, ['r4', 'r5'])}.jsonl`, [result('r4', 7, 3)]);
    const state = {
      ...plan({ lines: 10, records: 7, toProcess: 6 }),
      fanOutResult: {
        mapRunArn: 'arn:aws:states:us-east-1:123456789012:mapRun:pipeline/FanOut:5f2c1a',
        resultWriterDetails: { Bucket: OUT, Key: `${MAP_PREFIX}manifest.json` },
      },
    };
    await finalizeRun(event(state), deps());
  });

  it('sums the children and counts what a failed child had already published as succeeded', () => {
    const m = manifest();
    expect(m.status).toBe('SUCCEEDED');
    expect(m.counts).toEqual({
      lines: 10,
      records: 7,
      succeeded: 3,
      failed: 3,
      invalid: 2,
      duplicates: 1,
      skipped: 1,
    });
    expect(m.tokens).toEqual({ input: 27, output: 11 });
    expect(m.batches).toEqual({ total: 3, failed: 2 });
    expectInvariants(m);
  });

  it('writes the rest of a failed or pending child as fanout failures with the reason', () => {
    expect(s3.lines<FailureLine>(OUT, `runs/${RUN}/failures/fanout.jsonl`)).toEqual([
      {
        recordId: 'r5',
        line: 7,
        stage: 'fanout',
        error: {
          code: 'TransientDependencyError',
          message: 'the batch holding this record failed: ledger publish failed transiently: Rate exceeded',
          retryable: true,
        },
      },
      {
        recordId: 'r6',
        line: 8,
        stage: 'fanout',
        error: {
          code: 'NotProcessed',
          message: 'the batch holding this record failed: the batch did not complete',
          retryable: true,
        },
      },
    ]);
  });

  it('writes the manifest with where everything is and how long it took', () => {
    expect(manifest()).toMatchObject({
      runId: RUN,
      mode: 'converse',
      startedAt: STARTED,
      finishedAt: FINISHED.toISOString(),
      durationMs: 600_000,
      corpus: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl' },
      modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
      ledgerScope: 'test/model',
      output: {
        bucket: OUT,
        manifestKey: `runs/${RUN}/manifest.json`,
        resultsPrefix: `runs/${RUN}/results/`,
        failuresPrefix: `runs/${RUN}/failures/`,
      },
    });
    expect(manifest().error).toBeUndefined();
  });

  it('puts Corpus Run Completed on the pipeline bus with the counts and S3 URIs', () => {
    expect(ebMock).toHaveReceivedCommandTimes(PutEventsCommand, 1);
    const e = putEvent();
    expect(e).toMatchObject({
      EventBusName: 'corpus-bus',
      Source: 'corpus.pipeline',
      DetailType: 'Corpus Run Completed',
    });
    expect(e.detail).toEqual({
      runId: RUN,
      status: 'SUCCEEDED',
      mode: 'converse',
      counts: manifest().counts,
      tokens: { input: 27, output: 11 },
      corpus: { bucket: 'ingest-bucket', key: 'corpora/c.jsonl' },
      manifest: `s3://${OUT}/runs/${RUN}/manifest.json`,
      results: `s3://${OUT}/runs/${RUN}/results/`,
      failures: `s3://${OUT}/runs/${RUN}/failures/`,
    });
  });
});

describe('finalizeRun on failed runs', () => {
  it('Plan failed: a FAILED manifest carrying the Lambda errorMessage, and Corpus Run Failed', async () => {
    const message = 'Invalid run input (key: Invalid input: expected string, received undefined)';
    const out = await finalizeRun(
      event({
        bucket: 'ingest-bucket',
        key: 'x.jsonl',
        error: { Error: 'InvalidRunInputError', Cause: lambdaCause('InvalidRunInputError', message) },
      }),
      deps(),
    );
    expect(out).toEqual({
      runId: RUN,
      status: 'FAILED',
      manifestKey: `runs/${RUN}/manifest.json`,
      counts: { lines: 0, records: 0, succeeded: 0, failed: 0, invalid: 0, duplicates: 0, skipped: 0 },
      error: { code: 'InvalidRunInputError', message },
    });
    expect(manifest()).toMatchObject({
      status: 'FAILED',
      mode: null,
      modelId: null,
      corpus: { bucket: 'ingest-bucket', key: 'x.jsonl' },
      error: { code: 'InvalidRunInputError', message },
    });
    expect(manifest().batches).toBeUndefined();
    const e = putEvent();
    expect(e.DetailType).toBe('Corpus Run Failed');
    expect(e.detail).toMatchObject({ status: 'FAILED', error: { code: 'InvalidRunInputError', message } });
    expect(s3Mock).not.toHaveReceivedCommand(GetObjectCommand);
  });

  it('keeps a cause that is not Lambda JSON as it is', async () => {
    const out = await finalizeRun(
      event({ error: { Error: 'States.Timeout', Cause: 'Task timed out' } }),
      deps(),
    );
    expect(out.error).toEqual({ code: 'States.Timeout', message: 'Task timed out' });
    expect(manifest().corpus).toBeNull();
  });

  it('Map failed without ResultWriter details: accounts for every record from the run files', async () => {
    const p = plan();
    s3.putLines(OUT, p.itemsKey, [item('r1', 1), item('r2', 2), item('r3', 3), item('r4', 5), item('r5', 6)]);
    s3.putLines(OUT, `runs/${RUN}/results/aaa.jsonl`, [result('r1', 10, 1), result('r2', 20, 2)]);
    // A retried batch wrote r2 again into a second file: counted once.
    s3.putLines(OUT, `runs/${RUN}/results/bbb.jsonl`, [result('r2', 20, 2)]);
    s3.putLines(OUT, `runs/${RUN}/failures/aaa.jsonl`, [
      { recordId: 'r3', line: 3, stage: 'converse', error: { code: 'ValidationException', message: 'bad' } },
      {
        recordId: 'r2',
        line: 2,
        stage: 'converse',
        error: { code: 'ThrottlingException', message: 'stale' },
      },
    ]);
    s3.putLines(OUT, `runs/${RUN}/failures/plan.jsonl`, [
      { line: 4, stage: 'plan', error: { code: 'InvalidJson', message: 'x' } },
    ]);
    const cause = 'The specified tolerated failure threshold was exceeded';
    const out = await finalizeRun(
      event({ ...p, error: { Error: 'States.ExceedToleratedFailureThreshold', Cause: cause } }),
      deps(),
    );

    expect(out.status).toBe('FAILED');
    const m = manifest();
    expect(m.counts).toEqual({
      lines: 9,
      records: 6,
      succeeded: 2,
      failed: 3,
      invalid: 2,
      duplicates: 1,
      skipped: 1,
    });
    expect(m.tokens).toEqual({ input: 30, output: 3 });
    expect(m.error).toEqual({ code: 'States.ExceedToleratedFailureThreshold', message: cause });
    expectInvariants(m);
    expect(s3.lines<FailureLine>(OUT, `runs/${RUN}/failures/fanout.jsonl`)).toEqual(
      ['r4', 'r5'].map((recordId, i) => ({
        recordId,
        line: [5, 6][i],
        stage: 'fanout',
        error: {
          code: 'States.ExceedToleratedFailureThreshold',
          message: `not processed: ${cause}`,
          retryable: true,
        },
      })),
    );
    // Paged listing (page size 1 here): every results and failures file was read.
    expect(s3Mock.commandCalls(ListObjectsV2Command).length).toBeGreaterThan(2);
    expect(putEvent().DetailType).toBe('Corpus Run Failed');
  });

  it('fails the run when the children do not account for every record', async () => {
    s3.putJson(OUT, `${MAP_PREFIX}manifest.json`, {
      ResultFiles: { SUCCEEDED: [{ Key: `${MAP_PREFIX}SUCCEEDED_0.json` }] },
    });
    s3.putJson(OUT, `${MAP_PREFIX}SUCCEEDED_0.json`, [
      childResult(batchEvent(item('r1', 1)), 'SUCCEEDED', {
        Output: JSON.stringify({ records: 1, succeeded: 1, failed: 0, skipped: 0 }),
      }),
    ]);
    const out = await finalizeRun(
      event({
        ...plan(),
        fanOutResult: { resultWriterDetails: { Bucket: OUT, Key: `${MAP_PREFIX}manifest.json` } },
      }),
      deps(),
    );
    expect(out.status).toBe('FAILED');
    expect(out.error).toEqual({
      code: 'AccountingMismatch',
      message: '5 records were to be processed but 1 succeeded, 0 failed and 0 were skipped',
    });
  });
});

describe('finalizeRun edge cases', () => {
  it('nothing to process: SUCCEEDED without reading any Map file', async () => {
    const out = await finalizeRun(event(plan({ records: 6, skipped: 6, toProcess: 0 })), deps());
    expect(out.status).toBe('SUCCEEDED');
    expect(out.counts).toEqual({
      lines: 9,
      records: 6,
      succeeded: 0,
      failed: 0,
      invalid: 2,
      duplicates: 1,
      skipped: 6,
    });
    expect(s3Mock).not.toHaveReceivedCommand(GetObjectCommand);
    expect(s3Mock).not.toHaveReceivedCommand(ListObjectsV2Command);
    expect(manifest().batches).toEqual({ total: 0, failed: 0 });
    expect(putEvent().DetailType).toBe('Corpus Run Completed');
  });

  it('throws when EventBridge does not accept the event', async () => {
    ebMock.on(PutEventsCommand).resolves({
      FailedEntryCount: 1,
      Entries: [{ ErrorCode: 'AccessDeniedException', ErrorMessage: 'not allowed' }],
    });
    await expect(finalizeRun(event(plan({ toProcess: 0 })), deps())).rejects.toThrow(
      'the run event was not accepted: AccessDeniedException: not allowed',
    );
  });

  it('throws a retryable TransientDependencyError when EventBridge throttles the event', async () => {
    ebMock.on(PutEventsCommand).resolves({
      FailedEntryCount: 1,
      Entries: [{ ErrorCode: 'ThrottlingException', ErrorMessage: 'Rate exceeded' }],
    });
    await expect(finalizeRun(event(plan({ toProcess: 0 })), deps())).rejects.toMatchObject({
      name: 'TransientDependencyError',
      message: expect.stringContaining('ThrottlingException: Rate exceeded'),
    });
  });

  it('throws when the ResultWriter manifest is missing', async () => {
    await expect(
      finalizeRun(
        event({
          ...plan(),
          fanOutResult: { resultWriterDetails: { Bucket: OUT, Key: `${MAP_PREFIX}manifest.json` } },
        }),
        deps(),
      ),
    ).rejects.toThrow(`Map Run manifest s3://${OUT}/${MAP_PREFIX}manifest.json is missing`);
  });
});

/** Record ids `<prefix>-0 .. <prefix>-(n-1)`. */
function ids(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
}

describe('finalizeRun for a batch (mode A) run', () => {
  const BATCH_PREFIX = 'map-runs/b7e1/';
  const FANOUT_PREFIX = 'map-runs/f9d3/';
  const JOB = (n: number): string => `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job${n}`;
  const shardIds = [ids('s0', 5), ids('s1', 2), ids('s2', 3)];
  const tail = [item('t-0', 30), item('t-1', 31)];
  const converseItems = [...tail, item('s0-4', 5)];

  const shards: ShardItem[] = shardIds.map((records, shard) => ({
    shard,
    records: records.length,
    bytes: 100 * records.length,
    format: 'converse',
    inputKeys: [`runs/${RUN}/batch/shard-${shard}/input/part-0.jsonl`],
    inputPrefix: `runs/${RUN}/batch/shard-${shard}/input/`,
    outputPrefix: `runs/${RUN}/batch/shard-${shard}/output/`,
  }));

  function batchPlan(): PlanOutput {
    const p = plan({ lines: 15, records: 13, invalid: 1, duplicates: 1, skipped: 1, toProcess: 12 });
    return {
      ...p,
      mode: 'batch',
      requestedMode: 'batch',
      fanOut: { ...p.fanOut, itemsKey: runKeys.converseItems(RUN) },
      batch: {
        shardsKey: runKeys.shards(RUN),
        shards: 3,
        records: 10,
        viaConverse: 2,
        maxConcurrency: 2,
        toleratedFailurePercentage: 50,
        jobWaitSeconds: 108_000,
        heartbeatSeconds: 960,
        quotas: { minRecordsPerJob: 2 },
        quotaSources: { minRecordsPerJob: 'configured' },
      },
    };
  }

  function marker(shard: number, counts: Partial<CollectShardSummary>): CollectShardSummary {
    return {
      shard,
      jobArn: JOB(shard),
      status: 'Completed',
      records: shardIds[shard]!.length,
      succeeded: 0,
      failed: 0,
      skipped: 0,
      missing: 0,
      inputTokens: 0,
      outputTokens: 0,
      manifestCheck: { expected: null, seen: 0, ok: true, ignoredLines: 0 },
      submittedAt: `2025-01-02T03:0${shard}:00.000Z`,
      endedAt: `2025-01-02T04:0${shard}:00.000Z`,
      ...counts,
    };
  }

  /** One entry of the batch Map's ResultWriter files: the child's input is the ItemSelector's output. */
  function shardChild(
    shard: ShardItem,
    status: 'SUCCEEDED' | 'FAILED' | 'PENDING',
    extra: Record<string, unknown>,
    input: Record<string, unknown> = {},
  ): Record<string, unknown> {
    return {
      ExecutionArn: `arn:aws:states:us-east-1:123456789012:execution:pipeline/BatchJobs:shard-${shard.shard}`,
      Input: JSON.stringify({
        runId: RUN,
        ledgerScope: 'test/model',
        shard,
        jobWaitSeconds: 108_000,
        heartbeatSeconds: 960,
        ...input,
      }),
      Name: `shard-${shard.shard}`,
      Status: status,
      ...extra,
    };
  }

  /**
   * What a run leaves behind: shard 0 answered 3, failed 1 and left 1 for Converse; shard 1's job Failed; shard 2
   * answered 2 and lost 1 to another run. Converse answered the tail and shard 0's leftover.
   */
  function stageRun(): void {
    const p = batchPlan();
    s3.putLines(OUT, p.itemsKey, [...shardIds.flat().map((id, i) => item(id, i + 1)), ...tail]);
    s3.putJson(OUT, runKeys.shards(RUN), shards);
    shards.forEach((shard, n) =>
      s3.putLines(
        OUT,
        shard.inputKeys[0]!,
        shardIds[n]!.map((recordId) => ({ recordId, modelInput: item(recordId, 1).modelInput })),
      ),
    );
    s3.putLines(OUT, collectKeys.results(RUN, 0, 0), [result('s0-0'), result('s0-1'), result('s0-2')]);
    s3.putLines(OUT, collectKeys.failures(RUN, 0), [
      { recordId: 's0-3', stage: 'batch', error: { code: '400', message: 'bad', retryable: false } },
    ]);
    s3.putLines(OUT, collectKeys.failures(RUN, 1), [
      { recordId: 's1-0', stage: 'batch', error: { code: 'BatchJobFailed', message: 'x', retryable: true } },
      { recordId: 's1-1', stage: 'batch', error: { code: 'BatchJobFailed', message: 'x', retryable: true } },
    ]);
    s3.putLines(OUT, collectKeys.results(RUN, 2, 0), [result('s2-0'), result('s2-1')]);
    s3.putLines(OUT, runKeys.converseItems(RUN), converseItems);
    s3.putLines(
      OUT,
      runKeys.results(
        RUN,
        batchIdOf(
          RUN,
          converseItems.map((i) => i.recordId),
        ),
      ),
      [result('t-0', 5, 2), result('t-1', 5, 2), result('s0-4', 5, 2)],
    );
    s3.putJson(
      OUT,
      collectKeys.marker(RUN, 0),
      marker(0, {
        succeeded: 3,
        failed: 1,
        missing: 1,
        redriveKey: collectKeys.redrive(RUN, 0),
        inputTokens: 30,
        outputTokens: 12,
      }),
    );
    s3.putJson(
      OUT,
      collectKeys.marker(RUN, 1),
      marker(1, {
        status: 'Failed',
        failed: 2,
        message: 'The input file has too few records',
      }),
    );
    s3.putJson(
      OUT,
      collectKeys.marker(RUN, 2),
      marker(2, {
        succeeded: 2,
        skipped: 1,
        inputTokens: 20,
        outputTokens: 8,
      }),
    );
    // The batch Map: shard 1's child failed in Collect (its job Failed), the others succeeded.
    s3.putJson(OUT, `${BATCH_PREFIX}manifest.json`, {
      DestinationBucket: OUT,
      ResultFiles: {
        FAILED: [{ Key: `${BATCH_PREFIX}FAILED_0.json` }],
        SUCCEEDED: [{ Key: `${BATCH_PREFIX}SUCCEEDED_0.json` }],
      },
    });
    s3.putJson(OUT, `${BATCH_PREFIX}SUCCEEDED_0.json`, [
      shardChild(shards[0]!, 'SUCCEEDED', { Output: JSON.stringify(marker(0, {})) }),
      shardChild(shards[2]!, 'SUCCEEDED', { Output: JSON.stringify(marker(2, {})) }),
    ]);
    s3.putJson(OUT, `${BATCH_PREFIX}FAILED_0.json`, [
      shardChild(shards[1]!, 'FAILED', {
        Error: 'BatchJobFailedError',
        Cause: lambdaCause('BatchJobFailedError', `Bedrock batch job ${JOB(1)} (shard 1) failed: too few`),
      }),
    ]);
    // The Converse fan-out over the tail and shard 0's leftover.
    s3.putJson(OUT, `${FANOUT_PREFIX}manifest.json`, {
      DestinationBucket: OUT,
      ResultFiles: { SUCCEEDED: [{ Key: `${FANOUT_PREFIX}SUCCEEDED_0.json` }] },
    });
    const fanOutSummary: BatchSummary = {
      batchId: batchIdOf(
        RUN,
        converseItems.map((i) => i.recordId),
      ),
      records: 3,
      succeeded: 3,
      failed: 0,
      skipped: 0,
      throttled: 0,
      inputTokens: 15,
      outputTokens: 6,
    };
    s3.putJson(OUT, `${FANOUT_PREFIX}SUCCEEDED_0.json`, [
      childResult(batchEvent(...converseItems), 'SUCCEEDED', { Output: JSON.stringify(fanOutSummary) }),
    ]);
  }

  function batchState(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      ...batchPlan(),
      batchResult: {
        mapRunArn: 'arn:aws:states:us-east-1:123456789012:mapRun:pipeline/BatchJobs:b7e1',
        resultWriterDetails: { Bucket: OUT, Key: `${BATCH_PREFIX}manifest.json` },
      },
      converse: { itemsKey: runKeys.converseItems(RUN), records: 3 },
      fanOutResult: {
        mapRunArn: 'arn:aws:states:us-east-1:123456789012:mapRun:pipeline/FanOut:f9d3',
        resultWriterDetails: { Bucket: OUT, Key: `${FANOUT_PREFIX}manifest.json` },
      },
      ...extra,
    };
  }

  beforeEach(() => {
    stageRun();
  });

  it('sums the collect markers and the Converse fan-out; a Failed job counts its records as failed', async () => {
    const out = await finalizeRun(event(batchState()), deps());
    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    expect(m.mode).toBe('batch');
    expect(m.counts).toEqual({
      lines: 15,
      records: 13,
      succeeded: 8,
      failed: 3,
      invalid: 1,
      duplicates: 1,
      skipped: 2,
    });
    expect(m.tokens).toEqual({ input: 65, output: 26 });
    expect(m.batches).toEqual({ total: 1, failed: 0 });
    expect(m.error).toBeUndefined();
    expectInvariants(m);
    // Summed from the markers: the results and failures files were not read.
    expect(s3Mock).not.toHaveReceivedCommandWith(GetObjectCommand, { Key: batchPlan().itemsKey });
    expect(s3Mock).not.toHaveReceivedCommand(ListObjectsV2Command);
    expect(s3.text(OUT, `runs/${RUN}/failures/fanout.jsonl`)).toBeUndefined();
  });

  it('lists the jobs from the markers, in shard order', async () => {
    await finalizeRun(event(batchState()), deps());
    const expected: ManifestJob[] = [
      {
        shard: 0,
        jobArn: JOB(0),
        status: 'Completed',
        records: 5,
        succeeded: 3,
        failed: 1,
        skipped: 0,
        redriven: 1,
        submittedAt: '2025-01-02T03:00:00.000Z',
        endedAt: '2025-01-02T04:00:00.000Z',
      },
      {
        shard: 1,
        jobArn: JOB(1),
        status: 'Failed',
        records: 2,
        succeeded: 0,
        failed: 2,
        skipped: 0,
        redriven: 0,
        submittedAt: '2025-01-02T03:01:00.000Z',
        endedAt: '2025-01-02T04:01:00.000Z',
        message: 'The input file has too few records',
      },
      {
        shard: 2,
        jobArn: JOB(2),
        status: 'Completed',
        records: 3,
        succeeded: 2,
        failed: 0,
        skipped: 1,
        redriven: 0,
        submittedAt: '2025-01-02T03:02:00.000Z',
        endedAt: '2025-01-02T04:02:00.000Z',
      },
    ];
    expect(manifest().jobs).toEqual(expected);
  });

  it('fails the run when the markers and the fan-out do not account for every record', async () => {
    // ConverseItems found records, but no fan-out result reached Finalize.
    const out = await finalizeRun(event(batchState({ fanOutResult: undefined })), deps());
    expect(out.error).toEqual({
      code: 'AccountingMismatch',
      message: '12 records were to be processed but 5 succeeded, 3 failed and 1 were skipped',
    });
    expect(manifest().jobs).toHaveLength(3);
  });

  it('a shard without a marker: accounts from the run files, its unanswered records failed with its child error', async () => {
    // Shard 2's Collect wrote one results part, then the function timed out: no marker.
    s3.objects.delete(`${OUT}/${collectKeys.marker(RUN, 2)}`);
    s3.putLines(OUT, collectKeys.results(RUN, 2, 0), [result('s2-0', 10, 4)]);
    const job2: BatchJobOutcome = {
      jobArn: JOB(2),
      jobName: 'corpus-test-run-42-2',
      shard: 2,
      status: 'Completed',
      submittedAt: '2025-01-02T03:02:00.000Z',
      endedAt: '2025-01-02T04:02:00.000Z',
      outputPrefix: `runs/${RUN}/batch/shard-2/output/job2/`,
    };
    s3.putJson(OUT, `${BATCH_PREFIX}SUCCEEDED_0.json`, [
      shardChild(shards[0]!, 'SUCCEEDED', { Output: JSON.stringify(marker(0, {})) }),
    ]);
    s3.putJson(OUT, `${BATCH_PREFIX}FAILED_0.json`, [
      shardChild(shards[1]!, 'FAILED', {
        Error: 'BatchJobFailedError',
        Cause: lambdaCause('BatchJobFailedError', 'x'),
      }),
      shardChild(
        shards[2]!,
        'FAILED',
        { Error: 'States.Timeout', Cause: 'Task timed out after 900 seconds' },
        { job: job2 },
      ),
    ]);

    const out = await finalizeRun(event(batchState()), deps());
    // The Map tolerated the failed children: the run succeeded, with failed records.
    expect(out.status).toBe('SUCCEEDED');
    const m = manifest();
    expect(m.counts).toEqual({
      lines: 15,
      records: 13,
      succeeded: 7,
      failed: 5,
      invalid: 1,
      duplicates: 1,
      skipped: 1,
    });
    expect(m.tokens).toEqual({ input: 30 + 10 + 15, output: 12 + 4 + 6 });
    expectInvariants(m);
    expect(s3.lines<FailureLine>(OUT, `runs/${RUN}/failures/fanout.jsonl`)).toEqual(
      ['s2-1', 's2-2'].map((recordId, i) => ({
        recordId,
        line: 9 + i,
        stage: 'batch',
        error: {
          code: 'States.Timeout',
          message: 'the batch job of shard 2 was not collected: Task timed out after 900 seconds',
          retryable: true,
        },
      })),
    );
    expect(m.jobs?.map((j) => [j.shard, j.status])).toEqual([
      [0, 'Completed'],
      [1, 'Failed'],
      [2, 'NotCollected'],
    ]);
    expect(m.jobs?.[2]).toEqual({
      shard: 2,
      jobArn: JOB(2),
      status: 'NotCollected',
      records: 3,
      succeeded: 1,
      failed: 2,
      skipped: 0,
      redriven: 0,
      submittedAt: '2025-01-02T03:02:00.000Z',
      endedAt: '2025-01-02T04:02:00.000Z',
      message: 'States.Timeout: Task timed out after 900 seconds',
    });
  });

  it('the batch Map failed: every record accounted for from the run files, the run error as the reason', async () => {
    s3.objects.delete(`${OUT}/${collectKeys.marker(RUN, 2)}`);
    s3.objects.delete(`${OUT}/${collectKeys.results(RUN, 2, 0)}`);
    // Nothing ran after the Map: no ConverseItems, no fan-out.
    s3.objects.delete(
      `${OUT}/${runKeys.results(
        RUN,
        batchIdOf(
          RUN,
          converseItems.map((i) => i.recordId),
        ),
      )}`,
    );
    const cause = 'The specified tolerated failure threshold was exceeded';
    const state = {
      ...batchPlan(),
      error: { Error: 'States.ExceedToleratedFailureThreshold', Cause: cause },
    };
    const out = await finalizeRun(event(state), deps());
    expect(out.status).toBe('FAILED');
    expect(out.error).toEqual({ code: 'States.ExceedToleratedFailureThreshold', message: cause });
    const m = manifest();
    expect(m.counts).toMatchObject({ succeeded: 3, failed: 9, skipped: 1 });
    expectInvariants(m);
    const failures = s3.lines<FailureLine>(OUT, `runs/${RUN}/failures/fanout.jsonl`);
    expect(failures.map((f) => [f.recordId, f.stage, f.error.code])).toEqual([
      ['s0-4', 'fanout', 'States.ExceedToleratedFailureThreshold'],
      ['s2-0', 'batch', 'States.ExceedToleratedFailureThreshold'],
      ['s2-1', 'batch', 'States.ExceedToleratedFailureThreshold'],
      ['s2-2', 'batch', 'States.ExceedToleratedFailureThreshold'],
      ['t-0', 'fanout', 'States.ExceedToleratedFailureThreshold'],
      ['t-1', 'fanout', 'States.ExceedToleratedFailureThreshold'],
    ]);
    expect(m.jobs?.[1]).toMatchObject({ status: 'Failed', failed: 2 });
    expect(m.jobs?.[2]).toEqual({
      shard: 2,
      jobArn: null,
      status: 'NotCollected',
      records: 3,
      succeeded: 0,
      failed: 3,
      skipped: 0,
      redriven: 0,
      submittedAt: null,
      endedAt: null,
      message: `States.ExceedToleratedFailureThreshold: ${cause}`,
    });
  });

  it('throws when the shard list is missing', async () => {
    s3.objects.delete(`${OUT}/${runKeys.shards(RUN)}`);
    await expect(finalizeRun(event(batchState()), deps())).rejects.toThrow(
      `shard list s3://${OUT}/${runKeys.shards(RUN)} is missing`,
    );
  });
});
