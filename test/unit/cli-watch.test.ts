// `sluice runs ID --watch` against a fake Api whose run moves through states: exit codes by how the
// run ends, the terminal's progress line (bar, rate, ETA), plain lines off a terminal, NDJSON,
// and a trigger that stops answering for a while (a restart) or for good.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Api } from '../../cli/client.ts';
import { UnreachableError } from '../../cli/errors.ts';
import { painter } from '../../cli/format.ts';
import { run } from '../../cli/program.ts';
import { bar, etaMs, progressLine, RateMeter, spinnerBar, totalOf, watchRun, type WatchIO } from '../../cli/watch.ts';
import type { RunView } from '../../cli/views.ts';

const ID = '7d4f2ea4-e968-4e57-9493-ca46273bc163';
const base: RunView = {
  id: ID, kind: 'logs', state: 'running', source: 'web', file: 'access.log', params: null, lines: 0, published: 0, error: null,
  createdAt: '2026-11-25T21:36:00.000Z', updatedAt: '2026-11-25T21:36:00.000Z', finishedAt: null, stored: { raw_logs: 0, web_requests: 0, log_rejects: 0 },
};

/** An Api whose GET /v1/runs/:id answers the given steps in turn (the last one for ever); an Error step is thrown. */
function steppingApi(steps: (Partial<RunView> | Error)[]) {
  let i = 0;
  const api: Api = {
    url: 'http://fake',
    async get() {
      const step = steps[Math.min(i++, steps.length - 1)]!;
      if (step instanceof Error) throw step;
      return { ...base, ...step };
    },
    async post() {
      throw new Error('not used');
    },
    async upload() {
      throw new Error('not used');
    },
  };
  return { api, polls: () => i };
}

/** A clock that moves one second per sleep. */
function io(tty: boolean) {
  let now = Date.parse('2026-11-25T21:36:01Z');
  let out = '';
  let warn = '';
  const w: WatchIO = {
    write: (s) => void (out += s),
    warn: (s) => void (warn += `${s}\n`),
    tty,
    columns: () => 120,
    paint: painter(false),
    now: () => now,
    sleep: async (ms) => void (now += ms),
  };
  return { w, out: () => out, warn: () => warn };
}

test('rate over a window, ETA from it, bars', () => {
  const m = new RateMeter(10_000);
  assert.ok(Number.isNaN(m.perSecond));
  m.add(0, 0);
  m.add(1000, 500);
  m.add(2000, 1500);
  assert.equal(m.perSecond, 750);
  m.add(20_000, 1500); // the old samples leave the window
  assert.equal(m.perSecond, 0);
  assert.equal(etaMs(1000, 3000, 500), 4000);
  assert.ok(Number.isNaN(etaMs(1000, 3000, 0)));
  assert.equal(bar(1, 4, 8), '[██░░░░░░]');
  assert.equal(bar(9, 4, 4), '[████]');
  assert.equal(spinnerBar(0, 8).length, 10);
  assert.notEqual(spinnerBar(0, 8), spinnerBar(2, 8), 'the block moves');
});

test('the terminal line: a bar with done/total, rate and ETA once the total is known; elapsed while it is not', () => {
  const storing = progressLine({ run: { ...base, state: 'done', published: 20_000, stored: { raw_logs: 15_000, web_requests: 14_990, log_rejects: 10 } }, phase: 'store', rate: 2_500, tick: 3, now: Date.parse('2026-11-25T21:36:05Z') }, painter(false), 120);
  assert.match(storing, /^storing\s+\[█+░+\]\s+15,000\/20,000 stored\s+2,500\/s\s+ETA 2s$/);
  const publishing = progressLine({ run: { ...base, published: 12_345, stored: { raw_logs: 12_000, web_requests: 11_000, log_rejects: 5 } }, phase: 'publish', rate: 4_100, tick: 3, now: Date.parse('2026-11-25T21:36:05Z') }, painter(false), 120);
  assert.match(publishing, /^running\s+\[░*███░*\]\s+12,345 lines\s+4,100\/s\s+elapsed 5s\s+stored 11,005$/);
  assert.ok(progressLine({ run: base, phase: 'publish', rate: NaN, tick: 0, now: 0 }, painter(false), 40).length <= 39, 'fits the terminal');
});

test('a run that ends done exits 0, failed exits 1 (its reason shown), stopped exits 0', async () => {
  const ended = (state: 'done' | 'failed' | 'stopped', error: string | null = null) => ({ state, published: 300, lines: 300, finishedAt: '2026-11-25T21:36:03.000Z', error });
  for (const [state, code, error] of [['done', 0, null], ['failed', 1, 'the broker refused the message: NO_ROUTE'], ['stopped', 0, null]] as const) {
    const { api } = steppingApi([{ published: 100 }, { published: 200 }, ended(state, error)]);
    let out = '';
    const exit = await run(['runs', ID, '--watch'], {
      api: () => api,
      io: { out: (s) => void (out += s), err: () => {}, stdoutTty: false, stderrTty: false, columns: () => 120, paint: painter(false), paintErr: painter(false), now: () => Date.now(), sleep: async () => {} },
    });
    assert.equal(exit, code, state);
    assert.match(out, new RegExp(`run ${ID} ${state}: 300 lines published`), state);
    if (error) assert.match(out, new RegExp(error), 'the reason of the failure is shown');
  }
});

test('off a terminal: a plain line at most every 5 s and at each change of state, then the end', async () => {
  const steps: Partial<RunView>[] = Array.from({ length: 12 }, (_, i) => ({ published: (i + 1) * 1000 }));
  steps.push({ state: 'done', published: 12_500, finishedAt: '2026-11-25T21:36:14.000Z' });
  const { api } = steppingApi(steps);
  const t = io(false);
  const last = await watchRun(api, ID, t.w, { json: false });
  assert.equal(last.state, 'done');
  const lines = t.out().trimEnd().split('\n');
  assert.equal(lines.length, 4, t.out()); // t=1 s, 6 s, 11 s, the end
  assert.match(lines[0]!, new RegExp(`^2026-11-25T21:36:01Z run ${ID} running: 1,000 published, –; stored raw_logs 0`));
  assert.match(lines[1]!, /running: 6,000 published, 1,000\/s/);
  assert.match(lines[3]!, /done: 12,500 lines published/);
  assert.ok(!t.out().includes('\r'), 'no terminal control characters in a pipe');
});

test('--json: one line of the API run JSON per change (NDJSON), the end last', async () => {
  const { api } = steppingApi([{ published: 10 }, { published: 10, updatedAt: '2026-11-25T21:36:02.000Z' }, { published: 20 }, { state: 'done', published: 30 }]);
  const t = io(true);
  await watchRun(api, ID, t.w, { json: true });
  const lines = t.out().trimEnd().split('\n').map((l) => JSON.parse(l) as RunView);
  assert.deepEqual(lines.map((r) => [r.state, r.published]), [['running', 10], ['running', 20], ['done', 30]]);
  assert.deepEqual(lines[2], { ...base, state: 'done', published: 30 });
});

test('--stored: after done, on to the consumers: ends once every published line is stored', async () => {
  const { api, polls } = steppingApi([
    { state: 'done', published: 100, stored: { raw_logs: 40, web_requests: 30, log_rejects: 0 } },
    { state: 'done', published: 100, stored: { raw_logs: 100, web_requests: 90, log_rejects: 1 } },
    { state: 'done', published: 100, stored: { raw_logs: 100, web_requests: 99, log_rejects: 1 } },
  ]);
  const t = io(true);
  await watchRun(api, ID, t.w, { json: false, stored: true });
  assert.equal(polls(), 3);
  assert.match(t.out(), /storing\s+\[█+░+\]\s+30\/100 stored/);
  assert.match(t.out(), /storing\s+\[█+░*\]\s+91\/100 stored\s+\S+\s+ETA/);
  assert.match(t.out(), /done: 100 lines published.*stored raw_logs 100 · web_requests 99 · log_rejects 1/);
});

test('a trigger that stops answering for a while is waited for; one gone for good ends the watch (exit 3)', async () => {
  const down = new UnreachableError('http://fake', 'connect ECONNREFUSED');
  const restart = steppingApi([{ published: 10 }, down, down, { state: 'done', published: 20 }]);
  const t = io(false);
  assert.equal((await watchRun(restart.api, ID, t.w, { json: false, unreachableForMs: 30_000 })).state, 'done');
  assert.match(t.warn(), /lost contact with the API \(connect ECONNREFUSED\); retrying for 30s\n.*answers again/);

  const gone = steppingApi([{ published: 10 }, down]);
  let err = '';
  const exit = await run(['runs', ID, '--watch'], {
    api: () => gone.api,
    io: { out: () => {}, err: (s) => void (err += s), stdoutTty: false, stderrTty: false, columns: () => 120, paint: painter(false), paintErr: painter(false), now: (() => { let n = 0; return () => (n += 1000); })(), sleep: async () => {} },
  });
  assert.equal(exit, 3);
  assert.match(err, /cannot reach the sluice API/);
});

test('a replay\'s total: the API\'s, or estimated from the file\'s size and the confirmed part; none for a follow', () => {
  const base = { id: 'r', kind: 'logs', state: 'running', published: 4_000 } as unknown as RunView;
  const at = (over: Record<string, unknown>) => ({ ...base, ...over }) as unknown as RunView;
  assert.equal(totalOf(at({ total: 9_000 })), 9_000);
  // 3,000 lines confirmed in the first 300,000 bytes of a 1,000,000-byte file: about 10,000 lines.
  assert.equal(totalOf(at({ fileBytes: 1_000_000, checkpoint: { item: 3_000, offset: 300_000 } })), 10_000);
  assert.equal(totalOf(at({ fileBytes: 1_000_000, checkpoint: { item: 0, offset: 0 } })), null, 'nothing confirmed yet: no estimate');
  assert.equal(totalOf(at({ state: 'done', fileBytes: 1_000_000, checkpoint: { item: 0, offset: 0 } })), 4_000, 'over: what it published');
  assert.equal(totalOf(at({ checkpoint: { item: 3_000, offset: 300_000 } })), null, 'a follow or an upload has no size');
  const line = progressLine({ run: at({ fileBytes: 1_000_000, checkpoint: { item: 3_000, offset: 300_000 } }), phase: 'publish', rate: 2_000, tick: 0, now: 0 }, painter(false), 120);
  assert.match(line, /4,000\/10,000 lines .*ETA 3s/);
});
