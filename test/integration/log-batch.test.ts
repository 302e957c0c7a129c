// Batch messages on the real broker and database, published by hand: a batch that cannot be
// decoded goes whole to each consumer's DLQ with the reason, bytes unchanged, while a good batch
// beside it is stored line by line (its unparseable line a reject with its reason, not a
// failure); the same batch published again, and its lines again as line messages, change nothing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { GetMessage } from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { encodeLogBatch, logBatchMessage, logLineMessage, type BatchLine } from '../../shared/contracts/logs.ts';
import { admin, count, depth, ensureBuilt, resetEnvironment, startFunction, stopAll, waitFor } from './harness.ts';

let pool: Pool;
const runId = randomUUID();
const LINE = (n: number) => `203.0.113.${n} - - [25/Nov/2026:21:00:0${n % 10} +0000] "GET /batch/${n} HTTP/1.1" 200 ${n} "-" "curl/8.0"`;

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  await startFunction('log-lake');
  await startFunction('log-clean');
});
after(async () => {
  await stopAll();
  await pool?.end();
});


test('an undecodable batch message goes whole to the DLQ with its reason; a good one is stored line by line', async () => {
  const lines: BatchLine[] = [];
  let offset = 0;
  for (let n = 1; n <= 5; n++) {
    const line = Buffer.from(n === 3 ? 'this is no access log line' : LINE(n));
    lines.push({ line, byteOffset: offset });
    offset += line.length + 1;
  }
  const good = encodeLogBatch(lines);
  const goodOptions = logBatchMessage({ runId, source: 'batchtest', file: 'b.log' }, 1, lines.length);
  // The same lines with the last one's bytes cut off: the table promises more than the body holds.
  const bad = good.subarray(0, good.length - 3);
  const badOptions = { ...logBatchMessage({ runId, source: 'batchtest', file: 'b.log' }, 101, lines.length), messageId: 'batch-poison' };
  await admin(async (ch) => {
    ch.publish('logs', 'logs.batchtest.access', bad, { ...badOptions, persistent: true });
    ch.publish('logs', 'logs.batchtest.access', good, { ...goodOptions, persistent: true });
    await ch.waitForConfirms();
  });
  await waitFor('the good batch stored and the bad one dead-lettered by both consumers', async () =>
    (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [runId])) === 5 &&
    (await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [runId])) === 4 &&
    (await depth('logs.clean.dlq')) === 1 && (await depth('logs.lake.dlq')) === 1, 30_000);

  for (const queue of ['logs.clean.dlq', 'logs.lake.dlq']) {
    const m = await admin(async (ch) => {
      const got = (await ch.get(queue)) as GetMessage;
      ch.nack(got, false, true);
      return got;
    });
    assert.equal(m.properties.messageId, 'batch-poison');
    assert.ok(m.content.equals(bad), `${queue}: the message whole, bytes unchanged`);
    assert.equal(m.properties.type, 'log.batch');
    assert.match(String(m.properties.headers!['x-sluice-reason']), /^log-line: log-batch line 105 \(\d+ bytes at body byte \d+\) runs past the end of the \d+-byte body: truncated\?$/);
    assert.equal(m.properties.headers!.firstLineNo, 101, 'its own headers kept');
  }
  // Stored per line, byte for byte, with each line's number and offset; the bad line a reject with its reason.
  const [raw] = (await pool.query('SELECT line_no AS lineNo, byte_offset AS byteOffset, file, line FROM raw_logs WHERE run_id = ? ORDER BY line_no', [runId])) as [
    { lineNo: number; byteOffset: number; file: string; line: Buffer }[], unknown,
  ];
  assert.deepEqual(raw.map((r) => [r.lineNo, r.byteOffset, r.file, r.line.toString()]), lines.map((l, i) => [i + 1, l.byteOffset, 'b.log', l.line.toString()]));
  const [rejects] = (await pool.query('SELECT line_no AS lineNo, reason FROM log_rejects WHERE run_id = ?', [runId])) as [{ lineNo: number; reason: string }[], unknown];
  assert.equal(rejects.length, 1);
  assert.equal(rejects[0]!.lineNo, 3);
  assert.ok(rejects[0]!.reason.length > 0);

  // Published again (a resumed trigger), and its lines as line messages (the other framing): no change anywhere.
  await admin(async (ch) => {
    ch.publish('logs', 'logs.batchtest.access', good, { ...goodOptions, persistent: true });
    lines.forEach((l, i) => ch.publish('logs', 'logs.batchtest.access', l.line, { ...logLineMessage({ runId, source: 'batchtest', lineNo: i + 1, byteOffset: l.byteOffset, file: 'b.log' }), persistent: true }));
    // Then a new line: each consumer handles its queue in order, so once it is stored the ones before it were handled.
    ch.publish('logs', 'logs.batchtest.access', Buffer.from(LINE(6)), { ...logLineMessage({ runId, source: 'batchtest', lineNo: 6, byteOffset: offset, file: 'b.log' }), persistent: true });
    await ch.waitForConfirms();
  });
  await waitFor('the new line stored by both consumers', async () =>
    (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ? AND line_no = 6', [runId])) === 1 &&
    (await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ? AND line_no = 6', [runId])) === 1, 30_000);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [runId]), 6);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [runId]), 5);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id = ?', [runId]), 1);
  assert.equal(await count(pool, 'SELECT SUM(requests) FROM log_stats_minute WHERE source = ?', ['batchtest']), 5, 'each request counted once');
  assert.equal(await depth('logs.clean.dlq'), 1, 'nothing more dead-lettered');
});
