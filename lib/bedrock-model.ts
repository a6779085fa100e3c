import { ArnFormat, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { IConstruct } from 'constructs';
import { acknowledgeWildcardResources } from './nag';

/**
 * Geography prefixes of Bedrock cross-Region inference profile ids (`us.anthropic.claude-...`). A foundation model
 * id starts with its provider (`anthropic.`, `amazon.`, `meta.`), never with one of these.
 */
export const INFERENCE_PROFILE_PREFIXES = ['us', 'us-gov', 'eu', 'apac', 'jp', 'au', 'ca', 'global'] as const;

/** Whether `modelId` is a cross-Region inference profile id rather than a foundation model id. */
export function isInferenceProfileId(modelId: string): boolean {
  const first = modelId.split('.')[0] ?? '';
  return modelId.includes('.') && (INFERENCE_PROFILE_PREFIXES as readonly string[]).includes(first);
}

/** The foundation model an inference profile id routes to (`us.anthropic.x` -> `anthropic.x`); itself otherwise. */
export function baseModelId(modelId: string): string {
  return isInferenceProfileId(modelId) ? modelId.slice(modelId.indexOf('.') + 1) : modelId;
}

/** What {@link modelInvokeResources} returns. */
export interface ModelInvokeResources {
  /** Every ARN bedrock:InvokeModel must be allowed on. */
  readonly arns: string[];
  /** The subset that contains a wildcard (the foundation model in every Region, for a profile). */
  readonly wildcardArns: string[];
}

/**
 * The ARNs Converse/InvokeModel on `modelId` needs: the foundation model in this Region; for an inference profile
 * also the profile in this account and the foundation model in every Region the profile may route to.
 */
export function modelInvokeResources(scope: IConstruct, modelId: string): ModelInvokeResources {
  const stack = Stack.of(scope);
  const foundationModel = (region: string): string =>
    stack.formatArn({
      service: 'bedrock',
      region,
      account: '',
      resource: 'foundation-model',
      resourceName: baseModelId(modelId),
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
    });
  if (!isInferenceProfileId(modelId)) {
    return { arns: [foundationModel(stack.region)], wildcardArns: [] };
  }
  const profile = stack.formatArn({
    service: 'bedrock',
    resource: 'inference-profile',
    resourceName: modelId,
    arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
  });
  const everyRegion = foundationModel('*');
  return { arns: [foundationModel(stack.region), profile, everyRegion], wildcardArns: [everyRegion] };
}

/** Lets `grantee` call Converse/InvokeModel on `modelId` (bedrock:InvokeModel on the ARNs above, nothing else). */
export function grantModelInvoke(grantee: iam.IGrantable, scope: IConstruct, modelId: string): iam.Grant {
  const resources = modelInvokeResources(scope, modelId);
  const grant = iam.Grant.addToPrincipal({
    grantee,
    actions: ['bedrock:InvokeModel'],
    resourceArns: resources.arns,
  });
  acknowledgeWildcardResources(
    grantee,
    resources.wildcardArns,
    `A cross-Region inference profile (${modelId}) routes each request to the foundation model in any Region ` +
      'of its geography, and Bedrock authorises the call against the model ARN of the Region it lands in; the ' +
      'wildcard is on the Region only, for this one model.',
  );
  return grant;
}
