// ev-analytics: partition queues ev.analytics.p* (readings + clock) -> events on exchange `ev`.
// Every instance subscribes to every partition; each partition has one active
// consumer at a time (single active consumer), the others stand by, and the
// live instances share the partitions out between them (rebalance.ts).
import { randomUUID } from 'node:crypto';
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { EV_EXCHANGE, eventRoutingKey } from '../../shared/contracts/ev.ts';
import { encodeJson } from '../../shared/contracts/json.ts';
import { createDetector } from '../../shared/ev/detector.ts';
import { EV_PARTITIONS, evAnalyticsQueue } from '../../infra/topology.ts';
import { configShape } from './config.ts';
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
});
const events: EventSink = {
  async publish(list) {
    await Promise.all(
      list.map((e) => publisher.publish(EV_EXCHANGE, eventRoutingKey(e.type), encodeJson(e), { messageId: e.eventId, contentType: 'application/json', type: 'ev.event' })),
    );
  },
};
const queues = Array.from({ length: EV_PARTITIONS }, (_, p) => evAnalyticsQueue(p));
const handler = createHandler({
  detector,
  store: createAnalyticsStore(deps.pool),
  events,
  partitionOf: (queue) => queues.indexOf(queue),
});
const consumers = await runQueueFunction(deps, queues.map((q) => consume(q, analyticsContract, handler)));

const rebalancer = startRebalancer({
  instanceId: randomUUID(),
  consumers,
  membership: createMembership(deps.pool, config.REBALANCE_EVERY_MS * 3),
  log: deps.log,
  activeWithinMs: config.REBALANCE_EVERY_MS * 2,
  everyMs: config.REBALANCE_EVERY_MS,
});
deps.onStop(() => rebalancer.stop());
