/**
 * @corpus-pipeline/local-aws: a local AWS cloud for one machine, spoken to by the real AWS SDK. {@link startLocalCloud}
 * runs a whole template; each part is a namespace here and a subpath of its own
 * (`@corpus-pipeline/local-aws/bedrock-simulator`, `/cloud/emulators`, `/workflow`, ...), which loads only that part.
 */
export * from './local-cloud';
export {
  startBedrockSimulator,
  type BedrockSimulator,
  type BedrockSimulatorOptions,
} from './bedrock-simulator';
export { LOCAL_CREDENTIALS, startEmulators, type Emulators } from './cloud/emulators';
export { describeStack, provision, type CfnTemplate, type ProvisionedStack } from './cloud/template';
export { LocalWorkflow } from './workflow';
export * as bedrockSimulator from './bedrock-simulator';
export * as emulators from './cloud/emulators';
export * as lambdaRunner from './cloud/lambda-runner';
export * as sqsPoller from './cloud/sqs-poller';
export * as template from './cloud/template';
export * as eventbridge from './eventbridge';
export * as stepfunctions from './stepfunctions';
export * as workflow from './workflow';
export * as server from './json-protocol-server';
export { listenLocal } from './listen';
