/**
 * Brings a synthesized CloudFormation template to life locally: loads it (from cdk.out or an object), resolves it,
 * creates its buckets, tables and queues in the emulators, and describes everything else the local runtime wires
 * (event buses, rules, schedules, functions, event source mappings, state machines, S3 -> EventBridge buckets).
 */
export * from './template-load';
export * from './stack-description';
// Only what callers outside cloud/ use: the describing helpers (propertiesOf, errorName ...) stay internal.
export { describeStack, type DescribeOptions } from './template-describe';
export * from './template-provision';

export {
  DEFAULT_ACCOUNT_ID,
  TemplateResolutionError,
  TemplateResolver,
  uuidFrom,
  type CfnParameter,
  type CfnResource,
  type CfnTemplate,
  type ResolveContext,
} from './intrinsics';
