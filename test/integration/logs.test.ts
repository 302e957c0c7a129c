// The web-log pipeline end to end on real RabbitMQ and MariaDB: trigger ->
// exchange `logs` -> log-lake (raw_logs) and log-clean (web_requests, log_rejects).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import amqp from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { AMQP_URL, api, count, ensureBuilt, logsDir, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

const APACHE = readFileSync(path.join(logsDir, 'apache_logs'));
const apacheLines = (() => {
  const lines: Buffer[] = [];
  let start = 0;
  for (let nl = APACHE.indexOf(10); nl !== -1; nl = APACHE.indexOf(10, start)) lines.push(APACHE.subarray(start, nl)), (start = nl + 1);
  if (start < APACHE.length) lines.push(APACHE.subarray(start));
  return lines;
})();

let pool: Pool;
let trigger: FnProcess;
let lake: FnProcess;
let clean: FnProcess;

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  // Small batches make a replay last long enough to kill a consumer in the middle of it.
  lake = await startFunction('log-lake', { BATCH_SIZE: '100' });
  clean = await startFunction('log-clean', { BATCH_SIZE: '100' });
  trigger = await startFunction('trigger');
});
after(async () => {
  await stopAll();
  await pool?.end();
});

async function replay(file: string) {
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  return res.body.id as string;
}

async function waitForRun(id: string, rows: number) {
  return waitFor(`run ${id} to be stored`, async () => {
    const run = (await api(trigger, 'GET', `/v1/runs/${id}`)).body;
    assert.notEqual(run.state, 'failed', run.error);
    const s = run.stored;
    return run.state === 'done' && s.raw_logs === rows && s.web_requests + s.log_rejects === rows ? run : undefined;
  }, 120_000);
}

describe('web-log pipeline', () => {
  test('replaying apache_logs stores every line raw and parsed, exactly once', async () => {
    const id = await replay('apache_logs');
    const run = await waitForRun(id, 10_000);
    assert.equal(run.lines, 10_000);
    assert.equal(run.published, 10_000);
    assert.equal(run.source, 'apache_logs');

    const [raw] = (await pool.query('SELECT line_no, byte_offset, line FROM raw_logs WHERE run_id = ? ORDER BY line_no', [id])) as [
      { line_no: number; byte_offset: number; line: Buffer }[],
      unknown,
    ];
    assert.equal(raw.length, 10_000);
    let offset = 0;
    raw.forEach((row, i) => {
      assert.equal(row.line_no, i + 1);
      assert.equal(row.byte_offset, offset, `byte offset of line ${i + 1}`);
      assert.ok(row.line.equals(apacheLines[i]!), `raw line ${i + 1} differs from the file`);
      offset += apacheLines[i]!.length + 1;
    });

    assert.ok(run.stored.web_requests >= 9_999, `web_requests ${run.stored.web_requests}`);
    const [statuses] = (await pool.query('SELECT status, COUNT(*) AS n FROM web_requests WHERE run_id = ? GROUP BY status', [id])) as [
      { status: number; n: number }[],
      unknown,
    ];
    const byStatus = Object.fromEntries(statuses.map((r) => [r.status, Number(r.n)]));
    // The data README's counts; the one truncated line (8899, a 200) is in log_rejects.
    assert.deepEqual(byStatus, { 200: 9125, 304: 445, 404: 213, 301: 164, 206: 45, 500: 3, 416: 2, 403: 2 });
    const [rejects] = (await pool.query('SELECT line_no, reason, line FROM log_rejects WHERE run_id = ?', [id])) as [
      { line_no: number; reason: string; line: Buffer }[],
      unknown,
    ];
    assert.deepEqual(rejects.map((r) => r.line_no), [8899]);
    assert.match(rejects[0]!.reason, /user_agent/);
    assert.ok(rejects[0]!.line.equals(apacheLines[8898]!));
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ? AND bytes IS NULL', [id]), 669);
    const [[first]] = (await pool.query('SELECT ts, tz_offset_min, client_ip, method, path, status FROM web_requests WHERE run_id = ? AND line_no = 1', [id])) as [
      Record<string, unknown>[],
      unknown,
    ];
    assert.equal((first!.ts as Date).toISOString(), '2015-05-17T10:05:03.000Z');
    assert.deepEqual({ ...first, ts: undefined }, { ts: undefined, tz_offset_min: 0, client_ip: '83.149.9.216', method: 'GET', path: '/presentations/logstash-monitorama-2013/images/kibana-search.png', status: 200 });
  });

  test('two replays give two complete runs', async () => {
    const a = await replay('shop_access_log');
    const b = await replay('shop_access_log');
    assert.notEqual(a, b);
    await Promise.all([waitForRun(a, 1_000), waitForRun(b, 1_000)]);
    for (const id of [a, b]) {
      assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id]), 1_000);
      assert.equal(await count(pool, "SELECT COUNT(*) FROM web_requests WHERE run_id = ? AND forwarded_for IS NOT NULL", [id]), 13);
    }
    const list = (await api(trigger, 'GET', '/v1/runs?limit=5')).body.runs as { id: string }[];
    assert.ok(list.some((r) => r.id === a) && list.some((r) => r.id === b));
  });

  test('consumers killed mid-run and restarted leave the counts exact', async () => {
    const id = await replay('apache_logs');
    await waitFor('the replay to be under way', async () => (await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id])) > 500);
    const stored = await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id]);
    assert.ok(stored < 10_000, 'the kill must land mid-run');
    // SIGKILL: no graceful stop, the batch in flight is lost and must be redelivered.
    await Promise.all([clean.kill('SIGKILL'), lake.kill('SIGKILL')]);
    [clean, lake] = await Promise.all([startFunction('log-clean', { BATCH_SIZE: '100' }), startFunction('log-lake', { BATCH_SIZE: '100' })]);
    await waitForRun(id, 10_000);
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id]), 10_000);
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id]), 9_999);
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id = ?', [id]), 1);
  });

  test('POST /v1/logs keeps bytes exactly: CRLF, invalid UTF-8, last line without newline', async () => {
    const lines = [
      Buffer.from('127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "-" "curl/8"'),
      Buffer.concat([Buffer.from('10.0.0.9 - - [10/Oct/2000:13:55:37 -0700] "GET /\xff'), Buffer.from([0xff, 0xfe]), Buffer.from(' HTTP/1.0" 404 0 "-" "-"')]),
      Buffer.from('not a log line at all'),
      Buffer.from('::1 - - [10/Oct/2000:13:55:38 +0000] "" 400 0 "-" "-"'),
    ];
    const body = Buffer.concat([lines[0]!, Buffer.from('\r\n'), lines[1]!, Buffer.from('\n'), lines[2]!, Buffer.from('\r\n'), lines[3]!]);
    const res = await api(trigger, 'POST', '/v1/logs?source=upload-test', body);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.lines, 4);
    const id = res.body.id;
    await waitForRun(id, 4);
    const [raw] = (await pool.query('SELECT line, byte_offset, source FROM raw_logs WHERE run_id = ? ORDER BY line_no', [id])) as [
      { line: Buffer; byte_offset: number; source: string }[],
      unknown,
    ];
    assert.deepEqual(raw.map((r) => r.line.toString('hex')), lines.map((l) => l.toString('hex')));
    assert.deepEqual(raw.map((r) => r.byte_offset), [0, lines[0]!.length + 2, lines[0]!.length + 2 + lines[1]!.length + 1, lines[0]!.length + 2 + lines[1]!.length + 1 + lines[2]!.length + 2]);
    assert.equal(raw[0]!.source, 'upload-test');
    const [rejects] = (await pool.query('SELECT line_no, reason FROM log_rejects WHERE run_id = ?', [id])) as [{ line_no: number; reason: string }[], unknown];
    assert.deepEqual(rejects.map((r) => r.line_no), [3]);
    assert.ok(rejects[0]!.reason.length > 0);
    assert.equal(await count(pool, "SELECT COUNT(*) FROM web_requests WHERE run_id = ? AND line_no = 4 AND status = 400 AND method IS NULL AND client_ip = '::1'", [id]), 1);
  });

  test('an invalid message goes to the dead-letter queues with its reason', async () => {
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      ch.publish('logs', 'logs.bad.access', Buffer.from('a line without its headers'), { messageId: 'bad-1', persistent: true, headers: { runId: 'not-a-uuid', lineNo: 0 } });
      await ch.waitForConfirms();
      for (const dlq of ['logs.lake.dlq', 'logs.clean.dlq']) {
        const msg = await waitFor(`a message in ${dlq}`, async () => (await ch.get(dlq, { noAck: true })) || undefined, 20_000);
        assert.equal(msg.properties.messageId, 'bad-1');
        assert.equal(msg.content.toString(), 'a line without its headers');
        const reason = String(msg.properties.headers?.['x-sluice-reason']);
        assert.match(reason, /runId/);
        assert.match(reason, /source/);
        assert.match(reason, /lineNo/);
        assert.equal(msg.properties.headers?.['x-sluice-routing-key'], 'logs.bad.access');
      }
    } finally {
      await conn.close();
    }
  });
});
