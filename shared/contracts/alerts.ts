// Web-log alerts: log-alerts publishes one event per incident transition (fired, then resolved)
// on the topic exchange `logs` with routing key `logs.alert.<rule>`; notify-email mails the
// operator. Only log-alerts may publish that routing key (infra/access.ts), and no log source
// may be named `alert` (SourceSchema), so nothing else can look like an alert.
// Everything taken from the log (paths, client addresses) is hostile input: it is bounded here,
// and escaped by whoever renders it.
import { z } from 'zod';
import type { Contract } from '../amqp/consumer.ts';
import type { Publisher } from '../amqp/publisher.ts';
import { PoisonMessageError } from '../errors.ts';
import { encodeJson, jsonContract } from './json.ts';
import { SourceSchema } from './logs.ts';
import { LOGS_EXCHANGE, MESSAGE_TYPES, alertRoutingKey as routingKeyOf, jsonMessageOptions } from './names.ts';

export { ALERTS_BINDING, ALERT_ROUTING_PREFIX } from './names.ts';

export const ALERT_RULES = ['error_rate', 'scanner', 'silent'] as const;
export const AlertRuleSchema = z.enum(ALERT_RULES);
export type AlertRule = z.infer<typeof AlertRuleSchema>;

/** Longest path or client address an event carries (characters); longer ones are cut by the publisher. */
export const ALERT_TEXT_MAX = 512;
/** Most offending paths or clients an event lists. */
export const ALERT_TOP_MAX = 10;

const iso = z.iso.datetime({ offset: true });
const count = z.number().int().min(0);
const text = z.string().max(ALERT_TEXT_MAX);
export const PathCountSchema = z.object({ path: text, count: count });
export type PathCount = z.infer<typeof PathCountSchema>;
export const ClientCountSchema = z.object({ clientIp: text, count: count, paths: z.array(PathCountSchema).max(ALERT_TOP_MAX) });
export type ClientCount = z.infer<typeof ClientCountSchema>;

const common = {
  source: SourceSchema,
  /** Stable id of the incident: its fired and resolved events carry the same one. */
  incident: z.uuid(),
  state: z.enum(['fired', 'resolved']),
  /**
   * When the transition happened. error_rate and scanner are in event time (the log's own
   * timestamps): fired = the start of the breaching minute, resolved = the end of the clean
   * minute(s) that cleared it. silent is about now: wall-clock time.
   */
  at: iso,
  /** Start of the incident: its first breaching minute (silent: when the source's lines last moved). */
  since: iso,
};

export const ErrorRateAlertSchema = z.object({
  ...common,
  rule: z.literal('error_rate'),
  /** resolved: the end of the last breaching minute. */
  until: iso.optional(),
  /** fired: the breaching minute's counts; resolved: totals over the incident's breaching minutes. */
  numbers: z.object({ requests: count, s5xx: count, ratio: z.number().min(0).max(1), minutes: z.number().int().min(1) }),
  /** fired: the minute's most frequent paths answered 5xx (none on resolved). */
  topPaths: z.array(PathCountSchema).max(ALERT_TOP_MAX),
  thresholds: z.object({ ratio: z.number().min(0).max(1), minRequests: count }),
});

export const ScannerAlertSchema = z.object({
  ...common,
  rule: z.literal('scanner'),
  until: iso.optional(),
  /** fired: the minute's requests and 4xx answers; resolved: totals over the incident's breaching minutes. */
  numbers: z.object({ requests: count, s4xx: count, minutes: z.number().int().min(1) }),
  /** fired: the clients over the threshold in that minute, with their 4xx count and top paths (none on resolved). */
  clients: z.array(ClientCountSchema).max(ALERT_TOP_MAX),
  thresholds: z.object({ clientErrors: count }),
});

export const SilentAlertSchema = z.object({
  ...common,
  rule: z.literal('silent'),
  /** resolved: lines flow again, or no followed run of the source is running any more. */
  reason: z.enum(['flowing', 'stopped']).optional(),
  /** Seconds without a new line (at the transition); lines the source's runs had published; runs followed. */
  numbers: z.object({ silentForS: z.number().min(0), published: count, runs: count }),
  runIds: z.array(z.uuid()).max(ALERT_TOP_MAX),
  thresholds: z.object({ silentS: z.number().positive() }),
});

export const AlertEventSchema = z.discriminatedUnion('rule', [ErrorRateAlertSchema, ScannerAlertSchema, SilentAlertSchema]);
export type AlertEvent = z.infer<typeof AlertEventSchema>;
export type ErrorRateAlert = z.infer<typeof ErrorRateAlertSchema>;
export type ScannerAlert = z.infer<typeof ScannerAlertSchema>;
export type SilentAlert = z.infer<typeof SilentAlertSchema>;

export const alertRoutingKey = (rule: AlertRule) => routingKeyOf(rule);
/** One message per incident transition: a republished one carries the same id. */
export const alertMessageId = (e: Pick<AlertEvent, 'incident' | 'state'>) => `${e.incident}:${e.state}`;

const json = jsonContract(MESSAGE_TYPES.alert, AlertEventSchema);
/** Decodes an alert event: invalid JSON, a schema violation, or a routing key that is not its rule's are poison (dead-lettered with the reason). */
export const alertContract: Contract<AlertEvent> = {
  name: MESSAGE_TYPES.alert,
  decode(msg) {
    const event = json.decode(msg);
    const expected = alertRoutingKey(event.rule);
    if (msg.fields.routingKey !== expected) throw new PoisonMessageError(`alert of rule ${event.rule} arrived with routing key '${msg.fields.routingKey}', expected '${expected}'`);
    return event;
  },
};

/** The body and publish options of an alert event (also what log-alerts' outbox stores). */
export function alertMessage(event: AlertEvent) {
  return {
    exchange: LOGS_EXCHANGE,
    routingKey: alertRoutingKey(event.rule),
    content: encodeJson(event),
    options: alertMessageOptions(alertMessageId(event)),
  };
}

/** The publish options of an alert event of that message id (log-alerts' outbox stores the id, key and body). */
export const alertMessageOptions = (messageId: string) => jsonMessageOptions(MESSAGE_TYPES.alert, messageId);

/** Publishes an alert event with confirms (resolves once the broker has it). */
export async function publishAlert(publisher: Publisher, event: AlertEvent): Promise<void> {
  const m = alertMessage(event);
  await publisher.publish(m.exchange, m.routingKey, m.content, m.options);
}
