// npm run bench:limits — memory under hostile sizes, against the real services.
// Not a test: it measures and prints (and appends to docs/benchmarks.md with --write).
//   1. a 1 GiB upload streamed to POST /v1/logs: the trigger's peak RSS, lines/s
//   2. a replay of a log whose lines are 512 KiB each: each consumer's peak RSS
// Peak RSS is the kernel's high-water mark (VmHWM in /proc/<pid>/status).
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';

process.env.TEST_MYSQL_URL ??= 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test_bench';
const h = await import('../test/integration/harness.ts');

const run = (cmd: string, args: string[]) => {
  if (spawnSync(cmd, args, { cwd: h.root, stdio: 'inherit' }).status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`);
};
run('bash', ['scripts/services.sh']);
run(process.execPath, ['build.mjs', '--no-check']);

const MiB = 1024 * 1024;
const uploadBytes = Number(process.env.BENCH_UPLOAD_MB ?? 1024) * MiB;
const peakRss = (pid: number | undefined) => {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};
const report: string[] = [];
const say = (line: string) => (console.log(line), report.push(line));
const apache = readFileSync(path.join(h.logsDir, 'apache_logs'));

/** An access-log line of about `size` bytes: a real apache_logs line with a long query string. */
function longLine(i: number, size: number): Buffer {
  const base = apache.subarray(0, apache.indexOf(10)).toString('latin1');
  const pad = 'q'.repeat(Math.max(0, size - base.length - 12));
  return Buffer.from(`${base.replace(' HTTP/1.1"', `?n=${i}&p=${pad} HTTP/1.1"`)}\n`, 'latin1');
}

say(`## Memory under hostile sizes (${new Date().toISOString().slice(0, 10)}, npm run bench:limits)\n`);
say('| scenario | input | time | process | peak RSS |\n|---|---|---|---|---|');

// --- 1. a 1 GiB upload, streamed ---------------------------------------------------
{
  const pool = await h.resetEnvironment();
  try {
    const lake = await h.startFunction('log-lake');
    const clean = await h.startFunction('log-clean');
    const trigger = await h.startFunction('trigger', { BODY_LIMIT_MB: String(Math.ceil(uploadBytes / MiB) + 16) });
    const lineSize = 8 * 1024;
    const lines = Math.ceil(uploadBytes / lineSize);
    // Generated as it is sent: the benchmark itself holds no more than one chunk.
    const body = Readable.from((function* () {
      for (let i = 0; i < lines; i += 64) yield Buffer.concat(Array.from({ length: Math.min(64, lines - i) }, (_, k) => longLine(i + k, lineSize)));
    })());
    const t0 = performance.now();
    const res = await fetch(`http://127.0.0.1:${trigger.ready.port}/v1/logs?source=bench-upload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${h.TOKEN}`, 'content-type': 'text/plain' },
      body: Readable.toWeb(body) as ReadableStream,
      duplex: 'half',
    } as RequestInit);
    const answer = await res.json() as { id: string; lines: number };
    const published = (performance.now() - t0) / 1000;
    if (res.status !== 200 || answer.lines !== lines) throw new Error(`upload answered ${res.status}: ${JSON.stringify(answer)}`);
    await h.waitFor('the upload to be stored', async () => {
      const s = (await h.api(trigger, 'GET', `/v1/runs/${answer.id}`)).body.stored;
      return s.raw_logs === lines && s.web_requests + s.log_rejects === lines;
    }, 3_600_000, 1_000);
    const stored = (performance.now() - t0) / 1000;
    const input = `${(uploadBytes / MiB).toFixed(0)} MiB, ${lines.toLocaleString('en')} lines of 8 KiB`;
    say(`| streamed upload (POST /v1/logs) | ${input} | ${published.toFixed(0)} s published, ${stored.toFixed(0)} s stored | trigger | ${peakRss(trigger.child.pid).toFixed(0)} MB |`);
    say(`| | | | log-lake | ${peakRss(lake.child.pid).toFixed(0)} MB |`);
    say(`| | | | log-clean | ${peakRss(clean.child.pid).toFixed(0)} MB |`);
  } finally {
    await h.stopAll();
    await pool.end();
  }
}

// --- 2. a replay of 512 KiB lines ----------------------------------------------------
{
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-limits-'));
  const lines = Number(process.env.BENCH_BIG_LINES ?? 400);
  writeFileSync(path.join(dir, 'big_lines'), Buffer.concat(Array.from({ length: lines }, (_, i) => longLine(i, 512 * 1024))));
  const pool = await h.resetEnvironment();
  try {
    const lake = await h.startFunction('log-lake');
    const clean = await h.startFunction('log-clean');
    const trigger = await h.startFunction('trigger', { LOG_DIR: dir });
    const t0 = performance.now();
    const { body } = await h.api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'big_lines' });
    await h.waitFor('the replay to be stored', async () => {
      const s = (await h.api(trigger, 'GET', `/v1/runs/${body.id}`)).body.stored;
      return s.raw_logs === lines && s.web_requests + s.log_rejects === lines;
    }, 1_800_000, 500);
    const secs = (performance.now() - t0) / 1000;
    const input = `${lines} lines of 512 KiB (${((lines * 512) / 1024).toFixed(0)} MiB)`;
    say(`| replay of long lines | ${input} | ${secs.toFixed(0)} s | log-lake | ${peakRss(lake.child.pid).toFixed(0)} MB |`);
    say(`| | | | log-clean | ${peakRss(clean.child.pid).toFixed(0)} MB |`);
    say(`| | | | trigger | ${peakRss(trigger.child.pid).toFixed(0)} MB |`);
  } finally {
    await h.stopAll();
    await pool.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

say('\nDefaults: MAX_LINE_BYTES 1 MiB, BATCH_MAX_BYTES 4 MiB (capped at max_allowed_packet / 3), PREFETCH_MAX_BYTES 256 MiB over MESSAGE_MAX_BYTES 1 MiB (prefetch 256, batches of 128).');
if (process.argv.includes('--write')) appendFileSync(path.join(h.root, 'docs', 'benchmarks.md'), `\n${report.join('\n')}\n`);
