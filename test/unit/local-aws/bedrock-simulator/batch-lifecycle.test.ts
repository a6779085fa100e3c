import {
  CreateModelInvocationJobCommand,
  GetModelInvocationJobCommand,
  StopModelInvocationJobCommand,
  type BedrockClient,
  type CreateModelInvocationJobCommandInput,
} from '@aws-sdk/client-bedrock';
import { ConverseCommand, InvokeModelCommand } from '@aws-sdk/client-bedrock-runtime';

import {
  ManualClock,
  startBedrockSimulator,
  type BatchManifest,
  type BedrockSimulator,
  type BedrockSimulatorOptions,
} from './catalog-simulator';
import {
  BUCKET,
  EventRecorder,
  anthropicLines,
  anthropicRecord,
  controlClient,
  converseRecord,
  freshPrefix,
  getJsonl,
  getText,
  jobIdOf,
  jobInput,
  listKeys,
  putLines,
  startLocalS3,
  type LocalS3,
} from './batch-helpers';
import { HAIKU, runtimeClient } from './helpers';

const HOUR = 3_600_000;
const MARKER = 'POISON';

let local: LocalS3;
const running: { sim: BedrockSimulator; client: BedrockClient }[] = [];

beforeAll(async () => {
  local = await startLocalS3();
});

afterAll(async () => {
  await local.stop();
});

afterEach(async () => {
  for (const { sim, client } of running.splice(0)) {
    client.destroy();
    await sim.stop();
  }
});

async function start(options: BedrockSimulatorOptions = {}) {
  const events = new EventRecorder();
  const sim = await startBedrockSimulator({
    s3Client: local.s3,
    onJobEvent: events.listener,
    faults: { rejectWhenTextIncludes: MARKER },
    ...options,
  });
  const client = controlClient(sim.controlEndpoint);
  running.push({ sim, client });
  return { sim, client, events };
}

async function create(client: BedrockClient, input: CreateModelInvocationJobCommandInput): Promise<string> {
  const { jobArn } = await client.send(new CreateModelInvocationJobCommand(input));
  if (jobArn === undefined) throw new Error('CreateModelInvocationJob returned no jobArn');
  return jobArn;
}

/** Writes `n` records (one with the marker) to `<prefix>/in.jsonl` and returns the input key. */
async function corpus(prefix: string, n = 100): Promise<string> {
  const lines = anthropicLines(n);
  lines[3] = JSON.stringify(anthropicRecord('rec-3', `please ${MARKER} this one`));
  await putLines(local.s3, `${prefix}/in.jsonl`, lines);
  return `${prefix}/in.jsonl`;
}

async function manifestOf(prefix: string, jobArn: string): Promise<BatchManifest> {
  return JSON.parse(
    await getText(local.s3, `${prefix}/out/${jobIdOf(jobArn)}/manifest.json.out`),
  ) as BatchManifest;
}

describe('a job that runs to the end', () => {
  it('writes one shuffled .out per input file plus manifest.json.out, with error lines, and ends Completed', async () => {
    const { sim, client, events } = await start();
    const prefix = freshPrefix('complete');
    const a = anthropicLines(60, 'a');
    a[10] = JSON.stringify(anthropicRecord('a-10', `contains ${MARKER}`));
    a[20] = '{"recordId": "a-20", "modelInput": '; // truncated JSON
    a.splice(30, 0, ''); // a blank line is not a record
    a[40] = JSON.stringify(anthropicRecord(undefined, 'a record without an id'));
    const b = anthropicLines(45, 'b');
    b[0] = JSON.stringify({
      recordId: 'b-0',
      modelInput: { anthropic_version: 'bedrock-2023-05-31', messages: [] },
    });
    await putLines(local.s3, `${prefix}/in/a.jsonl`, a);
    await putLines(local.s3, `${prefix}/in/nested/b.jsonl`, b);
    await putLines(local.s3, `${prefix}/in/readme.txt`, ['not input']);

    const jobArn = await create(client, jobInput(`${prefix}/in/`, `${prefix}/out`));
    const final = await sim.batch.settled(jobArn);
    expect(final.status).toBe('Completed');

    const jobId = jobIdOf(jobArn);
    expect(await listKeys(local.s3, `${prefix}/out/`)).toEqual([
      `${prefix}/out/${jobId}/a.jsonl.out`,
      `${prefix}/out/${jobId}/manifest.json.out`,
      `${prefix}/out/${jobId}/nested/b.jsonl.out`,
    ]);
    const outA = await getJsonl(local.s3, `${prefix}/out/${jobId}/a.jsonl.out`);
    const outB = await getJsonl(local.s3, `${prefix}/out/${jobId}/nested/b.jsonl.out`);
    expect(outA).toHaveLength(60);
    expect(outB).toHaveLength(45);

    const inputIds = a.filter((l) => l.length > 0).map((l) => /"recordId":"([^"]+)"/.exec(l)?.[1]);
    const outputIds = outA.map((l) => l.recordId);
    expect(outputIds).not.toEqual(inputIds); // shuffled ...
    expect(new Set(outputIds).size).toBe(60); // ... with every record once

    const byId = new Map(outA.map((l) => [l.recordId as string, l]));
    expect(byId.get('a-10')).toEqual({
      recordId: 'a-10',
      modelInput: anthropicRecord('a-10', `contains ${MARKER}`).modelInput,
      error: {
        errorCode: 400,
        errorMessage: `The model rejected this request: its user text contains the marker "${MARKER}" (simulated fault rejectWhenTextIncludes).`,
      },
    });
    const malformed = outA.filter((l) =>
      (l.error as { errorMessage?: string } | undefined)?.errorMessage?.startsWith('Malformed record'),
    );
    expect(malformed).toHaveLength(1);
    expect(malformed[0]?.recordId).toMatch(/^[0-9A-Z]{11}$/);
    const generated = outA.find(
      (l) =>
        (l.modelInput as { messages?: { content: { text: string }[] }[] } | undefined)?.messages?.[0]
          ?.content[0]?.text === 'a record without an id',
    );
    expect(generated?.recordId).toMatch(/^[0-9A-Z]{11}$/);
    expect(generated?.modelOutput).toBeDefined();
    expect(outB.find((l) => l.recordId === 'b-0')?.error).toEqual({
      errorCode: 400,
      errorMessage:
        'Malformed input request: #: required key [max_tokens] not found, please reformat your input and try again.',
    });

    const successes = [...outA, ...outB].filter((l) => l.modelOutput !== undefined);
    const usage = successes.map(
      (l) => (l.modelOutput as { usage: { input_tokens: number; output_tokens: number } }).usage,
    );
    const manifest = await manifestOf(prefix, jobArn);
    expect(manifest).toEqual({
      totalRecordCount: 105,
      processedRecordCount: 105,
      successRecordCount: 102,
      errorRecordCount: 3,
      inputTokenCount: usage.reduce((sum, u) => sum + u.input_tokens, 0),
      outputTokenCount: usage.reduce((sum, u) => sum + u.output_tokens, 0),
    });

    const got = await client.send(new GetModelInvocationJobCommand({ jobIdentifier: jobArn }));
    expect(got).toMatchObject({
      status: 'Completed',
      totalRecordCount: 105,
      processedRecordCount: 105,
      successRecordCount: 102,
      errorRecordCount: 3,
    });
    expect(got.endTime).toBeInstanceOf(Date);
    await sim.batch.eventsDelivered();
    expect(events.statuses(jobArn)).toEqual([
      'Submitted',
      'Validating',
      'Scheduled',
      'InProgress',
      'Completed',
    ]);

    // The same body through InvokeModel gets the same answer.
    const runtime = runtimeClient(sim.runtimeEndpoint);
    try {
      const record = anthropicRecord('a-5', 'question a 5');
      const answer = await runtime.send(
        new InvokeModelCommand({
          modelId: HAIKU,
          body: JSON.stringify(record.modelInput),
          contentType: 'application/json',
        }),
      );
      expect(byId.get('a-5')?.modelOutput).toEqual(JSON.parse(Buffer.from(answer.body).toString('utf8')));
    } finally {
      runtime.destroy();
    }
  });

  it('answers Converse jobs with exactly what Converse answers, and emits the EventBridge events in order', async () => {
    const { sim, client, events } = await start({
      batch: { region: 'eu-west-1', accountId: '123456789012' },
    });
    const prefix = freshPrefix('converse');
    const lines = Array.from({ length: 100 }, (_, i) =>
      JSON.stringify(converseRecord(`c-${i}`, `converse ${i}`)),
    );
    await putLines(local.s3, `${prefix}/records.jsonl`, lines);
    const jobArn = await create(
      client,
      jobInput(`${prefix}/records.jsonl`, `${prefix}/out`, {
        modelInvocationType: 'Converse',
        modelId: `us.${HAIKU}`,
      }),
    );
    expect((await sim.batch.settled(jobArn)).status).toBe('Completed');
    const out = await getJsonl(local.s3, `${prefix}/out/${jobIdOf(jobArn)}/records.jsonl.out`);
    expect(out).toHaveLength(100);

    const runtime = runtimeClient(sim.runtimeEndpoint);
    try {
      for (const id of ['c-0', 'c-42', 'c-99']) {
        const line = out.find((l) => l.recordId === id);
        const modelInput = line?.modelInput as { messages: ConverseCommand['input']['messages'] } & object;
        const answer = await runtime.send(new ConverseCommand({ modelId: HAIKU, ...modelInput }));
        const { $metadata: _metadata, ...body } = answer;
        expect(line?.modelOutput).toEqual(body);
      }
    } finally {
      runtime.destroy();
    }

    await sim.batch.eventsDelivered();
    const mine = events.events.filter((e) => e.detail.batchJobArn === jobArn);
    expect(mine.map((e) => e.detail.status)).toEqual([
      'Submitted',
      'Validating',
      'Scheduled',
      'InProgress',
      'Completed',
    ]);
    const last = mine[4];
    expect(last).toMatchObject({
      version: '0',
      'detail-type': 'Batch Inference Job State Change',
      source: 'aws.bedrock',
      account: '123456789012',
      region: 'eu-west-1',
      resources: [jobArn],
      detail: {
        version: '0.0',
        accountId: '123456789012',
        batchJobArn: jobArn,
        batchModelId: `arn:aws:bedrock:eu-west-1:123456789012:inference-profile/us.${HAIKU}`,
        status: 'Completed',
        failureMessage: '',
      },
    });
    expect(jobArn).toMatch(/^arn:aws:bedrock:eu-west-1:123456789012:model-invocation-job\//);
    expect(last?.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(last?.detail.creationTime).toMatch(/^[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d\d:\d\d [AP]M$/);
    expect(new Set(mine.map((e) => e.id)).size).toBe(5);
  });
});

describe('faults', () => {
  it('partialJob: some records get no output line and the job ends PartiallyCompleted', async () => {
    const { sim, client } = await start({ batch: { phaseMs: 0, faults: { partialJob: 0.2, seed: 7 } } });
    const prefix = freshPrefix('partial');
    const jobArn = await create(client, jobInput(await corpus(prefix, 200), `${prefix}/out`));
    const final = await sim.batch.settled(jobArn);
    expect(final.status).toBe('PartiallyCompleted');
    const out = await getJsonl(local.s3, `${prefix}/out/${jobIdOf(jobArn)}/in.jsonl.out`);
    const manifest = await manifestOf(prefix, jobArn);
    expect(out.length).toBeGreaterThan(100);
    expect(out.length).toBeLessThan(200);
    expect(manifest.totalRecordCount).toBe(200);
    expect(manifest.processedRecordCount).toBe(out.length);
    expect(final.processedRecordCount).toBe(out.length);
    expect(final.message).toBe(
      `Not all records could be processed: ${200 - out.length} of 200 records have no output (simulated fault partialJob).`,
    );
  });

  it('failJobs: the next N jobs end Failed with a message and no output; later jobs complete', async () => {
    const { sim, client, events } = await start({ batch: { phaseMs: 0 } });
    sim.setBatchFaults({ failJobs: 1 });
    const prefix = freshPrefix('fail');
    const input = await corpus(prefix);
    const failed = await create(client, jobInput(input, `${prefix}/out`));
    const next = await create(client, jobInput(input, `${prefix}/out`));
    const failedJob = await sim.batch.settled(failed);
    expect(failedJob.status).toBe('Failed');
    expect(failedJob.message).toContain('(simulated fault failJobs)');
    expect((await sim.batch.settled(next)).status).toBe('Completed');
    expect(await listKeys(local.s3, `${prefix}/out/${jobIdOf(failed)}/`)).toEqual([]);
    await sim.batch.eventsDelivered();
    expect(events.statuses(failed)).toEqual(['Submitted', 'Validating', 'Scheduled', 'InProgress', 'Failed']);
    const failedEvent = events.events.find(
      (e) => e.detail.batchJobArn === failed && e.detail.status === 'Failed',
    );
    expect(failedEvent?.detail.failureMessage).toBe(failedJob.message);
  });

  it('dropEvents and duplicateEvents: events go missing or arrive twice, in order, while Get stays right', async () => {
    const { sim, client, events } = await start({
      batch: { phaseMs: 0, faults: { dropEvents: 1, eventStatuses: ['Completed'] } },
    });
    const prefix = freshPrefix('events');
    const input = await corpus(prefix);
    const dropped = await create(client, jobInput(input, `${prefix}/out`));
    expect((await sim.batch.settled(dropped)).status).toBe('Completed');
    await sim.batch.eventsDelivered();
    expect(events.statuses(dropped)).toEqual(['Submitted', 'Validating', 'Scheduled', 'InProgress']);
    expect(sim.batch.eventStats).toMatchObject({ emitted: 5, delivered: 4, dropped: 1 });

    sim.setBatchFaults({ duplicateEvents: 1 });
    const doubled = await create(client, jobInput(input, `${prefix}/out`));
    await sim.batch.settled(doubled);
    await sim.batch.eventsDelivered();
    expect(events.statuses(doubled)).toEqual([
      'Submitted',
      'Submitted',
      'Validating',
      'Validating',
      'Scheduled',
      'Scheduled',
      'InProgress',
      'InProgress',
      'Completed',
      'Completed',
    ]);
    expect(sim.batch.eventStats.duplicated).toBe(5);
  });

  it('keeps delivering events after a listener fails', async () => {
    const seen: string[] = [];
    const errors = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const { sim, client } = await start({
        batch: { phaseMs: 0 },
        onJobEvent: (event) => {
          seen.push(event.detail.status);
          if (event.detail.status === 'Validating') throw new Error('target unavailable');
        },
      });
      const prefix = freshPrefix('listener');
      const jobArn = await create(client, jobInput(await corpus(prefix), `${prefix}/out`));
      expect((await sim.batch.settled(jobArn)).status).toBe('Completed');
      await sim.batch.eventsDelivered();
      expect(seen).toEqual(['Submitted', 'Validating', 'Scheduled', 'InProgress', 'Completed']);
      expect(sim.batch.eventStats.listenerErrors).toBe(1);
      expect(errors).toHaveBeenCalledTimes(1);
    } finally {
      errors.mockRestore();
    }
  });
});

describe('stopping and timing out (on a manual clock)', () => {
  async function startManual(faults = { slowMs: 1000 }) {
    const clock = new ManualClock();
    return { clock, ...(await start({ batch: { clock, phaseMs: 0, faults } })) };
  }

  it('a stopped InProgress job writes what it processed and ends Stopped', async () => {
    const { sim, client, events } = await startManual();
    const prefix = freshPrefix('stop');
    const jobArn = await create(client, jobInput(await corpus(prefix), `${prefix}/out`));
    await events.waitFor(jobArn, 'InProgress');
    await client.send(new StopModelInvocationJobCommand({ jobIdentifier: jobArn }));
    const final = await sim.batch.settled(jobArn);
    expect(final.status).toBe('Stopped');
    const manifest = await manifestOf(prefix, jobArn);
    const out = await getJsonl(local.s3, `${prefix}/out/${jobIdOf(jobArn)}/in.jsonl.out`);
    expect(manifest.totalRecordCount).toBe(100);
    expect(manifest.processedRecordCount).toBe(out.length);
    expect(out.length).toBeLessThan(100);
    await sim.batch.eventsDelivered();
    expect(events.statuses(jobArn)).toEqual([
      'Submitted',
      'Validating',
      'Scheduled',
      'InProgress',
      'Stopping',
      'Stopped',
    ]);
  });

  it('a job still Scheduled when its timeout passes ends Expired', async () => {
    const clock = new ManualClock();
    const { sim, client, events } = await start({
      batch: { clock, phaseMs: { submitted: 0, validating: 0, scheduled: 48 * HOUR } },
    });
    const prefix = freshPrefix('expire');
    const jobArn = await create(
      client,
      jobInput(await corpus(prefix), `${prefix}/out`, { timeoutDurationInHours: 24 }),
    );
    await events.waitFor(jobArn, 'Scheduled');
    clock.advance(24 * HOUR - 1);
    expect((await client.send(new GetModelInvocationJobCommand({ jobIdentifier: jobArn }))).status).toBe(
      'Scheduled',
    );
    clock.advance(1);
    const final = await sim.batch.settled(jobArn);
    expect(final.status).toBe('Expired');
    expect(final.message).toBe(
      'The batch inference job timed out: it did not start within its timeout of 24 hours. Submit a new job.',
    );
    expect(final.endTime).toBe(final.jobExpirationTime);
    expect(await listKeys(local.s3, `${prefix}/out/`)).toEqual([]);
    await sim.batch.eventsDelivered();
    expect(events.statuses(jobArn)).toEqual(['Submitted', 'Validating', 'Scheduled', 'Expired']);
  });

  it('a job whose timeout passes while InProgress ends PartiallyCompleted with the records it processed', async () => {
    const { clock, sim, client, events } = await startManual();
    const prefix = freshPrefix('timeout');
    const jobArn = await create(
      client,
      jobInput(await corpus(prefix), `${prefix}/out`, { timeoutDurationInHours: 24 }),
    );
    await events.waitFor(jobArn, 'InProgress');
    clock.advance(24 * HOUR);
    const final = await sim.batch.settled(jobArn);
    expect(final.status).toBe('PartiallyCompleted');
    expect(final.message).toMatch(
      /^The batch inference job reached its timeout of 24 hours before every record was processed: \d+ of 100 records were processed\.$/,
    );
    const manifest = await manifestOf(prefix, jobArn);
    expect(manifest.processedRecordCount).toBeLessThan(100);
    await sim.batch.eventsDelivered();
    expect(events.statuses(jobArn)).toEqual([
      'Submitted',
      'Validating',
      'Scheduled',
      'InProgress',
      'PartiallyCompleted',
    ]);
  });
});

describe('the output layout', () => {
  it('writes under the job id below an output prefix given without a trailing slash, one .out per input file', async () => {
    const { sim, client } = await start({ batch: { phaseMs: 0, shuffleWindow: 8 } });
    const prefix = freshPrefix('layout');
    await putLines(local.s3, `${prefix}/shard-0001.jsonl`, anthropicLines(150));
    const jobArn = await create(client, {
      ...jobInput(`${prefix}/shard-0001.jsonl`, 'unused'),
      outputDataConfig: { s3OutputDataConfig: { s3Uri: `s3://${BUCKET}/${prefix}/results` } },
    });
    expect((await sim.batch.settled(jobArn)).status).toBe('Completed');
    const jobId = jobIdOf(jobArn);
    expect(await listKeys(local.s3, `${prefix}/results/`)).toEqual([
      `${prefix}/results/${jobId}/manifest.json.out`,
      `${prefix}/results/${jobId}/shard-0001.jsonl.out`,
    ]);
    // A window smaller than the file still shuffles, and still writes every record exactly once.
    const ids = (await getJsonl(local.s3, `${prefix}/results/${jobId}/shard-0001.jsonl.out`)).map(
      (l) => l.recordId,
    );
    expect(ids).not.toEqual(Array.from({ length: 150 }, (_, i) => `rec-${i}`));
    expect([...ids].sort()).toEqual(Array.from({ length: 150 }, (_, i) => `rec-${i}`).sort());
  });
});
