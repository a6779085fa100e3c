/** LocalEventBus: routing across buses and rules, PutEvents validation, asynchronous retried delivery. */
import {
  LocalEventBus,
  MAX_PUT_EVENTS_SIZE,
  s3CreatedReason,
  s3ObjectCreatedEvent,
  s3ObjectCreatedEventFor,
  type DeliverFn,
  type DeliveryFailure,
  type EventBridgeEvent,
  type LocalTarget,
  type PutEventsResultEntry,
} from '@corpus-pipeline/local-aws/eventbridge/bus';
import {
  EventBridgeNotFoundError,
  EventBridgeValidationError,
  EventBusAlreadyExistsError,
  InvalidEventPatternError,
} from '@corpus-pipeline/local-aws/eventbridge/errors';

interface Delivery {
  target: LocalTarget;
  input: string;
  event: EventBridgeEvent;
  attempt: number;
  rule: string;
  bus: string;
}

function recorder(): { deliveries: Delivery[]; deliver: DeliverFn } {
  const deliveries: Delivery[] = [];
  return {
    deliveries,
    deliver: async (target, input, event, context) => {
      deliveries.push({
        target,
        input,
        event,
        attempt: context.attempt,
        rule: context.rule.name,
        bus: context.busName,
      });
    },
  };
}

const fastRetry = { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 2, jitter: false };

function eventId(entry: PutEventsResultEntry | undefined): string {
  if (!entry || !('EventId' in entry)) throw new Error(`expected an EventId, got ${JSON.stringify(entry)}`);
  return entry.EventId;
}

describe('routing', () => {
  function setup() {
    const { deliveries, deliver } = recorder();
    const bus = new LocalEventBus({
      deliver,
      account: '123456789012',
      region: 'eu-west-1',
      retry: fastRetry,
    });
    bus.createEventBus('pipeline');
    bus.addRule({
      name: 'default-orders',
      eventPattern: { source: ['shop.orders'] },
      targets: [{ id: 'q', arn: 'arn:aws:sqs:eu-west-1:123456789012:default-orders' }],
    });
    bus.addRule({
      name: 'run-completed',
      eventBusName: 'pipeline',
      eventPattern: { source: ['corpus.pipeline'], 'detail-type': ['Corpus Run Completed'] },
      targets: [
        { id: 'whole', arn: 'arn:aws:lambda:eu-west-1:123456789012:function:whole' },
        { id: 'detail', arn: 'arn:aws:sqs:eu-west-1:123456789012:detail', inputPath: '$.detail' },
        { id: 'static', arn: 'arn:aws:sqs:eu-west-1:123456789012:static', input: '{"kind":"static"}' },
        {
          id: 'transformed',
          arn: 'arn:aws:states:eu-west-1:123456789012:stateMachine:next',
          inputTransformer: {
            inputPathsMap: { run: '$.detail.runId' },
            inputTemplate: '{"runId": <run>, "rule": <aws.events.rule-name>}',
          },
        },
      ],
    });
    bus.addRule({
      name: 'run-failed',
      eventBusName: 'pipeline',
      eventPattern: { source: ['corpus.pipeline'], 'detail-type': ['Corpus Run Failed'] },
      targets: [{ id: 'alarm', arn: 'arn:aws:sns:eu-west-1:123456789012:alarm' }],
    });
    return { bus, deliveries };
  }

  test('an event reaches every target of the matching rule on its own bus only', async () => {
    const { bus, deliveries } = setup();
    const result = bus.putEvents([
      {
        EventBusName: 'pipeline',
        Source: 'corpus.pipeline',
        DetailType: 'Corpus Run Completed',
        Detail: '{"runId":"r1"}',
      },
    ]);
    expect(result.FailedEntryCount).toBe(0);
    await bus.drain();
    expect(deliveries.map((d) => d.target.id).sort()).toEqual(['detail', 'static', 'transformed', 'whole']);
    expect(new Set(deliveries.map((d) => d.rule))).toEqual(new Set(['run-completed']));
    expect(new Set(deliveries.map((d) => d.bus))).toEqual(new Set(['pipeline']));
    const byTarget = Object.fromEntries(deliveries.map((d) => [d.target.id, d.input]));
    const event = deliveries[0]?.event as EventBridgeEvent;
    expect(event.id).toBe(eventId(result.Entries[0]));
    expect(byTarget.whole).toBe(JSON.stringify(event));
    expect(byTarget.detail).toBe('{"runId":"r1"}');
    expect(byTarget.static).toBe('{"kind":"static"}');
    expect(byTarget.transformed).toBe('{"runId":"r1","rule":"run-completed"}');
  });

  test('the same source on the default bus goes to the default bus rules only', async () => {
    const { bus, deliveries } = setup();
    bus.putEvents([
      { Source: 'corpus.pipeline', DetailType: 'Corpus Run Completed', Detail: '{}' },
      { Source: 'shop.orders', DetailType: 'Order Placed', Detail: '{"orderId":1}' },
    ]);
    await bus.drain();
    expect(deliveries.map((d) => `${d.bus}/${d.rule}/${d.target.id}`)).toEqual(['default/default-orders/q']);
    expect(bus.recentEvents('default')).toHaveLength(2);
    expect(bus.recentEvents('pipeline')).toHaveLength(0);
  });

  test('events that match no rule are accepted and archived but delivered nowhere', async () => {
    const { bus, deliveries } = setup();
    const result = bus.putEvents([
      { EventBusName: 'pipeline', Source: 'corpus.pipeline', DetailType: 'Something Else', Detail: '{}' },
    ]);
    expect(result.FailedEntryCount).toBe(0);
    await bus.drain();
    expect(deliveries).toHaveLength(0);
    expect(bus.stats()).toMatchObject({ eventsAccepted: 1, ruleMatches: 0, invocations: 0 });
    expect(bus.recentEvents('pipeline')[0]?.['detail-type']).toBe('Something Else');
  });

  test('a disabled rule delivers nothing until it is enabled again', async () => {
    const { bus, deliveries } = setup();
    bus.setRuleState('run-failed', 'DISABLED', 'pipeline');
    const entry = {
      EventBusName: 'pipeline',
      Source: 'corpus.pipeline',
      DetailType: 'Corpus Run Failed',
      Detail: '{}',
    };
    bus.putEvents([entry]);
    await bus.drain();
    expect(deliveries).toHaveLength(0);
    bus.setRuleState('run-failed', 'ENABLED', 'pipeline');
    bus.putEvents([entry]);
    await bus.drain();
    expect(deliveries.map((d) => d.target.id)).toEqual(['alarm']);
  });

  test('a rule added as DISABLED stays silent; EventBusName may be an ARN', async () => {
    const { bus, deliveries } = setup();
    bus.addRule({
      name: 'off',
      eventPattern: { source: ['x.y'] },
      state: 'DISABLED',
      targets: [{ id: 'o', arn: 'arn:o' }],
    });
    bus.putEvents([
      { EventBusName: bus.eventBusArn('default'), Source: 'x.y', DetailType: 'd', Detail: '{}' },
    ]);
    await bus.drain();
    expect(deliveries).toHaveLength(0);
    expect(bus.recentEvents()).toHaveLength(1);
  });

  test('rules are listed per bus with derived ARNs, and can be replaced and removed', () => {
    const { bus } = setup();
    expect(bus.listRules('pipeline').map((r) => r.arn)).toEqual([
      'arn:aws:events:eu-west-1:123456789012:rule/pipeline/run-completed',
      'arn:aws:events:eu-west-1:123456789012:rule/pipeline/run-failed',
    ]);
    expect(bus.listRules()[0]?.arn).toBe('arn:aws:events:eu-west-1:123456789012:rule/default-orders');
    bus.addRule({ name: 'default-orders', eventPattern: { source: ['other'] } });
    expect(bus.listRules()).toHaveLength(1);
    expect(bus.listRules()[0]?.eventPattern).toEqual({ source: ['other'] });
    expect(bus.removeRule('default-orders')).toBe(true);
    expect(bus.removeRule('default-orders')).toBe(false);
    expect(bus.listEventBuses()).toEqual(['default', 'pipeline']);
  });
});

describe('PutEvents', () => {
  test('builds the full event envelope', async () => {
    const { deliveries, deliver } = recorder();
    const bus = new LocalEventBus({ deliver, account: '111122223333', region: 'us-west-2' });
    bus.addRule({ name: 'all', eventPattern: { source: ['app'] }, targets: [{ id: 't', arn: 'arn:t' }] });
    const result = bus.putEvents([
      {
        Source: 'app',
        DetailType: 'Thing Happened',
        Detail: '{"a":{"b":[1,2]}}',
        Resources: ['arn:aws:s3:::bucket'],
        Time: new Date('2024-03-04T05:06:07.890Z'),
      },
    ]);
    await bus.drain();
    const event = deliveries[0]?.event;
    expect(event).toEqual({
      version: '0',
      id: eventId(result.Entries[0]),
      'detail-type': 'Thing Happened',
      source: 'app',
      account: '111122223333',
      time: '2024-03-04T05:06:07Z',
      region: 'us-west-2',
      resources: ['arn:aws:s3:::bucket'],
      detail: { a: { b: [1, 2] } },
    });
    expect(Object.keys(event as object)).toEqual([
      'version',
      'id',
      'detail-type',
      'source',
      'account',
      'time',
      'region',
      'resources',
      'detail',
    ]);
    expect(event?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  test('the event time defaults to now', () => {
    const bus = new LocalEventBus({
      deliver: async () => undefined,
      now: () => new Date('2030-01-01T00:00:00.500Z'),
    });
    bus.putEvents([{ Source: 'app', DetailType: 'd', Detail: '{}' }]);
    expect(bus.recentEvents()[0]?.time).toBe('2030-01-01T00:00:00Z');
  });

  test('refuses bad entries one by one, like the service, and accepts the rest', () => {
    const bus = new LocalEventBus({ deliver: async () => undefined });
    const result = bus.putEvents([
      { DetailType: 'd', Detail: '{}' },
      { Source: 'app', Detail: '{}' },
      { Source: 'app', DetailType: 'd' },
      { Source: 'app', DetailType: 'd', Detail: '{not json' },
      { Source: 'app', DetailType: 'd', Detail: '[1,2]' },
      { Source: 'aws.s3', DetailType: 'Object Created', Detail: '{}' },
      { Source: 'app', DetailType: 'd', Detail: '{}', EventBusName: 'missing' },
      { Source: 'app', DetailType: 'd', Detail: '{}', Time: 'not a time' },
      { Source: 'app', DetailType: 'd', Detail: '{"ok":true}' },
    ]);
    expect(result.FailedEntryCount).toBe(8);
    expect(result.Entries.slice(0, 8)).toEqual([
      {
        ErrorCode: 'InvalidArgument',
        ErrorMessage: 'Parameter Source is not valid. Reason: Source is a required argument.',
      },
      {
        ErrorCode: 'InvalidArgument',
        ErrorMessage: 'Parameter DetailType is not valid. Reason: DetailType is a required argument.',
      },
      {
        ErrorCode: 'InvalidArgument',
        ErrorMessage: 'Parameter Detail is not valid. Reason: Detail is a required argument.',
      },
      { ErrorCode: 'MalformedDetail', ErrorMessage: 'Detail is malformed.' },
      { ErrorCode: 'MalformedDetail', ErrorMessage: 'Detail is malformed.' },
      { ErrorCode: 'NotAuthorizedForSourceException', ErrorMessage: 'Not authorized for the source.' },
      { ErrorCode: 'ResourceNotFoundException', ErrorMessage: 'Event bus missing does not exist.' },
      { ErrorCode: 'InvalidArgument', ErrorMessage: 'Parameter Time is not valid.' },
    ]);
    expect(eventId(result.Entries[8])).toBeTruthy();
    expect(bus.recentEvents()).toHaveLength(1);
    expect(bus.stats()).toMatchObject({ eventsAccepted: 1, entriesRejected: 8 });
  });

  test('refuses whole requests with no entries or more than 10', () => {
    const bus = new LocalEventBus({ deliver: async () => undefined });
    const entry = { Source: 'app', DetailType: 'd', Detail: '{}' };
    expect(() => bus.putEvents([])).toThrow(EventBridgeValidationError);
    expect(() => bus.putEvents(Array.from({ length: 11 }, () => entry))).toThrow(/less than or equal to 10/);
    expect(bus.putEvents(Array.from({ length: 10 }, () => entry)).FailedEntryCount).toBe(0);
  });

  test('refuses requests of 256 KB or more, counted as the service counts entry sizes', () => {
    const bus = new LocalEventBus({ deliver: async () => undefined });
    const overhead = 'app'.length + 'd'.length + '{"x":""}'.length;
    const fits = {
      Source: 'app',
      DetailType: 'd',
      Detail: JSON.stringify({ x: 'a'.repeat(MAX_PUT_EVENTS_SIZE - overhead - 1) }),
    };
    expect(bus.putEvents([fits]).FailedEntryCount).toBe(0);
    const tooBig = { ...fits, Detail: JSON.stringify({ x: 'a'.repeat(MAX_PUT_EVENTS_SIZE - overhead) }) };
    expect(() => bus.putEvents([tooBig])).toThrow(
      'Total size of the entries in the request is over the limit.',
    );
    const withTime = { ...fits, Time: new Date() };
    expect(() => bus.putEvents([withTime])).toThrow(EventBridgeValidationError);
    const half = {
      Source: 'app',
      DetailType: 'd',
      Detail: JSON.stringify({ x: 'é'.repeat(MAX_PUT_EVENTS_SIZE / 4) }),
    };
    expect(() => bus.putEvents([half, half])).toThrow(EventBridgeValidationError);
  });
});

describe('delivery', () => {
  test('is asynchronous: PutEvents answers before any target is called', async () => {
    const { deliveries, deliver } = recorder();
    const bus = new LocalEventBus({ deliver });
    bus.addRule({ name: 'r', eventPattern: { source: ['app'] }, targets: [{ id: 't', arn: 'arn:t' }] });
    bus.putEvents([{ Source: 'app', DetailType: 'd', Detail: '{}' }]);
    expect(deliveries).toHaveLength(0);
    expect(bus.stats().inFlight).toBe(1);
    await bus.drain();
    expect(deliveries).toHaveLength(1);
    expect(bus.stats()).toMatchObject({ inFlight: 0, invocations: 1, deliveriesSucceeded: 1 });
  });

  test('retries a failing delivery with backoff, then succeeds', async () => {
    const attempts: number[] = [];
    const bus = new LocalEventBus({
      retry: fastRetry,
      deliver: async (_target, _input, _event, context) => {
        attempts.push(context.attempt);
        if (context.attempt < 3) throw new Error('throttled');
      },
    });
    bus.addRule({ name: 'r', eventPattern: { source: ['app'] }, targets: [{ id: 't', arn: 'arn:t' }] });
    bus.putEvents([{ Source: 'app', DetailType: 'd', Detail: '{}' }]);
    await bus.drain();
    expect(attempts).toEqual([1, 2, 3]);
    expect(bus.stats()).toMatchObject({
      retries: 2,
      deliveriesSucceeded: 1,
      deliveriesFailed: 0,
      failures: [],
    });
  });

  test('records a delivery that keeps failing, and calls the dead-letter hook', async () => {
    const failed: DeliveryFailure[] = [];
    const bus = new LocalEventBus({
      retry: fastRetry,
      onDeliveryFailed: (failure) => failed.push(failure),
      deliver: async (target) => {
        if (target.id === 'broken') throw new TypeError('target is down');
      },
    });
    bus.addRule({
      name: 'r',
      eventPattern: { source: ['app'] },
      targets: [
        { id: 'broken', arn: 'arn:broken' },
        { id: 'fine', arn: 'arn:fine' },
      ],
    });
    const id = eventId(bus.putEvents([{ Source: 'app', DetailType: 'd', Detail: '{}' }]).Entries[0]);
    await bus.drain();
    const stats = bus.stats();
    expect(stats).toMatchObject({ invocations: 2, deliveriesSucceeded: 1, deliveriesFailed: 1, retries: 2 });
    expect(stats.failures).toEqual([
      expect.objectContaining({
        busName: 'default',
        ruleName: 'r',
        targetId: 'broken',
        targetArn: 'arn:broken',
        eventId: id,
        attempts: 3,
        error: 'TypeError: target is down',
      }),
    ]);
    expect(failed).toEqual(stats.failures);
  });

  test('an input that cannot be built fails that target without retries', async () => {
    const { deliveries, deliver } = recorder();
    const bus = new LocalEventBus({ deliver, retry: fastRetry });
    bus.addRule({
      name: 'r',
      eventPattern: { source: ['app'] },
      targets: [
        { id: 'bad', arn: 'arn:bad', inputPath: '$.detail.absent' },
        { id: 'good', arn: 'arn:good' },
      ],
    });
    bus.putEvents([{ Source: 'app', DetailType: 'd', Detail: '{}' }]);
    await bus.drain();
    expect(deliveries.map((d) => d.target.id)).toEqual(['good']);
    expect(bus.stats().failures[0]).toMatchObject({ targetId: 'bad', attempts: 0 });
    expect(bus.stats().failures[0]?.error).toMatch(
      /^TargetInputError: InputPath \$\.detail\.absent selects nothing/,
    );
  });
});

describe('rules and buses', () => {
  const bus = new LocalEventBus({ deliver: async () => undefined });

  test('a malformed pattern is refused with InvalidEventPatternError', () => {
    expect(() => bus.addRule({ name: 'bad', eventPattern: { source: 'app' } })).toThrow(
      InvalidEventPatternError,
    );
    expect(() => bus.addRule({ name: 'bad', eventPattern: '{"source": [}' })).toThrow(
      InvalidEventPatternError,
    );
  });

  test('targets are validated like PutTargets', () => {
    const arn = 'arn:t';
    expect(() =>
      bus.addRule({
        name: 'dup',
        eventPattern: { source: ['a'] },
        targets: [
          { id: 't', arn },
          { id: 't', arn },
        ],
      }),
    ).toThrow('Rule dup has two targets with id t.');
    expect(() =>
      bus.addRule({
        name: 'two',
        eventPattern: { source: ['a'] },
        targets: [{ id: 't', arn, input: '{}', inputPath: '$' }],
      }),
    ).toThrow(EventBridgeValidationError);
  });

  test('unknown buses and rules are reported', () => {
    expect(() => bus.addRule({ name: 'r', eventBusName: 'nope', eventPattern: {} })).toThrow(
      EventBridgeNotFoundError,
    );
    expect(() => bus.setRuleState('nope', 'ENABLED')).toThrow(EventBridgeNotFoundError);
    expect(() => bus.recentEvents('nope')).toThrow(EventBridgeNotFoundError);
    expect(() => bus.emit({ source: 's', 'detail-type': 'd', detail: {} }, 'nope')).toThrow(
      EventBridgeNotFoundError,
    );
  });

  test('a bus cannot be created twice or with a bad name', () => {
    bus.createEventBus('custom');
    expect(bus.hasEventBus('custom')).toBe(true);
    expect(bus.hasEventBus(bus.eventBusArn('custom'))).toBe(true);
    expect(() => bus.createEventBus('custom')).toThrow(EventBusAlreadyExistsError);
    expect(() => bus.createEventBus('default')).toThrow(EventBusAlreadyExistsError);
    expect(() => bus.createEventBus('bad name')).toThrow(EventBridgeValidationError);
  });
});

describe('in-process producers, archive and listeners', () => {
  test('emit routes a ready-made S3 "Object Created" event, bypassing the aws. source check', async () => {
    const { deliveries, deliver } = recorder();
    const bus = new LocalEventBus({ deliver, account: '123456789012', region: 'eu-west-1' });
    bus.addRule({
      name: 'corpus-drop',
      eventPattern: {
        source: ['aws.s3'],
        'detail-type': ['Object Created'],
        detail: {
          bucket: { name: ['ingest'] },
          object: { key: [{ prefix: 'incoming/' }, { suffix: '.jsonl' }] },
        },
      },
      targets: [{ id: 'start', arn: 'arn:aws:states:eu-west-1:123456789012:stateMachine:pipeline' }],
    });
    const created = s3ObjectCreatedEvent({
      bucket: 'ingest',
      key: 'incoming/corpus.jsonl',
      size: 1234,
      etag: '"d41d8cd98f00b204e9800998ecf8427e"',
      account: '123456789012',
      region: 'eu-west-1',
    });
    const routed = bus.emit(created);
    const elsewhere = {
      bucket: 'other',
      key: 'incoming/x.jsonl',
      size: 1,
      etag: 'e',
      account: '123456789012',
      region: 'eu-west-1',
    };
    bus.emit(s3ObjectCreatedEvent(elsewhere));
    await bus.drain();
    expect(routed).toEqual(created);
    expect(deliveries).toHaveLength(1);
    expect(JSON.parse(deliveries[0]?.input ?? '')).toEqual(created);
  });

  test('emit fills missing envelope fields', () => {
    const bus = new LocalEventBus({
      deliver: async () => undefined,
      account: '999988887777',
      region: 'ap-south-1',
    });
    const event = bus.emit({
      source: 'aws.bedrock',
      'detail-type': 'Batch Inference Job State Change',
      detail: { status: 'Completed' },
    });
    expect(event).toMatchObject({
      version: '0',
      account: '999988887777',
      region: 'ap-south-1',
      resources: [],
    });
    expect(event.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    expect(() =>
      bus.emit({ source: 's', 'detail-type': 'd', detail: [] as unknown as Record<string, unknown> }),
    ).toThrow('Detail is malformed.');
  });

  test('s3ObjectCreatedEvent has the documented shape', () => {
    const event = s3ObjectCreatedEvent({
      bucket: 'amzn-s3-demo-bucket1',
      key: 'example-key',
      size: 5,
      etag: 'b1946ac92492d2347c6235b4d2611184',
      versionId: 'IYV3p45BT0ac8hjHg1houSdS1a.Mro8e',
      sequencer: '617f08299329d189',
      account: '111122223333',
      region: 'ca-central-1',
      requesterId: '123456789012',
      requestId: 'N4N7GDK58NMKJ12R',
      sourceIpAddress: '1.2.3.4',
      time: new Date('2021-11-12T00:00:00Z'),
    });
    expect({ ...event, id: 'id' }).toEqual({
      version: '0',
      id: 'id',
      'detail-type': 'Object Created',
      source: 'aws.s3',
      account: '111122223333',
      time: '2021-11-12T00:00:00Z',
      region: 'ca-central-1',
      resources: ['arn:aws:s3:::amzn-s3-demo-bucket1'],
      detail: {
        version: '0',
        bucket: { name: 'amzn-s3-demo-bucket1' },
        object: {
          key: 'example-key',
          size: 5,
          etag: 'b1946ac92492d2347c6235b4d2611184',
          'version-id': 'IYV3p45BT0ac8hjHg1houSdS1a.Mro8e',
          sequencer: '617f08299329d189',
        },
        'request-id': 'N4N7GDK58NMKJ12R',
        requester: '123456789012',
        'source-ip-address': '1.2.3.4',
        reason: 'PutObject',
      },
    });
  });

  test('generated sequencers increase, defaults fill the request fields', () => {
    const base = { bucket: 'b', key: 'k', size: 1, etag: 'e', account: '111122223333', region: 'us-east-1' };
    const first = s3ObjectCreatedEvent(base);
    const second = s3ObjectCreatedEvent(base);
    const seq = (e: EventBridgeEvent) => (e.detail.object as { sequencer: string }).sequencer;
    expect(seq(first) < seq(second)).toBe(true);
    expect(first.detail).toMatchObject({ requester: '111122223333', reason: 'PutObject' });
    expect(first.detail).not.toHaveProperty('object.version-id');
    expect(first.id).not.toBe(second.id);
  });

  test('each S3 creation event name gives its documented reason; other names are refused', () => {
    expect(
      [
        'ObjectCreated:Put',
        'ObjectCreated:Post',
        'ObjectCreated:Copy',
        'ObjectCreated:CompleteMultipartUpload',
      ].map(s3CreatedReason),
    ).toEqual(['PutObject', 'POST Object', 'CopyObject', 'CompleteMultipartUpload']);
    expect(() => s3CreatedReason('ObjectRemoved:Delete')).toThrow(
      'ObjectRemoved:Delete is not an S3 object creation.',
    );
    const event = s3ObjectCreatedEventFor(
      {
        bucket: 'b',
        key: 'corpora/c.jsonl',
        size: 7,
        etag: 'e',
        sequencer: '18C3A6F2B1D',
        eventName: 'ObjectCreated:CompleteMultipartUpload',
      },
      { account: '111122223333', region: 'us-east-1' },
    );
    expect(event.detail).toMatchObject({
      object: { key: 'corpora/c.jsonl', size: 7, etag: 'e', sequencer: '18C3A6F2B1D' },
      reason: 'CompleteMultipartUpload',
      requester: '111122223333',
    });
  });

  test('recent events are kept per bus up to the archive size', () => {
    const bus = new LocalEventBus({ deliver: async () => undefined, archiveSize: 3 });
    for (let i = 0; i < 5; i += 1)
      bus.putEvents([{ Source: 'app', DetailType: 'd', Detail: JSON.stringify({ i }) }]);
    expect(bus.recentEvents().map((e) => e.detail.i)).toEqual([2, 3, 4]);
  });

  test('listeners see every accepted event; a failing listener does not stop routing', async () => {
    const { deliveries, deliver } = recorder();
    const bus = new LocalEventBus({ deliver });
    bus.createEventBus('other');
    bus.addRule({ name: 'r', eventPattern: { source: ['app'] }, targets: [{ id: 't', arn: 'arn:t' }] });
    const seen: string[] = [];
    const unsubscribe = bus.onEvent((event, busName) => seen.push(`${busName}:${event.source}`));
    const errorSpy = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      bus.onEvent(() => {
        throw new Error('listener bug');
      });
      bus.putEvents([
        { Source: 'app', DetailType: 'd', Detail: '{}' },
        { Source: 'else', DetailType: 'd', Detail: '{}', EventBusName: 'other' },
      ]);
      unsubscribe();
      bus.putEvents([{ Source: 'app', DetailType: 'd', Detail: '{}' }]);
      await bus.drain();
      expect(errorSpy).toHaveBeenCalledTimes(3);
    } finally {
      errorSpy.mockRestore();
    }
    expect(seen).toEqual(['default:app', 'other:else']);
    expect(deliveries).toHaveLength(2);
    expect(bus.stats().listenerErrors).toBe(3);
  });
});
