import { App } from 'aws-cdk-lib';
import { buildApp } from '../lib/app-builder';
import { ConfigError } from '../lib/config';

/**
 * CDK app entry (`npx cdk synth -c env=<name>`): the only place that reads context and the process environment.
 * Everything else receives typed settings.
 */
function main(): void {
  const app = new App();
  try {
    buildApp({
      app,
      envName: app.node.tryGetContext('env'),
      environments: app.node.tryGetContext('environments'),
      defaultAccount: process.env.CDK_DEFAULT_ACCOUNT,
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      // A configuration mistake needs its message, not a stack trace.
      console.error(`${error.name}: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
}

main();
