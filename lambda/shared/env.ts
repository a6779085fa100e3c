import * as z from 'zod';
import { ConfigurationError } from './errors';

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

/** A positive integer environment variable. */
export const positiveInt = z.coerce.number().int().positive();
/** A non-empty string environment variable. */
export const required = z.string().min(1);
