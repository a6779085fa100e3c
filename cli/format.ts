/** Terminal formatting shared by the commands: tables, counts, durations, money, bars. */

/** A count with thousands separators (`12,345`); `-` for a missing value. */
export function count(n: number | null | undefined): string {
  return n === null || n === undefined ? '-' : Math.round(n).toLocaleString('en-US');
}

/** A fraction as a percentage (`4.2%`); `-` for a missing value. */
export function percent(fraction: number | null | undefined, digits = 1): string {
  return fraction === null || fraction === undefined ? '-' : `${(fraction * 100).toFixed(digits)}%`;
}

/** A duration in the two largest units (`2h 05m`, `3m 07s`, `4.2s`); `-` for a missing value. */
export function duration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const two = (n: number): string => String(n).padStart(2, '0');
  if (d > 0) return `${d}d ${two(h)}h`;
  if (h > 0) return `${h}h ${two(m)}m`;
  return `${m}m ${two(sec)}s`;
}

/** US dollars: 4 decimals under a dollar (batch runs cost fractions of a cent per record), else 2. */
export function usd(amount: number | null | undefined): string {
  if (amount === null || amount === undefined) return '-';
  return `$${amount.toFixed(Math.abs(amount) < 1 ? 4 : 2)}`;
}

/** A rate per second (`12.3/s`, or `12.3 records/s` with a unit); `-` when unknown. */
export function rate(perSecond: number | null | undefined, unit = ''): string {
  if (perSecond === null || perSecond === undefined) return '-';
  const value = perSecond >= 100 ? Math.round(perSecond).toLocaleString('en-US') : perSecond.toFixed(1);
  return unit ? `${value} ${unit}/s` : `${value}/s`;
}

/** An ISO-8601 time as `YYYY-MM-DD HH:MM:SS` UTC; `-` when missing. */
export function time(iso: string | null | undefined): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  return Number.isNaN(t) ? iso : new Date(t).toISOString().slice(0, 19).replace('T', ' ');
}

/** A text progress bar of `width` cells. */
export function bar(fraction: number, width = 30): string {
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

/** Shortens text to `max` characters with an ellipsis. */
export function clip(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length <= max ? flat : `${flat.slice(0, Math.max(0, max - 1))}…`;
}

/** A column of {@link table}: header, cell text, and whether to right-align it (numbers). */
export interface Column<T> {
  readonly header: string;
  readonly cell: (row: T) => string;
  readonly right?: boolean;
}

/** Aligned columns under a header row, two spaces apart, each line indented by `indent`. */
export function table<T>(rows: readonly T[], columns: readonly Column<T>[], indent = '  '): string {
  const cells = rows.map((row) => columns.map((c) => c.cell(row)));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: readonly string[]): string =>
    indent +
    values
      .map((v, i) => (columns[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map((r) => line(r))].join('\n');
}
