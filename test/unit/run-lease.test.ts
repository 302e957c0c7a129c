// Runs are fenced (issue 10): a trigger whose run another trigger claimed writes
// nothing more to it and stops publishing it at once; a runner never executes a
// run twice. The real runner over the in-memory run store (fenced like MySQL's).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Publisher } from '../../shared/amqp/publisher.ts';
import { createRunner, RunAlreadyExecuting, type RunWork } from '../../functions/trigger/runner.ts';
import { fakeRuns } from './fakes/run-store.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function setup(opts: { progressEveryMs?: number; leaseMs?: number } = {}) {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk)) as Record<string, unknown>), done()) }));
  const sent: number[] = [];
  const publisher: Publisher = {
    async publish(_exchange, _routingKey, content) {
      sent.push(Number(content.toString()));
    },
    async flush() {},
    async close() {},
  };
  const runs = fakeRuns();
  const writes: { kind: 'progress' | 'finish'; epoch: number; wrote: boolean }[] = [];
  const { progress, finish } = runs;
  runs.progress = async (...args) => {
    const wrote = await progress(...args);
    writes.push({ kind: 'progress', epoch: args[4].epoch, wrote });
    return wrote;
  };
  runs.finish = async (...args) => {
    const wrote = await finish(...args);
    writes.push({ kind: 'finish', epoch: args[2].epoch, wrote });
    return wrote;
  };
  const runner = createRunner({ publisher, runs, log, progressEveryMs: opts.progressEveryMs ?? 20, ...(opts.leaseMs ? { leaseMs: opts.leaseMs } : {}) });
  return { runs, runner, sent, lines, writes };
}

/** Publishes 0, 1, 2... one every `everyMs`, until `count` (or for ever). */
const counting = (everyMs: number, count = Infinity): RunWork => async (out) => {
  for (let i = 0; i < count; i++) {
    await out.publish('logs', 'k', Buffer.from(String(i)), { messageId: String(i) }, { item: i, offset: i });
    await sleep(everyMs);
  }
};

const until = async (what: string, cond: () => boolean, ms = 3_000) => {
  for (const end = Date.now() + ms; !cond(); await sleep(5)) if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
};

test('a claim by another trigger fences the owner: its next save matches nothing, it stops publishing, writes no end', async () => {
  const { runs, runner, sent, lines, writes } = setup();
  const run = await runs.create({ kind: 'logs', file: 'a.log' });
  runner.start(run, counting(2));
  await until('a few saves', () => writes.filter((w) => w.wrote).length >= 2);
  runs.takeOver(run.id, 'trigger-b');
  await until('the runner to let the run go', () => runner.active === 0);
  const at = sent.length;
  await sleep(100);
  assert.equal(sent.length, at, 'nothing published after the fenced save');
  const refused = writes.filter((w) => !w.wrote);
  assert.equal(refused.length, 1, 'one refused write, then nothing more');
  assert.deepEqual(refused[0], { kind: 'progress', epoch: 1, wrote: false });
  assert.ok(writes.every((w) => w.kind === 'progress'), 'no end recorded: neither done nor failed, no hand-back');
  assert.equal(runs.finished.size, 0);
  const warn = lines.find((l) => l.msg === 'run claimed by another trigger: stopped publishing it here');
  assert.ok(warn, 'logged');
  assert.equal(warn.runId, run.id);
  assert.ok(!lines.some((l) => l.msg === 'run failed' || l.msg === 'run done'));
});

test('past most of its lease without a save (a paused trigger), the owner confirms the lease before it publishes again', async () => {
  // No periodic save in time: only the lease check in publish() saves.
  const { runs, runner, sent, lines, writes } = setup({ progressEveryMs: 60_000, leaseMs: 200 });
  const run = await runs.create({ kind: 'logs', file: 'a.log' });
  let paused = false;
  runner.start(run, async (out) => {
    for (let i = 0; ; i++) {
      await out.publish('logs', 'k', Buffer.from(String(i)), { messageId: String(i) }, { item: i, offset: i });
      if (i === 4) {
        // The event loop of a SIGSTOPped trigger: meanwhile another trigger claims the run.
        paused = true;
        await sleep(250);
      }
    }
  });
  await until('the pause', () => paused);
  runs.takeOver(run.id, 'trigger-b');
  await until('the runner to let the run go', () => runner.active === 0);
  assert.deepEqual(sent, [0, 1, 2, 3, 4], 'not one message published after the pause');
  assert.deepEqual(writes, [{ kind: 'progress', epoch: 1, wrote: false }]);
  assert.ok(lines.some((l) => l.msg === 'run claimed by another trigger: stopped publishing it here'));
});

test('a run whose work ends after it was claimed elsewhere is not ended by the old owner', async () => {
  const { runs, runner, lines } = setup({ progressEveryMs: 60_000 });
  const run = await runs.create({ kind: 'logs', file: 'a.log' });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const done = runner.runNow(run, async (out) => {
    await out.publish('logs', 'k', Buffer.from('0'), { messageId: '0' }, { item: 0, offset: 0 });
    await gate;
  });
  runs.takeOver(run.id);
  release();
  await assert.rejects(done, { name: 'RunFenced' });
  assert.equal(runs.finished.size, 0, 'the finish matched no row');
  assert.ok(lines.some((l) => l.msg === 'run claimed by another trigger: its end is not recorded here'));
});

test('the runner refuses to execute a run it already executes', async () => {
  const { runs, runner, sent, lines } = setup();
  const run = await runs.create({ kind: 'logs', file: 'a.log' });
  let second = 0;
  runner.start(run, counting(2));
  await until('publishing', () => sent.length > 3);
  runner.start(run, async () => void second++);
  await assert.rejects(runner.runNow(run, async () => void second++), RunAlreadyExecuting);
  // Even under the lease of a new claim: the execution here is still the only one.
  await assert.rejects(runner.runNow({ ...run, epoch: run.epoch + 1 }, async () => void second++), RunAlreadyExecuting);
  assert.equal(second, 0, 'the second work never ran');
  assert.equal(runner.active, 1);
  assert.deepEqual(runner.executing(), [run.id]);
  assert.equal(lines.filter((l) => l.msg === 'run already executed by this trigger: not started again').length, 3);
  // Once it ended, the run may be executed again (a stop, then a claim).
  await runner.stopRun(run.id);
  assert.equal(runner.active, 0);
  await runner.runNow(run, async () => void second++).catch(() => {});
  assert.equal(second, 1);
});
