// Runs execute in the background of the trigger. The runner records progress
// (only what the broker confirmed counts as published), a checkpoint (the
// position of the first message not yet confirmed, from where a run can resume
// after its trigger died; a follow run describes a richer one), the final state,
// and on shutdown stops every run in flight and records where it stopped, for
// another trigger to take it over. A run stopped through the API ends `stopped`.
//
// Fencing. A run is executed under its lease (owner, epoch: functions/trigger/runs.ts);
// every write is conditional on it. When a write matches no row because another
// trigger claimed the run, this one stops publishing it at once, writes nothing
// more (no end, no hand-back: the run is the other trigger's now) and logs it. So
// that a trigger paused or cut off from MySQL does not publish on past its lease,
// a publish waits for a successful save once the last one is older than 3/4 of
// `leaseMs` (RUN_STALE_AFTER_S: when another trigger may claim the run). A runner
// never executes the same run twice at once.
import type { Logger } from '../../shared/log.ts';
import type { Publisher, PublishOptions } from '../../shared/amqp/publisher.ts';
import { errorMessage, isUnavailable } from '../../shared/errors.ts';
import { backoff, periodic, sleep, type BackoffOptions } from '../../shared/timing.ts';
import type { Checkpoint, FollowCheckpoint, Lease, RunRef, RunStore } from './runs.ts';

export interface Progress {
  /** Items read from the source (lines, readings), whether one message carries one or (batch framing) many. */
  lines: number;
  /** Items whose message the broker confirmed. */
  published: number;
}

/** Where a message sits in its source: `item` messages come before it, it starts at byte `offset`. */
export interface Position {
  item: number;
  offset: number;
}

/** Publishes a stream of messages with bounded memory and counts the confirms. */
export interface RunPublisher {
  /** `items`: how many items (lines) the message carries (a batch message: many); `position` is its first one's. */
  publish(exchange: string, routingKey: string, content: Buffer, options: PublishOptions, position: Position, items?: number): Promise<void>;
  readonly progress: Progress;
  readonly signal: AbortSignal;
  /**
   * For a run whose checkpoint is more than one position (a follow run): from now on, every
   * save records `describe(first unconfirmed message's position, or null when all are confirmed)`.
   */
  describeCheckpoint(describe: (firstUnconfirmed: Position | null) => FollowCheckpoint): void;
  /** Records the checkpoint now (after a save in progress), retrying while the database is unavailable; throws once the run is stopped. */
  save(): Promise<void>;
}

export type RunWork = (out: RunPublisher) => Promise<void>;

export interface Runner {
  /**
   * Run `work` in the background under the run's lease; its run row is finished when it ends. `from`: a
   * resumed run's checkpoint. Refused (logged, nothing runs) when this runner already executes the run.
   */
  start(run: RunRef, work: RunWork, from?: Position): void;
  /** Run `work` and wait for it (and every confirm) before returning; rejects with RunAlreadyExecuting for a run executing here. */
  runNow(run: RunRef, work: RunWork): Promise<Progress>;
  /** Stops a run this trigger executes: it ends `stopped` with its checkpoint once every confirm is in. Null when it does not execute it. */
  stopRun(runId: string): Promise<Progress> | null;
  readonly active: number;
  /** Ids of the runs this runner executes now. */
  executing(): string[];
  stop(): Promise<void>;
}

/** Abort reason of a run stopped through the API. */
export class RunStopped extends Error {
  override name = 'RunStopped';
  constructor() {
    super('run stopped (POST /v1/runs/:id/stop)');
  }
}

/** Abort reason of a run that ended elsewhere while this trigger executed it: nothing more is written. */
class RunEndedElsewhere extends Error {
  override name = 'RunEndedElsewhere';
}

/** Abort reason of a run another trigger claimed (its lease moved on): nothing more is written or published here. */
export class RunFenced extends Error {
  override name = 'RunFenced';
}

/** A second execution of a run this runner already executes: refused. */
export class RunAlreadyExecuting extends Error {
  override name = 'RunAlreadyExecuting';
  constructor(runId: string) {
    super(`run ${runId} is already executed by this trigger`);
  }
}

/** Waits between tries of a write while MySQL is unavailable: 0.5 s, 1 s, 2 s, ... up to 10 s. */
const UNAVAILABLE_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 10_000 };

export function createRunner(deps: {
  publisher: Publisher;
  runs: RunStore;
  log: Logger;
  progressEveryMs?: number;
  maxInFlightPerRun?: number;
  /** Bytes of message bodies one run may have unconfirmed (at least one message); batch messages are large. */
  maxInFlightBytesPerRun?: number;
  /** RUN_STALE_AFTER_S in ms: how long after its last save a run may be claimed by another trigger. Unset: publishing never waits for a save. */
  leaseMs?: number;
}): Runner {
  const active = new Map<string, { abort: AbortController; done: Promise<Progress> }>();
  const maxInFlight = deps.maxInFlightPerRun ?? 1_000;
  const maxInFlightBytes = deps.maxInFlightBytesPerRun ?? 32 * 1024 * 1024;
  const renewAfterMs = deps.leaseMs === undefined ? Infinity : deps.leaseMs * 0.75;

  async function execute(runId: string, lease: Lease, work: RunWork, abort: AbortController, from: Position): Promise<Progress> {
    const progress: Progress = { lines: from.item, published: from.item };
    // Positions of unconfirmed messages, in publish order; the checkpoint is the first of them.
    const unconfirmed: { position: Position; confirmed: boolean }[] = [];
    let checkpoint: Position = from;
    let describe: ((firstUnconfirmed: Position | null) => FollowCheckpoint) | null = null;
    let inFlight = 0;
    let inFlightBytes = 0;
    let failure: unknown = null;
    let wake: (() => void) | null = null;
    const waitUntil = async (cond: () => boolean) => {
      while (!cond()) await new Promise<void>((r) => (wake = r));
    };
    const current = (): Checkpoint => {
      if (!describe) return { item: checkpoint.item, offset: checkpoint.offset };
      const first = unconfirmed.find((e) => !e.confirmed)?.position ?? null;
      const follow = describe(first);
      return { item: follow.nextLineNo - 1, offset: first?.offset ?? 0, follow };
    };
    // Saves run one after another, each with the state of the moment it runs: a
    // checkpoint written is never replaced by an older one.
    let saving: Promise<void> = Promise.resolve();
    // When the lease was last confirmed (the start of the last save that matched the row).
    let renewedAt = performance.now();
    const saveNow = (): Promise<void> => {
      const p = saving.then(async () => {
        const sent = performance.now();
        if (await deps.runs.progress(runId, progress.lines, progress.published, current(), lease)) {
          renewedAt = sent;
          return;
        }
        // Nothing written: claimed by another trigger, stopped through another trigger, or ended by someone else.
        const run = await deps.runs.get(runId);
        if (abort.signal.aborted) return;
        if (run && (run.owner !== lease.owner || run.epoch !== lease.epoch)) abort.abort(fenced(run));
        else if (run?.state === 'stopping') abort.abort(new RunStopped());
        else abort.abort(new RunEndedElsewhere(`run is ${run?.state ?? 'gone'} in the database`));
      });
      saving = p.catch(() => {});
      return p;
    };
    const out: RunPublisher = {
      progress,
      signal: abort.signal,
      async publish(exchange, routingKey, content, options, position, items = 1) {
        if (failure) throw failure;
        abort.signal.throwIfAborted();
        // Past most of the lease since the last save (paused, or MySQL unreachable): confirm the lease before publishing more.
        if (performance.now() - renewedAt > renewAfterMs) await out.save();
        // Bounded memory: a 2 GB file never has more than maxInFlight messages (maxInFlightBytes of bodies) in the air.
        const size = content.length;
        await waitUntil(() => (inFlight < maxInFlight && (inFlight === 0 || inFlightBytes + size <= maxInFlightBytes)) || failure !== null);
        if (failure) throw failure;
        progress.lines += items;
        inFlight++;
        inFlightBytes += size;
        const entry = { position, confirmed: false };
        unconfirmed.push(entry);
        deps.publisher
          .publish(exchange, routingKey, content, options)
          .then(
            () => {
              progress.published += items;
              entry.confirmed = true;
              // Resume from the first message still unconfirmed (or, when none is, from the last one: one duplicate at most).
              while (unconfirmed.length > 1 && unconfirmed[0]!.confirmed) unconfirmed.shift();
              checkpoint = unconfirmed[0]!.position;
            },
            (err) => void (failure ??= err),
          )
          .finally(() => {
            inFlight--;
            inFlightBytes -= size;
            wake?.();
            wake = null;
          });
      },
      describeCheckpoint(fn) {
        describe = fn;
      },
      async save() {
        for (let attempt = 1; ; attempt++) {
          abort.signal.throwIfAborted();
          try {
            await saveNow();
            abort.signal.throwIfAborted();
            return;
          } catch (err) {
            if (abort.signal.aborted || !isUnavailable(err)) throw err;
            deps.log.warn({ runId, err: errorMessage(err), attempt }, 'could not record the checkpoint; trying again');
            await sleep(backoff(attempt, UNAVAILABLE_BACKOFF), abort.signal); // a stop ends the wait (and the loop) at once
          }
        }
      },
    };
    const progressLoop = periodic(saveNow, { name: 'recording run progress', everyMs: deps.progressEveryMs ?? 1_000, immediate: false, log: deps.log.child({ runId }) });
    try {
      let workError: unknown = null;
      await work(out).catch((err) => (workError = err));
      await waitUntil(() => inFlight === 0);
      const error = workError ?? failure;
      if (error) throw error;
      await saving;
      // Conditional on the lease: a run claimed meanwhile by another trigger (or ended elsewhere) is not ended here.
      if (await untilAvailable(() => deps.runs.finish(runId, { state: 'done', ...progress, checkpoint: current() }, lease))) {
        deps.log.info({ runId, ...progress }, 'run done');
        return progress;
      }
      throw await notOurs();
    } catch (err) {
      if (err instanceof RunEndedElsewhere) throw err; // logged by notOurs
      if (abort.signal.aborted) {
        const reason: unknown = abort.signal.reason;
        await waitUntil(() => inFlight === 0);
        await saving;
        if (reason instanceof RunFenced) {
          deps.log.warn({ runId, ...progress, lease, reason: reason.message }, 'run claimed by another trigger: stopped publishing it here');
          throw err;
        }
        if (reason instanceof RunEndedElsewhere) {
          deps.log.warn({ runId, ...progress, reason: reason.message }, 'run ended elsewhere: no longer executed here');
          throw err;
        }
        if (reason instanceof RunStopped && failure === null) {
          // Stopped through the API: the end is recorded with where the confirmed stream ends.
          const at = current();
          if (!(await untilAvailable(() => deps.runs.finish(runId, { state: 'stopped', ...progress, checkpoint: at }, lease)))) {
            deps.log.warn({ runId, ...progress, lease }, 'run stopped, but it was claimed by another trigger or ended meanwhile: its end is not recorded here');
            throw err;
          }
          deps.log.info({ runId, ...progress, checkpoint: { item: at.item, offset: at.offset } }, 'run stopped');
          return progress;
        }
        if (!(reason instanceof RunStopped)) {
          // A trigger going down (a deploy, a scale-in) does not end its runs: once every
          // confirm is in, the checkpoint is recorded and a live trigger resumes the run.
          const at = current();
          await deps.runs.progress(runId, progress.lines, progress.published, at, lease).catch(() => {});
          deps.log.info({ runId, ...progress, checkpoint: { item: at.item, offset: at.offset } }, 'run handed back: another trigger will resume it');
          throw err;
        }
      }
      if (err instanceof RunFenced) {
        deps.log.warn({ runId, ...progress, lease, reason: err.message }, 'run claimed by another trigger: its end is not recorded here');
        throw err;
      }
      const reason = errorMessage(failure ?? err);
      deps.log.error({ runId, ...progress, err: reason }, 'run failed');
      const recorded = await untilAvailable(() => deps.runs.finish(runId, { state: 'failed', ...progress, error: reason }, lease)).catch(() => true);
      if (!recorded) deps.log.warn({ runId, lease }, 'the failure is not recorded: the run was claimed by another trigger or ended meanwhile');
      throw err;
    } finally {
      await progressLoop.stop();
    }

    function fenced(run: Lease): RunFenced {
      return new RunFenced(`lease ${lease.owner}#${lease.epoch} lost to ${run.owner}#${run.epoch}`);
    }
    /** The end matched no row: claimed by another trigger (fenced), or ended by someone else. */
    async function notOurs(): Promise<Error> {
      const run = await deps.runs.get(runId).catch(() => null);
      if (run && (run.owner !== lease.owner || run.epoch !== lease.epoch)) return fenced(run);
      deps.log.warn({ runId, ...progress, state: run?.state ?? 'gone' }, 'run ended elsewhere: its end is not recorded here');
      return new RunEndedElsewhere(`run is ${run?.state ?? 'gone'} in the database`);
    }
  }

  function launch(run: RunRef, work: RunWork, from: Position = { item: 0, offset: 0 }): Promise<Progress> {
    // Never twice at once: two executions of one run would publish every message twice and race on its row.
    if (active.has(run.id)) {
      deps.log.warn({ runId: run.id, lease: { owner: run.owner, epoch: run.epoch } }, 'run already executed by this trigger: not started again');
      return Promise.reject(new RunAlreadyExecuting(run.id));
    }
    const abort = new AbortController();
    const lease: Lease = { owner: run.owner, epoch: run.epoch };
    const done = execute(run.id, lease, work, abort, from).finally(() => active.delete(run.id));
    active.set(run.id, { abort, done });
    return done;
  }

  return {
    start(run, work, from) {
      launch(run, work, from).catch(() => {}); // recorded in the run row (or logged)
    },
    runNow: (run, work) => launch(run, work),
    stopRun(runId) {
      const run = active.get(runId);
      if (!run) return null;
      if (!run.abort.signal.aborted) run.abort.abort(new RunStopped());
      return run.done;
    },
    get active() {
      return active.size;
    },
    executing: () => [...active.keys()],
    async stop() {
      for (const { abort } of active.values()) abort.abort();
      await Promise.allSettled([...active.values()].map((r) => r.done));
    },
  };
}

/** Record a run's end even across a short database outage (up to about a minute). */
async function untilAvailable<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isUnavailable(err) || attempt >= 12) throw err;
      await sleep(backoff(attempt, UNAVAILABLE_BACKOFF));
    }
  }
}
