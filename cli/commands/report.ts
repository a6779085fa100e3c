import { Command } from 'commander';
import type { CollectShardSummary } from '../../lambda/batch/collect/collect-contract';
import type { RunManifest } from '../../lambda/shared/contracts';
import {
  withBackend,
  withBackendOptions,
  write,
  writeJson,
  type BackendOptions,
  type CliContext,
} from '../context';
import { estimateCost, splitTokens, type CostReport, type PriceTable, type TokenReport } from '../cost';
import { EXIT, NotFoundError } from '../errors';
import * as fmt from '../format';
import { checkRunId } from '../run-store';
import { FAILED_STATUSES, loadRun, type RunView } from '../run-view';

/** `corpus report RUN`: what a finished run did and cost. */
export interface RunReport {
  readonly runId: string;
  readonly status: string;
  readonly mode: RunManifest['mode'];
  readonly modelId: string | null;
  readonly counts: RunManifest['counts'];
  /** The manifest's revision: above 1 once the failure lane settled records after the run. */
  readonly revision: number;
  /** Model calls (every attempt) of the run's functions, the failure lane's included. */
  readonly modelCalls: RunManifest['modelCalls'];
  readonly tokens: TokenReport;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationMs: number;
  /** Batch mode: the batch jobs by final status. */
  readonly jobs: { readonly total: number; readonly byStatus: Readonly<Record<string, number>> } | null;
  readonly cost: CostReport;
  readonly error?: { readonly code: string; readonly message: string };
}

/** Builds the report of a finalized run from its manifest and collect markers, priced with the environment's table. */
export function buildReport(
  view: RunView,
  manifest: RunManifest,
  markers: readonly CollectShardSummary[],
  pricing: PriceTable,
): RunReport {
  const batchTokens = markers.reduce(
    (sum, m) => ({ input: sum.input + m.inputTokens, output: sum.output + m.outputTokens }),
    { input: 0, output: 0 },
  );
  const tokens = splitTokens(manifest.tokens, batchTokens);
  const byStatus: Record<string, number> = {};
  for (const j of manifest.jobs ?? []) byStatus[j.status] = (byStatus[j.status] ?? 0) + 1;
  return {
    runId: manifest.runId,
    status: view.status,
    mode: manifest.mode,
    modelId: manifest.modelId,
    counts: manifest.counts,
    revision: manifest.revision ?? 1,
    modelCalls: manifest.modelCalls ?? { total: 0, throttled: 0, retried: 0 },
    tokens,
    startedAt: manifest.startedAt,
    finishedAt: manifest.finishedAt,
    durationMs: manifest.durationMs,
    jobs: manifest.jobs ? { total: manifest.jobs.length, byStatus } : null,
    cost: estimateCost(tokens, manifest.modelId, pricing),
    ...(manifest.error ? { error: manifest.error } : {}),
  };
}

/** `corpus report RUN`. */
export function reportCommand(ctx: CliContext): Command {
  return withBackendOptions(
    new Command('report')
      .summary('counts, tokens, duration and cost estimate of a finished run')
      .description(
        "A finished run's counts, tokens, duration and cost estimate: Converse tokens at the on-demand price, batch " +
          "tokens at the batch price, from the environment's pricing table in cdk.json (by default the model catalog's list prices), " +
          'and the saving batch mode made against all on-demand. --json has `tokens` and a `cost` object. ' +
          'Exit code 1 when the run failed or has not finished.',
      )
      .argument('<run>', 'the runId (see `corpus runs`)'),
  ).action(async (runId: string, options: BackendOptions) => {
    await withBackend(
      ctx,
      options,
      async (backend, store) => {
        const view = await loadRun(backend, store, runId);
        if (!view.manifest) {
          throw new NotFoundError(
            `run ${runId} has no manifest yet (${view.status}): the report needs a finished run; see \`corpus status ${runId}\``,
          );
        }
        const markers = view.mode === 'batch' ? await store.collectMarkers(runId) : [];
        const report = buildReport(view, view.manifest, markers, backend.config.pricing);
        if (options.json) writeJson(ctx.stdout, report);
        else write(ctx.stdout, formatReport(report));
        return FAILED_STATUSES.has(view.status) || view.manifest.status === 'FAILED'
          ? EXIT.notFoundOrFailed
          : EXIT.ok;
      },
      () => checkRunId(runId),
    );
  });
}

/** The text of `corpus report`. */
export function formatReport(r: RunReport): string {
  const c = r.counts;
  const t = r.tokens;
  const cost = r.cost;
  const lines = [
    `Run ${r.runId}: ${r.status} (mode ${r.mode ?? '-'}, model ${r.modelId ?? '-'})`,
    `  time      ${fmt.time(r.startedAt)} to ${fmt.time(r.finishedAt)} UTC, ${fmt.duration(r.durationMs)}` +
      (r.durationMs > 0 && c.succeeded + c.failed > 0
        ? `, ${fmt.rate((c.succeeded + c.failed) / (r.durationMs / 1000), 'records')}`
        : ''),
    `  lines     ${fmt.count(c.lines)} = ${fmt.count(c.records)} records + ${fmt.count(c.invalid)} bad + ${fmt.count(c.duplicates)} duplicates`,
    `  records   ${fmt.count(c.records)} = ${fmt.count(c.succeeded)} succeeded + ${fmt.count(c.failed)} failed + ${fmt.count(c.skipped)} skipped (already in the ledger)` +
      ((c.pending ?? 0) > 0 ? ` + ${fmt.count(c.pending)} pending in the failure lane` : ''),
  ];
  if (r.revision > 1 || (c.recovered ?? 0) > 0) {
    lines.push(
      `  lane      ${fmt.count(c.recovered ?? 0)} records recovered by the failure lane after the run (manifest revision ${r.revision})`,
    );
  }
  lines.push(
    `  calls     ${fmt.count(r.modelCalls.total)} model calls (${fmt.count(r.modelCalls.throttled)} throttled, ${fmt.count(r.modelCalls.retried)} retried)`,
  );
  if (r.jobs) {
    lines.push(
      `  jobs      ${r.jobs.total} batch jobs: ${Object.entries(r.jobs.byStatus)
        .map(([s, n]) => `${n} ${s}`)
        .join(', ')}`,
    );
  }
  lines.push(
    `  tokens    ${fmt.count(t.input)} in, ${fmt.count(t.output)} out` +
      ` (batch ${fmt.count(t.batch.input)} in / ${fmt.count(t.batch.output)} out; on demand ${fmt.count(t.onDemand.input)} in / ${fmt.count(t.onDemand.output)} out)`,
  );
  if (!cost.priced) {
    lines.push(`  cost      unknown: ${cost.note ?? 'no price'}`);
  } else {
    const p = cost.prices!;
    const batchPrices =
      p.batchInputPerMillion !== undefined || p.batchOutputPerMillion !== undefined
        ? `batch $${p.batchInputPerMillion ?? p.inputPerMillion * p.batchDiscount} in, $${p.batchOutputPerMillion ?? p.outputPerMillion * p.batchDiscount} out`
        : `batch x${p.batchDiscount}`;
    lines.push(
      `  cost      ${fmt.usd(cost.total)}: on demand ${fmt.usd(cost.onDemand)} + batch ${fmt.usd(cost.batch)}` +
        ` (prices per million tokens: $${p.inputPerMillion} in, $${p.outputPerMillion} out, ${batchPrices})`,
    );
    lines.push(
      `  all on demand it would have cost ${fmt.usd(cost.allOnDemand)}: ` +
        (cost.saving && cost.saving > 0
          ? `batch mode saved ${fmt.usd(cost.saving)} (${cost.savingPercent}%)`
          : 'no saving (no batch tokens)'),
    );
  }
  if (r.error) lines.push(`  error     ${r.error.code}: ${fmt.clip(r.error.message, 300)}`);
  return lines.join('\n');
}
