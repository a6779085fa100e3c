import { describe, expect, it } from '@jest/globals';
import {
  callDependency,
  ConfigurationError,
  errorMessage,
  errorName,
  isTransientAwsError,
  TransientDependencyError,
} from '../../../../lambda/shared/errors';
import { readEnv, positiveInt, required } from '../../../../lambda/shared/env';
import { InFlightLimiter, mapWithConcurrency } from '../../../../lambda/shared/pool';
import { z } from 'zod';
import { awsError } from '../helpers';

/** A promise with its resolve and reject exposed. */
function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
} {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every pending callback run. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('mapWithConcurrency', () => {
  it('keeps the input order whatever order the calls finish in', async () => {
    const delays = [30, 5, 20, 0, 10];
    const out = await mapWithConcurrency(delays, 3, async (ms, i) => {
      await new Promise((r) => setTimeout(r, ms));
      return `${i}:${ms}`;
    });
    expect(out).toEqual(['0:30', '1:5', '2:20', '3:0', '4:10']);
  });

  it('never has more than `limit` calls in flight', async () => {
    let inFlight = 0;
    let peak = 0;
    await mapWithConcurrency(
      Array.from({ length: 25 }, (_, i) => i),
      4,
      async () => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await settle();
        inFlight--;
      },
    );
    expect(peak).toBe(4);
  });

  it('returns [] for no items, and works with a limit larger than the list', async () => {
    expect(await mapWithConcurrency([], 8, async () => 1)).toEqual([]);
    expect(await mapWithConcurrency([1, 2], 50, async (x) => x * 2)).toEqual([2, 4]);
  });

  it('stops starting work after a failure and rethrows it once the calls in flight settle', async () => {
    const started: number[] = [];
    const gate = deferred();
    let finishedAfterFailure = false;
    const run = mapWithConcurrency([0, 1, 2, 3, 4, 5], 2, async (i) => {
      started.push(i);
      if (i === 0) throw new Error('boom');
      await gate.promise;
      finishedAfterFailure = true;
    });
    await settle();
    gate.resolve();
    await expect(run).rejects.toThrow('boom');
    expect(started).toEqual([0, 1]);
    expect(finishedAfterFailure).toBe(true);
  });
});

describe('InFlightLimiter', () => {
  it('waits for a free slot before starting a task', async () => {
    const limiter = new InFlightLimiter(2);
    const gates = [deferred(), deferred(), deferred()];
    const started: number[] = [];
    await limiter.add(async () => {
      started.push(0);
      await gates[0]?.promise;
    });
    await limiter.add(async () => {
      started.push(1);
      await gates[1]?.promise;
    });
    const third = limiter.add(async () => {
      started.push(2);
      await gates[2]?.promise;
    });
    await settle();
    expect(started).toEqual([0, 1]);
    gates[1]?.resolve();
    await third;
    expect(started).toEqual([0, 1, 2]);
    gates[0]?.resolve();
    gates[2]?.resolve();
    await limiter.drain();
  });

  it('propagates a failure: drain rethrows it, and so does the next add', async () => {
    const limiter = new InFlightLimiter(3);
    await limiter.add(async () => {
      throw new Error('send failed');
    });
    await limiter.add(async () => undefined).catch(() => undefined);
    await expect(limiter.drain()).rejects.toThrow('send failed');
    await expect(limiter.add(async () => undefined)).rejects.toThrow('send failed');
  });

  it('rethrows a failure to an add waiting for a slot', async () => {
    const limiter = new InFlightLimiter(1);
    const gate = deferred();
    await limiter.add(async () => {
      await gate.promise;
      throw new Error('first failed');
    });
    let secondRan = false;
    const waiting = limiter.add(async () => {
      secondRan = true;
    });
    gate.resolve();
    await expect(waiting).rejects.toThrow('first failed');
    expect(secondRan).toBe(false);
  });
});

describe('isTransientAwsError', () => {
  it.each([
    ['ThrottlingException', awsError('ThrottlingException', 400)],
    ['SlowDown (S3 503)', awsError('SlowDown', 503)],
    ['ProvisionedThroughputExceededException', awsError('ProvisionedThroughputExceededException', 400)],
    ['any 5xx', awsError('SomethingOdd', 502)],
    ['429', awsError('TooMany', 429)],
    ['$retryable set by the SDK', awsError('Whatever', 400, 'x', true)],
    ['a socket reset (code)', Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })],
    ['a timeout', Object.assign(new Error('t'), { name: 'TimeoutError' })],
  ])('%s is transient', (_what, err) => {
    expect(isTransientAwsError(err)).toBe(true);
  });

  it.each([
    ['ValidationException', awsError('ValidationException', 400)],
    ['AccessDenied', awsError('AccessDenied', 403)],
    ['ConditionalCheckFailedException', awsError('ConditionalCheckFailedException', 400)],
    ['a plain Error', new Error('x')],
    ['a string', 'ThrottlingException'],
    ['null', null],
  ])('%s is not', (_what, err) => {
    expect(isTransientAwsError(err)).toBe(false);
  });
});

describe('callDependency', () => {
  it('returns the value of a call that succeeds', async () => {
    expect(await callDependency('S3 GetObject', async () => 42)).toBe(42);
  });

  it('wraps a transient failure in TransientDependencyError, keeping it as the cause', async () => {
    const cause = awsError('SlowDown', 503, 'Please reduce your request rate.');
    const err = await callDependency('S3 PutObject', async () => {
      throw cause;
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransientDependencyError);
    expect(err).toMatchObject({
      name: 'TransientDependencyError',
      message: 'S3 PutObject failed transiently: Please reduce your request rate.',
    });
    expect((err as Error).cause).toBe(cause);
  });

  it('rethrows any other failure unchanged', async () => {
    const cause = awsError('AccessDenied', 403);
    await expect(
      callDependency('S3 PutObject', async () => {
        throw cause;
      }),
    ).rejects.toBe(cause);
  });

  it('errorName and errorMessage describe anything thrown', () => {
    expect(errorName(new TransientDependencyError('x'))).toBe('TransientDependencyError');
    expect(errorName({ name: 'ThrottlingException' })).toBe('ThrottlingException');
    expect(errorName('boom')).toBe('Error');
    expect(errorMessage(new Error(''))).toBe('Error');
    expect(errorMessage(7)).toBe('7');
  });
});

describe('readEnv', () => {
  const schema = z.object({ BUCKET: required, SIZE: positiveInt });

  it('parses and coerces the variables', () => {
    expect(readEnv(schema, { BUCKET: 'b', SIZE: '10' })).toEqual({ BUCKET: 'b', SIZE: 10 });
  });

  it('throws ConfigurationError naming each bad variable', () => {
    let thrown: unknown;
    try {
      readEnv(schema, { SIZE: '-1' });
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ConfigurationError);
    expect((thrown as Error).message).toMatch(/^Invalid function environment: BUCKET: .*; SIZE: /);
  });
});
