import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import {
  LocalFunction,
  LocalFunctionStoppedError,
  LocalLambdaError,
} from '@corpus-pipeline/local-aws/cloud/lambda-runner';
import { describeStack } from '@corpus-pipeline/local-aws/cloud/template';

jest.setTimeout(30_000);

const fixture = (name: string) => path.join(__dirname, 'fixtures', name);

interface EchoResult {
  event: Record<string, unknown>;
  threadId: number;
  invocations: number;
  startedAt: number;
  endedAt: number;
  env: Record<string, string | undefined>;
  context: Record<string, unknown>;
}

describe('LocalFunction', () => {
  let logDir: string;
  const functions: LocalFunction[] = [];
  const create = (options: ConstructorParameters<typeof LocalFunction>[0]) => {
    const fn = new LocalFunction({ logFile: path.join(logDir, `${options.name}.log`), ...options });
    functions.push(fn);
    return fn;
  };

  beforeAll(() => {
    logDir = mkdtempSync(path.join(tmpdir(), 'corpus-lambda-'));
  });

  afterEach(async () => {
    await Promise.all(functions.splice(0).map((fn) => fn.stop()));
  });

  afterAll(() => {
    rmSync(logDir, { recursive: true, force: true });
  });

  /** The LocalLambdaError an invocation rejects with. */
  async function failure(promise: Promise<unknown>): Promise<LocalLambdaError> {
    const error: unknown = await promise.then(
      () => undefined,
      (reason: unknown) => reason,
    );
    if (!(error instanceof LocalLambdaError))
      throw new Error(`expected a LocalLambdaError, got ${String(error)}`);
    return error;
  }

  it('runs a TypeScript handler with a Lambda-like context and environment, warm between invocations', async () => {
    process.env['PARENT_ONLY'] = 'must not leak';
    try {
      const fn = create({
        name: 'echo',
        arn: 'arn:aws:lambda:eu-west-1:000000000000:function:echo',
        entry: fixture('echo-handler.ts'),
        region: 'eu-west-1',
        memoryMb: 256,
        environment: { GREETING: 'hello', AWS_ENDPOINT_URL_S3: 'https://s3.amazonaws.com' },
        serviceEnvironment: { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:4568' },
      });
      const first = (await fn.invoke({ tag: 'a', dropped: undefined }, { requestId: 'req-1' })) as EchoResult;
      expect(first.event).toEqual({ tag: 'a' });
      expect(first.env).toEqual({
        GREETING: 'hello',
        AWS_REGION: 'eu-west-1',
        AWS_LAMBDA_FUNCTION_NAME: 'echo',
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256',
        AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:4568',
        AWS_ACCESS_KEY_ID: 'S3RVER',
        _HANDLER: 'index.handler',
      });
      expect(first.context).toEqual({
        awsRequestId: 'req-1',
        functionName: 'echo',
        functionVersion: '$LATEST',
        invokedFunctionArn: 'arn:aws:lambda:eu-west-1:000000000000:function:echo',
        memoryLimitInMB: '256',
        logGroupName: '/aws/lambda/echo',
        remainingPositive: true,
      });
      const second = (await fn.invoke({ tag: 'b' })) as EchoResult;
      expect(second.threadId).toBe(first.threadId);
      expect(second.invocations).toBe(2);
      expect(fn.stats()).toEqual({
        workers: 1,
        busy: 0,
        queued: 0,
        coldStarts: 1,
        invocations: 2,
        crashes: 0,
      });
    } finally {
      delete process.env['PARENT_ONLY'];
    }
  });

  it('isolates the environments of two functions sharing one entry', async () => {
    const english = create({
      name: 'en',
      arn: 'arn:en',
      entry: fixture('echo-handler.ts'),
      environment: { GREETING: 'hello' },
    });
    const french = create({
      name: 'fr',
      arn: 'arn:fr',
      entry: fixture('echo-handler.ts'),
      environment: { GREETING: 'bonjour' },
    });
    const [a, b] = (await Promise.all([english.invoke({}), french.invoke({})])) as [EchoResult, EchoResult];
    expect([a.env['GREETING'], a.env['AWS_LAMBDA_FUNCTION_NAME']]).toEqual(['hello', 'en']);
    expect([b.env['GREETING'], b.env['AWS_LAMBDA_FUNCTION_NAME']]).toEqual(['bonjour', 'fr']);
    expect(a.threadId).not.toBe(b.threadId);
  });

  it('runs at most maxConcurrency invocations at once and queues the rest', async () => {
    const fn = create({
      name: 'pool',
      arn: 'arn:pool',
      entry: fixture('echo-handler.ts'),
      maxConcurrency: 2,
    });
    const results = (await Promise.all(
      Array.from({ length: 6 }, (_, index) => fn.invoke({ sleepMs: 40, tag: index })),
    )) as EchoResult[];
    // Both workers are started at once (6 waiting, limit 2); which serves what depends on their boot times.
    expect(new Set(results.map((result) => result.threadId)).size).toBeLessThanOrEqual(2);
    expect(results.map((result) => result.event['tag'])).toEqual([0, 1, 2, 3, 4, 5]);
    // No instant had more than two invocations running (measured by the handlers' own clocks): at each start,
    // count the invocations under way.
    const runningAt = (instant: number) =>
      results.filter((other) => other.startedAt <= instant && instant < other.endedAt).length;
    expect(Math.max(...results.map((result) => runningAt(result.startedAt)))).toBeLessThanOrEqual(2);
    expect(fn.stats()).toMatchObject({ workers: 2, coldStarts: 2, invocations: 6, queued: 0 });
  });

  it('reports a thrown error with its own name, as errorType', async () => {
    const fn = create({ name: 'fail', arn: 'arn:fail', entry: fixture('failing-handler.ts') });
    const error = await failure(fn.invoke({ mode: 'custom-error' }, { requestId: 'req-err' }));
    expect(error).toMatchObject({
      name: 'ThrottledRecordError',
      errorType: 'ThrottledRecordError',
      message: 'model throttled the record',
      requestId: 'req-err',
      functionName: 'fail',
    });
    expect(error.toJSON().trace[0]).toMatch(/ThrottledRecordError: model throttled the record/);
    // The environment survives a handler error.
    expect(await fn.invoke({ mode: 'fine' })).toEqual({ ok: true, mode: 'fine' });
    expect(fn.stats().coldStarts).toBe(1);
  });

  it('times out, terminating the worker, and serves the next invocation from a fresh one', async () => {
    const fn = create({
      name: 'slow',
      arn: 'arn:slow',
      entry: fixture('failing-handler.ts'),
      timeoutSeconds: 0.3,
    });
    const error = await failure(fn.invoke({ mode: 'hang' }));
    expect(error.name).toBe('Sandbox.Timedout');
    expect(error.message).toBe('Task timed out after 0.30 seconds');
    expect(fn.stats().workers).toBe(0);
    expect(await fn.invoke({ mode: 'fine' })).toEqual({ ok: true, mode: 'fine' });
    expect(fn.stats().coldStarts).toBe(2);
  });

  it('reports a worker that dies (process.exit, uncaught exception) as Runtime.ExitError and replaces it', async () => {
    const fn = create({ name: 'crash', arn: 'arn:crash', entry: fixture('failing-handler.ts') });
    const exited = await failure(fn.invoke({ mode: 'exit' }));
    expect(exited.name).toBe('Runtime.ExitError');
    expect(exited.message).toMatch(/Runtime exited with error: exit status 3/);
    const uncaught = await failure(fn.invoke({ mode: 'uncaught' }));
    expect(uncaught.name).toBe('Runtime.ExitError');
    expect(uncaught.message).toMatch(/boom outside the handler/);
    expect(await fn.invoke({ mode: 'fine' })).toEqual({ ok: true, mode: 'fine' });
    expect(fn.stats()).toMatchObject({ workers: 1, coldStarts: 3, invocations: 3 });
  });

  it('enforces the response payload limit and reports init failures', async () => {
    const fn = create({ name: 'huge', arn: 'arn:huge', entry: fixture('failing-handler.ts') });
    expect((await failure(fn.invoke({ mode: 'huge' }))).name).toBe('Function.ResponseSizeTooLarge');
    expect((await failure(fn.invoke({ blob: 'x'.repeat(6_300_000) }))).name).toBe(
      'RequestEntityTooLargeException',
    );

    const broken = create({ name: 'broken', arn: 'arn:broken', entry: fixture('broken-init-handler.ts') });
    expect(await failure(broken.invoke({}))).toMatchObject({
      name: 'TypeError',
      message: 'cannot initialise',
    });
    const missing = create({ name: 'missing', arn: 'arn:missing', entry: fixture('no-such-handler.ts') });
    expect((await failure(missing.invoke({}))).name).toBe('Runtime.ImportModuleError');
    const wrongExport = create({
      name: 'wrong-export',
      arn: 'arn:wrong',
      entry: fixture('echo-handler.ts'),
      handlerExport: 'nope',
    });
    expect((await failure(wrongExport.invoke({}))).name).toBe('Runtime.HandlerNotFound');
  });

  it('writes console output to the log file with the request id, not to this process', async () => {
    const fn = create({ name: 'logger', arn: 'arn:logger', entry: fixture('failing-handler.ts') });
    expect(await fn.invoke({ mode: 'log' }, { requestId: 'req-log' })).toBe('logged');
    await fn.stop();
    const log = readFileSync(path.join(logDir, 'logger.log'), 'utf8');
    expect(log).toContain('START RequestId: req-log Version: $LATEST');
    expect(log).toMatch(/\treq-log\tINFO\thello from the handler \{ a: 1 \}\n/);
    expect(log).toMatch(/\treq-log\tERROR\tan error line\n/);
    expect(log).toContain('END RequestId: req-log');
  });

  it('builds a function from a template description (entry, handler, environment, timeout, concurrency)', async () => {
    const stack = describeStack(
      {
        Resources: {
          Bucket: { Type: 'AWS::S3::Bucket' },
          Echo: {
            Type: 'AWS::Lambda::Function',
            Metadata: { 'corpus:entry': 'test/unit/local-aws/cloud/fixtures/echo-handler.ts' },
            Properties: {
              Handler: 'index.handler',
              MemorySize: 512,
              ReservedConcurrentExecutions: 1,
              Environment: { Variables: { GREETING: { 'Fn::Sub': 'hi ${Bucket}' } } },
            },
          },
        },
      },
      { stackName: 'Corpus', region: 'eu-west-1', projectRoot: path.resolve(__dirname, '../../../..') },
    );
    const fn = LocalFunction.fromDescription(stack.functions[0]!, {
      region: 'eu-west-1',
      serviceEnvironment: { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1' },
      logDirectory: logDir,
    });
    functions.push(fn);
    const [first, second] = (await Promise.all([fn.invoke({ sleepMs: 20 }), fn.invoke({})])) as EchoResult[];
    expect(first!.env).toMatchObject({
      GREETING: 'hi corpus-bucket',
      AWS_LAMBDA_FUNCTION_NAME: 'Corpus-Echo',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512',
      AWS_REGION: 'eu-west-1',
      AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1',
    });
    // Reserved concurrency 1: one execution environment served both invocations, one after the other.
    expect(second!.threadId).toBe(first!.threadId);
    expect(fn.stats().coldStarts).toBe(1);
  });

  it('rejects queued and new invocations once stopped', async () => {
    const fn = create({
      name: 'stopping',
      arn: 'arn:stopping',
      entry: fixture('echo-handler.ts'),
      maxConcurrency: 1,
    });
    const running = expect(fn.invoke({ sleepMs: 5_000 })).rejects.toBeInstanceOf(LocalFunctionStoppedError);
    const queued = expect(fn.invoke({})).rejects.toBeInstanceOf(LocalFunctionStoppedError);
    await fn.stop();
    await running;
    await queued;
    await expect(fn.invoke({})).rejects.toMatchObject({ name: 'LocalFunctionStoppedError' });
  });
});
