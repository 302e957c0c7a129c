// Events -> outbox rows, one per (event, recipient role), keyed by a dedupe key.
// The queue message is acked once its rows are committed; the dispatcher
// (dispatcher.ts) sends them. A redelivered event finds its rows already there.
// Web-log alerts (notify.alerts) become one operator row per (rule, source, incident,
// state): a republished or redelivered alert finds its row and mails nobody again.
import type { BatchHandler } from '../../shared/amqp/consumer.ts';
import type { EvEvent } from '../../shared/contracts/ev.ts';
import type { AlertEvent } from '../../shared/contracts/alerts.ts';
import type { Role, Rules } from './rules.ts';

interface OutboxRowBase {
  dedupeKey: string;
  eventId: string;
  /** The EV run; for a web-log alert, its incident. */
  runId: string;
  role: Role;
  recipient: string;
  /** Rows with the same group key go out as one email. */
  groupKey: string;
  dueAt: Date;
}
/** `kind` (email_outbox.kind) says how the event is rendered: an EV event (the default) or a web-log alert. */
export type OutboxRow = OutboxRowBase & ({ kind?: 'ev'; event: EvEvent } | { kind: 'alert'; event: AlertEvent });

export interface OutboxWriter {
  /** Idempotent on dedupeKey. */
  enqueue(rows: OutboxRow[]): Promise<void>;
}

export interface NotifyDeps {
  outbox: OutboxWriter;
  rules: Rules;
  operatorEmail: string;
  groupWindowMs: number;
  now?: () => Date;
  /** Called once rows are committed (the dispatcher sends due ones at once). */
  onEnqueued?: () => void;
}

export function outboxRows(event: EvEvent, deps: NotifyDeps, now: Date): OutboxRow[] {
  return (deps.rules[event.type] ?? []).map((role) =>
    role === 'owner'
      ? { dedupeKey: `owner:${event.eventId}`, eventId: event.eventId, runId: event.runId, role, recipient: event.owner.email, groupKey: `owner:${event.eventId}`, event, dueAt: now }
      : {
          dedupeKey: `operator:${event.eventId}`,
          eventId: event.eventId,
          runId: event.runId,
          role,
          recipient: deps.operatorEmail,
          groupKey: `operator:${event.chargePointId}`,
          event,
          // Alertmanager's group_wait: the group goes out when its first alert has waited the window.
          dueAt: new Date(now.getTime() + deps.groupWindowMs),
        },
  );
}

export function createHandler(deps: NotifyDeps): BatchHandler<EvEvent> {
  const now = deps.now ?? (() => new Date());
  return async (items) => {
    const at = now();
    const rows = items.flatMap((i) => outboxRows(i.body, deps, at));
    await deps.outbox.enqueue(rows);
    if (rows.length > 0) deps.onEnqueued?.();
  };
}

/** The dedupe key of a web-log alert's mail: one per rule, source, incident and state. */
export const alertDedupeKey = (e: Pick<AlertEvent, 'rule' | 'source' | 'incident' | 'state'>) => `alert:${e.rule}:${e.source}:${e.incident}:${e.state}`;

export function alertOutboxRow(event: AlertEvent, operatorEmail: string, now: Date): OutboxRow {
  const dedupeKey = alertDedupeKey(event);
  return {
    kind: 'alert',
    dedupeKey,
    eventId: `${event.incident}:${event.state}`,
    runId: event.incident,
    role: 'operator',
    recipient: operatorEmail,
    // Its own mail: an incident is one mail when it fires and one when it resolves.
    groupKey: dedupeKey,
    event,
    // A resolution queued with its firing (a replay) sorts after it, so the mails go out in order.
    dueAt: event.state === 'resolved' ? new Date(now.getTime() + 1_000) : now,
  };
}

export interface AlertNotifyDeps {
  outbox: OutboxWriter;
  operatorEmail: string;
  now?: () => Date;
  onEnqueued?: () => void;
}

export function createAlertHandler(deps: AlertNotifyDeps): BatchHandler<AlertEvent> {
  const now = deps.now ?? (() => new Date());
  return async (items) => {
    const at = now();
    const rows = items.map((i) => alertOutboxRow(i.body, deps.operatorEmail, at));
    await deps.outbox.enqueue(rows);
    if (rows.length > 0) deps.onEnqueued?.();
  };
}
