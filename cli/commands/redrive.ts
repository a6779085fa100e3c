import { Command, Option } from 'commander';
import type { RedriveOutcome } from '../backend';
import {
  positiveInt,
  positiveNumber,
  withBackend,
  withBackendOptions,
  write,
  writeJson,
  type BackendOptions,
  type CliContext,
} from '../context';
import { EXIT } from '../errors';
import * as fmt from '../format';

/** Options of `corpus redrive`. */
interface RedriveCommandOptions extends BackendOptions {
  wait: boolean;
  maxPerSecond?: number;
  timeout: number;
  pollInterval: number;
}

/** `corpus redrive`: moves the failure lane's dead-letter queue back to the failure queue. */
export function redriveCommand(ctx: CliContext): Command {
  return withBackendOptions(
    new Command('redrive')
      .summary("move the failure lane's dead-letter queue back to its queue")
      .description(
        'Redrive the failure lane after a fix: an SQS message move task from the dead-letter queue to the failure ' +
          'queue, whose consumer retries each record through Converse (the ledger keeps a record from being ' +
          'published twice). Waits for the task and reports the messages moved. Bad lines (stage plan) fail again ' +
          'unless the corpus is fixed. Exit code 1 when the move task failed or was cancelled.',
      )
      .option('--no-wait', 'start the move task and return')
      .addOption(
        new Option(
          '--max-per-second <n>',
          'messages moved per second (1 to 500; default: chosen by SQS)',
        ).argParser(positiveInt),
      )
      .addOption(
        new Option('--timeout <seconds>', 'stop waiting after this long (the task goes on)')
          .argParser(positiveNumber)
          .default(900),
      )
      .addOption(
        new Option('--poll-interval <seconds>', 'seconds between progress checks')
          .argParser(positiveNumber)
          .default(2),
      ),
  ).action(async (options: RedriveCommandOptions) => {
    await withBackend(ctx, options, async (backend) => {
      const outcome = await backend.redrive({
        wait: options.wait,
        ...(options.maxPerSecond !== undefined ? { maxPerSecond: options.maxPerSecond } : {}),
        timeoutMs: options.timeout * 1000,
        pollIntervalMs: options.pollInterval * 1000,
        clock: { now: ctx.now, sleep: ctx.sleep },
        ...(options.json
          ? {}
          : {
              onProgress: (o: RedriveOutcome) =>
                write(
                  ctx.stderr,
                  `  ${o.status}: ${fmt.count(o.moved)} of ${fmt.count(o.toMove ?? o.waiting)} moved`,
                ),
            }),
      });
      if (options.json) writeJson(ctx.stdout, outcome);
      else write(ctx.stdout, formatRedrive(outcome));
      return outcome.status === 'FAILED' || outcome.status === 'CANCELLED' ? EXIT.notFoundOrFailed : EXIT.ok;
    });
  });
}

/** The text of `corpus redrive`. */
export function formatRedrive(o: RedriveOutcome): string {
  const queues = `${o.sourceArn} -> ${o.destinationArn}`;
  if (o.status === 'NOTHING_TO_MOVE')
    return `The dead-letter queue is empty: nothing to redrive (${o.sourceArn}).`;
  const lines = [
    `Redrive ${o.status}: ${fmt.count(o.moved)} of ${fmt.count(o.toMove ?? o.waiting)} messages moved`,
    `  ${queues}`,
  ];
  if (o.taskHandle) lines.push(`  task: ${o.taskHandle}`);
  if (o.failureReason) lines.push(`  reason: ${o.failureReason}`);
  if (o.stillRunning)
    lines.push('  the task is still running: check again with `aws sqs list-message-move-tasks`');
  return lines.join('\n');
}
