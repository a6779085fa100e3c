import { Command, Option } from 'commander';
import { EXIT } from '../errors';
import * as fmt from '../format';
import { listRuns, type RunSummary } from '../run-view';
import {
  positiveInt,
  withBackend,
  withBackendOptions,
  write,
  writeJson,
  type BackendOptions,
  type CliContext,
} from '../context';

/** `corpus runs`: the most recent runs with status, mode and counts. */
export function runsCommand(ctx: CliContext): Command {
  return withBackendOptions(
    new Command('runs')
      .summary('recent runs: status, mode, counts')
      .description(
        'List recent runs, newest first: runId, status, mode, record counts, start time. On AWS from Step ' +
          "Functions' executions plus each run's plan.json and manifest.json; locally from runs/* in the output bucket.",
      )
      .addOption(new Option('--limit <n>', 'how many runs').argParser(positiveInt).default(20)),
  ).action(async (options: BackendOptions & { limit: number }) => {
    await withBackend(ctx, options, async (backend, store) => {
      const runs = await listRuns(backend, store, options.limit);
      if (options.json) writeJson(ctx.stdout, { runs });
      else write(ctx.stdout, formatRuns(runs, backend.label));
      return EXIT.ok;
    });
  });
}

/** The text of `corpus runs`. */
export function formatRuns(runs: readonly RunSummary[], where: string): string {
  if (runs.length === 0) return `No runs in ${where} yet.`;
  return [
    `Runs in ${where}, newest first:`,
    fmt.table(runs, [
      { header: 'RUN', cell: (r) => r.runId },
      { header: 'STATUS', cell: (r) => r.status },
      { header: 'MODE', cell: (r) => r.mode ?? '-' },
      { header: 'RECORDS', cell: (r) => fmt.count(r.records), right: true },
      { header: 'SUCCEEDED', cell: (r) => fmt.count(r.succeeded), right: true },
      { header: 'FAILED', cell: (r) => fmt.count(r.failed), right: true },
      { header: 'BAD LINES', cell: (r) => fmt.count(r.invalid), right: true },
      { header: 'STARTED (UTC)', cell: (r) => fmt.time(r.startedAt) },
      { header: 'DURATION', cell: (r) => fmt.duration(r.durationMs), right: true },
    ]),
  ].join('\n');
}
