import { BedrockClient } from '@aws-sdk/client-bedrock';
import { CloudFormationClient, DescribeStacksCommand, type Stack } from '@aws-sdk/client-cloudformation';
import { GetAccountSettingsCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import {
  LAMBDA_MAX_MEMORY_MB,
  NEW_ACCOUNT_MAX_MEMORY_MB,
  runLambdaConcurrency,
  type PipelineConfig,
} from '../lib/config';
import {
  BATCH_QUOTA_KEYS,
  BatchQuotaCache,
  BYTES_PER_QUOTA_GB,
  readBatchQuotas,
  type BatchQuotaKey,
} from '../lambda/batch/quotas';
import { pipelineName } from '../lambda/shared/contracts';
import { discoverStack } from './aws-backend';
import { result, type CheckResult } from './doctor-report';
import { describeError } from './errors';
import * as fmt from './format';
import {
  bedrockModelCheck,
  catalogLookupFor,
  MODEL_CHECK_ACTIONS,
  type CatalogLookup,
  type ModelCheck,
  type ModelFacts,
} from './model-check';

/**
 * `corpus doctor --env E`: what a first deploy and a first run of an environment would meet on its account, checked
 * with read-only calls before anything is deployed (and again after): credentials and Region, the CDK bootstrap, the
 * model's lifecycle and access, batch support and quotas, the account's Lambda limits against the settings, and the
 * stack once it exists.
 */

/** The AWS clients the checks use; tests pass mocked ones. */
export interface DoctorAwsClients {
  readonly sts: STSClient;
  readonly cloudFormation: CloudFormationClient;
  readonly bedrock: BedrockClient;
  readonly serviceQuotas: ServiceQuotasClient;
  readonly lambda: LambdaClient;
}

/** What the AWS checks run with besides the environment's settings. */
export interface AwsDoctorDeps {
  /** Clients to use instead of new ones in the environment's Region with the default credential chain. */
  readonly clients?: Partial<DoctorAwsClients>;
  /** The model check. @default {@link bedrockModelCheck} with `catalog` */
  readonly modelCheck?: ModelCheck;
  /** Catalog facts Bedrock's API does not answer (batch support). @default the model catalog in the environment's Region */
  readonly catalog?: CatalogLookup;
  /** Epoch milliseconds. @default Date.now */
  readonly now?: () => number;
}

/** The CDK bootstrap stack's default name (`cdk bootstrap` without `--toolkit-stack-name`). */
export const CDK_TOOLKIT_STACK = 'CDKToolkit';

/**
 * The bootstrap version the synthesized stack requires (its assets and the `CheckBootstrapVersion` rule:
 * `requiresBootstrapStackVersion` in the cloud assembly's manifest; a unit test keeps the two equal).
 */
export const CDK_REQUIRED_BOOTSTRAP_VERSION = 6;

/** The version of the bootstrap template this project's CDK CLI (aws-cdk) deploys (a unit test keeps it current). */
export const CDK_BOOTSTRAP_TEMPLATE_VERSION = 33;

/**
 * An account concurrency below the documented default (1,000) is the one sign of a new account's reduced quotas an
 * API shows: the memory quota is not readable at all.
 */
const DEFAULT_ACCOUNT_CONCURRENCY = 1_000;

const LAMBDA_QUOTAS_PAGE = 'https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html';
const MODEL_ACCESS_PAGE = 'https://docs.aws.amazon.com/bedrock/latest/userguide/model-access.html';

/** Runs every AWS check of an environment, in order; later checks are skipped when there are no credentials. */
export async function runAwsDoctor(config: PipelineConfig, deps: AwsDoctorDeps = {}): Promise<CheckResult[]> {
  const region = config.region;
  const clients: DoctorAwsClients = {
    sts: deps.clients?.sts ?? new STSClient({ region }),
    cloudFormation: deps.clients?.cloudFormation ?? new CloudFormationClient({ region }),
    bedrock: deps.clients?.bedrock ?? new BedrockClient({ region }),
    serviceQuotas: deps.clients?.serviceQuotas ?? new ServiceQuotasClient({ region }),
    lambda: deps.clients?.lambda ?? new LambdaClient({ region }),
  };
  const now = deps.now ?? Date.now;
  const identity = await checkCredentials(clients.sts, config);
  if (!identity.accountId) {
    const skipped = (id: string, title: string): CheckResult =>
      result(id, title, 'skip', 'not checked: it needs working credentials (see above)');
    return [
      identity.result,
      skipped('bootstrap', 'CDK bootstrap'),
      skipped('model', 'Model'),
      skipped('batch', 'Batch inference'),
      skipped('lambda', 'Lambda limits'),
      skipped('stack', 'Stack'),
    ];
  }
  const modelCheck =
    deps.modelCheck ?? bedrockModelCheck(clients.bedrock, deps.catalog ?? catalogLookupFor(region));
  const facts = await modelCheck.check(config.modelId).catch((error: unknown) => error);
  return [
    identity.result,
    await checkBootstrap(clients.cloudFormation, identity.accountId, region),
    modelResult(facts, config, now()),
    await checkBatch(clients.serviceQuotas, config, isFacts(facts) ? facts : undefined),
    await checkLambdaLimits(clients.lambda, config),
    await checkStack(clients.cloudFormation, config),
  ];
}

/** STS GetCallerIdentity: the account the credentials belong to, against the environment's `account`. */
export async function checkCredentials(
  sts: STSClient,
  config: PipelineConfig,
): Promise<{ result: CheckResult; accountId?: string }> {
  const title = 'Credentials and Region';
  try {
    const who = await sts.send(new GetCallerIdentityCommand({}));
    const accountId = who.Account ?? '';
    if (config.account && config.account !== accountId) {
      return {
        result: result(
          'credentials',
          title,
          'fail',
          `the credentials are for account ${accountId}; environment ${config.envName} deploys to ${config.account}`,
          {
            details: [`identity ${who.Arn ?? '?'}, Region ${config.region}`],
            fix: [
              `use credentials for account ${config.account} (AWS_PROFILE=<profile of that account>, or aws sso login --profile <it>)`,
              `or change (or remove) "account" of environments.${config.envName} in cdk.json`,
            ],
          },
        ),
      };
    }
    return {
      accountId,
      result: result('credentials', title, 'pass', `account ${accountId}, Region ${config.region}`, {
        details: [
          `identity ${who.Arn ?? '?'}`,
          ...(config.account ? [] : ['the environment names no account: the deploy goes to this one']),
        ],
      }),
    };
  } catch (error) {
    return {
      result: result(
        'credentials',
        title,
        'fail',
        `no usable AWS credentials (${errorName(error)}: ${describeError(error)})`,
        {
          details: [`Region ${config.region} (environments.${config.envName}.region in cdk.json)`],
          fix: [
            'configure credentials the AWS SDK finds: aws configure, or aws sso login --profile P and AWS_PROFILE=P, or the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN variables',
            'then check them: aws sts get-caller-identity',
          ],
        },
      ),
    };
  }
}

/** CloudFormation DescribeStacks on CDKToolkit: bootstrapped, healthy, and recent enough for this app. */
export async function checkBootstrap(
  cfn: CloudFormationClient,
  accountId: string,
  region: string,
): Promise<CheckResult> {
  const title = 'CDK bootstrap';
  const bootstrap = `npx cdk bootstrap aws://${accountId}/${region}`;
  let stack: Stack | undefined;
  try {
    stack = (await cfn.send(new DescribeStacksCommand({ StackName: CDK_TOOLKIT_STACK }))).Stacks?.[0];
  } catch (error) {
    if (!isMissingStack(error)) {
      return result(
        'bootstrap',
        title,
        'skip',
        `could not read stack ${CDK_TOOLKIT_STACK} (${errorName(error)}: ${describeError(error)})`,
        {
          fix: ['the checking identity needs cloudformation:DescribeStacks'],
        },
      );
    }
  }
  if (!stack) {
    return result(
      'bootstrap',
      title,
      'fail',
      `${accountId}/${region} is not bootstrapped (no stack ${CDK_TOOLKIT_STACK})`,
      {
        details: [
          'cdk deploy uploads the function bundles to the bootstrap bucket and deploys with its roles',
        ],
        fix: [bootstrap],
      },
    );
  }
  const status = stack.StackStatus ?? 'UNKNOWN';
  const version = Number(stack.Outputs?.find((o) => o.OutputKey === 'BootstrapVersion')?.OutputValue);
  if (/_IN_PROGRESS$/.test(status)) {
    return result('bootstrap', title, 'warn', `stack ${CDK_TOOLKIT_STACK} is ${status}`, {
      fix: ['wait for it to finish, then run corpus doctor again'],
    });
  }
  // UPDATE_ROLLBACK_COMPLETE: the last update failed, the version before it is in place and serves.
  if (
    !['CREATE_COMPLETE', 'UPDATE_COMPLETE', 'IMPORT_COMPLETE', 'UPDATE_ROLLBACK_COMPLETE'].includes(status)
  ) {
    return result('bootstrap', title, 'fail', `stack ${CDK_TOOLKIT_STACK} is ${status}`, {
      fix: [
        `see why: aws cloudformation describe-stack-events --stack-name ${CDK_TOOLKIT_STACK} --region ${region}`,
        `then bootstrap again (delete a ROLLBACK_COMPLETE stack first): ${bootstrap}`,
      ],
    });
  }
  if (!Number.isFinite(version) || version < CDK_REQUIRED_BOOTSTRAP_VERSION) {
    return result(
      'bootstrap',
      title,
      'fail',
      `bootstrap version ${Number.isFinite(version) ? version : 'unknown'}: this app needs ${CDK_REQUIRED_BOOTSTRAP_VERSION} or later`,
      { fix: [`upgrade it: ${bootstrap}`] },
    );
  }
  if (version < CDK_BOOTSTRAP_TEMPLATE_VERSION) {
    return result(
      'bootstrap',
      title,
      'warn',
      `bootstrap version ${version} (${status}): enough for this app`,
      {
        details: [`this project's CDK CLI bootstraps version ${CDK_BOOTSTRAP_TEMPLATE_VERSION}`],
        fix: [`optional upgrade: ${bootstrap}`],
      },
    );
  }
  return result('bootstrap', title, 'pass', `bootstrap version ${version} (${status})`);
}

/** The model check's facts as a result, with the fix for each way access can be missing. */
export function modelResult(facts: ModelFacts | unknown, config: PipelineConfig, nowMs: number): CheckResult {
  const title = 'Model';
  if (!isFacts(facts)) {
    return result(
      'model',
      title,
      'skip',
      `could not check ${config.modelId} (${errorName(facts)}: ${describeError(facts)})`,
    );
  }
  const id = facts.modelId;
  const where = `${id} in ${config.region}`;
  const details = [
    facts.lifecycle.detail,
    ...(facts.profile
      ? [`inference profile ${facts.profile.status}, routes to ${facts.profile.regions.join(', ') || '?'}`]
      : []),
    facts.access.detail,
  ];
  const changeModel = `choose another model: modelId of environments.${config.envName} in cdk.json (a cross-Region inference profile id such as us.${facts.foundationModelId} reaches Regions that offer it)`;
  if (facts.lifecycle.status === 'NOT_FOUND') {
    return result('model', title, 'fail', `${where}: Bedrock does not offer it here`, {
      details,
      fix: [changeModel],
    });
  }
  const endOfLife = facts.lifecycle.endOfLife;
  if (endOfLife && endOfLife.getTime() <= nowMs) {
    return result('model', title, 'fail', `${where}: reached its end of life on ${day(endOfLife)}`, {
      details,
      fix: [changeModel],
    });
  }
  const access = accessVerdict(facts, config);
  if (access) return { ...access, details: [...details, ...(access.details ?? [])] };
  if (facts.lifecycle.status === 'LEGACY') {
    return result(
      'model',
      title,
      'warn',
      `${where}: Legacy${facts.lifecycle.legacySince ? ` since ${day(facts.lifecycle.legacySince)}` : ''}${
        endOfLife ? `, end of life on ${day(endOfLife)}` : ''
      }; access granted`,
      { details, fix: [`plan the move before the end of life: ${changeModel}`] },
    );
  }
  if (facts.lifecycle.status === 'UNKNOWN') {
    return result('model', title, 'warn', `${where}: access granted; its lifecycle could not be read`, {
      details,
      fix: [`the checking identity needs ${MODEL_CHECK_ACTIONS.join(', ')}`],
    });
  }
  return result('model', title, 'pass', `${where}: Active, access granted`, { details });
}

/** The result when the model's access is not simply granted; undefined when it is. */
function accessVerdict(facts: ModelFacts, config: PipelineConfig): CheckResult | undefined {
  const title = 'Model';
  const where = `${facts.modelId} in ${config.region}`;
  const marketplace =
    'aws-marketplace:Subscribe, aws-marketplace:Unsubscribe and aws-marketplace:ViewSubscriptions, and the account ' +
    'a valid payment method';
  switch (facts.access.status) {
    case 'AVAILABLE':
      return undefined;
    case 'PENDING':
      return result('model', title, 'warn', `${where}: the model's subscription is being set up`, {
        fix: [`wait up to 15 minutes and run corpus doctor again (${MODEL_ACCESS_PAGE})`],
      });
    case 'NEEDS_AGREEMENT':
      return result(
        'model',
        title,
        'fail',
        `${where}: no agreement for the model (its AWS Marketplace subscription is missing or failed)`,
        {
          details: [
            "the pipeline's roles carry no Marketplace permissions: the subscription must exist before the first run",
          ],
          fix: [
            `subscribe once as an identity with ${marketplace}: open the model in the Bedrock console (Model catalog, or Model access where the console still has it) and run it in the playground, or invoke it once with the AWS CLI`,
            `the subscription takes up to 15 minutes; ${MODEL_ACCESS_PAGE}`,
          ],
        },
      );
    case 'USE_CASE_MISSING':
      return result(
        'model',
        title,
        'fail',
        `${where}: Anthropic's first-time use form has not been submitted for this account`,
        {
          fix: [
            'submit the use case details once per account (or for the organization from its management account): Bedrock console, Model catalog, an Anthropic model, and the form it asks for',
            'or with the AWS CLI: aws bedrock put-use-case-for-model-access --form-data <base64 of the form JSON>',
            `access follows within about 15 minutes; ${MODEL_ACCESS_PAGE}`,
          ],
        },
      );
    case 'NOT_AUTHORIZED':
      return result('model', title, 'fail', `${where}: the account is not authorized to use the model`, {
        fix: [
          'an IAM policy or a service control policy denies the model: lift the deny for this model (bedrock:InvokeModel on its ARN)',
          MODEL_ACCESS_PAGE,
        ],
      });
    case 'NOT_IN_REGION':
      return result('model', title, 'fail', `${where}: the model is not offered in this Region`, {
        fix: [
          `choose a Region that offers it, or its cross-Region inference profile (modelId us.${facts.foundationModelId} or the like), in cdk.json`,
        ],
      });
    case 'UNKNOWN':
      return result(
        'model',
        title,
        'warn',
        `${where}: could not tell whether the account may use the model`,
        {
          fix: [
            `the checking identity needs ${MODEL_CHECK_ACTIONS.join(', ')}`,
            `or check by hand: aws bedrock get-foundation-model-availability --model-id ${facts.foundationModelId} --region ${config.region}`,
          ],
        },
      );
  }
}

/** The model's batch quotas in Service Quotas (read as Plan reads them), and whether the model takes batch jobs. */
export async function checkBatch(
  client: ServiceQuotasClient,
  config: PipelineConfig,
  facts: ModelFacts | undefined,
): Promise<CheckResult> {
  const title = 'Batch inference';
  const modelId = config.modelId;
  if (facts?.batch.supported === false) {
    return result(
      'batch',
      title,
      'warn',
      `${modelId} takes no batch inference jobs (${facts.batch.source})`,
      {
        details: ['runs in mode auto pick batch from batch.autoThreshold records; those jobs would fail'],
        fix: ['start runs with mode converse, or choose a model with batch inference'],
      },
    );
  }
  if (!config.batch.readServiceQuotas) {
    return result(
      'batch',
      title,
      'pass',
      'the environment plans with its configured batch quotas (batch.readServiceQuotas is off)',
      {
        details: [quotaLine(config.batch.quotas)],
      },
    );
  }
  // The names Plan reads them by (lib/functions.ts passes the same settings as MODEL_BATCH_QUOTA_NAME(S)).
  const { batchQuotaModelName, batchQuotaNames } = config.model;
  const reading = await readBatchQuotas(client, modelId, config.batch.quotas, new BatchQuotaCache(), {
    warn: () => undefined,
    ...(batchQuotaModelName ? { modelName: batchQuotaModelName } : {}),
    ...(batchQuotaNames ? { quotaNames: batchQuotaNames } : {}),
  });
  const found = BATCH_QUOTA_KEYS.filter((k) => reading.sources[k] !== 'fallback');
  const concurrency = Math.min(config.batch.mapConcurrency, reading.quotas.maxConcurrentJobs);
  const details = [
    quotaLine(reading.quotas),
    `shards in flight: ${concurrency} (batch.mapConcurrency ${config.batch.mapConcurrency}, the model's concurrent-jobs quota ${reading.quotas.maxConcurrentJobs})`,
    ...reading.notes,
  ];
  const deniedOrFailed = reading.notes.some((n) =>
    /ListServiceQuotas failed|ListAWSDefaultServiceQuotas failed/.test(n),
  );
  if (found.length === BATCH_QUOTA_KEYS.length) {
    const supported = facts?.batch.supported === true ? ' (the catalog agrees)' : '';
    return result(
      'batch',
      title,
      'pass',
      `Service Quotas lists the batch quotas of ${reading.modelName ?? modelId}: batch jobs are supported${supported}`,
      {
        details,
      },
    );
  }
  if (deniedOrFailed && found.length === 0) {
    return result(
      'batch',
      title,
      'warn',
      'could not read the batch quotas from Service Quotas: runs plan with the configured ones',
      {
        details,
        fix: [
          'the checking identity needs servicequotas:ListServiceQuotas and servicequotas:ListAWSDefaultServiceQuotas (Plan has them)',
        ],
      },
    );
  }
  if (found.length === 0) {
    return result(
      'batch',
      title,
      facts?.batch.supported === true ? 'pass' : 'warn',
      reading.modelName === null
        ? `no batch quota names are known for ${modelId}: runs plan with the configured quotas`
        : `Service Quotas lists no batch quotas for ${reading.modelName}: the model may take no batch jobs in ${config.region}`,
      {
        details,
        fix:
          facts?.batch.supported === true
            ? []
            : [
                'check the model supports batch inference in this Region (Bedrock console, Batch inference); if not, start runs with mode converse',
                'if it does, set batch.quotas in cdk.json to its quotas (Service Quotas console, Amazon Bedrock)',
              ],
      },
    );
  }
  return result(
    'batch',
    title,
    'warn',
    `some batch quotas of ${reading.modelName ?? modelId} were not found: those use the configured values`,
    {
      details,
    },
  );
}

function quotaLine(q: PipelineConfig['batch']['quotas']): string {
  const gb = (bytes: number): string => `${fmt.count(bytes / BYTES_PER_QUOTA_GB)} GB`;
  const parts: Record<BatchQuotaKey, string> = {
    minRecordsPerJob: `${fmt.count(q.minRecordsPerJob)} to ${fmt.count(q.maxRecordsPerJob)} records a job`,
    maxRecordsPerJob: '',
    maxRecordsPerFile: `${fmt.count(q.maxRecordsPerFile)} a file`,
    maxBytesPerFile: `${gb(q.maxBytesPerFile)} a file`,
    maxBytesPerJob: `${gb(q.maxBytesPerJob)} a job`,
    maxConcurrentJobs: `${fmt.count(q.maxConcurrentJobs)} jobs at once`,
  };
  return `quotas: ${Object.values(parts).filter(Boolean).join(', ')}`;
}

/**
 * Lambda GetAccountSettings: the account's concurrency against what one run can hold at once, and the memory the
 * environment asks for against what a new account accepts. The 3,008 MB hold on new accounts is in no API, so the
 * check infers it from the one reduced quota that is: a concurrency below the default of 1,000.
 */
export async function checkLambdaLimits(client: LambdaClient, config: PipelineConfig): Promise<CheckResult> {
  const title = 'Lambda limits';
  const need = runLambdaConcurrency(config);
  const memory = config.plan.memorySize;
  const settingsLine =
    `one run holds up to ${need} invocations at once (max(converse.mapConcurrency ${config.converse.mapConcurrency}, ` +
    `batch.mapConcurrency ${config.batch.mapConcurrency}) + failureLane.consumerConcurrency ` +
    `${config.failureLane.consumerConcurrency} + 2); Plan has ${fmt.count(memory)} MB`;
  let total: number | undefined;
  let unreserved: number | undefined;
  try {
    const limit = (await client.send(new GetAccountSettingsCommand({}))).AccountLimit;
    total = limit?.ConcurrentExecutions;
    unreserved = limit?.UnreservedConcurrentExecutions ?? total;
  } catch (error) {
    return result(
      'lambda',
      title,
      'skip',
      `could not read the account's Lambda settings (${errorName(error)}: ${describeError(error)})`,
      {
        details: [settingsLine],
        fix: ['the checking identity needs lambda:GetAccountSettings'],
      },
    );
  }
  const details = [`account concurrency ${total ?? '?'} (unreserved ${unreserved ?? '?'}); ${settingsLine}`];
  const fixes: string[] = [];
  let status: 'pass' | 'warn' | 'fail' = 'pass';
  const summary: string[] = [];
  if (unreserved !== undefined && need > unreserved) {
    status = 'fail';
    summary.push(`a run needs up to ${need} concurrent invocations, the account allows ${unreserved}`);
    fixes.push(
      `lower converse.mapConcurrency and batch.mapConcurrency in cdk.json so that the larger + ${config.failureLane.consumerConcurrency + 2} fits ${unreserved}`,
      'or ask for more: Service Quotas console, AWS Lambda, Concurrent executions, Request increase at account level (aws service-quotas request-service-quota-increase --service-code lambda --quota-code L-B99A9384 --desired-value N)',
    );
  } else {
    summary.push(`concurrency ${unreserved ?? '?'} fits a run's ${need}`);
  }
  const reduced = total !== undefined && total < DEFAULT_ACCOUNT_CONCURRENCY;
  if (memory > NEW_ACCOUNT_MAX_MEMORY_MB) {
    const lower = `set plan.memorySize to ${NEW_ACCOUNT_MAX_MEMORY_MB} or less in cdk.json (bench/README.md: what Plan plans at 3,008 MB)`;
    if (reduced) {
      status = 'fail';
      summary.push(`Plan asks for ${fmt.count(memory)} MB but this account still has new-account quotas`);
      details.push(
        `new accounts are held to ${fmt.count(NEW_ACCOUNT_MAX_MEMORY_MB)} MB ("Member must have value less than or equal to 3008" on deploy); no API reports that quota, and this account's concurrency (${total}) is below the default ${fmt.count(DEFAULT_ACCOUNT_CONCURRENCY)}, so it is most likely held (${LAMBDA_QUOTAS_PAGE})`,
      );
      fixes.push(
        lower,
        'or ask AWS Support to raise the function memory quota (AWS raises new-account quotas with use)',
      );
    } else {
      if (status === 'pass') status = 'warn';
      summary.push(`Plan asks for ${fmt.count(memory)} MB, which cannot be checked before a deploy`);
      details.push(
        `no API reports the memory quota; this account's concurrency is not reduced, so it is probably not held to ${fmt.count(NEW_ACCOUNT_MAX_MEMORY_MB)} MB`,
      );
      fixes.push(`if the deploy fails with "Member must have value less than or equal to 3008": ${lower}`);
    }
  } else {
    summary.push(`every function within ${fmt.count(NEW_ACCOUNT_MAX_MEMORY_MB)} MB`);
    if (!reduced && memory < LAMBDA_MAX_MEMORY_MB) {
      details.push(
        `plan.memorySize ${fmt.count(LAMBDA_MAX_MEMORY_MB)} would give Plan six vCPUs where the account allows it`,
      );
    }
  }
  return result('lambda', title, status, summary.join('; '), { details, fix: fixes });
}

/** CloudFormation DescribeStacks on the environment's stack: its status and outputs, once deployed. */
export async function checkStack(cfn: CloudFormationClient, config: PipelineConfig): Promise<CheckResult> {
  const title = 'Stack';
  const name = pipelineName(config.envName);
  const deploy = `npx cdk deploy -c env=${config.envName}`;
  let stack: Stack | undefined;
  try {
    stack = (await cfn.send(new DescribeStacksCommand({ StackName: name }))).Stacks?.[0];
  } catch (error) {
    if (!isMissingStack(error)) {
      return result(
        'stack',
        title,
        'skip',
        `could not read stack ${name} (${errorName(error)}: ${describeError(error)})`,
        {
          fix: ['the checking identity needs cloudformation:DescribeStacks'],
        },
      );
    }
  }
  if (!stack) {
    return result('stack', title, 'warn', `${name} is not deployed yet`, { fix: [`deploy it: ${deploy}`] });
  }
  const status = stack.StackStatus ?? 'UNKNOWN';
  const events = `aws cloudformation describe-stack-events --stack-name ${name} --region ${config.region} (the first *_FAILED event says why)`;
  if (status === 'ROLLBACK_COMPLETE' || status === 'ROLLBACK_FAILED' || status === 'DELETE_FAILED') {
    return result('stack', title, 'fail', `${name} is ${status}: its creation failed`, {
      fix: [
        `see why: ${events}`,
        `delete it (aws cloudformation delete-stack --stack-name ${name}; retained buckets, tables and log groups stay), then: ${deploy}`,
      ],
    });
  }
  if (/_FAILED$/.test(status)) {
    return result('stack', title, 'fail', `${name} is ${status}`, {
      fix: [`see why: ${events}`, `then: ${deploy}`],
    });
  }
  if (/_IN_PROGRESS$/.test(status)) {
    return result('stack', title, 'warn', `${name} is ${status}`, {
      fix: ['wait for it to finish, then run corpus doctor again'],
    });
  }
  try {
    const found = await discoverStack(cfn, name);
    const outputs = Object.entries(found.raw).map(([k, v]) => `${k} = ${v}`);
    if (status === 'UPDATE_ROLLBACK_COMPLETE') {
      return result(
        'stack',
        title,
        'warn',
        `${name} is ${status}: the last update was rolled back, the one before runs`,
        {
          details: outputs,
          fix: [`see why: ${events}`],
        },
      );
    }
    return result('stack', title, 'pass', `${name} is ${status}`, { details: outputs });
  } catch (error) {
    return result('stack', title, 'fail', describeError(error), { fix: [deploy] });
  }
}

function isFacts(value: unknown): value is ModelFacts {
  return typeof value === 'object' && value !== null && 'lifecycle' in value && 'access' in value;
}

function isMissingStack(error: unknown): boolean {
  // CloudFormation answers a ValidationError "Stack with id X does not exist" for an unknown stack.
  return error instanceof Error && error.name === 'ValidationError' && /does not exist/.test(error.message);
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : 'Error';
}

function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}
