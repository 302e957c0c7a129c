// A pod's SIGTERM drains: a real log-lake bundle, stopped while a batch is in flight (its INSERT
// waits on a table lock this test holds), answers 503 on /healthz at once, while its batch is
// still unsettled and its RabbitMQ connection still open; it finishes the batch once the lock
// goes, stores every line, exits 0, and leaves nothing on the queue.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import mysql from 'mysql2/promise';
import type { Pool } from '../../shared/db/pool.ts';
import { LOGS_EXCHANGE, logLineMessage, logRoutingKey } from '../../shared/contracts/logs.ts';
import { AMQP_URL, MYSQL_URL, RABBITMQ_API_URL, count, ensureBuilt, resetEnvironment, startFunction, stopAll, waitFor } from './harness.ts';

let pool: Pool;
before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
});
after(async () => {
  await stopAll();
  await pool?.end();
});

const vhost = decodeURIComponent(new URL(AMQP_URL).pathname.slice(1));

/** Names of the AMQP connections open in the test vhost (RabbitMQ's management API). */
async function connectionNames(): Promise<string[]> {
  const url = new URL(RABBITMQ_API_URL);
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
  const res = await fetch(`${url.origin}/api/vhosts/${encodeURIComponent(vhost)}/connections`, { headers: { authorization: auth } });
  assert.equal(res.status, 200);
  const list = (await res.json()) as { client_properties?: { connection_name?: string } }[];
  return list.map((c) => c.client_properties?.connection_name ?? '');
}

async function health(port: number): Promise<{ status: number; body: { ok?: boolean; stopping?: boolean } } | { error: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    return { status: res.status, body: (await res.json()) as { ok?: boolean; stopping?: boolean } };
  } catch (err) {
    return { error: String((err as Error).cause ?? err) };
  }
}

test('SIGTERM: readiness 503 first, the batch in flight finishes and is stored, then the process exits 0', async () => {
  const lake = await startFunction('log-lake', { BATCH_SIZE: '50', BATCH_WAIT_MS: '20', SHUTDOWN_TIMEOUT_S: '60' });
  const port = Number(lake.ready.health);
  assert.ok(port > 0, 'the ready line names the health port');
  assert.deepEqual(await health(port), { status: 200, body: { ok: true, amqp: true } });
  await waitFor('log-lake\'s connection in the management API', async () => (await connectionNames()).includes('log-lake'), 20_000, 200);

  // Hold raw_logs: log-lake's INSERT of the batch waits on the lock.
  const url = new URL(MYSQL_URL);
  const locker = await mysql.createConnection({ host: url.hostname, port: Number(url.port || 3306), user: decodeURIComponent(url.username), password: decodeURIComponent(url.password), database: url.pathname.slice(1) });
  let locked = true;
  // A read lock: others may still count the rows, nobody may write them.
  await locker.query('LOCK TABLES raw_logs READ');
  try {
    const runId = randomUUID();
    const lines = 20;
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      for (let lineNo = 1; lineNo <= lines; lineNo++) {
        ch.publish(LOGS_EXCHANGE, logRoutingKey('drain'), Buffer.from(`line ${lineNo}`), { ...logLineMessage({ runId, source: 'drain', lineNo, byteOffset: lineNo * 10 }), persistent: true });
      }
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
    // Every line delivered to log-lake (none ready on the queue), none stored: its batch waits on the lock.
    const probe0 = await amqp.connect(AMQP_URL);
    try {
      const ch = await probe0.createChannel();
      await waitFor('every line delivered to log-lake', async () => (await ch.checkQueue('logs.lake')).messageCount === 0, 20_000, 50);
    } finally {
      await probe0.close();
    }
    await new Promise((r) => setTimeout(r, 500)); // past BATCH_WAIT_MS: the batch is in the handler, its INSERT blocked
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs'), 0);

    const exited = lake.kill('SIGTERM');
    const answer = await waitFor('/healthz to answer 503', async () => {
      const h = await health(port);
      if ('error' in h) throw new Error(`the health server is gone while the batch is in flight: ${h.error}`);
      return h.status === 503 && h;
    }, 10_000, 20);
    assert.deepEqual(answer.body, { ok: false, amqp: true, stopping: true });
    // Still draining: the batch is unsettled (nothing stored yet), so the consumer has not let go of
    // its channel, and the broker connection is open.
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs'), 0);
    assert.ok((await connectionNames()).includes('log-lake'), 'the AMQP connection is still open while readiness is off');
    assert.equal(lake.child.exitCode, null, 'the process waits for its batch');
    // Still 503 (not gone) for as long as the batch waits.
    await new Promise((r) => setTimeout(r, 300));
    const again = await health(port);
    assert.ok(!('error' in again) && again.status === 503, `still answering 503 while draining: ${JSON.stringify(again)}`);

    await locker.query('UNLOCK TABLES');
    locked = false;
    assert.equal(await exited, 0, 'a clean exit after the drain');
    assert.ok(lake.logs.some((l) => l.includes('"msg":"stopped"')), 'the drain ran to its end');
    // The batch in flight is stored and acked; lines it did not take (if the broker's deliveries
    // came in two batches) went back to the queue: none lost, none left unacked.
    const stored = await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [runId]);
    assert.ok(stored > 0, 'the batch in flight was stored');
    const probe = await amqp.connect(AMQP_URL);
    try {
      const q = await (await probe.createChannel()).checkQueue('logs.lake');
      assert.equal(stored + q.messageCount, lines, `every line is stored (${stored}) or back on the queue (${q.messageCount})`);
      assert.equal(q.consumerCount, 0);
    } finally {
      await probe.close();
    }
  } finally {
    if (locked) await locker.query('UNLOCK TABLES').catch(() => {});
    await locker.end();
  }
});
