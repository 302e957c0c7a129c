// The whole RabbitMQ topology, as data. Declarations are idempotent.
//
// The privileged migrate step (infra/provision.ts) declares it; functions only
// check that their queues exist. For every consuming queue Q it also declares:
//   Q.retry  messages wait there `retryDelayMs`, then dead-letter back to Q
//   Q.dlq    poison messages, with the reason in the `x-sluice-reason` header
// and two fanout exchanges of the same names, through which consumers forward
// to them (a consumer may not publish to the default exchange).
//
// What the broker itself does with a message (delivery limit, dead-lettering) is set by
// policies (`queuePolicies` below), which the migrate step applies through the management API:
// a policy changes a queue that already exists, where a changed `x-` argument would make its
// redeclaration fail (PRECONDITION_FAILED) on every deployment that has the queue.

import {
  ALERTS_BINDING, CLOCK_ROUTING_KEY, EVENTS_BINDING, EV_EXCHANGE, EV_PARTITION_EXCHANGE, EV_PARTITION_HEADER, LOGS_EXCHANGE,
  LOG_LINES_BINDING, QUIET_ROUTING_KEY, READINGS_BINDING,
} from '#shared/contracts/names.ts';

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
  /** Deliveries of a message before the broker dead-letters it to Q.dlq (default DELIVERY_LIMIT). */
  deliveryLimit?: number;
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
export const evAnalyticsQueue = (partition: number) => `${EV_PARTITION_EXCHANGE}.p${partition}`;
/** Every analytics partition's queue, in partition order. */
export const EV_ANALYTICS_QUEUES = Array.from({ length: EV_PARTITIONS }, (_, p) => evAnalyticsQueue(p));

/**
 * The queues, by what consumes them: functions take their names from here (functions/<fn>/config.ts),
 * never spell them. A queue is named after the exchange its messages come from.
 */
export const QUEUES = {
  /** log-lake: every log line, raw. */
  logLake: `${LOGS_EXCHANGE}.lake`,
  /** log-clean: every log line, parsed, and counted into the aggregates. */
  logClean: `${LOGS_EXCHANGE}.clean`,
  /** ev-store: readings. */
  evStoreReadings: `${EV_EXCHANGE}.store.readings`,
  /** ev-store: events. */
  evStoreEvents: `${EV_EXCHANGE}.store.events`,
  /** notify-email: EV events. */
  notifyEmail: 'notify.email',
  /** notify-email: web-log alerts. */
  notifyAlerts: 'notify.alerts',
} as const;

export const topology: Topology = {
  exchanges: [
    { name: LOGS_EXCHANGE, type: 'topic' },
    { name: EV_EXCHANGE, type: 'topic' },
    {
      // Consistent hashing on the sessionId header: all readings of a session reach one partition.
      name: EV_PARTITION_EXCHANGE,
      type: 'x-consistent-hash',
      arguments: { 'hash-header': EV_PARTITION_HEADER },
      // A session's quiet notice follows its readings to their partition.
      bindings: [
        { source: EV_EXCHANGE, pattern: READINGS_BINDING },
        { source: EV_EXCHANGE, pattern: QUIET_ROUTING_KEY },
      ],
    },
  ],
  queues: [
    { name: QUEUES.logLake, bindings: [{ exchange: LOGS_EXCHANGE, pattern: LOG_LINES_BINDING }], retryDelayMs: 5_000 },
    // log-clean stores each line and, in the same transaction, counts it into the aggregates.
    { name: QUEUES.logClean, bindings: [{ exchange: LOGS_EXCHANGE, pattern: LOG_LINES_BINDING }], retryDelayMs: 5_000 },
    ...EV_ANALYTICS_QUEUES.map((name) => ({
      name,
      // The binding key of a consistent-hash exchange is the partition's weight.
      bindings: [
        { exchange: EV_PARTITION_EXCHANGE, pattern: '1' },
        { exchange: EV_EXCHANGE, pattern: CLOCK_ROUTING_KEY },
      ],
      retryDelayMs: 2_000,
      singleActiveConsumer: true,
    })),
    { name: QUEUES.evStoreReadings, bindings: [{ exchange: EV_EXCHANGE, pattern: READINGS_BINDING }], retryDelayMs: 5_000 },
    { name: QUEUES.evStoreEvents, bindings: [{ exchange: EV_EXCHANGE, pattern: EVENTS_BINDING }], retryDelayMs: 5_000 },
    { name: QUEUES.notifyEmail, bindings: [{ exchange: EV_EXCHANGE, pattern: EVENTS_BINDING }], retryDelayMs: 5_000 },
    // Web-log alerts (log-alerts publishes logs.alert.<rule>) for notify-email to mail the operator.
    { name: QUEUES.notifyAlerts, bindings: [{ exchange: LOGS_EXCHANGE, pattern: ALERTS_BINDING }], retryDelayMs: 5_000 },
  ],
  retired: {
    // Names of older releases, as they were deployed (literals on purpose: they do not follow renames).
    // log-stats' own queue: the aggregates are now counted by log-clean (docs/design-notes.md).
    queues: ['logs.stats'],
    // The lake took every `logs.#` message; alerts now travel on that exchange too.
    bindings: [{ queue: 'logs.lake', exchange: 'logs', pattern: 'logs.#' }],
  },
};

/** What the consumer runtime appends to a queue's name for its retry and dead-letter queues (and their exchanges). */
export const RETRY_SUFFIX = '.retry';
export const DEAD_LETTER_SUFFIX = '.dlq';
export const retryQueue = (queue: string) => `${queue}${RETRY_SUFFIX}`;
export const deadLetterQueue = (queue: string) => `${queue}${DEAD_LETTER_SUFFIX}`;

/**
 * Deliveries of one message (first one included) before the broker itself dead-letters it to
 * `Q.dlq` with reason `delivery_limit` (header `x-death`). The consumer runtime gives up on a
 * failing message long before (MAX_ATTEMPTS, with `x-sluice-reason`): the broker's limit is the
 * backstop for a message whose batch never ends, e.g. one that crashes or stalls every consumer
 * that takes it. High enough that redeliveries after consumer kills, restarts and rebalances
 * (each returns the batch in flight) never reach it. Without it, RabbitMQ 4.x applies 20 and,
 * lacking a dead-letter target, drops the message; 3.x has no limit at all.
 */
export const DELIVERY_LIMIT = 50;

/** A RabbitMQ policy as the management API takes it (PUT /api/policies/<vhost>/<name>). */
export interface PolicySpec {
  name: string;
  pattern: string;
  'apply-to': 'queues';
  priority: number;
  definition: Record<string, string | number>;
}

/** Prefix of every policy the migrate step owns: others of that name are removed (retired queues). */
export const POLICY_PREFIX = 'sluice.';
/**
 * Only one policy applies to a queue, the one of highest priority whose pattern matches (policies do
 * not merge); ours match exactly our queues, at this priority, so a site-wide catch-all (`.*`,
 * priority 0) does not displace them. Site-wide limits belong in operator policies, which merge.
 */
export const POLICY_PRIORITY = 10;

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The policies of the topology, for a broker of major version `major` (3 or 4):
 *   sluice.q.<Q>   one per queue Q: a delivery limit, and Q.dlq (the fanout exchange) as its dead-letter
 *                  target, at-least-once. Per queue, as each queue has its own target.
 *   sluice.retry   every Q.retry: a delivery limit (nobody consumes them, but every queue has one) and
 *                  at-least-once dead-lettering back to Q (target and routing key are the queue's
 *                  arguments, which take precedence over a policy's anyway).
 *   sluice.dlq     every Q.dlq: no delivery limit. The DLQ API's peek (basic.get, nack + requeue)
 *                  counts as a delivery on 3.10 and 4.0-4.2; a limit would drop dead letters that are
 *                  looked at often. 4.x: -1 (its default is 20); 3.x has no limit by default and
 *                  refuses -1, so there the policy says nothing but that (it keeps a broader policy off).
 * At-least-once dead-lettering (3.10+) needs `overflow: reject-publish`; with `drop-head` (the
 * default) the broker falls back to at-most-once. Without a length limit, reject-publish changes
 * nothing for publishers.
 */
export function queuePolicies(t: Topology = topology, major = 4): PolicySpec[] {
  const base = { 'apply-to': 'queues' as const, priority: POLICY_PRIORITY };
  const atLeastOnce = { 'dead-letter-strategy': 'at-least-once', overflow: 'reject-publish' };
  const names = t.queues.map((q) => escapeRegex(q.name)).join('|');
  return [
    ...t.queues.map((q) => ({
      ...base,
      name: `${POLICY_PREFIX}q.${q.name}`,
      pattern: `^${escapeRegex(q.name)}$`,
      definition: { 'delivery-limit': q.deliveryLimit ?? DELIVERY_LIMIT, 'dead-letter-exchange': deadLetterQueue(q.name), ...atLeastOnce },
    })),
    { ...base, name: `${POLICY_PREFIX}retry`, pattern: `^(${names})\\.retry$`, definition: { 'delivery-limit': DELIVERY_LIMIT, ...atLeastOnce } },
    // 3.x: max-length-bytes is not set by anyone; a definition may not be empty, so 3.x says
    // overflow reject-publish (harmless without a length limit) to keep its place.
    { ...base, name: `${POLICY_PREFIX}dlq`, pattern: `^(${names})\\.dlq$`, definition: major >= 4 ? { 'delivery-limit': -1 } : { overflow: 'reject-publish' } },
  ];
}
