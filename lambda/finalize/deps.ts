import type { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import type { S3Client } from '@aws-sdk/client-s3';
import type { FailureLaneSender } from '../shared/failure-lane';
import type { Ledger } from '../shared/ledger';
import type { ResultsPublisher } from '../shared/results-queue';
import type { RunState } from '../shared/run-state';

/** What Finalize talks to. */
export interface FinalizeDeps {
  s3: S3Client;
  events: Pick<EventBridgeClient, 'send'>;
  ledger: Ledger;
  runs: RunState;
  failureLane: Pick<FailureLaneSender, 'add' | 'flush'>;
  resultsPublisher?: Pick<ResultsPublisher, 'publish'> | undefined;
  outputBucket: string;
  eventBusName: string;
  /** How long Finalize's claims (repairs) hold, in ms. */
  leaseMs: number;
  now?: () => Date;
}
