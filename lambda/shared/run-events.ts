import { PutEventsCommand, type EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { EVENT_SOURCE, RUN_COMPLETED, RUN_FAILED, RUN_UPDATED, type RunManifest } from './contracts';
import { callDependency, isTransientAwsError, TransientDependencyError } from './errors';

/** The `detail-type`s of the run events. */
export type RunEventType = typeof RUN_COMPLETED | typeof RUN_FAILED | typeof RUN_UPDATED;

/** The detail of a run event: the manifest's counts and where its files are. */
export function runEventDetail(manifest: RunManifest): Record<string, unknown> {
  return {
    runId: manifest.runId,
    revision: manifest.revision,
    status: manifest.status,
    mode: manifest.mode,
    counts: manifest.counts,
    tokens: manifest.tokens,
    corpus: manifest.corpus,
    manifest: `s3://${manifest.output.bucket}/${manifest.output.manifestKey}`,
    results: `s3://${manifest.output.bucket}/${manifest.output.resultsPrefix}`,
    failures: `s3://${manifest.output.bucket}/${manifest.output.failuresPrefix}`,
    ...(manifest.error ? { error: manifest.error } : {}),
  };
}

/**
 * Puts a run event on the pipeline's bus: `Corpus Run Completed` / `Corpus Run Failed` when Finalize writes the
 * manifest, `Corpus Run Updated` when a later revision changes it.
 * @throws TransientDependencyError when the entry was throttled or failed internally (worth another try)
 */
export async function putRunEvent(
  events: Pick<EventBridgeClient, 'send'>,
  eventBusName: string,
  manifest: RunManifest,
  detailType: RunEventType,
): Promise<void> {
  const out = await callDependency('EventBridge PutEvents', () =>
    events.send(
      new PutEventsCommand({
        Entries: [
          {
            EventBusName: eventBusName,
            Source: EVENT_SOURCE,
            DetailType: detailType,
            Detail: JSON.stringify(runEventDetail(manifest)),
          },
        ],
      }),
    ),
  );
  if (out.FailedEntryCount) {
    const entry = out.Entries?.[0];
    const message = `the run event was not accepted: ${entry?.ErrorCode}: ${entry?.ErrorMessage}`;
    if (entry?.ErrorCode === 'InternalFailure' || isTransientAwsError({ name: entry?.ErrorCode })) {
      throw new TransientDependencyError(message);
    }
    throw new Error(message);
  }
}
