import type { SQSClient } from '@aws-sdk/client-sqs';

/** An SQS client that accepts every SendMessageBatch and sends nothing: the failure lane as a no-op. */
export function noopSqs(): SQSClient {
  const client = { send: async () => ({ Failed: [], Successful: [] }) };
  return client as unknown as SQSClient;
}
