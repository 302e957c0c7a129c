// The alert rules and the incident state machine: no I/O of their own (the store hands them
// the minutes they ask for), so every transition is unit-tested (test/unit/log-alerts-rules.test.ts).
//
// Event time. error_rate and scanner look at one source's minutes of event time (the log's
// own timestamps, UTC minutes of log_stats_minute), never at the wall clock of the machine
// reading them, so a replay of last year's log fires last year's incidents, minute for minute.
// A minute is judged only once it is complete: the source has counted data in a later
// minute (event time moved past it), or it is the source's latest minute and has not moved
// for ALERT_SETTLE_S (the end of a replay, a pause in traffic). A later update to a minute
// that was judged (late lines) is judged again.
//
// Incidents, per (rule, source):
//   - a complete minute that breaches and that no incident has counted yet joins the open
//     incident, or opens one (the `fired` transition, with that minute's numbers);
//   - an open incident resolves once the ALERT_CLEAR_MINUTES minutes after its last breaching
//     minute are complete and clean (a minute without requests is clean): the `resolved`
//     transition, at the end of those clean minutes. A breaching minute met on the way
//     extends the incident instead;
//   - so a late update that tips an earlier clean minute over opens a new incident (and, when
//     event time is already past it, resolves it at once): each breaching minute is reported
//     in exactly one incident.
// silent is wall-clock: a source whose running follow runs' published count has not moved
// for ALERT_SILENT_S fires; it resolves when lines flow again or no such run is left.

export const MINUTE_MS = 60_000;

export interface MinuteCounts {
  requests: number;
  s4xx: number;
  s5xx: number;
}

export interface ErrorRateThresholds {
  /** A minute breaches above this ratio of 5xx answers (0.05: more than 5 %). */
  ratio: number;
  /** ... when it has at least this many requests. */
  minRequests: number;
}

/** error_rate: at least `minRequests` requests and more than `ratio` of them answered 5xx. */
export function errorRateBreach(m: MinuteCounts, t: ErrorRateThresholds): boolean {
  return m.requests >= t.minRequests && m.requests > 0 && m.s5xx / m.requests > t.ratio;
}

/** scanner: only a minute with more 4xx answers than the threshold can hold a client over it. */
export const scannerCandidate = (m: MinuteCounts, clientErrors: number): boolean => m.s4xx > clientErrors;

/** scanner: the clients with more than `clientErrors` 4xx answers in the minute, most first. */
export function scannerOffenders<C extends { count: number; clientIp: string }>(clients: C[], clientErrors: number): C[] {
  return clients.filter((c) => c.count > clientErrors).sort((a, b) => b.count - a.count || (a.clientIp < b.clientIp ? -1 : a.clientIp > b.clientIp ? 1 : 0));
}

/** The source's latest minute with counted (alerting) requests, and whether it has settled. */
export interface Latest {
  minute: number;
  /** Not updated for ALERT_SETTLE_S. */
  settled: boolean;
}

/** Complete: event time has moved past the minute, or it is the latest one and has settled. */
export function isComplete(minute: number, latest: Latest | null): boolean {
  if (!latest) return false;
  return minute < latest.minute || (minute === latest.minute && latest.settled);
}

export type MinuteStatus<D> = { kind: 'incomplete' } | { kind: 'clean' } | { kind: 'breach'; detail: D };

/** What the state machine may ask about a source's minutes (inside the transaction that holds its state). */
export interface MinuteView<D> {
  status(minute: number): Promise<MinuteStatus<D>>;
  /** The minutes of `minutes` some incident of this rule and source has already counted. */
  recorded(minutes: number[]): Promise<Set<number>>;
}

export interface IncidentState {
  /** The open incident (null: none). */
  incident: string | null;
  /** First breaching minute of the current (or last) incident. */
  since: number | null;
  /** Latest breaching minute of the current (or last) incident. */
  lastBreach: number | null;
  /** The source's latest minute, incomplete at the last evaluation. */
  pending: number | null;
}

export const NO_INCIDENT: IncidentState = { incident: null, since: null, lastBreach: null, pending: null };

export type Transition<D> =
  | { type: 'fired'; incident: string; minute: number; detail: D }
  | { type: 'resolved'; incident: string; since: number; lastBreach: number; at: number };

export interface Advance<D> {
  state: IncidentState;
  transitions: Transition<D>[];
  /** Breaching minutes newly counted, with their incident. */
  records: { minute: number; incident: string }[];
}

export interface AdvanceOptions {
  /** Clean complete minutes after the last breach that resolve an incident (ALERT_CLEAR_MINUTES). */
  clearMinutes: number;
  newId: () => string;
}

/**
 * Judges the `candidates` (minutes whose rows moved, and the pending one) in minute order,
 * resolving the open incident whenever the minutes after its last breach allow it.
 */
export async function advance<D>(state: IncidentState, candidates: number[], view: MinuteView<D>, opts: AdvanceOptions): Promise<Advance<D>> {
  const st: IncidentState = { ...state, pending: null };
  const transitions: Transition<D>[] = [];
  const records: { minute: number; incident: string }[] = [];
  const minutes = [...new Set(state.pending === null ? candidates : [...candidates, state.pending])].sort((a, b) => a - b);
  const known = await view.recorded(minutes);

  const count = async (minute: number, incident: string) => {
    if (known.has(minute)) return false;
    if (!(await view.recorded([minute])).has(minute)) records.push({ minute, incident });
    known.add(minute);
    return true;
  };

  /** Walk forward from the last breach: resolve after `clearMinutes` clean complete minutes, extend on a breach. */
  const tryResolve = async () => {
    walk: while (st.incident !== null && st.lastBreach !== null) {
      for (let i = 1; i <= opts.clearMinutes; i++) {
        const minute = st.lastBreach + i * MINUTE_MS;
        const status = await view.status(minute);
        if (status.kind === 'incomplete') return;
        if (status.kind === 'breach') {
          await count(minute, st.incident);
          st.lastBreach = minute;
          continue walk;
        }
      }
      transitions.push({ type: 'resolved', incident: st.incident, since: st.since!, lastBreach: st.lastBreach, at: st.lastBreach + (opts.clearMinutes + 1) * MINUTE_MS });
      st.incident = null;
    }
  };

  for (const minute of minutes) {
    await tryResolve();
    const status = await view.status(minute);
    if (status.kind === 'incomplete') {
      st.pending = Math.max(st.pending ?? minute, minute);
      continue;
    }
    if (status.kind !== 'breach' || known.has(minute)) continue;
    if (st.incident !== null) {
      await count(minute, st.incident);
      st.lastBreach = Math.max(st.lastBreach ?? minute, minute);
      st.since = Math.min(st.since ?? minute, minute);
    } else {
      const incident = opts.newId();
      Object.assign(st, { incident, since: minute, lastBreach: minute });
      await count(minute, incident);
      transitions.push({ type: 'fired', incident, minute, detail: status.detail });
    }
  }
  await tryResolve();
  return { state: st, transitions, records };
}

// --- silent -------------------------------------------------------------------------------

export interface FollowedRun {
  runId: string;
  source: string;
  published: number;
  /** When its published count last moved (as this evaluator saw it). */
  movedAt: number;
}

export interface SilenceView {
  source: string;
  /** The latest movement of any of the source's running follow runs. */
  lastMoved: number;
  published: number;
  runIds: string[];
  silentForMs: number;
  silent: boolean;
}

/** Per source with running (unmuted) follow runs: how long since its lines last moved, and whether that is silence. */
export function silenceBySource(runs: FollowedRun[], now: number, silentMs: number): Map<string, SilenceView> {
  const out = new Map<string, SilenceView>();
  for (const r of runs) {
    const v = out.get(r.source) ?? { source: r.source, lastMoved: r.movedAt, published: 0, runIds: [], silentForMs: 0, silent: false };
    v.lastMoved = Math.max(v.lastMoved, r.movedAt);
    v.published += r.published;
    v.runIds.push(r.runId);
    out.set(r.source, v);
  }
  for (const v of out.values()) {
    v.runIds.sort();
    v.silentForMs = Math.max(0, now - v.lastMoved);
    v.silent = v.silentForMs >= silentMs;
  }
  return out;
}

export type SilenceTransition =
  | { type: 'fired'; incident: string; since: number; view: SilenceView }
  | { type: 'resolved'; incident: string; since: number; reason: 'flowing' | 'stopped'; view: SilenceView | null };

/** The silent rule for one source: its open incident (if any) against what its runs show now. */
export function silenceStep(state: IncidentState, view: SilenceView | undefined, newId: () => string): { state: IncidentState; transition: SilenceTransition | null } {
  if (state.incident === null) {
    if (!view?.silent) return { state, transition: null };
    const incident = newId();
    return { state: { ...state, incident, since: view.lastMoved }, transition: { type: 'fired', incident, since: view.lastMoved, view } };
  }
  if (view?.silent) return { state, transition: null };
  const since = state.since ?? view?.lastMoved ?? 0;
  return {
    state: { ...state, incident: null },
    transition: { type: 'resolved', incident: state.incident, since, reason: view ? 'flowing' : 'stopped', view: view ?? null },
  };
}
