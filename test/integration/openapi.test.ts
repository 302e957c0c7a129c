// The OpenAPI document against a real trigger on MySQL and RabbitMQ (the unit test uses fakes of
// the stores; this one sees the real rows): a replay and an EV run, then every run, stats and error
// answer validated against the trigger's own /openapi.json. The DLQ routes are checked the same way
// in dlq.test.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Pool } from '../../shared/db/pool.ts';
import { api, ensureBuilt, logsDir, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

let pool: Pool;
let trigger: FnProcess;
let doc: { openapi: string; paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: object }> }> }>> };
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats.default(ajv);

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  await startFunction('log-lake');
  await startFunction('log-clean');
  trigger = await startFunction('trigger', { LOG_DIR: logsDir });
  const res = await fetch(`http://127.0.0.1:${trigger.ready.port}/openapi.json`);
  assert.equal(res.status, 200);
  doc = (await res.json()) as typeof doc;
});
after(async () => {
  await stopAll();
  await pool?.end();
});

const checked = new Set<string>();
function conforms(method: string, route: string, res: { status: number; body: unknown }, status: number) {
  assert.equal(res.status, status, `${method} ${route}: ${JSON.stringify(res.body).slice(0, 300)}`);
  const schema = doc.paths[route]?.[method]?.responses[String(res.status)]?.content?.['application/json']?.schema;
  assert.ok(schema, `${method} ${route} ${res.status} is declared`);
  const validate = ajv.compile(schema);
  assert.ok(validate(res.body), `${method} ${route} ${res.status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(res.body).slice(0, 400)}`);
  checked.add(`${method} ${route} ${status}`);
}

test('a real replay, an EV run, the runs and the stats answer as /openapi.json says', async () => {
  assert.equal(doc.openapi, '3.1.0');
  const started = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'shop_access_log', source: 'oapi' });
  conforms('post', '/v1/runs', started, 202);
  const id = (started.body as { id: string }).id;
  const done = await waitFor('the replay done', async () => {
    const r = await api(trigger, 'GET', `/v1/runs/${id}`);
    return (r.body as { state: string }).state === 'done' ? r : undefined;
  });
  conforms('get', '/v1/runs/{id}', done, 200);
  const ev = await api(trigger, 'POST', '/v1/runs', { kind: 'ev', sessions: 2, seed: 1, speed: 1e6 });
  conforms('post', '/v1/runs', ev, 202);
  await waitFor('the EV run done', async () => ((await api(trigger, 'GET', `/v1/runs/${(ev.body as { id: string }).id}`)).body as { state: string }).state === 'done');
  conforms('get', '/v1/runs', await api(trigger, 'GET', '/v1/runs?limit=10'), 200);
  conforms('post', '/v1/runs/{id}/stop', await api(trigger, 'POST', `/v1/runs/${id}/stop`), 409);
  conforms('get', '/v1/runs/{id}', await api(trigger, 'GET', '/v1/runs/00000000-0000-4000-8000-000000000000'), 404);
  conforms('post', '/v1/runs', await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: '../etc/passwd' }), 400);
  conforms('post', '/v1/logs', await api(trigger, 'POST', '/v1/logs?source=oapi-up', 'a line\nanother\n'), 200);

  // The aggregates log-clean keeps for the replay (the shop log: 22 Jan 2019, +03:30).
  const range = 'from=2019-01-21T00:00:00Z&to=2019-01-23T00:00:00Z';
  const stats = await waitFor('the aggregates counted', async () => {
    const s = await api(trigger, 'GET', `/v1/stats?source=oapi&${range}&bucket=hour`);
    return (s.body as { totals: { requests: number } }).totals.requests > 0 ? s : undefined;
  });
  conforms('get', '/v1/stats', stats, 200);
  conforms('get', '/v1/stats', await api(trigger, 'GET', '/v1/stats?bucket=fortnight'), 400);
  const top = await api(trigger, 'GET', `/v1/stats/top?dimension=path&source=oapi&${range}&limit=3`);
  conforms('get', '/v1/stats/top', top, 200);
  assert.equal((top.body as { items: unknown[] }).items.length, 3);
  conforms('get', '/v1/stats/top', await api(trigger, 'GET', '/v1/stats/top?dimension=colour'), 400);
  assert.ok(checked.size >= 11);
});

test('the built trigger serves the API reader from dist/trigger/docs/, compressed, without a token', async () => {
  const base = `http://127.0.0.1:${trigger.ready.port}`;
  const page = await fetch(`${base}/docs/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /"url": "\/openapi\.json"/);
  const script = await fetch(`${base}/docs/js/scalar.js`, { headers: { 'accept-encoding': 'br' } });
  assert.equal(script.status, 200);
  assert.equal(script.headers.get('content-encoding'), 'br');
  assert.match(String(script.headers.get('content-type')), /javascript/);
  assert.match(await script.text(), /createApiReference/); // fetch decodes the brotli body
  const again = await fetch(`${base}/docs/js/scalar.js`, { headers: { 'if-none-match': String(script.headers.get('etag')) } });
  assert.equal(again.status, 304);
});
