/** A child execution of a Distributed Map, as its ResultWriter writes it. */
export interface ChildResult {
  Status?: string;
  Input?: string;
  Output?: string;
  Error?: string;
  Cause?: string;
}

/** The Map Run manifest its ResultWriter writes: the result files by status. */
export interface ResultWriterManifest {
  ResultFiles?: Record<string, { Key: string; Size?: number }[]>;
  DestinationBucket?: string;
}

/** A Catch's error output. */
export interface StepFunctionsError {
  Error?: string;
  Cause?: string;
}

/** Where a Distributed Map's ResultWriter put its Map Run manifest, from the Map's output. */
export function resultWriterDetailsOf(mapResult: unknown): { Bucket: string; Key: string } | undefined {
  return (mapResult as { resultWriterDetails?: { Bucket: string; Key: string } } | undefined)
    ?.resultWriterDetails;
}

export /** Lambda errors arrive as a JSON Cause `{errorType, errorMessage, trace}`: keep the message a person can act on. */
function describeCause(cause: string | undefined): string {
  if (!cause) return 'no cause given';
  try {
    const parsed = JSON.parse(cause) as { errorMessage?: unknown };
    if (typeof parsed.errorMessage === 'string') return parsed.errorMessage;
  } catch {
    // not JSON: a plain cause
  }
  return cause;
}
