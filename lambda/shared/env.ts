import * as z from 'zod';
import { ConfigurationError } from './errors';
import { MODEL_FAMILIES } from './model-catalog';

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

/**
 * MODEL_FORMAT: the model's native format family, set by the stack only for a model the catalog does not know
 * (`model.format` in the environment); otherwise the catalog's family of MODEL_ID applies.
 */
export const modelFormat = z.enum(MODEL_FAMILIES).optional();
