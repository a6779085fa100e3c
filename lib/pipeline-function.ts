import { ENTRY_METADATA_KEY } from '../lambda/shared/contracts/names';
import * as path from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { acknowledge, acknowledgeWildcardResources } from './nag';
import { PROJECT_ROOT } from './paths';

/** CloudFormation metadata key on each AWS::Lambda::Function: the handler's repo-relative entry file. */
export { ENTRY_METADATA_KEY };

/** The CloudWatch metrics namespace of every pipeline function. */
export const METRICS_NAMESPACE = 'CorpusPipeline';

/** Properties of {@link PipelineFunction}. */
export interface PipelineFunctionProps {
  /** The handler's entry file relative to the project root (`lambda/plan.ts`); it must export `handler`. */
  readonly entry: string;
  /** Powertools service name (POWERTOOLS_SERVICE_NAME), also used in logs and metrics dimensions. */
  readonly serviceName: string;
  /**
   * What the function does.
   * @default no description
   */
  readonly description?: string;
  /**
   * The function timeout.
   * @default Duration.seconds(60)
   */
  readonly timeout?: Duration;
  /**
   * Memory in MB (CPU scales with it).
   * @default 512
   */
  readonly memorySize?: number;
  /**
   * Environment variables, added to the Powertools and Node.js ones.
   * @default none
   */
  readonly environment?: Record<string, string>;
  /**
   * Powertools metrics namespace (POWERTOOLS_METRICS_NAMESPACE).
   * @default 'CorpusPipeline'
   */
  readonly metricsNamespace?: string;
  /**
   * Retention of the function's log group.
   * @default RetentionDays.ONE_MONTH
   */
  readonly logRetention?: logs.RetentionDays;
  /**
   * Customer managed key for the log group.
   * @default CloudWatch Logs default encryption
   */
  readonly logEncryptionKey?: kms.IKey;
  /**
   * What happens to the log group on stack deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Record an X-Ray subsegment per AWS SDK call (Powertools Tracer). Lambda active tracing records the function's own
   * segment either way. Loading the X-Ray SDK hooks every promise of the process (bench/README.md: Collect ran 2.8
   * times slower), so it is off unless asked for.
   * @default false
   */
  readonly sdkTracing?: boolean;
  /**
   * The directory `entry` is relative to; it holds package-lock.json.
   * @default the repository root
   */
  readonly projectRoot?: string;
}

/**
 * One pipeline Lambda function: Node.js 22 on arm64, bundled by the local esbuild with every dependency inside
 * (AWS SDK v3 included, so its version is the one the tests ran), X-Ray active tracing, its own log group and its
 * own role, so its policy holds only what the stack grants it. The entry file is recorded in the CloudFormation
 * metadata (`corpus:entry`) for the local runtime, which runs the TypeScript source directly.
 */
export class PipelineFunction extends Construct implements iam.IGrantable {
  /** The Lambda function. */
  public readonly lambdaFunction: nodejs.NodejsFunction;
  /** Its execution role. */
  public readonly role: iam.Role;
  /** Its log group. */
  public readonly logGroup: logs.LogGroup;
  /** The repo-relative entry file. */
  public readonly entry: string;
  /** Its POWERTOOLS_SERVICE_NAME (the metrics' service dimension). */
  public readonly serviceName: string;
  /** The principal grants apply to (the execution role). */
  public readonly grantPrincipal: iam.IPrincipal;

  constructor(scope: Construct, id: string, props: PipelineFunctionProps) {
    super(scope, id);
    const projectRoot = props.projectRoot ?? PROJECT_ROOT;
    this.entry = props.entry;
    this.serviceName = props.serviceName;

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      ...(props.logEncryptionKey ? { encryptionKey: props.logEncryptionKey } : {}),
    });
    // An explicit role instead of the default one, which would carry the AWS managed AWSLambdaBasicExecutionRole
    // (logs:* on every log group); this one may only write to its own log group.
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Execution role of ${props.serviceName}`,
    });
    this.logGroup.grantWrite(this.role);
    this.grantPrincipal = this.role;

    this.lambdaFunction = new nodejs.NodejsFunction(this, 'Function', {
      entry: path.join(projectRoot, props.entry),
      handler: 'handler',
      projectRoot,
      depsLockFilePath: path.join(projectRoot, 'package-lock.json'),
      runtime: lambda.Runtime.NODEJS_22_X,
      architecture: lambda.Architecture.ARM_64,
      timeout: props.timeout ?? Duration.seconds(60),
      memorySize: props.memorySize ?? 512,
      ...(props.description ? { description: props.description } : {}),
      role: this.role,
      logGroup: this.logGroup,
      tracing: lambda.Tracing.ACTIVE,
      environment: {
        POWERTOOLS_SERVICE_NAME: props.serviceName,
        POWERTOOLS_METRICS_NAMESPACE: props.metricsNamespace ?? METRICS_NAMESPACE,
        NODE_OPTIONS: '--enable-source-maps',
        POWERTOOLS_TRACE_ENABLED: String(props.sdkTracing ?? false),
        ...props.environment,
      },
      bundling: {
        minify: true,
        sourceMap: true,
        sourcesContent: false,
        target: 'node22',
        format: nodejs.OutputFormat.CJS,
        // ESM builds first: they tree-shake (zod's locales, the SDK's unused paths), keeping bundles under 1 MB.
        mainFields: ['module', 'main'],
        // Bundle everything, the AWS SDK v3 clients included: the deployed code runs the versions the tests ran,
        // not whatever the Lambda runtime ships.
        externalModules: [],
        // Never fall back to Docker (none here): esbuild comes from node_modules.
        forceDockerBundling: false,
      },
    });
    const cfnFunction = this.lambdaFunction.node.defaultChild as lambda.CfnFunction;
    cfnFunction.addMetadata(ENTRY_METADATA_KEY, props.entry);

    acknowledge(
      this.role,
      ['AwsSolutions-IAM5[Resource::*]'],
      'Active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level permissions, ' +
        'so X-Ray only accepts Resource "*" for them.',
    );
    acknowledge(
      this.lambdaFunction,
      ['AwsSolutions-L1'],
      'Pinned to nodejs22.x on purpose: the bundle targets node22 and the handlers are tested on Node 22; moving ' +
        'to a newer runtime is a deliberate change with its own test run, not an automatic one.',
    );
  }

  /** The function's ARN. */
  public get functionArn(): string {
    return this.lambdaFunction.functionArn;
  }

  /** Lets `grantee` invoke the function, and its versions and aliases (what CDK's grantInvoke grants). */
  public grantInvoke(grantee: iam.IGrantable): iam.Grant {
    const grant = this.lambdaFunction.grantInvoke(grantee);
    acknowledgeWildcardResources(
      grantee,
      [`${this.lambdaFunction.functionArn}:*`],
      'lambda:InvokeFunction on this one function and its versions/aliases (`<arn>:*`), so pointing the workflow ' +
        'at a published version or alias needs no policy change.',
    );
    return grant;
  }
}
