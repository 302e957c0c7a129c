// ev-analytics: partition queues ev.analytics.p* (readings + clock) -> events on exchange `ev`.
// Every instance subscribes to every partition; each partition has one active
// consumer at a time (single active consumer), the others stand by, and the
// live instances share the partitions out between them (rebalance.ts).
import { randomUUID } from 'node:crypto';
import type { Consumer } from '../../shared/amqp/consumer.ts';
import { createPool } from '../../shared/db/pool.ts';
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { eventMessage } from '../../shared/contracts/ev.ts';
import { createDetector } from './detector.ts';
import { PARTITION_QUEUES, configShape } from './config.ts';
import { analyticsContract } from './contract.ts';
import { createHandler, type EventSink } from './handler.ts';
import { startRebalancer } from './rebalance.ts';
import { createAnalyticsStore, createMembership } from './store.ts';

const deps = await boot('ev-analytics', configShape);
const { config, publisher } = deps;

const detector = createDetector({
  offlineAfterIntervals: config.EV_OFFLINE_AFTER_INTERVALS,
  stallPowerW: config.EV_STALL_POWER_W,
  stallAfterS: config.EV_STALL_AFTER_S,
  socDropPoints: config.EV_SOC_DROP_POINTS,
  overLimitPoints: config.EV_OVER_LIMIT_POINTS,
  completedTolerancePoints: config.EV_COMPLETED_TOLERANCE_POINTS,
  reorderWindow: config.EV_REORDER_WINDOW,
});
const events: EventSink = {
  async publish(list) {
    await Promise.all(
      list.map((e) => {
        const m = eventMessage(e);
        // Stamped when published, like the trigger's readings: end-to-end lag (bench latency).
        return publisher.publish(m.exchange, m.routingKey, m.content, { ...m.options, timestamp: Date.now() });
      }),
    );
  },
};
const queues: readonly string[] = PARTITION_QUEUES;
const instanceId = randomUUID();

// Whether a batch's subscription is still the consumer's (fencing, handler.ts). Every broker
// (re)connect starts a new generation; this hook is attached before the consumers', so it runs
// before they subscribe anew. A subscription belongs to the generation in which its first batch
// came (that batch is asked about before it awaits anything): a reconnect since means that its
// channel, and the partition with it, are gone.
let generation = 0;
await deps.amqp.attach(async () => {
  generation++;
});
const held = new Map<number, { subscription: number | undefined; generation: number }>();
let consumers: Consumer[] = [];
function holds(partition: number, subscription: number | undefined): boolean {
  // `consumers` is filled once every consumer started; the first ones may deliver before that.
  const consumer = consumers[partition];
  if (!deps.amqp.connected || (consumer && !consumer.consuming)) return false;
  const seen = held.get(partition);
  if (seen && seen.subscription === subscription) return seen.generation === generation;
  if (seen && subscription !== undefined && seen.subscription !== undefined && subscription < seen.subscription) return false;
  held.set(partition, { subscription, generation });
  return true;
}

// The per-batch save sends its statements as one query (store.ts): a pool of its own for that.
const savePool = createPool(config.MYSQL_URL, 4, { multipleStatements: true });
deps.onStop(() => savePool.end()); // after the consumers, which stop first (onStop runs in reverse)

const handler = createHandler({
  detector,
  store: createAnalyticsStore(deps.pool, savePool),
  events,
  partitionOf: (queue) => queues.indexOf(queue),
  instanceId,
  holds,
  // Our claim was overtaken while the broker seems to still deliver to us: our connection is
  // most likely half-dead (the broker has already handed the partition over). Reset it, so that
  // the batch's channel closes and its messages are redelivered instead of acked.
  async release(partition) {
    deps.amqp.reset(`ev-analytics lost partition ${partition}`);
    for (const until = Date.now() + 5_000; consumers[partition]?.consuming && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
  },
});
consumers = await runQueueFunction(deps, queues.map((q) => consume(q, analyticsContract, handler)));

const rebalancer = startRebalancer({
  instanceId,
  consumers,
  membership: createMembership(deps.pool, config.REBALANCE_EVERY_MS * 3),
  log: deps.log,
  activeWithinMs: config.REBALANCE_EVERY_MS * 2,
  everyMs: config.REBALANCE_EVERY_MS,
});
deps.onStop(() => rebalancer.stop());
