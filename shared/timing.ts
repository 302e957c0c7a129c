// Waiting, the one way: an exponential backoff with jitter (a pure function, so its bounds are
// unit-tested), a sleep that a stop can cut short, and a periodic loop whose passes never
// overlap and whose stop() returns only once the pass in flight has finished; and answers reused
// for as long as they cost (reuseCostly), so that pollers cannot keep a dependency busy.
import type { Logger } from './log.ts';
import { errorMessage } from './errors.ts';

export interface BackoffOptions {
  /** The delay of the first attempt. */
  baseMs: number;
  /** No delay is longer than this, jitter included. */
  maxMs: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /**
   * Fraction taken off at random (default 0.2): the delay lies in [nominal x (1 - jitter), nominal].
   * Only downwards, so that `maxMs` stays a hard bound and instances that reach it do not wake in step.
   */
  jitter?: number;
}

/**
 * The delay before attempt `attempt` (from 1): min(maxMs, baseMs x factor^(attempt - 1)), less up to
 * `jitter` of it. `random` returns a number in [0, 1) (Math.random); 0 means no jitter at all.
 */
export function backoff(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const { baseMs, maxMs, factor = 2, jitter = 0.2 } = opts;
  // Capped before the power overflows: past the cap every attempt waits maxMs.
  const exponent = Math.max(0, Math.min(attempt - 1, 64));
  const nominal = Math.min(maxMs, baseMs * factor ** exponent);
  const r = Math.min(1, Math.max(0, random()));
  return Math.max(0, nominal * (1 - Math.min(1, Math.max(0, jitter)) * r));
}

/**
 * Waits `ms`, or less when `signal` aborts (at once if it already has). Never rejects: resolves
 * true when the whole time passed, false when it was cut short. `unref`: the timer alone does not
 * keep the process alive.
 */
export function sleep(ms: number, signal?: AbortSignal, opts: { unref?: boolean } = {}): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, Math.max(0, ms));
    if (opts.unref) timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface PeriodicOptions {
  /** Names the loop in its log lines. */
  name: string;
  /** Pause between the end of a pass and the start of the next. */
  everyMs: number;
  log: Logger;
  /** After a failed pass, wait backoff(failures in a row) instead of `everyMs`. Unset: `everyMs`. */
  backoff?: BackoffOptions;
  /** The first pass at once (default), or after `everyMs`. */
  immediate?: boolean;
  /** The loop's timers alone do not keep the process alive. */
  unref?: boolean;
  random?: () => number;
}

export interface Periodic {
  /** Run a pass now rather than at the end of the wait; during a pass, one more follows it at once (unless it failed: then the backoff holds). */
  wake(): void;
  /** Resolves once a pass that starts after this call has ended (at once when the loop is stopped). Never rejects. */
  runNow(): Promise<void>;
  /** No new pass; a wait ends at once; resolves when the pass in flight (if any) has finished. */
  stop(): Promise<void>;
  /** Failed passes in a row (0 after a success). */
  readonly failures: number;
}

/**
 * Calls `fn` every `everyMs` (measured from the end of a pass, so passes never overlap). A pass that
 * throws is logged (a message repeating the previous failure's at debug level, so an outage is one
 * warning, not one per pass) and the next waits by `backoff`. `fn` gets a signal aborted by stop().
 */
export function periodic(fn: (signal: AbortSignal) => unknown, opts: PeriodicOptions): Periodic {
  const { log, name } = opts;
  const stopper = new AbortController();
  let waking = new AbortController();
  let inPass = false;
  let again = false;
  let failures = 0;
  let waiters: (() => void)[] = [];

  const done = (async () => {
    let lastError = '';
    let wait = opts.immediate === false ? opts.everyMs : 0;
    while (!stopper.signal.aborted) {
      if (wait > 0) await sleep(wait, waking.signal, { unref: opts.unref });
      if (stopper.signal.aborted) break;
      if (waking.signal.aborted) waking = new AbortController();
      again = false;
      const served = waiters;
      waiters = [];
      inPass = true;
      try {
        await fn(stopper.signal);
        if (failures > 0) log.info({ loop: name, failures }, `${name}: recovered`);
        failures = 0;
        lastError = '';
      } catch (err) {
        failures++;
        const message = errorMessage(err);
        log[message === lastError ? 'debug' : 'warn']({ loop: name, failures, err: message }, `${name} failed`);
        lastError = message;
      } finally {
        inPass = false;
      }
      for (const resolve of served) resolve();
      if (failures > 0) wait = opts.backoff ? backoff(failures, opts.backoff, opts.random) : opts.everyMs;
      else wait = again || waiters.length > 0 ? 0 : opts.everyMs;
    }
    for (const resolve of waiters) resolve();
    waiters = [];
  })();

  return {
    wake() {
      if (stopper.signal.aborted) return;
      if (inPass) again = true;
      else waking.abort();
    },
    runNow() {
      if (stopper.signal.aborted) return Promise.resolve();
      const p = new Promise<void>((resolve) => waiters.push(resolve));
      if (!inPass) waking.abort();
      return p;
    },
    async stop() {
      stopper.abort();
      waking.abort();
      await done;
    },
    get failures() {
      return failures;
    },
  };
}

export interface ReuseOptions<A, K> {
  /** An answer is reused for `factor` times as long as it took to get. */
  factor: number;
  /** What answers are kept by: calls with the same key share an answer. */
  keyOf: (arg: A) => K;
  /** Keys remembered at most (the oldest answer is forgotten first). */
  maxKeys?: number;
  now?: () => number;
}
export interface Reused<V> {
  value: V;
  /** When the answer was asked for (ms since the epoch, by `now`). */
  at: number;
}

/**
 * `get(arg)`, with each answer reused for `factor` times as long as it took: however many callers
 * poll, the work behind `get` takes at most 1 / (1 + factor) of the time. Callers that come while
 * an answer is on its way share it. A failure is not remembered.
 */
export function reuseCostly<A, K, V>(get: (arg: A) => Promise<V>, opts: ReuseOptions<A, K>): (arg: A) => Promise<Reused<V>> {
  const now = opts.now ?? Date.now;
  const maxKeys = opts.maxKeys ?? 1_000;
  const known = new Map<K, { answer: Reused<V>; until: number }>();
  const pending = new Map<K, Promise<Reused<V>>>();
  return (arg) => {
    const key = opts.keyOf(arg);
    const hit = known.get(key);
    if (hit && now() < hit.until) return Promise.resolve(hit.answer);
    const on = pending.get(key);
    if (on) return on;
    const at = now();
    const p = get(arg)
      .then((value) => {
        const answer = { value, at };
        const took = now() - at;
        known.delete(key); // re-inserted last: the map's order is the answers' age
        known.set(key, { answer, until: now() + took * opts.factor });
        if (known.size > maxKeys) known.delete(known.keys().next().value!);
        return answer;
      })
      .finally(() => pending.delete(key));
    pending.set(key, p);
    return p;
  };
}
