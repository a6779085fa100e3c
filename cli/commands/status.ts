import { Command, Option } from 'commander';
import type { Backend } from '../backend';
import {
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
import { checkRunId, type RunStore } from '../run-store';
import { FAILED_STATUSES, gatherProgress, withRate, type RunProgress, type RunView } from '../run-view';
import { createProgressDisplay, progressLine, RateTracker } from '../watch';

/** Options of `corpus status`. */
interface StatusOptions extends BackendOptions {
  watch: boolean;
  interval: number;
}

/** `corpus status RUN [--watch]`: how far along a run is. */
export function statusCommand(ctx: CliContext): Command {
  return withBackendOptions(
    new Command('status')
      .summary('how far along a run is (--watch: live progress until it ends)')
      .description(
        'How far along a run is: records done of total, rate, ETA and error rate; in batch mode a table of the batch ' +
          "jobs with Bedrock's progress counters (live on AWS), in converse mode the Distributed Map Run's counters (AWS). " +
          'Exit code 1 when the run failed.',
      )
      .argument('<run>', 'the runId (the execution name; see `corpus runs`)')
      .option(
        '--watch',
        'keep updating a live progress bar (stderr) until the run ends; with --json, one JSON line per update',
        false,
      )
      .addOption(
        new Option('--interval <seconds>', 'seconds between updates with --watch')
          .argParser(positiveNumber)
          .default(10),
      ),
  ).action(async (runId: string, options: StatusOptions) => {
    await withBackend(
      ctx,
      options,
      async (backend, store) => {
        const { view, progress } = options.watch
          ? await watch(ctx, backend, store, runId, options)
          : await gatherProgress(backend, store, runId, ctx.now);
        if (options.json) {
          if (!options.watch) writeJson(ctx.stdout, statusJson(view, progress));
        } else {
          write(ctx.stdout, formatStatus(view, progress));
        }
        return FAILED_STATUSES.has(view.status) || view.manifest?.status === 'FAILED'
          ? EXIT.notFoundOrFailed
          : EXIT.ok;
      },
      () => checkRunId(runId),
    );
  });
}

/** Polls until the run ends, drawing progress on stderr (with --json, one JSON line per poll on stdout). */
async function watch(
  ctx: CliContext,
  backend: Backend,
  store: RunStore,
  runId: string,
  options: StatusOptions,
): Promise<{ view: RunView; progress: RunProgress }> {
  const display = options.json ? undefined : createProgressDisplay(ctx.stderr);
  const tracker = new RateTracker();
  try {
    for (;;) {
      const gathered = await gatherProgress(backend, store, runId, ctx.now);
      const rate = tracker.add(ctx.now(), gathered.progress.done);
      const progress = rate === null ? gathered.progress : withRate(gathered.progress, rate);
      if (options.json) ctx.stdout.write(`${JSON.stringify(statusJson(gathered.view, progress))}\n`);
      else display?.update(progress);
      if (progress.finished) return { view: gathered.view, progress };
      await ctx.sleep(options.interval * 1000);
    }
  } finally {
    display?.stop();
  }
}

/** `corpus status --json`. */
export function statusJson(view: RunView, progress: RunProgress): Record<string, unknown> {
  const error =
    view.manifest?.error ??
    (view.execution?.error ? { code: view.execution.error, message: view.execution.cause ?? '' } : undefined);
  return {
    ...progress,
    finishedAt: view.finishedAt,
    ...(view.execution ? { executionArn: view.execution.executionArn } : {}),
    ...(error ? { error } : {}),
  };
}

/** The text of `corpus status`. */
export function formatStatus(view: RunView, p: RunProgress): string {
  const lines = [
    `Run ${p.runId}: ${p.status}  (mode ${p.mode ?? '-'}, model ${p.modelId ?? '-'})`,
    `  started ${fmt.time(p.startedAt)} UTC` +
      (p.finished ? `, finished ${fmt.time(view.finishedAt)} UTC` : '') +
      `, ${p.finished ? 'took' : 'running for'} ${fmt.duration(p.elapsedMs)}`,
  ];
  if (p.total > 0 || view.manifest) {
    lines.push(`  ${fmt.bar(p.total > 0 ? p.done / p.total : 1)} ${progressLine(p)}`);
  } else {
    lines.push('  planning (no plan.json yet)');
  }
  const m = view.manifest;
  if (m) {
    const c = m.counts;
    lines.push(
      `  records ${fmt.count(c.records)}: ${fmt.count(c.succeeded)} succeeded, ${fmt.count(c.failed)} failed, ` +
        `${fmt.count(c.skipped)} skipped (already in the ledger)` +
        ((c.pending ?? 0) > 0 ? `, ${fmt.count(c.pending)} pending in the failure lane` : '') +
        `; ${fmt.count(c.invalid)} bad lines, ${fmt.count(c.duplicates)} duplicates`,
    );
    if ((m.revision ?? 1) > 1 || (c.recovered ?? 0) > 0) {
      lines.push(
        `  failure lane: ${fmt.count(c.recovered ?? 0)} recovered after the run (manifest revision ${m.revision})`,
      );
    }
    if (m.modelCalls) {
      lines.push(
        `  model calls ${fmt.count(m.modelCalls.total)} (${fmt.count(m.modelCalls.throttled)} throttled, ` +
          `${fmt.count(m.modelCalls.retried)} retried)`,
      );
    }
  } else if (p.skippedByPlan > 0) {
    lines.push(`  ${fmt.count(p.skippedByPlan)} records skipped: already in the ledger`);
  }
  if (p.jobs.length > 0) {
    lines.push(`  Batch jobs (${p.jobs.length}):`);
    lines.push(
      fmt.table(
        p.jobs,
        [
          { header: 'SHARD', cell: (j) => String(j.shard), right: true },
          { header: 'STATUS', cell: (j) => j.status },
          { header: 'RECORDS', cell: (j) => fmt.count(j.records), right: true },
          { header: 'PROCESSED', cell: (j) => fmt.count(j.processed), right: true },
          { header: 'SUCCEEDED', cell: (j) => fmt.count(j.succeeded), right: true },
          { header: 'ERRORS', cell: (j) => fmt.count(j.failed), right: true },
          { header: 'RE-DRIVEN', cell: (j) => fmt.count(j.redriven), right: true },
          { header: 'SUBMITTED (UTC)', cell: (j) => fmt.time(j.submittedAt) },
          {
            header: 'TOOK',
            cell: (j) =>
              j.submittedAt && j.endedAt
                ? fmt.duration(Date.parse(j.endedAt) - Date.parse(j.submittedAt))
                : '-',
            right: true,
          },
          { header: 'JOB', cell: (j) => (j.jobArn ? j.jobArn.slice(j.jobArn.lastIndexOf('/') + 1) : '-') },
        ],
        '    ',
      ),
    );
    for (const j of p.jobs) {
      if (j.message) lines.push(`    shard ${j.shard}: ${fmt.clip(j.message, 160)}`);
      if (j.liveError) lines.push(`    shard ${j.shard}: not live (${fmt.clip(j.liveError, 160)})`);
    }
  }
  if (p.mapRuns.length > 0) {
    lines.push('  Map runs:');
    lines.push(
      fmt.table(
        p.mapRuns,
        [
          { header: 'MAP', cell: (r) => r.stateName },
          { header: 'STATUS', cell: (r) => r.status },
          { header: 'ITEMS', cell: (r) => `${fmt.count(r.total)} ${r.unit}` },
          { header: 'DONE', cell: (r) => fmt.count(r.done), right: true },
          { header: 'FAILED', cell: (r) => fmt.count(r.failed), right: true },
          { header: 'RUNNING', cell: (r) => fmt.count(r.running), right: true },
          { header: 'PENDING', cell: (r) => fmt.count(r.pending), right: true },
        ],
        '    ',
      ),
    );
  }
  const error =
    m?.error ??
    (view.execution?.error ? { code: view.execution.error, message: view.execution.cause ?? '' } : undefined);
  if (error) lines.push(`  error: ${error.code}: ${fmt.clip(error.message, 300)}`);
  if (view.status === 'UNFINISHED') {
    lines.push('  the run was planned but never finalized (an interrupted local run): run the corpus again');
  }
  if (p.finished && (m?.counts.failed ?? 0) + (m?.counts.invalid ?? 0) > 0) {
    lines.push(`  why records failed: corpus failures ${p.runId}`);
  }
  return lines.join('\n');
}
