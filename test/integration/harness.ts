// Integration-test harness: real RabbitMQ (vhost sluice-test), real MariaDB
// (database sluice_test), the real SES emulator, and the functions run as
// processes from their bundles, exactly as `npm start` runs them: the schema,
// the topology and the functions' users come from the privileged migrate step
// (infra/provision.ts), and each function connects as its own user.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import amqp from 'amqplib';
import mysql from 'mysql2/promise';
import { createPool, type Pool } from '../../shared/db/pool.ts';
import { topology, retryQueue, deadLetterQueue } from '../../infra/topology.ts';
import { provision } from '../../infra/provision.ts';
import { FUNCTIONS, type FunctionName } from '../../infra/access.ts';
import { MALLOC_ENV, nodeFlags } from '../../infra/node-options.ts';
import { createLogger } from '../../shared/log.ts';
import { functionUrls, localPasswords, monitorApiUrl, operatorAmqpUrl } from '../../scripts/local-env.ts';

export const root = path.resolve(import.meta.dirname, '../..');
export const sharedData = path.resolve(root, '../shared/data');
export const logsDir = path.join(sharedData, 'logs');
export const TOKEN = 'test-token-0123456789';
/** The administrators (tests inspect and reset with them; functions never get them). */
export const AMQP_URL = process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672/sluice-test';
export const MYSQL_URL = process.env.TEST_MYSQL_URL ?? 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test';
export const RABBITMQ_API_URL = process.env.TEST_RABBITMQ_API_URL ?? 'http://guest:guest@127.0.0.1:15672';
export const passwords = localPasswords();
/** A function's own AMQP_URL and MYSQL_URL in the test vhost and database. */
export const ownUrls = (fn: FunctionName) => functionUrls(fn, passwords[fn], { amqpAdminUrl: AMQP_URL, mysqlAdminUrl: MYSQL_URL });
export const SES_ENDPOINT = process.env.TEST_SES_ENDPOINT ?? 'http://127.0.0.1:8015';
/** The dead-letter operator's AMQP URL in the test vhost: the trigger's DLQ_AMQP_URL, as npm start sets it. */
export const DLQ_AMQP_URL = operatorAmqpUrl('dlq', passwords.dlq, { amqpAdminUrl: AMQP_URL });
/** The monitoring operator's management API URL: the trigger's RABBITMQ_MONITOR_URL, as npm start sets it. */
export const RABBITMQ_MONITOR_URL = monitorApiUrl(passwords.monitor, { rabbitApiUrl: RABBITMQ_API_URL });

/**
 * The framing the trigger publishes log lines in (its LOG_FRAMING), `line` unless TEST_FRAMING=batch:
 * the web-log test files run in both, the batch ones through test/integration/batch-framing/.
 * In batch framing the tests cut messages at BATCH_LINES lines (and never at bytes), so that a
 * replay is many messages and a test can tell how many.
 */
export const FRAMING: 'line' | 'batch' = process.env.TEST_FRAMING === 'batch' ? 'batch' : 'line';
export const BATCH_LINES = 100;
const FRAMING_ENV: Record<string, string> = FRAMING === 'batch' ? { LOG_FRAMING: 'batch', FRAMING_BATCH_LINES: String(BATCH_LINES), FRAMING_BATCH_BYTES: String(4 * 1024 * 1024) } : { LOG_FRAMING: 'line' };
/** Messages a replay of `lines` lines of one file is published as, in this framing. */
export const messagesOf = (lines: number): number => (FRAMING === 'batch' ? Math.ceil(lines / BATCH_LINES) : lines);

/** Fresh database and empty queues, so each test file starts from nothing. */
export async function resetEnvironment(): Promise<Pool> {
  const url = new URL(MYSQL_URL);
  const db = url.pathname.slice(1);
  const admin = await mysql.createConnection({ host: url.hostname, port: Number(url.port || 3306), user: url.username, password: url.password });
  await admin.query(`DROP DATABASE IF EXISTS \`${db}\``);
  await admin.query(`CREATE DATABASE \`${db}\``);
  await admin.end();
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  for (const q of topology.queues) for (const name of [q.name, retryQueue(q.name), deadLetterQueue(q.name)]) await ch.deleteQueue(name);
  await conn.close();
  await provisionTestEnvironment();
  return createPool(MYSQL_URL, 4);
}

/** The migrate step, as `npm run migrate` runs it, on the test vhost and database. */
export async function provisionTestEnvironment(): Promise<void> {
  await provision({
    mysqlAdminUrl: MYSQL_URL,
    amqpAdminUrl: AMQP_URL,
    rabbitApiUrl: RABBITMQ_API_URL,
    passwords,
    userHost: '%',
    log: createLogger('migrate', 'warn'),
  });
}

/** Node's compile cache for the bundles the tests start (npm start's too). */
export const COMPILE_CACHE = path.join(root, '.sluice', 'compile-cache');

export function ensureBuilt(): void {
  if (process.env.SLUICE_SKIP_BUILD || ['trigger', 'log-lake', 'log-clean'].every((f) => existsSync(path.join(root, 'dist', f, 'index.mjs')))) return;
  const r = spawnSync(process.execPath, ['build.mjs', '--no-check'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('build failed');
}

export interface FnProcess {
  name: string;
  child: ChildProcess;
  /** The ready log line (trigger: has `port`). */
  ready: Record<string, unknown>;
  logs: string[];
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

const running = new Set<FnProcess>();

/** Start a function from its bundle and wait for its `ready` log line. */
export async function startFunction(name: string, env: Record<string, string> = {}): Promise<FnProcess> {
  // Node's flags and malloc settings as deployed (infra/node-options.ts).
  const child = spawn(process.execPath, [...nodeFlags(name), path.join(root, 'dist', name, 'index.mjs')], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      ...MALLOC_ENV,
      ...(FUNCTIONS.includes(name as FunctionName) ? ownUrls(name as FunctionName) : {}),
      ...(name === 'trigger' ? { DLQ_AMQP_URL, RABBITMQ_MONITOR_URL, ...FRAMING_ENV } : {}),
      SES_ENDPOINT,
      TRIGGER_TOKEN: TOKEN,
      HTTP_PORT: '0',
      LOG_DIR: logsDir,
      LOG_LEVEL: 'info',
      // As npm start: the bundles' compiled code is kept between starts (shared/compile-only.ts).
      NODE_COMPILE_CACHE: COMPILE_CACHE,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready after 30 s:\n${logs.slice(-20).join('\n')}`)), 30_000);
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        logs.push(line);
        if (logs.length > 2_000) logs.shift();
        if (line.includes('"msg":"ready"')) clearTimeout(timer), resolve(JSON.parse(line));
      });
    }
    void exited.then((code) => (clearTimeout(timer), reject(new Error(`${name} exited (${code}) before ready:\n${logs.slice(-20).join('\n')}`))));
  });
  const fn: FnProcess = {
    name,
    child,
    ready,
    logs,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const code = await exited;
      running.delete(fn);
      return code;
    },
  };
  running.add(fn);
  return fn;
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((f) => f.kill('SIGTERM')));
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Call the trigger's API. */
export async function api(trigger: FnProcess, method: string, url: string, body?: unknown, headers: Record<string, string> = {}) {
  const init: RequestInit = { method, headers: { authorization: `Bearer ${TOKEN}`, ...headers } };
  if (body !== undefined) {
    init.body = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] ??= typeof body === 'string' || Buffer.isBuffer(body) ? 'text/plain' : 'application/json';
  }
  const res = await fetch(`http://127.0.0.1:${trigger.ready.port}${url}`, init);
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A confirm channel as the administrator (the test's own view of the broker), closed afterwards. */
export async function admin<T>(fn: (ch: amqp.ConfirmChannel) => Promise<T>): Promise<T> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    return await fn(await conn.createConfirmChannel());
  } finally {
    await conn.close();
  }
}

/** Messages ready in `queue`. */
export const depth = (queue: string) => admin(async (ch) => (await ch.checkQueue(queue)).messageCount);

export async function count(pool: Pool, sql: string, params: unknown[] = []): Promise<number> {
  const [rows] = (await pool.query(sql, params)) as [Record<string, unknown>[], unknown];
  return Number(Object.values(rows[0] ?? { n: 0 })[0]);
}
