// npm run bench:follow — latency from a line appended to a followed log until log-clean has
// counted it (committed in the same transaction that moves GET /v1/stats), over a paced append.
// Measures and prints; asserts nothing about speed.
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

process.env.TEST_MYSQL_URL ??= 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test_bench';
const h = await import('../test/integration/harness.ts');

const rate = Number(process.env.BENCH_RATE ?? 1000);
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const total = rate * seconds;
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-follow-'));
const file = path.join(dir, 'live.log');
writeFileSync(file, '');
const line = (i: number) => `203.0.113.${i % 250} - - [01/Mar/2024:10:${String(Math.floor(i / 60_000) % 60).padStart(2, '0')}:${String(Math.floor(i / 1000) % 60).padStart(2, '0')} +0000] "GET /live/${i} HTTP/1.1" 200 ${100 + (i % 900)} "-" "bench/1.0"\n`;
const pool = await h.resetEnvironment();
try {
  await h.startFunction('log-lake');
  await h.startFunction('log-clean');
  const trigger = await h.startFunction('trigger', { LOG_DIR: dir });
  const { body: run } = await h.api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'live.log', follow: true, source: 'live' });
  const appendedAt = new Float64Array(total + 1);
  const countedAt = new Float64Array(total + 1);
  let counted = 0;
  // Watch what log-clean has committed (requests and their counts go in one transaction), every 5 ms.
  const watcher = (async () => {
    while (counted < total) {
      const [[row]] = (await pool.query('SELECT COALESCE(MAX(line_no), 0) AS n, COUNT(*) AS c FROM web_requests WHERE run_id = ?', [run.id])) as [{ n: number; c: number }[], unknown];
      const now = performance.now();
      // Lines are counted in batches; every line up to the count is in.
      for (let i = counted + 1; i <= Number(row!.c); i++) countedAt[i] = now;
      counted = Math.max(counted, Number(row!.c));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  // Append at `rate` lines per second, in 10 ms slices.
  const t0 = performance.now();
  for (let i = 1; i <= total; ) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate));
    let chunk = '';
    const now = performance.now();
    for (; i <= due; i++) (chunk += line(i)), (appendedAt[i] = now);
    if (chunk) appendFileSync(file, chunk);
    await new Promise((r) => setTimeout(r, 10));
  }
  await watcher;
  await h.api(trigger, 'POST', `/v1/runs/${run.id}/stop`);
  const lat = Array.from({ length: total }, (_, k) => countedAt[k + 1]! - appendedAt[k + 1]!).sort((a, b) => a - b);
  const p = (q: number) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]!.toFixed(0);
  const stats = (await h.api(trigger, 'GET', '/v1/stats?source=live&from=2024-03-01T00:00:00Z&to=2024-03-02T00:00:00Z&bucket=day')).body;
  console.log(`| followed append at ${rate} lines/s for ${seconds} s (${total.toLocaleString('en')} lines) | p50 ${p(0.5)} ms | p99 ${p(0.99)} ms | max ${p(1)} ms | /v1/stats counts ${stats.totals.requests} |`);
} finally {
  await h.stopAll();
  await pool.end();
  rmSync(dir, { recursive: true, force: true });
}
