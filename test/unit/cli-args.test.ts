// The CLI's command lines: what each sends to the API (a hand-written fake of the Api port),
// usage errors (exit 2, nothing sent), the API's refusals (exit 1, its message on stderr), an
// API that cannot be reached (exit 3), and the default target.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Api, Query } from '../../cli/client.ts';
import { targetFromEnv } from '../../cli/client.ts';
import { ApiError, UnreachableError } from '../../cli/errors.ts';
import { painter } from '../../cli/format.ts';
import { DIMENSIONS, run } from '../../cli/program.ts';
import { DIMENSIONS as API_DIMENSIONS } from '../../functions/trigger/stats.ts';

interface Call {
  method: string;
  path: string;
  body?: unknown;
  query?: Query;
}

function fakeApi(answer: (call: Call) => unknown = () => ({})) {
  const calls: Call[] = [];
  const api: Api = {
    url: 'http://fake',
    async get(path, query) {
      const call = { method: 'GET', path, query };
      calls.push(call);
      return answer(call);
    },
    async post(path, body) {
      const call = { method: 'POST', path, body };
      calls.push(call);
      return { status: path.endsWith('/stop') ? 200 : 202, body: answer(call) };
    },
    async upload(path, file, query) {
      const call = { method: 'UPLOAD', path, body: file, query };
      calls.push(call);
      return answer(call);
    },
  };
  return { api, calls };
}

async function cli(argv: string[], answer?: (call: Call) => unknown) {
  const { api, calls } = fakeApi(answer);
  let out = '';
  let err = '';
  const code = await run(argv, {
    api: () => api,
    io: {
      out: (s) => void (out += s),
      err: (s) => void (err += s),
      stdoutTty: false,
      stderrTty: false,
      columns: () => 120,
      paint: painter(false),
      paintErr: painter(false),
      now: () => Date.parse('2026-11-25T21:40:00Z'),
      sleep: async () => {},
    },
    version: '1.2.3',
  });
  return { code, out, err, calls };
}

const started = { id: '7d4f2ea4-e968-4e57-9493-ca46273bc163', kind: 'logs', state: 'running', source: 'web', file: 'access.log', params: null, lines: 0, published: 0, error: null, createdAt: '2026-11-25T21:36:22.000Z', updatedAt: '2026-11-25T21:36:22.000Z', finishedAt: null };

test('logs replay: the request body POST /v1/runs takes, --no-alerts as "alerts": false', async () => {
  const r = await cli(['logs', 'replay', 'nginx/access.log', '--source', 'web', '--follow', '--no-alerts'], () => started);
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.calls, [{ method: 'POST', path: '/v1/runs', body: { kind: 'logs', file: 'nginx/access.log', source: 'web', follow: true, alerts: false } }]);
  assert.match(r.out, /^started run 7d4f2ea4-e968-4e57-9493-ca46273bc163 \(logs: access\.log, source web\)$/m);
  assert.match(r.out, /sluice runs 7d4f2ea4-e968-4e57-9493-ca46273bc163 --watch/);

  const plain = await cli(['logs', 'replay', 'access.log'], () => started);
  assert.deepEqual(plain.calls[0]!.body, { kind: 'logs', file: 'access.log' }, 'alerts and follow only when asked');
  const glob = await cli(['logs', 'replay', '--files', 'nginx/*.log', '--follow'], () => started);
  assert.deepEqual(glob.calls[0]!.body, { kind: 'logs', files: 'nginx/*.log', follow: true });
});

test('logs upload: the local file and the query POST /v1/logs takes', async () => {
  const file = new URL(import.meta.url).pathname;
  const r = await cli(['logs', 'upload', file, '--source', 'web', '--no-alerts', '--json'], () => ({ id: 'x', lines: 3 }));
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.calls, [{ method: 'UPLOAD', path: '/v1/logs', body: file, query: { source: 'web', alerts: 'false' } }]);
  assert.deepEqual(JSON.parse(r.out), { id: 'x', lines: 3 });
  const plain = await cli(['logs', 'upload', file], () => ({ id: 'x', lines: 3 }));
  assert.deepEqual(plain.calls[0]!.query, { source: 'upload' });
  assert.match(plain.out, /^uploaded .*: 3 lines published as run x, source upload/);
});

test('--framing line|batch goes into the run body and the upload query; another value is a usage error', async () => {
  const replay = await cli(['logs', 'replay', 'access.log', '--framing', 'batch'], () => started);
  assert.deepEqual(replay.calls[0]!.body, { kind: 'logs', file: 'access.log', framing: 'batch' });
  const file = new URL(import.meta.url).pathname;
  const upload = await cli(['logs', 'upload', file, '--framing', 'line', '--json'], () => ({ id: 'x', lines: 3 }));
  assert.deepEqual(upload.calls[0]!.query, { source: 'upload', framing: 'line' });
  const bad = await cli(['logs', 'replay', 'access.log', '--framing', 'lines'], () => started);
  assert.notEqual(bad.code, 0);
  assert.deepEqual(bad.calls, []);
  assert.match(bad.err, /--framing must be line or batch, not "lines"/);
});

test('ev run: options map to the EV request schema (faultRate, sampleIntervalS)', async () => {
  const r = await cli(['ev', 'run', '--sessions', '50', '--seed', '1', '--speed', '100000', '--fault-rate', '0.3', '--sample-interval', '10', '--json'], () => ({ ...started, kind: 'ev' }));
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.calls[0]!.body, { kind: 'ev', sessions: 50, seed: 1, speed: 100000, faultRate: 0.3, sampleIntervalS: 10 });
  assert.deepEqual(JSON.parse(r.out), { ...started, kind: 'ev' }, '--json prints the API answer as is');
});

test('usage errors exit 2 and send nothing', async () => {
  for (const argv of [
    ['ev', 'run', '--sessions', '0'],
    ['ev', 'run', '--sessions', '5', '--fault-rate', '2'],
    ['ev', 'run', '--sessions', 'many'],
    ['ev', 'run', '--seed', '1'],
    ['logs', 'replay'],
    ['logs', 'replay', 'a.log', '--files', '*.log'],
    ['logs', 'upload', '/nonexistent/file.log'],
    ['top', 'nope'],
    ['top'],
    ['stats', '--bucket', 'week'],
    ['stats', '--from', 'yesterday'],
    ['runs', '--watch'],
    ['runs', 'x', '--stored'],
    ['runs', '--limit', '0'],
    ['frobnicate'],
    ['logs'],
    [],
  ]) {
    const r = await cli(argv);
    assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`);
    assert.deepEqual(r.calls, [], argv.join(' '));
    assert.notEqual(r.err, '', `${argv.join(' ')} says why on stderr`);
    assert.equal(r.out, '', argv.join(' '));
  }
});

test('help and version exit 0', async () => {
  const help = await cli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.out, /Exit codes: 0 ok; 1 .*; 2 usage error; 3 the API cannot be reached/);
  const sub = await cli(['runs', '--help']);
  assert.equal(sub.code, 0);
  assert.match(sub.out, /--watch/);
  const version = await cli(['--version']);
  assert.equal(version.code, 0);
  assert.equal(version.out.trim(), '1.2.3');
});

test('stats and top: the query the API takes; times as ISO instants', async () => {
  const stats = await cli(['stats', '--source', 'web', '--from', '2015-05-17', '--to', '2015-05-18T00:00:00+02:00', '--bucket', 'hour', '--json'], () => ({ ok: 1 }));
  assert.equal(stats.code, 0, stats.err);
  assert.deepEqual(stats.calls[0], { method: 'GET', path: '/v1/stats', query: { source: 'web', from: '2015-05-17T00:00:00.000Z', to: '2015-05-17T22:00:00.000Z', bucket: 'hour' } });
  assert.deepEqual(JSON.parse(stats.out), { ok: 1 });
  const top = await cli(['top', 'not_found', '--limit', '5', '--json'], () => ({ items: [] }));
  assert.deepEqual(top.calls[0], { method: 'GET', path: '/v1/stats/top', query: { dimension: 'not_found', source: undefined, from: undefined, to: undefined, limit: 5 } });
  assert.deepEqual(DIMENSIONS, API_DIMENSIONS, 'the CLI knows the API dimensions');
});

test('runs: the list, one run, stop (a subcommand, not an id)', async () => {
  const list = await cli(['runs', '--limit', '3'], () => ({ runs: [started] }));
  assert.deepEqual(list.calls[0], { method: 'GET', path: '/v1/runs', query: { limit: 3 } });
  assert.match(list.out, /^ID\s+KIND\s+STATE/);
  const one = await cli(['runs', started.id], () => ({ ...started, stored: { raw_logs: 5 } }));
  assert.deepEqual(one.calls[0], { method: 'GET', path: `/v1/runs/${started.id}`, query: undefined });
  assert.match(one.out, /^stored\s+raw_logs 5$/m);
  const stop = await cli(['runs', 'stop', started.id], () => ({ ...started, state: 'stopped', published: 1234 }));
  assert.deepEqual(stop.calls[0], { method: 'POST', path: `/v1/runs/${started.id}/stop`, body: undefined });
  assert.equal(stop.out, `run ${started.id} stopped: 1,234 lines published\n`);
});

test("the API's refusal exits 1 with its message on stderr; an unreachable API exits 3 saying what to check", async () => {
  const refused = await cli(['logs', 'replay', '../etc/passwd'], () => {
    throw new ApiError(400, "file must be a path under LOG_DIR: '../etc/passwd' leaves it");
  });
  assert.equal(refused.code, 1);
  assert.equal(refused.out, '');
  assert.equal(refused.err, "sluice: file must be a path under LOG_DIR: '../etc/passwd' leaves it (HTTP 400)\n");

  const down = await cli(['runs'], () => {
    throw new UnreachableError('http://127.0.0.1:3000', 'connect ECONNREFUSED 127.0.0.1:3000');
  });
  assert.equal(down.code, 3);
  assert.match(down.err, /cannot reach the sluice API at http:\/\/127\.0\.0\.1:3000: connect ECONNREFUSED/);
  assert.match(down.err, /npm start/);
  assert.match(down.err, /SLUICE_URL/);
});

test("the default target is the local system: the trigger's port, TRIGGER_TOKEN or the development token", () => {
  assert.deepEqual(targetFromEnv({}), { url: 'http://127.0.0.1:3000', token: 'dev-token' });
  assert.deepEqual(targetFromEnv({ HTTP_PORT: '3100', TRIGGER_TOKEN: 'local-secret' }), { url: 'http://127.0.0.1:3100', token: 'local-secret' });
  assert.deepEqual(targetFromEnv({ SLUICE_URL: 'https://sluice.example/', SLUICE_TOKEN: 's3cret-token', TRIGGER_TOKEN: 'other' }), { url: 'https://sluice.example', token: 's3cret-token' });
});
