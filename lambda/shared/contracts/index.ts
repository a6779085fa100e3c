/**
 * The names the parts of the pipeline share, in one module that lib/ (the CDK app), the handlers, the CLI and the
 * local runtime all import: payload shapes, function environments, stack outputs, metric names, S3 keys, batch quotas
 * and the pipeline's own names. No AWS SDK and no CDK, so every side can load it.
 */
export * from './env';
export * from './keys';
export * from './metrics';
export * from './names';
export * from './outputs';
export * from './payloads';
export * from './quotas';
