// ev-store: readings -> ev_readings and the per-session summary ev_sessions;
// events -> ev_events (and the session's final status). All writes are keyed
// (session + seq, session, event id), so a redelivered batch changes nothing.
import type { BatchHandler } from '../../shared/amqp/consumer.ts';
import { readingProblems, type EvEvent, type EvReading } from '../../shared/contracts/ev.ts';

export type SessionStatus = 'charging' | 'stopped' | 'completed' | 'interrupted' | 'faulted';

/** What one batch tells about a session; merged into ev_sessions by the store. */
export interface SessionPatch {
  sessionId: string;
  runId: string;
  chargePointId: string;
  location: string | null;
  make: string;
  model: string;
  vin: string;
  chargerType: string;
  chargerMaxKW: number;
  ownerEmail: string;
  chargeLimit: number;
  /** From the earliest valid reading of the batch (null when the patch comes from an event). */
  first: { seq: number; soc: number; at: Date } | null;
  /** From the latest valid reading of the batch. */
  last: { seq: number; soc: number; energyKWh: number; at: Date; ended: boolean } | null;
  status: SessionStatus;
}

export interface ReadingRow extends EvReading {
  problems: string | null;
  publishedAt: Date | null;
}

export interface EvStore {
  insertReadings(rows: ReadingRow[]): Promise<void>;
  insertEvents(events: EvEvent[]): Promise<void>;
  /** Merge patches: earliest first, latest last, status only moves up (charging < stopped < completed < interrupted < faulted). */
  mergeSessions(patches: SessionPatch[]): Promise<void>;
}

/** What a reading alone says. Whether a stop was a completed charge is ev-analytics' call (its charge.completed event). */
function statusOf(r: EvReading): SessionStatus {
  if (r.chargingState === 'Faulted' || r.errorCode !== 'NoError') return 'faulted';
  if (r.chargingState === 'Finishing') return 'stopped';
  return 'charging';
}

const RANK: Record<SessionStatus, number> = { charging: 0, stopped: 1, completed: 2, interrupted: 3, faulted: 4 };

function patchFrom(r: EvReading | EvEvent, status: SessionStatus): SessionPatch {
  return {
    sessionId: r.sessionId,
    runId: r.runId,
    chargePointId: r.chargePointId,
    location: r.location ?? null,
    make: r.vehicle.make,
    model: r.vehicle.model,
    vin: r.vehicle.vin,
    chargerType: r.charger.type,
    chargerMaxKW: r.charger.maxKW,
    ownerEmail: r.owner.email,
    chargeLimit: 'chargeLimitPercent' in r && r.chargeLimitPercent !== null ? r.chargeLimitPercent : 0,
    first: null,
    last: null,
    status,
  };
}

export function createReadingsHandler(deps: { store: EvStore }): BatchHandler<EvReading> {
  return async (items) => {
    const rows: ReadingRow[] = [];
    const sessions = new Map<string, SessionPatch>();
    for (const { body: r, publishedAt } of items) {
      const problems = readingProblems(r);
      rows.push({ ...r, problems: problems.length ? problems.join('; ').slice(0, 512) : null, publishedAt: publishedAt ? new Date(publishedAt) : null });
      if (problems.length) continue; // an impossible reading says nothing about the session
      const at = new Date(r.timestamp);
      const patch = sessions.get(r.sessionId) ?? patchFrom(r, 'charging');
      if (!patch.first || r.seq < patch.first.seq) patch.first = { seq: r.seq, soc: r.socPercent, at };
      if (!patch.last || r.seq > patch.last.seq) {
        patch.last = { seq: r.seq, soc: r.socPercent, energyKWh: r.energyWh / 1000, at, ended: r.chargingState === 'Finishing' };
        patch.chargeLimit = r.chargeLimitPercent;
      }
      const status = statusOf(r);
      if (RANK[status] > RANK[patch.status]) patch.status = status;
      sessions.set(r.sessionId, patch);
    }
    await deps.store.insertReadings(rows);
    await deps.store.mergeSessions([...sessions.values()]);
  };
}

const EVENT_STATUS: Partial<Record<EvEvent['type'], SessionStatus>> = {
  'charge.completed': 'completed',
  'charge.fault': 'faulted',
  'charge.offline': 'interrupted',
};

export function createEventsHandler(deps: { store: EvStore }): BatchHandler<EvEvent> {
  return async (items) => {
    const events = items.map((i) => i.body);
    await deps.store.insertEvents(events);
    const patches = events.flatMap((e) => {
      const status = EVENT_STATUS[e.type];
      return status ? [patchFrom(e, status)] : [];
    });
    await deps.store.mergeSessions(patches);
  };
}
