/** The local EventBridge: pattern matching, target input, buses and rules, and the PutEvents endpoint. */
export * from './errors';
export * from './pattern';
export * from './input-transformer';
export * from './bus';
export * from './server';
export * from './scheduler';
