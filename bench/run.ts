// npm run bench: end-to-end figures on this machine, against the real services.
// Not a test: it asserts nothing about speed, it measures and prints.
//   - ceilings: the broker alone on the pipeline's queues, MySQL alone through the functions' own
//     stores, and the log replay (line and batch framing) against them, with CPU seconds per process
//   - log replay throughput (file -> raw_logs + web_requests), 1 and 3 log-clean processes, per framing
//   - what the streaming aggregates cost
//   - EV readings/s through ev-analytics (unpaced run), and reading-to-SES-accepted latency (paced run)
//   - bundle sizes and cold starts (process start -> ready, median of 5)
//   - only when named in BENCH_ONLY: `variants` (what the per-line path is sensitive to, each setting
//     against the defaults in the same round) and `big` (a ~2 GB generated log: time and peak RSS)
// Uses its own database (TEST_MYSQL_URL, default sluice_test_bench) and TEST_AMQP_URL's vhost.
// Other knobs: BENCH_INPUTS (apache_logs,apache_logs_x10,apache_logs_x50), BENCH_ROUNDS (2),
// BENCH_VARIANTS, BENCH_BIG_LINES (7,400,000), BENCH_BIG_CLEANS (log-clean processes of `big`, 1),
// BENCH_OUT (write the report to a file).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

process.env.TEST_MYSQL_URL ??= 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test_bench';
const h = await import('../test/integration/harness.ts');
type FnProcess = Awaited<ReturnType<typeof h.startFunction>>;
const { ensureSesEmulator } = await import('../scripts/ses-emulator.ts');
const { EV_PARTITIONS, QUEUES } = await import('../infra/topology.ts');
const { LOGS_EXCHANGE } = await import('../shared/contracts/names.ts');

const root = h.root;
const run = (cmd: string, args: string[]) => {
  if (spawnSync(cmd, args, { cwd: root, stdio: 'inherit' }).status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`);
};
run('bash', ['scripts/services.sh']);
run(process.execPath, ['build.mjs', '--no-check']);
const ses = await ensureSesEmulator(h.SES_ENDPOINT);

// BENCH_ONLY=ceilings,logs,aggregates,ev,latency,cold runs some sections only; `variants` (what the
// per-line path is sensitive to) and `big` (a 2 GB log) run only when named.
const only = new Set((process.env.BENCH_ONLY ?? 'ceilings,logs,aggregates,ev,latency,cold').split(','));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const report: string[] = [];
const say = (line: string) => (console.log(line), report.push(line));

// Bigger inputs than apache_logs alone, for steady-state figures: the file 10 and 50 times over.
// BENCH_INPUTS=apache_logs_x10 keeps some of them.
const logDir = mkdtempSync(path.join(tmpdir(), 'sluice-bench-'));
const apache = readFileSync(path.join(h.logsDir, 'apache_logs'));
const apacheLines = apache.reduce((n, b) => n + (b === 10 ? 1 : 0), 0);
const inputs = ([['apache_logs', 1], ['apache_logs_x10', 10], ['apache_logs_x50', 50]] as const)
  .filter(([f]) => !process.env.BENCH_INPUTS || process.env.BENCH_INPUTS.split(',').includes(f))
  .map(([f, times]) => {
    writeFileSync(path.join(logDir, f), Buffer.concat(Array.from({ length: times }, () => apache)));
    return [f, apacheLines * times] as const;
  });

type Framing = 'line' | 'batch';
interface ReplayOptions {
  cleanProcesses?: number;
  cleanEnv?: Record<string, string>;
  /** Env of both consumers (log-lake and every log-clean). */
  consumerEnv?: Record<string, string>;
  triggerEnv?: Record<string, string>;
  /** The run's `framing` (POST /v1/runs). Unset: the field is not sent (the server's default). */
  framing?: Framing;
  /** Also report each process's peak RSS (VmHWM) at the end. */
  rss?: (peaks: Record<string, number>) => void;
  /** Also report the CPU seconds each process used during the run (the broker's and the database's include anything else they served meanwhile). */
  cpu?: (seconds: Record<string, number>) => void;
  dir?: string;
  timeoutMs?: number;
}

/** CPU seconds (user + system) a process has used so far; NaN when it is gone. */
const cpuSeconds = (pid: number | undefined): number => {
  try {
    // Fields after the command (which may hold spaces): state is the 3rd, utime the 14th, stime the 15th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
};
/** The first process whose command is one of `names` (the broker and the database: shared with whatever else runs). */
const pidOf = (...names: string[]): number | undefined => {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (names.includes(readFileSync(`/proc/${d}/comm`, 'utf8').trim())) return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
};
const servicePids = { rabbitmq: pidOf('beam.smp'), mariadb: pidOf('mariadbd', 'mysqld') };

/** VmHWM of a process, in MB: the kernel's high-water mark of its resident set. */
const peakRss = (pid: number | undefined) => {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

/**
 * Lines/s of a log replay, from POST /v1/runs until raw_logs and web_requests + log_rejects hold
 * every line (log-clean counts the aggregates in the transaction that stores web_requests, so
 * they are complete then too). null: the trigger refused the run's `framing` (a server from before
 * the option answers 400 to the unknown field); framing `line` then runs without the field.
 */
async function logReplay(file: string, lines: number, o: ReplayOptions = {}): Promise<number | null> {
  const pool = await h.resetEnvironment();
  try {
    const lake = await h.startFunction('log-lake', { ...o.consumerEnv });
    const cleans: FnProcess[] = [];
    for (let i = 0; i < (o.cleanProcesses ?? 1); i++) cleans.push(await h.startFunction('log-clean', { ...o.consumerEnv, ...o.cleanEnv }));
    const trigger = await h.startFunction('trigger', { LOG_DIR: o.dir ?? logDir, ...o.triggerEnv });
    const procs: Record<string, number | undefined> = { trigger: trigger.child.pid, 'log-lake': lake.child.pid, ...Object.fromEntries(cleans.map((c, i) => [cleans.length > 1 ? `log-clean ${i + 1}` : 'log-clean', c.child.pid])), ...servicePids };
    const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSeconds(pid)]));
    const t0 = performance.now();
    let res = await h.api(trigger, 'POST', '/v1/runs', { kind: 'logs', file, ...(o.framing ? { framing: o.framing } : {}) });
    if (res.status === 400 && o.framing === 'line') res = await h.api(trigger, 'POST', '/v1/runs', { kind: 'logs', file });
    if (res.status === 400 && o.framing) return null;
    if (res.status >= 300) throw new Error(`POST /v1/runs answered ${res.status}: ${JSON.stringify(res.body)}`);
    // Counting a run's rows reads all of them (gigabytes for a big log): the database only counts
    // once the run has published everything and every consumer has settled as many messages.
    const id = res.body.id as string;
    await h.waitFor('the replay to be stored', async () => {
      const [[run]] = (await pool.query('SELECT state FROM runs WHERE id = ?', [id])) as unknown as [[{ state: string }]];
      if (run.state !== 'done') return false;
      const sent = await metric(trigger, 'sluice_published_total', (l) => l.includes(`exchange="${LOGS_EXCHANGE}"`));
      if ((await settled([lake], QUEUES.logLake)) < sent || (await settled(cleans, QUEUES.logClean)) < sent) return false;
      const raw = await h.count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id]);
      const parsed = await h.count(pool, 'SELECT (SELECT COUNT(*) FROM web_requests WHERE run_id = ?) + (SELECT COUNT(*) FROM log_rejects WHERE run_id = ?)', [id, id]);
      return raw === lines && parsed === lines;
    }, o.timeoutMs ?? 900_000, 200);
    const rate = lines / ((performance.now() - t0) / 1000);
    o.cpu?.(Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSeconds(pid) - cpu0[k]!])));
    o.rss?.({ trigger: peakRss(trigger.child.pid), 'log-lake': peakRss(lake.child.pid), ...Object.fromEntries(cleans.map((c, i) => [cleans.length > 1 ? `log-clean ${i + 1}` : 'log-clean', peakRss(c.child.pid)])) });
    return rate;
  } finally {
    await h.stopAll();
    await pool.end();
  }
}

/** The sum of a counter's series whose labels pass `match`, from a function's /metrics (the trigger's on its HTTP port, behind the token). */
async function metric(fn: FnProcess, name: string, match: (labels: string) => boolean): Promise<number> {
  const url = fn.ready.port !== undefined ? `http://127.0.0.1:${fn.ready.port}/metrics` : `http://127.0.0.1:${fn.ready.health}/metrics`;
  const text = await (await fetch(url, { headers: { authorization: `Bearer ${h.TOKEN}` } })).text();
  let n = 0;
  for (const [, labels, value] of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\d+)$`, 'gm'))) if (match(labels!)) n += Number(value);
  return n;
}
/** Messages the consumers settled from `queue` (acked or dead-lettered; not those sent to retry). */
async function settled(fns: FnProcess[], queue: string): Promise<number> {
  let n = 0;
  for (const fn of fns) n += await metric(fn, 'sluice_messages_total', (l) => l.includes(`queue="${queue}"`) && !l.includes('outcome="retry"'));
  return n;
}

const fmtRate = (x: number | null | undefined) => (x == null ? 'n/a' : Math.round(x).toLocaleString('en'));
const fmtRates = (xs: (number | null)[]) => (xs.some((x) => x === null) ? 'n/a' : `${fmtRate(median(xs as number[]))} (${xs.map((r) => Math.round(r!)).join(', ')})`);
const ratio = (a: number | null, b: number | null) => (a === null || b === null ? 'n/a' : `${(a / b).toFixed(2)}x`);
const medianOrNull = (xs: (number | null)[]) => (xs.length === 0 || xs.some((x) => x === null) ? null : median(xs as number[]));

say(`# sluice benchmarks — ${new Date().toISOString().slice(0, 10)}, ${process.env.BENCH_MACHINE ?? 'this machine'}\n`);

// The ceilings, and the log replay against them. Each round measures the four in a row, on a
// fresh database and fresh queues each, so that the machine's noise falls on all of them alike.
if (only.has('ceilings')) {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
  // The per-line consumers' batch: BATCH_SIZE 500, prefetch 256 MiB over 1 MiB lines = 256, batches of half that.
  const { batchLimits } = await import('../shared/amqp/batch-policy.ts');
  const lineBatch = batchLimits({ batchSize: 500, prefetchMaxBytes: 256 * 1024 * 1024, messageMaxBytes: 1024 * 1024 }).batchSize;
  say('## Ceilings: the log replay against the broker alone and MySQL alone\n');
  say(`Broker ceiling: every line published persistent with confirms (1,000 in flight, as the trigger) to the \`logs\` exchange, which routes it to the pipeline's two quorum queues (logs.lake, logs.clean, declared and policed by the migrate step), consumed by one channel per queue (prefetch 1,000) acking every 500 with no processing. MySQL ceiling: log-lake's and log-clean's own handlers and stores (raw_logs; web_requests + log_rejects and the aggregates in one transaction), one worker thread each, batches of ${lineBatch} (the per-line consumers' batch), no broker. End to end: \`POST /v1/runs\` until every table holds every line, one log-lake and one log-clean process, default settings. Median of ${rounds} rounds, each round all columns in a row.\n`);
  say('MySQL ceiling (batch sizes): the same, in batch framing\'s sizes: messages of 1,000 lines (FRAMING_BATCH_LINES), handler calls cut at 128 messages or 4 MiB of lines (BATCH_MAX_BYTES), as the consumers cut them.\n');
  say('| input | broker ceiling | MySQL ceiling | line framing | line / broker | MySQL ceiling (batch sizes) | batch framing | batch / line | batch / broker | batch / MySQL (batch sizes) |\n|---|---|---|---|---|---|---|---|---|---|');
  const { brokerCeiling, mysqlCeiling, fileLines } = await import('./ceilings.ts');
  const rows: string[] = [];
  const cpuRows: string[] = [];
  for (const [file, lines] of inputs.filter(([f]) => f !== 'apache_logs')) {
    const all = await fileLines(path.join(logDir, file));
    const broker: number[] = [];
    const mysql: number[] = [];
    const mysqlBatch: number[] = [];
    const line: (number | null)[] = [];
    const batch: (number | null)[] = [];
    // CPU seconds per 100,000 lines, by process, for each measurement (the last round's).
    const cpu: Record<string, Record<string, number>> = {};
    const per100k = (secs: Record<string, number>) => Object.fromEntries(Object.entries(secs).map(([k, v]) => [k, (v * 100_000) / lines]));
    /** The bench process's own CPU (the ceilings' publisher, consumers and writer threads) and the services'. */
    const measured = async (what: string, fn: () => Promise<number>) => {
      const own0 = process.cpuUsage();
      const svc0 = Object.fromEntries(Object.entries(servicePids).map(([k, pid]) => [k, cpuSeconds(pid)]));
      const rate = await fn();
      const own = process.cpuUsage(own0);
      cpu[what] = per100k({ bench: (own.user + own.system) / 1e6, ...Object.fromEntries(Object.entries(servicePids).map(([k, pid]) => [k, cpuSeconds(pid) - svc0[k]!])) });
      return rate;
    };
    for (let r = 0; r < rounds; r++) {
      await (await h.resetEnvironment()).end();
      broker.push(await measured('broker ceiling', () => brokerCeiling(h.AMQP_URL, all)));
      await (await h.resetEnvironment()).end();
      mysql.push(await measured('MySQL ceiling', () => mysqlCeiling(h.MYSQL_URL, path.join(logDir, file), { batch: lineBatch })));
      await (await h.resetEnvironment()).end();
      mysqlBatch.push(await measured('MySQL ceiling (batch sizes)', () => mysqlCeiling(h.MYSQL_URL, path.join(logDir, file), { batch: lineBatch, linesPerMessage: 1_000, batchMaxBytes: 4 * 1024 * 1024 })));
      line.push(await logReplay(file, lines, { framing: 'line', cpu: (c) => (cpu['line framing'] = per100k(c)) }));
      batch.push(await logReplay(file, lines, { framing: 'batch', cpu: (c) => (cpu['batch framing'] = per100k(c)) }));
      console.log(`  round ${r + 1} ${file}: broker ${fmtRate(broker.at(-1))}, mysql ${fmtRate(mysql.at(-1))}, mysql (batch sizes) ${fmtRate(mysqlBatch.at(-1))}, line ${fmtRate(line.at(-1))}, batch ${fmtRate(batch.at(-1))}`);
    }
    const [b, l, mb, x] = [median(broker), medianOrNull(line), median(mysqlBatch), medianOrNull(batch)];
    rows.push(`| ${file} (${lines.toLocaleString('en')} lines) | ${fmtRates(broker)} | ${fmtRates(mysql)} | ${fmtRates(line)} | ${ratio(l, b)} | ${fmtRates(mysqlBatch)} | ${fmtRates(batch)} | ${ratio(x, l)} | ${ratio(x, b)} | ${ratio(x, mb)} |`);
    const procs = ['bench', 'trigger', 'log-lake', 'log-clean', 'rabbitmq', 'mariadb'];
    cpuRows.push(...Object.entries(cpu).map(([what, c]) => `| ${file} | ${what} | ${procs.map((p) => (c[p] === undefined ? '–' : c[p]!.toFixed(1))).join(' | ')} | ${Object.values(c).reduce((a, v) => a + (Number.isNaN(v) ? 0 : v), 0).toFixed(1)} |`));
  }
  for (const r of rows) say(r);
  say('\nCPU seconds per 100,000 lines, by process, in the last round (the broker\'s and the database\'s include whatever else they served meanwhile; `bench` is the ceilings\' own publisher, consumers and writer threads). On two cores, 2 CPU-seconds a second is all there is:\n');
  say(`| input | measurement | ${['bench', 'trigger', 'log-lake', 'log-clean', 'rabbitmq', 'mariadb'].join(' | ')} | total |\n|---|---|---|---|---|---|---|---|---|`);
  for (const r of cpuRows) say(r);
  say('');
}

if (only.has('logs')) {
  say('## Log replay, file to both tables (raw_logs and web_requests + log_rejects)\n');
  say('| input | log-clean processes | framing | lines/s (median of 3) |\n|---|---|---|---|');
  for (const [file, lines] of inputs.filter(([f]) => f !== 'apache_logs_x50')) {
    for (const n of [1, 3]) {
      for (const framing of ['line', 'batch'] as const) {
        const rates: (number | null)[] = [];
        for (let i = 0; i < 3; i++) {
          rates.push(await logReplay(file, lines, { cleanProcesses: n, framing }));
          if (rates.at(-1) === null) break;
        }
        say(`| ${file} (${lines.toLocaleString('en')} lines) | ${n} | ${framing} | ${fmtRates(rates)} |`);
      }
    }
  }
}

// Where the per-line path loses against the broker: the same replay under other settings, each
// against the defaults in the same round (rounds alternated), on the first input of BENCH_INPUTS
// past apache_logs. BENCH_VARIANTS=name,name picks some. Broker-only variants run the ceiling.
if (only.has('variants')) {
  const { brokerCeiling, mysqlCeiling, fileLines } = await import('./ceilings.ts');
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
  const [file, lines] = inputs.find(([f]) => f !== 'apache_logs') ?? inputs[0]!;
  const all = await fileLines(path.join(logDir, file));
  const MiB = 1024 * 1024;
  const replay = (o: ReplayOptions) => () => logReplay(file, lines, { framing: 'line', ...o });
  const ceiling = (o: Parameters<typeof brokerCeiling>[2]) => async () => {
    await (await h.resetEnvironment()).end();
    return brokerCeiling(h.AMQP_URL, all, o);
  };
  const mysqlAt = (batch: number) => async () => {
    await (await h.resetEnvironment()).end();
    return mysqlCeiling(h.MYSQL_URL, path.join(logDir, file), { batch });
  };
  const variants: { name: string; what: string; base: () => Promise<number | null>; variant: () => Promise<number | null> }[] = [
    { name: 'broker-window', what: 'broker alone: 4,000 unconfirmed in flight vs 1,000', base: ceiling({}), variant: ceiling({ window: 4_000 }) },
    { name: 'broker-prefetch', what: 'broker alone: prefetch 256, ack every 128 (the consumers\' figures) vs prefetch 1,000, ack every 500', base: ceiling({}), variant: ceiling({ prefetch: 256, ackEvery: 128 }) },
    { name: 'broker-ack-each', what: 'broker alone: ack each message vs every 500', base: ceiling({}), variant: ceiling({ ackEvery: 1 }) },
    { name: 'broker-one-queue', what: 'broker alone: one queue (logs.lake) vs two', base: ceiling({}), variant: ceiling({ queues: ['logs.lake'] }) },
    { name: 'mysql-batch-500', what: 'MySQL alone: batches of 500 vs 128 (the insert size the prefetch allows)', base: mysqlAt(128), variant: mysqlAt(500) },
    { name: 'mysql-batch-256', what: 'MySQL alone: batches of 256 vs 128', base: mysqlAt(128), variant: mysqlAt(256) },
    { name: 'prefetch-1000', what: 'end to end: consumers\' prefetch 1,000, batches of 500 (PREFETCH_MAX_BYTES 1 GiB) vs 256 / 128', base: replay({}), variant: replay({ consumerEnv: { PREFETCH_MAX_BYTES: String(1024 * MiB) } }) },
    { name: 'prefetch-512', what: 'end to end: consumers\' prefetch 512, batches of 256 (PREFETCH_MAX_BYTES 512 MiB) vs 256 / 128', base: replay({}), variant: replay({ consumerEnv: { PREFETCH_MAX_BYTES: String(512 * MiB) } }) },
    { name: 'trigger-window-2000', what: 'end to end: the trigger keeps 2,000 unconfirmed in flight (RUN_MAX_IN_FLIGHT) vs 1,000', base: replay({}), variant: replay({ triggerEnv: { RUN_MAX_IN_FLIGHT: '2000' } }) },
    { name: 'trigger-window-300', what: 'end to end: the trigger keeps 300 unconfirmed in flight (RUN_MAX_IN_FLIGHT) vs 1,000', base: replay({}), variant: replay({ triggerEnv: { RUN_MAX_IN_FLIGHT: '300' } }) },
    { name: 'batch-64', what: 'end to end: batches of 64 (BATCH_SIZE 64: prefetch 128) vs 128', base: replay({}), variant: replay({ consumerEnv: { BATCH_SIZE: '64' } }) },
    { name: 'clean-3', what: 'end to end: three log-clean processes vs one', base: replay({}), variant: replay({ cleanProcesses: 3 }) },
    { name: 'no-aggregates', what: 'end to end: log-clean without the aggregates (AGGREGATES=false) vs with', base: replay({}), variant: replay({ cleanEnv: { AGGREGATES: 'false' } }) },
  ];
  const picked = process.env.BENCH_VARIANTS ? variants.filter((v) => process.env.BENCH_VARIANTS!.split(',').includes(v.name)) : variants;
  say(`## What the per-line path is sensitive to: ${file} (${lines.toLocaleString('en')} lines), line framing\n`);
  say('Each variant against the defaults measured in the same round, rounds alternated (base, variant, base, variant...).\n');
  say('| variant | base, lines/s | variant, lines/s | variant / base (median) |\n|---|---|---|---|');
  for (const v of picked) {
    const base: number[] = [];
    const vary: number[] = [];
    for (let r = 0; r < rounds; r++) {
      base.push((await v.base())!);
      vary.push((await v.variant())!);
      console.log(`  ${v.name} round ${r + 1}: ${Math.round(base.at(-1)!)} vs ${Math.round(vary.at(-1)!)}`);
    }
    say(`| ${v.what} | ${fmtRates(base)} | ${fmtRates(vary)} | ${(median(vary) / median(base)).toFixed(2)} (${vary.map((x, i) => (x / base[i]!).toFixed(2)).join(', ')}) |`);
  }
  say('');
}

// A generated access log of about 2 GB (BENCH_BIG_LINES lines of scripts/sample-log.ts), replayed in
// batch framing when the server has it (line framing otherwise): time, and each process's peak RSS.
if (only.has('big')) {
  const bigLines = Number(process.env.BENCH_BIG_LINES ?? 7_400_000);
  const bigCleans = Number(process.env.BENCH_BIG_CLEANS ?? 1);
  const file = 'big_access.log';
  run(process.execPath, ['scripts/sample-log.ts', '--out', path.join(logDir, file), '--lines', String(bigLines), '--seed', '11']);
  const bytes = statSync(path.join(logDir, file)).size;
  say(`## A generated log of ${(bytes / 1e9).toFixed(2)} GB (${bigLines.toLocaleString('en')} lines, scripts/sample-log.ts), file to every table, ${bigCleans} log-clean process${bigCleans > 1 ? 'es' : ''}\n`);
  say('| framing | time | lines/s | process | peak RSS (VmHWM) |\n|---|---|---|---|---|');
  for (const framing of ['batch', 'line'] as const) {
    let peaks: Record<string, number> = {};
    const rate = await logReplay(file, bigLines, { framing, cleanProcesses: bigCleans, rss: (p) => (peaks = p), timeoutMs: 4 * 3600_000 });
    if (rate === null) {
      say(`| ${framing} | n/a | n/a | | |`);
      continue;
    }
    const rows = Object.entries(peaks);
    say(`| ${framing} | ${(bigLines / rate / 60).toFixed(1)} min | ${fmtRate(rate)} | ${rows[0]![0]} | ${rows[0]![1].toFixed(0)} MB |`);
    for (const [name, mb] of rows.slice(1)) say(`| | | | ${name} | ${mb.toFixed(0)} MB |`);
    break; // the line framing only when the batch framing is not there yet
  }
  say('');
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
      off.push((await logReplay('apache_logs_x10', 100_000, { cleanProcesses: n, cleanEnv: { AGGREGATES: 'false' } }))!);
      on.push((await logReplay('apache_logs_x10', 100_000, { cleanProcesses: n, cleanEnv: { AGGREGATES: 'true' } }))!);
    }
    const fmt = (xs: number[]) => `${Math.round(median(xs)).toLocaleString('en')} (${xs.map((r) => Math.round(r)).join(', ')})`;
    say(`| ${n} | ${fmt(off)} | ${fmt(on)} | ${(median(on) / median(off)).toFixed(2)} |`);
  }
}

async function evStack<T>(fn: (trigger: Awaited<ReturnType<typeof h.startFunction>>, pool: Awaited<ReturnType<typeof h.resetEnvironment>>) => Promise<T>, env: Record<string, string> = {}): Promise<T> {
  const pool = await h.resetEnvironment();
  try {
    await h.startFunction('ev-analytics', env);
    await h.startFunction('ev-store', env);
    await h.startFunction('notify-email', env);
    return await fn(await h.startFunction('trigger'), pool);
  } finally {
    await h.stopAll();
    await pool.end();
  }
}

const finalClocks = (pool: Awaited<ReturnType<typeof h.resetEnvironment>>, runId: string) =>
  h.count(pool, "SELECT COUNT(*) FROM ev_analytics_clock WHERE run_id = ? AND JSON_EXTRACT(clock, '$.final') = true", [runId]);

// EV settings compared in the same run (BENCH_EV_VARIANTS=defaults,... picks some): the consumers'
// batch linger. A consumer runs a batch at once when idle and takes what queued meanwhile when
// busy; BATCH_WAIT_MS only delays the first message after a quiet spell, to gather a few more.
const evVariants = ([
  ['defaults', {}],
  ['BATCH_WAIT_MS=0', { BATCH_WAIT_MS: '0' }],
  ['BATCH_WAIT_MS=20', { BATCH_WAIT_MS: '20' }],
] as [string, Record<string, string>][]).filter(([name]) => (process.env.BENCH_EV_VARIANTS ?? 'defaults').split(',').includes(name));

if (only.has('ev')) {
say('\n## EV readings through ev-analytics (unpaced run: 400 sessions, faultRate 0.1)\n');
say('| settings (ev-analytics, ev-store, notify-email) | messages | seconds | readings/s |\n|---|---|---|---|');
for (const [name, env] of evVariants) {
  const evRate = await evStack(async (trigger, pool) => {
    const t0 = performance.now();
    const { body } = await h.api(trigger, 'POST', '/v1/runs', { kind: 'ev', sessions: 400, seed: 1, speed: 1e9, faultRate: 0.1 });
    await h.waitFor('the analytics to pass the final clock', async () => (await finalClocks(pool, body.id)) === EV_PARTITIONS, 900_000, 100);
    const seconds = (performance.now() - t0) / 1000;
    const run = (await h.api(trigger, 'GET', `/v1/runs/${body.id}`)).body;
    const readings = run.published; // readings + clock ticks, all through the analytics
    return { readings, seconds };
  }, env);
  say(`| ${name} | ${evRate.readings.toLocaleString('en')} | ${evRate.seconds.toFixed(1)} | **${Math.round(evRate.readings / evRate.seconds).toLocaleString('en')}** |`);
}
say('\nMessages are readings and clock ticks, all through the analytics; publish, analytics and state persistence included.\n');
}

if (only.has('latency')) {
// Paces (simulated seconds per real second) of the same 100-session run: BENCH_EV_SPEEDS. At
// 3600 the run offers more readings per second at its peak than the broker takes on this machine
// (the unpaced figure above), so latency there is mostly backlog; 1200 stays below it.
const speeds = (process.env.BENCH_EV_SPEEDS ?? '1200,3600').split(',').map(Number);
say(`## Latency, reading published -> email accepted by SES (paced runs: 100 sessions at speed ${speeds.join(' and ')}, owner emails)\n`);
say('From the Finishing reading\'s publish time (its AMQP timestamp, kept in ev_readings.published_at) to SES accepting the mail (email_outbox.sent_at). Each stage\'s own p50 / p99 below the total. The first stage is split by a tap (a queue of the bench\'s own on the readings and events): when the broker handed the reading out (the trigger\'s publish window included), and when ev-analytics published its event.\n');
// A tap on the events (a queue of the bench's own, as the administrator): when ev-analytics
// published each event (its AMQP timestamp), to split the first stage in two.
const { default: amqp } = await import('amqplib');
const tapConnection = await amqp.connect(h.AMQP_URL);
const tap = await tapConnection.createChannel();
say('| speed | settings | messages/s (run average) | emails | total p50 | total p99 | max | reading -> on the broker (trigger window, publish) | -> event published (queue, ev-analytics batch, detect) | event -> outbox row (confirm, notify-email batch, insert) | outbox row -> claimed (dispatcher) | claimed -> SES accepted |\n|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const speed of speeds) for (const [name, env] of evVariants) {
  const eventPublishedAt = new Map<string, number>();
  // Finishing readings by session: when the tap got them.
  const finishingAt = new Map<string, number>();
  let offered = 0;
  const latencies = await evStack(async (trigger, pool) => {
    const { queue } = await tap.assertQueue('', { exclusive: true, autoDelete: true });
    await tap.bindQueue(queue, 'ev', 'ev.event.#');
    await tap.bindQueue(queue, 'ev', 'ev.reading.#');
    const { consumerTag } = await tap.consume(queue, (m) => {
      if (!m) return;
      if (m.fields.routingKey.startsWith('ev.event.')) {
        if (typeof m.properties.timestamp === 'number') eventPublishedAt.set(String(m.properties.messageId), m.properties.timestamp);
      } else if (m.content.includes('"Finishing"')) {
        finishingAt.set((JSON.parse(m.content.toString()) as { sessionId: string }).sessionId, Date.now());
      }
    }, { noAck: true });
    const t0 = performance.now();
    const { body } = await h.api(trigger, 'POST', '/v1/runs', { kind: 'ev', sessions: 100, seed: 2, speed, faultRate: 0 });
    await h.waitFor('the run to finish', async () => (await h.api(trigger, 'GET', `/v1/runs/${body.id}`)).body.state === 'done', 900_000, 100);
    const run = (await h.api(trigger, 'GET', `/v1/runs/${body.id}`)).body;
    offered = run.published / ((performance.now() - t0) / 1000);
    await h.waitFor('every completion mailed', async () => (await h.count(pool, "SELECT COUNT(*) FROM email_outbox WHERE run_id = ? AND role = 'owner' AND status = 'sent'", [body.id])) === 100, 900_000, 500);
    await tap.cancel(consumerTag);
    await tap.deleteQueue(queue);
    const [rows] = (await pool.query(
      `SELECT o.event_id, e.session_id, o.sent_at, o.claimed_at, o.created_at, r.published_at FROM email_outbox o JOIN ev_events e ON e.event_id = o.event_id
       JOIN ev_readings r ON r.session_id = e.session_id AND r.seq = JSON_EXTRACT(e.details, '$.seq')
       WHERE o.run_id = ? AND o.role = 'owner'`,
      [body.id],
    )) as [{ event_id: string; session_id: string; sent_at: Date; claimed_at: Date; created_at: Date; published_at: Date }[], unknown];
    return rows.map((r) => ({ ...r, event_published_at: eventPublishedAt.get(r.event_id) ?? NaN, on_broker_at: finishingAt.get(r.session_id) ?? NaN }));
  }, env);
  const stage = (f: (r: (typeof latencies)[number]) => number) => {
    const xs = latencies.map(f).filter(Number.isFinite);
    if (xs.length === 0) return 'n/a';
    return `${Math.round(percentile(xs, 50))} / ${Math.round(percentile(xs, 99))} ms`;
  };
  const total = latencies.map((r) => r.sent_at.getTime() - r.published_at.getTime());
  say(`| ${speed} | ${name} | ${Math.round(offered).toLocaleString('en')} | ${latencies.length} | **${Math.round(percentile(total, 50))} ms** | **${Math.round(percentile(total, 99))} ms** | ${Math.round(Math.max(...total))} ms | ${stage((r) => r.on_broker_at - r.published_at.getTime())} | ${stage((r) => r.event_published_at - r.on_broker_at)} | ${stage((r) => r.created_at.getTime() - r.event_published_at)} | ${stage((r) => r.claimed_at.getTime() - r.created_at.getTime())} | ${stage((r) => r.sent_at.getTime() - r.claimed_at.getTime())} |`);
}
await tapConnection.close();
say('\nOperator alerts wait GROUP_WINDOW_S=30 s on purpose and are not in these figures.\n');
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
