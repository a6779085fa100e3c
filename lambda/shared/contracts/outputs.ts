/**
 * The stack's CloudFormation outputs, by key: lib/pipeline-stack.ts declares them, the CLI reads them from
 * DescribeStacks and the local runtime from the synthesized template.
 */
export const STACK_OUTPUTS = {
  ingestBucket: 'IngestBucketName',
  ingestPrefix: 'IngestPrefix',
  outputBucket: 'OutputBucketName',
  stateMachineArn: 'StateMachineArn',
  workflowLogGroup: 'WorkflowLogGroupName',
  ledgerTable: 'LedgerTableName',
  runsTable: 'RunsTableName',
  idempotencyTable: 'IdempotencyTableName',
  failureQueueUrl: 'FailureQueueUrl',
  failureDlqUrl: 'FailureDlqUrl',
  eventBus: 'EventBusName',
  jobsTable: 'JobsTableName',
  batchServiceRole: 'BatchServiceRoleArn',
  reconcileFunction: 'ReconcileFunctionName',
  alarmTopic: 'AlarmTopicArn',
  /** Only when the environment turns the results queue on. */
  resultsQueueUrl: 'ResultsQueueUrl',
} as const;

/** One of the stack's output keys. */
export type StackOutputKey = (typeof STACK_OUTPUTS)[keyof typeof STACK_OUTPUTS];
