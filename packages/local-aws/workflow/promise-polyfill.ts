/**
 * `Promise.withResolvers` for Node 20.
 *
 * aws-local-stepfunctions 3.0.0 calls it in every Task state (it declares Node >= 22); importing
 * this module before an execution runs makes the library work on Node 20.
 */

interface Resolvers<T> {
  promise: Promise<T>;
  resolve: (value: T | PromiseLike<T>) => void;
  reject: (reason?: unknown) => void;
}

type PromiseWithResolversCtor = PromiseConstructor & { withResolvers?: <T>() => Resolvers<T> };

/** Installs `Promise.withResolvers` when the runtime lacks it; returns true when it installed it. */
export function installPromiseWithResolvers(): boolean {
  const ctor = Promise as PromiseWithResolversCtor;
  if (typeof ctor.withResolvers === 'function') return false;
  Object.defineProperty(ctor, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers<T>(): Resolvers<T> {
      let resolve!: Resolvers<T>['resolve'];
      let reject!: Resolvers<T>['reject'];
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
  return true;
}

installPromiseWithResolvers();
