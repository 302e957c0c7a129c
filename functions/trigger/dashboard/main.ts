// The dashboard page: plain TypeScript and Chart.js, bundled by build.mjs. Everything it shows
// comes from the trigger's API with the bearer token (kept in sessionStorage for this tab's
// session), and live from ONE event stream, GET /v1/events, authenticated by the short-lived
// cookie POST /v1/session sets. Values from logs (paths, referrers, agents) are hostile: they
// only ever reach the page as textContent, never as markup.
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip } from 'chart.js';
import type { EvSummary, Extent, HealthSnapshot, MinutesEvent, RunView, Snapshot } from './protocol.ts';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

const TOKEN_KEY = 'sluice.token';
const $ = <T extends HTMLElement = HTMLElement>(sel: string, root: ParentNode = document): T => {
  const el = root.querySelector<T>(sel);
  if (!el) throw new Error(`dashboard: no element ${sel}`);
  return el;
};
const fmt = (n: number) => n.toLocaleString('en-US');
const bytes = (n: number) => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
};
function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string | number, attrs: Record<string, string> = {}): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
const row = (cells: (HTMLElement | string | number)[]) => {
  const tr = el('tr');
  for (const c of cells) tr.append(c instanceof HTMLElement ? c : el('td', c));
  return tr;
};
const num = (n: number) => el('td', fmt(n), { class: 'num' });

// --- the API, with the token --------------------------------------------------------------

class Unauthorized extends Error {}

async function api<T>(method: string, url: string, body?: unknown): Promise<T> {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Unauthorized('not signed in');
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? null : JSON.stringify(body),
    credentials: 'same-origin',
  });
  const text = await res.text();
  const data = text ? (JSON.parse(text) as unknown) : null;
  if (res.status === 401) {
    signOut('The token was refused: sign in again.');
    throw new Unauthorized('token refused');
  }
  if (!res.ok) throw new Error((data as { message?: string } | null)?.message ?? `${method} ${url}: ${res.status}`);
  return data as T;
}

// --- sign in / out --------------------------------------------------------------------------

let stream: EventSource | null = null;
let refreshTimer: number | undefined;

function showApp(on: boolean) {
  $('#login').hidden = on;
  $('#app').hidden = !on;
  $('#logout').hidden = !on;
}

function signOut(message = '') {
  sessionStorage.removeItem(TOKEN_KEY);
  stream?.close();
  stream = null;
  clearInterval(refreshTimer);
  setConn('offline');
  showApp(false);
  $('#login-error').textContent = message;
}

/** Exchanges the token for the stream's cookie (10 minutes; renewed every 5 while the page is open). */
const openSession = () => api<{ expiresAt: string }>('POST', '/v1/session');

async function signIn(token: string): Promise<void> {
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await openSession();
  } catch (err) {
    if (!(err instanceof Unauthorized)) signOut(`Cannot reach the trigger: ${(err as Error).message}`);
    return;
  }
  showApp(true);
  connect();
  refreshTimer = window.setInterval(() => void openSession().catch(() => {}), 5 * 60_000);
  void refreshWeb();
}

function setConn(state: 'offline' | 'live' | 'reconnecting') {
  const c = $('#conn');
  c.dataset.state = state;
  c.textContent = state;
}

let retryMs = 1_000;
function connect() {
  stream?.close();
  const es = new EventSource('/v1/events');
  stream = es;
  es.onopen = () => ((retryMs = 1_000), setConn('live'));
  es.onerror = () => {
    if (stream !== es) return;
    setConn('reconnecting');
    // The browser reconnects by itself (with Last-Event-ID) after a dropped connection; a
    // refused one (the cookie expired, the trigger restarted with another token) closes it.
    if (es.readyState === EventSource.CLOSED) {
      window.setTimeout(() => void openSession().then(connect, () => {}), retryMs);
      retryMs = Math.min(retryMs * 2, 30_000);
    }
  };
  const on = <T>(name: string, apply: (data: T) => void) =>
    es.addEventListener(name, (e) => apply(JSON.parse((e as MessageEvent<string>).data) as T));
  on<Snapshot>('snapshot', (s) => {
    runs.clear();
    runRows.clear();
    $('#runs tbody').replaceChildren();
    applyRuns(s.runs);
    applyExtents(s.extents);
    if (s.ev) applyEv(s.ev);
    if (s.health) applyHealth(s.health);
    scheduleWebRefresh();
  });
  on<{ runs: RunView[] }>('runs', (d) => applyRuns(d.runs));
  on<MinutesEvent>('minutes', applyMinutes);
  on<EvSummary>('ev', applyEv);
  on<HealthSnapshot>('health', applyHealth);
}

// --- runs -----------------------------------------------------------------------------------

const runs = new Map<string, RunView>();
const runRows = new Map<string, HTMLTableRowElement>();

/** One row per run, updated in place (a button being clicked must not be replaced under the pointer). */
function runRow(r: RunView): HTMLTableRowElement {
  let tr = runRows.get(r.id);
  if (!tr) {
    tr = el('tr');
    tr.dataset.runId = r.id;
    tr.append(el('td', r.id.slice(0, 8), { title: r.id }), el('td', r.kind), el('td', '', { class: 'value' }), el('td', '', { class: 'state' }),
      el('td', '', { class: 'num' }), el('td', '', { class: 'num' }), el('td'), el('td'));
    runRows.set(r.id, tr);
  }
  const [, , whatCell, stateCell, publishedCell, rateCell, progressCell, actionsCell] = [...tr.children] as HTMLElement[];
  const what = r.kind === 'ev' ? 'simulation' : `${r.file ?? 'upload'} → ${r.source ?? ''}${r.follow ? ' (follow)' : ''}${r.alerts ? '' : ' (muted)'}`;
  whatCell!.textContent = what;
  whatCell!.title = what;
  tr.dataset.state = r.state;
  stateCell!.textContent = r.state;
  stateCell!.dataset.state = r.state;
  stateCell!.title = r.error ?? '';
  publishedCell!.textContent = fmt(r.published);
  publishedCell!.dataset.published = String(r.published);
  rateCell!.textContent = r.rate ? `${fmt(r.rate)}/s` : '';
  if (r.fraction !== null) {
    let bar = progressCell!.querySelector('progress');
    if (!bar) progressCell!.replaceChildren((bar = el('progress', undefined, { max: '1' })), el('span'));
    bar.value = r.fraction;
    progressCell!.querySelector('span')!.textContent = ` ${Math.floor(r.fraction * 100)} %`;
  } else progressCell!.textContent = r.state === 'running' && r.follow ? 'following' : '';
  const stoppable = (r.state === 'running' || r.state === 'stopping') && !(r.kind === 'logs' && r.file === null);
  const button = actionsCell!.querySelector('button');
  if (stoppable && !button) {
    const stop = el('button', 'Stop', { type: 'button', class: 'secondary', 'data-stop': r.id });
    stop.addEventListener('click', () => void stopRun(r.id, stop));
    actionsCell!.append(stop);
  } else if (!stoppable && button) button.remove();
  return tr;
}

function applyRuns(list: RunView[]) {
  for (const r of list) runs.set(r.id, r);
  const sorted = [...runs.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  for (const r of sorted.slice(20)) runs.delete(r.id), runRows.delete(r.id);
  const body = $('#runs tbody');
  const rows = sorted.slice(0, 20).map((r) => (list.includes(r) || !runRows.has(r.id) ? runRow(r) : runRows.get(r.id)!));
  // Moves only rows out of place: a row already where it belongs (and its button) stays put.
  rows.forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] ?? null);
  });
  while (body.children.length > rows.length) body.lastElementChild!.remove();
}

function message(text: string, kind: 'ok' | 'error' = 'ok') {
  const m = $('#form-message');
  m.textContent = text;
  m.dataset.kind = kind;
}

async function stopRun(id: string, button: HTMLButtonElement) {
  button.disabled = true;
  try {
    const r = await api<RunView>('POST', `/v1/runs/${id}/stop`);
    message(`Run ${id.slice(0, 8)} is ${r.state}.`);
  } catch (err) {
    if (!(err instanceof Unauthorized)) message((err as Error).message, 'error');
    button.disabled = false;
  }
}

async function startRun(body: Record<string, unknown>, form: HTMLFormElement) {
  const submit = $<HTMLButtonElement>('button[type="submit"]', form);
  submit.disabled = true;
  try {
    const run = await api<RunView>('POST', '/v1/runs', body);
    message(`Run ${run.id.slice(0, 8)} started.`);
  } catch (err) {
    if (!(err instanceof Unauthorized)) message((err as Error).message, 'error');
  } finally {
    submit.disabled = false;
  }
}

// --- web logs -------------------------------------------------------------------------------

type Bucket = 'minute' | 'hour' | 'day';
interface Point { t: string; requests: number; bytes: number; visitors: number; status: Record<'1xx' | '2xx' | '3xx' | '4xx' | '5xx', number> }
interface Stats { totals: Omit<Point, 't'>; series: Point[]; bucket: Bucket }
interface TopItem { value: string; requests: number; visitors: number; bytes: number }

let extents: Extent[] = [];
/** null: all the data of the selection, following new minutes as they come. */
let range: { from: Date; to: Date } | null = null;
const BUCKET_MS: Record<Bucket, number> = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };
const COLORS = { '1xx': '#94a3b8', '2xx': '#16a34a', '3xx': '#2563eb', '4xx': '#f59e0b', '5xx': '#dc2626' } as const;

const chart = new Chart($<HTMLCanvasElement>('#requests-chart'), {
  type: 'bar',
  data: { labels: [] as string[], datasets: (Object.keys(COLORS) as (keyof typeof COLORS)[]).map((k) => ({ label: k, data: [] as number[], backgroundColor: COLORS[k], stack: 'status' })) },
  options: {
    animation: false,
    maintainAspectRatio: false,
    scales: { x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 16 } }, y: { stacked: true, beginAtZero: true, title: { display: true, text: 'requests' } } },
    plugins: { legend: { position: 'bottom' }, tooltip: { mode: 'index', intersect: false } },
  },
});

const selectedSource = () => $<HTMLSelectElement>('#range-form select[name="source"]').value;

function applyExtents(list: Extent[]) {
  extents = list;
  const select = $<HTMLSelectElement>('#range-form select[name="source"]');
  const have = new Set([...select.options].map((o) => o.value));
  for (const e of list) if (!have.has(e.source)) select.append(el('option', e.source, { value: e.source }));
}

/** The range shown: the one picked, or every minute with data of the selected source(s). */
function currentRange(): { from: Date; to: Date } | null {
  if (range) return range;
  const source = selectedSource();
  const mine = extents.filter((e) => !source || e.source === source);
  if (!mine.length) return null;
  const from = Math.min(...mine.map((e) => Date.parse(e.first)));
  const to = Math.max(...mine.map((e) => Date.parse(e.last))) + 60_000;
  return { from: new Date(from), to: new Date(to) };
}

/** About 1,500 bars at most: minutes up to a day, hours up to two months, then days. */
function bucketFor(r: { from: Date; to: Date }): Bucket {
  const span = r.to.getTime() - r.from.getTime();
  return span <= 1_500 * BUCKET_MS.minute ? 'minute' : span <= 1_500 * BUCKET_MS.hour ? 'hour' : 'day';
}

const label = (t: string, bucket: Bucket) => (bucket === 'day' ? t.slice(0, 10) : bucket === 'hour' ? `${t.slice(5, 10)} ${t.slice(11, 13)}h` : `${t.slice(5, 10)} ${t.slice(11, 16)}`);

function setTotals(t: Stats['totals']) {
  $('#web-totals').dataset.total = String(t.requests);
  $('#t-requests').textContent = fmt(t.requests);
  $('#t-visitors').textContent = fmt(t.visitors);
  $('#t-bytes').textContent = bytes(t.bytes);
  for (const k of ['2xx', '3xx', '4xx', '5xx'] as const) $(`#t-${k}`).textContent = fmt(t.status[k]);
}

let webBusy = false;
let webAgain = false;
let lastTops = 0;

/** Reads the selection's series and top tables; at most one refresh in flight, the next one queued. */
async function refreshWeb(withTops = true): Promise<void> {
  if (webBusy) return void (webAgain = true);
  webBusy = true;
  try {
    const r = currentRange();
    const rangeLabel = $('#range-label');
    if (!r) {
      rangeLabel.textContent = 'no web-log data yet';
      return;
    }
    const bucket = bucketFor(r);
    const from = new Date(Math.floor(r.from.getTime() / BUCKET_MS[bucket]) * BUCKET_MS[bucket]);
    const q = new URLSearchParams({ from: from.toISOString(), to: r.to.toISOString(), bucket });
    const source = selectedSource();
    if (source) q.set('source', source);
    rangeLabel.textContent = `${range ? '' : 'all data, live: '}${from.toISOString().slice(0, 16)} .. ${r.to.toISOString().slice(0, 16)} UTC, by ${bucket}`;
    const stats = await api<Stats>('GET', `/v1/stats?${q}`);
    chart.data.labels = stats.series.map((p) => label(p.t, bucket));
    for (const ds of chart.data.datasets) ds.data = stats.series.map((p) => p.status[ds.label as keyof typeof COLORS]);
    chart.update();
    setTotals(stats.totals);
    $('#web-panel').dataset.points = String(stats.series.length);
    if (withTops || Date.now() - lastTops > 3_000) {
      lastTops = Date.now();
      for (const table of document.querySelectorAll<HTMLTableElement>('.tops table')) {
        const dimension = table.dataset.dimension!;
        const tq = new URLSearchParams(q);
        tq.delete('bucket');
        tq.set('dimension', dimension);
        tq.set('limit', '10');
        const top = await api<{ items: TopItem[] }>('GET', `/v1/stats/top?${tq}`);
        $('tbody', table).replaceChildren(
          ...top.items.map((i) => row([el('td', i.value, { class: 'value', title: i.value }), num(i.requests), num(dimension === 'client_ip' ? i.bytes : i.visitors)])),
        );
      }
    }
  } catch (err) {
    if (!(err instanceof Unauthorized)) $('#range-label').textContent = `cannot read the stats: ${(err as Error).message}`;
  } finally {
    webBusy = false;
    if (webAgain) (webAgain = false), void refreshWeb(false);
  }
}

let webTimer: number | undefined;
function scheduleWebRefresh() {
  clearTimeout(webTimer);
  webTimer = window.setTimeout(() => void refreshWeb(false), 250);
}

/** New or moved minutes: refresh the chart when one falls in what is shown. */
function applyMinutes(e: MinutesEvent) {
  applyExtents(e.extents);
  const source = selectedSource();
  const r = range;
  const touches = e.rows.some((m) => (!source || m.source === source) && (!r || (Date.parse(m.minute) >= r.from.getTime() && Date.parse(m.minute) < r.to.getTime())));
  if (touches) scheduleWebRefresh();
}

// --- EV ---------------------------------------------------------------------------------------

function tiles(target: HTMLElement, counts: Record<string, number>) {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  target.replaceChildren(...(entries.length ? entries.map(([k, n]) => {
    const d = el('div', undefined, { 'data-key': k, 'data-count': String(n) });
    d.append(el('b', fmt(n)), el('span', k));
    return d;
  }) : [el('span', 'none yet', { class: 'muted' })]));
}

function applyEv(s: EvSummary) {
  $('#ev-run').textContent = s.runId ? `run ${s.runId.slice(0, 8)}, ${s.runState}` : 'no EV run yet';
  tiles($('#ev-sessions'), s.sessionsByStatus);
  tiles($('#ev-events'), s.eventsByType);
  if (s.emails) tiles($('#ev-emails'), s.emails);
  else $('#ev-emails').replaceChildren(el('span', s.emailsUnavailable ?? 'unavailable', { class: 'muted' }));
  $('#ev-feed').replaceChildren(...s.feed.map((f) => {
    const li = el('li', undefined, { 'data-severity': f.severity });
    li.append(el('span', f.type, { class: 'type' }), el('span', `${f.ts.slice(0, 19).replace('T', ' ')} `, { class: 'muted' }), f.summary);
    return li;
  }));
  $('#ev-points tbody').replaceChildren(...s.chargePoints.map((p) => row([el('td', p.id, { class: 'value' }), num(p.sessions), num(p.charging), num(p.completed), num(p.faults), num(p.energyKwh)])));
}

// --- health -----------------------------------------------------------------------------------

function applyHealth(h: HealthSnapshot) {
  $('#health-at').textContent = `at ${h.at.slice(11, 19)} UTC`;
  const notice = $('#health-unavailable');
  notice.hidden = !h.unavailable;
  notice.textContent = h.unavailable ?? '';
  $('#queues tbody').replaceChildren(...(h.queues ?? []).map((q) => row([
    el('td', q.name), num(q.messages), num(q.unacked), num(q.consumers), num(q.publishRate), num(q.ackRate), num(q.retry),
    el('td', fmt(q.dlq), { class: `num${q.dlq ? ' error' : ''}` }),
  ])));
  $('#functions tbody').replaceChildren(...(h.functions ?? []).map((f) => {
    const badge = el('span', f.health, { class: 'badge', 'data-health': f.health });
    const cell = el('td');
    cell.append(badge);
    if (f.reason) cell.append(` ${f.reason}`);
    return row([el('td', f.name), num(f.instances), cell]);
  }));
}

// --- wiring -----------------------------------------------------------------------------------

const utcInput = (d: Date) => d.toISOString().slice(0, 16);
const fromUtcInput = (v: string) => (v ? new Date(`${v}:00Z`) : null);

$<HTMLFormElement>('#login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  void signIn($<HTMLInputElement>('#token').value.trim());
});
$('#logout').addEventListener('click', () => {
  void fetch('/v1/session', { method: 'DELETE', headers: { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}` } }).finally(() => signOut());
});
$<HTMLFormElement>('#replay-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = new FormData(e.currentTarget as HTMLFormElement);
  const body: Record<string, unknown> = { kind: 'logs', file: String(f.get('file')).trim(), follow: f.get('follow') === 'on', alerts: f.get('alerts') === 'on' };
  const source = String(f.get('source') ?? '').trim();
  if (source) body.source = source;
  void startRun(body, e.currentTarget as HTMLFormElement);
});
$<HTMLFormElement>('#ev-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = new FormData(e.currentTarget as HTMLFormElement);
  const body: Record<string, unknown> = { kind: 'ev', sessions: Number(f.get('sessions')), seed: Number(f.get('seed')) };
  if (f.get('speed')) body.speed = Number(f.get('speed'));
  if (f.get('faultRate')) body.faultRate = Number(f.get('faultRate'));
  void startRun(body, e.currentTarget as HTMLFormElement);
});
$<HTMLFormElement>('#range-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = new FormData(e.currentTarget as HTMLFormElement);
  const from = fromUtcInput(String(f.get('from') ?? ''));
  const to = fromUtcInput(String(f.get('to') ?? ''));
  if (from && to && from < to) range = { from, to };
  else if (from || to) {
    const all = currentRange();
    range = all ? { from: from ?? all.from, to: to ?? all.to } : null;
  } else range = null;
  void refreshWeb();
});
$('#range-all').addEventListener('click', () => {
  range = null;
  for (const name of ['from', 'to']) $<HTMLInputElement>(`#range-form input[name="${name}"]`).value = '';
  void refreshWeb();
});
$<HTMLSelectElement>('#range-form select[name="source"]').addEventListener('change', () => void refreshWeb());
// Show the range in the inputs once it is known, so it can be narrowed from there.
$<HTMLInputElement>('#range-form input[name="from"]').addEventListener('focus', (e) => {
  const input = e.currentTarget as HTMLInputElement;
  const r = currentRange();
  if (!input.value && r) input.value = utcInput(r.from);
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) void signIn(saved);
else showApp(false);
