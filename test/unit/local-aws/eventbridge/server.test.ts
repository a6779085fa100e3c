/** The PutEvents endpoint, driven by the real AWS SDK v3 EventBridgeClient over HTTP. */
import { EventBridgeClient, ListRulesCommand, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { LocalEventBus, type EventBridgeEvent } from '@corpus-pipeline/local-aws/eventbridge/bus';
import {
  startEventBridgeServer,
  type EventBridgeServer,
} from '@corpus-pipeline/local-aws/eventbridge/server';

describe('startEventBridgeServer', () => {
  const delivered: { targetId: string; input: string; event: EventBridgeEvent }[] = [];
  const bus = new LocalEventBus({
    account: '123456789012',
    region: 'eu-west-1',
    deliver: async (target, input, event) => {
      delivered.push({ targetId: target.id, input, event });
    },
  });
  bus.createEventBus('pipeline');
  bus.addRule({
    name: 'run-completed',
    eventBusName: 'pipeline',
    eventPattern: { source: ['corpus.pipeline'], detail: { status: ['SUCCEEDED'] } },
    targets: [{ id: 'next-stage', arn: 'arn:aws:sqs:eu-west-1:123456789012:next', inputPath: '$.detail' }],
  });

  let server: EventBridgeServer;
  let client: EventBridgeClient;

  beforeAll(async () => {
    server = await startEventBridgeServer(bus, { port: 0 });
    client = new EventBridgeClient({
      region: 'eu-west-1',
      endpoint: server.endpoint,
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      maxAttempts: 1,
    });
  });

  afterAll(async () => {
    client.destroy();
    await server.stop();
  });

  test('listens on 127.0.0.1', () => {
    expect(server.endpoint).toBe(`http://127.0.0.1:${server.port}`);
  });

  test('PutEvents through the SDK: accepted and refused entries, then delivery', async () => {
    const time = new Date('2024-06-01T10:20:30Z');
    const response = await client.send(
      new PutEventsCommand({
        Entries: [
          {
            EventBusName: 'pipeline',
            Source: 'corpus.pipeline',
            DetailType: 'Corpus Run Completed',
            Detail: JSON.stringify({ runId: 'run-7', status: 'SUCCEEDED' }),
            Resources: ['arn:aws:states:eu-west-1:123456789012:execution:pipeline:run-7'],
            Time: time,
          },
          {
            EventBusName: 'pipeline',
            Source: 'corpus.pipeline',
            DetailType: 'Corpus Run Completed',
            Detail: '"text"',
          },
          {
            EventBusName: bus.eventBusArn('pipeline'),
            Source: 'corpus.pipeline',
            DetailType: 'x',
            Detail: '{"status":"FAILED"}',
          },
        ],
      }),
    );
    expect(response.$metadata.httpStatusCode).toBe(200);
    expect(response.FailedEntryCount).toBe(1);
    const [accepted, refused, unmatched] = response.Entries ?? [];
    expect(accepted?.EventId).toMatch(/^[0-9a-f-]{36}$/);
    expect(refused).toEqual({ ErrorCode: 'MalformedDetail', ErrorMessage: 'Detail is malformed.' });
    expect(unmatched?.EventId).toMatch(/^[0-9a-f-]{36}$/);

    await bus.drain();
    expect(delivered).toHaveLength(1);
    expect(delivered[0]?.targetId).toBe('next-stage');
    expect(JSON.parse(delivered[0]?.input ?? '')).toEqual({ runId: 'run-7', status: 'SUCCEEDED' });
    expect(delivered[0]?.event).toMatchObject({
      id: accepted?.EventId,
      source: 'corpus.pipeline',
      'detail-type': 'Corpus Run Completed',
      account: '123456789012',
      region: 'eu-west-1',
      time: '2024-06-01T10:20:30Z',
      resources: ['arn:aws:states:eu-west-1:123456789012:execution:pipeline:run-7'],
    });
    expect(bus.recentEvents('pipeline').map((e) => e.id)).toEqual([accepted?.EventId, unmatched?.EventId]);
  });

  test('a request-level validation error reaches the SDK as ValidationException', async () => {
    const entries = Array.from({ length: 11 }, () => ({ Source: 'app', DetailType: 'd', Detail: '{}' }));
    await expect(client.send(new PutEventsCommand({ Entries: entries }))).rejects.toMatchObject({
      name: 'ValidationException',
      $metadata: { httpStatusCode: 400 },
    });
  });

  test('other actions answer UnknownOperationException', async () => {
    const error = await client.send(new ListRulesCommand({})).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toMatchObject({ name: 'UnknownOperationException', $metadata: { httpStatusCode: 400 } });
    expect((error as Error).message).toContain('ListRules');
  });

  test('raw requests: a missing target and a malformed body get JSON 1.1 errors', async () => {
    const headers = { 'content-type': 'application/x-amz-json-1.1' };
    const noTarget = await fetch(server.endpoint, { method: 'POST', headers, body: '{}' });
    expect(noTarget.status).toBe(400);
    expect(noTarget.headers.get('x-amzn-errortype')).toBe('UnknownOperationException');
    expect(await noTarget.json()).toMatchObject({ __type: 'UnknownOperationException' });

    const malformed = await fetch(server.endpoint, {
      method: 'POST',
      headers: { ...headers, 'x-amz-target': 'AWSEvents.PutEvents' },
      body: '{"Entries": [',
    });
    expect(malformed.status).toBe(400);
    expect(await malformed.json()).toEqual({
      __type: 'SerializationException',
      message: 'The request body is not valid JSON.',
    });
  });
});
