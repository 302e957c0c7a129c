// The whole RabbitMQ topology, as data. Declarations are idempotent.
//
// The privileged migrate step (infra/provision.ts) declares it; functions only
// check that their queues exist. For every consuming queue Q it also declares:
//   Q.retry  messages wait there `retryDelayMs`, then dead-letter back to Q
//   Q.dlq    poison messages, with the reason in the `x-sluice-reason` header
// and two fanout exchanges of the same names, through which consumers forward
// to them (a consumer may not publish to the default exchange).

export interface ExchangeSpec {
  name: string;
  type: 'topic' | 'x-consistent-hash';
  arguments?: Record<string, unknown>;
  /** Exchange-to-exchange bindings: messages of `source` matching `pattern` flow into this exchange. */
  bindings?: { source: string; pattern: string }[];
}

export interface QueueSpec {
  name: string;
  bindings: { exchange: string; pattern: string }[];
  retryDelayMs: number;
  /** One consumer at a time gets the queue's messages; the others stand by (keyed state). */
  singleActiveConsumer?: boolean;
}

export interface Topology {
  exchanges: ExchangeSpec[];
  queues: QueueSpec[];
}

/** Readings are split by session over this many analytics partitions. */
export const EV_PARTITIONS = 4;
export const evAnalyticsQueue = (partition: number) => `ev.analytics.p${partition}`;

export const topology: Topology = {
  exchanges: [
    { name: 'logs', type: 'topic' },
    { name: 'ev', type: 'topic' },
    {
      // Consistent hashing on the sessionId header: all readings of a session reach one partition.
      name: 'ev.analytics',
      type: 'x-consistent-hash',
      arguments: { 'hash-header': 'sessionId' },
      bindings: [{ source: 'ev', pattern: 'ev.reading.#' }],
    },
  ],
  queues: [
    { name: 'logs.lake', bindings: [{ exchange: 'logs', pattern: 'logs.#' }], retryDelayMs: 5_000 },
    { name: 'logs.clean', bindings: [{ exchange: 'logs', pattern: 'logs.*.access' }], retryDelayMs: 5_000 },
    { name: 'logs.stats', bindings: [{ exchange: 'logs', pattern: 'logs.*.access' }], retryDelayMs: 5_000 },
    ...Array.from({ length: EV_PARTITIONS }, (_, p) => ({
      name: evAnalyticsQueue(p),
      // The binding key of a consistent-hash exchange is the partition's weight.
      bindings: [
        { exchange: 'ev.analytics', pattern: '1' },
        { exchange: 'ev', pattern: 'ev.clock' },
      ],
      retryDelayMs: 2_000,
      singleActiveConsumer: true,
    })),
    { name: 'ev.store.readings', bindings: [{ exchange: 'ev', pattern: 'ev.reading.#' }], retryDelayMs: 5_000 },
    { name: 'ev.store.events', bindings: [{ exchange: 'ev', pattern: 'ev.event.#' }], retryDelayMs: 5_000 },
    { name: 'notify.email', bindings: [{ exchange: 'ev', pattern: 'ev.event.#' }], retryDelayMs: 5_000 },
  ],
};

export const retryQueue = (queue: string) => `${queue}.retry`;
export const deadLetterQueue = (queue: string) => `${queue}.dlq`;

export function queueSpec(name: string, t: Topology = topology): QueueSpec {
  const spec = t.queues.find((q) => q.name === name);
  if (!spec) throw new Error(`queue ${name} is not declared in infra/topology.ts`);
  return spec;
}
