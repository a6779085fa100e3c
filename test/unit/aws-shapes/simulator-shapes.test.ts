import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { BATCH_JOB_EVENT } from '../../../lib/batch-jobs';
import {
  answerControlRequest,
  BatchJobService,
  BedrockRuntimeService,
  FaultInjector,
  TOO_MANY_REQUESTS_MESSAGE,
  TOO_MANY_TOKENS_MESSAGE,
  type BatchJobStateChangeEvent,
  type RuntimeResponse,
} from '../local-aws/bedrock-simulator/catalog-simulator';
import {
  LOCAL_CREDENTIALS,
  startS3Emulator,
  type S3Emulator,
} from '@corpus-pipeline/local-aws/cloud/emulators';
import {
  LocalEventBus,
  s3ObjectCreatedEventFor,
  type EventBridgeEvent,
} from '@corpus-pipeline/local-aws/eventbridge';
import {
  AWS_FIXTURES,
  fixtureJson,
  fixtureJsonLines,
  httpFixture,
  type AwsFixtureName,
  type JsonObject,
} from './fixtures';
import { expectSameShape, type ShapeRules } from './shape';

// The simulator and the local glue produce what AWS documents: each payload they make is compared by shape with the
// documented one in test/fixtures/aws (same keys at every level, same JSON types, the fixed values equal, nothing
// extra). A difference is either fixed in the simulator or allowed here by path, with the reason.

jest.setTimeout(60_000);

const REGION = 'us-east-1';
const ACCOUNT = '123456789012';
const BUCKET = 'shape-data';
/** The default model: Amazon Nova Lite through the US inference profile. */
const MODEL = 'us.amazon.nova-lite-v1:0';
/** Jobs name the foundation model, as the documented event does (the batch page lists Nova Lite in us-east-1). */
const BATCH_MODEL = 'amazon.nova-lite-v1:0';
const MARKER = 'POISON';

/** Compares with a fixture, naming both in the message. */
function expectShapeOf(what: string, actual: unknown, fixture: AwsFixtureName, rules: ShapeRules = {}): void {
  expectSameShape(actual, fixtureJson(fixture), `${what} vs test/fixtures/aws/${fixture}`, rules);
}

/** The status values GetModelInvocationJob documents (Response Elements, status: Valid Values). */
const DOCUMENTED_JOB_STATUSES = [
  'Submitted',
  'InProgress',
  'Completed',
  'Failed',
  'Stopping',
  'Stopped',
  'PartiallyCompleted',
  'Expired',
  'Validating',
  'Scheduled',
];

/** The job ARN pattern of CreateModelInvocationJob's response (API reference, jobArn). */
const JOB_ARN_PATTERN =
  /^arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job\/[a-z0-9]{12}$/;

/** The event's creationTime format, as in the documented example (`Aug 28, 2024, 10:47:53 PM`). */
const CREATION_TIME = /^[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d{2}:\d{2} [AP]M$/;

/**
 * The ThrottlingException messages the AWS Knowledge Center lists for Bedrock on-demand calls
 * (https://repost.aws/knowledge-center/bedrock-throttling-error).
 */
const DOCUMENTED_THROTTLING_MESSAGES = [
  'Too many requests, please wait before trying again. You have sent too many requests. Wait before trying again.',
  'Your request rate is too high. Reduce the frequency of requests.',
  'Too many tokens, please wait before trying again.',
  'Too many requests, please wait before trying again.',
];

let stateDir: string;
let emulator: S3Emulator;
let s3: S3Client;

beforeAll(async () => {
  stateDir = mkdtempSync(join(tmpdir(), 'aws-shapes-'));
  emulator = await startS3Emulator({ directory: join(stateDir, 's3') });
  s3 = new S3Client({ region: REGION, endpoint: emulator.endpoint, credentials: LOCAL_CREDENTIALS });
  await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
});

afterAll(async () => {
  s3.destroy();
  await emulator.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

async function text(key: string): Promise<string> {
  const out = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return (await out.Body?.transformToString()) ?? '';
}

async function keysUnder(prefix: string): Promise<string[]> {
  const out = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (out.Contents ?? []).map((o) => o.Key ?? '').sort();
}

function jsonBody(response: { body: string }): JsonObject {
  return JSON.parse(response.body) as JsonObject;
}

describe('the batch control plane and its jobs', () => {
  /** What one job left behind: its wire answers, its events as the rule target got them, its output files. */
  interface JobRun {
    created: JsonObject;
    described: JsonObject;
    events: JsonObject[];
    lines: JsonObject[];
    manifest: JsonObject;
  }

  const runs = new Map<'Converse' | 'InvokeModel', JobRun>();

  /** Runs one job over `records` through the control plane's wire answers; its events go through the local bus. */
  async function runJob(
    invocationType: 'Converse' | 'InvokeModel',
    records: readonly JsonObject[],
  ): Promise<JobRun> {
    const delivered: JsonObject[] = [];
    const bus = new LocalEventBus({
      account: ACCOUNT,
      region: REGION,
      deliver: async (_target, inputJson) => {
        delivered.push(JSON.parse(inputJson) as JsonObject);
      },
    });
    // The job-state rule's pattern (lib/batch-jobs.ts) without its job-name and status filters: every event.
    bus.addRule({
      name: 'job-state',
      eventPattern: { source: [BATCH_JOB_EVENT.source], 'detail-type': [BATCH_JOB_EVENT.detailType] },
      targets: [{ id: 'job-state', arn: `arn:aws:lambda:${REGION}:${ACCOUNT}:function:job-state` }],
    });
    const service = new BatchJobService(
      { region: REGION, accountId: ACCOUNT, phaseMs: 0, limits: { default: { minRecordsPerJob: 1 } } },
      {
        s3Client: s3,
        faults: new FaultInjector({ rejectWhenTextIncludes: MARKER }),
        // As the local runtime bridges the simulator to the default bus (cli/local/runtime.ts).
        onEvent: (event: BatchJobStateChangeEvent) => {
          bus.emit({ ...event, resources: [...event.resources], detail: { ...event.detail } });
        },
      },
    );
    const prefix = `jobs/${invocationType}`;
    await s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: `${prefix}/input/records.jsonl`,
        Body: `${records.map((r) => JSON.stringify(r)).join('\n')}\n`,
      }),
    );
    const request = {
      jobName: `shape-${invocationType.toLowerCase()}`,
      clientRequestToken: `shape-${invocationType.toLowerCase()}-1`,
      roleArn: `arn:aws:iam::${ACCOUNT}:role/batch-inference`,
      modelId: BATCH_MODEL,
      inputDataConfig: {
        s3InputDataConfig: { s3Uri: `s3://${BUCKET}/${prefix}/input/`, s3InputFormat: 'JSONL' },
      },
      outputDataConfig: { s3OutputDataConfig: { s3Uri: `s3://${BUCKET}/${prefix}/output/` } },
      timeoutDurationInHours: 24,
      ...(invocationType === 'Converse' ? { modelInvocationType: 'Converse' } : {}),
    };
    try {
      const createdAnswer = answerControlRequest(
        service,
        'POST',
        '/model-invocation-job',
        JSON.stringify(request),
      );
      expect(createdAnswer.status).toBe(200);
      const created = jsonBody(createdAnswer);
      const jobArn = String(created.jobArn);
      await service.settled(jobArn);
      await service.eventsDelivered();
      await bus.drain();
      const describedAnswer = answerControlRequest(
        service,
        'GET',
        `/model-invocation-job/${encodeURIComponent(jobArn)}`,
        '',
      );
      expect(describedAnswer.status).toBe(200);
      const jobId = jobArn.slice(jobArn.lastIndexOf('/') + 1);
      const out = `${prefix}/output/${jobId}/`;
      expect(await keysUnder(out)).toEqual([`${out}manifest.json.out`, `${out}records.jsonl.out`]);
      const lines = (await text(`${out}records.jsonl.out`))
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as JsonObject);
      const manifest = JSON.parse(await text(`${out}manifest.json.out`)) as JsonObject;
      return { created, described: jsonBody(describedAnswer), events: delivered, lines, manifest };
    } finally {
      await service.close();
    }
  }

  beforeAll(async () => {
    const converse = (id: string, question: string): JsonObject => ({
      recordId: id,
      modelInput: {
        messages: [{ role: 'user', content: [{ text: question }] }],
        inferenceConfig: { maxTokens: 1024 },
      },
    });
    const native = (id: string, question: string): JsonObject => ({
      recordId: id,
      // Amazon Nova's native body (test/fixtures/aws/models/amazon-nova/request.json).
      modelInput: {
        schemaVersion: 'messages-v1',
        messages: [{ role: 'user', content: [{ text: question }] }],
        inferenceConfig: { max_new_tokens: 1024 },
      },
    });
    runs.set(
      'Converse',
      await runJob('Converse', [
        converse('CONVERSE001', 'Create a list of 3 pop songs.'),
        converse('CONVERSE002', `Please ${MARKER} this one.`),
      ]),
    );
    runs.set(
      'InvokeModel',
      await runJob('InvokeModel', [
        native('NATIVE00001', 'Roses are red, violets are'),
        native('NATIVE00002', `Please ${MARKER} this one.`),
      ]),
    );
  });

  function run(type: 'Converse' | 'InvokeModel'): JobRun {
    const found = runs.get(type);
    if (!found) throw new Error(`the ${type} job did not run`);
    return found;
  }

  it('CreateModelInvocationJob answers the documented {jobArn}', () => {
    for (const type of ['Converse', 'InvokeModel'] as const) {
      expectShapeOf(
        `CreateModelInvocationJob (${type})`,
        run(type).created,
        AWS_FIXTURES.createModelInvocationJob,
      );
      expect(String(run(type).created.jobArn)).toMatch(JOB_ARN_PATTERN);
    }
    expect(String(fixtureJson(AWS_FIXTURES.createModelInvocationJob).jobArn)).toMatch(JOB_ARN_PATTERN);
  });

  it('every state-change event the rule target receives has the documented shape and status names', () => {
    const documented = fixtureJson(AWS_FIXTURES.batchJobStateChange);
    for (const type of ['Converse', 'InvokeModel'] as const) {
      const { events, created } = run(type);
      expect(events.map((e) => (e.detail as JsonObject).status)).toEqual([
        'Submitted',
        'Validating',
        'Scheduled',
        'InProgress',
        'Completed',
      ]);
      for (const event of events) {
        const status = String((event.detail as JsonObject).status);
        expect(DOCUMENTED_JOB_STATUSES).toContain(status);
        expectShapeOf(`the ${status} event of the ${type} job`, event, AWS_FIXTURES.batchJobStateChange, {
          fixed: ['version', 'source', 'detail-type', 'detail.version'],
        });
        const detail = event.detail as JsonObject;
        expect(event.resources).toEqual([created.jobArn]);
        expect(detail.batchJobArn).toBe(created.jobArn);
        expect(detail.accountId).toBe(event.account);
        // A foundation-model ARN, as in the documented example; the creation time in the example's format.
        expect(String(detail.batchModelId)).toBe(
          `arn:aws:bedrock:${REGION}::foundation-model/${BATCH_MODEL}`,
        );
        expect(String(detail.creationTime)).toMatch(CREATION_TIME);
      }
      const completed = events.at(-1);
      expectShapeOf(`the Completed event of the ${type} job`, completed, AWS_FIXTURES.batchJobStateChange, {
        fixed: [
          'version',
          'source',
          'detail-type',
          'detail.version',
          'detail.status',
          'detail.failureMessage',
        ],
      });
    }
    const documentedDetail = documented.detail as JsonObject;
    expect(String(documentedDetail.creationTime)).toMatch(CREATION_TIME);
    expect(String(documentedDetail.batchModelId)).toMatch(/^arn:aws:bedrock:[a-z0-9-]+::foundation-model\//);
  });

  it('GetModelInvocationJob answers the documented members, times in ISO 8601 and counts as numbers', () => {
    const optional = {
      message: 'set only when the job has one (it failed, stopped or ended partially); this job completed',
      vpcConfig: 'returned only for a job created with one; this job was not',
      'inputDataConfig.s3InputDataConfig.s3BucketOwner': 'returned only when the request set it',
      'outputDataConfig.s3OutputDataConfig.s3BucketOwner': 'returned only when the request set it',
      'outputDataConfig.s3OutputDataConfig.s3EncryptionKeyId': 'returned only when the request set it',
    };
    const converse = run('Converse').described;
    expectShapeOf('GetModelInvocationJob (Converse job)', converse, AWS_FIXTURES.getModelInvocationJob, {
      fixed: ['status', 'modelInvocationType', 'inputDataConfig.s3InputDataConfig.s3InputFormat'],
      optional,
    });
    const native = run('InvokeModel').described;
    expectShapeOf('GetModelInvocationJob (InvokeModel job)', native, AWS_FIXTURES.getModelInvocationJob, {
      fixed: ['status', 'inputDataConfig.s3InputDataConfig.s3InputFormat'],
      optional,
    });
    expect(native.modelInvocationType).toBe('InvokeModel');
    for (const described of [converse, native, fixtureJson(AWS_FIXTURES.getModelInvocationJob)]) {
      for (const member of ['submitTime', 'lastModifiedTime', 'endTime', 'jobExpirationTime']) {
        expect([member, String(described[member])]).toEqual([
          member,
          expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/),
        ]);
      }
    }
    expect(converse).toMatchObject({
      totalRecordCount: 2,
      processedRecordCount: 2,
      successRecordCount: 1,
      errorRecordCount: 1,
    });
  });

  it('a Converse job writes the documented success and error lines', () => {
    const { lines } = run('Converse');
    const success = lines.find((l) => l.recordId === 'CONVERSE001');
    const failure = lines.find((l) => l.recordId === 'CONVERSE002');
    const [documentedSuccess] = fixtureJsonLines(AWS_FIXTURES.batchOutputConverse);
    expectSameShape(
      success,
      documentedSuccess,
      `the Converse job's success line vs ${AWS_FIXTURES.batchOutputConverse}`,
      {
        fixed: ['modelOutput.stopReason', 'modelOutput.output.message.role'],
        opaque: { modelInput: 'the record as submitted: the job echoes its request' },
      },
    );
    const [, documentedError] = fixtureJsonLines(AWS_FIXTURES.batchOutput);
    expectSameShape(
      failure,
      documentedError,
      `the Converse job's error line vs ${AWS_FIXTURES.batchOutput}`,
      {
        fixed: ['error.errorCode'],
        opaque: { modelInput: 'the record as submitted: the job echoes its request' },
      },
    );
  });

  it("an InvokeModel job writes the documented envelope around the model's native body", () => {
    const { lines } = run('InvokeModel');
    const [documentedSuccess, documentedError] = fixtureJsonLines(AWS_FIXTURES.batchOutput);
    const opaque = {
      modelInput: 'the record as submitted: the job echoes its request',
      modelOutput: "the model's native InvokeModel body: Titan's in the documented line, Amazon Nova's here",
    };
    expectSameShape(
      lines.find((l) => l.recordId === 'NATIVE00001'),
      documentedSuccess,
      `the InvokeModel job's success line vs ${AWS_FIXTURES.batchOutput}`,
      { opaque },
    );
    expectSameShape(
      lines.find((l) => l.recordId === 'NATIVE00002'),
      documentedError,
      `the InvokeModel job's error line vs ${AWS_FIXTURES.batchOutput}`,
      { fixed: ['error.errorCode'], opaque: { modelInput: opaque.modelInput } },
    );
  });

  it('manifest.json.out has the documented six counts, agreeing with the lines', () => {
    for (const type of ['Converse', 'InvokeModel'] as const) {
      const { manifest, lines } = run(type);
      expectShapeOf(`the ${type} job's manifest.json.out`, manifest, AWS_FIXTURES.batchManifest);
      expect(manifest).toMatchObject({
        totalRecordCount: 2,
        processedRecordCount: lines.length,
        successRecordCount: lines.filter((l) => 'modelOutput' in l).length,
        errorRecordCount: lines.filter((l) => 'error' in l).length,
      });
    }
  });
});

describe('the runtime API', () => {
  const request = JSON.stringify({
    messages: [{ role: 'user', content: [{ text: 'Create a list of 3 pop songs.' }] }],
    inferenceConfig: { maxTokens: 1024 },
  });

  function headersOf(response: RuntimeResponse): JsonObject {
    return Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
  }

  it('Converse answers the documented response', async () => {
    const service = new BedrockRuntimeService();
    const response = await service.handle('converse', MODEL, request);
    service.close();
    expect(response.status).toBe(200);
    expect(headersOf(response)['content-type']).toBe('application/json');
    expectShapeOf('the Converse response', jsonBody(response), AWS_FIXTURES.converseResponse, {
      fixed: ['stopReason', 'output.message.role'],
    });
  });

  it('a throttled call answers the documented 429 ThrottlingException', async () => {
    const documented = httpFixture(AWS_FIXTURES.throttlingException);
    const byRequests = new BedrockRuntimeService({ quotas: { default: { requestsPerMinute: 1 } } });
    const byTokens = new BedrockRuntimeService({ quotas: { default: { tokensPerMinute: 1 } } });
    expect((await byRequests.handle('converse', MODEL, request)).status).toBe(200);
    const throttled = [
      await byRequests.handle('converse', MODEL, request),
      await byTokens.handle('converse', MODEL, request),
    ];
    byRequests.close();
    byTokens.close();
    for (const response of throttled) {
      expect(response.status).toBe(documented.status);
      expectSameShape(
        headersOf(response),
        documented.headers,
        "the throttled answer's headers vs the fixture's",
        {
          fixed: ['content-type', 'x-amzn-errortype'],
        },
      );
      expectSameShape(
        jsonBody(response),
        JSON.parse(documented.body),
        "the throttled answer's body vs the fixture's",
      );
      expect(DOCUMENTED_THROTTLING_MESSAGES).toContain(jsonBody(response).message);
    }
    expect(throttled.map((r) => jsonBody(r).message)).toEqual([
      TOO_MANY_REQUESTS_MESSAGE,
      TOO_MANY_TOKENS_MESSAGE,
    ]);
    expect(DOCUMENTED_THROTTLING_MESSAGES).toContain(JSON.parse(documented.body).message);
  });
});

describe('the local S3 Object Created event', () => {
  /** What the local default bus delivers to a rule on S3's events for the uploads `act` makes. */
  async function eventsFor(act: () => Promise<void>): Promise<EventBridgeEvent[]> {
    const delivered: EventBridgeEvent[] = [];
    const bus = new LocalEventBus({
      account: ACCOUNT,
      region: REGION,
      deliver: async (_target, inputJson) => {
        delivered.push(JSON.parse(inputJson) as EventBridgeEvent);
      },
    });
    bus.addRule({
      name: 'ingest',
      eventPattern: { source: ['aws.s3'], 'detail-type': ['Object Created'] },
      targets: [{ id: 'workflow', arn: `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:corpus` }],
    });
    // As the local runtime bridges the S3 emulator to the default bus (cli/local/runtime.ts).
    const unsubscribe = emulator.onObjectCreated((notice) => {
      bus.emit(s3ObjectCreatedEventFor(notice, { account: ACCOUNT, region: REGION }));
    });
    try {
      await act();
      await emulator.drainNotifications();
      await bus.drain();
    } finally {
      unsubscribe();
    }
    return delivered;
  }

  const rules: ShapeRules = {
    fixed: ['version', 'source', 'detail-type', 'detail.version'],
    optional: {
      // test/unit/local-aws/eventbridge/ingest-input.test.ts checks that the ingest rule reads no such field.
      'detail.object.version-id':
        'the local S3 (s3rver) keeps no object versions; the documented example is from a versioned bucket, as the ingest bucket is, but nothing in the pipeline reads it',
    },
  };

  it('a PutObject gives the documented event, reason PutObject', async () => {
    const [event, ...more] = await eventsFor(async () => {
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'corpora/put.jsonl', Body: 'hello' }));
    });
    expect(more).toEqual([]);
    expectShapeOf('the local PutObject event', event, AWS_FIXTURES.s3ObjectCreated, {
      ...rules,
      fixed: [...(rules.fixed ?? []), 'detail.reason'],
    });
    expect(event?.resources).toEqual([`arn:aws:s3:::${BUCKET}`]);
    expect(event?.detail).toMatchObject({
      bucket: { name: BUCKET },
      object: { key: 'corpora/put.jsonl', size: 5 },
    });
  });

  it('CopyObject and a multipart upload give the same shape, with their own reason', async () => {
    const events = await eventsFor(async () => {
      await s3.send(
        new CopyObjectCommand({
          Bucket: BUCKET,
          Key: 'corpora/copy.jsonl',
          CopySource: `${BUCKET}/corpora/put.jsonl`,
        }),
      );
      const { UploadId } = await s3.send(
        new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'corpora/multipart.jsonl' }),
      );
      const part = await s3.send(
        new UploadPartCommand({
          Bucket: BUCKET,
          Key: 'corpora/multipart.jsonl',
          UploadId,
          PartNumber: 1,
          Body: 'one part',
        }),
      );
      await s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: BUCKET,
          Key: 'corpora/multipart.jsonl',
          UploadId,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
        }),
      );
    });
    expect(events.map((e) => e.detail.reason)).toEqual(['CopyObject', 'CompleteMultipartUpload']);
    for (const event of events) {
      expectShapeOf(
        `the local ${String(event.detail.reason)} event`,
        event,
        AWS_FIXTURES.s3ObjectCreated,
        rules,
      );
    }
  });
});
