// `sluice runs ID --watch`: follow a run until it ends. On a terminal, one line redrawn in place
// (a bar when the total is known); elsewhere, a plain line every few seconds; with --json, the
// run's JSON each time it changed (NDJSON), the last line being its end.
import { ApiError, UnreachableError } from './errors.ts';
import { fmtDuration, fmtInt, fmtRate, truncate, type Paint } from './format.ts';
import type { Api } from './client.ts';
import { paintState, runDurationMs, storedLine, type RunView } from './views.ts';

export const ENDED = new Set(['done', 'failed', 'stopped']);

/** Throughput over a sliding window of samples (the API saves progress about once a second). */
export class RateMeter {
  private samples: { t: number; n: number }[] = [];
  private readonly windowMs: number;
  constructor(windowMs = 10_000) {
    this.windowMs = windowMs;
  }
  add(t: number, n: number): void {
    this.samples.push({ t, n });
    while (this.samples.length > 2 && t - this.samples[0]!.t > this.windowMs) this.samples.shift();
  }
  /** Per second; NaN until two samples a moment apart. */
  get perSecond(): number {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || last.t - first.t < 200) return NaN;
    return ((last.n - first.n) / (last.t - first.t)) * 1000;
  }
}

/** Milliseconds left at `rate` per second; NaN when it cannot be told. */
export function etaMs(done: number, total: number, rate: number): number {
  if (!(total > 0) || !(rate > 0)) return NaN;
  return (Math.max(0, total - done) / rate) * 1000;
}

/** `[██████░░░░]` filled to done/total. */
export function bar(done: number, total: number, width: number): string {
  const f = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const full = Math.round(f * width);
  return `[${'█'.repeat(full)}${'░'.repeat(width - full)}]`;
}

/** A block moving back and forth: work is going on, its total is not known. */
export function spinnerBar(tick: number, width: number): string {
  const span = width - 3;
  const pos = span > 0 ? Math.abs((tick % (2 * span)) - span) : 0;
  return `[${'░'.repeat(span - pos)}███${'░'.repeat(pos)}]`;
}

/** Rows the consumers have stored of `published` lines, for a log run: both consumers must have all of them. */
export function storedOfLogRun(run: RunView): number | null {
  const s = run.stored;
  if (run.kind !== 'logs' || !s || s.raw_logs === undefined || s.web_requests === undefined) return null;
  return Math.min(s.raw_logs, s.web_requests + (s.log_rejects ?? 0));
}

/**
 * The lines a replay will publish, when the API tells enough to say: its `total`, or else an
 * estimate from the file's size (`fileBytes`) and the confirmed part of it (checkpoint: lines
 * `item` in `offset` bytes), at the lines per byte read so far. A run that is over has published
 * its total.
 */
export function totalOf(run: RunView): number | null {
  const r = run as { total?: unknown; fileBytes?: unknown; checkpoint?: { item?: unknown; offset?: unknown } | null };
  if (typeof r.total === 'number' && r.total > 0) return r.total;
  if (run.state !== 'running' && run.state !== 'stopping' && typeof r.fileBytes === 'number') return run.published;
  const item = r.checkpoint?.item;
  const offset = r.checkpoint?.offset;
  if (typeof r.fileBytes !== 'number' || typeof item !== 'number' || typeof offset !== 'number' || item <= 0 || offset <= 0) return null;
  return Math.max(run.published, Math.round((item * r.fileBytes) / offset));
}

export interface Frame {
  run: RunView;
  /** 'publish': the trigger is publishing; 'store': the run is done, the consumers are storing (--stored). */
  phase: 'publish' | 'store';
  rate: number;
  tick: number;
  now: number;
}

/** The one line a terminal shows, fitted to `columns`. */
export function progressLine(f: Frame, paint: Paint, columns = 100): string {
  const { run } = f;
  const barWidth = Math.max(10, Math.min(30, columns - 70));
  let done: number;
  let total: number | null;
  let what: string;
  if (f.phase === 'store') {
    done = storedOfLogRun(run) ?? 0;
    total = run.published;
    what = 'stored';
  } else {
    done = run.published;
    total = totalOf(run);
    what = run.kind === 'ev' ? 'messages' : 'lines';
  }
  const parts = [
    paintState(f.phase === 'store' ? 'storing' : run.state, paint),
    total !== null ? bar(done, total, barWidth) : spinnerBar(f.tick * 2, barWidth),
    total !== null ? `${fmtInt(done)}/${fmtInt(total)} ${what}` : `${fmtInt(done)} ${what}`,
    fmtRate(f.rate),
  ];
  const eta = total !== null ? etaMs(done, total, f.rate) : NaN;
  parts.push(Number.isFinite(eta) ? `ETA ${fmtDuration(eta)}` : `elapsed ${fmtDuration(runDurationMs(run, f.now))}`);
  if (f.phase === 'publish') {
    const stored = storedOfLogRun(run);
    if (stored !== null) parts.push(paint('dim', `stored ${fmtInt(stored)}`));
  }
  return truncate(parts.join('  '), columns - 1);
}

/** A line for logs and pipes. */
export function plainLine(f: Frame): string {
  const { run } = f;
  const state = f.phase === 'store' ? 'storing' : run.state;
  const total = f.phase === 'store' ? run.published : totalOf(run);
  const done = f.phase === 'store' ? (storedOfLogRun(run) ?? 0) : run.published;
  const count = total !== null ? `${fmtInt(done)}/${fmtInt(total)}` : fmtInt(done);
  const eta = total !== null ? etaMs(done, total, f.rate) : NaN;
  return (
    `${new Date(f.now).toISOString().replace(/\.\d+Z$/, 'Z')} run ${run.id} ${state}: ${count} ${f.phase === 'store' ? 'stored' : 'published'}, ${fmtRate(f.rate)}` +
    (Number.isFinite(eta) ? `, ETA ${fmtDuration(eta)}` : '') +
    (f.phase === 'publish' && run.stored ? `; stored ${storedLine(run.stored)}` : '')
  );
}

/** The last line: how the run ended. */
export function endLine(run: RunView, paint: Paint): string {
  const took = runDurationMs(run);
  const mark = run.state === 'done' ? paint('green', '✔') : run.state === 'failed' ? paint('red', '✖') : paint('yellow', '■');
  const what = run.kind === 'ev' ? 'messages' : 'lines';
  let line = `${mark} run ${run.id} ${paintState(run.state, paint)}: ${fmtInt(run.published)} ${what} published in ${fmtDuration(took)} (${fmtRate((run.published / Math.max(took, 1)) * 1000)}); stored ${storedLine(run.stored)}`;
  if (run.error) line += `\n  ${paint('red', run.error)}`;
  return line;
}

export interface WatchIO {
  write(s: string): void;
  /** A warning line (lost contact, retrying), without its newline. */
  warn(s: string): void;
  tty: boolean;
  columns(): number;
  paint: Paint;
  now(): number;
  sleep(ms: number): Promise<void>;
}

export interface WatchOptions {
  json: boolean;
  /** Keep going after the run is done until the consumers stored every published line (log runs). */
  stored?: boolean;
  intervalMs?: number;
  /** Plain (non-TTY) lines at most this often, plus every change of state. */
  plainEveryMs?: number;
  /** Give up after the API has not answered for this long. */
  unreachableForMs?: number;
}

/** Follows run `id` until it ends (and, with `stored`, until its lines are stored); returns its last state. */
export async function watchRun(api: Api, id: string, io: WatchIO, opts: WatchOptions): Promise<RunView> {
  const intervalMs = opts.intervalMs ?? 1_000;
  const plainEveryMs = opts.plainEveryMs ?? 5_000;
  const unreachableForMs = opts.unreachableForMs ?? 30_000;
  let meter = new RateMeter();
  let phase: Frame['phase'] = 'publish';
  let lastJson = '';
  let lastPlainAt = -Infinity;
  let lastPlainState = '';
  let failingSince: number | null = null;
  let drawn = false;
  const clear = () => {
    if (drawn) io.write('\r\x1b[K');
    drawn = false;
  };
  for (let tick = 0; ; tick++) {
    let run: RunView;
    try {
      run = (await api.get(`/v1/runs/${encodeURIComponent(id)}`)) as RunView;
      if (failingSince !== null) {
        clear();
        io.warn(`sluice: the API answers again`);
      }
      failingSince = null;
    } catch (err) {
      // A trigger restarting (a deploy, a crash: its runs resume elsewhere) is not the end of the watch.
      if (!(err instanceof UnreachableError) && !(err instanceof ApiError && err.status >= 500)) throw err;
      const now = io.now();
      if (failingSince === null) {
        failingSince = now;
        clear();
        io.warn(`sluice: lost contact with the API (${err instanceof UnreachableError ? err.reason : err.message}); retrying for ${fmtDuration(unreachableForMs)}`);
      } else if (now - failingSince >= unreachableForMs) throw err;
      await io.sleep(intervalMs);
      continue;
    }
    const now = io.now();
    const ended = ENDED.has(run.state);
    if (ended && phase === 'publish' && opts.stored && run.state === 'done' && storedOfLogRun(run) !== null) {
      phase = 'store';
      meter = new RateMeter(); // a rate of stored rows from here on, not of published lines
    }
    meter.add(now, phase === 'store' ? storedOfLogRun(run)! : run.published);
    const finished = phase === 'store' ? storedOfLogRun(run)! >= run.published : ended;
    const frame: Frame = { run, phase, rate: meter.perSecond, tick, now };
    if (opts.json) {
      const { updatedAt: _ignored, ...rest } = run;
      const key = JSON.stringify(rest);
      if (key !== lastJson || finished) io.write(`${JSON.stringify(run)}\n`);
      lastJson = key;
    } else if (io.tty) {
      clear();
      if (!finished) {
        io.write(progressLine(frame, io.paint, io.columns()));
        drawn = true;
      }
    } else {
      const state = `${phase}:${run.state}`;
      if (!finished && (state !== lastPlainState || now - lastPlainAt >= plainEveryMs)) {
        io.write(`${plainLine(frame)}\n`);
        lastPlainAt = now;
        lastPlainState = state;
      }
    }
    if (finished) {
      if (!opts.json) io.write(`${endLine(run, io.paint)}\n`);
      return run;
    }
    await io.sleep(intervalMs);
  }
}
