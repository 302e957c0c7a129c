// Per-session detection over a partition of the reading stream. The state of
// every session lives in MySQL and is read at the start of each batch, so
// whichever instance holds a partition (single active consumer) continues
// exactly where the previous holder stopped. Per batch: load the states it
// touches -> detect, in order -> publish the events (confirmed) -> save the
// states. A crash before the save replays the batch, which yields the same
// deterministic event ids, and every downstream write is keyed on them.
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

type Reading = Extract<AnalyticsMessage, { kind: 'reading' }>['reading'];
type Clock = Extract<AnalyticsMessage, { kind: 'clock' }>['clock'];

export function createHandler(deps: AnalyticsDeps): BatchHandler<AnalyticsMessage> {
  const { detector, store, events } = deps;

  return async (items, ctx) => {
    const partition = deps.partitionOf(ctx.queue);
    const readings = items.flatMap((it) => (it.body.kind === 'reading' ? [it.body.reading] : []));
    const clockRuns = [...new Set(items.flatMap((it) => (it.body.kind === 'clock' ? [it.body.clock.runId] : [])))];

    // Everything the batch can touch: its sessions, and every open session of a run whose clock ticks in it.
    const [states, openByRun, clocksByRun] = await Promise.all([
      store.loadStates([...new Set(readings.map((r) => r.sessionId))]),
      Promise.all(clockRuns.map((run) => store.loadOpen(partition, run))),
      Promise.all(clockRuns.map((run) => store.loadClock(partition, run))),
    ]);
    for (const s of openByRun.flat()) if (!states.has(s.sessionId)) states.set(s.sessionId, s);
    const clocks = new Map<string, RunClock>();
    clockRuns.forEach((run, k) => clocksByRun[k] && clocks.set(run, clocksByRun[k]!));

    const changed = new Set<string>();
    const raised: EvEvent[] = [];
    const failures: BatchItemFailure[] = [];
    const onReading = (reading: Reading, index: number) => {
      const out = detector.onReading(states.get(reading.sessionId), reading);
      // A redelivered invalid reading is dead-lettered again: at least once in the DLQ.
      if (out.invalid !== null) failures.push({ index, error: new InvalidReadingError(`invalid reading ${reading.messageId}: ${out.invalid}`) });
      if (out.duplicate) return;
      states.set(reading.sessionId, out.state);
      changed.add(reading.sessionId);
      raised.push(...out.events);
    };
    const onClock = (clock: Clock) => {
      const open = [...states.values()].filter((s) => s.runId === clock.runId && isOpen(s));
      const out = detector.onClock(clock, open, clocks.get(clock.runId));
      clocks.set(clock.runId, out.clock);
      for (const s of out.states) states.set(s.sessionId, s), changed.add(s.sessionId);
      raised.push(...out.events);
    };
    items.forEach((it, index) => (it.body.kind === 'reading' ? onReading(it.body.reading, index) : onClock(it.body.clock)));

    await events.publish(raised);
    await store.save(partition, [...changed].map((id) => states.get(id)!), [...clocks.values()]);
    return { failures };
  };
}
