/**
 * The Powertools metrics the handlers emit, by name (namespace `METRICS_NAMESPACE`, dimension `service` = the
 * emitting function's POWERTOOLS_SERVICE_NAME). The dashboard and alarms (lib/monitoring/) read them by the same names.
 */
export const PIPELINE_METRICS = {
  /** Records published (ConverseBatch, Collect). Count. */
  recordsSucceeded: 'RecordsSucceeded',
  /** Records that failed for good in this run (ConverseBatch, Collect). Count. */
  recordsFailed: 'RecordsFailed',
  /** Records handed to the failure queue for a later retry (ConverseBatch). Count. */
  recordsQueued: 'RecordsQueued',
  /** Records a batch job left without output, re-driven through Converse (Collect). Count. */
  recordsMissing: 'RecordsMissing',
  /** Model input tokens (ConverseBatch, Collect). Count. */
  inputTokens: 'InputTokens',
  /** Model output tokens (ConverseBatch, Collect). Count. */
  outputTokens: 'OutputTokens',
  /** Converse calls answered with throttling (ConverseBatch). Count. */
  throttles: 'Throttles',
  /** Records gathered for Converse after the batch jobs (ConverseItems). Count. */
  converseItems: 'ConverseItems',
  /** CreateModelInvocationJob answered ServiceQuotaExceeded; the shard backs off and retries (SubmitJob). Count. */
  batchQuotaBusy: 'BatchQuotaBusy',
  /** Batch jobs created (SubmitJob). Count. */
  batchJobsSubmitted: 'BatchJobsSubmitted',
  /** A retried submit found its job already created (SubmitJob). Count. */
  batchJobsFoundExisting: 'BatchJobsFoundExisting',
  /** Shard waits resumed by a job state-change event (JobState). Count. */
  batchJobsResumed: 'BatchJobsResumed',
  /** Batch jobs whose wait is open, per reconciler pass (Reconcile). Count. */
  batchJobsInFlight: 'BatchJobsInFlight',
  /** Shard waits the reconciler resumed (Reconcile). Count. */
  batchJobsResumedByReconciler: 'BatchJobsResumedByReconciler',
  /** Jobs the reconciler gave up on (Reconcile). Count. */
  batchJobsAbandoned: 'BatchJobsAbandoned',
  /** Jobs the reconciler could not check this pass (Reconcile). Count. */
  batchJobReconcileErrors: 'BatchJobReconcileErrors',
  /** Age of the oldest batch job whose wait is open, 0 when none, per reconciler pass (Reconcile). Seconds. */
  oldestJobInFlightSeconds: 'OldestJobInFlightSeconds',
  /** Submit to end of one batch job, when its wait is resumed (JobState, Reconcile). Seconds. */
  batchJobDurationSeconds: 'BatchJobDurationSeconds',
  /** Corpus lines read (Plan). Count. */
  corpusLines: 'CorpusLines',
  /** Bad corpus lines (Plan). Count. */
  invalidLines: 'InvalidLines',
  /** Records the ledger already held (Plan). Count. */
  recordsSkipped: 'RecordsSkipped',
  /** Runs finalized as SUCCEEDED / FAILED (Finalize). Count. */
  runsSucceeded: 'RunsSucceeded',
  runsFailed: 'RunsFailed',
  /** Failure-lane retries that published the record (failure-lane consumer). Count. */
  laneRecordsPublished: 'LaneRecordsPublished',
  /** Failure-lane records that failed for good (failure-lane consumer). Count. */
  laneRecordsFailed: 'LaneRecordsFailed',
  /** Failure-lane records the ledger already held (failure-lane consumer). Count. */
  laneRecordsSkipped: 'LaneRecordsSkipped',
  /** Failure-lane messages whose record a run had already settled (failure-lane consumer). Count. */
  laneAlreadySettled: 'LaneAlreadySettled',
  /** Failure-lane records moved to the DLQ (failure-lane consumer). Count. */
  laneDeadLettered: 'LaneDeadLettered',
  /** Failure-lane messages left for a later receive (failure-lane consumer). Count. */
  laneRetryLater: 'LaneRetryLater',
} as const;

/** One of the pipeline's metric names. */
export type PipelineMetricName = (typeof PIPELINE_METRICS)[keyof typeof PIPELINE_METRICS];
