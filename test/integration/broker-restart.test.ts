// RabbitMQ restarts in the middle of a replay: the trigger and both consumers
// recover on their own (amqplib recovery + topology and consumers re-declared),
// and every line is still stored exactly once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { Pool } from '../../shared/db/pool.ts';
import { api, count, ensureBuilt, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

let pool: Pool;
let trigger: FnProcess;

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  await startFunction('log-lake', { BATCH_SIZE: '50' });
  await startFunction('log-clean', { BATCH_SIZE: '50' });
  trigger = await startFunction('trigger');
});
after(async () => {
  await stopAll();
  await pool?.end();
});

const rabbitmqctl = (...args: string[]) => execFileSync('rabbitmqctl', args, { stdio: 'ignore', timeout: 120_000 });

test('a broker restart mid-run loses and duplicates nothing', async () => {
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'apache_logs' });
  assert.equal(res.status, 202);
  const id = res.body.id as string;
  await waitFor('the replay to be under way', async () => (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id])) > 300);
  assert.ok((await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id])) < 9_999, 'the restart must land mid-run');
  rabbitmqctl('stop_app');
  await new Promise((r) => setTimeout(r, 1_000));
  rabbitmqctl('start_app');
  const run = await waitFor(`run ${id} to finish`, async () => {
    const r = (await api(trigger, 'GET', `/v1/runs/${id}`)).body;
    return r.state !== 'running' && r.stored.raw_logs === 10_000 && r.stored.web_requests + r.stored.log_rejects === 10_000 ? r : undefined;
  }, 180_000, 500);
  assert.equal(run.state, 'done', run.error);
  assert.ok(trigger.logs.some((l) => l.includes('amqp disconnected')), 'the trigger saw the broker go away');
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id]), 10_000);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id]), 9_999);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id = ?', [id]), 1);
});
