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
import { operatorAmqpUrl } from '../../scripts/local-env.ts';
import { AMQP_URL, TOKEN, api, count, ensureBuilt, ownUrls, passwords, provisionTestEnvironment, resetEnvironment, root, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

/** sluice_monitor over AMQP: the dashboard's operator role, which has a vhost permission (`^$` everywhere) and so may connect. */
const MONITOR_AMQP_URL = operatorAmqpUrl('monitor', passwords.monitor, { amqpAdminUrl: AMQP_URL });

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

/** Publish as `fn`'s own RabbitMQ user (or sluice_monitor's) with confirms; resolves to 'ok' or the broker's refusal. */
async function publishAs(fn: FunctionName | 'admin' | 'monitor', exchange: string, routingKey: string, body = '{}'): Promise<string> {
  const conn = await amqp.connect(fn === 'admin' ? AMQP_URL : fn === 'monitor' ? MONITOR_AMQP_URL : ownUrls(fn).AMQP_URL);
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

  test('the trigger may read email_outbox (the dashboard counts a run\'s emails) but not write it; notify-email can', async () => {
    assert.equal(await asMysqlUser('trigger', 'SELECT status, COUNT(*) FROM email_outbox GROUP BY status'), 'ok');
    assert.equal(
      await asMysqlUser('trigger', "INSERT INTO email_outbox (dedupe_key, recipient) VALUES ('forged', 'someone@example.com')"),
      'ER_TABLEACCESS_DENIED_ERROR',
    );
    assert.equal(await asMysqlUser('trigger', "UPDATE email_outbox SET status = 'sent'"), 'ER_TABLEACCESS_DENIED_ERROR');
    assert.equal(await asMysqlUser('trigger', 'DELETE FROM email_outbox'), 'ER_TABLEACCESS_DENIED_ERROR');
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

  test('sluice_monitor, the dashboard\'s user, may publish nothing, consume nothing, purge or declare nothing', async () => {
    for (const exchange of ['', 'notify.email.retry', 'logs.clean.dlq', 'ev', 'logs']) {
      assert.match(await publishAs('monitor', exchange, exchange === 'ev' ? 'ev.event.completed' : 'notify.email'), /ACCESS_REFUSED/, `publish to '${exchange}'`);
    }
    const conn = await amqp.connect(MONITOR_AMQP_URL);
    conn.on('error', () => {});
    try {
      for (const [what, attempt] of [
        ['get', (ch: amqp.Channel) => ch.get('notify.email')],
        ['consume', (ch: amqp.Channel) => ch.consume('logs.clean.dlq', () => {})],
        ['purge', (ch: amqp.Channel) => ch.purgeQueue('logs.clean')],
        ['declare', (ch: amqp.Channel) => ch.assertQueue('sluice-monitor-made-this', { durable: false })],
      ] as const) {
        const ch = await conn.createChannel();
        ch.on('error', () => {});
        await assert.rejects(attempt(ch), /ACCESS_REFUSED/, what);
      }
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

  test('a queue missing on the broker is named, not the ones after it (one channel checks them all)', async () => {
    // ev-analytics consumes ev.analytics.p0-p3: without p2, the checks of p2 and p3 both fail.
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      await ch.deleteQueue('ev.analytics.p2');
      const r = spawnSync(process.execPath, [path.join(root, 'dist', 'ev-analytics', 'index.mjs')], {
        env: { PATH: process.env.PATH, ...ownUrls('ev-analytics') },
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /queue 'ev\.analytics\.p2' does not exist on the broker \(.*NOT_FOUND.*\): run `npm run migrate`/);
      assert.doesNotMatch(r.stdout + r.stderr, /ev\.analytics\.p3/);
    } finally {
      await conn.close();
      await provisionTestEnvironment(); // the queue back, for the tests below
    }
  });
});

describe('hostile input: nothing lost, nothing stalled', () => {
  let trigger: FnProcess;
  let lake: FnProcess;
  let clean: FnProcess;
  const MiB = 1024 * 1024;
  const good = (i: number) => `10.0.0.${i % 250} - - [10/Oct/2024:13:55:${String(i % 60).padStart(2, '0')} +0000] "GET /page/${i} HTTP/1.1" 200 ${100 + i} "-" "curl/8"`;

  before(async () => {
    lake = await startFunction('log-lake');
    clean = await startFunction('log-clean');
    trigger = await startFunction('trigger', { BODY_LIMIT_MB: '40', MAX_CONCURRENT_RUNS: '2', MAX_RUN_MESSAGES: '100000' });
  });

  async function stored(id: string, lines: number) {
    return waitFor(`run ${id} stored`, async () => {
      const run = (await api(trigger, 'GET', `/v1/runs/${id}`)).body;
      const s = run.stored;
      return run.state !== 'running' && s.raw_logs === lines && s.web_requests + s.log_rejects === lines ? run : undefined;
    }, 120_000);
  }

  test('an upload with one 20 MiB line: every line lands, the long one truncated with a flag and rejected with its reason, and the queues do not stall', async () => {
    const body = Buffer.concat([Buffer.from(`${good(1)}\n${good(2)}\n`), Buffer.alloc(20 * MiB, 0x41), Buffer.from(`\n${good(4)}\n`)]);
    const res = await api(trigger, 'POST', '/v1/logs?source=hostile', body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.lines, 4);
    const run = await stored(res.body.id, 4);
    assert.equal(run.state, 'done');
    const [[raw]] = (await pool.query('SELECT LENGTH(line) AS len, truncated_from FROM raw_logs WHERE run_id = ? AND line_no = 3', [res.body.id])) as [{ len: number; truncated_from: number }[], unknown];
    assert.deepEqual({ len: Number(raw!.len), truncated_from: Number(raw!.truncated_from) }, { len: MiB, truncated_from: 20 * MiB });
    const [[reject]] = (await pool.query('SELECT reason FROM log_rejects WHERE run_id = ? AND line_no = 3', [res.body.id])) as [{ reason: string }[], unknown];
    assert.match(reject!.reason, /line is 20971520 bytes, longer than the 1048576-byte limit/);
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [res.body.id]), 3);
    // The next run of anyone goes through at once.
    const next = await api(trigger, 'POST', '/v1/logs?source=after', `${good(5)}\n`);
    await stored(next.body.id, 1);
  });

  test('a file replay with long lines is kept the same way', async () => {
    // The security suite writes its own log under a LOG_DIR of its own.
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(path.join(tmpdir(), 'sluice-sec-'));
    writeFileSync(path.join(dir, 'long.log'), `${good(1)}\n${'B'.repeat(3 * MiB)}\r\n${good(3)}`);
    const replayer = await startFunction('trigger', { LOG_DIR: dir });
    try {
      const res = await api(replayer, 'POST', '/v1/runs', { kind: 'logs', file: 'long.log' });
      assert.equal(res.status, 202);
      const run = await stored(res.body.id, 3);
      assert.equal(run.state, 'done');
      assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ? AND truncated_from = ?', [res.body.id, 3 * MiB]), 1);
      assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ? AND line_no = 3 AND byte_offset = ?', [res.body.id, good(1).length + 1 + 3 * MiB + 2]), 1);
    } finally {
      await replayer.kill();
    }
  });

  test('an upload past BODY_LIMIT_MB answers 413 and says what was kept', async () => {
    const big = await fetch(`http://127.0.0.1:${trigger.ready.port}/v1/logs?source=toobig`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain', 'content-length': String(41 * MiB) },
      body: Buffer.alloc(41 * MiB, 0x0a),
    }).catch((err: Error) => err);
    assert.ok(!(big instanceof Error), String(big));
    assert.equal(big.status, 413);
    assert.match(((await big.json()) as { message: string }).message, /larger than the limit of 41,943,040 bytes \(BODY_LIMIT_MB=40\)/);
  });

  test('an EV run that would publish too many messages is refused with the count; the trigger keeps answering', async () => {
    const res = await api(trigger, 'POST', '/v1/runs', { kind: 'ev', sessions: 100_000, sampleIntervalS: 1, seed: 1 });
    assert.equal(res.status, 400);
    assert.match(res.body.message, /would publish .*messages.*the limit is 100,000 \(MAX_RUN_MESSAGES\)/);
    assert.equal((await fetch(`http://127.0.0.1:${trigger.ready.port}/healthz`)).status, 200);
  });

  test('past MAX_CONCURRENT_RUNS the trigger answers 429 with Retry-After', async () => {
    // Two slow EV runs (one simulated second per real second) hold both slots.
    const slow = { kind: 'ev', sessions: 1, seed: 3, speed: 1, sampleIntervalS: 60 };
    const a = await api(trigger, 'POST', '/v1/runs', slow);
    const b = await api(trigger, 'POST', '/v1/runs', slow);
    assert.deepEqual([a.status, b.status], [202, 202]);
    const res = await fetch(`http://127.0.0.1:${trigger.ready.port}/v1/runs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(slow),
    });
    assert.equal(res.status, 429);
    assert.ok(Number(res.headers.get('retry-after')) > 0);
    assert.match(((await res.json()) as { message: string }).message, /limit is 2 \(MAX_CONCURRENT_RUNS\)/);
    // Kill the trigger to end the slow runs (left for another trigger to claim; none will here).
    await trigger.kill('SIGKILL');
    trigger = await startFunction('trigger', { BODY_LIMIT_MB: '40', MAX_CONCURRENT_RUNS: '2', MAX_RUN_MESSAGES: '100000', RUN_STALE_AFTER_S: '3600' });
  });

  test('the default token is refused unless the trigger listens on loopback; /metrics needs the token', async () => {
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'trigger', 'index.mjs')], {
      env: { PATH: process.env.PATH, ...ownUrls('trigger'), TRIGGER_TOKEN: 'dev-token', HTTP_HOST: '0.0.0.0' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 78);
    assert.match(r.stderr, /TRIGGER_TOKEN is the development default while HTTP_HOST="0.0.0.0"/);
    assert.equal((await fetch(`http://127.0.0.1:${trigger.ready.port}/metrics`)).status, 401);
    const metrics = await fetch(`http://127.0.0.1:${trigger.ready.port}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /process_resident_memory_bytes/);
  });

  test('a configuration error never prints a password', async () => {
    const secret = 'S3cr3t-Pa55word-xyz';
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'log-lake', 'index.mjs')], {
      env: { PATH: process.env.PATH, AMQP_URL: `http://sluice_log_lake:${secret}@127.0.0.1:5672`, MYSQL_URL: `mysql://sluice_log_lake:${secret}@127.0.0.1:3306/x`, BATCH_SIZE: 'many' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 78);
    assert.match(r.stderr, /AMQP_URL="http:\/\/sluice_log_lake:\*\*\*@127\.0\.0\.1:5672"/);
    assert.match(r.stderr, /BATCH_SIZE/);
    assert.doesNotMatch(r.stdout + r.stderr, new RegExp(secret));
  });

  test('a remote user with spaces cannot move the client address', async () => {
    const line = '203.0.113.9 - John Smith [10/Oct/2024:13:55:36 +0000] "GET /x HTTP/1.1" 200 5 "-" "curl/8"';
    const res = await api(trigger, 'POST', '/v1/logs?source=spaces', `${line}\n`);
    await stored(res.body.id, 1);
    const [[row]] = (await pool.query('SELECT client_ip, remote_user FROM web_requests WHERE run_id = ?', [res.body.id])) as [{ client_ip: string; remote_user: string }[], unknown];
    assert.deepEqual({ client_ip: row!.client_ip, remote_user: row!.remote_user }, { client_ip: '203.0.113.9', remote_user: 'John Smith' });
  });

  test('after all of it, the lake and the clean store hold every line of every run exactly once', async () => {
    const [runs] = (await pool.query("SELECT id, published FROM runs WHERE kind = 'logs'")) as [{ id: string; published: number }[], unknown];
    assert.ok(runs.length >= 4);
    for (const r of runs) {
      assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [r.id]), Number(r.published), `raw_logs of ${r.id}`);
      assert.equal(
        await count(pool, 'SELECT (SELECT COUNT(*) FROM web_requests WHERE run_id = ?) + (SELECT COUNT(*) FROM log_rejects WHERE run_id = ?)', [r.id, r.id]),
        Number(r.published),
        `web_requests + log_rejects of ${r.id}`,
      );
    }
    for (const q of ['logs.lake.dlq', 'logs.clean.dlq']) {
      const conn = await amqp.connect(AMQP_URL);
      const ch = await conn.createChannel();
      assert.equal((await ch.checkQueue(q)).messageCount, 0, `${q} is empty`);
      await conn.close();
    }
    void lake;
    void clean;
  });
});
