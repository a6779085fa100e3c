import { Stack, Validations } from 'aws-cdk-lib';
import type { IGrantable } from 'aws-cdk-lib/aws-iam';
import { Construct, type IConstruct } from 'constructs';

/**
 * Acknowledgements of cdk-nag findings, one finding id at a time (cdk-nag 3 has no blanket suppression and this
 * project wants none): each helper records a `Validations.of(scope).acknowledge()` entry whose id is exactly the id
 * cdk-nag reports, computed from the same token-bearing strings the grant used, so a renamed construct never leaves
 * a stale acknowledgement behind nor silences a different finding.
 */

/** The id of an AwsSolutions-IAM5 finding about a wildcard in a resource ARN. */
export function wildcardResourceFindingId(scope: IConstruct, resourceArn: string): string {
  return `AwsSolutions-IAM5[Resource::${flattenForNag(Stack.of(scope).resolve(resourceArn))}]`;
}

/** The id of an AwsSolutions-IAM4 finding about an AWS managed policy. */
export function managedPolicyFindingId(scope: IConstruct, policyArn: string): string {
  return `AwsSolutions-IAM4[Policy::${flattenForNag(Stack.of(scope).resolve(policyArn))}]`;
}

/** Acknowledges findings on `scope` and everything under it, with one reason. */
export function acknowledge(scope: IConstruct, findingIds: readonly string[], reason: string): void {
  for (const id of findingIds) {
    Validations.of(scope).acknowledge({ id, reason });
  }
}

/**
 * Acknowledges IAM5 findings about wildcard resources that a grant put on `grantee`'s policy. Does nothing when the
 * grantee's principal is not a construct (an imported role), so cdk-nag still reports what it cannot attribute.
 */
export function acknowledgeWildcardResources(
  grantee: IGrantable,
  resourceArns: readonly string[],
  reason: string,
): void {
  const principal = grantee.grantPrincipal;
  if (!Construct.isConstruct(principal)) {
    return;
  }
  acknowledge(
    principal,
    resourceArns.map((arn) => wildcardResourceFindingId(principal, arn)),
    reason,
  );
}

/**
 * Flattens a resolved CloudFormation value the way cdk-nag names findings: `Fn::GetAtt` -> `<Id.Attr>`,
 * `Ref` -> `<Id>`, `Fn::Join` joined, `${X}` in `Fn::Sub` -> `<X>`. Mirrors cdk-nag's internal
 * flattenCfnReference, which the package does not export.
 */
export function flattenForNag(node: unknown): string {
  if (node === undefined) {
    return '';
  }
  if (typeof node === 'string') {
    return node.replace(/\$\{/g, '<').replace(/}/g, '>');
  }
  if (isRecord(node)) {
    const join = node['Fn::Join'];
    if (Array.isArray(join) && typeof join[0] === 'string' && Array.isArray(join[1])) {
      return (join[1] as unknown[]).map(flattenForNag).join(join[0]);
    }
    if ('Fn::Sub' in node) {
      return flattenForNag(node['Fn::Sub']);
    }
    const getAtt = node['Fn::GetAtt'];
    if (Array.isArray(getAtt)) {
      return `<${flattenForNag(getAtt[0])}.${flattenForNag(getAtt[1])}>`;
    }
    if ('Fn::ImportValue' in node) {
      return flattenForNag(node['Fn::ImportValue']);
    }
    if ('Ref' in node) {
      return `<${flattenForNag(node.Ref)}>`;
    }
  }
  return JSON.stringify(node);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
