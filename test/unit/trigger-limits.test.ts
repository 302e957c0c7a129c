// Limits on every input of the trigger (issue "limits on every input"), with Fastify's
// app.inject() and hand-written fakes of its ports: the real runner over a fake publisher,
// a fake run store and database pool. Every refusal is a 4xx whose message names what was
// wrong; nothing is dropped silently; the event loop stays free while big runs are planned.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { pino } from 'pino';
import { createApp, type AppDeps } from '../../functions/trigger/app.ts';
import { DEV_TOKEN, exposureProblems, isLoopback, triggerConfigProblems } from '../../functions/trigger/config.ts';
import { createEvRuns, type EvRuns } from '../../functions/trigger/ev-runs.ts';
import { createRunner, type Runner } from '../../functions/trigger/runner.ts';
import { fakeRuns } from './fakes/run-store.ts';
import type { Publisher } from '../../shared/amqp/publisher.ts';
import type { Pool } from '../../shared/db/pool.ts';
import { loadCatalog } from '../../functions/trigger/ev-catalog.ts';
import { countRunMessages, planRun, planRunSliced, simulateRun, type SimOptions } from '../../functions/trigger/ev-simulator.ts';
import { createMetrics } from '../../shared/metrics.ts';

const TOKEN = 'limits-token-123';
const auth = { authorization: `Bearer ${TOKEN}` };
const text = { ...auth, 'content-type': 'text/plain' };
const json = { ...auth, 'content-type': 'application/json' };
const log = pino({ level: 'silent' });
const catalog = loadCatalog();


/** A broker that confirms at once, or holds every confirm until release(). */
function fakePublisher(): Publisher & { sent: { routingKey: string; content: Buffer }[]; hold(): void; release(): void } {
  const sent: { routingKey: string; content: Buffer }[] = [];
  let held: (() => void)[] | null = null;
  return {
    sent,
    async publish(_exchange, routingKey, content) {
      sent.push({ routingKey, content });
      if (held) await new Promise<void>((resolve) => held!.push(resolve));
    },
    async flush() {},
    async close() {},
    hold() {
      held = [];
    },
    release() {
      const waiting = held ?? [];
      held = null;
      for (const confirm of waiting) confirm();
    },
  };
}

/** A database pool that records its queries. */
function fakePool(): Pool & { queries: { sql: string; values: unknown }[] } {
  const queries: { sql: string; values: unknown }[] = [];
  return {
    queries,
    async query(sql: string, values: unknown) {
      queries.push({ sql, values });
      return [[], []];
    },
  } as unknown as Pool & { queries: { sql: string; values: unknown }[] };
}

/** A runner that records what it was asked to start, and runs nothing. */
function idleRunner(): Runner & { started: string[] } {
  const started: string[] = [];
  return {
    started,
    start: (run) => void started.push(run.id),
    runNow: async () => ({ lines: 0, published: 0 }),
    stopRun: () => null, executing: () => [],
    active: 0,
    stop: async () => {},
  };
}

const noEv: EvRuns = {
  start: async () => assert.fail('no EV run expected'),
  resume() {},
};

let dir: string;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'sluice-limits-'));
  mkdirSync(path.join(dir, 'logs'));
  writeFileSync(path.join(dir, 'logs', 'access.log'), 'line one\nline two\n');
});
after(() => rmSync(dir, { recursive: true, force: true }));

function setup(over: Partial<AppDeps> = {}) {
  const runs = fakeRuns();
  const publisher = fakePublisher();
  const runner = createRunner({ publisher, runs, log });
  const app = createApp({
    runs, runner, ev: noEv, logDir: path.join(dir, 'logs'), token: TOKEN, bodyLimitBytes: 1024 * 1024,
    log, ready: () => true, metrics: createMetrics('trigger').registry, ...over,
  });
  return { app, runs, publisher, runner };
}

/** Event-loop turns until `cond` holds (fails after `max`): no wall clock involved. */
async function turnsUntil(cond: () => boolean, max = 100_000): Promise<number> {
  let turns = 0;
  while (!cond()) {
    if (++turns > max) assert.fail(`condition not met after ${max} event-loop turns`);
    await nextTurn();
  }
  return turns;
}

/** Counts event-loop turns until stop() is called. */
function turnCounter() {
  let turns = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      await nextTurn();
      turns++;
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return turns;
    },
  };
}

/** `count` chunks of ten 10-byte lines ("l-0000001\n"): 100 bytes each. */
function* lineChunks(count: number, produced: { chunks: number }): Generator<Buffer> {
  for (let c = 0; c < count; c++) {
    produced.chunks++;
    let s = '';
    for (let l = 1; l <= 10; l++) s += `l-${String(c * 10 + l).padStart(7, '0')}\n`;
    yield Buffer.from(s);
  }
}

describe('POST /v1/logs streams its body under BODY_LIMIT_MB', () => {
  test('a Content-Length above the limit is 413 at once: no run, nothing read', async () => {
    const { app, runs, publisher } = setup({ bodyLimitBytes: 1000 });
    const res = await app.inject({ method: 'POST', url: '/v1/logs?source=big', payload: 'x\n'.repeat(600), headers: text });
    assert.equal(res.statusCode, 413);
    assert.equal(res.json().error, 'Content Too Large');
    assert.equal(res.json().message, 'request body of 1,200 bytes (Content-Length) is larger than the limit of 1,000 bytes (BODY_LIMIT_MB=0.000953674); nothing was read or published');
    assert.equal(res.headers.connection, 'close');
    assert.equal(runs.created.length, 0);
    assert.equal(publisher.sent.length, 0);
  });

  test('a chunked body past the limit stops reading, answers 413 with the lines published, and fails the run', async () => {
    const { app, runs, publisher, runner } = setup({ bodyLimitBytes: 1005 });
    const produced = { chunks: 0 };
    const total = 100_000; // 10,000,000 bytes
    const res = await app.inject({ method: 'POST', url: '/v1/logs?source=big', payload: Readable.from(lineChunks(total, produced), { objectMode: false }), headers: text });
    assert.equal(res.statusCode, 413);
    assert.equal(res.headers.connection, 'close');
    assert.equal(runs.created.length, 1);
    const run = runs.created[0]!;
    // The first 1005 bytes hold 100 whole lines (line 101 is cut at the limit and not published).
    const message = res.json().message as string;
    assert.equal(
      message,
      `request body is larger than the limit of 1,005 bytes (BODY_LIMIT_MB=0.000958443): reading stopped at the limit. ` +
        `The first 100 lines were published before it and stay published; run ${run.id} is failed with this reason. ` +
        'Upload the rest (from line 101) separately, or raise BODY_LIMIT_MB.',
    );
    assert.equal(publisher.sent.length, 100);
    assert.equal(publisher.sent.at(-1)!.content.toString(), 'l-0000100');
    assert.deepEqual(runs.finished.get(run.id), { state: 'failed', lines: 100, published: 100, error: message });
    assert.ok(produced.chunks < total / 10, `stopped reading: ${produced.chunks} of ${total} chunks produced`);
    assert.equal(runner.active, 0);
  });

  test('the body is consumed as a stream: the broker sees the first lines before the body has ended', async () => {
    const { app, runs, publisher } = setup();
    const body = new PassThrough();
    const pending = app.inject({ method: 'POST', url: '/v1/logs?source=live', payload: body, headers: text });
    body.write('first\nsecond\n');
    await turnsUntil(() => publisher.sent.length === 2);
    const seenBeforeEnd = publisher.sent.map((m) => m.content.toString());
    body.write('thi');
    body.end('rd\nlast');
    const res = await pending;
    assert.deepEqual(seenBeforeEnd, ['first', 'second']);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { id: runs.created[0]!.id, lines: 4 });
    assert.deepEqual(publisher.sent.map((m) => [m.routingKey, m.content.toString()]), [
      ['logs.live.access', 'first'], ['logs.live.access', 'second'], ['logs.live.access', 'third'], ['logs.live.access', 'last'],
    ]);
    assert.equal(runs.finished.get(runs.created[0]!.id)?.state, 'done');
  });

  test('an upload at exactly the limit is accepted', async () => {
    const { app } = setup({ bodyLimitBytes: 1000 });
    const res = await app.inject({ method: 'POST', url: '/v1/logs', payload: Readable.from(lineChunks(10, { chunks: 0 }), { objectMode: false }), headers: text });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().lines, 100);
  });

  test('the answer waits for every confirm', async () => {
    const { app, publisher } = setup();
    publisher.hold();
    let answered = false;
    const pending = app.inject({ method: 'POST', url: '/v1/logs', payload: 'a\nb\n', headers: text }).then((r) => ((answered = true), r));
    await turnsUntil(() => publisher.sent.length === 2);
    for (let i = 0; i < 50; i++) await nextTurn();
    assert.equal(answered, false);
    publisher.release();
    assert.deepEqual((await pending).json().lines, 2);
  });
});

describe('MAX_CONCURRENT_RUNS', () => {
  test('past the limit, POST /v1/runs and POST /v1/logs answer 429 with Retry-After, and nothing starts', async () => {
    const { app, runs, publisher, runner } = setup({ maxConcurrentRuns: 2 });
    publisher.hold(); // runs stay in flight until their messages are confirmed
    for (let i = 0; i < 2; i++) assert.equal((await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log' }, headers: json })).statusCode, 202);
    assert.equal(runner.active, 2);
    const refused = [
      await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log' }, headers: json }),
      await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'ev', sessions: 1 }, headers: json }),
      await app.inject({ method: 'POST', url: '/v1/logs', payload: 'a\n', headers: text }),
    ];
    for (const res of refused) {
      assert.equal(res.statusCode, 429);
      assert.equal(res.headers['retry-after'], '5');
      assert.deepEqual(res.json(), {
        statusCode: 429,
        error: 'Too Many Requests',
        message: 'too many runs: this trigger is executing 2 runs and its limit is 2 (MAX_CONCURRENT_RUNS); retry in 5 s',
      });
    }
    assert.equal(runs.created.length, 2);
    // Reads are not limited.
    assert.equal((await app.inject({ url: '/v1/runs', headers: auth })).statusCode, 200);
    publisher.release();
    await turnsUntil(() => runner.active === 0);
    assert.equal((await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log' }, headers: json })).statusCode, 202);
  });

  test('an upload in progress counts as a run', async () => {
    const { app, runner } = setup({ maxConcurrentRuns: 1 });
    const body = new PassThrough();
    const upload = app.inject({ method: 'POST', url: '/v1/logs', payload: body, headers: text });
    body.write('a\n');
    await turnsUntil(() => runner.active === 1);
    const res = await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log' }, headers: json });
    assert.equal(res.statusCode, 429);
    assert.match(res.json().message, /limit is 1 \(MAX_CONCURRENT_RUNS\)/);
    body.end('b\n');
    assert.equal((await upload).json().lines, 2);
    assert.equal((await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'logs', file: 'access.log' }, headers: json })).statusCode, 202);
  });

  test('a run still being planned counts: two requests at once under a limit of 1 get 202 and 429', async () => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const runs = fakeRuns();
    let planning = 0;
    const ev: EvRuns = {
      async start(request) {
        planning++;
        await gate; // still planning: not in runner.active yet
        return runs.create({ kind: 'ev', params: request });
      },
      resume() {},
    };
    const { app } = setup({ maxConcurrentRuns: 1, ev });
    // A promise that never settles is no reason for the event loop to stay up: keep it turning.
    const turns = turnCounter();
    const first = app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'ev', sessions: 1 }, headers: json });
    await turnsUntil(() => planning === 1);
    const second = await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'ev', sessions: 1 }, headers: json });
    assert.equal(second.statusCode, 429);
    assert.equal(planning, 1);
    open();
    assert.equal((await first).statusCode, 202);
    await turns.stop();
  });
});

describe('EV runs: MAX_RUN_MESSAGES, and planning that leaves the event loop free', () => {
  function evSetup(maxRunMessages?: number) {
    const runs = fakeRuns();
    const runner = idleRunner();
    const pool = fakePool();
    const ev = createEvRuns({ runs, runner, pool, catalog, ...(maxRunMessages ? { maxRunMessages } : {}) });
    const app = createApp({ runs, runner, ev, logDir: path.join(dir, 'logs'), token: TOKEN, bodyLimitBytes: 1024 * 1024, log, ready: () => true });
    return { app, runs, runner, pool };
  }

  test('{"sessions":100000,"sampleIntervalS":1} is refused with 400 naming the count and the limit; /healthz answers meanwhile', async () => {
    const { app, runs, runner, pool } = evSetup();
    const turns = turnCounter();
    const order: string[] = [];
    const big = app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'ev', sessions: 100_000, sampleIntervalS: 1 }, headers: json }).then((r) => (order.push('ev'), r));
    const health = app.inject({ url: '/healthz' }).then((r) => (order.push('healthz'), r));
    const [res, h] = await Promise.all([big, health]);
    const turned = await turns.stop();
    assert.equal(res.statusCode, 400);
    assert.match(
      res.json().message,
      /^this run would publish about [\d,]{13} messages \(sessions 100000 x about [\d,]+ readings at sampleIntervalS 1, plus [\d,]+ clock ticks and 100,000 quiet notices\); the limit is 5,000,000 \(MAX_RUN_MESSAGES\): ask for about [\d,]+ sessions or fewer, or a longer sampleIntervalS$/,
    );
    assert.equal(h.statusCode, 200);
    assert.deepEqual(order, ['healthz', 'ev'], 'the health check was answered while the run was being counted');
    assert.ok(turned >= 10, `the event loop turned ${turned} times while counting`);
    assert.equal(runs.created.length, 0, 'no run recorded');
    assert.equal(pool.queries.length, 0, 'no truth recorded');
    assert.deepEqual(runner.started, []);
  });

  test('a run just over the limit is counted exactly, and one at the limit is accepted', async () => {
    const opts: SimOptions = { runId: 'x', sessions: 3, seed: 5, sampleIntervalS: 30, faultRate: 0.5, startTime: new Date(), catalog };
    const items = [...simulateRun(opts)];
    const readings = items.filter((i) => i.kind === 'reading').length;
    const clocks = items.filter((i) => i.kind === 'clock').length;
    assert.equal(items.length, readings + clocks + 3, 'one quiet notice per session');
    const payload = { kind: 'ev', sessions: 3, seed: 5, faultRate: 0.5 };
    const over = evSetup(items.length - 1);
    const res = await over.app.inject({ method: 'POST', url: '/v1/runs', payload, headers: json });
    assert.equal(res.statusCode, 400);
    const n = (x: number) => x.toLocaleString('en-US');
    assert.equal(
      res.json().message,
      `this run would publish ${n(items.length)} messages (sessions 3 x about ${n(Math.round(readings / 3))} readings at sampleIntervalS 30, plus ${n(clocks)} clock ticks and 3 quiet notices); ` +
        `the limit is ${n(items.length - 1)} (MAX_RUN_MESSAGES): ask for about 2 sessions or fewer, or a longer sampleIntervalS`,
    );
    assert.equal(over.runs.created.length, 0);
    const exact = evSetup(items.length);
    assert.equal((await exact.app.inject({ method: 'POST', url: '/v1/runs', payload, headers: json })).statusCode, 202);
    assert.equal(exact.runner.started.length, 1);
  });

  test('a single session over the limit says so', async () => {
    const { app } = evSetup(10);
    const res = await app.inject({ method: 'POST', url: '/v1/runs', payload: { kind: 'ev', sessions: 1, seed: 1 }, headers: json });
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /the limit is 10 \(MAX_RUN_MESSAGES\): even one session is too many at sampleIntervalS 30; use a longer sampleIntervalS$/);
  });

  test('a big accepted run is planned in slices: requests are served while it is planned', async () => {
    const { app, runs, runner, pool } = evSetup();
    const turns = turnCounter();
    const order: string[] = [];
    const payload = { kind: 'ev', sessions: 10_000, seed: 3, sampleIntervalS: 3600, faultRate: 0.2 };
    const big = app.inject({ method: 'POST', url: '/v1/runs', payload, headers: json }).then((r) => (order.push('ev'), r));
    const health = app.inject({ url: '/healthz' }).then((r) => (order.push('healthz'), r));
    const list = app.inject({ url: '/v1/runs', headers: auth }).then((r) => (order.push('list'), r));
    const [res] = await Promise.all([big, health, list]);
    const turned = await turns.stop();
    assert.equal(res.statusCode, 202, res.body);
    assert.deepEqual(order.slice(-1), ['ev']);
    assert.ok(turned >= 40, `the event loop turned ${turned} times while 10,000 sessions were planned (40 slices of 250)`);
    assert.deepEqual(runner.started, [runs.created[0]!.id]);
    // The truth of the faulted sessions is recorded, in batches of 1,000.
    const truth = pool.queries.flatMap((q) => (q.values as [unknown[][]])[0]);
    assert.ok(truth.length > 1_500 && truth.length < 2_500, `${truth.length} faulted sessions`);
  });

  test('sliced planning is planRun, pausing between slices', async () => {
    for (const over of [{ sessions: 1 }, { sessions: 999, faultRate: 0.4 }, { sessions: 1_000, seed: 9, sampleIntervalS: 5 }]) {
      const opts: SimOptions = { runId: 'run-1', seed: 42, sampleIntervalS: 30, faultRate: 0, startTime: new Date('2025-03-01T08:00:00Z'), catalog, ...over };
      let pauses = 0;
      const sliced = await planRunSliced(opts, { sliceSize: 100, pause: async () => void pauses++ });
      assert.deepEqual(sliced, planRun(opts));
      assert.equal(pauses, Math.ceil(opts.sessions / 100) - 1);
    }
  });

  test('countRunMessages counts exactly what simulateRun yields, and stops past the limit', async () => {
    for (const over of [{ sessions: 40, faultRate: 1 }, { sessions: 60, faultRate: 0.3, sampleIntervalS: 7 }, { sessions: 5, sampleIntervalS: 3600 }, { sessions: 1 }]) {
      const opts: SimOptions = { runId: 'run-1', seed: 7, sampleIntervalS: 30, faultRate: 0, startTime: new Date('2025-03-01T08:00:00Z'), catalog, ...over };
      const items = [...simulateRun(opts)];
      const count = await countRunMessages(opts);
      assert.deepEqual(count, {
        messages: items.length,
        readings: items.filter((i) => i.kind === 'reading').length,
        clocks: items.filter((i) => i.kind === 'clock').length,
        quiet: items.filter((i) => i.kind === 'quiet').length,
        sessionsCounted: opts.sessions,
        exact: true,
      });
    }
    // a run recorded before quiet notices counts none
    const before: SimOptions = { runId: 'run-1', sessions: 12, seed: 7, sampleIntervalS: 30, faultRate: 0.5, startTime: new Date('2025-03-01T08:00:00Z'), catalog, announceQuiet: false };
    const old = await countRunMessages(before);
    assert.deepEqual([old.messages, old.quiet], [[...simulateRun(before)].length, 0]);
    const opts: SimOptions = { runId: 'run-1', sessions: 100_000, seed: 1, sampleIntervalS: 1, faultRate: 0, startTime: new Date(), catalog };
    let pauses = 0;
    const over = await countRunMessages(opts, { limit: 1_000_000, pause: async () => void pauses++ });
    assert.equal(over.exact, false);
    assert.ok(over.sessionsCounted < 1_000 && over.messages > 100_000_000, JSON.stringify(over));
    assert.ok(pauses >= 5, `${pauses} pauses`);
  });
});

describe('the development token only on loopback', () => {
  const urls = { AMQP_URL: 'amqp://u:p@127.0.0.1:5672', MYSQL_URL: 'mysql://u:p@127.0.0.1:3306/sluice' };

  test('HTTP_HOST defaults to 127.0.0.1, where the dev token is accepted', () => {
    assert.deepEqual(triggerConfigProblems(urls), []);
    for (const host of ['127.0.0.1', '::1', 'localhost', 'LOCALHOST', '[::1]', '127.0.0.2']) assert.ok(isLoopback(host), host);
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'trigger.example', '127.0.0.1.example']) assert.ok(!isLoopback(host), host);
  });

  test('the dev token on a non-loopback host is a config error naming TRIGGER_TOKEN and HTTP_HOST', () => {
    const problems = triggerConfigProblems({ ...urls, HTTP_HOST: '0.0.0.0' });
    assert.deepEqual(problems, [
      'TRIGGER_TOKEN is the development default while HTTP_HOST="0.0.0.0" is reachable from other machines: ' +
        'set TRIGGER_TOKEN to a secret of your own (at least 8 characters), or HTTP_HOST to 127.0.0.1, ::1 or localhost',
    ]);
    assert.deepEqual(triggerConfigProblems({ ...urls, HTTP_HOST: '0.0.0.0', TRIGGER_TOKEN: 'a-real-token-0123' }), []);
    assert.deepEqual(exposureProblems({ TRIGGER_TOKEN: DEV_TOKEN, HTTP_HOST: '::1' }), []);
    // Named with the other bad variables, in one error.
    const both = triggerConfigProblems({ ...urls, HTTP_HOST: '0.0.0.0', MAX_CONCURRENT_RUNS: '0' });
    assert.equal(both.length, 2);
    assert.match(both.join('\n'), /MAX_CONCURRENT_RUNS="0"/);
    assert.match(both.join('\n'), /TRIGGER_TOKEN is the development default/);
  });

  test('the trigger exits 78 before connecting anywhere', () => {
    const root = path.resolve(import.meta.dirname, '../..');
    const r = spawnSync(process.execPath, [path.join(root, 'functions/trigger/index.ts')], {
      cwd: root,
      env: { PATH: process.env.PATH, ...urls, HTTP_HOST: '0.0.0.0' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 78, r.stderr);
    assert.match(r.stderr, /^trigger: invalid configuration:\n {2}- TRIGGER_TOKEN is the development default while HTTP_HOST="0.0.0.0"/);
  });

  test('new limits have defaults and are validated', async () => {
    const { loadFunctionConfig } = await import('../../shared/config.ts');
    const { configShape } = await import('../../functions/trigger/config.ts');
    const c = loadFunctionConfig(configShape, urls);
    assert.equal(c.HTTP_HOST, '127.0.0.1');
    assert.equal(c.MAX_CONCURRENT_RUNS, 8);
    assert.equal(c.MAX_RUN_MESSAGES, 5_000_000);
  });
});

describe('/metrics is behind the token', () => {
  test('only /healthz is open', async () => {
    const { app } = setup();
    assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200);
    assert.equal((await app.inject({ url: '/healthz?verbose=1' })).statusCode, 200);
    const anonymous = await app.inject({ url: '/metrics' });
    assert.equal(anonymous.statusCode, 401);
    assert.equal(anonymous.json().message, 'missing Authorization: Bearer <TRIGGER_TOKEN> header');
    assert.equal((await app.inject({ url: '/metrics', headers: { authorization: 'Bearer wrong' } })).statusCode, 401);
    const res = await app.inject({ url: '/metrics', headers: auth });
    assert.equal(res.statusCode, 200);
    assert.match(res.body, /^# HELP sluice_published_total/m);
  });
});
