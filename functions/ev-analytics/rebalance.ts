// Sharing the partitions between ev-analytics instances.
//
// Every instance subscribes to every partition queue; single active consumer
// lets one of them at a time have each partition (and a standby takes over at
// once when it dies). On top of that, instances keep a heartbeat in MySQL and
// deal the partitions out over the live ones, in instance-id order. An instance
// that finds itself active on a partition dealt to another steps back (cycles
// its consumer to the back of the line), until each owner has its own. Idle
// partitions need no move: activity is only seen when messages flow.
import type { Consumer } from '../../shared/amqp/consumer.ts';
import type { Logger } from '../../shared/log.ts';
import { periodic } from '../../shared/timing.ts';

export interface Membership {
  /** Record our heartbeat and return the live instance ids, sorted. */
  heartbeat(instanceId: string): Promise<string[]>;
  leave(instanceId: string): Promise<void>;
}

/** Partition p goes to the live instance at p mod (number of instances). */
export function owner(partition: number, members: string[]): string | undefined {
  return members.length ? members[partition % members.length] : undefined;
}

export interface RebalanceOptions {
  instanceId: string;
  consumers: Consumer[]; // index = partition
  membership: Membership;
  log: Logger;
  /** A consumer that got a delivery this recently counts as the partition's active one. */
  activeWithinMs: number;
  now?: () => number;
}

/** One round: returns the partitions we stepped back from. */
export async function rebalanceOnce(opts: RebalanceOptions): Promise<number[]> {
  const now = opts.now ?? Date.now;
  const members = await opts.membership.heartbeat(opts.instanceId);
  const released: number[] = [];
  for (const [p, consumer] of opts.consumers.entries()) {
    const own = owner(p, members);
    const active = consumer.lastDeliveryAt > 0 && now() - consumer.lastDeliveryAt < opts.activeWithinMs;
    if (own && own !== opts.instanceId && active) {
      opts.log.info({ partition: p, owner: own, members: members.length }, 'handing partition to its owner');
      await consumer.cycle();
      released.push(p);
    }
  }
  return released;
}

export function startRebalancer(opts: RebalanceOptions & { everyMs: number }): { stop(): Promise<void> } {
  const loop = periodic(() => rebalanceOnce(opts), { name: 'rebalance round', everyMs: opts.everyMs, log: opts.log });
  return {
    async stop() {
      await loop.stop();
      await opts.membership.leave(opts.instanceId).catch(() => {});
    },
  };
}
