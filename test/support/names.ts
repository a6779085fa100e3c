// The resource names the unit tests' Lambda environment carries (test/setup/lambda-env.ts sets each under its own
// variable name): suites import them from here rather than repeat the strings.

/** OUTPUT_BUCKET: the pipeline's output bucket. */
export const OUTPUT_BUCKET = 'output-bucket';
/** INGEST_BUCKET: the bucket corpora are read from. */
export const INGEST_BUCKET = 'ingest-bucket';
/** INGEST_PREFIX: the key prefix a corpus must be under. */
export const INGEST_PREFIX = 'corpora/';
/** LEDGER_TABLE: the per-record ledger. */
export const LEDGER_TABLE = 'ledger-table';
/** IDEMPOTENCY_TABLE: Powertools idempotency records. */
export const IDEMPOTENCY_TABLE = 'idempotency-table';
/** RUNS_TABLE: one item per run. */
export const RUNS_TABLE = 'runs-table';
/** JOBS_TABLE: the batch inference jobs (batch mode). */
export const JOBS_TABLE = 'jobs-table';
/** FAILURE_QUEUE_URL: the failure lane. */
export const FAILURE_QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures';
/** FAILURE_DLQ_URL: the failure lane's dead-letter queue. */
export const FAILURE_DLQ_URL = 'https://sqs.us-east-1.amazonaws.com/123456789012/failures-dlq';
/** EVENT_BUS_NAME: where run events go. */
export const EVENT_BUS_NAME = 'corpus-bus';
/** MODEL_ID: the model the handlers call. */
export const MODEL_ID = 'us.amazon.nova-lite-v1:0';
/** LEDGER_SCOPE: the ledger's scope (environment and model). */
export const LEDGER_SCOPE = 'test/us.amazon.nova-lite-v1:0';
/** BATCH_ROLE_ARN: the role Bedrock batch jobs run as. */
export const BATCH_ROLE_ARN = 'arn:aws:iam::123456789012:role/corpus-batch';
/** BATCH_JOB_NAME_PREFIX: the prefix of batch job names. */
export const BATCH_JOB_NAME_PREFIX = 'corpus-test';
