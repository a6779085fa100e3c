/**
 * The shape of what `corpus doctor` finds: one result per check, each pass, warn, fail or skip, with the fix, and the
 * text it prints.
 */

/** pass: fine. warn: works, but worth a look. fail: blocks the deploy or a run. skip: could not be checked. */
export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

/** One check's result. */
export interface CheckResult {
  /** Stable id, for scripts (`credentials`, `bootstrap`, `model`, ...). */
  readonly id: string;
  /** What was checked, for people. */
  readonly title: string;
  readonly status: CheckStatus;
  /** What was found, in one line. */
  readonly summary: string;
  /** More of what was found. */
  readonly details?: readonly string[];
  /** What to do about a warning or a failure, step by step. */
  readonly fix?: readonly string[];
}

/** What `corpus doctor` prints (as JSON with `--json`). */
export interface DoctorReport {
  /** `environment dev (us-east-1)` or `the local runtime (.corpus-local)`. */
  readonly target: string;
  readonly checks: readonly CheckResult[];
  /** True when a check failed: something blocks the deploy or a run (the command exits 1). */
  readonly blocking: boolean;
}

/** A report of `checks` on `target`. */
export function reportOf(target: string, checks: readonly CheckResult[]): DoctorReport {
  return { target, checks, blocking: checks.some((c) => c.status === 'fail') };
}

/** A check's result with the given fields. */
export function result(
  id: string,
  title: string,
  status: CheckStatus,
  summary: string,
  more: { details?: readonly string[]; fix?: readonly string[] } = {},
): CheckResult {
  return {
    id,
    title,
    status,
    summary,
    ...(more.details && more.details.length > 0 ? { details: more.details } : {}),
    ...(more.fix && more.fix.length > 0 ? { fix: more.fix } : {}),
  };
}

const LABEL: Record<CheckStatus, string> = { pass: 'PASS', warn: 'WARN', fail: 'FAIL', skip: 'SKIP' };

/** The report as text: a line per check, its details and fix indented below it, and a verdict. */
export function formatDoctorReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((c) => c.title.length), 10);
  const lines = [`corpus doctor: ${report.target}`, ''];
  for (const check of report.checks) {
    lines.push(`  ${LABEL[check.status]}  ${check.title.padEnd(width)}  ${check.summary}`);
    for (const detail of check.details ?? []) lines.push(`        ${' '.repeat(width)}  ${detail}`);
    for (const [i, step] of (check.fix ?? []).entries()) {
      lines.push(`        ${' '.repeat(width)}  ${i === 0 ? 'fix: ' : '     '}${step}`);
    }
  }
  const count = (status: CheckStatus): number => report.checks.filter((c) => c.status === status).length;
  const failed = count('fail');
  const warned = count('warn');
  const skipped = count('skip');
  const tally = [
    `${count('pass')} passed`,
    ...(warned > 0 ? [`${warned} warning${warned === 1 ? '' : 's'}`] : []),
    ...(failed > 0 ? [`${failed} failed`] : []),
    ...(skipped > 0 ? [`${skipped} skipped`] : []),
  ].join(', ');
  lines.push('');
  lines.push(
    report.blocking
      ? `${tally}: something blocks (exit code 1); fix the failures above and run corpus doctor again.`
      : `${tally}: nothing blocks.`,
  );
  return lines.join('\n');
}
