// The OpenAPI document against the real app: every registered route is in it, and every route
// in it is called (a success and errors) with each answer's status declared and its body valid
// against the document's schema for that status (ajv, JSON Schema 2020-12 as OpenAPI 3.1 says).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { pino } from 'pino';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { LightMyRequestResponse } from 'fastify';
import { createApp, type AppDeps } from '../../functions/trigger/app.ts';
import { createMetrics } from '../../shared/metrics.ts';
import type { Runner, RunPublisher } from '../../functions/trigger/runner.ts';
import type { EvRuns } from '../../functions/trigger/ev-runs.ts';
import type { StatsStore } from '../../functions/trigger/stats.ts';
import { fakeRuns } from './fakes/run-store.ts';
import { deadLetter, fakeDeadLetters } from './fakes/dead-letters.ts';

const TOKEN = 'secret-token-123';
const auth = { authorization: `Bearer ${TOKEN}` };

/** Not the API, hidden from the document on purpose: the description itself, and the dashboard's page and files. */
const DESCRIPTION_ROUTES = new Set(['GET /openapi.json', 'GET /docs', 'GET /docs/', 'GET /docs/js/scalar.js', 'GET /', 'GET /index.html', 'GET /assets/:name']);
/** An endless stream: injected, it would never end. Its answer is checked over a socket (below); here its errors. */
const STREAMS = new Set(['GET /v1/events']);

function fakeRunner(): Runner {
  const runWork = async (work: Parameters<Runner['start']>[1]) => {
    const progress = { lines: 0, published: 0 };
    const out: RunPublisher = {
      progress,
      signal: new AbortController().signal,
      describeCheckpoint() {},
      async save() {},
      async publish() {
        progress.lines++;
        progress.published++;
      },
    };
    await work(out);
    return progress;
  };
  // stopRun: the run "stops" at once (the fake store below reports it stopped).
  return { start: (_id, work) => void runWork(work), runNow: (_id, work) => runWork(work), stopRun: (id) => (stopped.add(id), Promise.resolve({ lines: 0, published: 0 })), active: 0, executing: () => [], stop: async () => {} };
}
const stopped = new Set<string>();

const runs = (() => {
  const base = fakeRuns({ raw_logs: 2, web_requests: 2, log_rejects: 0 });
  return { ...base, get: async (id: string) => {
    const run = await base.get(id);
    return run && stopped.has(id) ? { ...run, state: 'stopped' as const, finishedAt: '2026-11-25T21:00:00.000Z' } : run;
  } };
})();

const ev: EvRuns = {
  async start(request) {
    return runs.create({ kind: 'ev', source: 'simulator', params: { ...request, seed: 1, startTime: '2026-11-25T21:00:00.000Z' } });
  },
  resume() {},
};

const stats: StatsStore = {
  async series() {
    return [{ t: '2024-01-01T10:00:00.000Z', requests: 3, bytes: 300, visitors: 2, status: { '1xx': 0, '2xx': 2, '3xx': 0, '4xx': 1, '5xx': 0 } }];
  },
  async top() {
    return [{ value: '/index.html', requests: 3, visitors: 2, bytes: 300 }];
  },
};

let dir: string;
let app: ReturnType<typeof createApp>;
/** The same app without a DLQ port (no DLQ_AMQP_URL) and not connected to the broker. */
let bare: ReturnType<typeof createApp>;
let doc: { openapi: string; paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: object }> }>; security?: unknown[] }>>; components: { securitySchemes: Record<string, unknown> } };
const dlq = fakeDeadLetters();
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats.default(ajv);

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-openapi-'));
  mkdirSync(path.join(dir, 'logs'));
  writeFileSync(path.join(dir, 'logs', 'access.log'), 'line one\nline two\n');
  const deps: AppDeps = {
    runs, runner: fakeRunner(), ev, logDir: path.join(dir, 'logs'), token: TOKEN, bodyLimitBytes: 64,
    log: pino({ level: 'silent' }), ready: () => true, metrics: createMetrics('trigger').registry, stats, dlq,
  };
  app = createApp(deps);
  bare = createApp({ ...deps, dlq: undefined, ready: () => false, metrics: undefined });
  dlq.queues.get('logs.clean.dlq')!.push(
    deadLetter('logs.clean', 'GET / HTTP/1.1\u202e\x00\xff', { runId: 'r1', lineNo: 'x' }, 'm-1'),
    deadLetter('logs.clean', Buffer.alloc(1000, 0x41), { 'x-death': [{ count: 3, queue: 'logs.clean.retry', reason: 'expired' }] }, 'm-2'),
  );
  const res = await app.inject({ url: '/openapi.json' });
  assert.equal(res.statusCode, 200, 'the document needs no token');
  doc = res.json();
});
after(async () => {
  await app.close();
  await bare.close();
  rmSync(dir, { recursive: true, force: true });
});

/** `/v1/runs/:id` as the document writes it. */
const oapiPath = (url: string) => url.replace(/:(\w+)/g, '{$1}');

/** Every route Fastify has, from its route tree (HEAD routes are Fastify's own copies of GET). */
function registeredRoutes(a: typeof app): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of a.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│├└─\s]*)(\S.*?) \(([A-Z, ]+)\)$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    stack.push(m[2]!);
    for (const method of m[3]!.split(', ')) if (method !== 'HEAD') out.push(`${method} ${stack.join('')}`);
  }
  return out;
}

/** Checks an answer against the document: its status is declared for the route, its body valid. */
function conforms(method: string, route: string, res: LightMyRequestResponse): void {
  const op = doc.paths[oapiPath(route)]?.[method.toLowerCase()];
  assert.ok(op, `${method} ${route} is in the document`);
  const declared = op.responses[String(res.statusCode)];
  assert.ok(declared, `${method} ${route} answered ${res.statusCode} (${res.body.slice(0, 200)}), which the document does not declare (it has ${Object.keys(op.responses).join(', ')})`);
  if (res.statusCode === 204) return assert.equal(res.body, '', `${method} ${route} 204: no body`);
  const type = String(res.headers['content-type'] ?? '').split(';')[0]!;
  const media = declared.content?.[type];
  assert.ok(media, `${method} ${route} ${res.statusCode}: content type ${type} is declared`);
  const body = type === 'application/json' ? res.json() : res.body;
  const validate = ajv.compile(media.schema);
  assert.ok(validate(body), `${method} ${route} ${res.statusCode}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body).slice(0, 400)}`);
}

type Call = { method?: 'GET' | 'POST' | 'DELETE'; url: string; payload?: unknown; headers?: Record<string, string>; on?: 'bare'; status: number };
/** Per route of the document: calls that must answer `status`, at least one success and one error each. */
const CASES: Record<string, Call[]> = {
  'GET /healthz': [{ url: '/healthz', headers: {}, status: 200 }, { url: '/healthz', headers: {}, on: 'bare', status: 503 }],
  'GET /metrics': [{ url: '/metrics', status: 200 }, { url: '/metrics', headers: {}, status: 401 }, { url: '/metrics', on: 'bare', status: 404 }],
  'POST /v1/runs': [
    { method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log' }, status: 202 },
    { method: 'POST', url: '/v1/runs', payload: { kind: 'ev', sessions: 2, seed: 1 }, status: 202 },
    { method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log', extra: 1 }, status: 400 },
    { method: 'POST', url: '/v1/runs', payload: '{"kind": ', headers: { ...auth, 'content-type': 'application/json' }, status: 400 },
    { method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'nope.log' }, status: 404 },
    { method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log' }, headers: { authorization: 'Bearer wrong-token-xyz' }, status: 401 },
  ],
  'POST /v1/logs': [
    { method: 'POST', url: '/v1/logs?source=up', payload: 'a\nb\n', headers: { ...auth, 'content-type': 'text/plain' }, status: 200 },
    { method: 'POST', url: '/v1/logs?source=a%20b', payload: 'a\n', headers: { ...auth, 'content-type': 'text/plain' }, status: 400 },
    { method: 'POST', url: '/v1/logs', payload: 'x'.repeat(100), headers: { ...auth, 'content-type': 'text/plain' }, status: 413 },
  ],
  'GET /v1/runs': [{ url: '/v1/runs?limit=5', status: 200 }, { url: '/v1/runs?limit=0', status: 400 }],
  'GET /v1/runs/:id': [
    { url: '/v1/runs/00000000-0000-4000-8000-000000000000', status: 200 },
    { url: '/v1/runs/not-a-uuid', status: 400 },
    { url: '/v1/runs/00000000-0000-4000-8000-999999999999', status: 404 },
  ],
  'POST /v1/runs/:id/stop': [
    { method: 'POST', url: '/v1/runs/00000000-0000-4000-8000-000000000000/stop', status: 200 },
    { method: 'POST', url: '/v1/runs/00000000-0000-4000-8000-000000000000/stop', status: 409 },
    { method: 'POST', url: '/v1/runs/00000000-0000-4000-8000-999999999999/stop', status: 404 },
  ],
  'GET /v1/stats': [{ url: '/v1/stats?from=2024-01-01T00:00:00Z&to=2024-01-02T00:00:00Z&bucket=hour', status: 200 }, { url: '/v1/stats?bucket=week', status: 400 }],
  'GET /v1/stats/top': [{ url: '/v1/stats/top?dimension=path', status: 200 }, { url: '/v1/stats/top', status: 400 }],
  'GET /v1/dlq': [{ url: '/v1/dlq', status: 200 }, { url: '/v1/dlq', on: 'bare', status: 503 }, { url: '/v1/dlq', headers: {}, status: 401 }],
  'GET /v1/dlq/:queue': [
    { url: '/v1/dlq/logs.clean.dlq?limit=5', status: 200 },
    { url: '/v1/dlq/logs.clean', status: 200 },
    { url: '/v1/dlq/nope.dlq', status: 404 },
    { url: '/v1/dlq/logs.clean?limit=0', status: 400 },
  ],
  'POST /v1/dlq/:queue/replay': [
    { method: 'POST', url: '/v1/dlq/logs.clean.dlq/replay', payload: { limit: 1 }, status: 200 },
    { method: 'POST', url: '/v1/dlq/logs.clean.dlq/replay', payload: { limit: 0 }, status: 400 },
    { method: 'POST', url: '/v1/dlq/nope/replay', payload: {}, status: 404 },
    { method: 'POST', url: '/v1/dlq/logs.clean.dlq/replay', payload: {}, on: 'bare', status: 503 },
  ],
  'POST /v1/session': [{ method: 'POST', url: '/v1/session', status: 200 }, { method: 'POST', url: '/v1/session', headers: {}, status: 401 }],
  'DELETE /v1/session': [{ method: 'DELETE', url: '/v1/session', status: 204 }, { method: 'DELETE', url: '/v1/session', headers: {}, status: 401 }],
  'GET /v1/events': [{ url: '/v1/events', headers: {}, status: 401 }],
  'POST /v1/dlq/:queue/purge': [
    { method: 'POST', url: '/v1/dlq/logs.lake.dlq/purge', status: 200 },
    { method: 'POST', url: '/v1/dlq/nope/purge', status: 404 },
  ],
};

test('the document is OpenAPI 3.1, declares the token, and needs no token; /docs serves its reader', async () => {
  assert.equal(doc.openapi, '3.1.0');
  assert.deepEqual(Object.keys(doc.components.securitySchemes), ['bearerToken']);
  assert.deepEqual(doc.paths['/healthz']!.get!.security, [], '/healthz needs no token');
  const page = await app.inject({ url: '/docs/' });
  assert.equal(page.statusCode, 200);
  assert.match(page.body, /\/openapi\.json/);
  const script = await app.inject({ url: '/docs/js/scalar.js' });
  assert.equal(script.statusCode, 200);
  assert.match(String(script.headers['content-type']), /javascript/);
  // The description is public, the API is not.
  assert.equal((await app.inject({ url: '/v1/runs' })).statusCode, 401);
  // Over a real socket, paths sent as they are (no client normalises them): no way around the token.
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as { port: number };
  for (const p of ['/docs/../v1/runs', '/docs/%2e%2e/v1/runs', '/docs/js/../../v1/runs', '/openapi.json/../v1/runs', '/docs/anything']) {
    const status = await new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: p }, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', reject);
    });
    assert.ok(status === 401 || status === 404, `${p} answered ${status} without a token`);
    assert.notEqual(status, 200, p);
  }
});

test('every registered route is in the document', () => {
  const documented = new Set(Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)));
  const missing = registeredRoutes(app).filter((r) => !DESCRIPTION_ROUTES.has(r) && !documented.has(r.replace(/ (.*)$/, (_, p: string) => ` ${oapiPath(p)}`)));
  assert.deepEqual(missing, [], 'routes that are not in /openapi.json');
  assert.ok(registeredRoutes(app).length >= 16, 'the route tree was read');
});

test('every route of the document answers as the document says', async (t) => {
  for (const [p, ops] of Object.entries(doc.paths)) {
    for (const method of Object.keys(ops)) {
      const key = `${method.toUpperCase()} ${p}`;
      const route = key.replace(/\{(\w+)\}/g, ':$1');
      // Each route its own subtest: a pending one is todo without hiding the others' failures.
      await t.test(key, async () => {
        const calls = CASES[route];
        assert.ok(calls, `${key} is in the document but this test does not call it: add its cases`);
        assert.ok((STREAMS.has(route) || calls.some((c) => c.status < 300)) && calls.some((c) => c.status >= 400), `${key}: a success and an error`);
        for (const c of calls) {
          const target = c.on === 'bare' ? bare : app;
          const res = await target.inject({ method: c.method ?? 'GET', url: c.url, headers: c.headers ?? auth, payload: c.payload as string });
          assert.equal(res.statusCode, c.status, `${c.method ?? 'GET'} ${c.url}: ${res.body.slice(0, 300)}`);
          conforms(c.method ?? 'GET', route.split(' ')[1]!, res);
        }
      });
    }
  }
});

test('GET /v1/events answers as the document says: 200, text/event-stream, opened by the cookie of POST /v1/session', async () => {
  const { port } = app.server.address() as { port: number };
  const session = await app.inject({ method: 'POST', url: '/v1/session', headers: auth });
  const cookie = String(session.headers['set-cookie']).split(';')[0]!;
  const op = doc.paths['/v1/events']!.get!;
  for (const headers of [{ cookie }, auth]) {
    const res = await fetch(`http://127.0.0.1:${port}/v1/events`, { headers, signal: AbortSignal.timeout(5_000) });
    assert.equal(res.status, 200);
    const type = String(res.headers.get('content-type')).split(';')[0]!;
    assert.ok(op.responses['200']!.content![type], `the document declares ${type}`);
    const reader = res.body!.getReader();
    const { value } = await reader.read();
    assert.match(Buffer.from(value!).toString('utf8'), /^(retry|:|event|id|data)/m, 'a Server-Sent Events frame');
    await reader.cancel();
  }
});

test('a document that disagrees with an answer fails the check (the check can fail)', () => {
  const res = { statusCode: 200, headers: { 'content-type': 'application/json' }, body: '{"queues":[{"queue":"x"}]}', json: () => ({ queues: [{ queue: 'x' }] }) } as unknown as LightMyRequestResponse;
  assert.throws(() => conforms('GET', '/v1/dlq', res), /must have required property/);
  const undeclared = { ...res, statusCode: 418 } as LightMyRequestResponse;
  assert.throws(() => conforms('GET', '/v1/dlq', undeclared), /does not declare/);
});
