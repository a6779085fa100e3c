import { S3Client } from '@aws-sdk/client-s3';
import { FUNCTION_ENV } from './shared/contracts/env';
import { readEnv } from './shared/env';
import { InvalidEventError } from './shared/errors';
import { logger, traced, withObservability } from './shared/observability';
import {
  converseItemsEventSchema,
  type ConverseItemsOutput,
  gatherConverseItems,
} from './batch/converse-items';

const env = readEnv(FUNCTION_ENV.converseItems);
const s3 = traced(new S3Client({}));

/** Lambda entry: ConverseItems. Deterministic, so a retry simply rewrites the same file. */
export const handler = withObservability(async (event: unknown): Promise<ConverseItemsOutput> => {
  const parsed = converseItemsEventSchema.safeParse(event);
  if (!parsed.success) throw new InvalidEventError(`ConverseItems expects {runId}: ${parsed.error.message}`);
  logger.appendKeys({ runId: parsed.data.runId });
  return gatherConverseItems(parsed.data, { s3, outputBucket: env.OUTPUT_BUCKET });
});
