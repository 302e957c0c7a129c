// The trigger's HTTP contract, with hand-written fakes of its ports (run store,
// runner, EV runs): authentication, validation and path rules.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, symlinkSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createApp } from '../../functions/trigger/app.ts';
import { createMetrics } from '../../shared/metrics.ts';
import { fakeRuns } from './fakes/run-store.ts';
import type { Runner, RunPublisher } from '../../functions/trigger/runner.ts';
import type { EvRuns } from '../../functions/trigger/ev-runs.ts';
import { resumeStaleRuns } from '../../functions/trigger/resume.ts';
import { decodeLogBatch } from '../../shared/contracts/logs.ts';

const TOKEN = 'secret-token-123';
const auth = { authorization: `Bearer ${TOKEN}` };


/** Runs the work at once against an in-memory publisher that records messages. */
function fakeRunner(sent: { routingKey: string; content: Buffer; headers: unknown; type?: string | undefined }[]): Runner {
  const runWork = async (work: Parameters<Runner['start']>[1]) => {
    const progress = { lines: 0, published: 0 };
    const out: RunPublisher = {
      progress,
      signal: new AbortController().signal,
      describeCheckpoint() {},
      async save() {},
      async publish(_exchange, routingKey, content, options, _position, items = 1) {
        progress.lines += items;
        progress.published += items;
        // As on the wire: amqplib leaves headers whose value is undefined out.
        sent.push({ routingKey, content, headers: JSON.parse(JSON.stringify(options.headers)), type: options.type });
      },
    };
    await work(out);
    return progress;
  };
  return { start: (_id, work) => void runWork(work), runNow: (_id, work) => runWork(work), stopRun: () => null, executing: () => [], active: 0, stop: async () => {} };
}

const evRuns: EvRuns & { requests: unknown[] } = {
  requests: [],
  async start(request) {
    this.requests.push(request);
    return { ...(await fakeRuns({ raw_logs: 0 }).create({ kind: 'ev', params: request })) };
  },
  resume() {},
};

let dir: string;
let app: ReturnType<typeof createApp>;
const sent: { routingKey: string; content: Buffer; headers: unknown; type?: string | undefined }[] = [];
const runs = fakeRuns({ raw_logs: 0 });

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-http-'));
  mkdirSync(path.join(dir, 'logs'));
  writeFileSync(path.join(dir, 'logs', 'access.log'), 'line one\nline two\n');
  writeFileSync(path.join(dir, 'secret.txt'), 'outside LOG_DIR');
  symlinkSync(path.join(dir, 'secret.txt'), path.join(dir, 'logs', 'escape.log'));
  mkdirSync(path.join(dir, 'logs', 'sub'));
  app = createApp({
    runs, runner: fakeRunner(sent), ev: evRuns, logDir: path.join(dir, 'logs'), token: TOKEN, bodyLimitBytes: 1024 * 1024,
    log: pino({ level: 'silent' }), ready: () => true, metrics: createMetrics('trigger').registry,
  });
});
after(async () => {
  await app.close();
  rmSync(dir, { recursive: true, force: true });
});

const post = (url: string, payload: unknown, headers: Record<string, string> = auth) => app.inject({ method: 'POST', url, payload: payload as string, headers });

describe('authentication', () => {
  test('health needs no token', async () => {
    assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200);
  });
  test('metrics need the token and speak Prometheus', async () => {
    const anonymous = await app.inject({ url: '/metrics' });
    assert.equal(anonymous.statusCode, 401);
    assert.match(anonymous.json().message, /Authorization: Bearer/);
    const res = await app.inject({ url: '/metrics', headers: auth });
    assert.equal(res.statusCode, 200);
    assert.match(res.body, /^# HELP sluice_published_total/m);
  });
  test('a missing token is 401 and says what is expected', async () => {
    const res = await app.inject({ url: '/v1/runs' });
    assert.equal(res.statusCode, 401);
    assert.match(res.json().message, /Authorization: Bearer/);
  });
  test('a wrong token is 401', async () => {
    for (const authorization of ['Bearer nope', `Bearer ${TOKEN}x`, TOKEN]) {
      const res = await app.inject({ url: '/v1/runs', headers: { authorization } });
      assert.equal(res.statusCode, 401, authorization);
      assert.equal(res.json().message, 'wrong bearer token');
    }
    assert.equal((await post('/v1/runs', { kind: 'logs', file: 'access.log' }, { authorization: 'Bearer x' })).statusCode, 401);
  });
});

describe('POST /v1/runs (logs)', () => {
  test('202 with the run id; the file is published line by line', async () => {
    const res = await post('/v1/runs', { kind: 'logs', file: 'access.log', source: 'web-1' });
    assert.equal(res.statusCode, 202);
    assert.equal(res.json().id, runs.created.at(-1)!.id);
    await new Promise((r) => setTimeout(r, 50));
    const mine = sent.filter((m) => (m.headers as { runId: string }).runId === res.json().id);
    assert.deepEqual(mine.map((m) => [m.routingKey, m.content.toString()]), [['logs.web-1.access', 'line one'], ['logs.web-1.access', 'line two']]);
    assert.deepEqual(mine.map((m) => m.headers), [
      { runId: res.json().id, source: 'web-1', lineNo: 1, byteOffset: 0, file: 'access.log' },
      { runId: res.json().id, source: 'web-1', lineNo: 2, byteOffset: 9, file: 'access.log' },
    ]);
  });
  test('path traversal, absolute paths and symlinks out of LOG_DIR are 400', async () => {
    for (const [file, reason] of [['../secret.txt', /\.\./], ['sub/../../secret.txt', /\.\./], ['/etc/passwd', /absolute/], ['escape.log', /outside LOG_DIR/], ['sub', /not a regular file/]] as const) {
      const res = await post('/v1/runs', { kind: 'logs', file });
      assert.equal(res.statusCode, 400, file);
      assert.match(res.json().message, reason);
    }
  });
  test('a missing file is 404', async () => {
    const res = await post('/v1/runs', { kind: 'logs', file: 'nope.log' });
    assert.equal(res.statusCode, 404);
    assert.match(res.json().message, /nope\.log/);
  });
  test('malformed bodies are 400 naming what is wrong', async () => {
    const cases: [unknown, RegExp, Record<string, string>?][] = [
      ['{"kind": "logs", "file": ', /JSON/i, { ...auth, 'content-type': 'application/json' }],
      [{ kind: 'logs' }, /file/],
      [{ kind: 'logs', file: 'access.log', files: '*.log' }, /either file or files/],
      [{ kind: 'logs', files: '' }, /files/],
      [{ kind: 'logs', file: 'access.log', follow: 'yes' }, /follow/],
      [{ kind: 'logs', file: '' }, /file/],
      [{ kind: 'logs', file: 'access.log', source: 'bad source!' }, /source/],
      [{ kind: 'logs', file: 'access.log', extra: 1 }, /extra/],
      [{ kind: 'movies', file: 'x' }, /kind/],
      [{}, /kind/],
    ];
    for (const [payload, reason, headers] of cases) {
      const res = await post('/v1/runs', payload, headers ?? auth);
      assert.equal(res.statusCode, 400, JSON.stringify(payload));
      assert.match(res.json().message, reason, JSON.stringify(payload));
    }
  });
});

describe('POST /v1/runs (ev)', () => {
  test('out-of-range values are 400 naming the field', async () => {
    for (const [payload, field] of [
      [{ kind: 'ev', sessions: 0 }, 'sessions'],
      [{ kind: 'ev', sessions: 100_001 }, 'sessions'],
      [{ kind: 'ev', sessions: 5, faultRate: 1.5 }, 'faultRate'],
      [{ kind: 'ev', sessions: 5, speed: 0 }, 'speed'],
      [{ kind: 'ev', sessions: 5, sampleIntervalS: 0 }, 'sampleIntervalS'],
      [{ kind: 'ev', sessions: 5, seed: -1 }, 'seed'],
    ] as const) {
      const res = await post('/v1/runs', payload);
      assert.equal(res.statusCode, 400, JSON.stringify(payload));
      assert.match(res.json().message, new RegExp(field));
    }
  });
  test('a valid request is 202 with defaults filled in', async () => {
    const res = await post('/v1/runs', { kind: 'ev', sessions: 3, seed: 7 });
    assert.equal(res.statusCode, 202);
    assert.deepEqual(evRuns.requests.at(-1), { kind: 'ev', sessions: 3, seed: 7, speed: 3600, sampleIntervalS: 30, faultRate: 0 });
  });
});

describe('POST /v1/logs and GET /v1/runs', () => {
  test('an upload answers with the run id and line count, bytes untouched', async () => {
    const body = Buffer.concat([Buffer.from('a\r\n'), Buffer.from([0xc3, 0x28]), Buffer.from('\nlast')]);
    const res = await app.inject({ method: 'POST', url: '/v1/logs?source=up', payload: body, headers: { ...auth, 'content-type': 'text/plain' } });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().lines, 3);
    const mine = sent.filter((m) => (m.headers as { runId: string }).runId === res.json().id);
    assert.deepEqual(mine.map((m) => m.content.toString('hex')), ['61', 'c328', '6c617374']);
    const run = (await app.inject({ url: `/v1/runs/${res.json().id}`, headers: auth })).json();
    assert.deepEqual(run.stored, { raw_logs: 0 });
    assert.ok(Math.abs(Date.parse(run.storedAt) - Date.now()) < 60_000, `storedAt ${run.storedAt}: when the rows were counted`);
  });
  test('an upload with a bad source or a JSON body is 400', async () => {
    assert.equal((await app.inject({ method: 'POST', url: '/v1/logs?source=a%20b', payload: 'x', headers: { ...auth, 'content-type': 'text/plain' } })).statusCode, 400);
    const res = await post('/v1/logs', { lines: ['x'] });
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /text\/plain/);
  });
  test('unknown run is 404, malformed id 400, list works', async () => {
    assert.equal((await app.inject({ url: '/v1/runs/00000000-0000-4000-8000-999999999999', headers: auth })).statusCode, 404);
    const bad = await app.inject({ url: '/v1/runs/not-a-uuid', headers: auth });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().message, /UUID/);
    const list = await app.inject({ url: '/v1/runs?limit=2', headers: auth });
    assert.equal(list.statusCode, 200);
    assert.equal(list.json().runs.length, 2);
    assert.equal((await app.inject({ url: '/v1/runs?limit=0', headers: auth })).statusCode, 400);
  });
});

describe('alerts: a per-run choice', () => {
  const linesOf = async (id: string) => {
    await new Promise((r) => setTimeout(r, 50));
    return sent.filter((m) => (m.headers as { runId: string }).runId === id).map((m) => m.headers as Record<string, unknown>);
  };
  test('"alerts": false is kept in the run params and every line carries the header alerts: false', async () => {
    const res = await post('/v1/runs', { kind: 'logs', file: 'access.log', source: 'old-replay', alerts: false });
    assert.equal(res.statusCode, 202);
    assert.deepEqual(runs.created.at(-1)!.params, { alerts: false });
    const headers = await linesOf(res.json().id);
    assert.equal(headers.length, 2);
    for (const h of headers) assert.equal(h.alerts, false);
  });
  test('by default (or "alerts": true) the header is absent and nothing is recorded', async () => {
    for (const body of [{ kind: 'logs', file: 'access.log' }, { kind: 'logs', file: 'access.log', alerts: true }]) {
      const res = await post('/v1/runs', body);
      assert.equal(res.statusCode, 202);
      assert.equal(runs.created.at(-1)!.params, null);
      const headers = await linesOf(res.json().id);
      assert.equal(headers.length, 2);
      for (const h of headers) assert.ok(!('alerts' in h), JSON.stringify(h));
    }
  });
  test('a glob run records the choice beside follow and glob', async () => {
    const res = await post('/v1/runs', { kind: 'logs', files: '*.log', alerts: false });
    assert.equal(res.statusCode, 202);
    assert.deepEqual(runs.created.at(-1)!.params, { follow: false, glob: true, alerts: false });
    await waitFor(async () => (await linesOf(res.json().id)).length === 2);
    for (const h of await linesOf(res.json().id)) assert.equal(h.alerts, false);
  });
  test('an upload mutes with ?alerts=false', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/logs?source=up&alerts=false', payload: 'a\nb\n', headers: { ...auth, 'content-type': 'text/plain' } });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(runs.created.at(-1)!.params, { alerts: false });
    for (const h of await linesOf(res.json().id)) assert.equal(h.alerts, false);
  });
  test('a non-boolean alerts is 400 naming it', async () => {
    for (const alerts of ['false', 0, null, 'no']) {
      const res = await post('/v1/runs', { kind: 'logs', file: 'access.log', alerts });
      assert.equal(res.statusCode, 400, JSON.stringify(alerts));
      assert.match(res.json().message, /alerts/);
    }
    const upload = await app.inject({ method: 'POST', url: '/v1/logs?alerts=maybe', payload: 'x', headers: { ...auth, 'content-type': 'text/plain' } });
    assert.equal(upload.statusCode, 400);
    assert.match(upload.json().message, /alerts: must be true or false/);
  });
  test('the source name alert is reserved', async () => {
    const res = await post('/v1/runs', { kind: 'logs', file: 'access.log', source: 'alert' });
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /source: alert is reserved/);
    const upload = await app.inject({ method: 'POST', url: '/v1/logs?source=alert', payload: 'x', headers: { ...auth, 'content-type': 'text/plain' } });
    assert.equal(upload.statusCode, 400);
    assert.match(upload.json().message, /alert is reserved/);
  });
  test('a resumed run keeps the choice (it is in its params)', async () => {
    const resumedSent: typeof sent = [];
    const store = fakeRuns();
    const run = await store.create({ kind: 'logs', source: 'old-replay', file: 'access.log', params: { alerts: false } });
    store.claimStale = async () => [run];
    await resumeStaleRuns({ runs: store, runner: fakeRunner(resumedSent), ev: evRuns, logDir: path.join(dir, 'logs'), log: pino({ level: 'silent' }), staleAfterMs: 1 });
    await waitFor(async () => resumedSent.length === 2);
    for (const m of resumedSent) assert.equal((m.headers as { alerts?: unknown }).alerts, false);
  });
});

async function waitFor(probe: () => Promise<boolean>, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    assert.ok(Date.now() < deadline, 'timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('framing: a per-run choice', () => {
  const messagesOf = async (id: string) => {
    await new Promise((r) => setTimeout(r, 50));
    return sent.filter((m) => (m.headers as { runId: string }).runId === id);
  };
  const linesIn = (m: (typeof sent)[number]) => decodeLogBatch(m.headers, m.content).map((l) => [l.lineNo, l.byteOffset, l.file ?? null, l.line.toString()]);
  test('"framing": "batch" is kept in the run params and the lines go out as one batch message', async () => {
    const res = await post('/v1/runs', { kind: 'logs', file: 'access.log', framing: 'batch' });
    assert.equal(res.statusCode, 202);
    assert.deepEqual(runs.created.at(-1)!.params, { framing: 'batch' });
    const msgs = await messagesOf(res.json().id);
    assert.deepEqual(msgs.map((m) => m.type), ['log.batch']);
    assert.deepEqual(linesIn(msgs[0]!), [[1, 0, 'access.log', 'line one'], [2, 9, 'access.log', 'line two']]);
  });
  test('"framing": "line" (the default here) records nothing and sends a message per line', async () => {
    const res = await post('/v1/runs', { kind: 'logs', file: 'access.log', framing: 'line' });
    assert.equal(runs.created.at(-1)!.params, null);
    assert.deepEqual((await messagesOf(res.json().id)).map((m) => m.type), ['log.line', 'log.line']);
  });
  test('a follow or glob run and an upload take it too', async () => {
    const glob = await post('/v1/runs', { kind: 'logs', files: '*.log', framing: 'batch', alerts: false });
    assert.deepEqual(runs.created.at(-1)!.params, { follow: false, glob: true, alerts: false, framing: 'batch' });
    await waitFor(async () => (await messagesOf(glob.json().id)).length === 1);
    const up = await app.inject({ method: 'POST', url: '/v1/logs?source=up&framing=batch', payload: 'a\nb\nc', headers: { ...auth, 'content-type': 'text/plain' } });
    assert.equal(up.statusCode, 200);
    assert.equal(up.json().lines, 3, 'lines, not messages');
    assert.deepEqual(runs.created.at(-1)!.params, { framing: 'batch' });
    const msgs = await messagesOf(up.json().id);
    assert.equal(msgs.length, 1);
    assert.deepEqual(linesIn(msgs[0]!), [[1, 0, null, 'a'], [2, 2, null, 'b'], [3, 4, null, 'c']]);
  });
  test('another value is 400 naming framing', async () => {
    const res = await post('/v1/runs', { kind: 'logs', file: 'access.log', framing: 'lines' });
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /framing/);
    const upload = await app.inject({ method: 'POST', url: '/v1/logs?framing=big', payload: 'x', headers: { ...auth, 'content-type': 'text/plain' } });
    assert.equal(upload.statusCode, 400);
    assert.match(upload.json().message, /framing/);
  });
  test('a resumed run keeps its framing (it is in its params)', async () => {
    const resumedSent: typeof sent = [];
    const store = fakeRuns();
    const run = await store.create({ kind: 'logs', source: 'web', file: 'access.log', params: { framing: 'batch' } });
    store.claimStale = async () => [run];
    await resumeStaleRuns({ runs: store, runner: fakeRunner(resumedSent), ev: evRuns, logDir: path.join(dir, 'logs'), log: pino({ level: 'silent' }), staleAfterMs: 1 });
    await waitFor(async () => resumedSent.length === 1);
    assert.equal(resumedSent[0]!.type, 'log.batch');
  });
});
