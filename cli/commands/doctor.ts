import { Command } from 'commander';
import type { PipelineConfig } from '../../lib/config';
import { chooseBackend, runCommand, write, writeJson, type CliContext } from '../context';
import { runAwsDoctor } from '../doctor-aws';
import { runLocalDoctor } from '../doctor-local';
import { formatDoctorReport, reportOf, result, type CheckResult, type DoctorReport } from '../doctor-report';
import { CliUsageError, describeError, EXIT } from '../errors';

/** Options of `corpus doctor`. */
interface DoctorCommandOptions {
  env?: string;
  local?: boolean;
  stateDir: string;
  json: boolean;
}

/** `corpus doctor`: a preflight of a deployed (or about to be deployed) environment, or of the local runtime. */
export function doctorCommand(ctx: CliContext): Command {
  return new Command('doctor')
    .summary('check an account (or this machine) is ready: before the first deploy and after')
    .description(
      'Check what a first deploy and a first run would meet, with read-only calls, and print each check as PASS, ' +
        'WARN, FAIL or SKIP with its fix. --env E: the credentials and Region, the CDK bootstrap, the model (lifecycle, ' +
        "access: Marketplace agreement, Anthropic use case form), batch support and the model's batch quotas, the " +
        "account's Lambda concurrency and memory against the environment's settings, and the stack's status and " +
        'outputs once deployed. --local: the Node.js version, loopback ports, the state directory and the emulator ' +
        'packages. Exit code 1 when a check failed (something blocks), 0 otherwise (warnings included).',
    )
    .option('--env <name>', 'an environment of cdk.json (context.environments), deployed or not, e.g. dev')
    .option('--local', 'the local runtime on this machine')
    .option('--state-dir <dir>', 'the local state directory (with --local)', '.corpus-local')
    .option('--json', 'print JSON for scripts instead of text', false)
    .action(async (options: DoctorCommandOptions) => {
      await runCommand(ctx, async () => {
        const choice = chooseBackend(options);
        const report =
          choice.kind === 'aws'
            ? await doctorEnvironment(ctx, choice.envName)
            : await doctorLocal(ctx, choice.stateDir);
        if (options.json) writeJson(ctx.stdout, report);
        else write(ctx.stdout, formatDoctorReport(report));
        return report.blocking ? EXIT.notFoundOrFailed : EXIT.ok;
      });
    });
}

async function doctorEnvironment(ctx: CliContext, envName: string): Promise<DoctorReport> {
  const load = requireLoader(ctx);
  let config: PipelineConfig;
  try {
    config = await load(envName);
  } catch (error) {
    return reportOf(`environment ${envName}`, [settingsFailure(envName, error)]);
  }
  const settings = result('settings', 'Settings', 'pass', `cdk.json environments.${envName} is valid`, {
    details: [
      `model ${config.modelId}, Region ${config.region}${config.account ? `, account ${config.account}` : ''}`,
    ],
  });
  const checks = await runAwsDoctor(config, { now: ctx.now, ...ctx.doctor?.aws });
  return reportOf(`environment ${envName} (${config.region})`, [settings, ...checks]);
}

async function doctorLocal(ctx: CliContext, stateDir: string): Promise<DoctorReport> {
  const load = ctx.loadEnvironment;
  const checks = await runLocalDoctor({
    stateDir,
    ...(load ? { loadLocalConfig: () => load('local') } : {}),
    ...(ctx.doctor?.local ? { probes: ctx.doctor.local } : {}),
  });
  return reportOf(`the local runtime (state directory ${stateDir})`, checks);
}

function requireLoader(ctx: CliContext): (envName: string) => Promise<PipelineConfig> {
  if (!ctx.loadEnvironment) throw new CliUsageError('corpus doctor --env needs the environments of cdk.json');
  return ctx.loadEnvironment;
}

function settingsFailure(envName: string, error: unknown): CheckResult {
  return result('settings', 'Settings', 'fail', `cdk.json environments.${envName} cannot be used`, {
    details: describeError(error).split('\n'),
    fix: [
      'correct the named settings in cdk.json (README, Deploy settings, says what each means), then run corpus doctor again',
    ],
  });
}
