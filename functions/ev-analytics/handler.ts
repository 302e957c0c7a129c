// Per-session detection over a partition of the reading stream. The state of
// every session lives in MySQL, saved after each batch, so whichever instance
// holds a partition (single active consumer) continues exactly where the
// previous holder stopped. Per batch: detect, in order -> publish the events
// (confirmed) -> save the changed states. A crash before the save replays the
// batch, which yields the same deterministic event ids, and every downstream
// write is keyed on them.
//
// While an instance keeps its subscription to a partition, nobody else can have
// touched the partition's states, so they are also kept in memory and read from
// MySQL only once: on a new subscription (reconnect, hand-over) or after a
// failed batch, the memory is dropped and MySQL is the truth again.
//
// Fencing (issue 10). An instance can lose a partition while a batch is in flight (its
// connection drops while the publish waits for a reconnect; the broker gives the partition to
// the next consumer). When that batch finally saves, it must not overwrite the newer states of
// the instance that took over: reloaded, they would raise false events (a session that looks
// silent since the stale reading: charge.offline, mailed to its owner). So each partition has
// an epoch in MySQL; a new subscription's first batch claims the partition (bumps the epoch)
// before it reads any state, and every save is conditional on the epoch it claimed. A save that
// is refused, or a subscription the consumer no longer holds, means the partition is lost: the
// handler forgets the partition, writes nothing and throws PartitionLostError, an outage to the
// runtime, which then settles nothing when the batch's channel is gone (the broker has given
// the messages to the owner). A lost subscription never claims again: only a new one does.
import type { BatchContext, BatchHandler, BatchItemFailure } from '../../shared/amqp/consumer.ts';
import type { EvEvent } from '../../shared/contracts/ev.ts';
import { PermanentError, UnavailableError } from '../../shared/errors.ts';
import { isOpen, type Detector, type RunClock, type SessionState } from './detector.ts';
import type { AnalyticsMessage } from './contract.ts';

export interface AnalyticsStore {
  loadStates(sessionIds: string[]): Promise<Map<string, SessionState>>;
  loadOpen(partition: number, runId: string): Promise<SessionState[]>;
  loadClock(partition: number, runId: string): Promise<RunClock | undefined>;
  /** Take the partition over: bump its epoch (recording `owner`) and return the new epoch. */
  claim(partition: number, owner: string): Promise<number>;
  /**
   * Upsert states (with their open flag) and the partition's clocks, all or nothing, only while
   * the partition's epoch is still `epoch`. false: it moved on (another holder claimed it), nothing written.
   */
  save(partition: number, epoch: number, states: SessionState[], clocks: RunClock[]): Promise<boolean>;
}

export interface EventSink {
  /** Resolves when the broker confirmed every event. */
  publish(events: EvEvent[]): Promise<void>;
}

export interface AnalyticsDeps {
  detector: Detector;
  store: AnalyticsStore;
  events: EventSink;
  partitionOf(queue: string): number;
  /** Recorded as the owner of the partitions this instance claims. */
  instanceId?: string;
  /**
   * Whether the consumer of `partition` still holds `subscription` (connected, subscribed, no
   * reconnect since). Must answer synchronously: it is first asked before the batch awaits anything.
   */
  holds?(partition: number, subscription: number | undefined): boolean;
  /**
   * Called when a refused save finds the subscription still held as far as we can tell (a
   * half-dead connection the broker has already given up on): give the partition back, so
   * that the batch's messages are redelivered rather than acked.
   */
  release?(partition: number): Promise<void>;
}

export class InvalidReadingError extends PermanentError {
  override name = 'InvalidReadingError';
}

/** A quiet notice for a session none of whose readings arrived yet: retried until one has. */
export class SessionNotSeenError extends Error {
  override name = 'SessionNotSeenError';
}

/** This instance no longer owns the partition: the batch's state must not be saved, nor the batch acked as handled. */
export class PartitionLostError extends UnavailableError {
  override name = 'PartitionLostError';
}

/** The claim a subscription made on its partition. */
interface Lease {
  subscription: number | undefined;
  epoch: number;
  lost: boolean;
}

/** What one partition's holder keeps in memory between batches. */
interface PartitionCache {
  subscription: number | undefined;
  states: Map<string, SessionState>;
  /** Runs whose open sessions have all been loaded into `states`. */
  openLoaded: Set<string>;
  clocks: Map<string, RunClock>;
  /** Runs whose clock was looked up in MySQL (it may have none yet). */
  clockLoaded: Set<string>;
  /** Sessions that closed and left `states`, by run: their quiet notices need no look-up. */
  closed: Map<string, Set<string>>;
}

export function createHandler(deps: AnalyticsDeps): BatchHandler<AnalyticsMessage> {
  const { detector, store, events } = deps;
  const caches = new Map<number, PartitionCache>();
  const leases = new Map<number, Lease>();
  const instanceId = deps.instanceId ?? 'ev-analytics';
  const holds = deps.holds ?? (() => true);

  /** The lease of this batch's subscription: claimed on its first batch, refused once lost. */
  async function leaseFor(partition: number, subscription: number | undefined, log: BatchContext['log']): Promise<Lease> {
    const current = leases.get(partition);
    if (current && current.subscription === subscription) {
      if (current.lost) throw new PartitionLostError(`partition ${partition} was lost by subscription ${String(subscription)}`);
      return current;
    }
    // Subscriptions only grow: an older one than the lease's is a batch of a consumer we replaced.
    if (current && subscription !== undefined && current.subscription !== undefined && subscription < current.subscription) {
      throw new PartitionLostError(`partition ${partition}: subscription ${subscription} was replaced by ${current.subscription}`);
    }
    const lease: Lease = { subscription, epoch: 0, lost: false };
    leases.set(partition, lease);
    caches.delete(partition);
    try {
      lease.epoch = await store.claim(partition, instanceId);
    } catch (err) {
      // No epoch yet: the batch's retry (same subscription) claims again.
      if (leases.get(partition) === lease) leases.delete(partition);
      throw err;
    }
    log.info({ partition, epoch: lease.epoch, subscription }, 'claimed partition');
    return lease;
  }

  /** Forget the partition, give it back when we may still be subscribed, and refuse the batch. */
  async function lose(partition: number, subscription: number | undefined, lease: Lease, why: string, log: BatchContext['log']): Promise<never> {
    lease.lost = true;
    caches.delete(partition);
    log.warn({ partition, epoch: lease.epoch, subscription, why }, 'lost the partition: the batch is not saved and goes to its owner');
    if (holds(partition, subscription)) await deps.release?.(partition);
    throw new PartitionLostError(`partition ${partition} lost (${why}); epoch ${lease.epoch} is no longer current`);
  }

  const isClosed = (c: PartitionCache, q: { runId: string; sessionId: string }) => c.closed.get(q.runId)?.has(q.sessionId) === true;

  async function cacheFor(partition: number, subscription: number | undefined, items: AnalyticsMessage[]): Promise<PartitionCache> {
    let cache = caches.get(partition);
    if (!cache || cache.subscription !== subscription) {
      cache = { subscription, states: new Map(), openLoaded: new Set(), clocks: new Map(), clockLoaded: new Set(), closed: new Map() };
      caches.set(partition, cache);
    }
    const c = cache;
    const sessionOf = (m: AnalyticsMessage) => (m.kind === 'reading' ? m.reading : m.kind === 'quiet' && !isClosed(c, m.quiet) ? m.quiet : null);
    const missing = [...new Set(items.flatMap((m) => { const x = sessionOf(m); return x && !c.states.has(x.sessionId) ? [x.sessionId] : []; }))];
    const runs = [...new Set(items.flatMap((m) => (m.kind === 'clock' && !c.openLoaded.has(m.clock.runId) ? [m.clock.runId] : [])))];
    // Readings and notices are judged against their run's clock too.
    const clockRuns = [...new Set(items.map((m) => (m.kind === 'clock' ? m.clock.runId : m.kind === 'quiet' ? m.quiet.runId : m.reading.runId)))].filter((run) => !c.clockLoaded.has(run));
    // Everything the batch can touch: its sessions, every open session of a run whose clock
    // ticks in it, and the clocks of its runs.
    const [loaded, openByRun, clocksByRun] = await Promise.all([
      store.loadStates(missing),
      Promise.all(runs.map((run) => store.loadOpen(partition, run))),
      Promise.all(clockRuns.map((run) => store.loadClock(partition, run))),
    ]);
    for (const [id, state] of loaded) c.states.set(id, state);
    for (const s of openByRun.flat()) if (!c.states.has(s.sessionId)) c.states.set(s.sessionId, s);
    for (const run of runs) c.openLoaded.add(run);
    clockRuns.forEach((run, k) => {
      c.clockLoaded.add(run);
      const clock = clocksByRun[k];
      if (clock && !c.clocks.has(run)) c.clocks.set(run, clock);
    });
    return c;
  }

  return async (items, ctx) => {
    const partition = deps.partitionOf(ctx.queue);
    // Asked before any await: the batch was just taken from the buffer of the current subscription.
    if (!holds(partition, ctx.subscription)) {
      const current = leases.get(partition);
      if (current && current.subscription === ctx.subscription) current.lost = true;
      caches.delete(partition);
      throw new PartitionLostError(`partition ${partition}: subscription ${String(ctx.subscription)} is no longer held`);
    }
    const lease = await leaseFor(partition, ctx.subscription, ctx.log);
    try {
      const cache = await cacheFor(partition, ctx.subscription, items.map((it) => it.body));
      const { states, clocks } = cache;
      const changed = new Set<string>();
      const ticked = new Set<string>();
      const raised: EvEvent[] = [];
      const failures: BatchItemFailure[] = [];
      items.forEach((it, index) => {
        const message = it.body;
        if (message.kind === 'reading') {
          const { reading } = message;
          const out = detector.onReading(states.get(reading.sessionId), reading, clocks.get(reading.runId));
          // A redelivered invalid reading is dead-lettered again: at least once in the DLQ.
          if (out.invalid !== null) failures.push({ index, error: new InvalidReadingError(`invalid reading ${reading.messageId}: ${out.invalid}`) });
          if (out.duplicate) return;
          states.set(reading.sessionId, out.state);
          changed.add(reading.sessionId);
          raised.push(...out.events);
        } else if (message.kind === 'quiet') {
          const { quiet } = message;
          if (isClosed(cache, quiet)) return;
          const out = detector.onQuiet(states.get(quiet.sessionId), quiet, clocks.get(quiet.runId));
          if (out.unknown) {
            // Its readings are late (a retry): the notice waits for them in the retry queue.
            failures.push({ index, error: new SessionNotSeenError(`quiet notice of session ${quiet.sessionId} (run ${quiet.runId}, last seq ${quiet.lastSeq}) before any of its readings`) });
            return;
          }
          if (!out.changed) return;
          states.set(quiet.sessionId, out.state!);
          changed.add(quiet.sessionId);
          raised.push(...out.events);
        } else {
          const { clock } = message;
          const open = [...states.values()].filter((s) => s.runId === clock.runId && isOpen(s));
          const out = detector.onClock(clock, open, clocks.get(clock.runId));
          clocks.set(clock.runId, out.clock);
          ticked.add(clock.runId);
          for (const s of out.states) states.set(s.sessionId, s), changed.add(s.sessionId);
          raised.push(...out.events);
        }
      });

      await events.publish(raised);
      // The publish may have waited for a reconnect: by now another consumer may own the partition.
      if (!holds(partition, ctx.subscription)) return await lose(partition, ctx.subscription, lease, 'subscription gone before the save', ctx.log);
      const saved = await store.save(partition, lease.epoch, [...changed].map((id) => states.get(id)!), [...ticked].map((run) => clocks.get(run)!));
      if (!saved) return await lose(partition, ctx.subscription, lease, 'another holder claimed the partition', ctx.log);
      // Closed sessions and finished runs need no memory: a late duplicate is looked up in MySQL.
      for (const id of changed) {
        const st = states.get(id)!;
        if (isOpen(st)) continue;
        states.delete(id);
        const closed = cache.closed.get(st.runId) ?? new Set<string>();
        cache.closed.set(st.runId, closed.add(id));
      }
      for (const run of ticked) {
        if (clocks.get(run)!.final) clocks.delete(run), cache.openLoaded.delete(run), cache.clockLoaded.delete(run), cache.closed.delete(run);
      }
      return { failures };
    } catch (err) {
      // Memory may be ahead of MySQL now: forget it, the retry starts from the saved states.
      if (caches.get(partition)?.subscription === ctx.subscription) caches.delete(partition);
      throw err;
    }
  };
}
