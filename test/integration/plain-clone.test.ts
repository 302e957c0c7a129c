// The project runs from a plain clone: no ../shared beside it. The clone's own
// `npm start` (scripts/start.ts) builds, runs the migrate step, writes the sample
// access log into the clone's logs/, starts every function with its own users,
// and the README's replay of that log ends with every line stored.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { AMQP_URL, RABBITMQ_API_URL, TOKEN, resetEnvironment, root, waitFor } from './harness.ts';
import type { Pool } from '../../shared/db/pool.ts';

let parent: string;
let clone: string;
let start: ChildProcess | null = null;
let pool: Pool;
const output: string[] = [];

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

before(async () => {
  pool = await resetEnvironment();
  parent = mkdtempSync(path.join(tmpdir(), 'sluice-clone-'));
  clone = path.join(parent, 'sluice');
  const r = spawnSync('git', ['clone', '--quiet', root, clone], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // The clone's own packages would be `npm ci`; the same tree, linked, keeps the test offline and quick.
  symlinkSync(path.join(root, 'node_modules'), path.join(clone, 'node_modules'), 'dir');
  // The functions' users are per machine: the clone uses this checkout's passwords, so the
  // users' passwords stay what the other tests expect.
  mkdirSync(path.join(clone, '.sluice'), { mode: 0o700 });
  copyFileSync(path.join(root, '.sluice', 'secrets.json'), path.join(clone, '.sluice', 'secrets.json'));
});

after(async () => {
  if (start && start.exitCode === null) {
    start.kill('SIGINT');
    await new Promise((r) => start!.once('exit', r));
  }
  await pool?.end();
  rmSync(parent, { recursive: true, force: true });
});

test('a clone with no ../shared beside it starts with `npm start` and replays its own sample log end to end', { timeout: 600_000 }, async () => {
  assert.deepEqual(readdirSync(parent), ['sluice'], 'nothing beside the clone');
  assert.ok(!existsSync(path.join(clone, 'logs', 'access.log')), 'the clone carries no generated log');
  const port = await freePort();
  const base = new URL(AMQP_URL);
  start = spawn(process.execPath, [path.join(clone, 'scripts', 'start.ts')], {
    cwd: clone,
    env: {
      PATH: process.env.PATH,
      MYSQL_ADMIN_URL: 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test_clone',
      AMQP_ADMIN_URL: base.toString(),
      RABBITMQ_API_URL,
      HTTP_PORT: String(port),
      TRIGGER_TOKEN: TOKEN,
      SES_ENDPOINT: 'http://127.0.0.1:8016',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const stream of [start.stdout!, start.stderr!]) createInterface({ input: stream }).on('line', (l) => output.push(l));
  const api = async (method: string, url: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${port}${url}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const tail = () => output.slice(-30).join('\n');

  await waitFor('the clone\'s trigger to answer', async () => {
    if (start!.exitCode !== null) throw new Error(`npm start exited (${start!.exitCode}):\n${tail()}`);
    return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
  }, 400_000, 500).catch((err) => assert.fail(`${(err as Error).message}\n${tail()}`));

  assert.ok(existsSync(path.join(clone, 'logs', 'access.log')), 'npm start wrote the sample log into the clone');
  assert.ok(output.some((l) => l.includes('wrote the sample access log')), tail());
  const res = await api('POST', '/v1/runs', { kind: 'logs', file: 'access.log' });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const run = await waitFor('the sample log to be stored', async () => {
    const r = (await api('GET', `/v1/runs/${res.body.id}`)).body;
    const s = r.stored;
    return r.state === 'done' && s.raw_logs === r.lines && s.web_requests + s.log_rejects === r.lines ? r : undefined;
  }, 180_000, 500);
  assert.ok(run.lines >= 10_000, `the sample has ${run.lines} lines`);
  assert.ok(run.stored.log_rejects > 0 && run.stored.log_rejects < 20, `a few malformed lines are kept as rejects: ${run.stored.log_rejects}`);
  assert.ok(!output.some((l) => l.includes('../shared') || l.includes('/shared/data')), 'nothing refers to ../shared');
  // The functions ran as their own users: no administrator credential in their environment.
  assert.ok(output.some((l) => /trigger.*"msg":"ready"/.test(l)), tail());

  start.kill('SIGINT');
  const code = await new Promise<number | null>((r) => start!.once('exit', (c) => r(c)));
  assert.equal(code, 0, tail());
  assert.ok(output.some((l) => l.includes('all stopped')), tail());
  // Piped, npm start prints JSON lines, and keeps every function's, combined, in the file it named.
  const named = output.map((l) => /combined \(JSON lines\): (\S+)/.exec(l)?.[1]).find(Boolean);
  assert.ok(named, `npm start names its combined log: ${tail()}`);
  const combined = readFileSync(path.resolve(clone, named), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { fn: string; msg?: string });
  const readyFns = new Set(combined.filter((r) => r.msg === 'ready').map((r) => r.fn));
  for (const fn of readdirSync(path.join(clone, 'functions'))) assert.ok(readyFns.has(fn), `${fn}'s ready line is in the combined log`);
});
