import 'aws-sdk-client-mock-jest';
import { beforeEach } from '@jest/globals';
import { mockClient, type AwsClientStub } from 'aws-sdk-client-mock';

/** An AWS SDK client class (every instance is mocked) or one client instance (only it is mocked). */
export type MockTarget = Parameters<typeof mockClient>[0];

type ClientOf<T> = T extends { prototype: infer Instance } ? Instance : T;

/** The mocks of {@link useClientMocks}, one per target, in the targets' order. */
export type ClientMocks<T extends readonly MockTarget[]> = {
  -readonly [K in keyof T]: AwsClientStub<ClientOf<T[K]>>;
};

/**
 * Mocks each client's `send` for the calling test file and resets every mock before each test, ahead of the file's
 * own `beforeEach` hooks (so those can install fakes on a clean mock). Call it at the top level, before those hooks.
 * Importing this module also adds the aws-sdk-client-mock-jest matchers (`toHaveReceivedCommandWith`, ...).
 * @example const [s3Mock, sqsMock] = useClientMocks(S3Client, SQSClient);
 */
export function useClientMocks<const T extends readonly MockTarget[]>(...targets: T): ClientMocks<T> {
  const mocks = targets.map((target) => mockClient(target));
  beforeEach(() => {
    for (const mock of mocks) mock.reset();
  });
  return mocks as unknown as ClientMocks<T>;
}
