import { ArnFormat, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { IConstruct } from 'constructs';
import { parseModelId } from '../lambda/shared/model-catalog';
import { acknowledgeWildcardResources } from './nag';

/** Whether `modelId` is a cross-Region inference profile id rather than a foundation model id. */
export function isInferenceProfileId(modelId: string): boolean {
  return parseModelId(modelId).profile !== undefined;
}

/** The foundation model an inference profile id routes to (`us.anthropic.x` -> `anthropic.x`); itself otherwise. */
export function baseModelId(modelId: string): string {
  return parseModelId(modelId).foundationModelId;
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

/**
 * Lets `grantee` ask Bedrock whether the model can serve a run (lambda/plan/model-availability.ts), and nothing
 * more: bedrock:GetFoundationModel on the foundation model in this Region, bedrock:GetInferenceProfile on the
 * system-defined inference profile (for a profile id), and bedrock:GetFoundationModelAvailability, which supports no
 * resource-level permissions (Service Authorization Reference,
 * https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonbedrock.html: its Resource types
 * column is empty), so it is granted on `*` with the reason acknowledged.
 */
export function grantModelAvailabilityRead(
  grantee: iam.IGrantable,
  scope: IConstruct,
  modelId: string,
): void {
  const stack = Stack.of(scope);
  const ref = parseModelId(modelId);
  iam.Grant.addToPrincipal({
    grantee,
    actions: ['bedrock:GetFoundationModel'],
    resourceArns: [
      stack.formatArn({
        service: 'bedrock',
        account: '',
        resource: 'foundation-model',
        resourceName: ref.foundationModelId,
        arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
      }),
    ],
  });
  if (ref.profile) {
    iam.Grant.addToPrincipal({
      grantee,
      actions: ['bedrock:GetInferenceProfile'],
      resourceArns: [
        stack.formatArn({
          service: 'bedrock',
          resource: 'inference-profile',
          resourceName: `${ref.profile}.${ref.foundationModelId}`,
          arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
        }),
      ],
    });
  }
  iam.Grant.addToPrincipal({
    grantee,
    actions: ['bedrock:GetFoundationModelAvailability'],
    resourceArns: ['*'],
  });
  acknowledgeWildcardResources(
    grantee,
    ['*'],
    'bedrock:GetFoundationModelAvailability supports no resource-level permissions; Plan asks it once per execution ' +
      'environment whether model access is enabled for the configured model, to fail a run at once instead of record by record.',
  );
}
