// npm run bench:stats — query times of GET /v1/stats and /v1/stats/top over one day that held
// a million requests, against the real trigger and MariaDB. The aggregates are written directly
// (as log-clean would leave them), so the figure is the query's alone. Measures and prints.
import { randomBytes } from 'node:crypto';

process.env.TEST_MYSQL_URL ??= 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test_bench';
const h = await import('../test/integration/harness.ts');

const day = '2024-03-01';
const requests = 1_000_000;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pool = await h.resetEnvironment();
try {
  // 1,440 minutes of about 694 requests each.
  const perMinute = Math.ceil(requests / 1440);
  const minutes = Array.from({ length: 1440 }, (_, m) => ['bench', new Date(Date.parse(`${day}T00:00:00Z`) + m * 60_000), perMinute, perMinute * 5_000, 30, 0, perMinute - 40, 20, 15, 5]);
  await pool.query('INSERT INTO log_stats_minute (source, minute, requests, bytes, visitors, s1xx, s2xx, s3xx, s4xx, s5xx) VALUES ?', [minutes]);
  const trigger = await h.startFunction('trigger');
  const time = async (url: string, n = 21) => {
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await h.api(trigger, 'GET', url);
      ms.push(performance.now() - t0);
      if (r.status !== 200) throw new Error(`${url}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    return median(ms);
  };
  const range = `from=${day}T00:00:00Z&to=${day}T23:59:59Z`;
  console.log(`| query (1 day, ${requests.toLocaleString('en')} requests) | distinct values that day | median of 21 |\n|---|---|---|`);
  console.log(`| GET /v1/stats?bucket=minute (1,440 points) | – | ${(await time(`/v1/stats?source=bench&${range}&bucket=minute`)).toFixed(1)} ms |`);
  console.log(`| GET /v1/stats?bucket=hour | – | ${(await time(`/v1/stats?source=bench&${range}&bucket=hour`)).toFixed(1)} ms |`);
  // Top tables: a realistic day (20,000 distinct paths) and the worst case (every request its own path).
  let inserted = 0;
  for (const distinct of [20_000, 1_000_000]) {
    for (; inserted < distinct; inserted += 5_000) {
      const rows = Array.from({ length: Math.min(5_000, distinct - inserted) }, (_, i) => {
        const value = `/page/${inserted + i}?q=${randomBytes(4).toString('hex')}`;
        return ['bench', day, 'path', randomBytes(16), value, Math.max(1, Math.floor(requests / distinct)), 5_000, 1];
      });
      await pool.query('INSERT INTO log_stats_top (source, day, dimension, value_hash, value, requests, bytes, visitors) VALUES ?', [rows]);
    }
    console.log(`| GET /v1/stats/top?dimension=path&limit=10 | ${distinct.toLocaleString('en')} | ${(await time(`/v1/stats/top?source=bench&dimension=path&${range}`, distinct > 100_000 ? 5 : 21)).toFixed(1)} ms |`);
  }
} finally {
  await h.stopAll();
  await pool.end();
}
