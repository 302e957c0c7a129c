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
  /**
   * What an older release declared and this one no longer wants: the migrate step removes it, so
   * that e.g. a queue nobody consumes any more does not fill up forever. Queues go with their
   * `.retry` / `.dlq` queues and exchanges.
   */
  retired?: { queues: string[]; bindings: { queue: string; exchange: string; pattern: string }[] };
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
    { name: 'logs.lake', bindings: [{ exchange: 'logs', pattern: 'logs.*.access' }], retryDelayMs: 5_000 },
    // log-clean stores each line and, in the same transaction, counts it into the aggregates.
    { name: 'logs.clean', bindings: [{ exchange: 'logs', pattern: 'logs.*.access' }], retryDelayMs: 5_000 },
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
    // Web-log alerts (log-alerts publishes logs.alert.<rule>) for notify-email to mail the operator.
    { name: 'notify.alerts', bindings: [{ exchange: 'logs', pattern: 'logs.alert.#' }], retryDelayMs: 5_000 },
  ],
  retired: {
    // log-stats' own queue: the aggregates are now counted by log-clean (docs/design-notes.md).
    queues: ['logs.stats'],
    // The lake took every `logs.#` message; alerts now travel on that exchange too.
    bindings: [{ queue: 'logs.lake', exchange: 'logs', pattern: 'logs.#' }],
  },
};

export const retryQueue = (queue: string) => `${queue}.retry`;
export const deadLetterQueue = (queue: string) => `${queue}.dlq`;

export function queueSpec(name: string, t: Topology = topology): QueueSpec {
  const spec = t.queues.find((q) => q.name === name);
  if (!spec) throw new Error(`queue ${name} is not declared in infra/topology.ts`);
  return spec;
}
