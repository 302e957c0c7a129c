// Per-session detection over a partition of the reading stream. The state of
// every session lives in MySQL and is read at the start of each batch, so
// whichever instance holds a partition (single active consumer) continues
// exactly where the previous holder stopped. For each stretch of readings
// (and each clock tick) the order is: detect -> publish events (confirmed) ->
// save state. A crash in between replays the stretch, which yields the same
// deterministic event ids, and downstream writes are keyed on them.
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

export function createHandler(deps: AnalyticsDeps): BatchHandler<AnalyticsMessage> {
  const { detector, store, events } = deps;

  return async (items, ctx) => {
    const partition = deps.partitionOf(ctx.queue);
    const failures: BatchItemFailure[] = [];
    let i = 0;
    while (i < items.length) {
      const first = items[i]!.body;
      if (first.kind === 'clock') {
        const { clock } = first;
        const [open, prev] = await Promise.all([store.loadOpen(partition, clock.runId), store.loadClock(partition, clock.runId)]);
        const out = detector.onClock(clock, open, prev);
        await events.publish(out.events);
        await store.save(partition, out.states, [out.clock]);
        i++;
        continue;
      }
      // A stretch of readings up to the next clock.
      let end = i;
      while (end < items.length && items[end]!.body.kind === 'reading') end++;
      const stretch = items.slice(i, end);
      const states = await store.loadStates([...new Set(stretch.map((it) => (it.body as Extract<AnalyticsMessage, { kind: 'reading' }>).reading.sessionId))]);
      const changed = new Map<string, SessionState>();
      const raised: EvEvent[] = [];
      stretch.forEach((item, k) => {
        const { reading } = item.body as Extract<AnalyticsMessage, { kind: 'reading' }>;
        const out = detector.onReading(states.get(reading.sessionId), reading);
        // A redelivered invalid reading is dead-lettered again: at least once in the DLQ.
        if (out.invalid !== null) failures.push({ index: i + k, error: new InvalidReadingError(`invalid reading ${reading.messageId}: ${out.invalid}`) });
        if (out.duplicate) return;
        states.set(reading.sessionId, out.state);
        changed.set(reading.sessionId, out.state);
        raised.push(...out.events);
      });
      await events.publish(raised);
      await store.save(partition, [...changed.values()], []);
      i = end;
    }
    return { failures };
  };
}

