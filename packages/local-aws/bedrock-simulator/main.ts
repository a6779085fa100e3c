/**
 * Runs the Bedrock simulator on its own, for poking at it with the AWS CLI or SDK:
 * `npx tsx packages/local-aws/bedrock-simulator/main.ts --models MODELS.json [--port 4599] [--host 127.0.0.1]
 * [--latency-ms 0]`, MODELS.json holding the model table (an array of {@link ModelSpec}).
 * Prints the endpoint to use as AWS_ENDPOINT_URL_BEDROCK_RUNTIME and stops on SIGINT/SIGTERM.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { startBedrockSimulator, type ModelSpec } from './index';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      'latency-ms': { type: 'string', default: '0' },
      models: { type: 'string' },
    },
  });
  if (values.models === undefined) throw new Error('--models MODELS.json is required (the model table)');
  const sim = await startBedrockSimulator({
    models: JSON.parse(readFileSync(values.models, 'utf8')) as ModelSpec[],
    host: values.host,
    port: Number(values.port),
    latencyMs: Number(values['latency-ms']),
  });
  console.log(`AWS_ENDPOINT_URL_BEDROCK_RUNTIME=${sim.runtimeEndpoint}`);
  const stop = (): void => {
    sim.stop().then(
      () => console.log(JSON.stringify(sim.stats().totals)),
      (err: unknown) => {
        console.error('bedrock-simulator: failed to stop', err);
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  console.error('bedrock-simulator: failed to start', err);
  process.exitCode = 1;
});
