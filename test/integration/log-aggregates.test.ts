// The streaming aggregates end to end on real RabbitMQ and MariaDB: the trigger
// replays apache_logs into exchange `logs`, log-clean stores every request and,
// in the same transaction, adds it up into the log_stats_* tables. The aggregates are checked exactly against figures worked
// out here from the file itself, then the same replay is run again (each as its
// own source) with log-clean SIGKILLed twice mid-replay, and with two log-clean
// processes at once: the aggregates must be identical, row for row.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import amqp from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { parseAccessLine } from '../../shared/weblog/parse.ts';
import {
  AMQP_URL, RABBITMQ_API_URL, api, count, ensureBuilt, logsDir, messagesOf, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess,
} from './harness.ts';

const LINES = readFileSync(path.join(logsDir, 'apache_logs'), 'utf8').split('\n').filter((l) => l !== '');
const STATS_ENV = { BATCH_SIZE: '50' };

let pool: Pool;
let trigger: FnProcess;

// --- what the file says, worked out independently of log-clean's code ---------------------

interface Expected {
  requests: number;
  bytes: number;
  status: number[];
  visitorsByDay: Record<string, number>;
  topPaths: { value: string; requests: number; visitors: number; bytes: number }[];
}

/** The request target as GoAccess keys it: with its query, %XX runs decoded when they are UTF-8, trimmed. */
function goaccessTarget(path: string, query: string | null): string {
  const raw = query === null ? path : `${path}?${query}`;
  const decoded = raw.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(run.replace(/%/g, ''), 'hex'));
    } catch {
      return run;
    }
  });
  return decoded.replace(/[\r\n]/g, '').replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, '') || raw;
}
const md5hex = (s: string) => createHash('md5').update(s).digest('hex').toUpperCase();

function expectedFromFile(): Expected {
  let requests = 0;
  let bytes = 0;
  const status = [0, 0, 0, 0, 0];
  const days = new Map<string, Set<string>>();
  const paths = new Map<string, { requests: number; bytes: number; visitors: Set<string> }>();
  for (const line of LINES) {
    const p = parseAccessLine(line);
    if (!p.ok) continue;
    const r = p.value;
    requests++;
    bytes += r.bytes ?? 0;
    status[Math.floor(r.status / 100) - 1]!++;
    const day = new Date(r.ts.getTime() + r.tzOffsetMin * 60_000).toISOString().slice(0, 10);
    const visitor = r.status >= 400 && r.status < 500 ? null : `${day} ${r.clientIp} ${r.userAgent ?? '-'}`;
    if (visitor) {
      if (!days.has(day)) days.set(day, new Set());
      days.get(day)!.add(visitor);
    }
    if (r.path !== null) {
      const key = goaccessTarget(r.path, r.query);
      const e = paths.get(key) ?? { requests: 0, bytes: 0, visitors: new Set<string>() };
      e.requests++;
      e.bytes += r.bytes ?? 0;
      if (visitor) e.visitors.add(visitor);
      paths.set(key, e);
    }
  }
  const topPaths = [...paths]
    .sort(([a, x], [b, y]) => y.requests - x.requests || (md5hex(a) < md5hex(b) ? -1 : 1))
    .slice(0, 10)
    .map(([value, e]) => ({ value, requests: e.requests, visitors: e.visitors.size, bytes: e.bytes }));
  return { requests, bytes, status, visitorsByDay: Object.fromEntries([...days].map(([d, s]) => [d, s.size])), topPaths };
}

// --- what log-clean stored --------------------------------------------------------------

const rows = async <T>(sql: string, params: unknown[]): Promise<T[]> => ((await pool.query(sql, params)) as [T[], unknown])[0];

async function measured(source: string): Promise<Expected> {
  const [totals] = await rows<Record<string, string | number>>(
    `SELECT SUM(requests) AS requests, SUM(bytes) AS bytes, SUM(s1xx) AS s1, SUM(s2xx) AS s2, SUM(s3xx) AS s3, SUM(s4xx) AS s4, SUM(s5xx) AS s5
     FROM log_stats_minute WHERE source = ?`, [source]);
  const days = await rows<{ day: string; n: number }>('SELECT CAST(day AS CHAR) AS day, COUNT(*) AS n FROM log_stats_visitor WHERE source = ? GROUP BY day', [source]);
  const top = await rows<{ value: string; requests: string; visitors: string; bytes: string }>(
    `SELECT value, SUM(requests) AS requests, SUM(visitors) AS visitors, SUM(bytes) AS bytes FROM log_stats_top
     WHERE source = ? AND dimension = 'path' GROUP BY value_hash, value ORDER BY SUM(requests) DESC, HEX(value_hash) LIMIT 10`, [source]);
  return {
    requests: Number(totals!.requests),
    bytes: Number(totals!.bytes),
    status: [totals!.s1, totals!.s2, totals!.s3, totals!.s4, totals!.s5].map(Number),
    visitorsByDay: Object.fromEntries(days.map((d) => [d.day, Number(d.n)])),
    topPaths: top.map((t) => ({ value: t.value, requests: Number(t.requests), visitors: Number(t.visitors), bytes: Number(t.bytes) })),
  };
}

/** Every aggregate row of a source (the batch ids left out: they say which batch did the work). */
async function snapshot(source: string) {
  return {
    minutes: await rows('SELECT minute, requests, bytes, visitors, s1xx, s2xx, s3xx, s4xx, s5xx FROM log_stats_minute WHERE source = ? ORDER BY minute', [source]),
    visitors: await rows('SELECT CAST(day AS CHAR) AS day, HEX(visitor) AS visitor, first_minute FROM log_stats_visitor WHERE source = ? ORDER BY day, visitor', [source]),
    tops: await rows(
      'SELECT CAST(day AS CHAR) AS day, dimension, HEX(value_hash) AS hash, value, requests, bytes, visitors FROM log_stats_top WHERE source = ? ORDER BY day, dimension, value_hash',
      [source],
    ),
    pairs: await count(pool, 'SELECT COUNT(*) FROM log_stats_top_visitor WHERE source = ?', [source]),
  };
}

/** The tables agree with each other: minutes' visitors with the visitors, values' visitors with their pairs. */
async function assertConsistent(source: string): Promise<void> {
  assert.equal(
    await count(pool, 'SELECT COUNT(*) FROM log_stats_minute WHERE source = ? AND visitors < 0', [source]), 0, 'no minute below 0 visitors');
  assert.equal(
    await count(pool, `SELECT COUNT(*) FROM log_stats_minute m WHERE m.source = ? AND m.visitors <>
       (SELECT COUNT(*) FROM log_stats_visitor v WHERE v.source = m.source AND v.first_minute = m.minute)`, [source]),
    0, 'each minute counts the visitors whose first request it holds');
  assert.equal(
    await count(pool, `SELECT COUNT(*) FROM log_stats_top t WHERE t.source = ? AND t.dimension IN ('path', 'referrer') AND t.visitors <>
       (SELECT COUNT(*) FROM log_stats_top_visitor p WHERE p.source = t.source AND p.day = t.day AND p.dimension = t.dimension AND p.value_hash = t.value_hash)`, [source]),
    0, 'each path and referrer counts its (value, visitor) pairs');
  // Every value of every dimension, each day: its requests and visitors, as the file says.
  const tops = await rows<{ day: string; dimension: string; value: string; requests: number; visitors: number }>(
    'SELECT CAST(day AS CHAR) AS day, dimension, value, requests, visitors FROM log_stats_top WHERE source = ?', [source]);
  assert.deepEqual(new Map(tops.map((t) => [`${t.day} ${t.dimension} ${t.value}`, [t.requests, t.visitors]])), valuesByDay);
  // A visitor's first minute is the minute of its earliest request that day.
  const visitors = await rows<{ day: string; visitor: string; first_minute: Date }>(
    'SELECT CAST(day AS CHAR) AS day, LOWER(HEX(visitor)) AS visitor, first_minute FROM log_stats_visitor WHERE source = ?', [source]);
  const earliest = new Map<string, number>();
  for (const line of LINES) {
    const p = parseAccessLine(line);
    if (!p.ok || (p.value.status >= 400 && p.value.status < 500)) continue;
    const r = p.value;
    const day = new Date(r.ts.getTime() + r.tzOffsetMin * 60_000).toISOString().slice(0, 10);
    const k = `${day} ${createHash('md5').update(`${r.clientIp}\0${r.userAgent ?? '-'}`).digest('hex')}`;
    const minute = Math.floor(r.ts.getTime() / 60_000) * 60_000;
    earliest.set(k, Math.min(earliest.get(k) ?? Infinity, minute));
  }
  assert.equal(visitors.length, earliest.size);
  for (const v of visitors) assert.equal(v.first_minute.getTime(), earliest.get(`${v.day} ${v.visitor}`), `first minute of visitor ${v.visitor} on ${v.day}`);
}

async function replay(source: string): Promise<string> {
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'apache_logs', source });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  return res.body.id as string;
}
// The aggregates move in the transaction that stores the requests: what is stored is counted.
const counted = (runId: string) => count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [runId]);
async function waitCounted(runId: string, lines: number): Promise<void> {
  await waitFor(`run ${runId} counted`, async () => (await counted(runId)) === lines, 180_000, 100);
}

/** Messages a process acked, from its /metrics. */
async function acked(fn: FnProcess): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${fn.ready.health}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^sluice_messages_total\{[^}]*queue="logs\.clean"[^}]*outcome="ack"[^}]*\} (\d+)/gm)) n += Number(m[1]);
  return n;
}

/** Messages in a queue of the test vhost, ready and unacknowledged (RabbitMQ's management API). */
async function queueDepth(queue: string): Promise<number> {
  const url = new URL(RABBITMQ_API_URL);
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
  const vhost = decodeURIComponent(new URL(AMQP_URL).pathname.slice(1));
  const res = await fetch(`${url.origin}/api/queues/${encodeURIComponent(vhost)}/${encodeURIComponent(queue)}`, { headers: { authorization: auth } });
  const q = (await res.json()) as { messages?: number };
  return q.messages ?? -1;
}

const started: FnProcess[] = [];
async function startStats(env: Record<string, string>): Promise<FnProcess> {
  const p = await startFunction('log-clean', env);
  started.push(p);
  return p;
}
const statsProcesses = () => started.splice(0);

const expected = expectedFromFile();

/** "day dimension value" -> [requests, visitors], from the file. */
const valuesByDay = (() => {
  const out = new Map<string, { requests: number; visitors: Set<string> }>();
  for (const line of LINES) {
    const p = parseAccessLine(line);
    if (!p.ok) continue;
    const r = p.value;
    const day = new Date(r.ts.getTime() + r.tzOffsetMin * 60_000).toISOString().slice(0, 10);
    const visitor = r.status >= 400 && r.status < 500 ? null : `${r.clientIp} ${r.userAgent ?? '-'}`;
    const target = r.path === null ? null : goaccessTarget(r.path, r.query);
    const values: [string, string | null][] = [
      ['path', target], ['not_found', r.status === 404 ? target : null], ['referrer', r.referrer || null],
      ['client_ip', r.clientIp], ['user_agent', r.userAgent],
    ];
    for (const [dimension, value] of values) {
      if (value === null) continue;
      const k = `${day} ${dimension} ${value}`;
      const e = out.get(k) ?? { requests: 0, visitors: new Set<string>() };
      e.requests++;
      if (visitor) e.visitors.add(visitor);
      out.set(k, e);
    }
  }
  return new Map([...out].map(([k, e]) => [k, [e.requests, e.visitors.size]]));
})();
let reference: Awaited<ReturnType<typeof snapshot>>;

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  trigger = await startFunction('trigger');
});
afterEach(async () => {
  await Promise.all(statsProcesses().map((p) => p.kill()));
});
after(async () => {
  await stopAll();
  await pool?.end();
});

describe('streaming aggregates (log-clean)', () => {
  test('a replay of apache_logs adds up exactly to the file', async () => {
    assert.equal(expected.requests, 9_999, 'every line but 8899 (cut short) counts');
    await startStats(STATS_ENV);
    const runId = await replay('stats-once');
    await waitCounted(runId, expected.requests);
    const got = await measured('stats-once');
    assert.equal(got.requests, expected.requests, 'requests');
    assert.equal(got.bytes, expected.bytes, 'bytes');
    assert.deepEqual(got.status, expected.status, 'status classes 1xx..5xx');
    assert.deepEqual(got.status, [0, 9_170, 609, 217, 3], 'the data README\'s counts, by class, less line 8899 (a 200)');
    assert.deepEqual(got.visitorsByDay, expected.visitorsByDay, 'visitors per day');
    assert.deepEqual(got.topPaths, expected.topPaths, 'top 10 paths: requests, visitors, bytes');
    // The minutes' visitors add up to the days' unique visitors.
    assert.equal(
      await count(pool, 'SELECT SUM(visitors) FROM log_stats_minute WHERE source = ?', ['stats-once']),
      Object.values(expected.visitorsByDay).reduce((a, b) => a + b, 0),
    );
    await assertConsistent('stats-once');
    reference = await snapshot('stats-once');
    const minutes = new Set(LINES.map((l) => parseAccessLine(l)).flatMap((p) => (p.ok ? [Math.floor(p.value.ts.getTime() / 60_000)] : [])));
    assert.equal(reference.minutes.length, minutes.size, 'one row per minute with requests');
    assert.ok(reference.tops.length > 5_000 && reference.pairs > 10_000, `${reference.tops.length} values, ${reference.pairs} (value, visitor) pairs`);
  });

  test('log-clean SIGKILLed twice mid-replay and restarted: identical aggregates', async () => {
    let stats = await startStats(STATS_ENV);
    const runId = await replay('stats-kill');
    for (const threshold of [1_500, 5_000]) {
      await waitFor(`${threshold} lines counted`, async () => (await counted(runId)) >= threshold, 120_000, 20);
      await stats.kill('SIGKILL');
      const atKill = await counted(runId);
      assert.ok(atKill < expected.requests, `the kill lands mid-replay (${atKill} lines counted)`);
      stats = await startStats(STATS_ENV);
    }
    await waitCounted(runId, expected.requests);
    assert.deepEqual(await measured('stats-kill'), expected);
    await assertConsistent('stats-kill');
    assert.deepEqual(await snapshot('stats-kill'), reference);
  });

  test('two log-clean processes on the same queue: both work, nothing counted twice', async () => {
    const both = [await startStats(STATS_ENV), await startStats(STATS_ENV)];
    const runId = await replay('stats-two');
    await waitCounted(runId, expected.requests);
    await waitFor('the queue to be drained', async () => (await queueDepth('logs.clean')) === 0, 30_000);
    const acks = await Promise.all(both.map(acked));
    for (const n of acks) assert.ok(n > 0, `every process took work: ${acks}`);
    assert.equal(acks[0]! + acks[1]!, messagesOf(LINES.length), 'each message handled once (the line that does not count, a reject, is acked too)');
    assert.deepEqual(await measured('stats-two'), expected);
    await assertConsistent('stats-two');
    assert.deepEqual(await snapshot('stats-two'), reference);
    // Contention between the two (row locks, deadlocks) is resolved inside the store's retries:
    // no batch failed, none was split into single messages, nothing went to the DLQ.
    for (const p of both) assert.deepEqual(p.logs.filter((l) => /"level":(40|50)/.test(l)), [], 'no warnings or errors');
    assert.equal(await queueDepth('logs.clean.dlq'), 0);
  });

  test('a line published twice (a resumed publisher) and redelivered counts once', async () => {
    await startStats({ BATCH_SIZE: '10', BATCH_WAIT_MS: '200' });
    const runId = randomUUID();
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      const send = (lineNo: number, line: string) =>
        ch.publish('logs', 'logs.dup.access', Buffer.from(line), { persistent: true, messageId: `${runId}:${lineNo}`, headers: { runId, source: 'dup', lineNo, byteOffset: 0 } });
      // Twice in one batch, then again in a later one.
      send(1, LINES[0]!);
      send(1, LINES[0]!);
      send(2, LINES[1]!);
      await ch.waitForConfirms();
      await waitFor('the first lines counted', async () => (await counted(runId)) === 2 && (await queueDepth('logs.clean')) === 0, 30_000);
      send(1, LINES[0]!);
      send(3, LINES[2]!);
      await ch.waitForConfirms();
      await waitFor('the last line counted', async () => (await counted(runId)) === 3 && (await queueDepth('logs.clean')) === 0, 30_000);
    } finally {
      await conn.close();
    }
    assert.equal(await count(pool, 'SELECT SUM(requests) FROM log_stats_minute WHERE source = ?', ['dup']), 3);
    assert.equal(await count(pool, "SELECT SUM(requests) FROM log_stats_top WHERE source = ? AND dimension = 'client_ip'", ['dup']), 3);
    await assertConsistentSmall('dup');
  });
});

async function assertConsistentSmall(source: string): Promise<void> {
  assert.equal(
    await count(pool, 'SELECT SUM(visitors) FROM log_stats_minute WHERE source = ?', [source]),
    await count(pool, 'SELECT COUNT(*) FROM log_stats_visitor WHERE source = ?', [source]),
  );
}
