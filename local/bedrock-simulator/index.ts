/**
 * Bedrock simulator, runtime side: Converse and InvokeModel over cleartext HTTP/2 for the real
 * `@aws-sdk/client-bedrock-runtime`. The model table, validation and the deterministic model are plain
 * functions (models.ts, validation.ts, engine.ts) so a batch-inference control plane can reuse them.
 */
import type { FaultOptions } from './faults';
import { listenRuntime, type ListenOptions } from './runtime-server';
import { BedrockRuntimeService, type RuntimeServiceOptions } from './runtime-service';
import type { SimulatorStats } from './stats';

export * from './engine';
export * from './errors';
export * from './faults';
export * from './models';
export * from './quota';
export * from './runtime-server';
export * from './runtime-service';
export * from './stats';
export * from './validation';

/** Options of {@link startBedrockSimulator}: where to listen, plus the runtime behaviour. */
export interface BedrockSimulatorOptions extends RuntimeServiceOptions, ListenOptions {}

/** A running Bedrock simulator. */
export interface BedrockSimulator {
  /** Endpoint for BedrockRuntimeClient (`endpoint`) or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`. */
  readonly runtimeEndpoint: string;
  /** The bound port. */
  readonly port: number;
  /** The service behind the endpoint (model table, stats, faults), for modules started beside it. */
  readonly service: BedrockRuntimeService;
  /** A snapshot of the counters. */
  stats(): SimulatorStats;
  /** Replaces every fault setting (absent fields switch that fault off) and reseeds the fault PRNG. */
  setFaults(faults: FaultOptions): void;
  /** Cuts pending latency short, closes every connection and stops listening. */
  stop(): Promise<void>;
}

/**
 * Starts the simulator on 127.0.0.1 and a free port unless told otherwise.
 * @example
 * const sim = await startBedrockSimulator();
 * const client = new BedrockRuntimeClient({ endpoint: sim.runtimeEndpoint, region: 'us-east-1' });
 */
export async function startBedrockSimulator(
  options: BedrockSimulatorOptions = {},
): Promise<BedrockSimulator> {
  const service = new BedrockRuntimeService(options);
  const server = await listenRuntime(service, options);
  let stopped: Promise<void> | undefined;
  return {
    runtimeEndpoint: server.endpoint,
    port: server.port,
    service,
    stats: () => service.stats.snapshot(),
    setFaults: (faults) => service.faults.configure(faults),
    stop: () => {
      stopped ??= (async () => {
        service.close();
        await server.close();
      })();
      return stopped;
    },
  };
}
