// The chaos scenario (issue 10): three workloads at once, a log replay, a follow run receiving
// appends and an EV run with faults, on real RabbitMQ, MariaDB and the SES emulator, the
// functions run as processes from their bundles (harness.ts) and restarted by a supervisor as
// k8s or compose would; meanwhile faults land at seeded random moments: SIGKILLs of every queue
// function, the trigger SIGKILLed, RabbitMQ's app stopped and started, MariaDB stopped for a while.
// Once everything is quiet, every table is checked exactly against the inputs and the simulator's
// truth; the result says what differs, and a table says when each fault landed and how long the
// system took to recover from it.
//
// Used by scripts/chaos.ts (npm run chaos, the full variant) and chaos.test.ts (a short one).
// It stops RabbitMQ and MariaDB: run it alone (under an exclusive lock where others share them).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { FAULT_TYPES, readingProblems } from '../../shared/contracts/ev.ts';
import { loadCatalog } from '../../functions/trigger/ev-catalog.ts';
import { mulberry32, simulateRun } from '../../functions/trigger/ev-simulator.ts';
import { parseAccessLine } from '../../shared/weblog/parse.ts';
import { EV_PARTITIONS, deadLetterQueue, retryQueue, topology } from '../../infra/topology.ts';
import { DEFAULT_RULES, parseRules } from '../../functions/notify-email/rules.ts';
import { ensureSesEmulator } from '../../scripts/ses-emulator.ts';
import { AMQP_URL, MYSQL_URL, SES_ENDPOINT, api, count, logsDir, resetEnvironment, root, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

/** The functions that consume queues (log-alerts: periodic, no queue, killed all the same). */
export const QUEUE_FUNCTIONS = ['log-lake', 'log-clean', 'ev-analytics', 'ev-store', 'notify-email', 'log-alerts'] as const;
type FnName = (typeof QUEUE_FUNCTIONS)[number] | 'trigger';

export interface ChaosOptions {
  seed: number;
  /** The replay: apache_logs (10,000 lines) this many times over. */
  replayCopies: number;
  /** Lines appended to the followed file over the fault window, in bursts. */
  followLines: number;
  evSessions: number;
  evFaultRate: number;
  /** Faults land at random moments in [3 s, windowS] after the workloads start; the follow appends last as long. */
  windowS: number;
  /** SIGKILLs of each queue function. */
  killsPerFunction: number;
  triggerKills: number;
  brokerRestarts: number;
  dbStops: number;
  dbStopS: number;
  /** Processes per function (default 1). */
  scale: Partial<Record<FnName, number>>;
  /** Delay before the supervisor restarts a process that died. */
  restartDelayMs: number;
  /** How long quiescence may take after the window. */
  settleTimeoutMs: number;
  log: (line: string) => void;
}

export interface FaultRecord {
  fault: string;
  target: string;
  /** Seconds after the workloads started. */
  atS: number;
  /** How long the fault was held (MariaDB down, RabbitMQ stopped); 0 for a kill. */
  heldS: number;
  /** Seconds from the fault's start to recovery (see RECOVERY below); null: never recovered. */
  recoveredS: number | null;
  note: string;
}

export interface ChaosResult {
  seed: number;
  faults: FaultRecord[];
  mismatches: string[];
  facts: string[];
  table: string;
}

export const RECOVERY = [
  'recovered after = seconds from the fault\'s start until:',
  '  SIGKILL of a queue function: its replacement (restarted by the supervisor after the restart delay) is ready and',
  '    each of its queues has a consumer and is moving (the function\'s acks grow, or nothing is waiting in the queue);',
  '    log-alerts (no queue): its replacement is ready',
  '  SIGKILL of the trigger: its replacement is ready and every run that was running has published more (or ended; the follow: or caught up with its file)',
  '  RabbitMQ stop_app/start_app: every queue has a consumer again and the running runs publish again (as for the trigger)',
  '  MariaDB stopped: it answers again and the consumers write rows again (or nothing is left to write)',
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round1 = (s: number) => Math.round(s * 10) / 10;

// --- processes, supervised ----------------------------------------------------------------

class Replica {
  proc: FnProcess | undefined;
  /** Set while chaos has killed it and the supervisor has not brought it back yet. */
  down = true;
  private expectKill = false;
  readonly exits: string[] = [];
  /** Every incarnation's log lines (the last 2,000 of each), for a failure's post-mortem. */
  readonly history: string[][] = [];
  private stopping = false;
  private readyWaiters: (() => void)[] = [];
  readonly fn: FnName;
  readonly index: number;
  private readonly env: Record<string, string>;
  private readonly sup: Supervisor;
  constructor(fn: FnName, index: number, env: Record<string, string>, sup: Supervisor) {
    this.fn = fn;
    this.index = index;
    this.env = env;
    this.sup = sup;
  }

  get label(): string {
    return this.sup.scaleOf(this.fn) > 1 ? `${this.fn}#${this.index + 1}` : this.fn;
  }

  async start(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (this.stopping) return;
      try {
        const proc = await startFunction(this.fn, this.env);
        this.proc = proc;
        this.history.push(proc.logs);
        this.down = false;
        for (const w of this.readyWaiters.splice(0)) w();
        proc.child.once('exit', (code, signal) => {
          this.down = true;
          if (this.stopping) return;
          if (!this.expectKill) {
            const why = `${this.label} exited on its own (code ${code}, signal ${signal}); last lines: ${proc.logs.slice(-3).join(' | ')}`;
            this.exits.push(why);
            this.sup.unexpected(this, why);
          }
          this.expectKill = false;
          setTimeout(() => void this.start(), this.sup.restartDelayMs);
        });
        return;
      } catch (err) {
        if (attempt % 5 === 0) this.sup.log(`${this.label} did not start (attempt ${attempt}): ${String(err).split('\n')[0]}`);
        await sleep(1_000);
      }
    }
  }

  /** SIGKILL; the supervisor restarts it after its delay. */
  killHard(): void {
    if (!this.proc || this.down) throw new Error(`${this.label} is not running`);
    this.expectKill = true;
    this.proc.child.kill('SIGKILL');
  }

  whenUp(): Promise<void> {
    return this.down ? new Promise((r) => this.readyWaiters.push(r)) : Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.proc?.kill('SIGTERM');
  }
}

class Supervisor {
  readonly replicas: Replica[] = [];
  readonly unexpectedExits: { label: string; atS: number; why: string }[] = [];
  readonly restartDelayMs: number;
  readonly log: (s: string) => void;
  private readonly t0: () => number;
  private readonly scale: Partial<Record<FnName, number>>;
  constructor(restartDelayMs: number, log: (s: string) => void, t0: () => number, scale: Partial<Record<FnName, number>>) {
    this.restartDelayMs = restartDelayMs;
    this.log = log;
    this.t0 = t0;
    this.scale = scale;
  }
  scaleOf(fn: FnName): number {
    return this.scale[fn] ?? 1;
  }
  add(fn: FnName, env: Record<string, string>): void {
    for (let i = 0; i < this.scaleOf(fn); i++) this.replicas.push(new Replica(fn, i, env, this));
  }
  of(fn: FnName): Replica[] {
    return this.replicas.filter((r) => r.fn === fn);
  }
  get trigger(): FnProcess {
    const t = this.of('trigger')[0]!;
    if (!t.proc || t.down) throw new Error('the trigger is down');
    return t.proc;
  }
  unexpected(r: Replica, why: string): void {
    this.unexpectedExits.push({ label: r.label, atS: round1(this.t0()), why });
    this.log(`!! ${why}`);
  }
  async startAll(): Promise<void> {
    for (const r of this.replicas) await r.start();
  }
  async stopAll(): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.stop()));
  }
}

/** Messages a process acked, over all its queues, from its /metrics. */
async function ackedBy(proc: FnProcess): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${proc.ready.health}/metrics`, { signal: AbortSignal.timeout(2_000) })).text();
  let n = 0;
  for (const m of text.matchAll(/^sluice_messages_total\{[^}]*outcome="ack"[^}]*\} (\d+)/gm)) n += Number(m[1]);
  return n;
}

// --- the broker and the database, from the outside ------------------------------------------

/** Queue depths and consumers over an administrator connection that is reopened after a broker restart. */
class QueueWatch {
  private conn: ChannelModel | undefined;
  private ch: Channel | undefined;
  private async channel(): Promise<Channel> {
    if (this.ch) return this.ch;
    const conn = await amqp.connect(AMQP_URL);
    conn.on('error', () => {});
    conn.on('close', () => ((this.conn = undefined), (this.ch = undefined)));
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    ch.on('close', () => (this.ch = undefined));
    this.conn = conn;
    this.ch = ch;
    return ch;
  }
  async check(queue: string): Promise<{ messages: number; consumers: number }> {
    const q = await (await this.channel()).checkQueue(queue);
    return { messages: q.messageCount, consumers: q.consumerCount };
  }
  /** Every message of a queue, left in it (read unacked, then the channel is closed). */
  async peekAll(queue: string): Promise<amqp.GetMessage[]> {
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      const out: amqp.GetMessage[] = [];
      for (let m = await ch.get(queue, { noAck: false }); m; m = await ch.get(queue, { noAck: false })) out.push(m);
      return out;
    } finally {
      await conn.close().catch(() => {});
    }
  }
  async close(): Promise<void> {
    await this.conn?.close().catch(() => {});
  }
}

const mainQueues = topology.queues.map((q) => q.name);

const db = new URL(MYSQL_URL);
const dbAnswers = () =>
  new Promise<boolean>((resolve) => {
    const socket = connect(Number(db.port || 3306), db.hostname);
    socket.setTimeout(1_000, () => (socket.destroy(), resolve(false)));
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
// Asynchronous: the workloads, the supervisor and the recovery probes go on meanwhile.
const run = promisify(execFile);
const startServices = () => run('bash', ['scripts/services.sh'], { cwd: root, timeout: 180_000 });
const rabbitmqctl = (...args: string[]) => run('rabbitmqctl', args, { timeout: 120_000 });

// --- inputs and what they must give --------------------------------------------------------

function splitLines(buf: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (let nl = buf.indexOf(10); nl !== -1; nl = buf.indexOf(10, start)) lines.push(buf.subarray(start, nl)), (start = nl + 1);
  if (start < buf.length) lines.push(buf.subarray(start));
  return lines;
}

interface LogTruth {
  parsed: number;
  rejects: number[];
  bytes: number;
  status: number[];
  minutes: Map<number, number>;
  visitorsByDay: Map<string, number>;
  withPath: number;
}

/** What a source's lines must add up to, worked out here from the lines themselves. */
function logTruth(lines: string[], firstLineNo = 1): LogTruth {
  const t: LogTruth = { parsed: 0, rejects: [], bytes: 0, status: [0, 0, 0, 0, 0], minutes: new Map(), visitorsByDay: new Map(), withPath: 0 };
  const visitors = new Map<string, Set<string>>();
  lines.forEach((line, i) => {
    const p = parseAccessLine(line);
    if (!p.ok) return void t.rejects.push(firstLineNo + i);
    const r = p.value;
    t.parsed++;
    t.bytes += r.bytes ?? 0;
    t.status[Math.floor(r.status / 100) - 1]!++;
    const minute = Math.floor(r.ts.getTime() / 60_000) * 60_000;
    t.minutes.set(minute, (t.minutes.get(minute) ?? 0) + 1);
    if (r.path !== null) t.withPath++;
    if (r.status >= 400 && r.status < 500) return;
    const day = new Date(r.ts.getTime() + r.tzOffsetMin * 60_000).toISOString().slice(0, 10);
    if (!visitors.has(day)) visitors.set(day, new Set());
    visitors.get(day)!.add(`${r.clientIp}\0${r.userAgent ?? '-'}`);
  });
  for (const [day, s] of visitors) t.visitorsByDay.set(day, s.size);
  return t;
}

/** Appends unique lines to the followed file in bursts (every 97th malformed), remembering each one's offset. */
class FollowWriter {
  readonly written: { line: string; offset: number }[] = [];
  private offset = 0;
  readonly file: string;
  constructor(file: string) {
    this.file = file;
    writeFileSync(file, '');
  }
  append(n: number): void {
    let text = '';
    for (let i = 0; i < n; i++) {
      const k = this.written.length + 1;
      const min = String(Math.floor(k / 120) % 60).padStart(2, '0');
      const sec = String(k % 60).padStart(2, '0');
      const line =
        k % 97 === 0
          ? `not an access line ${k}`
          : `10.7.${(k >> 8) & 255}.${k & 255} - - [11/Oct/2024:09:${min}:${sec} +0200] "GET /chaos/${k % 50}?k=${k} HTTP/1.1" ${k % 41 === 0 ? 503 : 200} ${k} "-" "chaos/${k % 5}"`;
      this.written.push({ line, offset: this.offset });
      this.offset += Buffer.byteLength(line) + 1;
      text += `${line}\n`;
    }
    appendFileSync(this.file, text);
  }
}

// --- the scenario ---------------------------------------------------------------------------

interface PlannedFault {
  kind: 'kill' | 'broker' | 'db';
  fn?: FnName;
  replica?: number;
  atS: number;
}

export function planFaults(o: Pick<ChaosOptions, 'seed' | 'windowS' | 'killsPerFunction' | 'triggerKills' | 'brokerRestarts' | 'dbStops' | 'scale'>): PlannedFault[] {
  const rnd = mulberry32(o.seed);
  const at = () => round1(3 + rnd() * (o.windowS - 3));
  const out: PlannedFault[] = [];
  for (const fn of QUEUE_FUNCTIONS) for (let i = 0; i < o.killsPerFunction; i++) out.push({ kind: 'kill', fn, replica: Math.floor(rnd() * (o.scale[fn] ?? 1)), atS: at() });
  for (let i = 0; i < o.triggerKills; i++) out.push({ kind: 'kill', fn: 'trigger', replica: 0, atS: at() });
  for (let i = 0; i < o.brokerRestarts; i++) out.push({ kind: 'broker', atS: at() });
  for (let i = 0; i < o.dbStops; i++) out.push({ kind: 'db', atS: at() });
  return out.sort((a, b) => a.atS - b.atS);
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log;
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-chaos-'));
  const tag = o.seed.toString(36);
  const REPLAY_SOURCE = `chaos-replay-${tag}`;
  const FOLLOW_SOURCE = `chaos-follow-${tag}`;
  const OPERATOR = `chaos-ops-${tag}@sluice.test`;
  let t0 = performance.now();
  const now = () => (performance.now() - t0) / 1000;
  const sup = new Supervisor(o.restartDelayMs, (s) => log(`[${now().toFixed(1)} s] ${s}`), now, o.scale);
  const watch = new QueueWatch();
  const ses = await ensureSesEmulator(SES_ENDPOINT);
  const pool: Pool = await resetEnvironment();
  const mismatches: string[] = [];
  const facts: string[] = [];
  const faults: FaultRecord[] = [];
  let dbDown = false;
  let brokerDown = false;
  try {
    // Inputs.
    const apache = readFileSync(path.join(logsDir, 'apache_logs'));
    const replay = Buffer.concat(Array.from({ length: o.replayCopies }, () => apache));
    writeFileSync(path.join(dir, 'replay.log'), replay);
    const replayLines = splitLines(replay);
    const follow = new FollowWriter(path.join(dir, 'follow.log'));
    follow.append(50);

    // Processes.
    const FN_ENV: Record<FnName, Record<string, string>> = {
      'log-lake': {},
      'log-clean': {},
      'ev-analytics': { REBALANCE_EVERY_MS: '500' },
      'ev-store': {},
      'notify-email': { GROUP_WINDOW_S: '1', SES_MAX_PER_SECOND: '300', OUTBOX_POLL_MS: '100', ALERT_EMAIL: OPERATOR },
      'log-alerts': { ALERT_SETTLE_S: '2', ALERT_POLL_MS: '250', ALERT_SLACK_S: '5' },
      trigger: { LOG_DIR: dir, RUN_STALE_AFTER_S: '3' },
    };
    for (const fn of [...QUEUE_FUNCTIONS, 'trigger'] as const) sup.add(fn, FN_ENV[fn]);
    await sup.startAll();
    log(`processes: ${sup.replicas.map((r) => r.label).join(', ')}`);

    // Pace the EV run so that it publishes over the fault window.
    const catalog = loadCatalog();
    const startTime = new Date('2025-03-01T08:00:00Z');
    let firstMs = Infinity;
    let lastMs = -Infinity;
    for (const item of simulateRun({ runId: 'pacing', sessions: o.evSessions, seed: o.seed, sampleIntervalS: 30, faultRate: o.evFaultRate, startTime, catalog })) {
      if (item.kind !== 'reading') continue;
      const ms = Date.parse(item.reading.timestamp);
      firstMs = Math.min(firstMs, ms);
      lastMs = Math.max(lastMs, ms);
    }
    const speed = Math.max(1, Math.round((lastMs - firstMs) / 1000 / (o.windowS * 0.9)));

    // Workloads.
    t0 = performance.now();
    const start = async (body: Record<string, unknown>) => {
      const res = await api(sup.trigger, 'POST', '/v1/runs', body);
      if (res.status !== 202) throw new Error(`POST /v1/runs ${JSON.stringify(body)}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.id as string;
    };
    const followRun = await start({ kind: 'logs', file: 'follow.log', follow: true, source: FOLLOW_SOURCE });
    const evRun = await start({ kind: 'ev', sessions: o.evSessions, seed: o.seed, faultRate: o.evFaultRate, speed, startTime: startTime.toISOString() });
    const replayRun = await start({ kind: 'logs', file: 'replay.log', source: REPLAY_SOURCE });
    const runs = [replayRun, followRun, evRun];
    log(`runs: replay ${replayRun} (${replayLines.length} lines), follow ${followRun}, ev ${evRun} (${o.evSessions} sessions, speed ${speed})`);

    const runState = async (id: string) => {
      const [[r]] = (await pool.query('SELECT state, published FROM runs WHERE id = ?', [id])) as [{ state: string; published: number }[], unknown];
      return r!;
    };
    const rowsWritten = () =>
      count(pool, `SELECT (SELECT COUNT(*) FROM raw_logs WHERE run_id IN (?, ?)) + (SELECT COUNT(*) FROM web_requests WHERE run_id IN (?, ?)) + (SELECT COUNT(*) FROM ev_readings WHERE run_id = ?)`, [
        replayRun, followRun, replayRun, followRun, evRun,
      ]);
    /** Every run that was running has published more since `before`, or ended; the follow run may instead have caught up with the file. */
    const runsMoved = async (before: { id: string; state: string; published: number }[]) => {
      for (const b of before) {
        if (b.state !== 'running') continue;
        const s = await runState(b.id);
        if (s.state !== 'running' || s.published > b.published) continue;
        if (b.id === followRun && s.published >= follow.written.length) continue;
        return false;
      }
      return true;
    };
    const nothingWaiting = async (queues: string[]) => {
      for (const q of queues) if ((await watch.check(q)).messages > 0) return false;
      return true;
    };

    // The follow's appends, spread over the window.
    const burstMs = 250;
    const bursts = Math.max(1, Math.floor((o.windowS * 1000) / burstMs));
    const perBurst = Math.max(1, Math.round(o.followLines / bursts));
    let appending = true;
    const appender = (async () => {
      while (appending && follow.written.length < o.followLines + 50) {
        follow.append(Math.min(perBurst, o.followLines + 50 - follow.written.length));
        await sleep(burstMs);
      }
    })();

    // Faults.
    const plan = planFaults(o);
    log(`fault plan (CHAOS_SEED=${o.seed}): ${plan.map((f) => `${f.atS}s ${f.kind}${f.fn ? ` ${f.fn}#${f.replica! + 1}` : ''}`).join(', ')}`);
    const probes: Promise<void>[] = [];
    const recovery = (rec: FaultRecord, startedAt: number, probe: () => Promise<boolean>) => {
      probes.push(
        waitFor(`recovery from ${rec.fault} ${rec.target}`, async () => (await probe()) || undefined, 240_000, 250)
          .then(() => void (rec.recoveredS = round1(now() - startedAt)))
          .catch((err) => void (rec.note += ` not recovered: ${String(err).slice(0, 200)}`)),
      );
    };
    for (const f of plan) {
      const wait = f.atS - now();
      if (wait > 0) await sleep(wait * 1000);
      if (f.kind === 'kill') {
        const r = sup.of(f.fn!)[f.replica!]!;
        let note = '';
        if (r.down) {
          await r.whenUp();
          note = 'waited for it to be back from the previous fault; ';
        }
        const before = f.fn === 'trigger' ? await Promise.all(runs.map(async (id) => ({ id, ...(await runState(id).catch(() => ({ state: '?', published: -1 }))) }))) : [];
        const at = now();
        r.killHard();
        const rec: FaultRecord = { fault: 'SIGKILL', target: r.label, atS: round1(at), heldS: 0, recoveredS: null, note };
        faults.push(rec);
        log(`[${at.toFixed(1)} s] SIGKILL ${r.label}`);
        await sleep(50);
        const queues = (r.proc!.ready.queues as string[] | undefined) ?? [];
        let baseline: number | undefined;
        recovery(rec, at, async () => {
          if (r.down) return false;
          if (f.fn === 'trigger') {
            return await runsMoved(before);
          }
          if (queues.length === 0) return true;
          for (const q of queues) if ((await watch.check(q)).consumers === 0) return false;
          const acked = (await Promise.all(sup.of(f.fn!).filter((x) => !x.down).map((x) => ackedBy(x.proc!)))).reduce((a, b) => a + b, 0);
          baseline ??= acked;
          return acked > baseline || (await nothingWaiting(queues));
        });
      } else if (f.kind === 'broker') {
        const at = now();
        log(`[${at.toFixed(1)} s] rabbitmqctl stop_app`);
        brokerDown = true;
        await rabbitmqctl('stop_app');
        await sleep(1_000);
        await rabbitmqctl('start_app');
        brokerDown = false;
        const rec: FaultRecord = { fault: 'RabbitMQ stop_app/start_app', target: 'rabbitmq', atS: round1(at), heldS: round1(now() - at), recoveredS: null, note: '' };
        faults.push(rec);
        log(`[${now().toFixed(1)} s] rabbitmqctl start_app done`);
        const before = await Promise.all(runs.map(async (id) => ({ id, ...(await runState(id)) })));
        recovery(rec, at, async () => {
          for (const q of mainQueues) if ((await watch.check(q)).consumers === 0) return false;
          return await runsMoved(before);
        });
      } else {
        const at = now();
        log(`[${at.toFixed(1)} s] MariaDB stopped for ${o.dbStopS} s`);
        dbDown = true;
        await run('pkill', ['-TERM', '-x', 'mariadbd']);
        await waitFor('MariaDB to be down', async () => !(await dbAnswers()), 60_000, 200);
        await sleep(Math.max(0, o.dbStopS * 1000 - (now() - at) * 1000));
        await startServices();
        dbDown = false;
        const rec: FaultRecord = { fault: `MariaDB stopped ${o.dbStopS} s`, target: 'mariadb', atS: round1(at), heldS: round1(now() - at), recoveredS: null, note: '' };
        faults.push(rec);
        log(`[${now().toFixed(1)} s] MariaDB back`);
        let baseline: number | undefined;
        recovery(rec, at, async () => {
          if (!(await dbAnswers())) return false;
          const n = await rowsWritten();
          baseline ??= n;
          return n > baseline || (await nothingWaiting(mainQueues));
        });
      }
    }
    const left = o.windowS - now();
    if (left > 0) await sleep(left * 1000);
    appending = false;
    await appender;
    log(`[${now().toFixed(1)} s] window over: ${follow.written.length} lines written to the followed file; waiting for recoveries and quiescence`);
    await Promise.all(probes);

    // --- quiescence ---------------------------------------------------------------------------
    const deadline = Date.now() + o.settleTimeoutMs;
    const left2 = () => Math.max(1_000, deadline - Date.now());
    const F = follow.written.length;
    await waitFor('the replay and the EV run to finish', async () => {
      const [a, b] = [await runState(replayRun), await runState(evRun)];
      if (a.state === 'failed' || b.state === 'failed') throw new Error(`a run failed: replay ${a.state}, ev ${b.state}`);
      return a.state === 'done' && b.state === 'done';
    }, left2(), 1_000);
    await waitFor('every followed line stored', async () => (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [followRun])) >= F, left2(), 1_000);
    await sleep(1_000);
    const stopped = await api(sup.trigger, 'POST', `/v1/runs/${followRun}/stop`);
    if (stopped.status !== 200) mismatches.push(`stopping the follow run: ${stopped.status} ${JSON.stringify(stopped.body)}`);
    let last = '';
    await waitFor('quiescence (every queue empty, every count steady)', async () => {
      for (const q of mainQueues) for (const name of [q, retryQueue(q)]) {
        const s = await watch.check(name);
        if (s.messages > 0) return false;
      }
      const snapshot = JSON.stringify([
        await rowsWritten(),
        await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id IN (?, ?)', [replayRun, followRun]),
        await count(pool, 'SELECT COUNT(*) FROM ev_events WHERE run_id = ?', [evRun]),
        await count(pool, "SELECT COUNT(*) FROM ev_analytics_clock WHERE run_id = ? AND JSON_EXTRACT(clock, '$.final') = true", [evRun]),
        await count(pool, "SELECT COUNT(*) FROM email_outbox WHERE status = 'pending'"),
        await count(pool, 'SELECT COUNT(*) FROM email_outbox'),
        await count(pool, 'SELECT COUNT(*) FROM log_alerts_outbox WHERE published_at IS NULL'),
        await count(pool, 'SELECT COALESCE(SUM(requests), 0) FROM log_stats_minute'),
      ]);
      const steady = snapshot === last;
      last = snapshot;
      const [, , , finals, pending, , unpublished] = JSON.parse(snapshot) as number[];
      return steady && finals === EV_PARTITIONS && pending === 0 && unpublished === 0;
    }, left2(), 3_000);
    const quietAt = now();
    log(`[${quietAt.toFixed(1)} s] quiet; checking`);

    // --- checks ----------------------------------------------------------------------------------
    const differ = (what: string, got: unknown, want: unknown) => {
      const g = JSON.stringify(got);
      const w = JSON.stringify(want);
      if (g !== w) mismatches.push(`${what}: got ${g.length > 300 ? `${g.slice(0, 300)}…` : g}, want ${w.length > 300 ? `${w.slice(0, 300)}…` : w}`);
    };
    const rows = async <T>(sql: string, params: unknown[] = []) => ((await pool.query(sql, params)) as [T[], unknown])[0];

    // Runs.
    const runOf = async (id: string) => (await api(sup.trigger, 'GET', `/v1/runs/${id}`)).body;
    const [rr, fr, er] = [await runOf(replayRun), await runOf(followRun), await runOf(evRun)];
    differ('replay run state', rr.state, 'done');
    differ('replay run lines', rr.lines, replayLines.length);
    differ('follow run state', fr.state, 'stopped');
    differ('EV run state', er.state, 'done');

    // The replay: raw_logs byte-exact, in order, with offsets.
    {
      const offsets: number[] = [];
      replayLines.reduce((o2, l, i) => ((offsets[i] = o2), o2 + l.length + 1), 0);
      let bad = 0;
      let n = 0;
      for (let from = 0; ; from += 20_000) {
        const chunk = await rows<{ line_no: number; byte_offset: number; line: Buffer }>(
          'SELECT line_no, byte_offset, line FROM raw_logs WHERE run_id = ? AND line_no > ? AND line_no <= ? ORDER BY line_no', [replayRun, from, from + 20_000]);
        for (const r of chunk) {
          const i = Number(r.line_no) - 1;
          n++;
          const want = replayLines[i];
          if (!want || !r.line.equals(want) || Number(r.byte_offset) !== offsets[i]) {
            if (bad++ < 3) mismatches.push(`replay raw_logs line ${r.line_no} (offset ${r.byte_offset}) differs from the file's`);
          }
        }
        if (from + 20_000 >= replayLines.length) break;
      }
      differ('replay raw_logs rows', n, replayLines.length);
      if (bad > 0) mismatches.push(`replay raw_logs: ${bad} rows differ from the file`);
    }
    const replayTruth = logTruth(replayLines.map((l) => l.toString('utf8')));
    const followTruth = logTruth(follow.written.map((w) => w.line));
    for (const [name, id, source, truth] of [['replay', replayRun, REPLAY_SOURCE, replayTruth], ['follow', followRun, FOLLOW_SOURCE, followTruth]] as const) {
      differ(`${name} web_requests`, await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [id]), truth.parsed);
      const rejects = await rows<{ line_no: number; reason: string }>('SELECT line_no, reason FROM log_rejects WHERE run_id = ? ORDER BY line_no', [id]);
      differ(`${name} log_rejects line numbers`, rejects.map((r) => Number(r.line_no)), truth.rejects);
      if (rejects.some((r) => !r.reason)) mismatches.push(`${name}: a log_rejects row without its reason`);
      // The aggregates of the source (each run has a source of its own).
      const [tot] = await rows<Record<string, string>>(
        'SELECT SUM(requests) AS requests, SUM(bytes) AS bytes, SUM(visitors) AS visitors, SUM(s1xx) AS s1, SUM(s2xx) AS s2, SUM(s3xx) AS s3, SUM(s4xx) AS s4, SUM(s5xx) AS s5 FROM log_stats_minute WHERE source = ?', [source]);
      differ(`${name} log_stats_minute requests`, Number(tot!.requests), truth.parsed);
      differ(`${name} log_stats_minute bytes`, Number(tot!.bytes), truth.bytes);
      differ(`${name} log_stats_minute status classes`, [tot!.s1, tot!.s2, tot!.s3, tot!.s4, tot!.s5].map(Number), truth.status);
      const minutes = await rows<{ m: string; requests: number }>('SELECT UNIX_TIMESTAMP(minute) AS m, requests FROM log_stats_minute WHERE source = ? ORDER BY minute', [source]);
      differ(`${name} requests per minute`, minutes.map((r) => `${Number(r.m) * 1000}:${Number(r.requests)}`), [...truth.minutes].sort(([a], [b]) => a - b).map(([m, n]) => `${m}:${n}`));
      const days = await rows<{ day: string; n: number }>('SELECT CAST(day AS CHAR) AS day, COUNT(*) AS n FROM log_stats_visitor WHERE source = ? GROUP BY day ORDER BY day', [source]);
      differ(`${name} visitors per day`, days.map((d) => `${d.day}:${Number(d.n)}`), [...truth.visitorsByDay].sort().map(([d, n]) => `${d}:${n}`));
      differ(`${name} visitors counted in minutes`, Number(tot!.visitors), [...truth.visitorsByDay.values()].reduce((a, b) => a + b, 0));
      differ(`${name} log_stats_top path requests`, await count(pool, "SELECT COALESCE(SUM(requests), 0) FROM log_stats_top WHERE source = ? AND dimension = 'path'", [source]), truth.withPath);
      differ(`${name} log_stats_minute alerting`, await count(pool, 'SELECT COALESCE(SUM(alerting), 0) FROM log_stats_minute WHERE source = ?', [source]), truth.parsed);
    }
    // The follow: exactly the lines written, each once, with its offset, numbered 1..N.
    {
      const got = await rows<{ line_no: number; byte_offset: number; line: Buffer }>('SELECT line_no, byte_offset, line FROM raw_logs WHERE run_id = ? ORDER BY line_no', [followRun]);
      differ('follow raw_logs rows', got.length, F);
      let bad = 0;
      got.forEach((r, i) => {
        const w = follow.written[i];
        if (Number(r.line_no) !== i + 1 || !w || r.line.toString() !== w.line || Number(r.byte_offset) !== w.offset) if (bad++ < 3) mismatches.push(`follow raw_logs row ${i + 1} (line_no ${r.line_no}, offset ${r.byte_offset}) is not the line written there`);
      });
      if (bad > 0) mismatches.push(`follow raw_logs: ${bad} rows differ from the lines written`);
    }

    // EV: readings once, sessions, detections against the truth.
    const p = er.params as { sessions: number; seed: number; sampleIntervalS: number; faultRate: number; startTime: string };
    let readings = 0;
    const invalid = new Set<string>();
    for (const item of simulateRun({ runId: evRun, sessions: p.sessions, seed: p.seed, sampleIntervalS: p.sampleIntervalS, faultRate: p.faultRate, startTime: new Date(p.startTime), catalog })) {
      if (item.kind !== 'reading') continue;
      readings++;
      if (readingProblems(item.reading).length > 0) invalid.add(item.reading.messageId);
    }
    differ('ev_readings', await count(pool, 'SELECT COUNT(*) FROM ev_readings WHERE run_id = ?', [evRun]), readings);
    differ('ev_sessions', await count(pool, 'SELECT COUNT(*) FROM ev_sessions WHERE run_id = ?', [evRun]), o.evSessions);
    differ('ev_sessions still charging', await count(pool, "SELECT COUNT(*) FROM ev_sessions WHERE run_id = ? AND status = 'charging'", [evRun]), 0);
    differ("ev_events 'charge.started'", await count(pool, "SELECT COUNT(*) FROM ev_events WHERE run_id = ? AND type = 'charge.started'", [evRun]), o.evSessions);
    differ('ev_events one per (session, type)', await count(pool, 'SELECT COUNT(*) FROM ev_events WHERE run_id = ?', [evRun]),
      await count(pool, 'SELECT COUNT(*) FROM (SELECT DISTINCT session_id, type FROM ev_events WHERE run_id = ?) d', [evRun]));
    const truth = await rows<{ k: string }>("SELECT CONCAT(session_id, ' ', fault) AS k FROM ev_sim_truth WHERE run_id = ? ORDER BY k", [evRun]);
    const found = await rows<{ k: string }>("SELECT CONCAT(session_id, ' ', type) AS k FROM ev_events WHERE run_id = ? AND type IN (?) ORDER BY k", [evRun, FAULT_TYPES]);
    const truthSet = new Set(truth.map((r) => r.k));
    const foundSet = new Set(found.map((r) => r.k));
    const missed = [...truthSet].filter((k) => !foundSet.has(k));
    const falseAlarms = [...foundSet].filter((k) => !truthSet.has(k));
    if (missed.length || falseAlarms.length) mismatches.push(`detections differ from the truth: missed ${JSON.stringify(missed.slice(0, 5))} (${missed.length}), false ${JSON.stringify(falseAlarms.slice(0, 5))} (${falseAlarms.length})`);
    facts.push(`EV: ${readings} readings (${invalid.size} invalid), ${truth.length} faulty sessions of ${o.evSessions}, detections ${found.length}`);

    // Emails: the outbox holds what the events and the rules say, each mailed at most once, every 'sent' one exactly once.
    const rules = parseRules(DEFAULT_RULES);
    const events = await rows<{ event_id: string; type: keyof typeof rules }>('SELECT event_id, type FROM ev_events WHERE run_id = ?', [evRun]);
    const wantKeys = events.flatMap((e) => (rules[e.type] ?? []).map((role) => `${role}:${e.event_id}`)).sort();
    const outbox = await rows<{ dedupe_key: string; event_id: string; recipient: string; status: string }>(
      'SELECT dedupe_key, event_id, recipient, status FROM email_outbox WHERE run_id = ? ORDER BY dedupe_key', [evRun]);
    differ('email_outbox dedupe keys (events x rules)', outbox.map((r) => r.dedupe_key), wantKeys);
    const byStatus: Record<string, number> = {};
    for (const r of outbox) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    if ((byStatus.pending ?? 0) + (byStatus.failed ?? 0) > 0) mismatches.push(`email_outbox rows not sent: ${JSON.stringify(byStatus)}`);
    const mails = ((await (await fetch(`${SES_ENDPOINT}/store`)).json()) as { emails: { destination: { to: string[] }; subject: string; body: { text?: string } }[] }).emails;
    const refs = new Map<string, number>();
    for (const m of mails) for (const r of (m.body.text ?? '').matchAll(/^Reference: (.+)$/gm)) refs.set(`${m.destination.to[0]} ${r[1]}`, (refs.get(`${m.destination.to[0]} ${r[1]}`) ?? 0) + 1);
    let twice = 0;
    let missing = 0;
    for (const r of outbox) {
      const n = refs.get(`${r.recipient} ${r.event_id}`) ?? 0;
      if (n > 1) twice++;
      if (r.status === 'sent' && n !== 1) missing++;
    }
    if (twice) mismatches.push(`${twice} EV notifications were mailed more than once`);
    if (missing) mismatches.push(`${missing} outbox rows marked sent are not in exactly one email`);
    facts.push(`EV emails: outbox ${JSON.stringify(byStatus)} (sending/unknown: a sender was killed between claim and answer; never resent)`);
    // Web-log alerts of the two sources: each transition published, mailed once.
    const alertRows = await count(pool, 'SELECT COUNT(*) FROM log_alerts_outbox WHERE source IN (?, ?)', [REPLAY_SOURCE, FOLLOW_SOURCE]);
    const alertMails = mails.filter((m) => m.subject.includes(` ${REPLAY_SOURCE}:`) || m.subject.includes(` ${FOLLOW_SOURCE}:`));
    const alertOutbox = await rows<{ status: string }>('SELECT status FROM email_outbox WHERE kind = ? AND (dedupe_key LIKE ? OR dedupe_key LIKE ?)', ['alert', `alert:%:${REPLAY_SOURCE}:%`, `alert:%:${FOLLOW_SOURCE}:%`]);
    differ('alert outbox rows (log-alerts transitions vs notify-email rows)', alertOutbox.length, alertRows);
    const alertSent = alertOutbox.filter((r) => r.status === 'sent').length;
    if (alertMails.length < alertSent || alertMails.length > alertOutbox.length) mismatches.push(`alert emails ${alertMails.length}, outbox ${JSON.stringify(alertOutbox.map((r) => r.status))}`);
    if (new Set(alertMails.map((m) => m.subject)).size !== alertMails.length) mismatches.push(`an alert was mailed twice: ${alertMails.map((m) => m.subject).join(' | ')}`);
    facts.push(`web-log alerts: ${alertRows} transitions, ${alertMails.length} emails`);

    // Dead-letter queues: only the invalid readings of the EV input.
    const dead = new Map<string, number>();
    let unexpectedDead = 0;
    for (const q of mainQueues) {
      const msgs = await watch.peekAll(deadLetterQueue(q));
      for (const m of msgs) {
        const isInput = q.startsWith('ev.analytics.') && invalid.has(String(m.properties.messageId));
        if (!isInput) {
          const why = m.properties.headers?.['x-sluice-reason'] ?? (m.properties.headers?.['x-death'] ? 'x-death (broker delivery limit)' : '?');
          unexpectedDead++;
          if (unexpectedDead <= 5) mismatches.push(`${deadLetterQueue(q)} holds ${m.properties.messageId}, not from the input: ${String(why).slice(0, 200)}`);
        }
        const k = `${q}|${m.properties.messageId}`;
        dead.set(k, (dead.get(k) ?? 0) + 1);
      }
    }
    if (unexpectedDead > 5) mismatches.push(`... ${unexpectedDead} dead-lettered messages not from the input in all`);
    const deadInvalid = new Set([...dead.keys()].filter((k) => k.startsWith('ev.analytics.')).map((k) => k.split('|')[1]));
    differ('invalid readings dead-lettered', [...invalid].filter((id) => !deadInvalid.has(id)).length, 0);
    const copies = [...dead.values()].reduce((a, b) => a + b, 0) - dead.size;
    facts.push(`dead-letter queues: ${[...dead.values()].reduce((a, b) => a + b, 0)} messages, ${dead.size} distinct, ${copies} extra copies of a dead-lettered message (dead-lettered again after a redelivery)`);
    facts.push(`follow: ${F} lines appended; replay: ${replayLines.length} lines`);
    facts.push(`quiet ${round1(quietAt - o.windowS)} s after the window of ${o.windowS} s`);
    for (const e of sup.unexpectedExits) faults.push({ fault: 'exit (not injected)', target: e.label, atS: e.atS, heldS: 0, recoveredS: null, note: e.why.slice(0, 300) });
    for (const f of faults) if (f.fault !== 'exit (not injected)' && f.recoveredS === null) mismatches.push(`${f.fault} ${f.target} at ${f.atS} s: not recovered`);
  } catch (err) {
    // A timeout (quiescence never came) or an error: reported as a mismatch, with the table so far.
    mismatches.push(`the scenario stopped at ${now().toFixed(1)} s: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    for (const e of sup.unexpectedExits) faults.push({ fault: 'exit (not injected)', target: e.label, atS: e.atS, heldS: 0, recoveredS: null, note: e.why.slice(0, 300) });
  } finally {
    if (brokerDown) {
      try {
        await rabbitmqctl('start_app');
      } catch {}
    }
    if (dbDown || !(await dbAnswers())) await startServices();
    await sup.stopAll();
    await stopAll();
    await watch.close();
    await ses?.stop();
    await pool.end();
    rmSync(dir, { recursive: true, force: true });
  }
  if (mismatches.length > 0) {
    // The processes' logs, for the post-mortem: one file per process and incarnation.
    const logs = path.join(tmpdir(), `sluice-chaos-${o.seed}`);
    rmSync(logs, { recursive: true, force: true });
    mkdirSync(logs, { recursive: true });
    for (const r of sup.replicas) r.history.forEach((lines, i) => writeFileSync(path.join(logs, `${r.label.replace('#', '.')}.${i + 1}.log`), `${lines.join('\n')}\n`));
    facts.push(`the processes' logs: ${logs}`);
  }
  const table = faultTable(faults);
  return { seed: o.seed, faults, mismatches, facts, table };
}

export function faultTable(faults: FaultRecord[]): string {
  const head = ['#', 'fault', 'target', 'at (s)', 'held (s)', 'recovered after (s)', 'note'];
  const lines = faults
    .sort((a, b) => a.atS - b.atS)
    .map((f, i) => [String(i + 1), f.fault, f.target, f.atS.toFixed(1), f.heldS ? f.heldS.toFixed(1) : '-', f.recoveredS === null ? 'NOT RECOVERED' : f.recoveredS.toFixed(1), f.note.trim()]);
  const md = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [md(head), md(head.map(() => '---')), ...lines.map(md)].join('\n');
}

/** Defaults of the two variants. */
export const FULL: Omit<ChaosOptions, 'seed' | 'log'> = {
  replayCopies: 10,
  followLines: 15_000,
  evSessions: 300,
  evFaultRate: 0.5,
  windowS: 150,
  killsPerFunction: 3,
  triggerKills: 1,
  brokerRestarts: 1,
  dbStops: 1,
  dbStopS: 10,
  scale: { 'log-clean': 2, 'ev-analytics': 2 },
  restartDelayMs: 1_000,
  settleTimeoutMs: 900_000,
};

/** The short variant (in npm test): the same faults once each, on smaller inputs. */
export const SHORT: Omit<ChaosOptions, 'seed' | 'log'> = {
  ...FULL,
  replayCopies: 1,
  followLines: 2_000,
  evSessions: 40,
  windowS: 45,
  killsPerFunction: 1,
  settleTimeoutMs: 300_000,
};

