import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import {
  INJECTED_CRASH_ERROR_TYPE,
  LocalFunction,
  LocalLambdaError,
} from '../../../local/cloud/lambda-runner';

jest.setTimeout(30_000);

describe('LocalFunction crash fault', () => {
  let dir: string;
  let fn: LocalFunction | undefined;

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'corpus-crash-'));
  });

  afterEach(async () => {
    await fn?.stop();
    fn = undefined;
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const invokeOutcome = (event: Record<string, unknown>): Promise<unknown> =>
    fn!.invoke(event).then(
      (result) => result,
      (error: unknown) => {
        if (!(error instanceof LocalLambdaError)) throw error;
        return { errorType: error.errorType, errorMessage: error.errorMessage };
      },
    );

  it('lets the handler finish its work, then fails the next N successful invocations, and only N', async () => {
    const file = path.join(dir, 'work.log');
    fn = new LocalFunction({
      name: 'collect-fn',
      arn: 'arn:aws:lambda:us-east-1:000000000000:function:collect-fn',
      entry: path.join(__dirname, 'fixtures', 'side-effect-handler.ts'),
      maxConcurrency: 1,
      logFile: path.join(dir, 'collect-fn.log'),
      crashAfterWork: { times: 2, fault: 'crash=collect:2' },
    });
    const crashed = {
      errorType: INJECTED_CRASH_ERROR_TYPE,
      errorMessage: 'injected crash after the handler finished its work (fault crash=collect:2)',
    };

    // A handler that fails on its own does not use up a crash.
    expect(await invokeOutcome({ file, tag: 'refused', fail: true })).toEqual({
      errorType: 'TypeError',
      errorMessage: 'refused refused',
    });
    expect(fn.pendingCrashes()).toBe(2);
    expect(await invokeOutcome({ file, tag: 'one' })).toEqual(crashed);
    expect(await invokeOutcome({ file, tag: 'two' })).toEqual(crashed);
    expect(await invokeOutcome({ file, tag: 'three' })).toEqual({ done: 'three' });
    expect(fn.pendingCrashes()).toBe(0);

    // The work of the crashed invocations happened; each crash discarded its execution environment.
    expect(readFileSync(file, 'utf8').split('\n').filter(Boolean)).toEqual(['one', 'two', 'three']);
    expect(fn.stats().coldStarts).toBe(3);
    expect(readFileSync(path.join(dir, 'collect-fn.log'), 'utf8')).toContain(
      'Runtime exited before answering (fault crash=collect:2)',
    );
  });

  it('injectCrash arms a crash later, with a default fault name, and refuses a bad count', async () => {
    const file = path.join(dir, 'later.log');
    fn = new LocalFunction({
      name: 'later-fn',
      arn: 'arn:aws:lambda:us-east-1:000000000000:function:later-fn',
      entry: path.join(__dirname, 'fixtures', 'side-effect-handler.ts'),
      logFile: path.join(dir, 'later-fn.log'),
    });
    expect(await invokeOutcome({ file, tag: 'before' })).toEqual({ done: 'before' });
    expect(() => fn!.injectCrash(-1)).toThrow(RangeError);
    fn.injectCrash(1);
    expect(await invokeOutcome({ file, tag: 'crashes' })).toEqual({
      errorType: INJECTED_CRASH_ERROR_TYPE,
      errorMessage: 'injected crash after the handler finished its work (fault crash=later-fn:1)',
    });
    expect(await invokeOutcome({ file, tag: 'after' })).toEqual({ done: 'after' });
    expect(readFileSync(file, 'utf8').split('\n').filter(Boolean)).toEqual(['before', 'crashes', 'after']);
  });
});
