// Every wiring name of the pipeline's messages, in one place: exchanges, routing keys and the
// patterns that bind to them, message type strings, the partitioning header. The contracts
// (logs.ts, ev.ts, alerts.ts) re-export them next to their schemas and message builders;
// infra/topology.ts builds its queues and bindings from them, infra/access.ts its topic
// permissions. No zod and no other import here: the topology (in every function bundle)
// takes the names without the schemas.
//
// Renaming anything here renames it on the wire: test/unit/wiring-names.test.ts holds the
// names deployed brokers and stored messages know, as literals.

// --- web logs: topic exchange `logs` -----------------------------------------------------

export const LOGS_EXCHANGE = 'logs';
/** The source segment alert events use; no log source may take it (SourceSchema). */
export const ALERT_SOURCE = 'alert';
/** A log line of `source`: logs.<source>.access. */
export const logRoutingKey = (source: string) => `${LOGS_EXCHANGE}.${source}.access`;
/** Every source's log lines (logs.*.access). */
export const LOG_LINES_BINDING = logRoutingKey('*');
/** Alert events go out as logs.alert.<rule>. */
export const ALERT_ROUTING_PREFIX = `${LOGS_EXCHANGE}.${ALERT_SOURCE}`;
export const alertRoutingKey = (rule: string) => `${ALERT_ROUTING_PREFIX}.${rule}`;
/** Every alert event (logs.alert.#). */
export const ALERTS_BINDING = `${ALERT_ROUTING_PREFIX}.#`;

// --- EV charging: topic exchange `ev` -----------------------------------------------------

export const EV_EXCHANGE = 'ev';
/** Consistent-hash exchange fed with the readings of `ev`, one queue per analytics partition. */
export const EV_PARTITION_EXCHANGE = `${EV_EXCHANGE}.analytics`;
/** The header a reading is partitioned on (all readings of a session reach one partition). */
export const EV_PARTITION_HEADER = 'sessionId';
export const READING_ROUTING_PREFIX = `${EV_EXCHANGE}.reading`;
/** A reading of a vehicle of `make`: ev.reading.<make, lower case, [a-z0-9-]>. */
export const readingRoutingKey = (make: string) => `${READING_ROUTING_PREFIX}.${make.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
/** Every reading (ev.reading.#). */
export const READINGS_BINDING = `${READING_ROUTING_PREFIX}.#`;
export const EVENT_ROUTING_PREFIX = `${EV_EXCHANGE}.event`;
/** An event of type charge.<x>: ev.event.<x>. */
export const eventRoutingKey = (type: `charge.${string}`) => `${EVENT_ROUTING_PREFIX}.${type.slice('charge.'.length)}`;
/** Every event (ev.event.#). */
export const EVENTS_BINDING = `${EVENT_ROUTING_PREFIX}.#`;
/** The simulated clock of a run, broadcast to every partition. */
export const CLOCK_ROUTING_KEY = `${EV_EXCHANGE}.clock`;
/** A session's quiet notice (the source sent its last reading), partitioned like its readings. */
export const QUIET_ROUTING_KEY = `${EV_EXCHANGE}.quiet`;

// --- message type strings (the AMQP `type` property; also the contracts' names) -----------

export const MESSAGE_TYPES = {
  logLine: 'log.line',
  /** Many consecutive lines of one file in one message (batch framing, contracts/logs.ts). */
  logBatch: 'log.batch',
  alert: 'log.alert',
  evReading: 'ev.reading',
  evClock: 'ev.clock',
  evQuiet: 'ev.quiet',
  evEvent: 'ev.event',
} as const;
export type MessageType = (typeof MESSAGE_TYPES)[keyof typeof MESSAGE_TYPES];

/** Publish options every JSON message carries. */
export const jsonMessageOptions = (type: MessageType, messageId: string) => ({ messageId, contentType: 'application/json', type });
