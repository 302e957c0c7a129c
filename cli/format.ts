// Human output: aligned tables, numbers with thousands separators, colour only where it helps.
import { stripVTControlCharacters, styleText } from 'node:util';

export type Style = 'bold' | 'dim' | 'red' | 'green' | 'yellow' | 'cyan';
export type Paint = (style: Style, text: string) => string;

/** Colour on a terminal only, and never with NO_COLOR (https://no-color.org) or TERM=dumb; FORCE_COLOR forces it. */
export function colorEnabled(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR) return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '') return env.FORCE_COLOR !== '0' && env.FORCE_COLOR !== 'false';
  return stream.isTTY === true && env.TERM !== 'dumb';
}

export function painter(enabled: boolean): Paint {
  return enabled ? (style, text) => styleText(style, text, { validateStream: false }) : (_style, text) => text;
}

export const visibleLength = (s: string) => stripVTControlCharacters(s).length;

export const fmtInt = (n: number | null | undefined) => (n === null || n === undefined || !Number.isFinite(n) ? '–' : Math.round(n).toLocaleString('en-US'));

/** 1,536 -> "1.5 KiB"; exact bytes below 1 KiB. */
export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) (v /= 1024), i++;
  return i === 0 ? `${fmtInt(v)} B` : `${v.toLocaleString('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 })} ${units[i]}`;
}

/** 65_000 -> "1m 05s"; 3_725_000 -> "1h 02m"; 4_200 -> "4s". */
export function fmtDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${String(h % 24).padStart(2, '0')}h`;
}

/** "12,345/s"; one decimal under 10. */
export const fmtRate = (perS: number) =>
  !Number.isFinite(perS) ? '–' : `${perS < 10 ? perS.toLocaleString('en-US', { maximumFractionDigits: 1 }) : fmtInt(perS)}/s`;

/** An API instant ("2026-11-25T21:23:05.123Z") as "2026-11-25 21:23:05" (UTC, as the API keeps it). */
export const fmtTime = (iso: string | null | undefined) => (iso ? iso.replace('T', ' ').replace(/(\.\d+)?Z$/, '') : '–');

/** Cut to `max` visible characters with an ellipsis (plain text only). */
export const truncate = (s: string, max: number) => (s.length <= max ? s : `${s.slice(0, Math.max(0, max - 1))}…`);

export interface Column {
  header: string;
  align?: 'left' | 'right';
}

/** Aligned columns, two spaces apart, header first; the last left-aligned column is not padded. */
export function table(columns: Column[], rows: string[][], paint: Paint = painter(false)): string {
  const widths = columns.map((c, i) => Math.max(visibleLength(c.header), ...rows.map((r) => visibleLength(r[i] ?? ''))));
  const line = (cells: string[]) =>
    columns
      .map((c, i) => {
        const cell = cells[i] ?? '';
        const pad = ' '.repeat(widths[i]! - visibleLength(cell));
        if (c.align === 'right') return pad + cell;
        return i === columns.length - 1 ? cell : cell + pad;
      })
      .join('  ')
      .trimEnd();
  return [paint('bold', line(columns.map((c) => c.header))), ...rows.map(line)].join('\n') + '\n';
}

/** "key  value" lines, keys aligned. */
export function keyValues(pairs: [string, string][], paint: Paint = painter(false)): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${paint('dim', k.padEnd(width))}  ${v}`).join('\n') + '\n';
}
