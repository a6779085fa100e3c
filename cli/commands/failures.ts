import { Command, Option } from 'commander';
import type { FailureStage } from '../../lambda/shared/contracts';
import {
  positiveInt,
  withBackend,
  withBackendOptions,
  write,
  writeJson,
  type BackendOptions,
  type CliContext,
} from '../context';
import { EXIT } from '../errors';
import * as fmt from '../format';
import { checkRunId, type FailureRecord, type RunStore } from '../run-store';
import { loadRun } from '../run-view';
import type { Backend } from '../backend';

/** The stages a failure can have happened at. */
const STAGES: readonly FailureStage[] = ['plan', 'converse', 'batch', 'fanout', 'finalize'];

/** Filters of `corpus failures`. */
export interface FailureFilter {
  /** Only this error code (exact, case-insensitive). */
  readonly code?: string;
  readonly stage?: FailureStage;
  /** Rows to list (the counts cover every match). */
  readonly limit: number;
}

/** What `corpus failures` found. */
export interface FailureQueryResult {
  readonly runId: string;
  /** Failure lines in the run (every stage and code). */
  readonly total: number;
  /** Lines that match the filter. */
  readonly matched: number;
  /** Matches by error code, most frequent first. */
  readonly byCode: Readonly<Record<string, number>>;
  /** Matches by stage. */
  readonly byStage: Readonly<Record<string, number>>;
  /** The first `limit` matches. */
  readonly failures: readonly FailureRecord[];
}

/** Reads a run's failure files (streamed: memory holds only the listed rows) and filters them. */
export async function queryFailures(
  store: RunStore,
  runId: string,
  filter: FailureFilter,
): Promise<FailureQueryResult> {
  const code = filter.code?.toLowerCase();
  const byCode = new Map<string, number>();
  const byStage = new Map<string, number>();
  const failures: FailureRecord[] = [];
  let total = 0;
  let matched = 0;
  for await (const failure of store.failures(runId)) {
    total++;
    if (code !== undefined && failure.error.code.toLowerCase() !== code) continue;
    if (filter.stage !== undefined && failure.stage !== filter.stage) continue;
    matched++;
    byCode.set(failure.error.code, (byCode.get(failure.error.code) ?? 0) + 1);
    byStage.set(failure.stage, (byStage.get(failure.stage) ?? 0) + 1);
    if (failures.length < filter.limit) failures.push(failure);
  }
  return {
    runId,
    total,
    matched,
    byCode: Object.fromEntries([...byCode].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))),
    byStage: Object.fromEntries(byStage),
    failures,
  };
}

/** `corpus failures RUN`: the failed records and bad lines of a run, with stage, code and reason. */
export function failuresCommand(ctx: CliContext): Command {
  return withBackendOptions(
    new Command('failures')
      .summary('failed records and bad lines of a run, with stage, code and reason')
      .description(
        'List the failed records and bad lines of a run (runs/<runId>/failures/ in the output bucket): recordId or ' +
          'line number, stage, error code and reason, with counts by code and stage. Filter by code and stage.',
      )
      .argument('<run>', 'the runId (see `corpus runs`)')
      .option('--code <code>', 'only failures with this error code (e.g. ValidationException, InvalidJson)')
      .addOption(new Option('--stage <stage>', 'only failures at this stage').choices(STAGES))
      .addOption(
        new Option('--limit <n>', 'rows to list (counts cover all)').argParser(positiveInt).default(50),
      ),
  ).action(
    async (
      runId: string,
      options: BackendOptions & { code?: string; stage?: FailureStage; limit: number },
    ) => {
      await withBackend(
        ctx,
        options,
        async (backend: Backend, store: RunStore) => {
          await loadRun(backend, store, runId);
          const result = await queryFailures(store, runId, {
            ...(options.code !== undefined ? { code: options.code } : {}),
            ...(options.stage !== undefined ? { stage: options.stage } : {}),
            limit: options.limit,
          });
          if (options.json) writeJson(ctx.stdout, result);
          else write(ctx.stdout, formatFailures(result, filterText(options)));
          return EXIT.ok;
        },
        () => checkRunId(runId),
      );
    },
  );
}

function filterText(options: { code?: string; stage?: string }): string {
  const parts = [
    ...(options.code !== undefined ? [`code ${options.code}`] : []),
    ...(options.stage !== undefined ? [`stage ${options.stage}`] : []),
  ];
  return parts.join(', ');
}

/** The text of `corpus failures`. */
export function formatFailures(result: FailureQueryResult, filter = ''): string {
  if (result.total === 0) return `Run ${result.runId} has no failures.`;
  const head =
    `Run ${result.runId}: ${fmt.count(result.total)} failures` +
    (filter ? `, ${fmt.count(result.matched)} with ${filter}` : '') +
    (result.failures.length < result.matched
      ? ` (listing the first ${fmt.count(result.failures.length)})`
      : '');
  if (result.matched === 0) return `${head}.`;
  const lines = [
    head,
    fmt.table(result.failures, [
      {
        header: 'RECORD',
        cell: (f) => f.recordId ?? (f.line !== undefined ? `line ${f.line}` : '-'),
      },
      { header: 'STAGE', cell: (f) => f.stage },
      { header: 'CODE', cell: (f) => f.error.code },
      {
        header: 'RETRY',
        cell: (f) => (f.error.retryable === undefined ? '-' : f.error.retryable ? 'yes' : 'no'),
      },
      { header: 'REASON', cell: (f) => fmt.clip(f.error.message, 100) },
    ]),
    `  by code: ${Object.entries(result.byCode)
      .map(([code, n]) => `${code} ${fmt.count(n)}`)
      .join(', ')}`,
    `  by stage: ${Object.entries(result.byStage)
      .map(([stage, n]) => `${stage} ${fmt.count(n)}`)
      .join(', ')}`,
  ];
  return lines.join('\n');
}
