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
import { LOGS_EXCHANGE } from '#shared/contracts/logs.ts';
import { EV_EXCHANGE } from '#shared/contracts/ev.ts';
import { deadLetterQueue, retryQueue, topology } from './topology.ts';

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
const evPartitions = topology.queues.filter((q) => q.name.startsWith('ev.analytics.p')).map((q) => q.name);

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
    },
    consumes: [],
    publishes: {
      // Not logs.alert.access: a source may not be named `alert` (its lines would reach notify.alerts).
      [LOGS_EXCHANGE]: '^logs\\.(?!alert\\.)[A-Za-z0-9][A-Za-z0-9_-]*\\.access$',
      [EV_EXCHANGE]: '^ev\\.(reading\\.[a-z0-9-]+|clock)$',
    },
  },
  'log-lake': { mysql: { raw_logs: STORE }, consumes: ['logs.lake'], publishes: {} },
  'log-clean': {
    mysql: {
      web_requests: STORE, log_rejects: STORE,
      // The streaming aggregates, counted in the transaction that stores the clean rows.
      log_stats_minute: STORE, log_stats_visitor: STORE, log_stats_top: STORE, log_stats_top_visitor: STORE,
    },
    consumes: ['logs.clean'],
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
    publishes: { [LOGS_EXCHANGE]: '^logs\\.alert\\.(error_rate|scanner|silent)$' },
  },
  'ev-analytics': {
    mysql: { ev_analytics_state: STORE, ev_analytics_clock: STORE, ev_analytics_members: [...STORE, 'DELETE'] },
    consumes: evPartitions,
    publishes: { [EV_EXCHANGE]: '^ev\\.event\\.[a-z_]+$' },
  },
  'ev-store': { mysql: { ev_readings: STORE, ev_sessions: STORE, ev_events: STORE }, consumes: ['ev.store.readings', 'ev.store.events'], publishes: {} },
  'notify-email': { mysql: { email_outbox: STORE }, consumes: ['notify.email', 'notify.alerts'], publishes: {} },
};

/** The MySQL and RabbitMQ user name of a function. */
export const userOf = (fn: FunctionName | (typeof RETIRED_FUNCTIONS)[number]) => `sluice_${fn.replace(/-/g, '_')}`;
/** The environment variable that carries a function's password to the migrate step. */
export const passwordVariable = (fn: FunctionName) => `SLUICE_PASSWORD_${fn.replace(/-/g, '_').toUpperCase()}`;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const anyOf = (names: string[]) => (names.length ? `^(${names.map(escape).join('|')})$` : '^$');

/** RabbitMQ vhost permissions of a function. */
export function amqpPermissions(fn: FunctionName): { configure: string; write: string; read: string } {
  const a = ACCESS[fn];
  const forwards = a.consumes.flatMap((q) => [retryQueue(q), deadLetterQueue(q)]);
  return { configure: '^$', write: anyOf([...Object.keys(a.publishes), ...forwards]), read: anyOf(a.consumes) };
}

/**
 * Topic permissions: for every topic exchange, every user that may write to it gets
 * its own routing-key pattern. (RabbitMQ allows any routing key to a user that has
 * no topic permission on an exchange, so writers must each have one.)
 */
export function topicPermissions(fn: FunctionName): { exchange: string; write: string; read: string }[] {
  return Object.entries(ACCESS[fn].publishes).map(([exchange, write]) => ({ exchange, write, read: '^$' }));
}
