import * as fs from 'node:fs';
import * as path from 'node:path';
import { ArnFormat, Fn, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { acknowledge, acknowledgeWildcardResources } from './nag';
import { DEFINITION_FILE, PROJECT_ROOT } from './paths';

/** Thrown when the definition's `${Placeholders}` and the substitutions the construct supplies differ. */
export class DefinitionPlaceholderError extends Error {
  override readonly name = 'DefinitionPlaceholderError';
}

/** The `${Name}` placeholders of an ASL definition, unique and sorted. */
export function listDefinitionPlaceholders(definition: string): string[] {
  const names = new Set<string>();
  for (const match of definition.matchAll(/\$\{([A-Za-z0-9_]+)\}/g)) {
    names.add(match[1] as string);
  }
  return [...names].sort();
}

/**
 * The UUID at the end of the stack's id (`arn:aws:cloudformation:<region>:<account>:stack/<name>/<uuid>`), which
 * CloudFormation assigns anew each time the stack is created.
 */
export function stackUuid(stack: Stack): string {
  return Fn.select(2, Fn.split('/', stack.stackId));
}

/** The absolute path of the repository's workflow definition. */
export const DEFAULT_DEFINITION_PATH = path.join(PROJECT_ROOT, DEFINITION_FILE);

/** Properties of {@link PipelineWorkflow}. */
export interface PipelineWorkflowProps {
  /** The state machine's name (`CorpusPipeline-<env>`); explicit so its own ARN can be built without a cycle. */
  readonly stateMachineName: string;
  /** ARN of the Plan function (PlanFunctionArn). */
  readonly planFunctionArn: string;
  /** ARN of the ConverseBatch function (ConverseFunctionArn). */
  readonly converseFunctionArn: string;
  /** ARN of the Finalize function (FinalizeFunctionArn). */
  readonly finalizeFunctionArn: string;
  /** ARN of the batch mode SubmitJob function (SubmitJobFunctionArn). */
  readonly submitJobFunctionArn: string;
  /** ARN of the batch mode Collect function (CollectFunctionArn). */
  readonly collectFunctionArn: string;
  /** ARN of the batch mode ConverseItems function (ConverseItemsFunctionArn). */
  readonly converseItemsFunctionArn: string;
  /** The output bucket: items files are read from it, Distributed Map results written to it (OutputBucketName). */
  readonly outputBucket: s3.IBucket;
  /**
   * The JSONPath ASL definition with `${Placeholders}`.
   * @default the repository's statemachine/pipeline.asl.json
   */
  readonly definitionPath?: string;
  /**
   * Retention of the execution log group.
   * @default RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * Customer managed key for the execution log group.
   * @default CloudWatch Logs default encryption
   */
  readonly logEncryptionKey?: kms.IKey;
  /**
   * Whether execution logs carry state input and output. Off by default: Distributed Map child executions receive
   * the corpus records themselves (ItemBatcher batches), so execution data would copy the corpus (possibly
   * personal data) into CloudWatch Logs and, at millions of records, cost more than the model calls; the run's
   * manifest and failure files in S3 are the record of what happened.
   * @default false
   */
  readonly includeExecutionData?: boolean;
  /**
   * What happens to the log group on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The pipeline workflow: a STANDARD state machine from the JSONPath ASL file, with its placeholders substituted by
 * CloudFormation (`DefinitionString` + `DefinitionSubstitutions`, so the template holds the definition for the local
 * runtime and the tests), logging ALL events, X-Ray tracing, and the permissions its Distributed Map needs to run
 * child executions of itself.
 */
export class PipelineWorkflow extends Construct {
  /** The state machine. */
  public readonly stateMachine: sfn.StateMachine;
  /** Its execution log group. */
  public readonly logGroup: logs.LogGroup;
  /** The substitutions applied to the definition's placeholders. */
  public readonly definitionSubstitutions: Readonly<Record<string, string>>;
  /** The state machine's ARN, built from its name: usable by functions the definition itself references. */
  public readonly stateMachineArnFromName: string;

  constructor(scope: Construct, id: string, props: PipelineWorkflowProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const definitionPath = props.definitionPath ?? DEFAULT_DEFINITION_PATH;
    const definition = fs.readFileSync(definitionPath, 'utf8');
    this.definitionSubstitutions = {
      PlanFunctionArn: props.planFunctionArn,
      ConverseFunctionArn: props.converseFunctionArn,
      FinalizeFunctionArn: props.finalizeFunctionArn,
      SubmitJobFunctionArn: props.submitJobFunctionArn,
      CollectFunctionArn: props.collectFunctionArn,
      ConverseItemsFunctionArn: props.converseItemsFunctionArn,
      OutputBucketName: props.outputBucket.bucketName,
    };
    const placeholders = listDefinitionPlaceholders(definition);
    const supplied = Object.keys(this.definitionSubstitutions).sort();
    if (placeholders.join() !== supplied.join()) {
      throw new DefinitionPlaceholderError(
        `${definitionPath} has placeholders [${placeholders.join(', ')}] but the workflow supplies ` +
          `[${supplied.join(', ')}]`,
      );
    }

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      // The vendedlogs prefix keeps Step Functions' log-delivery resource policy from growing per log group. The
      // name ends with the stack id's UUID, new on every create: a retained group outlives a deleted stack, and a
      // fixed name would make creating the same stack again fail on the group that is still there.
      logGroupName: `/aws/vendedlogs/states/${props.stateMachineName}-${stackUuid(stack)}`,
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      ...(props.logEncryptionKey ? { encryptionKey: props.logEncryptionKey } : {}),
    });

    // fromString, not fromFile: fromFile uploads the file as an asset (DefinitionS3Location), which leaves the
    // definition out of the template the local runtime and the tests read.
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      stateMachineName: props.stateMachineName,
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromString(definition),
      definitionSubstitutions: { ...this.definitionSubstitutions },
      tracingEnabled: true,
      logs: {
        destination: this.logGroup,
        level: sfn.LogLevel.ALL,
        includeExecutionData: props.includeExecutionData ?? false,
      },
    });

    // The Distributed Map starts child executions of this same state machine and watches and stops them. The ARNs
    // come from the explicit name: referencing stateMachine.stateMachineArn from its own role's policy is a cycle.
    const arn = (resource: string, resourceName: string): string =>
      stack.formatArn({
        service: 'states',
        resource,
        resourceName,
        arnFormat: ArnFormat.COLON_RESOURCE_NAME,
      });
    const name = props.stateMachineName;
    const ownArn = arn('stateMachine', name);
    this.stateMachineArnFromName = ownArn;
    const executionArns = [
      arn('execution', `${name}:*`),
      arn('execution', `${name}/*`),
      arn('express', `${name}:*`),
      arn('express', `${name}/*`),
    ];
    const mapRunExecutions = arn('execution', `${name}/*:*`);
    const role = this.stateMachine.role;
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['states:StartExecution'], resources: [ownArn] }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['states:DescribeExecution', 'states:StopExecution'],
        resources: executionArns,
      }),
    );
    // Lets an operator redrive a failed map run's child executions (RedriveExecution on the parent).
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['states:RedriveExecution'], resources: [mapRunExecutions] }),
    );
    acknowledgeWildcardResources(
      this.stateMachine,
      [...executionArns, mapRunExecutions],
      'Distributed Map child executions are named by Step Functions at run time; the wildcard covers only this ' +
        "state machine's own executions (standard and express, top-level and map-run children).",
    );
    acknowledge(
      role,
      ['AwsSolutions-IAM5[Resource::*]'],
      'Resource "*" is required by two services that support no resource-level permissions: CloudWatch Logs ' +
        'log delivery for Step Functions (logs:CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, ' +
        'DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, DescribeLogGroups) ' +
        'and X-Ray tracing (xray:PutTraceSegments, PutTelemetryRecords, GetSamplingRules, GetSamplingTargets).',
    );
  }

  /**
   * Lets `grantee` end or keep alive this workflow's `.waitForTaskToken` waits (states:SendTaskSuccess and
   * SendTaskHeartbeat on the state machine). The ARN comes from the name: the functions granted
   * here are referenced by the definition, so the state machine's own ARN attribute would make a cycle.
   */
  public grantTaskResponse(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['states:SendTaskSuccess', 'states:SendTaskHeartbeat'],
      resourceArns: [this.stateMachineArnFromName],
    });
  }
}
