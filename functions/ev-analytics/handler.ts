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
import type { BatchHandler, BatchItemFailure } from '../../shared/amqp/consumer.ts';
import type { EvEvent } from '../../shared/contracts/ev.ts';
import { PermanentError } from '../../shared/errors.ts';
import { isOpen, type Detector, type RunClock, type SessionState } from '../../shared/ev/detector.ts';
import type { AnalyticsMessage } from './contract.ts';

export interface AnalyticsStore {
  loadStates(sessionIds: string[]): Promise<Map<string, SessionState>>;
  loadOpen(partition: number, runId: string): Promise<SessionState[]>;
  loadClock(partition: number, runId: string): Promise<RunClock | undefined>;
  /** Upsert states (with their open flag) and the partition's clocks. */
  save(partition: number, states: SessionState[], clocks: RunClock[]): Promise<void>;
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
}

export class InvalidReadingError extends PermanentError {
  override name = 'InvalidReadingError';
}

/** What one partition's holder keeps in memory between batches. */
interface PartitionCache {
  subscription: number | undefined;
  states: Map<string, SessionState>;
  /** Runs whose open sessions have all been loaded into `states`. */
  openLoaded: Set<string>;
  clocks: Map<string, RunClock>;
}

export function createHandler(deps: AnalyticsDeps): BatchHandler<AnalyticsMessage> {
  const { detector, store, events } = deps;
  const caches = new Map<number, PartitionCache>();

  async function cacheFor(partition: number, subscription: number | undefined, items: AnalyticsMessage[]): Promise<PartitionCache> {
    let cache = caches.get(partition);
    if (!cache || cache.subscription !== subscription) {
      cache = { subscription, states: new Map(), openLoaded: new Set(), clocks: new Map() };
      caches.set(partition, cache);
    }
    const c = cache;
    const missing = [...new Set(items.flatMap((m) => (m.kind === 'reading' && !c.states.has(m.reading.sessionId) ? [m.reading.sessionId] : [])))];
    const runs = [...new Set(items.flatMap((m) => (m.kind === 'clock' && !c.openLoaded.has(m.clock.runId) ? [m.clock.runId] : [])))];
    // Everything the batch can touch: its sessions, and every open session of a run whose clock ticks in it.
    const [loaded, openByRun, clocksByRun] = await Promise.all([
      store.loadStates(missing),
      Promise.all(runs.map((run) => store.loadOpen(partition, run))),
      Promise.all(runs.map((run) => store.loadClock(partition, run))),
    ]);
    for (const [id, state] of loaded) c.states.set(id, state);
    for (const s of openByRun.flat()) if (!c.states.has(s.sessionId)) c.states.set(s.sessionId, s);
    runs.forEach((run, k) => {
      c.openLoaded.add(run);
      const clock = clocksByRun[k];
      if (clock && !c.clocks.has(run)) c.clocks.set(run, clock);
    });
    return c;
  }

  return async (items, ctx) => {
    const partition = deps.partitionOf(ctx.queue);
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
          const out = detector.onReading(states.get(reading.sessionId), reading);
          // A redelivered invalid reading is dead-lettered again: at least once in the DLQ.
          if (out.invalid !== null) failures.push({ index, error: new InvalidReadingError(`invalid reading ${reading.messageId}: ${out.invalid}`) });
          if (out.duplicate) return;
          states.set(reading.sessionId, out.state);
          changed.add(reading.sessionId);
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
      await store.save(partition, [...changed].map((id) => states.get(id)!), [...ticked].map((run) => clocks.get(run)!));
      // Closed sessions and finished runs need no memory: a late duplicate is looked up in MySQL.
      for (const id of changed) if (!isOpen(states.get(id)!)) states.delete(id);
      for (const run of ticked) {
        if (clocks.get(run)!.final) clocks.delete(run), cache.openLoaded.delete(run);
      }
      return { failures };
    } catch (err) {
      // Memory may be ahead of MySQL now: forget it, the retry starts from the saved states.
      caches.delete(partition);
      throw err;
    }
  };
}
