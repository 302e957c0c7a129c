// Follow live logs end to end on real RabbitMQ and MariaDB: a run follows access.log while
// it is appended to in bursts, rotated by rename + create and by copytruncate mid-stream,
// its trigger killed (SIGKILL) mid-follow, appended to and rotated while no trigger runs,
// resumed by another trigger, handed back by a graceful stop and resumed again; once stopped, raw_logs holds exactly the lines written (each
// once, with its file and byte offset, line numbers 1..N) and web_requests + log_rejects as
// many. Then the latency from a line appended to its raw_logs row, over a paced append.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, existsSync, mkdtempSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Pool } from '../../shared/db/pool.ts';
import { api, count, ensureBuilt, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

let pool: Pool;
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-follow-'));
const TRIGGER_ENV = { LOG_DIR: dir, RUN_STALE_AFTER_S: '2' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  await startFunction('log-lake');
  await startFunction('log-clean');
});
after(async () => {
  await stopAll();
  await pool?.end();
  rmSync(dir, { recursive: true, force: true });
});

/** Appends unique nginx lines (every 97th one malformed), remembering the file and offset of each. */
class Writer {
  readonly expected: { line: string; file: string; byteOffset: number }[] = [];
  private n = 0;
  append(rel: string, count: number, as = rel): void {
    const p = path.join(dir, rel);
    let offset = existsSync(p) ? statSync(p).size : 0;
    let text = '';
    for (let i = 0; i < count; i++) {
      const n = ++this.n;
      const line = n % 97 === 0 ? `garbage line ${n}` : `10.1.${(n >> 8) & 255}.${n & 255} - - [10/Oct/2024:13:55:36 +0000] "GET /follow/${n} HTTP/1.1" 200 ${n} "-" "sluice-test/1.0"`;
      this.expected.push({ line, file: as, byteOffset: offset });
      offset += line.length + 1;
      text += `${line}\n`;
    }
    appendFileSync(p, text);
  }
}

const rawCount = (id: string) => count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id]);
const stored = (id: string, n: number) => waitFor(`${n} lines of ${id} in raw_logs`, async () => (await rawCount(id)) >= n, 120_000, 100);

/** logrotate's numbered shift: access.log.N -> .N+1, then the file to .1. */
function shift(base: string): void {
  for (let i = 9; i >= 1; i--) if (existsSync(`${base}.${i}`)) renameSync(`${base}.${i}`, `${base}.${i + 1}`);
}

test('a followed log: bursts, rotations both ways, the trigger killed and resumed across a rotation; raw_logs exact once stopped', async () => {
  const file = path.join(dir, 'access.log');
  const w = new Writer();
  w.append('access.log', 200);
  let trigger: FnProcess = await startFunction('trigger', TRIGGER_ENV);
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'access.log', follow: true });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const id = res.body.id as string;
  await stored(id, 200);
  assert.equal((await api(trigger, 'GET', `/v1/runs/${id}`)).body.state, 'running');

  // Bursts.
  for (let burst = 0; burst < 5; burst++) {
    w.append('access.log', 100 + burst * 37);
    await sleep(150);
  }
  // Rename + create mid-stream; the writer keeps writing to the old file for a moment.
  w.append('access.log', 50);
  shift(file);
  renameSync(file, `${file}.1`);
  w.append('access.log.1', 20, 'access.log');
  w.append('access.log', 50);
  await sleep(300);
  // copytruncate mid-stream.
  w.append('access.log', 50);
  shift(file);
  copyFileSync(file, `${file}.1`);
  truncateSync(file, 0);
  w.append('access.log', 60);
  await stored(id, w.expected.length);

  // kill -9 in the middle of a big burst.
  const before = w.expected.length;
  w.append('access.log', 20_000);
  await waitFor('the burst under way', async () => (await rawCount(id)) > before + 500, 60_000, 20);
  await trigger.kill('SIGKILL');
  const [[atKill]] = (await pool.query('SELECT state, published FROM runs WHERE id = ?', [id])) as [{ state: string; published: number }[], unknown];
  assert.equal(atKill!.state, 'running');
  assert.ok(atKill!.published < w.expected.length, `the kill lands mid-burst (${atKill!.published} of ${w.expected.length} published)`);
  // While no trigger runs: more lines, then a rotation (rename + create), then more lines.
  w.append('access.log', 300);
  shift(file);
  renameSync(file, `${file}.1`);
  w.append('access.log', 120);

  trigger = await startFunction('trigger', TRIGGER_ENV);
  await waitFor('the run resumed', async () => trigger.logs.some((l) => l.includes('resuming a run whose trigger stopped') && l.includes(id)), 30_000);
  await waitFor('the file it was reading found rotated', async () => trigger.logs.some((l) => l.includes('followed file found rotated') && l.includes('"at":"access.log.1"')), 10_000);
  w.append('access.log', 80);
  await stored(id, w.expected.length);

  // A graceful stop (a deploy) hands the run back instead of ending it; the next trigger resumes it.
  assert.equal(await trigger.kill('SIGTERM'), 0);
  assert.ok(trigger.logs.some((l) => l.includes('run handed back') && l.includes(id)));
  assert.equal((await pool.query('SELECT state FROM runs WHERE id = ?', [id]) as [{ state: string }[], unknown])[0][0]!.state, 'running');
  w.append('access.log', 40);
  trigger = await startFunction('trigger', TRIGGER_ENV);
  await waitFor('the run resumed again', async () => trigger.logs.some((l) => l.includes('resuming a run whose trigger stopped') && l.includes(id)), 30_000);
  w.append('access.log', 30);
  await stored(id, w.expected.length);
  await sleep(500); // anything extra would show up now

  const stop = await api(trigger, 'POST', `/v1/runs/${id}/stop`);
  assert.equal(stop.status, 200, JSON.stringify(stop.body));
  assert.equal(stop.body.state, 'stopped');
  assert.ok(stop.body.checkpoint.follow.nextLineNo > w.expected.length, JSON.stringify(stop.body.checkpoint.follow));
  assert.equal((await api(trigger, 'POST', `/v1/runs/${id}/stop`)).status, 409);

  const N = w.expected.length;
  const [rows] = (await pool.query('SELECT line_no, file, byte_offset, line FROM raw_logs WHERE run_id = ? ORDER BY line_no', [id])) as [
    { line_no: number; file: string; byte_offset: number; line: Buffer }[],
    unknown,
  ];
  assert.equal(rows.length, N, 'as many rows as lines written');
  assert.deepEqual(rows.map((r) => Number(r.line_no)), Array.from({ length: N }, (_, i) => i + 1), 'line numbers 1..N');
  const key = (r: { file: string; byteOffset: number; line: string }) => `${r.file}@${r.byteOffset} ${r.line}`;
  const got = rows.map((r) => key({ file: r.file, byteOffset: Number(r.byte_offset), line: r.line.toString() }));
  const want = w.expected.map(key);
  assert.deepEqual(new Set(got).size, N, 'no line twice');
  assert.deepEqual(got.sort(), want.sort(), 'exactly the lines written, each with its file and byte offset');
  await waitFor('web_requests + log_rejects', async () =>
    (await count(pool, 'SELECT (SELECT COUNT(*) FROM web_requests WHERE run_id = ?) + (SELECT COUNT(*) FROM log_rejects WHERE run_id = ?)', [id, id])) === N, 120_000, 200);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id = ?', [id]), w.expected.filter((e) => e.line.startsWith('garbage')).length);
  const run = (await api(trigger, 'GET', `/v1/runs/${id}`)).body;
  assert.equal(run.state, 'stopped');
  assert.equal(run.stored.raw_logs, N);
});

test('latency from a line appended to its raw_logs row (200 lines at 100/s)', async (t) => {
  const trigger = await startFunction('trigger', TRIGGER_ENV);
  writeFileSync(path.join(dir, 'latency.log'), '');
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'latency.log', follow: true });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const id = res.body.id as string;
  await sleep(500);
  const LINES = 200;
  const appended: number[] = [];
  const seen: number[] = [];
  let polling = true;
  const poller = (async () => {
    let last = 0;
    while (polling) {
      const [rows] = (await pool.query('SELECT line_no FROM raw_logs WHERE run_id = ? AND line_no > ?', [id, last])) as [{ line_no: number }[], unknown];
      const now = performance.now();
      for (const { line_no } of rows) {
        seen[Number(line_no)] = now;
        last = Math.max(last, Number(line_no));
      }
      if (last >= LINES) break;
      await sleep(5);
    }
  })();
  const start = performance.now();
  for (let i = 1; i <= LINES; i++) {
    const due = start + (i - 1) * 10;
    while (performance.now() < due) await sleep(Math.max(0, due - performance.now()));
    appended[i] = performance.now();
    appendFileSync(path.join(dir, 'latency.log'), `10.9.9.9 - - [10/Oct/2024:13:55:36 +0000] "GET /latency/${i} HTTP/1.1" 200 ${i} "-" "sluice-test/1.0"\n`);
  }
  await waitFor('every paced line stored', async () => seen.filter(Boolean).length === LINES, 30_000, 50);
  polling = false;
  await poller;
  const latencies = Array.from({ length: LINES }, (_, i) => seen[i + 1]! - appended[i + 1]!).sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(LINES - 1, Math.ceil((p / 100) * LINES) - 1)]!;
  const summary = `follow latency, append -> raw_logs row (${LINES} lines at 100/s, DB polled every ~5 ms): p50 ${pct(50).toFixed(0)} ms, p99 ${pct(99).toFixed(0)} ms, max ${latencies.at(-1)!.toFixed(0)} ms`;
  console.log(summary);
  t.diagnostic(summary);
  assert.ok(pct(99) < 1_000, summary);
  assert.equal((await api(trigger, 'POST', `/v1/runs/${id}/stop`)).status, 200);
});
