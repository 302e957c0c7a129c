// Least privilege, as data: what each function may read, write and publish, in
// MySQL and in RabbitMQ. The privileged migrate step (infra/provision.ts) turns
// this into users, grants and permissions; the README's table and the security
// tests read it too, so the three cannot disagree.
//
// RabbitMQ permissions are regular expressions over resource names in the
// vhost: `configure` (declare/delete), `write` (publish to an exchange), `read`
// (consume from a queue). No function may configure anything: the topology is
// declared by the migrate step. Topic permissions narrow, per topic exchange,
// the routing keys a user may publish with, so that e.g. only ev-analytics can
// publish `ev.event.*`, the messages that end up as emails.
//
// Consumers forward retries and dead letters to the exchanges `<queue>.retry`
// and `<queue>.dlq` (one per queue, see infra/topology.ts), never to the
// default exchange: write access to the default exchange would let any
// function put a message into any queue, notify.email included.
import { ALERT_RULES } from '#shared/contracts/alerts.ts';
import {
  ALERT_SOURCE, CLOCK_ROUTING_KEY, EV_EXCHANGE, LOGS_EXCHANGE, QUIET_ROUTING_KEY, READING_ROUTING_PREFIX, alertRoutingKey, eventRoutingKey, logRoutingKey,
} from '#shared/contracts/names.ts';
import { EV_ANALYTICS_QUEUES, QUEUES, deadLetterQueue, retryQueue, topology } from './topology.ts';

export const FUNCTIONS = ['trigger', 'log-lake', 'log-clean', 'log-alerts', 'ev-analytics', 'ev-store', 'notify-email'] as const;
export type FunctionName = (typeof FUNCTIONS)[number];
/** Functions of older releases: the migrate step drops their users, so no old credential keeps any right. */
export const RETIRED_FUNCTIONS = ['log-stats'] as const;

type Privilege = 'SELECT' | 'INSERT' | 'UPDATE' | 'DELETE';

export interface Access {
  /** Tables and what the function may do on each. Every function may also read `schema_migrations` (the boot check). */
  mysql: Record<string, Privilege[]>;
  /** Queues it consumes. */
  consumes: string[];
  /** Topic exchanges it publishes to, with the routing keys it may use (a regular expression). */
  publishes: Record<string, string>;
}

const STORE: Privilege[] = ['SELECT', 'INSERT', 'UPDATE'];

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const HOLE = '\u0000';
/** The routing keys a contract's builder makes, its variable segment matching `segment` (a regular expression). */
const keysOf = (build: (segment: string) => string, segment: string) => `^${escape(build(HOLE)).replace(HOLE, segment)}$`;

/** Routing keys (topic permissions) of what each publisher sends. */
export const PUBLISHED_KEYS = {
  // Not logs.alert.access: a source may not be named `alert` (its lines would reach notify.alerts).
  logLines: keysOf(logRoutingKey, `(?!${escape(ALERT_SOURCE)}\\.)[A-Za-z0-9][A-Za-z0-9_-]*`),
  evReadingsAndClock: `^(${escape(READING_ROUTING_PREFIX)}\\.[a-z0-9-]+|${escape(CLOCK_ROUTING_KEY)}|${escape(QUIET_ROUTING_KEY)})$`,
  evEvents: keysOf((s) => eventRoutingKey(`charge.${s}`), '[a-z_]+'),
  alerts: keysOf(alertRoutingKey, `(${ALERT_RULES.join('|')})`),
};

export const ACCESS: Record<FunctionName, Access> = {
  trigger: {
    mysql: {
      runs: STORE,
      ev_sim_truth: ['SELECT', 'INSERT'],
      // GET /v1/runs/:id counts the rows the consumers stored for the run.
      raw_logs: ['SELECT'], web_requests: ['SELECT'], log_rejects: ['SELECT'],
      ev_readings: ['SELECT'], ev_sessions: ['SELECT'], ev_events: ['SELECT'],
      // GET /v1/stats and /v1/stats/top answer from the aggregates log-clean keeps.
      log_stats_minute: ['SELECT'], log_stats_top: ['SELECT'],
      // The dashboard's EV panel counts the latest run's emails by outbox status. Read only: the
      // outbox is notify-email's to write, and recipients come from events, never from the trigger.
      email_outbox: ['SELECT'],
    },
    consumes: [],
    publishes: { [LOGS_EXCHANGE]: PUBLISHED_KEYS.logLines, [EV_EXCHANGE]: PUBLISHED_KEYS.evReadingsAndClock },
  },
  'log-lake': { mysql: { raw_logs: STORE }, consumes: [QUEUES.logLake], publishes: {} },
  'log-clean': {
    mysql: {
      web_requests: STORE, log_rejects: STORE,
      // The streaming aggregates, counted in the transaction that stores the clean rows.
      log_stats_minute: STORE, log_stats_visitor: STORE, log_stats_top: STORE, log_stats_top_visitor: STORE,
    },
    consumes: [QUEUES.logClean],
    publishes: {},
  },
  'log-alerts': {
    mysql: {
      // Reads the aggregates as they move, a flagged minute's requests (its offenders), and the follow runs (silence).
      log_stats_minute: ['SELECT'], web_requests: ['SELECT'], runs: ['SELECT'],
      log_alerts_state: STORE, log_alerts_breach: STORE, log_alerts_cursor: STORE, log_alerts_outbox: STORE,
      // A run's row goes once the run has ended.
      log_alerts_silence: [...STORE, 'DELETE'],
    },
    consumes: [],
    // Alert events only: notify-email trusts logs.alert.* because nobody else may publish it.
    publishes: { [LOGS_EXCHANGE]: PUBLISHED_KEYS.alerts },
  },
  'ev-analytics': {
    mysql: { ev_analytics_state: STORE, ev_analytics_clock: STORE, ev_analytics_partitions: STORE, ev_analytics_members: [...STORE, 'DELETE'] },
    consumes: [...EV_ANALYTICS_QUEUES],
    publishes: { [EV_EXCHANGE]: PUBLISHED_KEYS.evEvents },
  },
  'ev-store': { mysql: { ev_readings: STORE, ev_sessions: STORE, ev_events: STORE }, consumes: [QUEUES.evStoreReadings, QUEUES.evStoreEvents], publishes: {} },
  'notify-email': { mysql: { email_outbox: STORE }, consumes: [QUEUES.notifyEmail, QUEUES.notifyAlerts], publishes: {} },
};

/**
 * Operators' roles: RabbitMQ users for operations no function needs, which the trigger performs
 * on an operator's behalf with a credential of their own (never with its own user), and which
 * have no MySQL user. `dlq`: GET/POST /v1/dlq… (functions/trigger/dlq.ts, DLQ_AMQP_URL).
 * `monitor`: the dashboard's pipeline-health panel (functions/trigger/dashboard.ts,
 * RABBITMQ_MONITOR_URL), which reads queue and connection figures from the management API.
 */
export const OPERATORS = ['dlq', 'monitor'] as const;
export type OperatorName = (typeof OPERATORS)[number];

export interface OperatorAccess {
  /** Queues it may read: basic.get (and ack or return), purge. */
  reads: string[];
  /** Exchanges it may publish to. */
  writes: string[];
  /**
   * RabbitMQ user tags: what the management API lets it see. None: AMQP only, no management
   * API at all. `monitoring`: every queue's, connection's and channel's figures (not messages),
   * in the vhosts it has a permission on (any permission, even `^$` everywhere).
   */
  tags: 'monitoring'[];
}

export const OPERATOR_ACCESS: Record<OperatorName, OperatorAccess> = {
  // Shows, replays and purges every dead-letter queue. A replay publishes to `Q.retry` (fanout,
  // whose TTL dead-letters back to Q), so this user can put a message into any queue, notify.email
  // included: it is an operator's credential, as sensitive as the broker's administrator for what
  // it can make the pipeline do (README, "Least privilege").
  dlq: {
    reads: topology.queues.map((q) => deadLetterQueue(q.name)),
    writes: topology.queues.map((q) => retryQueue(q.name)),
    tags: [],
  },
  // Reads the figures of the vhost's queues and connections through the management API
  // (GET /api/queues/<vhost>, /api/vhosts/<vhost>/connections). The tag shows figures; the vhost
  // permission (`^$` for configure, write and read: nothing) is what admits it to the vhost at all
  // (without one the API answers 401). It may not get, publish or purge a message, nor declare
  // anything. What it does reveal: queue names and depths, and the connections' user names,
  // client addresses and names.
  monitor: { reads: [], writes: [], tags: ['monitoring'] },
};

/** The MySQL and RabbitMQ user name of a function (or the RabbitMQ user of an operator's role). */
export const userOf = (fn: FunctionName | OperatorName | (typeof RETIRED_FUNCTIONS)[number]) => `sluice_${fn.replace(/-/g, '_')}`;
/** The environment variable that carries a function's (or an operator role's) password to the migrate step. */
export const passwordVariable = (fn: FunctionName | OperatorName) => `SLUICE_PASSWORD_${fn.replace(/-/g, '_').toUpperCase()}`;

const anyOf = (names: string[]) => (names.length ? `^(${names.map(escape).join('|')})$` : '^$');

/** RabbitMQ vhost permissions of a function. */
export function amqpPermissions(fn: FunctionName): { configure: string; write: string; read: string } {
  const a = ACCESS[fn];
  const forwards = a.consumes.flatMap((q) => [retryQueue(q), deadLetterQueue(q)]);
  return { configure: '^$', write: anyOf([...Object.keys(a.publishes), ...forwards]), read: anyOf(a.consumes) };
}

/** RabbitMQ vhost permissions of an operator's role: no configure, its exchanges, its queues. */
export function operatorPermissions(op: OperatorName): { configure: string; write: string; read: string } {
  const a = OPERATOR_ACCESS[op];
  return { configure: '^$', write: anyOf(a.writes), read: anyOf(a.reads) };
}

/**
 * Topic permissions: for every topic exchange, every user that may write to it gets
 * its own routing-key pattern. (RabbitMQ allows any routing key to a user that has
 * no topic permission on an exchange, so writers must each have one.)
 */
export function topicPermissions(fn: FunctionName): { exchange: string; write: string; read: string }[] {
  return Object.entries(ACCESS[fn].publishes).map(([exchange, write]) => ({ exchange, write, read: '^$' }));
}
