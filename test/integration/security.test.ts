// Least privilege and hostile input, against the real services: each function's
// own MySQL and RabbitMQ user is refused what infra/access.ts does not give it,
// and bad inputs get a clear error while nothing is lost.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import amqp, { type ConfirmChannel } from 'amqplib';
import mysql from 'mysql2/promise';
import type { Pool } from '../../shared/db/pool.ts';
import { FUNCTIONS, type FunctionName } from '../../infra/access.ts';
import { AMQP_URL, api, count, ensureBuilt, ownUrls, passwords, resetEnvironment, root, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

let pool: Pool;

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
});
after(async () => {
  await stopAll();
  await pool?.end();
});

/** Run `sql` as `fn`'s own MySQL user; resolves to the error code, or 'ok'. */
async function asMysqlUser(fn: FunctionName, sql: string, params: unknown[] = []): Promise<string> {
  const conn = await mysql.createConnection({ uri: ownUrls(fn).MYSQL_URL });
  try {
    await conn.query(sql, params);
    return 'ok';
  } catch (err) {
    return String((err as { code?: string }).code);
  } finally {
    await conn.end();
  }
}

/** Publish as `fn`'s own RabbitMQ user with confirms; resolves to 'ok' or the broker's refusal. */
async function publishAs(fn: FunctionName | 'admin', exchange: string, routingKey: string, body = '{}'): Promise<string> {
  const conn = await amqp.connect(fn === 'admin' ? AMQP_URL : ownUrls(fn).AMQP_URL);
  conn.on('error', () => {});
  try {
    const ch: ConfirmChannel = await conn.createConfirmChannel();
    const closed = new Promise<string>((resolve) => ch.on('error', (err: Error) => resolve(err.message)));
    ch.publish(exchange, routingKey, Buffer.from(body), { messageId: `sec-${Date.now()}`, persistent: true });
    return await Promise.race([ch.waitForConfirms().then(() => 'ok'), closed]);
  } catch (err) {
    return (err as Error).message;
  } finally {
    await conn.close().catch(() => {});
  }
}

describe('least privilege: MySQL', () => {
  test('log-lake may store raw lines but not write web_requests', async () => {
    const id = '00000000-0000-4000-8000-000000000001';
    assert.equal(await asMysqlUser('log-lake', "INSERT INTO raw_logs (run_id, line_no, source, byte_offset, line, received_at) VALUES (?, 1, 's', 0, 'x', NOW())", [id]), 'ok');
    assert.equal(
      await asMysqlUser('log-lake', "INSERT INTO web_requests (run_id, line_no, source, ts, tz_offset_min, request, status) VALUES (?, 1, 's', NOW(), 0, 'GET /', 200)", [id]),
      'ER_TABLEACCESS_DENIED_ERROR',
    );
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id]), 0);
  });

  test('the trigger cannot read email_outbox; notify-email can', async () => {
    assert.equal(await asMysqlUser('trigger', 'SELECT * FROM email_outbox LIMIT 1'), 'ER_TABLEACCESS_DENIED_ERROR');
    assert.equal(await asMysqlUser('notify-email', 'SELECT * FROM email_outbox LIMIT 1'), 'ok');
  });

  test('no function may change the schema or read a table it does not use', async () => {
    for (const fn of FUNCTIONS) {
      assert.match(await asMysqlUser(fn, 'CREATE TABLE sneaky (id INT)'), /^ER_(TABLEACCESS_DENIED_ERROR|DBACCESS_DENIED_ERROR)$/, fn);
      assert.match(await asMysqlUser(fn, 'DROP TABLE runs'), /^ER_(TABLEACCESS_DENIED_ERROR|DBACCESS_DENIED_ERROR)$/, fn);
      assert.equal(await asMysqlUser(fn, 'SELECT MAX(version) FROM schema_migrations'), 'ok', `${fn} reads the schema version`);
    }
    assert.equal(await asMysqlUser('log-clean', 'SELECT * FROM ev_sim_truth LIMIT 1'), 'ER_TABLEACCESS_DENIED_ERROR');
    assert.equal(await asMysqlUser('ev-store', 'DELETE FROM ev_readings'), 'ER_TABLEACCESS_DENIED_ERROR');
  });

  test('a wrong password is refused', async () => {
    const url = new URL(ownUrls('log-lake').MYSQL_URL);
    url.password = `${passwords['log-lake']}x`;
    await assert.rejects(mysql.createConnection({ uri: url.toString() }), (err: { code?: string }) => err.code === 'ER_ACCESS_DENIED_ERROR');
  });
});

describe('least privilege: RabbitMQ', () => {
  test('log-clean cannot publish to the ev exchange', async () => {
    assert.match(await publishAs('log-clean', 'ev', 'ev.event.completed'), /ACCESS_REFUSED.*exchange 'ev'.*refused for user 'sluice_log_clean'/);
  });

  test('only ev-analytics may publish ev.event.*: the trigger is refused by topic permission, ev-analytics is not', async () => {
    assert.match(await publishAs('trigger', 'ev', 'ev.event.completed'), /ACCESS_REFUSED.*topic 'ev\.event\.completed'/);
    assert.match(await publishAs('notify-email', 'ev', 'ev.event.completed'), /ACCESS_REFUSED/);
    assert.equal(await publishAs('ev-analytics', 'ev', 'ev.event.completed', '{"not":"an event"}'), 'ok');
    // The trigger may publish readings and clock ticks, and log lines, but not to any key it likes.
    assert.equal(await publishAs('trigger', 'ev', 'ev.clock', '{"not":"a tick"}'), 'ok');
    assert.match(await publishAs('trigger', 'logs', 'logs.x.error'), /ACCESS_REFUSED.*topic 'logs\.x\.error'/);
    assert.match(await publishAs('ev-analytics', 'logs', 'logs.x.access'), /ACCESS_REFUSED/);
  });

  test('no function can reach notify.email through the default exchange or its retry exchange', async () => {
    for (const fn of FUNCTIONS) {
      assert.match(await publishAs(fn, '', 'notify.email'), /ACCESS_REFUSED.*amq\.default/, fn);
      if (fn !== 'notify-email') assert.match(await publishAs(fn, 'notify.email.retry', 'notify.email'), /ACCESS_REFUSED/, fn);
    }
  });

  test('no function may declare or delete a queue, nor consume a queue of another function', async () => {
    const conn = await amqp.connect(ownUrls('log-lake').AMQP_URL);
    conn.on('error', () => {});
    try {
      for (const attempt of [
        (ch: amqp.Channel) => ch.assertQueue('sneaky', { durable: false }),
        (ch: amqp.Channel) => ch.deleteQueue('logs.clean'),
        (ch: amqp.Channel) => ch.consume('notify.email', () => {}),
      ]) {
        const ch = await conn.createChannel();
        ch.on('error', () => {});
        await assert.rejects(attempt(ch), /ACCESS_REFUSED/);
      }
      const ch = await conn.createChannel();
      const { consumerTag } = await ch.consume('logs.lake', () => {});
      await ch.cancel(consumerTag);
      await ch.close();
    } finally {
      await conn.close().catch(() => {});
    }
  });

  test('the messages the broker refused never reached a queue', async () => {
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      // Only ev-analytics' own message reached notify.email (and the event stores).
      const got = await waitFor('ev-analytics message in notify.email', async () => (await ch.get('notify.email', { noAck: true })) || undefined, 10_000);
      assert.equal(got.content.toString(), '{"not":"an event"}');
      assert.equal(await ch.get('notify.email', { noAck: true }), false);
      await ch.purgeQueue('ev.store.events');
      for (let p = 0; p < 4; p++) await ch.purgeQueue(`ev.analytics.p${p}`);
    } finally {
      await conn.close();
    }
  });
});

describe('boot checks', () => {
  test('a function whose schema is missing says so and names the command', async () => {
    const mysqlAdmin = new URL(ownUrls('log-lake').MYSQL_URL);
    const db = `${mysqlAdmin.pathname.slice(1)}_empty`;
    const admin = await mysql.createConnection({ uri: (await import('./harness.ts')).MYSQL_URL });
    await admin.query(`CREATE DATABASE IF NOT EXISTS \`${db}\``);
    await admin.query(`GRANT SELECT ON \`${db}\`.* TO 'sluice_log_lake'@'%'`);
    await admin.end();
    mysqlAdmin.pathname = `/${db}`;
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'log-lake', 'index.mjs')], {
      env: { PATH: process.env.PATH, ...ownUrls('log-lake'), MYSQL_URL: mysqlAdmin.toString(), SCHEMA_WAIT_S: '0' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /no schema yet.*npm run migrate/);
    assert.doesNotMatch(r.stdout + r.stderr, new RegExp(passwords['log-lake']), 'no password in the output');
  });
});
