import {
  BatchFaultInjector,
  FaultInjector,
  ManualClock,
  ModelTable,
  buildStateChangeEvent,
  formatEventCreationTime,
  generatedRecordId,
  joinKey,
  parseJobIdentifier,
  parseS3Uri,
  processBatchRecord,
  systemClock,
  type BatchRecordContext,
} from './catalog-simulator';
import { HAIKU } from './helpers';

const model = new ModelTable().resolve(HAIKU).spec;

function context(extra: Partial<BatchRecordContext> = {}): BatchRecordContext {
  return {
    model,
    invocationType: 'InvokeModel',
    faults: new FaultInjector({ rejectWhenTextIncludes: 'POISON' }),
    fallbackRecordId: () => 'GENERATED01',
    ...extra,
  };
}

describe('processBatchRecord', () => {
  const body = {
    anthropic_version: 'bedrock-2023-05-31',
    max_tokens: 50,
    messages: [{ role: 'user', content: 'hi' }],
  };

  it('answers a native body with the Anthropic Messages response and its token usage', () => {
    const result = processBatchRecord(JSON.stringify({ recordId: 'r1', modelInput: body }), context());
    expect(result.ok).toBe(true);
    const output = (
      result.line as { modelOutput: { usage: { input_tokens: number; output_tokens: number } } }
    ).modelOutput;
    expect(result.inputTokens).toBe(output.usage.input_tokens);
    expect(result.outputTokens).toBe(output.usage.output_tokens);
    expect(result.line).toMatchObject({ recordId: 'r1', modelInput: body, modelOutput: { type: 'message' } });
  });

  it('turns what the runtime would refuse into error lines, keeping the record id', () => {
    const cases: [string, BatchRecordContext, string][] = [
      ['not json', context(), 'Malformed record: the line is not valid JSON'],
      ['[1,2]', context(), 'Malformed record: each line must be a JSON object.'],
      [JSON.stringify({ recordId: 7, modelInput: body }), context(), 'recordId must be a string, got 7'],
      [JSON.stringify({ recordId: 'r2' }), context(), 'modelInput is missing or not a JSON object'],
      [
        JSON.stringify({ recordId: 'r3', modelInput: { messages: [] } }),
        context({ invocationType: 'Converse' }),
        'The messages field is missing or empty',
      ],
      [
        JSON.stringify({
          recordId: 'r4',
          modelInput: { ...body, messages: [{ role: 'user', content: 'POISON' }] },
        }),
        context(),
        'contains the marker "POISON"',
      ],
    ];
    for (const [text, ctx, message] of cases) {
      const result = processBatchRecord(text, ctx);
      expect(result.ok).toBe(false);
      expect(result.inputTokens + result.outputTokens).toBe(0);
      const error = (result.line as { error: { errorCode: number; errorMessage: string } }).error;
      expect(error.errorCode).toBe(400);
      expect(error.errorMessage).toContain(message);
    }
    expect(processBatchRecord('not json', context()).line.recordId).toBe('GENERATED01');
    expect(processBatchRecord(JSON.stringify({ recordId: 'r2' }), context()).line.recordId).toBe('r2');
  });

  it("answers each model with its family's native response, and refuses another family's body", () => {
    const nova = new ModelTable().resolve('amazon.nova-micro-v1:0').spec;
    const novaBody = {
      schemaVersion: 'messages-v1',
      messages: [{ role: 'user', content: [{ text: 'hi' }] }],
      inferenceConfig: { max_new_tokens: 500 },
    };
    const answered = processBatchRecord(
      JSON.stringify({ recordId: 'n1', modelInput: novaBody }),
      context({ model: nova }),
    );
    expect(answered.ok).toBe(true);
    expect((answered.line as { modelOutput: unknown }).modelOutput).toEqual({
      output: { message: { role: 'assistant', content: [{ text: expect.stringContaining('hi') }] } },
      stopReason: 'end_turn',
      usage: {
        inputTokens: answered.inputTokens,
        outputTokens: answered.outputTokens,
        totalTokens: answered.inputTokens + answered.outputTokens,
      },
    });
    const refused = processBatchRecord(
      JSON.stringify({ recordId: 'n2', modelInput: body }),
      context({ model: nova }),
    );
    expect(refused.ok).toBe(false);
    expect((refused.line as { error: { errorMessage: string } }).error.errorMessage).toMatch(
      /^Malformed input request: 2 schema violations found \(#: extraneous key \[anthropic_version\] is not permitted; #: extraneous key \[max_tokens\] is not permitted\)/,
    );
  });

  it('gives records without an id a stable 11-character id', () => {
    expect(generatedRecordId('job1', 'a.jsonl', 3)).toMatch(/^[0-9A-Z]{11}$/);
    expect(generatedRecordId('job1', 'a.jsonl', 3)).toBe(generatedRecordId('job1', 'a.jsonl', 3));
    expect(generatedRecordId('job1', 'a.jsonl', 4)).not.toBe(generatedRecordId('job1', 'a.jsonl', 3));
  });
});

describe('state-change event formatting', () => {
  it('formats creationTime like the service sample (12-hour clock, UTC)', () => {
    expect(formatEventCreationTime(Date.UTC(2024, 7, 28, 22, 47, 53))).toBe('Aug 28, 2024, 10:47:53 PM');
    expect(formatEventCreationTime(Date.UTC(2024, 0, 5, 0, 3, 9))).toBe('Jan 5, 2024, 12:03:09 AM');
    expect(formatEventCreationTime(Date.UTC(2024, 11, 31, 12, 0, 0))).toBe('Dec 31, 2024, 12:00:00 PM');
  });

  it('builds the EventBridge envelope around the detail', () => {
    const event = buildStateChangeEvent(
      {
        jobArn: 'arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghwxyz',
        jobName: 'dummy-batch-job-name',
        modelArn: `arn:aws:bedrock:us-east-1::foundation-model/${HAIKU}`,
        status: 'Failed',
        message: 'boom',
        submitTime: Date.UTC(2024, 7, 28, 22, 47, 53),
      },
      { accountId: '123456789012', region: 'us-east-1' },
      Date.UTC(2024, 7, 28, 22, 58, 30, 123),
    );
    expect(event).toEqual({
      version: '0',
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      'detail-type': 'Batch Inference Job State Change',
      source: 'aws.bedrock',
      account: '123456789012',
      time: '2024-08-28T22:58:30Z',
      region: 'us-east-1',
      resources: ['arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghwxyz'],
      detail: {
        version: '0.0',
        accountId: '123456789012',
        batchJobName: 'dummy-batch-job-name',
        batchJobArn: 'arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghwxyz',
        batchModelId: `arn:aws:bedrock:us-east-1::foundation-model/${HAIKU}`,
        status: 'Failed',
        failureMessage: 'boom',
        creationTime: 'Aug 28, 2024, 10:47:53 PM',
      },
    });
  });
});

describe('clocks', () => {
  it('ManualClock fires due timers in time order, with now() at each due time, and skips cancelled ones', () => {
    const clock = new ManualClock(1000);
    const fired: string[] = [];
    clock.schedule(30, () => fired.push(`b@${clock.now()}`));
    clock.schedule(10, () => {
      fired.push(`a@${clock.now()}`);
      clock.schedule(5, () => fired.push(`a2@${clock.now()}`));
    });
    const cancel = clock.schedule(20, () => fired.push('cancelled'));
    cancel();
    clock.schedule(100, () => fired.push('late'));
    clock.advance(30);
    expect(fired).toEqual(['a@1010', 'a2@1015', 'b@1030']);
    expect(clock.now()).toBe(1030);
    expect(clock.pending).toBe(1);
    expect(() => clock.advance(-1)).toThrow(RangeError);
  });

  it('systemClock runs a callback after the delay and can cancel it', async () => {
    const clock = systemClock();
    const order: string[] = [];
    const cancel = clock.schedule(1, () => order.push('cancelled'));
    cancel();
    await new Promise<void>((resolve) =>
      clock.schedule(2, () => {
        order.push('ran');
        resolve();
      }),
    );
    expect(order).toEqual(['ran']);
  });
});

describe('BatchFaultInjector', () => {
  it('validates its settings', () => {
    expect(() => new BatchFaultInjector({ partialJob: 1.5 })).toThrow('partialJob must be between 0 and 1');
    expect(() => new BatchFaultInjector({ failJobs: -1 })).toThrow('failJobs must be an integer >= 0');
    expect(() => new BatchFaultInjector({ slowMs: -5 })).toThrow('slowMs must be >= 0');
  });

  it('draws the same faults for the same seed, and counts down failJobs', () => {
    const draws = (seed: number): boolean[] => {
      const faults = new BatchFaultInjector({ seed, partialJob: 0.5 });
      return Array.from({ length: 32 }, () => faults.dropRecord());
    };
    expect(draws(3)).toEqual(draws(3));
    expect(draws(3)).not.toEqual(draws(4));
    const faults = new BatchFaultInjector({ failJobs: 2 });
    expect([faults.takeJobFailure(), faults.takeJobFailure(), faults.takeJobFailure()]).toEqual([
      true,
      true,
      false,
    ]);
    expect(
      new BatchFaultInjector({ dropEvents: 1, eventStatuses: ['Completed'] }).eventCopies('InProgress'),
    ).toBe(1);
  });
});

describe('identifiers and locations', () => {
  it('parses job ids and job ARNs', () => {
    expect(parseJobIdentifier('abcdefghijkl')).toEqual({ jobId: 'abcdefghijkl' });
    expect(
      parseJobIdentifier('arn:aws:bedrock:eu-west-1:123456789012:model-invocation-job/abcdefghijkl'),
    ).toEqual({
      jobId: 'abcdefghijkl',
      arn: { region: 'eu-west-1', accountId: '123456789012' },
    });
    expect(() => parseJobIdentifier('ABC')).toThrow("at 'jobIdentifier' failed to satisfy constraint");
  });

  it('splits S3 URIs and joins keys', () => {
    expect(parseS3Uri('s3://bucket')).toEqual({ bucket: 'bucket', key: '' });
    expect(parseS3Uri('s3://bucket/a/b/')).toEqual({ bucket: 'bucket', key: 'a/b/' });
    expect(joinKey('a/b/', 'job', 'x.jsonl.out')).toBe('a/b/job/x.jsonl.out');
    expect(joinKey('', 'job', 'manifest.json.out')).toBe('job/manifest.json.out');
  });
});
