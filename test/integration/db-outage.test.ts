// MariaDB goes away in the middle of a replay and comes back: the consumers hold
// their batches (no attempts spent, nothing dead-lettered) and every line is
// stored exactly once when the database is back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import amqp from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { AMQP_URL, MYSQL_URL, api, count, ensureBuilt, resetEnvironment, root, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

let pool: Pool;
let trigger: FnProcess;
const db = new URL(MYSQL_URL);

const answers = () =>
  new Promise<boolean>((resolve) => {
    const socket = connect(Number(db.port || 3306), db.hostname);
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  // Two attempts only: without holding, a 10-second outage would dead-letter the batches in flight.
  const env = { BATCH_SIZE: '50', MAX_ATTEMPTS: '2' };
  await startFunction('log-lake', env);
  await startFunction('log-clean', env);
  trigger = await startFunction('trigger');
});
after(async () => {
  if (!(await answers())) execFileSync('bash', ['scripts/services.sh'], { cwd: root, stdio: 'ignore' });
  await stopAll();
  await pool?.end();
});

test('a database outage mid-run loses, duplicates and dead-letters nothing', async () => {
  const { body } = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'apache_logs' });
  const id = body.id as string;
  await waitFor('the replay to be under way', async () => (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id])) > 300);
  assert.ok((await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id])) < 9_999, 'the outage must land mid-run');

  execFileSync('pkill', ['-TERM', '-x', 'mariadbd']);
  await waitFor('MariaDB to be down', async () => !(await answers()), 60_000, 200);
  await new Promise((r) => setTimeout(r, 12_000)); // longer than MAX_ATTEMPTS x the retry delay
  execFileSync('bash', ['scripts/services.sh'], { cwd: root, stdio: 'ignore' });

  await waitFor('every line stored', async () => {
    const raw = await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id]);
    const parsed = await count(pool, 'SELECT (SELECT COUNT(*) FROM web_requests WHERE run_id = ?) + (SELECT COUNT(*) FROM log_rejects WHERE run_id = ?)', [id, id]);
    return raw === 10_000 && parsed === 10_000;
  }, 180_000, 500);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id]), 9_999);
  // scripts/services.sh started this server, with the InnoDB memory it gives one.
  const [[innodb]] = (await pool.query('SELECT @@innodb_buffer_pool_size AS bufferPool, @@innodb_log_file_size AS redoLog')) as unknown as [[{ bufferPool: number; redoLog: number }]];
  assert.ok(Number(innodb.bufferPool) >= Number(process.env.MYSQL_BUFFER_POOL_BYTES ?? 2 ** 31), `buffer pool ${innodb.bufferPool} bytes after services.sh started MariaDB`);
  assert.ok(Number(innodb.redoLog) >= Number(process.env.MYSQL_REDO_LOG_BYTES ?? 2 ** 29), `redo log ${innodb.redoLog} bytes after services.sh started MariaDB`);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id = ?', [id]), 1);

  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    for (const q of ['logs.lake.dlq', 'logs.clean.dlq']) assert.equal((await ch.checkQueue(q)).messageCount, 0, `${q} is empty`);
  } finally {
    await conn.close();
  }
  const run = await waitFor('the run to be recorded as done', async () => {
    const r = (await api(trigger, 'GET', `/v1/runs/${id}`)).body;
    return r.state === 'done' ? r : undefined;
  }, 60_000, 500);
  assert.equal(run.published, 10_000);
});
