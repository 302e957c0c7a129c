// ev-store: queues ev.store.readings and ev.store.events -> ev_readings, ev_sessions, ev_events.
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { evEventContract, evReadingContract } from '../../shared/contracts/ev.ts';
import { EVENTS_QUEUE, READINGS_QUEUE, configShape } from './config.ts';
import { createEventsHandler, createReadingsHandler } from './handler.ts';
import { createEvStore } from './store.ts';

const deps = await boot('ev-store', configShape);
const store = createEvStore(deps.pool);
await runQueueFunction(deps, [
  consume(READINGS_QUEUE, evReadingContract, createReadingsHandler({ store })),
  consume(EVENTS_QUEUE, evEventContract, createEventsHandler({ store })),
]);
