import {
  EXCEED_TOLERATED_FAILURE_CAUSE,
  type MapRunDescription,
  type TaskCall,
} from '@corpus-pipeline/local-aws/workflow';
import { aslError, jsonl, makeWorkflow, parse, sleep, until } from './helpers';

interface Batch {
  BatchInput?: Record<string, unknown>;
  Items: { id: number; text: string }[];
}

const PROCESSOR_TASK = {
  Type: 'Task',
  Resource: 'arn:aws:states:::lambda:invoke',
  Parameters: { 'batch.$': '$', 'child.$': '$$.Execution.Name' },
  End: true,
};

function fanOut(
  extra: Record<string, unknown>,
  processorStates: Record<string, unknown> = { Work: PROCESSOR_TASK },
) {
  return {
    StartAt: 'FanOut',
    States: {
      FanOut: {
        Type: 'Map',
        ItemReader: {
          Resource: 'arn:aws:states:::s3:getObject',
          ReaderConfig: { InputType: 'JSONL' },
          Parameters: { 'Bucket.$': '$.bucket', 'Key.$': '$.key' },
        },
        ItemProcessor: {
          ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' },
          StartAt: Object.keys(processorStates)[0],
          States: processorStates,
        },
        End: true,
        ...extra,
      },
    },
  };
}

describe('Distributed Map emulation', () => {
  it('streams a JSONL corpus into item-limited batches under MaxConcurrency and writes the ResultWriter files', async () => {
    let active = 0;
    let peak = 0;
    const calls: TaskCall[] = [];
    const { workflow, store } = makeWorkflow(
      fanOut({
        ItemBatcher: { MaxItemsPerBatch: 4, BatchInput: { 'run.$': '$$.Execution.Name' } },
        MaxConcurrency: 3,
        ResultWriter: {
          Resource: 'arn:aws:states:::s3:putObject',
          Parameters: { Bucket: 'out', 'Prefix.$': '$.prefix' },
        },
      }),
      async (call) => {
        calls.push(call);
        active += 1;
        peak = Math.max(peak, active);
        await sleep(10);
        active -= 1;
        const { batch } = call.parameters as { batch: Batch };
        return { ids: batch.Items.map((item) => item.id) };
      },
    );
    await store.putObject('in', 'corpus.jsonl', jsonl(25));
    const progress: MapRunDescription[] = [];
    workflow.on('mapRun', (run) => progress.push(run));

    const done = await workflow
      .start({ name: 'run-1', input: { bucket: 'in', key: 'corpus.jsonl', prefix: 'results' } })
      .wait();

    expect(done.status).toBe('SUCCEEDED');
    expect(peak).toBe(3);
    const batches = calls.map((c) => (c.parameters as { batch: Batch }).batch);
    expect(batches.map((b) => b.Items.length)).toEqual([4, 4, 4, 4, 4, 4, 1]);
    expect(batches.flatMap((b) => b.Items.map((i) => i.id)).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 25 }, (_, i) => i),
    );
    expect(batches.every((b) => b.BatchInput?.run === 'run-1')).toBe(true);
    // Each child is its own execution: $$.Execution.Name is the child's.
    const childNames = new Set(calls.map((c) => (c.parameters as { child: string }).child));
    expect(childNames.size).toBe(7);
    expect(calls.every((c) => c.execution.name === (c.parameters as { child: string }).child)).toBe(true);

    const output = parse<{ MapRunArn: string; ResultWriterDetails: { Bucket: string; Key: string } }>(
      done.output,
    );
    expect(output.MapRunArn).toMatch(
      /^arn:aws:states:us-east-1:123456789012:mapRun:Pipeline\/FanOut:[0-9a-f-]{36}$/,
    );
    const mapRunId = output.MapRunArn.split(':').pop() ?? '';
    expect(output.ResultWriterDetails).toEqual({ Bucket: 'out', Key: `results/${mapRunId}/manifest.json` });
    expect(store.keys('out')).toEqual([
      `results/${mapRunId}/SUCCEEDED_0.json`,
      `results/${mapRunId}/manifest.json`,
    ]);

    const succeededText = store.getText('out', `results/${mapRunId}/SUCCEEDED_0.json`);
    const manifest = parse(store.getText('out', output.ResultWriterDetails.Key));
    expect(manifest).toEqual({
      DestinationBucket: 'out',
      MapRunArn: output.MapRunArn,
      ResultFiles: {
        FAILED: [],
        PENDING: [],
        SUCCEEDED: [
          { Key: `results/${mapRunId}/SUCCEEDED_0.json`, Size: Buffer.byteLength(succeededText ?? '') },
        ],
      },
    });
    const records = parse<Record<string, unknown>[]>(succeededText);
    expect(records).toHaveLength(7);
    const first = records[0] ?? {};
    expect(Object.keys(first)).toEqual([
      'ExecutionArn',
      'Input',
      'InputDetails',
      'Name',
      'Output',
      'OutputDetails',
      'RedriveCount',
      'RedriveStatus',
      'RedriveStatusReason',
      'StartDate',
      'StateMachineArn',
      'Status',
      'StopDate',
    ]);
    expect(first).toMatchObject({
      ExecutionArn: `arn:aws:states:us-east-1:123456789012:execution:Pipeline/FanOut:${String(first.Name)}`,
      InputDetails: { Included: true },
      OutputDetails: { Included: true },
      RedriveCount: 0,
      RedriveStatus: 'NOT_REDRIVABLE',
      RedriveStatusReason: 'Execution is SUCCEEDED and cannot be redriven',
      StateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:Pipeline/FanOut',
      Status: 'SUCCEEDED',
    });
    expect(parse<Batch>(first.Input as string).Items.map((i) => i.id)).toEqual([0, 1, 2, 3]);
    expect(parse(first.Output as string)).toEqual({ ids: [0, 1, 2, 3] });
    expect(childNames.has(String(first.Name))).toBe(true);

    const final = progress.at(-1);
    expect(final).toMatchObject({
      status: 'SUCCEEDED',
      maxConcurrency: 3,
      effectiveConcurrency: 3,
      itemCounts: { pending: 0, running: 0, succeeded: 25, failed: 0, total: 25, resultsWritten: 7 },
      executionCounts: { succeeded: 7, total: 7 },
    });
    expect(progress.some((p) => p.status === 'RUNNING' && p.itemCounts.running > 0)).toBe(true);
    expect(workflow.describe('run-1').mapRuns).toEqual([final]);
  });

  it('cuts batches so that the serialized batch never exceeds MaxInputBytesPerBatch', async () => {
    const batches: Batch[] = [];
    const limit = 200;
    const { workflow, store } = makeWorkflow(
      fanOut({ ItemBatcher: { MaxInputBytesPerBatch: limit, MaxItemsPerBatch: 50 } }),
      async (call) => {
        batches.push((call.parameters as { batch: Batch }).batch);
        return null;
      },
    );
    await store.putObject(
      'in',
      'k',
      jsonl(30, (i) => 'x'.repeat((i * 7) % 40)),
    );

    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();

    expect(done.status).toBe('SUCCEEDED');
    const ordered = [...batches].sort((a, b) => (a.Items[0]?.id ?? 0) - (b.Items[0]?.id ?? 0));
    expect(ordered.flatMap((b) => b.Items.map((i) => i.id))).toEqual(Array.from({ length: 30 }, (_, i) => i));
    ordered.forEach((batch, i) => {
      expect(Buffer.byteLength(JSON.stringify(batch))).toBeLessThanOrEqual(limit);
      const next = ordered[i + 1]?.Items[0];
      // Greedy: the next batch's first item would not have fitted.
      if (next !== undefined) {
        expect(Buffer.byteLength(JSON.stringify({ Items: [...batch.Items, next] }))).toBeGreaterThan(limit);
      }
    });
    expect(ordered.length).toBeGreaterThan(2);
  });

  it('returns child outputs in item order without a ResultWriter, with ItemsPath and ItemSelector', async () => {
    const { workflow } = makeWorkflow(
      {
        StartAt: 'Each',
        States: {
          Each: {
            Type: 'Map',
            ItemsPath: '$.values',
            ItemSelector: {
              'value.$': '$$.Map.Item.Value',
              'index.$': '$$.Map.Item.Index',
              'tag.$': '$.tag',
            },
            ItemProcessor: {
              ProcessorConfig: { Mode: 'DISTRIBUTED', ExecutionType: 'EXPRESS' },
              StartAt: 'Double',
              States: { Double: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
            },
            ResultPath: '$.doubled',
            End: true,
          },
        },
      },
      async (call) => {
        const p = call.parameters as { value: number; index: number; tag: string };
        await sleep(p.value); // finish out of order
        return `${p.tag}${p.index}:${p.value * 2}`;
      },
    );
    const done = await workflow.start({ input: { tag: 't', values: [9, 1, 5, 3] } }).wait();
    expect(parse(done.output)).toEqual({
      tag: 't',
      values: [9, 1, 5, 3],
      doubled: ['t0:18', 't1:2', 't2:10', 't3:6'],
    });
  });

  it('runs Choice and Pass states inside the processor', async () => {
    const { workflow, store } = makeWorkflow(
      fanOut(
        {},
        {
          Route: {
            Type: 'Choice',
            Choices: [{ Variable: '$.text', StringEquals: 'skip', Next: 'Skipped' }],
            Default: 'Work',
          },
          Skipped: { Type: 'Pass', Result: { skipped: true }, End: true },
          Work: {
            Type: 'Task',
            Resource: 'arn:aws:states:::lambda:invoke',
            Parameters: { 'id.$': '$.id' },
            Next: 'Shape',
          },
          Shape: { Type: 'Pass', Parameters: { 'done.$': '$' }, End: true },
        },
      ),
      async (call) => (call.parameters as { id: number }).id * 10 + 1,
    );
    await store.putObject(
      'in',
      'k',
      jsonl(4, (i) => (i % 2 === 1 ? 'skip' : 'go')),
    );
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(parse(done.output)).toEqual([{ done: 1 }, { skipped: true }, { done: 21 }, { skipped: true }]);
  });

  it('tolerates failures up to ToleratedFailurePercentage and leaves them out of the output', async () => {
    const { workflow, store } = makeWorkflow(
      fanOut({ ToleratedFailurePercentage: 20, MaxConcurrency: 1 }),
      async (call) => {
        const id = (call.parameters as { batch: { id: number } }).batch.id;
        if (id === 2 || id === 7) throw aslError('Custom.Broken', `record ${id} is broken`);
        return id;
      },
    );
    await store.putObject('in', 'k', jsonl(10));
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(done.status).toBe('SUCCEEDED');
    expect(parse(done.output)).toEqual([0, 1, 3, 4, 5, 6, 8, 9]);
    expect(done.mapRuns[0]).toMatchObject({
      status: 'SUCCEEDED',
      toleratedFailurePercentage: 20,
      itemCounts: { succeeded: 8, failed: 2, total: 10 },
    });
  });

  it('fails with States.ExceedToleratedFailureThreshold over ToleratedFailurePercentage and still writes FAILED_0.json', async () => {
    const { workflow, store } = makeWorkflow(
      fanOut({
        ToleratedFailurePercentage: 20,
        MaxConcurrency: 1,
        ResultWriter: {
          Resource: 'arn:aws:states:::s3:putObject',
          Parameters: { Bucket: 'out', Prefix: 'r/' },
        },
      }),
      async (call) => {
        const id = (call.parameters as { batch: { id: number } }).batch.id;
        if (id === 2 || id === 5 || id === 7) throw aslError('Custom.Broken', `record ${id} is broken`);
        return id;
      },
    );
    await store.putObject('in', 'k', jsonl(10));
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(done).toMatchObject({
      status: 'FAILED',
      error: 'States.ExceedToleratedFailureThreshold',
      cause: EXCEED_TOLERATED_FAILURE_CAUSE,
    });
    const run = done.mapRuns[0];
    expect(run).toMatchObject({ status: 'FAILED', itemCounts: { succeeded: 7, failed: 3, total: 10 } });
    const mapRunId = run?.mapRunArn.split(':').pop() ?? '';
    const manifest = parse<{ ResultFiles: Record<string, { Key: string }[]> }>(
      store.getText('out', `r/${mapRunId}/manifest.json`),
    );
    expect(manifest.ResultFiles.FAILED?.map((f) => f.Key)).toEqual([`r/${mapRunId}/FAILED_0.json`]);
    const failed = parse<Record<string, unknown>[]>(store.getText('out', `r/${mapRunId}/FAILED_0.json`));
    expect(failed.map((r) => parse<{ id: number }>(r.Input as string).id)).toEqual([2, 5, 7]);
    expect(failed[0]).toMatchObject({
      Cause: 'record 2 is broken',
      Error: 'Custom.Broken',
      RedriveStatus: 'REDRIVABLE_BY_MAP_RUN',
      Status: 'FAILED',
    });
    expect(failed[0]).not.toHaveProperty('Output');
  });

  it('stops launching children once ToleratedFailureCount is exceeded and exports the rest as PENDING', async () => {
    const started: number[] = [];
    const { workflow, store } = makeWorkflow(
      fanOut({
        ToleratedFailureCount: 1,
        MaxConcurrency: 1,
        ResultWriter: { Resource: 'arn:aws:states:::s3:putObject', Parameters: { Bucket: 'out' } },
      }),
      async (call) => {
        const id = (call.parameters as { batch: { id: number } }).batch.id;
        started.push(id);
        if (id === 1 || id === 3) throw aslError('Custom.Broken', 'broken');
        return id;
      },
    );
    await store.putObject('in', 'k', jsonl(8));
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(done.error).toBe('States.ExceedToleratedFailureThreshold');
    expect(started).toEqual([0, 1, 2, 3]);
    const mapRunId = done.mapRuns[0]?.mapRunArn.split(':').pop() ?? '';
    const pending = parse<Record<string, unknown>[]>(store.getText('out', `${mapRunId}/PENDING_0.json`));
    expect(pending.map((r) => parse<{ id: number }>(r.Input as string).id)).toEqual([4, 5, 6, 7]);
    expect(pending[0]).toEqual({
      Input: JSON.stringify({ id: 4, text: 'record 4' }),
      InputDetails: { Included: true },
      Status: 'PENDING',
    });
  });

  it('retries a custom error inside a child execution', async () => {
    const attempts = new Map<number, number>();
    const { workflow, store } = makeWorkflow(
      fanOut(
        { ToleratedFailureCount: 5 },
        {
          Work: {
            ...PROCESSOR_TASK,
            Retry: [{ ErrorEquals: ['Bedrock.Throttled'], IntervalSeconds: 1, MaxAttempts: 2 }],
          },
        },
      ),
      async (call) => {
        const id = (call.parameters as { batch: { id: number } }).batch.id;
        const attempt = (attempts.get(id) ?? 0) + 1;
        attempts.set(id, attempt);
        if (id === 3 || attempt === 1) throw aslError('Bedrock.Throttled', 'slow down');
        return id;
      },
      { retryIntervalOverrides: { Work: 0 } },
    );
    await store.putObject('in', 'k', jsonl(4));
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(done.status).toBe('SUCCEEDED');
    expect(parse(done.output)).toEqual([0, 1, 2]);
    expect(Object.fromEntries(attempts)).toEqual({ 0: 2, 1: 2, 2: 2, 3: 3 });
  });

  it('lets a Catch on the Map state handle States.ExceedToleratedFailureThreshold', async () => {
    const definition = fanOut({
      Next: 'Done',
      Catch: [
        { ErrorEquals: ['States.ExceedToleratedFailureThreshold'], ResultPath: '$.failure', Next: 'Recover' },
      ],
    });
    delete (definition.States.FanOut as { End?: boolean }).End;
    Object.assign(definition.States, {
      Done: { Type: 'Succeed' },
      Recover: { Type: 'Pass', Parameters: { 'recovered.$': '$.failure.Error' }, End: true },
    });
    const { workflow, store } = makeWorkflow(definition, async () => {
      throw aslError('Custom.Broken', 'broken');
    });
    await store.putObject('in', 'k', jsonl(3));
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(done.status).toBe('SUCCEEDED');
    expect(parse(done.output)).toEqual({ recovered: 'States.ExceedToleratedFailureThreshold' });
  });

  it('fails with States.ItemReaderFailed on a malformed JSONL line', async () => {
    const { workflow, store } = makeWorkflow(fanOut({}), async () => 1);
    await store.putObject('in', 'k', '{"id":0}\n\n{"id":1}\n{"id": oops}\n{"id":3}\n');
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(done.status).toBe('FAILED');
    expect(done.error).toBe('States.ItemReaderFailed');
    expect(done.cause).toContain('s3://in/k: line 4 is not valid JSON');
  });

  it('reads CSV items (FIRST_ROW and GIVEN headers) and S3 listings', async () => {
    const seen: unknown[] = [];
    const reader = (itemReader: Record<string, unknown>) => ({
      StartAt: 'M',
      States: {
        M: {
          Type: 'Map',
          ItemReader: itemReader,
          ItemProcessor: {
            ProcessorConfig: { Mode: 'DISTRIBUTED' },
            StartAt: 'T',
            States: { T: { Type: 'Task', Resource: 'arn:aws:states:::lambda:invoke', End: true } },
          },
          End: true,
        },
      },
    });
    const { workflow, store } = makeWorkflow(
      reader({
        Resource: 'arn:aws:states:::s3:getObject',
        ReaderConfig: { InputType: 'CSV', CSVHeaderLocation: 'FIRST_ROW', MaxItems: 2 },
        Parameters: { Bucket: 'in', Key: 'data.csv' },
      }),
      async (call) => {
        seen.push(call.parameters);
        return call.parameters;
      },
    );
    await store.putObject(
      'in',
      'data.csv',
      'id,text\r\n1,"hello, ""world"""\r\n2,"two\nlines"\r\n3,three\r\n',
    );
    const csv = await workflow.start({}).wait();
    expect(parse(csv.output)).toEqual([
      { id: '1', text: 'hello, "world"' },
      { id: '2', text: 'two\nlines' },
    ]);

    const given = makeWorkflow(
      reader({
        Resource: 'arn:aws:states:::s3:getObject',
        ReaderConfig: {
          InputType: 'CSV',
          CSVHeaderLocation: 'GIVEN',
          CSVHeaders: ['a', 'b'],
          CSVDelimiter: 'PIPE',
        },
        Parameters: { Bucket: 'in', Key: 'data.psv' },
      }),
      async (call) => call.parameters,
      { store },
    ).workflow;
    await store.putObject('in', 'data.psv', 'x|y\nz|w');
    expect(parse((await given.start({}).wait()).output)).toEqual([
      { a: 'x', b: 'y' },
      { a: 'z', b: 'w' },
    ]);

    const listing = makeWorkflow(
      reader({
        Resource: 'arn:aws:states:::s3:listObjectsV2',
        Parameters: { Bucket: 'in', Prefix: 'data.' },
      }),
      async (call) => call.parameters,
      { store },
    ).workflow;
    const listed = parse<Record<string, unknown>[]>((await listing.start({}).wait()).output);
    expect(listed.map((o) => o.Key)).toEqual(['data.csv', 'data.psv']);
    expect(listed[1]).toEqual({
      Etag: expect.stringMatching(/^"[0-9a-f]{32}"$/),
      Key: 'data.psv',
      LastModified: expect.any(Number),
      Size: 7,
      StorageClass: 'STANDARD',
    });
  });

  it('aborts running children when the execution is stopped', async () => {
    const { workflow, store } = makeWorkflow(
      fanOut({ MaxConcurrency: 2 }),
      () => new Promise(() => undefined),
    );
    await store.putObject('in', 'k', jsonl(5));
    const handle = workflow.start({ input: { bucket: 'in', key: 'k' } });
    while ((workflow.describe(handle.executionArn).mapRuns[0]?.itemCounts.running ?? 0) < 2) await sleep(5);
    workflow.stop(handle.executionArn, 'Operator.Stop', 'enough');
    const done = await handle.wait();
    expect(done).toMatchObject({ status: 'ABORTED', error: 'Operator.Stop', cause: 'enough' });
    expect(done.mapRuns[0]).toMatchObject({ status: 'ABORTED', itemCounts: { aborted: 2, running: 0 } });
  });
});

describe('Distributed Map: the EXPRESS child cap', () => {
  /** fanOut with EXPRESS children and a ResultWriter. */
  function expressFanOut(extra: Record<string, unknown>, executionType = 'EXPRESS') {
    const definition = fanOut({
      MaxConcurrency: 4,
      ResultWriter: { Resource: 'arn:aws:states:::s3:putObject', Parameters: { Bucket: 'out', Prefix: 'r' } },
      ...extra,
    });
    const processor = definition.States.FanOut.ItemProcessor;
    processor.ProcessorConfig = { Mode: 'DISTRIBUTED', ExecutionType: executionType };
    return definition;
  }

  /** A task that takes 400 ms for record 1 and none for the others; records when each finished its work. */
  function slowRecordOne(finished: number[]) {
    return async (call: TaskCall) => {
      const id = (call.parameters as { batch: { id: number } }).batch.id;
      if (id === 1) await sleep(400);
      finished.push(id);
      return id;
    };
  }

  it('times an EXPRESS child out past the cap with States.Timeout, counts it against the tolerance, lets its task run on', async () => {
    const finished: number[] = [];
    const { workflow, store } = makeWorkflow(
      expressFanOut({ ToleratedFailureCount: 1 }),
      slowRecordOne(finished),
      {
        expressTimeoutMs: 100,
      },
    );
    await store.putObject('in', 'k', jsonl(4));
    const done = await workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();

    const run = done.mapRuns[0];
    expect(run).toMatchObject({
      status: 'SUCCEEDED',
      itemCounts: { succeeded: 3, timedOut: 1, failed: 0, total: 4 },
      executionCounts: { succeeded: 3, timedOut: 1 },
    });
    expect(done.status).toBe('SUCCEEDED');
    const mapRunId = run?.mapRunArn.split(':').pop() ?? '';
    const failed = parse<Record<string, unknown>[]>(store.getText('out', `r/${mapRunId}/FAILED_0.json`));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ Status: 'TIMED_OUT', Error: 'States.Timeout' });
    expect(parse<{ id: number }>(failed[0]?.Input as string).id).toBe(1);
    // The run ended before the slow task did: the cap did not wait for it, and did not stop it either.
    expect(finished).not.toContain(1);
    await until(() => finished.includes(1), 'the timed-out child task to finish its work');
  });

  it('fails the Map when the timed-out child is more than it tolerates; STANDARD children have no such cap', async () => {
    const express = makeWorkflow(expressFanOut({}), slowRecordOne([]), { expressTimeoutMs: 100 });
    await express.store.putObject('in', 'k', jsonl(4));
    const failed = await express.workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(failed).toMatchObject({ status: 'FAILED', error: 'States.ExceedToleratedFailureThreshold' });
    expect(failed.mapRuns[0]).toMatchObject({ itemCounts: { timedOut: 1 } });

    const standard = makeWorkflow(expressFanOut({}, 'STANDARD'), slowRecordOne([]), {
      expressTimeoutMs: 100,
    });
    await standard.store.putObject('in', 'k', jsonl(4));
    const ok = await standard.workflow.start({ input: { bucket: 'in', key: 'k' } }).wait();
    expect(ok.status).toBe('SUCCEEDED');
    expect(ok.mapRuns[0]).toMatchObject({ itemCounts: { succeeded: 4, timedOut: 0 } });

    expect(() => makeWorkflow(expressFanOut({}), slowRecordOne([]), { expressTimeoutMs: 0 })).toThrow(
      RangeError,
    );
  });
});
