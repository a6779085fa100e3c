import type * as z from 'zod';
import { ConfigurationError } from './errors';

// The variables' schemas live with the stack's side of the contract (contracts/env.ts); re-exported for callers.
export { modelFormat, positiveInt, required } from './contracts/env';

/**
 * Reads a handler's environment variables through a zod schema, once at cold start.
 * @throws ConfigurationError naming each missing or invalid variable
 */
export function readEnv<T extends z.ZodType>(schema: T, env: NodeJS.ProcessEnv = process.env): z.infer<T> {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigurationError(`Invalid function environment: ${problems}`);
  }
  return parsed.data;
}
