import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { backoff, periodic, reuseCostly, sleep, type Periodic } from '../../shared/timing.ts';

const quiet = pino({ level: 'silent' });

/** A promise and the function that resolves it. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { opened, open };
}

/** Polls `cond` on real short timers (no assertion on how long it takes). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('backoff', () => {
  const opts = { baseMs: 100, maxMs: 5_000 };

  test('without jitter: base, doubling, capped at max', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 50, 10_000].map((n) => backoff(n, opts, () => 0)), [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    assert.equal(backoff(0, opts, () => 0), 100, 'an attempt below 1 counts as the first');
    assert.deepEqual([1, 2, 3].map((n) => backoff(n, { ...opts, factor: 3 }, () => 0)), [100, 300, 900]);
    assert.deepEqual([1, 2, 9].map((n) => backoff(n, { ...opts, factor: 1 }, () => 0)), [100, 100, 100], 'factor 1: a fixed delay');
  });

  test('jitter takes up to its fraction off, never adds: max stays a hard bound', () => {
    for (const attempt of [1, 3, 8, 40]) {
      const nominal = backoff(attempt, opts, () => 0);
      assert.equal(backoff(attempt, opts, () => 0.999999), nominal * (1 - 0.2 * 0.999999));
      assert.equal(backoff(attempt, { ...opts, jitter: 0.5 }, () => 0.5), nominal * 0.75);
      assert.equal(backoff(attempt, { ...opts, jitter: 0 }, () => 0.7), nominal);
    }
    // A random source out of range does not break the bounds.
    assert.equal(backoff(3, opts, () => 7), 400 * 0.8);
    assert.equal(backoff(3, opts, () => -1), 400);
    assert.equal(backoff(3, { ...opts, jitter: 3 }, () => 0.5), 200, 'jitter is at most 1');
  });

  test('with Math.random: always within [nominal x (1 - jitter), nominal], spread over the range', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 2_000; i++) {
      const d = backoff(6, { ...opts, jitter: 0.3 });
      assert.ok(d >= 3200 * 0.7 && d <= 3200, `${d} within bounds`);
      seen.add(Math.floor((d - 2240) / 96)); // ten buckets over the range
    }
    assert.ok(seen.size >= 8, `jitter spreads delays (${seen.size} of 10 buckets hit)`);
  });
});

describe('sleep', () => {
  test('resolves true after the time', async () => {
    assert.equal(await sleep(5), true);
  });

  test('an abort wakes it at once with false; an aborted signal does not wait at all', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const ctl = new AbortController();
    const slept = sleep(60_000, ctl.signal);
    let result: boolean | undefined;
    void slept.then((r) => (result = r));
    t.mock.timers.tick(59_999);
    await Promise.resolve();
    assert.equal(result, undefined, 'still asleep before the time');
    ctl.abort();
    assert.equal(await slept, false);
    assert.equal(await sleep(60_000, ctl.signal), false);
  });
});

describe('periodic', () => {
  test('passes never overlap, and follow each other every everyMs', async () => {
    let running = 0;
    let most = 0;
    let passes = 0;
    const loop = periodic(async () => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, 15)); // longer than everyMs
      running--;
      passes++;
    }, { name: 'test', everyMs: 1, log: quiet });
    loop.wake(); // waking during a pass adds one pass after it, never a second one beside it
    await until(() => passes >= 5, 'five passes');
    await loop.stop();
    assert.equal(most, 1, 'never two passes at once');
  });

  test('stop() waits for the pass in flight, and no pass starts after it', async () => {
    const g = gate();
    let started = 0;
    let finished = 0;
    const loop = periodic(async () => {
      started++;
      await g.opened;
      finished++;
    }, { name: 'test', everyMs: 1, log: quiet });
    await until(() => started === 1, 'the first pass');
    let stopped = false;
    const stopping = loop.stop().then(() => (stopped = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(stopped, false, 'stop() has not returned while the pass runs');
    g.open();
    await stopping;
    assert.equal(finished, 1, 'the pass in flight finished before stop() returned');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(started, 1, 'no pass after stop()');
  });

  test('stop() wakes the wait between passes at once', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let passes = 0;
    const loop = periodic(() => void passes++, { name: 'test', everyMs: 3_600_000, log: quiet });
    await Promise.resolve();
    assert.equal(passes, 1, 'the first pass at once');
    // The loop now waits an hour on a (mocked) timer that is never advanced: only stop() can end the wait.
    await loop.stop();
    assert.equal(passes, 1);
  });

  test('the signal given to a pass aborts on stop()', async () => {
    const g = gate();
    let aborted = false;
    const loop = periodic(async (signal) => {
      signal.addEventListener('abort', () => ((aborted = true), g.open()));
      await g.opened;
    }, { name: 'test', everyMs: 1, log: quiet });
    await new Promise((r) => setTimeout(r, 5));
    await loop.stop();
    assert.equal(aborted, true);
  });

  test('a failing pass backs off by the backoff, and is counted; a success resets the count', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let calls = 0;
    const seen: number[] = [];
    // Declared first: the first pass runs inside periodic(), before it returns.
    let loop: Periodic | undefined = undefined;
    loop = periodic(() => {
      calls++;
      seen.push(loop?.failures ?? 0);
      if (calls <= 3) throw new Error('database down');
    }, { name: 'test', everyMs: 10, backoff: { baseMs: 1_000, maxMs: 3_000, jitter: 0 }, log: quiet });
    const flush = async () => {
      for (let i = 0; i < 5; i++) await Promise.resolve();
    };
    await flush();
    assert.equal(calls, 1);
    t.mock.timers.tick(999);
    await flush();
    assert.equal(calls, 1, 'not before the first backoff (1 s)');
    t.mock.timers.tick(1);
    await flush();
    assert.equal(calls, 2);
    t.mock.timers.tick(1_999);
    await flush();
    assert.equal(calls, 2, 'the second backoff is 2 s');
    t.mock.timers.tick(1);
    await flush();
    assert.equal(calls, 3);
    t.mock.timers.tick(3_000); // the third is capped at 3 s, and this pass succeeds
    await flush();
    assert.equal(calls, 4);
    assert.equal(loop.failures, 0);
    t.mock.timers.tick(10);
    await flush();
    assert.equal(calls, 5, 'after a success: everyMs again');
    assert.deepEqual(seen, [0, 1, 2, 3, 0]);
    await loop.stop();
  });

  test('wake() cuts the wait short; runNow() resolves after a pass that started after it', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let passes = 0;
    const loop = periodic(() => void passes++, { name: 'test', everyMs: 3_600_000, immediate: false, log: quiet });
    await Promise.resolve();
    assert.equal(passes, 0, 'immediate: false waits first');
    loop.wake();
    for (let i = 0; i < 5; i++) await Promise.resolve();
    assert.equal(passes, 1);
    await loop.runNow();
    assert.equal(passes, 2);
    await loop.stop();
    await loop.runNow(); // a stopped loop: resolves at once, runs nothing
    assert.equal(passes, 2);
  });

  test('a repeated failure is logged once at warn, then at debug; recovery is logged', async () => {
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'debug' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    let calls = 0;
    const loop = periodic(() => {
      if (++calls <= 3) throw new Error('same reason');
    }, { name: 'looper', everyMs: 1, backoff: { baseMs: 1, maxMs: 1 }, log });
    await until(() => calls >= 4, 'four passes');
    await loop.stop();
    assert.deepEqual(lines.map((l) => [l.level, l.msg]), [[40, 'looper failed'], [20, 'looper failed'], [20, 'looper failed'], [30, 'looper: recovered']]);
  });
});

describe('reuseCostly: an answer lives nine times as long as it took', () => {
  /** A clock moved by hand, and a `get` that takes `costMs` of it and counts its calls. */
  function setup(costMs: number, opts: { maxKeys?: number } = {}) {
    let t = 1_000;
    const calls: string[] = [];
    let fail = false;
    const get = async (key: string) => {
      calls.push(key);
      t += costMs;
      if (fail) throw new Error('down');
      return `${key}@${calls.length}`;
    };
    const reused = reuseCostly(get, { factor: 9, keyOf: (key: string) => key, now: () => t, ...opts });
    return { reused, calls, advance: (ms: number) => (t += ms), failNext: (f: boolean) => (fail = f) };
  }

  test('reused until cost x 9 has passed since the answer; then asked again', async () => {
    const s = setup(100);
    assert.deepEqual(await s.reused('a'), { value: 'a@1', at: 1_000 });
    s.advance(899);
    assert.equal((await s.reused('a')).value, 'a@1', '899 ms after an answer that took 100 ms');
    s.advance(1);
    assert.equal((await s.reused('a')).value, 'a@2', '900 ms after');
    assert.deepEqual(s.calls, ['a', 'a']);
  });

  test('keys apart; callers during a pending answer share it; a failure is not kept', async () => {
    const s = setup(10);
    const [x, y, z] = await Promise.all([s.reused('a'), s.reused('a'), s.reused('b')]);
    assert.equal(x.value, 'a@1');
    assert.equal(y, x);
    assert.equal(z.value, 'b@2');
    s.advance(1_000);
    s.failNext(true);
    await assert.rejects(s.reused('a'), /down/);
    s.failNext(false);
    assert.equal((await s.reused('a')).value, 'a@4', 'asked again after the failure');
  });

  test('at most maxKeys answers: the oldest goes first', async () => {
    const s = setup(1_000, { maxKeys: 2 });
    await s.reused('a');
    await s.reused('b');
    await s.reused('c');
    assert.equal((await s.reused('c')).value, 'c@3');
    assert.equal((await s.reused('b')).value, 'b@2');
    assert.equal((await s.reused('a')).value, 'a@4', 'a was forgotten');
  });
});
