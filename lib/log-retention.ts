import { RetentionDays } from 'aws-cdk-lib/aws-logs';

/** Thrown when a configured log retention is not one CloudWatch Logs accepts. */
export class UnsupportedRetentionError extends Error {
  override readonly name = 'UnsupportedRetentionError';
}

// RetentionDays is a numeric enum: its values are the retention periods CloudWatch Logs accepts (0 = never expire).
const SUPPORTED = new Set<number>(
  Object.values(RetentionDays).filter((v): v is number => typeof v === 'number' && v > 0),
);

/**
 * Converts a number of days (`logRetentionDays` from config) to the CloudWatch Logs retention enum.
 * @throws UnsupportedRetentionError listing the accepted values
 */
export function toRetentionDays(days: number): RetentionDays {
  if (!SUPPORTED.has(days)) {
    const accepted = [...SUPPORTED].sort((a, b) => a - b).join(', ');
    throw new UnsupportedRetentionError(
      `logRetentionDays ${days} is not a CloudWatch Logs retention period; use one of ${accepted}`,
    );
  }
  return days as RetentionDays;
}
