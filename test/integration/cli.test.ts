// The `sluice` command as a user runs it (bin/sluice.mjs, a subprocess) against a real trigger,
// log-lake and log-clean on RabbitMQ and MariaDB: a replay watched to its end, stats and top
// equal to the API's own answers, an upload, an EV run, a follow stopped, and the exit codes
// scripts rely on: 2 for a usage error, 3 for an API that cannot be reached, 1 with the API's
// message for a refusal.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Pool } from '../../shared/db/pool.ts';
import { api, ensureBuilt, logsDir, resetEnvironment, root, startFunction, stopAll, TOKEN, type FnProcess } from './harness.ts';

const BIN = path.join(root, 'bin', 'sluice.mjs');
const fmt = (n: number) => n.toLocaleString('en-US');

let pool: Pool;
let trigger: FnProcess;
let url: string;
let tmp: string;

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  await startFunction('log-lake');
  await startFunction('log-clean');
  trigger = await startFunction('trigger', { LOG_DIR: logsDir });
  url = `http://127.0.0.1:${trigger.ready.port}`;
  tmp = mkdtempSync(path.join(tmpdir(), 'sluice-cli-'));
});
after(async () => {
  await stopAll();
  await pool?.end();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `sluice ARGS` as a user would (not on a terminal: pipes), against the test trigger. */
function sluice(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: root,
      env: { PATH: process.env.PATH, SLUICE_URL: url, SLUICE_TOKEN: TOKEN, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => (child.kill(), reject(new Error(`sluice ${args.join(' ')}: no end after ${timeoutMs} ms\n${stdout}\n${stderr}`))), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
  });
}

const ok = (r: Result, what: string) => assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
const RANGE = ['--from', '2015-05-17T00:00:00Z', '--to', '2015-05-21T00:00:00Z'];
const RANGE_QS = 'from=2015-05-17T00:00:00Z&to=2015-05-21T00:00:00Z';

describe('sluice command line', () => {
  let replayId: string;
  /** Requests log-clean parsed from the replay: what the aggregates must count. */
  let parsed: number;

  test('logs replay, then runs ID --watch: plain lines off a terminal, exit 0 once done; --stored waits for the consumers', async () => {
    const started = await sluice(['logs', 'replay', 'apache_logs', '--json']);
    ok(started, 'replay');
    const run = JSON.parse(started.stdout) as { id: string; state: string; kind: string; source: string };
    assert.equal(run.state, 'running');
    assert.equal(run.source, 'apache_logs');
    replayId = run.id;

    const watched = await sluice(['runs', replayId, '--watch']);
    ok(watched, 'watch');
    assert.ok(!watched.stdout.includes('\r') && !watched.stdout.includes('\x1b'), 'no terminal control off a terminal');
    assert.match(watched.stdout, new RegExp(`run ${replayId} done: 10,000 lines published in \\d+s`));

    // NDJSON: the last line is the API's run as it ended, every line stored.
    const json = await sluice(['runs', replayId, '--watch', '--stored', '--json']);
    ok(json, 'watch --stored --json');
    const last = JSON.parse(json.stdout.trimEnd().split('\n').at(-1)!) as { state: string; published: number; stored: Record<string, number> };
    assert.equal(last.state, 'done');
    assert.equal(last.published, 10_000);
    assert.equal(last.stored.raw_logs, 10_000);
    assert.equal(last.stored.web_requests! + last.stored.log_rejects!, 10_000);
    assert.deepEqual(last, (await api(trigger, 'GET', `/v1/runs/${replayId}`)).body, 'the API JSON as is');
    parsed = last.stored.web_requests!;

    const details = await sluice(['runs', replayId]);
    ok(details, 'runs ID');
    assert.match(details.stdout, /^state\s+done$/m);
    assert.match(details.stdout, /^lines\s+10,000 read, 10,000 published/m);
    assert.match(details.stdout, new RegExp(`^stored\\s+raw_logs 10,000 · web_requests ${fmt(last.stored.web_requests!)} · log_rejects ${fmt(last.stored.log_rejects!)}$`, 'm'));

    const list = await sluice(['runs']);
    ok(list, 'runs');
    assert.match(list.stdout, new RegExp(`^${replayId}\\s+logs\\s+done\\s+apache_logs\\s+10,000\\s`, 'm'));
  });

  test('stats and top: --json is the API answer; the table shows its numbers', async () => {
    const fromApi = (await api(trigger, 'GET', `/v1/stats?${RANGE_QS}&bucket=day`)).body;
    assert.equal(fromApi.totals.requests, parsed, 'the replay is in the aggregates');
    const json = await sluice(['stats', ...RANGE, '--bucket', 'day', '--json']);
    ok(json, 'stats --json');
    assert.deepEqual(JSON.parse(json.stdout), fromApi);
    const human = await sluice(['stats', ...RANGE, '--bucket', 'day', '--source', 'apache_logs']);
    ok(human, 'stats');
    assert.match(human.stdout, new RegExp(`^requests\\s+${fmt(fromApi.totals.requests)}$`, 'm'));
    assert.match(human.stdout, new RegExp(`^status\\s+2xx ${fmt(fromApi.totals.status['2xx'])}\\s+3xx ${fmt(fromApi.totals.status['3xx'])}`, 'm'));
    for (const p of fromApi.series as { t: string; requests: number }[]) assert.match(human.stdout, new RegExp(`^${p.t.slice(0, 10)}\\s+${fmt(p.requests)}\\s`, 'm'));

    const topApi = (await api(trigger, 'GET', `/v1/stats/top?dimension=path&limit=5&${RANGE_QS}`)).body;
    assert.equal(topApi.items.length, 5);
    const topJson = await sluice(['top', 'path', '--limit', '5', ...RANGE, '--json']);
    ok(topJson, 'top --json');
    assert.deepEqual(JSON.parse(topJson.stdout), topApi);
    const top = await sluice(['top', 'path', '--limit', '5', ...RANGE]);
    ok(top, 'top');
    const rows = top.stdout.trimEnd().split('\n').slice(-5);
    (topApi.items as { value: string; requests: number; visitors: number }[]).forEach((item, i) => {
      assert.match(rows[i]!, new RegExp(`^${i + 1}\\s+${fmt(item.requests)}\\s+${fmt(item.visitors)}\\s+.*\\s${item.value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
    });
  });

  test('logs upload streams a local file: every line published and stored', async () => {
    const lines = readFileSync(path.join(logsDir, 'apache_logs'), 'utf8').split('\n').slice(0, 2_500);
    const file = path.join(tmp, 'upload.log');
    writeFileSync(file, `${lines.join('\n')}\n`);
    const r = await sluice(['logs', 'upload', file, '--source', 'cli-upload', '--json']);
    ok(r, 'upload');
    const { id, lines: published } = JSON.parse(r.stdout) as { id: string; lines: number };
    assert.equal(published, 2_500);
    const watched = await sluice(['runs', id, '--watch', '--stored', '--json']);
    ok(watched, 'watch upload');
    const run = JSON.parse(watched.stdout.trimEnd().split('\n').at(-1)!);
    assert.equal(run.source, 'cli-upload');
    assert.equal(run.file, null);
    assert.equal(run.stored.raw_logs, 2_500);

    const human = await sluice(['logs', 'upload', file, '--source', 'cli-upload']);
    ok(human, 'upload (human)');
    assert.match(human.stdout, /^uploaded .*upload\.log \([\d.]+ KiB\): 2,500 lines published as run [0-9a-f-]{36}, source cli-upload/m);
  });

  test('ev run maps its options to the EV request and is watched to done; a follow is stopped', async () => {
    const ev = await sluice(['ev', 'run', '--sessions', '3', '--seed', '42', '--speed', '1000000', '--fault-rate', '0.5', '--sample-interval', '60', '--json']);
    ok(ev, 'ev run');
    const run = JSON.parse(ev.stdout);
    assert.equal(run.kind, 'ev');
    assert.deepEqual([run.params.sessions, run.params.seed, run.params.speed, run.params.faultRate, run.params.sampleIntervalS], [3, 42, 1000000, 0.5, 60]);
    const watched = await sluice(['runs', run.id, '--watch']);
    ok(watched, 'watch ev');
    assert.match(watched.stdout, /done: [\d,]+ messages published/);

    const follow = await sluice(['logs', 'replay', 'beats/access.log', '--follow', '--source', 'cli-follow', '--json']);
    ok(follow, 'follow');
    const followId = JSON.parse(follow.stdout).id as string;
    const stop = await sluice(['runs', 'stop', followId]);
    ok(stop, 'stop');
    assert.match(stop.stdout.trimEnd(), new RegExp(`^run ${followId} stopped: [\\d,]+ lines published$`));
    const watchedStopped = await sluice(['runs', followId, '--watch']);
    assert.equal(watchedStopped.code, 0, 'a run stopped on request ends the watch with 0');
    assert.match(watchedStopped.stdout, /stopped/);
  });

  test('exit codes: 2 for a usage error, 3 for an API that cannot be reached, 1 with the API message for a refusal', async () => {
    const usage = await sluice(['top', 'nope']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /'nope' is invalid .*Allowed choices are path, not_found, referrer, client_ip, user_agent/);
    assert.equal(usage.stdout, '');

    // A port nothing listens on: one the system just gave out and took back.
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const closed = (server.address() as AddressInfo).port;
    await new Promise((r) => server.close(r));
    const down = await sluice(['runs'], { SLUICE_URL: `http://127.0.0.1:${closed}` });
    assert.equal(down.code, 3);
    assert.match(down.stderr, new RegExp(`cannot reach the sluice API at http://127\\.0\\.0\\.1:${closed}: connect ECONNREFUSED`));
    assert.match(down.stderr, /npm start/);

    const escape = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: '../etc/passwd' });
    assert.equal(escape.status, 400);
    const refused = await sluice(['logs', 'replay', '../etc/passwd']);
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr, `sluice: ${escape.body.message} (HTTP 400)\n`);
    assert.equal(refused.stdout, '');

    const missing = await sluice(['runs', '00000000-0000-4000-8000-000000000000']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'sluice: run 00000000-0000-4000-8000-000000000000 not found (HTTP 404)\n');

    const done = await sluice(['runs', 'stop', replayId]);
    assert.equal(done.code, 1);
    assert.match(done.stderr, /is done, not running: only a running run can be stopped \(HTTP 409\)/);

    const badToken = await sluice(['runs'], { SLUICE_TOKEN: 'not-the-token' });
    assert.equal(badToken.code, 1);
    assert.match(badToken.stderr, /wrong bearer token \(set SLUICE_TOKEN to the trigger's TRIGGER_TOKEN\)/);
    assert.ok(!badToken.stderr.includes('not-the-token') && !badToken.stderr.includes(TOKEN), 'no token printed');
  });

  test('the launcher says what to do on a Node older than 24', (t) => {
    const old = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => existsSync(p) && Number(spawnSync(p, ['-p', 'process.versions.node.split(".")[0]']).stdout.toString()) < 24);
    if (!old) return t.skip('no Node older than 24 on this machine');
    const r = spawnSync(old, [BIN, 'runs'], { env: { PATH: process.env.PATH, SLUICE_URL: url } });
    assert.equal(r.status, 2);
    assert.match(r.stderr.toString(), /sluice: needs Node 24 or newer, and this is Node \d+.*\n.*npx sluice/);
  });
});
