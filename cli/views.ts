// The API's answers as human text. The shapes are the trigger's own types (functions/trigger),
// imported as types only: the command talks to the API over HTTP and loads none of its code.
import type { Run } from '../functions/trigger/runs.ts';
import type { Point, StatusCounts, TopItem } from '../functions/trigger/stats.ts';
import { fmtBytes, fmtDuration, fmtInt, fmtRate, fmtTime, keyValues, painter, table, truncate, type Paint } from './format.ts';

/** GET /v1/runs/:id: a run and the rows the consumers stored for it. */
export type RunView = Omit<Run, 'checkpoint'> & { checkpoint?: Run['checkpoint']; stored?: Record<string, number> };

export interface StatsView {
  source: string | null;
  from: string;
  to: string;
  bucket: string;
  totals: Omit<Point, 't'>;
  series: Point[];
}
export interface TopView {
  source: string | null;
  dimension: string;
  from: string;
  to: string;
  items: TopItem[];
}

const STATE_STYLE = { done: 'green', failed: 'red', running: 'cyan', stopping: 'yellow', stopped: 'yellow' } as const;
export const paintState = (state: string, paint: Paint) => paint(STATE_STYLE[state as keyof typeof STATE_STYLE] ?? 'bold', state);

const param = (run: RunView, key: string): unknown => (run.params ?? {})[key];

/** What a run reads: its file or glob (and whether it follows it), an upload, or the EV simulation it plays. */
export function describeRun(run: RunView): string {
  if (run.kind === 'ev') {
    const sessions = param(run, 'sessions');
    const seed = param(run, 'seed');
    const parts = [`${fmtInt(Number(sessions))} sessions`];
    if (seed !== undefined) parts.push(`seed ${String(seed)}`);
    const fault = Number(param(run, 'faultRate') ?? 0);
    if (fault > 0) parts.push(`faults ${fault}`);
    return parts.join(', ');
  }
  if (run.file === null) return '(upload)';
  return param(run, 'follow') === true ? `${run.file} (follow)` : run.file;
}

/** Wall time of a run: to its end, or to now while it runs. */
export function runDurationMs(run: RunView, now = Date.now()): number {
  const end = run.finishedAt ? Date.parse(run.finishedAt) : now;
  return end - Date.parse(run.createdAt);
}

export function runsTable(runs: RunView[], paint: Paint = painter(false), now = Date.now()): string {
  if (runs.length === 0) return 'no runs yet: start one with `sluice logs replay FILE` or `sluice ev run --sessions N`\n';
  return table(
    [
      { header: 'ID' },
      { header: 'KIND' },
      { header: 'STATE' },
      { header: 'SOURCE' },
      { header: 'PUBLISHED', align: 'right' },
      { header: 'STARTED (UTC)' },
      { header: 'TOOK', align: 'right' },
      { header: 'WHAT' },
    ],
    runs.map((r) => [
      r.id,
      r.kind,
      paintState(r.state, paint),
      r.source ?? '–',
      fmtInt(r.published),
      fmtTime(r.createdAt),
      fmtDuration(runDurationMs(r, now)),
      truncate(describeRun(r), 60),
    ]),
    paint,
  );
}

/** "raw_logs 20,000 · web_requests 19,996 · log_rejects 4" */
export const storedLine = (stored: Record<string, number> | undefined) =>
  stored && Object.keys(stored).length > 0 ? Object.entries(stored).map(([t, n]) => `${t} ${fmtInt(n)}`).join(' · ') : '–';

export function runDetails(run: RunView, paint: Paint = painter(false), now = Date.now()): string {
  const took = runDurationMs(run, now);
  const pairs: [string, string][] = [
    ['id', run.id],
    ['kind', run.kind],
    ['state', paintState(run.state, paint)],
    ['source', run.source ?? '–'],
    [run.kind === 'ev' ? 'simulates' : 'reads', describeRun(run)],
    ['lines', `${fmtInt(run.lines)} read, ${fmtInt(run.published)} published (confirmed by the broker)`],
    ['stored', storedLine(run.stored)],
    ['started', `${fmtTime(run.createdAt)} UTC`],
  ];
  if (run.finishedAt) pairs.push(['finished', `${fmtTime(run.finishedAt)} UTC (took ${fmtDuration(took)}, ${fmtRate((run.published / Math.max(took, 1)) * 1000)})`]);
  else pairs.push(['running for', fmtDuration(took)]);
  if (run.kind === 'ev' && run.params) {
    const p = run.params;
    pairs.push(['params', ['speed', 'sampleIntervalS', 'faultRate', 'startTime'].filter((k) => p[k] !== undefined).map((k) => `${k} ${String(p[k])}`).join(', ')]);
  }
  if (run.error) pairs.push(['error', paint('red', run.error)]);
  return keyValues(pairs, paint);
}

const STATUS_KEYS: (keyof StatusCounts)[] = ['1xx', '2xx', '3xx', '4xx', '5xx'];

export function statsView(s: StatsView, paint: Paint = painter(false)): string {
  // 1xx is rare in access logs: shown only when there is some.
  const classes = STATUS_KEYS.filter((k) => k !== '1xx' || s.totals.status[k] > 0);
  const head =
    keyValues(
      [
        ['source', s.source ?? 'all'],
        ['range', `${fmtTime(s.from)} → ${fmtTime(s.to)} UTC, by ${s.bucket}`],
        ['requests', fmtInt(s.totals.requests)],
        ['visitors', fmtInt(s.totals.visitors)],
        ['bytes', fmtBytes(s.totals.bytes)],
        ['status', classes.map((k) => `${k} ${fmtInt(s.totals.status[k])}`).join('   ')],
      ],
      paint,
    );
  if (s.series.length === 0) return `${head}\nno requests in this range (the range defaults to the last hour: see --from and --to)\n`;
  const body = table(
    [
      { header: `${s.bucket.toUpperCase()} (UTC)` },
      { header: 'REQUESTS', align: 'right' },
      { header: 'VISITORS', align: 'right' },
      { header: 'BYTES', align: 'right' },
      ...classes.map((k) => ({ header: k.toUpperCase(), align: 'right' as const })),
    ],
    s.series.map((p) => [
      fmtTime(p.t).slice(0, s.bucket === 'day' ? 10 : 16),
      fmtInt(p.requests),
      fmtInt(p.visitors),
      fmtBytes(p.bytes),
      ...classes.map((k) => fmtInt(p.status[k])),
    ]),
    paint,
  );
  return `${head}\n${body}`;
}

export function topView(t: TopView, paint: Paint = painter(false), width = 80): string {
  const head = `top ${t.dimension} · source ${t.source ?? 'all'} · ${fmtTime(t.from)} → ${fmtTime(t.to)} UTC (whole days)\n\n`;
  if (t.items.length === 0) return `${head}nothing in this range (the range defaults to the last hour: see --from and --to)\n`;
  return (
    head +
    table(
      [{ header: '#', align: 'right' }, { header: 'REQUESTS', align: 'right' }, { header: 'VISITORS', align: 'right' }, { header: 'BYTES', align: 'right' }, { header: t.dimension.toUpperCase() }],
      t.items.map((item, i) => [String(i + 1), fmtInt(item.requests), fmtInt(item.visitors), fmtBytes(item.bytes), truncate(item.value, width)]),
      paint,
    )
  );
}
