// The live dashboard, server side: the page's static files (built by build.mjs into
// dist/trigger/dashboard/) and ONE authenticated Server-Sent Events stream, GET /v1/events,
// that pushes runs, new stat minutes, the latest EV run and pipeline health to every open page.
//
// What is read, and how often: the pollers run only while at least one page is connected,
// once per interval for all of them (never per client): runs and changed stat minutes every
// DASHBOARD_POLL_MS (1 s), the latest EV run every 2 intervals, RabbitMQ's management API
// every 5 s. Each poller pushes only what changed.
//
// Authentication: the page sends its bearer token to POST /v1/session, which answers with a
// cookie for the stream only (Path=/v1/events, HttpOnly, SameSite=Strict, 10 minutes): an
// expiry and an HMAC of it under a key derived from TRIGGER_TOKEN. EventSource cannot send an
// Authorization header; a token in the URL would end up in access logs and the browser's
// history. The cookie is stateless (any trigger with the same token accepts it, none keeps a
// list), short-lived, useless for any other route, and never readable by the page's scripts.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Pool } from '../../shared/db/pool.ts';
import type { Logger } from '../../shared/log.ts';
import { errorMessage } from '../../shared/errors.ts';
import { periodic, type Periodic } from '../../shared/timing.ts';
import { ACCESS, FUNCTIONS, userOf } from '../../infra/access.ts';
import { DEAD_LETTER_SUFFIX, RETRY_SUFFIX, deadLetterQueue, retryQueue } from '../../infra/topology.ts';
import { z } from 'zod';
import type { AppDeps } from './app.ts';
import { UNAUTHORIZED, errors, validatedByHandlers } from './api-schemas.ts';
import type { Run } from './runs.ts';
import { lazily, loadAssets, sendAsset } from './static-files.ts';
import type {
  EvSummary, Extent, FunctionHealth, HealthSnapshot, MinuteRow, QueueHealth, RunView, Snapshot, StreamEventName, StreamEvents,
} from './dashboard/protocol.ts';

export const STREAM_PATH = '/v1/events';
export const STREAM_COOKIE = 'sluice_stream';
const STREAM_COOKIE_MAX_AGE_S = 600;

/** What the dashboard reads besides runs: the aggregates' changed minutes, the EV tables, the broker's management API. */
export interface DashboardSources {
  /** Rows of log_stats_minute stamped at or after `since` (the database's clock), oldest first, at most `limit`. */
  minutesSince(since: Date, limit: number): Promise<(MinuteRow & { updatedAt: Date })[]>;
  /** The newest updated_at of log_stats_minute (null: no rows): where a fresh poller starts. */
  latestUpdate(): Promise<Date | null>;
  extents(): Promise<Extent[]>;
  ev(run: { id: string; state: string } | null): Promise<EvSummary | null>;
  health(): Promise<HealthSnapshot>;
}

export interface DashboardDeps {
  /** Absent: only the runs panel is live; the others say why not. */
  sources?: DashboardSources;
  /** Where build.mjs put the page (default: dashboard/ beside the bundle). */
  assetsDir?: string;
  pollMs?: number;
  heartbeatMs?: number;
  /** A page whose connection holds more than this unsent is dropped; it reconnects (Last-Event-ID, or a fresh snapshot). */
  maxClientBufferBytes?: number;
  now?: () => number;
}

// --- the stream cookie ----------------------------------------------------------------

const streamKey = (token: string) => createHmac('sha256', token).update('sluice dashboard stream v1').digest();
const mac = (key: Buffer, expires: number) => createHmac('sha256', key).update(String(expires)).digest('base64url');

export function streamCookieValue(token: string, now = Date.now()): { value: string; expires: number } {
  const expires = now + STREAM_COOKIE_MAX_AGE_S * 1000;
  return { value: `${expires}.${mac(streamKey(token), expires)}`, expires };
}

function cookieOf(req: FastifyRequest, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function validStreamCookie(value: string | undefined, token: string, now = Date.now()): boolean {
  const m = /^(\d{10,16})\.([\w-]{43})$/.exec(value ?? '');
  if (!m) return false;
  const expires = Number(m[1]);
  if (expires <= now || expires > now + STREAM_COOKIE_MAX_AGE_S * 1000 + 60_000) return false;
  const given = Buffer.from(m[2]!);
  const wanted = Buffer.from(mac(streamKey(token), expires));
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

const isPagePath = (p: string) => p === '/' || p === '/index.html' || p.startsWith('/assets/');

/**
 * The app's bearer-token hook lets through what this allows: the page and its assets (they
 * hold no data: without a token the page shows its login form and nothing else answers), and
 * the stream with a valid stream cookie.
 */
export function dashboardAuthorizes(req: FastifyRequest, token: string): boolean {
  const p = req.url.split('?', 1)[0]!;
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  if (isPagePath(p)) return true;
  return p === STREAM_PATH && validStreamCookie(cookieOf(req, STREAM_COOKIE), token);
}

// --- static files ---------------------------------------------------------------------

// The page loads nothing but its own files and talks to nothing but this origin.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
// index.html names the hashed assets: revalidated on every load; the assets never change under their name.
const PAGE_POLICY = { immutable: (name: string) => name !== 'index.html', csp: CSP };

// --- the hub: pollers shared by every open page, one ring of recent events ------------

interface Client { res: ServerResponse; log: FastifyBaseLogger }
interface Sent { seq: number; frame: string }

const RING = 256;
const MINUTE_SLACK_MS = 10_000; // log-clean stamps a row inside a transaction that may commit later (as log-alerts reads them)
const MINUTE_ROWS_PER_POLL = 2_000;

function runView(run: Run, prev: { published: number; at: number } | undefined, now: number, size: number | undefined): RunView {
  const running = run.state === 'running' || run.state === 'stopping';
  const dt = prev ? (now - prev.at) / 1000 : 0;
  const params = run.params ?? {};
  return {
    id: run.id,
    kind: run.kind,
    state: run.state,
    source: run.source,
    file: run.file,
    follow: params.follow === true,
    alerts: params.alerts !== false,
    lines: run.lines,
    published: run.published,
    rate: running && prev && dt > 0 ? Math.max(0, Math.round((run.published - prev.published) / dt)) : 0,
    fraction: size ? Math.min(1, (run.state === 'done' ? size : run.checkpoint.offset) / size) : null,
    error: run.error,
    createdAt: run.createdAt,
    updatedAt: run.updatedAt,
    finishedAt: run.finishedAt,
  };
}

function createHub(deps: AppDeps, opts: DashboardDeps) {
  const log = deps.log;
  const now = opts.now ?? Date.now;
  const pollMs = opts.pollMs ?? 1_000;
  const maxBuffer = opts.maxClientBufferBytes ?? 1024 * 1024;
  const boot = randomBytes(4).toString('hex');
  const clients = new Set<Client>();
  const ring: Sent[] = [];
  let seq = 0;
  const state: Snapshot = { runs: [], extents: [], ev: null, health: null };
  const lastRun = new Map<string, { json: string; published: number; at: number }>();
  const sizes = new Map<string, number | undefined>();
  const sentMinutes = new Map<string, { sig: string; at: number }>();
  let minuteCursor: Date | null = null;
  let lastEv = '';
  let lastHealth = '';
  let loops: Periodic[] = [];
  let first: Promise<void> | null = null;
  let closed = false;
  let starting = 0;

  function drop(c: Client, why: string) {
    clients.delete(c);
    c.log.info({ why }, 'dashboard stream dropped');
    c.res.destroy();
    if (clients.size === 0 && starting === 0) stop();
  }

  function write(c: Client, frame: string) {
    // A page that does not read (a sleeping laptop, a slow link) is dropped rather than buffered
    // without bound; it reconnects with Last-Event-ID, or gets a fresh snapshot.
    if (c.res.writableLength > maxBuffer) return drop(c, `more than ${maxBuffer} bytes unsent`);
    c.res.write(frame);
  }

  function emit<K extends StreamEventName>(name: K, data: StreamEvents[K]) {
    const frame = `id: ${boot}.${++seq}\nevent: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
    ring.push({ seq, frame });
    if (ring.length > RING) ring.shift();
    for (const c of [...clients]) write(c, frame);
  }

  async function fileSize(run: Run): Promise<number | undefined> {
    if (run.kind !== 'logs' || !run.file || run.params?.glob === true || run.params?.follow === true) return undefined;
    if (!sizes.has(run.id)) {
      sizes.set(run.id, await stat(path.resolve(deps.logDir, run.file)).then((s) => s.size || undefined, () => undefined));
    }
    return sizes.get(run.id);
  }

  async function pollRuns() {
    const runs = await deps.runs.list(20);
    const at = now();
    const views: RunView[] = [];
    const changed: RunView[] = [];
    for (const run of runs) {
      const prev = lastRun.get(run.id);
      const view = runView(run, prev, at, await fileSize(run));
      views.push(view);
      const json = JSON.stringify(view);
      if (json !== prev?.json) changed.push(view);
      lastRun.set(run.id, { json, published: run.published, at });
    }
    for (const id of lastRun.keys()) if (!runs.some((r) => r.id === id)) lastRun.delete(id), sizes.delete(id);
    state.runs = views;
    if (changed.length) emit('runs', { runs: changed });
  }

  async function pollMinutes() {
    const sources = opts.sources;
    if (!sources) return;
    if (minuteCursor === null) {
      minuteCursor = (await sources.latestUpdate()) ?? new Date(0);
      state.extents = await sources.extents();
      return;
    }
    const since = new Date(minuteCursor.getTime() - MINUTE_SLACK_MS);
    const rows = await sources.minutesSince(since, MINUTE_ROWS_PER_POLL);
    const fresh: MinuteRow[] = [];
    for (const { updatedAt, ...row } of rows) {
      const key = `${row.source}\u0000${row.minute}`;
      const sig = `${row.requests}/${row.bytes}/${row.visitors}/${Object.values(row.status).join(',')}`;
      if (sentMinutes.get(key)?.sig !== sig) fresh.push(row);
      sentMinutes.set(key, { sig, at: updatedAt.getTime() });
      if (updatedAt > minuteCursor) minuteCursor = updatedAt;
    }
    const horizon = minuteCursor.getTime() - 2 * MINUTE_SLACK_MS;
    for (const [key, v] of sentMinutes) if (v.at < horizon) sentMinutes.delete(key);
    if (fresh.length) {
      state.extents = await sources.extents();
      emit('minutes', { rows: fresh, extents: state.extents });
    }
  }

  async function pollEv() {
    if (!opts.sources) return;
    const latest = state.runs.find((r) => r.kind === 'ev') ?? null;
    const summary = await opts.sources.ev(latest && { id: latest.id, state: latest.state });
    if (!summary) return;
    const json = JSON.stringify(summary);
    state.ev = summary;
    if (json !== lastEv) (lastEv = json), emit('ev', summary);
  }

  async function pollHealth() {
    const snapshot: HealthSnapshot = opts.sources
      ? await opts.sources.health()
      : { queues: null, functions: null, unavailable: 'not wired to the database and the broker (tests of the HTTP layer)', at: new Date(now()).toISOString() };
    const { at: _at, ...rest } = snapshot;
    const json = JSON.stringify(rest);
    state.health = snapshot;
    if (json !== lastHealth) (lastHealth = json), emit('health', snapshot);
  }

  /** Runs `poll` every `everyMs`, one at a time; a failure is logged (once per message) and tried again next time. */
  function every(name: string, everyMs: number, poll: () => unknown): Periodic {
    const loop = periodic(poll, { name: `dashboard poll ${name}`, everyMs, immediate: false, unref: true, log });
    loops.push(loop);
    return loop;
  }

  function start(): Promise<void> {
    if (first) return first;
    const runs = every('runs', pollMs, pollRuns);
    const minutes = every('minutes', pollMs, pollMinutes);
    const ev = every('ev', pollMs * 2, pollEv);
    const health = every('health', 5_000, pollHealth);
    every('heartbeat', opts.heartbeatMs ?? 15_000, () => {
      for (const c of [...clients]) write(c, ': heartbeat\n\n');
    });
    // The first snapshot waits for one round of every poller (EV needs the runs first).
    first = Promise.all([runs.runNow().then(() => ev.runNow()), minutes.runNow(), health.runNow()]).then(() => {});
    return first;
  }

  /** The pollers stop taking turns at once; a poll in flight ends by itself (its result is kept, like any other). */
  function stop() {
    for (const loop of loops) void loop.stop();
    loops = [];
    first = null;
    minuteCursor = null;
    sentMinutes.clear();
    lastEv = lastHealth = '';
  }

  return {
    async attach(req: FastifyRequest, reply: FastifyReply) {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-accel-buffering': 'no', // no proxy buffering (nginx)
        connection: 'keep-alive',
      });
      res.write('retry: 2000\n\n');
      const c: Client = { res, log: req.log };
      let gone = false;
      res.on('close', () => {
        gone = true;
        if (clients.delete(c)) c.log.info('dashboard stream ended by the page');
        if (clients.size === 0 && starting === 0) stop();
      });
      if (closed) return void res.end();
      starting++;
      try {
        await start();
      } finally {
        starting--;
      }
      if (gone || closed) {
        if (clients.size === 0 && starting === 0) stop();
        return void res.end();
      }
      // Reconnected from this process's stream, with its missed events still in the ring: replay
      // them (events sent while the pollers started are among them). Otherwise a snapshot.
      const last = /^([0-9a-f]{8})\.(\d+)$/.exec(String(req.headers['last-event-id'] ?? ''));
      const lastSeq = last && last[1] === boot ? Number(last[2]) : -1;
      if (lastSeq >= 0 && lastSeq <= seq && (ring.length === 0 || ring[0]!.seq <= lastSeq + 1)) {
        for (const e of ring) if (e.seq > lastSeq) res.write(e.frame);
      } else {
        res.write(`id: ${boot}.${seq}\nevent: snapshot\ndata: ${JSON.stringify(state)}\n\n`);
      }
      clients.add(c);
      if (!first) void start(); // every other page left while this one started: the pollers stopped
    },
    get clients() {
      return clients.size;
    },
    close() {
      closed = true;
      for (const c of [...clients]) clients.delete(c), c.res.end();
      stop();
    },
  };
}

// --- the routes -----------------------------------------------------------------------

const defaultAssetsDir = () => fileURLToPath(new URL('./dashboard/', import.meta.url));

/** The page, the stream, and POST/DELETE /v1/session (the app registers it behind its bearer token; dashboardAuthorizes lets the page and the stream through). */
export const dashboardRoutes = (deps: AppDeps): FastifyPluginAsync => async (app) => {
  validatedByHandlers(app);
  const opts = deps.dashboard ?? {};
  // Read on the first request for the page (functions/trigger/static-files.ts), not at start.
  const assets = lazily(() => loadAssets(opts.assetsDir ?? defaultAssetsDir(), PAGE_POLICY));
  const hub = createHub(deps, opts);
  // Before the server stops accepting: an open stream would otherwise hold app.close() until the page goes away.
  app.addHook('preClose', async () => hub.close());

  const page = async (req: FastifyRequest, reply: FastifyReply) => {
    const index = assets()?.get('index.html');
    if (!index) return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', message: 'the dashboard is not built: run npm run build' });
    return sendAsset(req, reply, index);
  };
  // The page and its files are not the API: left out of /openapi.json.
  const hide = { schema: { hide: true } };
  app.get('/', hide, page);
  app.get('/index.html', hide, page);
  app.get('/assets/:name', hide, async (req, reply) => {
    const { name } = req.params as { name: string };
    const asset = assets()?.get(`assets/${name}`);
    if (!asset) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no dashboard asset ${name}` });
    return sendAsset(req, reply, asset);
  });

  app.post('/v1/session', {
    schema: {
      tags: ['dashboard'],
      summary: 'A cookie that opens the event stream (GET /v1/events) for EventSource, which cannot send the token',
      description: 'HttpOnly, SameSite=Strict, Path=/v1/events, valid 10 minutes: an expiry signed with a key derived from the token (a new token revokes it).',
      response: {
        200: z.object({ stream: z.string().describe('The path the cookie opens'), expiresAt: z.iso.datetime() }),
        ...errors({ 401: UNAUTHORIZED }),
      },
    },
  }, async (req, reply) => {
    const { value, expires } = streamCookieValue(deps.token);
    const secure = req.protocol === 'https' ? '; Secure' : '';
    reply.header('set-cookie', `${STREAM_COOKIE}=${value}; Path=${STREAM_PATH}; Max-Age=${STREAM_COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict${secure}`);
    return { stream: STREAM_PATH, expiresAt: new Date(expires).toISOString() };
  });
  app.delete('/v1/session', {
    schema: {
      tags: ['dashboard'],
      summary: 'Clear the stream cookie (log out)',
      response: { 204: z.null().describe('The cookie is cleared'), ...errors({ 401: UNAUTHORIZED }) },
    },
  }, async (_req, reply) => {
    reply.header('set-cookie', `${STREAM_COOKIE}=; Path=${STREAM_PATH}; Max-Age=0; HttpOnly; SameSite=Strict`);
    return reply.code(204).send();
  });

  app.get(STREAM_PATH, {
    schema: {
      tags: ['dashboard'],
      summary: "The dashboard's live updates: one Server-Sent Events stream",
      description:
        'Runs, changed stat minutes, EV figures and pipeline health as `event:`/`data:` (JSON) frames with ids; a reconnect with Last-Event-ID gets what it missed, or a fresh snapshot. ' +
        'Authenticated by the bearer token or the cookie of POST /v1/session.',
      response: {
        200: { description: 'An endless text/event-stream', content: { 'text/event-stream': { schema: z.string() } } },
        ...errors({ 401: UNAUTHORIZED }),
      },
    },
  }, async (req, reply) => {
    // The bearer token works too (curl -N), the cookie is for EventSource.
    await hub.attach(req, reply);
  });
};

// --- the real sources -----------------------------------------------------------------

interface MinuteSqlRow { source: string; minute: Date; requests: number; bytes: number; visitors: number; s1: number; s2: number; s3: number; s4: number; s5: number; updated_at: Date }

const ER_TABLEACCESS_DENIED = 1142;

export function createDashboardSources(deps: { pool: Pool; log: Logger; amqpUrl: string; rabbitApiUrl?: string | undefined; fetch?: typeof fetch }): DashboardSources {
  const { pool } = deps;
  const query = async <T>(sql: string, params: unknown[] = []) => ((await pool.query(sql, params)) as unknown as [T[], unknown])[0];
  const vhost = decodeURIComponent(new URL(deps.amqpUrl).pathname.slice(1)) || '/';
  const api = deps.rabbitApiUrl ? managementApi(deps.rabbitApiUrl, deps.fetch ?? fetch) : null;
  let emailsDenied = 0;
  return {
    async minutesSince(since, limit) {
      const rows = await query<MinuteSqlRow>(
        `SELECT source, minute, requests, bytes, visitors, s1xx AS s1, s2xx AS s2, s3xx AS s3, s4xx AS s4, s5xx AS s5, updated_at
         FROM log_stats_minute WHERE updated_at >= ? ORDER BY updated_at LIMIT ?`,
        [since, limit],
      );
      return rows.map((r) => ({
        source: r.source,
        minute: r.minute.toISOString(),
        requests: Number(r.requests), bytes: Number(r.bytes), visitors: Number(r.visitors),
        status: { '1xx': Number(r.s1), '2xx': Number(r.s2), '3xx': Number(r.s3), '4xx': Number(r.s4), '5xx': Number(r.s5) },
        updatedAt: r.updated_at,
      }));
    },
    async latestUpdate() {
      const [row] = await query<{ t: Date | null }>('SELECT MAX(updated_at) AS t FROM log_stats_minute');
      return row?.t ?? null;
    },
    async extents() {
      // The primary key (source, minute) answers MIN and MAX per source from the index alone.
      const rows = await query<{ source: string; first: Date; last: Date }>('SELECT source, MIN(minute) AS first, MAX(minute) AS last FROM log_stats_minute GROUP BY source');
      return rows.map((r) => ({ source: r.source, first: r.first.toISOString(), last: r.last.toISOString() }));
    },
    async ev(run) {
      const empty: EvSummary = { runId: null, runState: null, sessionsByStatus: {}, eventsByType: {}, feed: [], emails: null, emailsUnavailable: null, chargePoints: [] };
      if (!run) return empty;
      const counts = (rows: { k: string; n: number }[]) => Object.fromEntries(rows.map((r) => [r.k, Number(r.n)]));
      const sessions = await query<{ k: string; n: number }>('SELECT status AS k, COUNT(*) AS n FROM ev_sessions WHERE run_id = ? GROUP BY status', [run.id]);
      const events = await query<{ k: string; n: number }>('SELECT type AS k, COUNT(*) AS n FROM ev_events WHERE run_id = ? GROUP BY type', [run.id]);
      const feed = await query<{ event_id: string; type: string; severity: string; ts: Date; session_id: string; summary: string }>(
        'SELECT event_id, type, severity, ts, session_id, summary FROM ev_events WHERE run_id = ? ORDER BY ts DESC, event_id LIMIT 25', [run.id]);
      const points = await query<{ id: string; sessions: number; charging: number; completed: number; faults: number; energy: number }>(
        `SELECT charge_point_id AS id, COUNT(*) AS sessions, SUM(status = 'charging') AS charging, SUM(status = 'completed') AS completed,
                SUM(status IN ('faulted', 'interrupted')) AS faults, SUM(energy_kwh) AS energy
         FROM ev_sessions WHERE run_id = ? GROUP BY charge_point_id ORDER BY sessions DESC, id LIMIT 12`, [run.id]);
      let emails: Record<string, number> | null = null;
      let emailsUnavailable: string | null = null;
      // Without the grant, ask again once a minute (the grant may come with the next migrate).
      if (Date.now() - emailsDenied > 60_000) {
        try {
          emails = counts(await query<{ k: string; n: number }>('SELECT status AS k, COUNT(*) AS n FROM email_outbox WHERE run_id = ? GROUP BY status', [run.id]));
          emailsDenied = 0;
        } catch (err) {
          if ((err as { errno?: number }).errno !== ER_TABLEACCESS_DENIED) throw err;
          emailsDenied = Date.now();
        }
      }
      if (!emails) emailsUnavailable = 'the trigger may not read email_outbox (SELECT is not granted to its database user)';
      return {
        runId: run.id,
        runState: run.state,
        sessionsByStatus: counts(sessions),
        eventsByType: counts(events),
        feed: feed.map((e) => ({ eventId: e.event_id, type: e.type, severity: e.severity, ts: e.ts.toISOString(), sessionId: e.session_id, summary: e.summary })),
        emails,
        emailsUnavailable,
        chargePoints: points.map((p) => ({
          id: p.id, sessions: Number(p.sessions), charging: Number(p.charging), completed: Number(p.completed), faults: Number(p.faults),
          energyKwh: Math.round(Number(p.energy) * 10) / 10,
        })),
      };
    },
    async health() {
      const at = new Date().toISOString();
      if (!api) return { queues: null, functions: null, unavailable: 'RABBITMQ_MONITOR_URL is not set: queue figures come from RabbitMQ\'s management API as the monitoring user sluice_monitor (npm start sets it)', at };
      try {
        return { ...(await api.health(vhost)), unavailable: null, at };
      } catch (err) {
        return { queues: null, functions: null, unavailable: `RabbitMQ's management API: ${errorMessage(err)}`, at };
      }
    },
  };
}

interface ApiQueue {
  name: string; messages?: number; messages_ready?: number; messages_unacknowledged?: number; consumers?: number;
  message_stats?: { publish_details?: { rate?: number }; ack_details?: { rate?: number } };
}

/** RabbitMQ's management API as a monitoring user: the vhost's queues and connections. */
function managementApi(url: string, fetchFn: typeof fetch) {
  const u = new URL(url);
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`;
  u.username = u.password = '';
  const base = u.toString().replace(/\/$/, '');
  const get = async <T>(p: string): Promise<T> => {
    const res = await fetchFn(`${base}${p}`, { headers: { authorization: auth }, signal: AbortSignal.timeout(3_000) });
    if (!res.ok) throw new Error(`GET ${p} answered ${res.status}${res.status === 401 ? ' (wrong user or password, or the user lacks the monitoring tag or any permission on the vhost: run npm run migrate, which makes sluice_monitor)' : ''}`);
    return (await res.json()) as T;
  };
  return {
    async health(vhost: string): Promise<Pick<HealthSnapshot, 'queues' | 'functions'>> {
      const v = encodeURIComponent(vhost);
      const [queues, connections] = await Promise.all([
        get<ApiQueue[]>(`/api/queues/${v}`),
        get<{ user: string; vhost: string }[]>(`/api/vhosts/${v}/connections`),
      ]);
      const byName = new Map(queues.map((q) => [q.name, q]));
      const main = queues.filter((q) => !q.name.endsWith(RETRY_SUFFIX) && !q.name.endsWith(DEAD_LETTER_SUFFIX)).sort((a, b) => a.name.localeCompare(b.name));
      const rows: QueueHealth[] = main.map((q) => ({
        name: q.name,
        messages: q.messages ?? 0,
        ready: q.messages_ready ?? 0,
        unacked: q.messages_unacknowledged ?? 0,
        consumers: q.consumers ?? 0,
        publishRate: Math.round((q.message_stats?.publish_details?.rate ?? 0) * 10) / 10,
        ackRate: Math.round((q.message_stats?.ack_details?.rate ?? 0) * 10) / 10,
        retry: byName.get(retryQueue(q.name))?.messages ?? 0,
        dlq: byName.get(deadLetterQueue(q.name))?.messages ?? 0,
      }));
      const functions: FunctionHealth[] = FUNCTIONS.map((fn) => {
        const instances = connections.filter((c) => c.user === userOf(fn)).length;
        const consumes = ACCESS[fn].consumes;
        const idle = consumes.filter((q) => (byName.get(q)?.consumers ?? 0) === 0);
        const health: FunctionHealth['health'] = instances === 0 ? 'down' : idle.length ? 'degraded' : 'ok';
        const reason = instances === 0 ? 'no connection to the broker' : idle.length ? `no consumer on ${idle.join(', ')}` : null;
        return { name: fn, instances, queues: [...consumes], health, reason };
      });
      return { queues: rows, functions };
    },
  };
}
