/** The Validating phase of a batch job: its input files read and held to the model's batch limits. */
import type { S3Client } from '@aws-sdk/client-s3';

import { BatchJobFailure } from './batch-errors';
import { countRecords, listInputFiles, type BatchInputFile } from './batch-io';
import type { BatchLimits } from './batch-status';

/**
 * Lists the input location and checks file sizes, job size and record counts against the limits.
 * @param s3Uri the job's input location
 * @param modelId the foundation model id, for messages
 * @returns the input files and their record count
 * @throws BatchJobFailure naming the quota the input breaks
 */
export async function checkJobInput(
  s3: S3Client,
  s3Uri: string,
  modelId: string,
  limits: BatchLimits,
): Promise<{ files: BatchInputFile[]; total: number }> {
  const files = await listInputFiles(s3, s3Uri);
  checkInputSizes(files, modelId, limits);
  let total = 0;
  for (const file of files) {
    const records = await countRecords(s3, file);
    if (records > limits.maxRecordsPerFile) {
      throw new BatchJobFailure(
        `The input file ${file.name} has ${records} records, more than the quota 'Records per input file per batch inference job for ${modelId}' allows (${limits.maxRecordsPerFile}).`,
      );
    }
    total += records;
  }
  if (total > limits.maxRecordsPerJob) {
    throw new BatchJobFailure(
      `The job has ${total} records, more than the quota 'Records per batch inference job for ${modelId}' allows (${limits.maxRecordsPerJob}).`,
    );
  }
  if (total < limits.minRecordsPerJob) {
    throw new BatchJobFailure(
      `The job has ${total} records, fewer than the quota 'Minimum number of records per batch inference job for ${modelId}' requires (${limits.minRecordsPerJob}). Add records or process them with on-demand inference.`,
    );
  }
  return { files, total };
}

function checkInputSizes(files: readonly BatchInputFile[], modelId: string, limits: BatchLimits): void {
  let bytes = 0;
  for (const file of files) {
    bytes += file.size;
    if (file.size > limits.maxBytesPerFile) {
      throw new BatchJobFailure(
        `The input file ${file.name} is ${file.size} bytes, more than the quota 'Batch inference input file size (in GB)' for ${modelId} allows (${limits.maxBytesPerFile} bytes).`,
      );
    }
  }
  if (bytes > limits.maxBytesPerJob) {
    throw new BatchJobFailure(
      `The job's input files hold ${bytes} bytes, more than the quota 'Batch inference job size (in GB)' for ${modelId} allows (${limits.maxBytesPerJob} bytes).`,
    );
  }
}
