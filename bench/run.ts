// npm run bench: end-to-end figures on this machine, against the real services.
// Not a test: it asserts nothing about speed, it measures and prints.
//   - log replay throughput (file -> raw_logs + web_requests), 1 and 3 log-clean processes
//   - EV readings/s through ev-analytics (unpaced run), and reading-to-SES-accepted latency (paced run)
//   - bundle sizes and cold starts (process start -> ready, median of 5)
// Uses its own database (sluice_test_bench) and the sluice-test vhost, or TEST_MYSQL_URL and TEST_AMQP_URL.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

process.env.TEST_MYSQL_URL ??= 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test_bench';
const h = await import('../test/integration/harness.ts');
const { ensureSesEmulator } = await import('../scripts/ses-emulator.ts');
const { EV_PARTITIONS } = await import('../infra/topology.ts');

const root = h.root;
const run = (cmd: string, args: string[]) => {
  if (spawnSync(cmd, args, { cwd: root, stdio: 'inherit' }).status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`);
};
run('bash', ['scripts/services.sh']);
run(process.execPath, ['build.mjs', '--no-check']);
const ses = await ensureSesEmulator(h.SES_ENDPOINT);

// BENCH_ONLY=logs,aggregates,ev,latency,cold runs some sections only.
const only = new Set((process.env.BENCH_ONLY ?? 'logs,aggregates,ev,latency,cold').split(','));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const report: string[] = [];
const say = (line: string) => (console.log(line), report.push(line));

// A bigger input than apache_logs alone, for a steady-state figure: the file 10 times over.
const logDir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-'));
const apache = readFileSync(path.join(h.logsDir, 'apache_logs'));
writeFileSync(path.join(logDir, 'apache_logs'), apache);
writeFileSync(path.join(logDir, 'apache_logs_x10'), Buffer.concat(Array.from({ length: 10 }, () => apache)));

async function logReplay(cleanProcesses: number, file: string, lines: number, cleanEnv: Record<string, string> = {}): Promise<number> {
  const pool = await h.resetEnvironment();
  try {
    await h.startFunction('log-lake');
    for (let i = 0; i < cleanProcesses; i++) await h.startFunction('log-clean', cleanEnv);
    const trigger = await h.startFunction('trigger', { LOG_DIR: logDir });
    const t0 = performance.now();
    const { body } = await h.api(trigger, 'POST', '/v1/runs', { kind: 'logs', file });
    await h.waitFor('the replay to be stored', async () => {
      const s = (await h.api(trigger, 'GET', `/v1/runs/${body.id}`)).body.stored;
      return s.raw_logs === lines && s.web_requests + s.log_rejects === lines;
    }, 600_000, 50);
    return lines / ((performance.now() - t0) / 1000);
  } finally {
    await h.stopAll();
    await pool.end();
  }
}

say(`# sluice benchmarks — ${new Date().toISOString().slice(0, 10)}, ${process.env.BENCH_MACHINE ?? 'this machine'}\n`);
if (only.has('logs')) say('## Log replay, file to both tables (raw_logs and web_requests + log_rejects)\n');
if (only.has('logs')) say('| input | log-clean processes | lines/s (median of 3) |\n|---|---|---|');
for (const [file, lines] of only.has('logs') ? ([['apache_logs', 10_000], ['apache_logs_x10', 100_000]] as const) : []) {
  for (const n of [1, 3]) {
    const rates: number[] = [];
    for (let i = 0; i < 3; i++) rates.push(await logReplay(n, file, lines));
    say(`| ${file} (${lines.toLocaleString('en')} lines) | ${n} | ${Math.round(median(rates)).toLocaleString('en')} (${rates.map((r) => Math.round(r)).join(', ')}) |`);
  }
}

// What the streaming aggregates cost the pipeline: the same replay with log-clean counting them
// (AGGREGATES=true, the default) and not, rounds alternated so that the machine's noise falls on both.
if (only.has('aggregates')) {
  say('\n## What the streaming aggregates cost: apache_logs_x10 (100,000 lines), file to every table\n');
  say('| log-clean processes | without aggregates, lines/s | with, lines/s | with / without (median) |\n|---|---|---|---|');
  for (const n of [1, 3]) {
    const off: number[] = [];
    const on: number[] = [];
    for (let i = 0; i < 3; i++) {
      off.push(await logReplay(n, 'apache_logs_x10', 100_000, { AGGREGATES: 'false' }));
      on.push(await logReplay(n, 'apache_logs_x10', 100_000, { AGGREGATES: 'true' }));
    }
    const fmt = (xs: number[]) => `${Math.round(median(xs)).toLocaleString('en')} (${xs.map((r) => Math.round(r)).join(', ')})`;
    say(`| ${n} | ${fmt(off)} | ${fmt(on)} | ${(median(on) / median(off)).toFixed(2)} |`);
  }
}

async function evStack<T>(fn: (trigger: Awaited<ReturnType<typeof h.startFunction>>, pool: Awaited<ReturnType<typeof h.resetEnvironment>>) => Promise<T>): Promise<T> {
  const pool = await h.resetEnvironment();
  try {
    await h.startFunction('ev-analytics');
    await h.startFunction('ev-store');
    await h.startFunction('notify-email');
    return await fn(await h.startFunction('trigger'), pool);
  } finally {
    await h.stopAll();
    await pool.end();
  }
}

const finalClocks = (pool: Awaited<ReturnType<typeof h.resetEnvironment>>, runId: string) =>
  h.count(pool, "SELECT COUNT(*) FROM ev_analytics_clock WHERE run_id = ? AND JSON_EXTRACT(clock, '$.final') = true", [runId]);

if (only.has('ev')) {
say('\n## EV readings through ev-analytics (default settings, unpaced run: 400 sessions, faultRate 0.1)\n');
const evRate = await evStack(async (trigger, pool) => {
  const t0 = performance.now();
  const { body } = await h.api(trigger, 'POST', '/v1/runs', { kind: 'ev', sessions: 400, seed: 1, speed: 1e9, faultRate: 0.1 });
  await h.waitFor('the analytics to pass the final clock', async () => (await finalClocks(pool, body.id)) === EV_PARTITIONS, 900_000, 100);
  const seconds = (performance.now() - t0) / 1000;
  const run = (await h.api(trigger, 'GET', `/v1/runs/${body.id}`)).body;
  const readings = run.published; // readings + clock ticks, all through the analytics
  return { readings, seconds };
});
say(`${evRate.readings.toLocaleString('en')} messages (readings and clock ticks) in ${evRate.seconds.toFixed(1)} s: **${Math.round(evRate.readings / evRate.seconds).toLocaleString('en')} readings/s** (publish, analytics and state persistence included)\n`);
}

if (only.has('latency')) {
say('## Latency, reading published -> email accepted by SES (paced run: 100 sessions at speed 3600, owner emails)\n');
say('From the Finishing reading\'s publish time (its AMQP timestamp, kept in ev_readings.published_at) to SES accepting the mail (email_outbox.sent_at).\n');
// A tap on the events (a queue of the bench's own, as the administrator): when ev-analytics
// published each event (its AMQP timestamp), to split the first stage in two.
const { default: amqp } = await import('amqplib');
const tapConnection = await amqp.connect(h.AMQP_URL);
const tap = await tapConnection.createChannel();
const eventPublishedAt = new Map<string, number>();
const latencies = await evStack(async (trigger, pool) => {
  const { queue } = await tap.assertQueue('', { exclusive: true, autoDelete: true });
  await tap.bindQueue(queue, 'ev', 'ev.event.#');
  await tap.consume(queue, (m) => m && typeof m.properties.timestamp === 'number' && eventPublishedAt.set(String(m.properties.messageId), m.properties.timestamp), { noAck: true });
  const { body } = await h.api(trigger, 'POST', '/v1/runs', { kind: 'ev', sessions: 100, seed: 2, speed: 3600, faultRate: 0 });
  await h.waitFor('every completion mailed', async () => (await h.count(pool, "SELECT COUNT(*) FROM email_outbox WHERE run_id = ? AND role = 'owner' AND status = 'sent'", [body.id])) === 100, 900_000, 500);
  const [rows] = (await pool.query(
    `SELECT o.event_id, o.sent_at, o.claimed_at, o.created_at, r.published_at FROM email_outbox o JOIN ev_events e ON e.event_id = o.event_id
     JOIN ev_readings r ON r.session_id = e.session_id AND r.seq = JSON_EXTRACT(e.details, '$.seq')
     WHERE o.run_id = ? AND o.role = 'owner'`,
    [body.id],
  )) as [{ event_id: string; sent_at: Date; claimed_at: Date; created_at: Date; published_at: Date }[], unknown];
  return rows.map((r) => ({ ...r, event_published_at: eventPublishedAt.get(r.event_id) ?? NaN }));
});
await tapConnection.close();
const stage = (f: (r: (typeof latencies)[number]) => number) => {
  const xs = latencies.map(f).filter(Number.isFinite);
  if (xs.length === 0) return 'n/a | n/a';
  return `${Math.round(percentile(xs, 50))} ms | ${Math.round(percentile(xs, 99))} ms`;
};
const total = latencies.map((r) => r.sent_at.getTime() - r.published_at.getTime());
say(`${latencies.length} emails: p50 **${Math.round(percentile(total, 50))} ms**, p99 **${Math.round(percentile(total, 99))} ms**, max ${Math.round(Math.max(...total))} ms (operator alerts wait GROUP_WINDOW_S=30 s on purpose and are not in these figures)\n`);
say('Where the time goes (each stage\'s own p50 and p99):\n');
say('| stage | p50 | p99 |\n|---|---|---|');
say(`| reading published -> its event published (queue, ev-analytics batch wait, state load, detect) | ${stage((r) => r.event_published_at - r.published_at.getTime())} |`);
say(`| event published -> email row in the outbox (confirm, notify-email batch wait, insert) | ${stage((r) => r.created_at.getTime() - r.event_published_at)} |`);
say(`| outbox row -> claimed by the dispatcher (its poll) | ${stage((r) => r.claimed_at.getTime() - r.created_at.getTime())} |`);
say(`| claimed -> SES accepted (render, send, record) | ${stage((r) => r.sent_at.getTime() - r.claimed_at.getTime())} |`);
say('');
}

if (only.has('cold')) {
  say('## Bundles and cold start (process start -> consuming or listening, median of 5)\n');
  // bundle: what a start loads (manifest size: the entry and the chunks it imports); the first
  // start of each fills the compile cache (.sluice/compile-cache) the next four read, as npm start's would.
  say('| function | bundle (loaded at start) | cold start |\n|---|---|---|');
  const pool = await h.resetEnvironment();
  await (await h.startFunction('log-lake')).kill(); // migrate once: cold starts below do not include first-time migrations
  // The functions only: dist/migrate is the privileged one-shot step, not a function that starts and waits.
  const { FUNCTIONS } = await import('../infra/access.ts');
  for (const fn of readdirSync(path.join(root, 'dist')).filter((d) => (FUNCTIONS as readonly string[]).includes(d)).sort()) {
    const manifest = JSON.parse(readFileSync(path.join(root, 'dist', fn, 'manifest.json'), 'utf8')) as { size: number };
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const p = await h.startFunction(fn);
      times.push(performance.now() - t0);
      await p.kill();
    }
    say(`| ${fn} | ${(manifest.size / 1024).toFixed(0)} KiB | ${Math.round(median(times))} ms |`);
  }
  await pool.end();
}

await ses?.stop();
rmSync(logDir, { recursive: true, force: true });
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, `${report.join('\n')}\n`);
