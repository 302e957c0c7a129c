// Follow runs through the trigger's HTTP API (Fastify's inject, the real runner over a fake
// broker, a fake run store): request rules for `file`/`files`/`follow`, POST
// /v1/runs/:id/stop (200 stopped, 404, 409), MAX_CONCURRENT_RUNS, a stop requested through
// another trigger, and a graceful stop that hands a follow run back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { createApp } from '../../functions/trigger/app.ts';
import { followRun } from '../../functions/trigger/follow.ts';
import { createRunner } from '../../functions/trigger/runner.ts';
import type { Checkpoint } from '../../functions/trigger/runs.ts';
import type { EvRuns } from '../../functions/trigger/ev-runs.ts';
import type { Publisher } from '../../shared/amqp/publisher.ts';
import { fakeRef, fakeRuns } from './fakes/run-store.ts';

const TOKEN = 'follow-token-123';
const auth = { authorization: `Bearer ${TOKEN}` };
const log = pino({ level: 'silent' });
const noEv: EvRuns = { start: async () => assert.fail('no EV run expected'), resume() {} };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-follow-http-'));
  mkdirSync(path.join(dir, 'logs', 'nginx'), { recursive: true });
  writeFileSync(path.join(dir, 'logs', 'access.log'), 'one\ntwo\n');
  writeFileSync(path.join(dir, 'logs', 'nginx', 'a.log'), 'a1\n');
  writeFileSync(path.join(dir, 'logs', 'nginx', 'b.log'), 'b1\n');
  writeFileSync(path.join(dir, 'secret.log'), 'outside\n');
  mkdirSync(path.join(dir, 'logs', 'only-escape'));
  symlinkSync(path.join(dir, 'secret.log'), path.join(dir, 'logs', 'only-escape', 'x.log'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function recordingPublisher() {
  const sent: Record<string, unknown>[] = [];
  const publisher: Publisher = {
    async publish(_exchange, _routingKey, content, options) {
      sent.push({ ...(options.headers as Record<string, unknown>), line: content.toString() });
    },
    async flush() {},
    async close() {},
  };
  return { publisher, sent };
}

function setup(maxConcurrentRuns?: number) {
  const runs = fakeRuns();
  const { publisher, sent } = recordingPublisher();
  const runner = createRunner({ publisher, runs, log, progressEveryMs: 30 });
  const app = createApp({ runs, runner, ev: noEv, logDir: path.join(dir, 'logs'), token: TOKEN, bodyLimitBytes: 1024 * 1024, log, ready: () => true, maxConcurrentRuns, stopWaitMs: 300 });
  return { app, runs, runner, sent };
}

const post = (app: ReturnType<typeof createApp>, url: string, payload?: unknown) => app.inject({ method: 'POST', url, payload: payload as string, headers: auth });

test('follow a file: 202 running, lines published with their file, stop: 200 stopped, then 409', async () => {
  const { app, runs, sent, runner } = setup();
  const res = await post(app, '/v1/runs', { kind: 'logs', file: 'access.log', follow: true });
  assert.equal(res.statusCode, 202, res.body);
  const id = res.json().id as string;
  assert.deepEqual(runs.created[0]!.params, { follow: true, glob: false });
  await sleep(100);
  appendFileSync(path.join(dir, 'logs', 'access.log'), 'three\n');
  for (let i = 0; i < 100 && sent.length < 3; i++) await sleep(20);
  assert.deepEqual(sent.map((m) => [m.lineNo, m.file, m.byteOffset, m.line]), [[1, 'access.log', 0, 'one'], [2, 'access.log', 4, 'two'], [3, 'access.log', 8, 'three']]);
  assert.equal(runner.active, 1, 'still running');
  assert.equal(runs.finished.size, 0);

  const stop = await post(app, `/v1/runs/${id}/stop`);
  assert.equal(stop.statusCode, 200, stop.body);
  const end = runs.finished.get(id)!;
  assert.equal(end.state, 'stopped');
  assert.equal(end.checkpoint?.follow?.nextLineNo, 4);
  assert.equal(runner.active, 0);

  runs.created[0]!.state = 'stopped';
  const again = await post(app, `/v1/runs/${id}/stop`);
  assert.equal(again.statusCode, 409);
  assert.match(again.json().message, /is stopped, not running/);
  await app.close();
});

test('stop: unknown run 404, malformed id 400, an upload 409', async () => {
  const { app, runs } = setup();
  const unknown = await post(app, '/v1/runs/00000000-0000-4000-8000-0000000000aa/stop');
  assert.equal(unknown.statusCode, 404);
  assert.match(unknown.json().message, /not found/);
  assert.equal((await post(app, '/v1/runs/nope/stop')).statusCode, 400);
  const upload = await runs.create({ kind: 'logs', source: 'up', file: null });
  const res = await post(app, `/v1/runs/${upload.id}/stop`);
  assert.equal(res.statusCode, 409);
  assert.match(res.json().message, /upload/);
  await app.close();
});

test('files: a glob under LOG_DIR; file and files exclusive; .., absolute paths, no match, symlinks out refused', async () => {
  const { app, runs, sent } = setup();
  for (const [payload, status, reason] of [
    [{ kind: 'logs', file: 'access.log', files: 'nginx/*.log', follow: true }, 400, /either file or files, not both/],
    [{ kind: 'logs', follow: true }, 400, /file .* or files .* is required/],
    [{ kind: 'logs', files: '../*.log', follow: true }, 400, /must not contain '\.\.'/],
    [{ kind: 'logs', files: 'nginx/../../*.log', follow: true }, 400, /\.\./],
    [{ kind: 'logs', files: '/var/log/*.log', follow: true }, 400, /absolute/],
    [{ kind: 'logs', files: 'nginx/*.nothing', follow: true }, 404, /matches no regular file/],
    [{ kind: 'logs', files: 'only-escape/*.log', follow: true }, 404, /matches no regular file/],
    [{ kind: 'logs', file: 'missing.log', follow: true }, 404, /not found/],
  ] as const) {
    const res = await post(app, '/v1/runs', payload);
    assert.equal(res.statusCode, status, JSON.stringify(payload));
    assert.match(res.json().message, reason, JSON.stringify(payload));
  }
  const res = await post(app, '/v1/runs', { kind: 'logs', files: 'nginx/*.log', follow: true });
  assert.equal(res.statusCode, 202, res.body);
  assert.equal(res.json().source, 'nginx-log');
  assert.equal(res.json().file, 'nginx/*.log');
  assert.deepEqual(runs.created.at(-1)!.params, { follow: true, glob: true });
  for (let i = 0; i < 100 && sent.length < 2; i++) await sleep(20);
  assert.deepEqual(sent.map((m) => [m.file, m.line]).sort(), [['nginx/a.log', 'a1'], ['nginx/b.log', 'b1']]);
  assert.equal((await post(app, `/v1/runs/${res.json().id}/stop`)).statusCode, 200);
  await app.close();
});

test('follow runs count against MAX_CONCURRENT_RUNS', async () => {
  const { app } = setup(1);
  const first = await post(app, '/v1/runs', { kind: 'logs', file: 'access.log', follow: true });
  assert.equal(first.statusCode, 202);
  const second = await post(app, '/v1/runs', { kind: 'logs', files: 'nginx/*.log', follow: true });
  assert.equal(second.statusCode, 429);
  assert.match(second.json().message, /MAX_CONCURRENT_RUNS/);
  assert.equal((await post(app, `/v1/runs/${first.json().id}/stop`)).statusCode, 200);
  const third = await post(app, '/v1/runs', { kind: 'logs', files: 'nginx/*.log', follow: true });
  assert.equal(third.statusCode, 202);
  assert.equal((await post(app, `/v1/runs/${third.json().id}/stop`)).statusCode, 200);
  await app.close();
});

test('a stop that reaches another trigger: the run is marked stopping, its own trigger ends it stopped at its next save', async () => {
  // Two triggers sharing one run store: A executes the run, the request reaches B.
  const runs = fakeRuns();
  const { publisher } = recordingPublisher();
  const a = createRunner({ publisher, runs, log, progressEveryMs: 30 });
  const b = createApp({ runs, runner: createRunner({ publisher, runs, log }), ev: noEv, logDir: path.join(dir, 'logs'), token: TOKEN, bodyLimitBytes: 1024, log, ready: () => true, stopWaitMs: 2_000 });
  const run = await runs.create({ kind: 'logs', source: 'x', file: 'access.log', params: { follow: true, glob: false } });
  // What a real store does: progress is refused once the run is no longer running.
  runs.requestStop = async (id) => {
    const r = await runs.get(id);
    if (r?.state !== 'running') return false;
    r.state = 'stopping';
    return true;
  };
  runs.progress = async (id) => (await runs.get(id))?.state === 'running';
  const finish = runs.finish.bind(runs);
  runs.finish = async (id, end, lease) => {
    if (!(await finish(id, end, lease))) return false;
    (await runs.get(id))!.state = end.state;
    return true;
  };
  a.start(run, followRun({ runId: run.id, source: 'x', logDir: path.join(dir, 'logs'), pattern: 'access.log', glob: false, follow: true, pollMs: 25, log }));
  await sleep(100);
  const res = await post(b, `/v1/runs/${run.id}/stop`);
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.json().state, 'stopped');
  assert.equal(runs.finished.get(run.id)!.state, 'stopped');
  assert.equal(a.active, 0, 'the trigger that executed it let it go');
  await b.close();
});

test('a graceful stop of the trigger hands a follow run back with its checkpoint; resumed, nothing is published twice', async () => {
  const logs = path.join(dir, 'handback');
  mkdirSync(logs);
  writeFileSync(path.join(logs, 'a.log'), 'a1\na2\n');
  writeFileSync(path.join(logs, 'b.log'), 'b1\n');
  const runs = fakeRuns();
  let saved: Checkpoint | null = null;
  runs.progress = async (_id, _l, _p, cp) => ((saved = JSON.parse(JSON.stringify(cp)) as Checkpoint), true);
  const first = recordingPublisher();
  const runner = createRunner({ publisher: first.publisher, runs, log, progressEveryMs: 30 });
  const id = '00000000-0000-4000-8000-00000000b0b0';
  const spec = { runId: id, source: 'x', logDir: logs, pattern: '*.log', glob: true, follow: true, pollMs: 25, log };
  runner.start(fakeRef(id), followRun(spec));
  for (let i = 0; i < 100 && first.sent.length < 3; i++) await sleep(20);
  await runner.stop();
  assert.equal(runs.finished.size, 0, 'not ended: handed back');
  assert.equal(saved!.follow!.nextLineNo, 4);
  assert.deepEqual(saved!.follow!.segments, []);
  appendFileSync(path.join(logs, 'b.log'), 'b2\n');
  const second = recordingPublisher();
  const resumed = createRunner({ publisher: second.publisher, runs, log, progressEveryMs: 30 });
  resumed.start(fakeRef(id), followRun({ ...spec, from: saved!.follow }), saved!);
  for (let i = 0; i < 100 && second.sent.length < 1; i++) await sleep(20);
  await sleep(100);
  await resumed.stopRun(id);
  assert.deepEqual(second.sent.map((m) => [m.lineNo, m.file, m.line]), [[4, 'b.log', 'b2']]);
});
