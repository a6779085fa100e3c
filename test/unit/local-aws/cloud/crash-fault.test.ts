import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import {
  INJECTED_CRASH_ERROR_TYPE,
  LocalFunction,
  LocalLambdaError,
  type LocalFunctionOptions,
} from '@corpus-pipeline/local-aws/cloud/lambda-runner';

jest.setTimeout(60_000);

interface Answer {
  tag: string;
  threadId: number;
  invocationsHere: number;
}

type Outcome = Answer | { errorType: string; errorMessage: string };

describe('LocalFunction crash faults (crash=HANDLER@STEP:N)', () => {
  let dir: string;
  const functions: LocalFunction[] = [];
  const create = (name: string, options: Partial<LocalFunctionOptions>): LocalFunction => {
    const fn = new LocalFunction({
      name,
      arn: `arn:aws:lambda:us-east-1:000000000000:function:${name}`,
      entry: path.join(__dirname, 'fixtures', 'fault-point-handler.ts'),
      faultHandler: 'converse-batch',
      logFile: path.join(dir, `${name}.log`),
      ...options,
    });
    functions.push(fn);
    return fn;
  };

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'corpus-crash-'));
  });

  afterEach(async () => {
    await Promise.all(functions.splice(0).map((fn) => fn.stop()));
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const outcome = (fn: LocalFunction, event: Record<string, unknown>): Promise<Outcome> =>
    fn.invoke(event).then(
      (result) => result as Answer,
      (error: unknown) => {
        if (!(error instanceof LocalLambdaError)) throw error;
        return { errorType: error.errorType, errorMessage: error.errorMessage };
      },
    );

  const lines = (file: string): string[] => readFileSync(file, 'utf8').split('\n').filter(Boolean);

  it('kills the invocation at the point: no later line, no catch, no finally; Runtime.ExitError; a fresh worker next', async () => {
    const file = path.join(dir, 'mid.log');
    const fn = create('mid-fn', {
      crashes: [{ handler: 'converse-batch', step: 'after-commit', times: 1 }],
    });

    const first = await outcome(fn, { file, tag: 'one' });
    expect(fn.faultsFired()).toEqual([
      {
        handler: 'converse-batch',
        step: 'after-commit',
        fault: 'crash=converse-batch@after-commit:1',
        times: 1,
        fired: 1,
      },
    ]);
    expect(first).toEqual({
      errorType: INJECTED_CRASH_ERROR_TYPE,
      errorMessage: expect.stringContaining(
        'injected fault crash=converse-batch@after-commit:1: killed at converse-batch@after-commit',
      ) as unknown as string,
    });
    // The work before the point happened; nothing of the invocation ran after it, not even its finally block.
    expect(lines(file)).toEqual(['one before']);

    const second = (await outcome(fn, { file, tag: 'two' })) as Answer;
    expect(second.tag).toBe('two');
    // A new execution environment: the module state of the killed one is gone.
    expect(second.invocationsHere).toBe(1);
    expect(fn.stats()).toMatchObject({ coldStarts: 2, crashes: 1, invocations: 2 });
    expect(lines(file)).toEqual(['one before', 'two before', 'two after', 'two finally']);
    expect(readFileSync(path.join(dir, 'mid-fn.log'), 'utf8')).toMatch(
      /Error Type: Runtime\.ExitError \(exit status 1\) \(injected fault crash=converse-batch@after-commit:1/,
    );
  });

  it('fires exactly N times across concurrent invocations on several workers', async () => {
    const file = path.join(dir, 'many.log');
    const fn = create('many-fn', {
      maxConcurrency: 4,
      crashes: [{ handler: 'converse-batch', step: 'after-commit', times: 5 }],
    });
    const tags = Array.from({ length: 24 }, (_, i) => `t${i}`);
    const outcomes = await Promise.all(tags.map((tag) => outcome(fn, { file, tag, delayMs: 20 })));

    const fired = fn.faultsFired()[0]?.fired;
    expect(fired).toBe(5);
    const crashed = tags.filter((_, i) => 'errorType' in (outcomes[i] as Outcome));
    expect(crashed).toHaveLength(5);
    for (const i of tags.keys()) {
      const o = outcomes[i] as Outcome;
      if ('errorType' in o) expect(o.errorType).toBe(INJECTED_CRASH_ERROR_TYPE);
    }
    // Several workers took part, and each crash cost its worker.
    const answered = outcomes.filter((o): o is Answer => 'threadId' in o);
    expect(new Set(answered.map((a) => a.threadId)).size).toBeGreaterThan(1);
    expect(fn.stats().coldStarts).toBeGreaterThanOrEqual(4 + 5);
    const written = lines(file);
    for (const tag of crashed)
      expect(written.filter((l) => l.startsWith(`${tag} `))).toEqual([`${tag} before`]);
    expect(written.filter((l) => l.endsWith(' finally'))).toHaveLength(tags.length - 5);
  });

  it('step return: the handler does its work and dies before answering; failures of its own do not use one up', async () => {
    const file = path.join(dir, 'return.log');
    const fn = create('return-fn', {
      crashes: [
        { handler: 'converse-batch', step: 'return', times: 2, fault: 'crash=converse-batch:2' },
        // Addresses another handler: this function ignores it.
        { handler: 'collect', step: 'return', times: 5 },
      ],
    });
    expect(fn.faultsFired().map((c) => c.handler)).toEqual(['converse-batch']);

    expect(await outcome(fn, { file, tag: 'refused', fail: true })).toEqual({
      errorType: 'TypeError',
      errorMessage: 'refused refused',
    });
    expect(fn.faultsFired()[0]?.fired).toBe(0);
    const crashed = { errorType: INJECTED_CRASH_ERROR_TYPE, errorMessage: expect.any(String) as unknown };
    expect(await outcome(fn, { file, tag: 'one' })).toEqual(crashed);
    expect(await outcome(fn, { file, tag: 'two' })).toEqual(crashed);
    expect(await outcome(fn, { file, tag: 'three' })).toMatchObject({ tag: 'three' });
    expect(fn.faultsFired()[0]?.fired).toBe(2);
    // The crashed invocations did all their work, finally included: they died after the handler returned.
    expect(lines(file).filter((l) => l.startsWith('one ') || l.startsWith('two '))).toEqual([
      'one before',
      'one after',
      'one finally',
      'two before',
      'two after',
      'two finally',
    ]);
  });

  it('without crash faults no hook is installed and the fault point does nothing', async () => {
    const file = path.join(dir, 'none.log');
    const fn = create('none-fn', { crashes: [{ handler: 'collect', step: 'after-commit', times: 3 }] });
    expect(await outcome(fn, { file, tag: 'x' })).toMatchObject({ tag: 'x', invocationsHere: 1 });
    expect(fn.faultsFired()).toEqual([]);
    expect(lines(file)).toEqual(['x before', 'x after', 'x finally']);
    expect(() =>
      create('bad-fn', { crashes: [{ handler: 'converse-batch', step: 'return', times: -1 }] }),
    ).toThrow(RangeError);
  });
});
