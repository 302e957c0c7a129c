// The dashboard's server side (functions/trigger/dashboard.ts) through the real app: what
// answers without a token (the page, nothing else), the caching of its files, the stream's
// cookie, and the event stream itself (snapshot, live changes, Last-Event-ID, shutdown) over a
// real socket. Its sources are hand-written fakes; the browser test is
// test/integration/dashboard.test.ts.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { createApp } from '../../functions/trigger/app.ts';
import { STREAM_COOKIE, streamCookieValue, validStreamCookie, type DashboardSources } from '../../functions/trigger/dashboard.ts';
import type { MinuteRow } from '../../functions/trigger/dashboard/protocol.ts';
import type { Runner } from '../../functions/trigger/runner.ts';
import type { EvRuns } from '../../functions/trigger/ev-runs.ts';
import { fakeRuns } from './fakes/run-store.ts';

const TOKEN = 'secret-token-123';
const auth = { authorization: `Bearer ${TOKEN}` };
const JS = 'console.log("dashboard")';

const runner: Runner = { start() {}, runNow: async () => ({ lines: 0, published: 0 }), stopRun: () => null, executing: () => [], active: 0, stop: async () => {} };
const ev: EvRuns = { start: async () => { throw new Error('unused'); }, resume() {} };

/** The sources, as data the test moves: minute rows with their updated_at. */
function fakeSources() {
  const minutes: (MinuteRow & { updatedAt: Date })[] = [];
  const sources: DashboardSources & { minutes: typeof minutes } = {
    minutes,
    async minutesSince(since, limit) {
      return minutes.filter((m) => m.updatedAt >= since).slice(0, limit);
    },
    async latestUpdate() {
      return minutes.length ? new Date(Math.max(...minutes.map((m) => m.updatedAt.getTime()))) : null;
    },
    async extents() {
      return minutes.length ? [{ source: 'web', first: minutes[0]!.minute, last: minutes.at(-1)!.minute }] : [];
    },
    async ev() {
      return null;
    },
    async health() {
      return { queues: null, functions: null, unavailable: 'RABBITMQ_MONITOR_URL is not set', at: new Date().toISOString() };
    },
  };
  return sources;
}

let dir: string;
let app: ReturnType<typeof createApp>;
let base: string;
const runs = fakeRuns();
const sources = fakeSources();

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-dashboard-'));
  mkdirSync(path.join(dir, 'assets'));
  writeFileSync(path.join(dir, 'index.html'), '<!doctype html><script type="module" src="/assets/main-ABC.js"></script>');
  writeFileSync(path.join(dir, 'assets/main-ABC.js'), JS);
  writeFileSync(path.join(dir, 'assets/main-ABC.js.gz'), gzipSync(JS));
  writeFileSync(path.join(dir, 'secret.txt'), 'not an asset');
  const files = ['index.html', 'assets/main-ABC.js'].map((name) => ({ name, hash: createHash('sha256').update(name).digest('hex') }));
  writeFileSync(path.join(dir, 'assets.json'), JSON.stringify({ files }));
  app = createApp({
    runs, runner, ev, logDir: dir, token: TOKEN, bodyLimitBytes: 1024, log: pino({ level: 'silent' }), ready: () => true,
    dashboard: { assetsDir: dir, sources, pollMs: 50, heartbeatMs: 100 },
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});
after(async () => {
  await app.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('without a token only the page loads', () => {
  test('GET / is the page, revalidated on every load, with a strict CSP', async () => {
    const res = await app.inject({ url: '/' });
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, /^text\/html/);
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.match(res.headers['content-security-policy'] as string, /default-src 'none'; script-src 'self'/);
    const again = await app.inject({ url: '/', headers: { 'if-none-match': res.headers.etag as string } });
    assert.equal(again.statusCode, 304);
  });

  test('hashed assets are cached for a year and served compressed when asked', async () => {
    const plain = await app.inject({ url: '/assets/main-ABC.js' });
    assert.equal(plain.statusCode, 200);
    assert.equal(plain.body, JS);
    assert.equal(plain.headers['cache-control'], 'public, max-age=31536000, immutable');
    const gz = await app.inject({ url: '/assets/main-ABC.js', headers: { 'accept-encoding': 'gzip, deflate' } });
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.equal(gz.headers.vary, 'accept-encoding');
  });

  test('only files assets.json lists are served: no path reaches the file system', async () => {
    for (const url of ['/assets/secret.txt', '/assets/..%2fsecret.txt', '/assets/../secret.txt', '/assets/..%2fassets.json']) {
      const res = await app.inject({ url });
      assert.ok([401, 404].includes(res.statusCode), `${url}: ${res.statusCode}`);
      assert.doesNotMatch(res.body, /not an asset/);
    }
  });

  test('every data route, the session and the stream answer 401', async () => {
    for (const [method, url] of [['GET', '/v1/runs'], ['GET', '/v1/stats'], ['POST', '/v1/session'], ['GET', '/v1/events'], ['POST', '/v1/runs']] as const) {
      assert.equal((await app.inject({ method, url })).statusCode, 401, `${method} ${url}`);
    }
  });
});

describe('the stream cookie', () => {
  test('POST /v1/session sets an HttpOnly, SameSite=Strict cookie for the stream only, that does not open anything else', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/session', headers: auth });
    assert.equal(res.statusCode, 200);
    const cookie = res.headers['set-cookie'] as string;
    assert.match(cookie, new RegExp(`^${STREAM_COOKIE}=\\d+\\.[\\w-]{43}; Path=/v1/events; Max-Age=600; HttpOnly; SameSite=Strict$`));
    assert.doesNotMatch(cookie, new RegExp(TOKEN));
    const value = cookie.split(';', 1)[0]!;
    assert.equal((await app.inject({ url: '/v1/runs', headers: { cookie: value } })).statusCode, 401, 'the cookie is not a token');
  });

  test('a cookie made with another token, expired, or tampered with is refused', () => {
    const now = Date.now();
    const { value } = streamCookieValue(TOKEN, now);
    assert.ok(validStreamCookie(value, TOKEN, now));
    assert.ok(!validStreamCookie(value, 'another-token-456', now));
    assert.ok(!validStreamCookie(value, TOKEN, now + 601_000), 'expired');
    const [expires, mac] = value.split('.');
    assert.ok(!validStreamCookie(`${Number(expires) + 1_000_000}.${mac}`, TOKEN, now), 'expiry moved');
    assert.ok(!validStreamCookie(undefined, TOKEN, now));
  });
});

/** Reads server-sent events from a real connection. */
async function openStream(headers: Record<string, string>) {
  const ctrl = new AbortController();
  const res = await fetch(`${base}/v1/events`, { headers, signal: ctrl.signal });
  const events: { id?: string; event: string; data: unknown }[] = [];
  let comments = 0;
  let ended = false;
  const decoder = new TextDecoder();
  let buf = '';
  const pump = (async () => {
    try {
      for await (const chunk of res.body!) {
        buf += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments++;
            const m = /^(\w+): (.*)$/.exec(line);
            if (m) fields[m[1]!] = m[2]!;
          }
          if (fields.event) events.push({ id: fields.id, event: fields.event, data: JSON.parse(fields.data!) });
        }
      }
    } catch {
      // aborted
    }
    ended = true;
  })();
  const waitFor = async (what: string, cond: () => boolean, ms = 3_000) => {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(events.map((e) => e.event))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { res, events, get comments() { return comments; }, get ended() { return ended; }, close: () => ctrl.abort(), pump, waitFor };
}

describe('the event stream', () => {
  test('a snapshot, then only what changed; heartbeats; Last-Event-ID replays what a reconnecting page missed', async () => {
    await runs.create({ kind: 'logs', source: 'web', file: 'access.log' });
    const session = await app.inject({ method: 'POST', url: '/v1/session', headers: auth });
    const cookie = (session.headers['set-cookie'] as string).split(';', 1)[0]!;
    const s = await openStream({ cookie });
    assert.equal(s.res.status, 200);
    assert.match(s.res.headers.get('content-type')!, /^text\/event-stream/);
    await s.waitFor('the snapshot', () => s.events.length > 0);
    const snapshot = s.events[0]!;
    assert.equal(snapshot.event, 'snapshot');
    const snap = snapshot.data as { runs: { id: string; state: string }[]; health: { unavailable: string } };
    assert.equal(snap.runs.length, 1);
    assert.equal(snap.runs[0]!.state, 'running');
    assert.match(snap.health.unavailable, /RABBITMQ_MONITOR_URL/);

    // A run moves: one `runs` event with that run.
    const run = runs.created[0]!;
    Object.assign(run, { published: 500, lines: 500 });
    await s.waitFor('a runs event', () => s.events.some((e) => e.event === 'runs'));
    const moved = s.events.find((e) => e.event === 'runs')!.data as { runs: { id: string; published: number }[] };
    assert.deepEqual(moved.runs.map((r) => [r.id, r.published]), [[run.id, 500]]);
    // The next poll sees it standing still: one more `runs` event, its rate back to 0, then none.
    await s.waitFor('the rate back to 0', () => s.events.filter((e) => e.event === 'runs').length === 2);
    assert.equal((s.events.filter((e) => e.event === 'runs')[1]!.data as { runs: { rate: number }[] }).runs[0]!.rate, 0);

    // log-clean moves a minute: a `minutes` event with its absolute values.
    sources.minutes.push({ source: 'web', minute: '2015-05-17T10:05:00.000Z', requests: 7, bytes: 700, visitors: 2, status: { '1xx': 0, '2xx': 6, '3xx': 0, '4xx': 1, '5xx': 0 }, updatedAt: new Date() });
    await s.waitFor('a minutes event', () => s.events.some((e) => e.event === 'minutes'));
    const minutes = s.events.find((e) => e.event === 'minutes')!.data as { rows: MinuteRow[]; extents: unknown[] };
    assert.equal(minutes.rows[0]!.requests, 7);
    assert.equal(minutes.extents.length, 1);
    const count = s.events.length;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(s.events.filter((e) => e.event === 'minutes').length, 1, 'an unchanged minute is not sent again');
    assert.equal(s.events.length, count, `nothing changed, nothing sent: ${JSON.stringify(s.events.map((e) => e.event))}`);
    assert.ok(s.comments >= 1, 'heartbeats keep the connection alive');

    // The page drops, a run finishes meanwhile, the page reconnects with the last id it saw.
    const lastId = s.events.at(-1)!.id!;
    s.close();
    await s.pump;
    Object.assign(run, { state: 'done', published: 1000, lines: 1000 });
    await new Promise((r) => setTimeout(r, 150)); // no page connected: nothing is polled
    const again = await openStream({ cookie, 'last-event-id': lastId });
    await again.waitFor('the done run', () => again.events.some((e) => e.event === 'runs'));
    assert.ok(!again.events.some((e) => e.event === 'snapshot'), 'a page that missed nothing it cannot replay gets no snapshot');
    const done = again.events.find((e) => e.event === 'runs')!.data as { runs: { state: string; published: number }[] };
    assert.deepEqual(done.runs.map((r) => [r.state, r.published]), [['done', 1000]]);

    // An id from another process (a restarted trigger) gets a fresh snapshot.
    const other = await openStream({ cookie, 'last-event-id': 'deadbeef.12' });
    await other.waitFor('the snapshot', () => other.events.length > 0);
    assert.equal(other.events[0]!.event, 'snapshot');
    other.close();
    await other.pump;

    // Shutdown ends open streams instead of waiting for the page to leave.
    const started = Date.now();
    await app.close();
    await again.pump;
    assert.ok(again.ended);
    assert.ok(Date.now() - started < 2_000, `app.close() took ${Date.now() - started} ms`);
  });
});
