/**
 * Bedrock simulator: Converse and InvokeModel over cleartext HTTP/2 for the real
 * `@aws-sdk/client-bedrock-runtime`, and the batch inference control plane (CreateModelInvocationJob and
 * friends) over HTTP/1.1 for the real `@aws-sdk/client-bedrock`. The model table, validation and the
 * deterministic model are plain functions (models.ts, validation.ts, engine.ts) shared by both sides.
 */
import type { S3Client } from '@aws-sdk/client-s3';

import { systemClock } from './batch-clock';
import type { BatchJobEventListener } from './batch-events';
import type { BatchFaultOptions } from './batch-faults';
import { listenControl, type ControlServer } from './batch-server';
import { BatchJobService, type BatchServiceOptions } from './batch-service';
import type { FaultOptions } from './faults';
import { listenRuntime, type ListenOptions } from './runtime-server';
import { BedrockRuntimeService, type RuntimeServiceOptions } from './runtime-service';
import type { SimulatorStats } from './stats';

export * from './batch-clock';
export * from './batch-errors';
export * from './batch-events';
export * from './batch-faults';
export * from './batch-io';
export * from './batch-records';
export * from './batch-server';
export * from './batch-service';
export * from './batch-status';
export * from './batch-validation';
export * from './engine';
export * from './errors';
export * from './faults';
export * from './model-control';
export * from './models';
export * from './native-formats';
export * from './quota';
export * from './runtime-server';
export * from './runtime-service';
export * from './stats';
export * from './validation';

/** Batch control-plane settings of {@link startBedrockSimulator}. */
export interface BedrockSimulatorBatchOptions extends BatchServiceOptions {
  /** TCP port of the control-plane endpoint (on the runtime's host); 0 picks a free one. @default 0 */
  readonly port?: number;
}

/** Options of {@link startBedrockSimulator}: where to listen, the runtime behaviour, and the batch side. */
export interface BedrockSimulatorOptions extends RuntimeServiceOptions, ListenOptions {
  /** Batch inference control plane: lifecycle timing, limits, batch faults, clock. */
  readonly batch?: BedrockSimulatorBatchOptions;
  /** Client batch jobs read inputs and write outputs with. @default an S3Client configured from the environment */
  readonly s3Client?: S3Client;
  /** Receives every batch job state-change event (the EventBridge event), in order. */
  readonly onJobEvent?: BatchJobEventListener;
}

/** A running Bedrock simulator. */
export interface BedrockSimulator {
  /** Endpoint for BedrockRuntimeClient (`endpoint`) or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`. */
  readonly runtimeEndpoint: string;
  /** The bound port. */
  readonly port: number;
  /** The service behind the endpoint (model table, stats, faults), for modules started beside it. */
  readonly service: BedrockRuntimeService;
  /** Endpoint for BedrockClient (`endpoint`) or `AWS_ENDPOINT_URL_BEDROCK`: the batch control plane. */
  readonly controlEndpoint: string;
  /** The control plane's bound port. */
  readonly controlPort: number;
  /** The batch job service behind the control endpoint (jobs, event counters, settled()). */
  readonly batch: BatchJobService;
  /** Replaces every batch fault setting and reseeds the batch fault PRNGs. */
  setBatchFaults(faults: BatchFaultOptions): void;
  /** A snapshot of the counters. */
  stats(): SimulatorStats;
  /** Replaces every fault setting (absent fields switch that fault off) and reseeds the fault PRNG. */
  setFaults(faults: FaultOptions): void;
  /** Cuts pending latency short, halts batch jobs where they are, closes every connection and stops listening. */
  stop(): Promise<void>;
}

/**
 * Starts the simulator on 127.0.0.1 and a free port unless told otherwise.
 * @example
 * const sim = await startBedrockSimulator({ models: [{ modelId: 'amazon.nova-lite-v1:0', nativeFormat: 'amazon-nova', maxOutputTokens: 5000, defaultMaxTokens: 5000, contextWindow: 300000 }] });
 * const client = new BedrockRuntimeClient({ endpoint: sim.runtimeEndpoint, region: 'us-east-1' });
 */
export async function startBedrockSimulator(options: BedrockSimulatorOptions): Promise<BedrockSimulator> {
  const service = new BedrockRuntimeService(options);
  const { port: controlPort, ...batchOptions } = options.batch ?? {};
  const batch = new BatchJobService(
    { clock: systemClock(options.now), ...batchOptions },
    {
      models: service.models,
      faults: service.faults,
      ...(options.s3Client === undefined ? {} : { s3Client: options.s3Client }),
      ...(options.onJobEvent === undefined ? {} : { onEvent: options.onJobEvent }),
      ...(options.outputLength === undefined ? {} : { outputLength: options.outputLength }),
    },
  );
  const server = await listenRuntime(service, options);
  let control: ControlServer;
  try {
    control = await listenControl(batch, {
      ...(options.host === undefined ? {} : { host: options.host }),
      ...(controlPort === undefined ? {} : { port: controlPort }),
    });
  } catch (err) {
    await server.close();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    runtimeEndpoint: server.endpoint,
    port: server.port,
    service,
    controlEndpoint: control.endpoint,
    controlPort: control.port,
    batch,
    stats: () => service.stats.snapshot(),
    setFaults: (faults) => service.faults.configure(faults),
    setBatchFaults: (faults) => batch.configureFaults(faults),
    stop: () => {
      stopped ??= (async () => {
        service.close();
        await batch.close();
        await Promise.all([control.close(), server.close()]);
      })();
      return stopped;
    },
  };
}
