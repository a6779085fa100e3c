import { Command } from 'commander';
import type { ReconcileOutcome } from '../backend';
import {
  withBackend,
  withBackendOptions,
  write,
  writeJson,
  type BackendOptions,
  type CliContext,
} from '../context';
import { EXIT } from '../errors';
import * as fmt from '../format';

/** `corpus reconcile`: runs the batch job reconciler once, now. */
export function reconcileCommand(ctx: CliContext): Command {
  return withBackendOptions(
    new Command('reconcile')
      .summary('resume batch jobs whose end event was lost, now')
      .description(
        'Run the batch job reconciler now instead of waiting for its schedule: it resumes shards whose job ended ' +
          'without a state-change event reaching the pipeline and heartbeats the waits of running jobs. On AWS it ' +
          "invokes the stack's Reconcile function; offline it lists the jobs still waited on (the reconciler runs " +
          'every 2 s inside `corpus local run`).',
      ),
  ).action(async (options: BackendOptions) => {
    await withBackend(ctx, options, async (backend) => {
      const outcome = await backend.reconcile();
      if (options.json) writeJson(ctx.stdout, outcome);
      else write(ctx.stdout, formatReconcile(outcome));
      return EXIT.ok;
    });
  });
}

/** The text of `corpus reconcile`. */
export function formatReconcile(o: ReconcileOutcome): string {
  const lines: string[] = [];
  if (o.summary) {
    lines.push(
      `Reconciled with ${o.via}: ${Object.entries(o.summary)
        .map(([k, v]) => `${k} ${fmt.count(v)}`)
        .join(', ')}`,
    );
  }
  if (o.inFlight) {
    lines.push(`${fmt.count(o.inFlight.length)} batch jobs with an open wait`);
    if (o.inFlight.length > 0) {
      lines.push(
        fmt.table(o.inFlight, [
          { header: 'SHARD', cell: (j) => String(j.shard), right: true },
          { header: 'STATUS', cell: (j) => j.status },
          { header: 'SUBMITTED (UTC)', cell: (j) => fmt.time(j.submittedAt) },
          { header: 'JOB', cell: (j) => j.jobArn },
        ]),
      );
    }
  }
  if (o.note) lines.push(`  ${o.note}`);
  return lines.join('\n');
}
