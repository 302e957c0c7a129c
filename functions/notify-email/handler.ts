// Events -> outbox rows, one per (event, recipient role), keyed by a dedupe key.
// The queue message is acked once its rows are committed; the dispatcher
// (dispatcher.ts) sends them. A redelivered event finds its rows already there.
import type { BatchHandler } from '../../shared/amqp/consumer.ts';
import type { EvEvent } from '../../shared/contracts/ev.ts';
import type { Role, Rules } from './rules.ts';

export interface OutboxRow {
  dedupeKey: string;
  eventId: string;
  runId: string;
  role: Role;
  recipient: string;
  /** Rows with the same group key go out as one email. */
  groupKey: string;
  event: EvEvent;
  dueAt: Date;
}

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
