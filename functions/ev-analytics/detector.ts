// Pure detection logic of the ev-analytics function: no I/O, no timers, no
// wall clock, no env. The caller loads/saves `SessionState` (one per session,
// JSON in MySQL) and optionally `RunClock` (one per run and partition), feeds
// readings to `onReading` and clock messages to `onClock`, and publishes the
// returned events. Everything is decided in event time (reading / clock
// timestamps), so reprocessing the same messages yields the same events with
// the same ids.
//
// Order. A session's readings are numbered (`seq`, from 0, one per sample interval) and may
// arrive out of order: a reading that went through the retry queue, or was redelivered, comes
// back after later ones. What does not depend on order (the charger is online, the latest
// state, a Finishing reading was seen) is taken at arrival. Everything else, every detection
// included, is decided on the readings in seq order: a reading above a gap waits in the state
// (`pending`) until the gap is filled, and then the readings are processed in seq order, so the
// events are the ones the in-order stream raises. Only a seq already seen is a duplicate. A gap
// stays open until its reading arrives (a retry, a redelivery, a replay from the dead-letter
// queue) or, to keep the state bounded, until more than `reorderWindow` readings wait above it:
// then it is given up (its seqs taken as lost, `skipped`). A skipped reading that still arrives later is
// checked on its own (fault, impossible values, over limit, completion), never against its
// neighbours, which were compared without it. Offline detection is not ordered: a reading
// proves the charger online when it arrives.
//
// Offline and late readings. Silence is judged on the run's clock (event time), but a clock can
// overtake a late reading of the same session (one that went through the retry queue, or was
// redelivered out of order after a broker restart), and a session whose last reading (its
// Finishing) is late looks silent. So a source that announces quiet sessions (EvClock
// `announcesQuiet`) sends, per session, a quiet notice naming its last reading (`onQuiet`); in
// its runs a session is judged silent only once the notice and the reading it names have both
// arrived. Either can come last, and each is judged on arrival as well as on every clock. A
// run without notices is judged on the clock alone.
import {
  EVENT_SEVERITY,
  readingProblems,
  type ChargingState,
  type EvClock,
  type EvEvent,
  type EvQuiet,
  type EvEventType,
  type EvReading,
  type OcppErrorCode,
} from '../../shared/contracts/ev.ts';

export interface DetectorConfig {
  /** No reading for this many sample intervals of event time (watermark-based) -> charge.offline. */
  offlineAfterIntervals: number;
  /** Charging with power below this (W) ... */
  stallPowerW: number;
  /** ... for at least this long of event time (s), SoC not rising -> charge.stalled. */
  stallAfterS: number;
  /** SoC falling by >= this many points between consecutive valid readings while Charging -> charge.soc_drop. */
  socDropPoints: number;
  /** SoC > chargeLimitPercent + this while Charging -> charge.over_limit. */
  overLimitPoints: number;
  /** Finishing with SoC >= limit - this -> charge.completed. */
  completedTolerancePoints: number;
  /** At most this many readings of a session wait above a gap before the gap is given up as lost. */
  reorderWindow: number;
}

export const DEFAULT_DETECTOR_CONFIG: DetectorConfig = Object.freeze({
  offlineAfterIntervals: 3,
  stallPowerW: 100,
  stallAfterS: 600,
  socDropPoints: 3,
  overLimitPoints: 2,
  completedTolerancePoints: 1,
  reorderWindow: 256,
});

/** How many given-up seqs a session remembers (a skipped reading that arrives later is not a duplicate). */
export const MAX_SKIPPED = 64;

/** The physical values of the last valid reading of a session. */
export interface ValidSnapshot {
  seq: number;
  tsMs: number;
  chargingState: ChargingState;
  socPercent: number;
  chargeLimitPercent: number;
  energyWh: number;
  powerW: number;
}

/** A reading that waits above a gap: what the session state does not already hold. */
export type PendingReading = Omit<EvReading, 'runId' | 'sessionId' | 'vehicle' | 'owner' | 'charger'>;

/**
 * Per-session detector state. Plain JSON (numbers, strings, booleans, arrays,
 * objects, null): `JSON.parse(JSON.stringify(state))` is an equivalent state.
 */
export interface SessionState {
  v: 2;
  runId: string;
  sessionId: string;
  /** Highest seq seen (valid or invalid). */
  lastSeq: number;
  /** Every seq <= this was processed in order, or given up (then it is in `skipped`). */
  applied: number;
  /** Readings seen above a gap (seq > applied + 1), by seq, at most reorderWindow. */
  pending: PendingReading[];
  /** Seqs given up as lost and still never seen, oldest first, at most MAX_SKIPPED. */
  skipped: number[];
  /** Event time (epoch ms) of the latest reading of any kind: an invalid reading still proves the charger is online. */
  lastSeenMs: number;
  /** ISO timestamp of that reading. */
  lastSeenAt: string;
  sampleIntervalS: number;
  /** State of the reading of any kind with the highest seq. */
  chargingState: ChargingState;
  chargePointId: string;
  location?: string;
  vehicle: EvReading['vehicle'];
  owner: EvReading['owner'];
  charger: EvReading['charger'];
  /** First valid reading (start of the session for summaries), null until one arrived. */
  first: { seq: number; tsMs: number; socPercent: number; energyWh: number } | null;
  /** Last valid reading processed in seq order; invalid readings never change it. */
  last: ValidSnapshot | null;
  /** Start of the current run of valid Charging readings below stallPowerW, with the SoC at its start. */
  lowPower: { sinceMs: number; sinceSeq: number; socPercent: number } | null;
  /** Event types already raised for this session (each at most once). */
  emitted: EvEventType[];
  /** A Finishing reading was seen. */
  finished: boolean;
  /** charge.offline was reported. */
  offline: boolean;
  /** The source's quiet notice: it sent readings up to this seq and no more (absent until it arrives). */
  quietSeq?: number;
}

/** Event-time watermark of one run in one partition (max clock time seen, never goes back). */
export interface RunClock {
  runId: string;
  watermarkMs: number;
  /** ISO form of watermarkMs, as received. */
  watermark: string;
  /** The run's final clock was seen. */
  final: boolean;
  /** The run's source sends quiet notices (EvClock.announcesQuiet): silence needs one. */
  announcesQuiet?: boolean;
}

export interface ReadingOutcome {
  state: SessionState;
  events: EvEvent[];
  /** The reason when the reading is impossible (the caller dead-letters it), else null. */
  invalid: string | null;
  /** The seq was seen before: redelivery, nothing changed, no events. */
  duplicate: boolean;
}

export interface QuietOutcome {
  /** The session's state after the notice (unchanged when the notice changed nothing). */
  state: SessionState | undefined;
  events: EvEvent[];
  /** Whether `state` changed and must be saved. */
  changed: boolean;
  /** No reading of the session was seen yet: the notice can only be taken once one has (retry it). */
  unknown: boolean;
}

export interface ClockOutcome {
  events: EvEvent[];
  /** Only the states that changed (newly reported offline, hence closed). */
  states: SessionState[];
  /** The run's watermark after this clock: persist it and pass it to the next onClock of the run. */
  clock: RunClock;
}

export interface Detector {
  readonly config: Readonly<DetectorConfig>;
  /**
   * One reading. With the run's clock `rc`, a run that announces quiet sessions has the session
   * judged for silence at once (the late last reading of a session the clock already passed).
   */
  onReading(prev: SessionState | undefined, reading: EvReading, rc?: RunClock): ReadingOutcome;
  /** A session's quiet notice; judged for silence at once against `rc` when its reading is in. */
  onQuiet(prev: SessionState | undefined, quiet: EvQuiet, rc?: RunClock): QuietOutcome;
  /**
   * Advance the run's watermark; returns offline events for open sessions whose
   * last reading is older than offlineAfterIntervals * their sampleIntervalS,
   * and the states to save (marked closed). Sessions of other runs and closed
   * sessions in `open` are ignored.
   */
  onClock(clock: EvClock, open: SessionState[], prev?: RunClock): ClockOutcome;
}

/** Open: may still be reported offline (not finished, not reported offline, last reading not Faulted). */
export function isOpen(s: SessionState): boolean {
  return !s.finished && !s.offline && s.chargingState !== 'Faulted';
}
/** Readings wait above a gap of this session. */
export function hasPending(s: SessionState): boolean {
  return s.pending.length > 0;
}
/** Whether `seq` of the session was seen already (a redelivery). */
export function seenSeq(s: SessionState, seq: number): boolean {
  if (seq <= s.applied) return !s.skipped.includes(seq);
  return s.pending.some((p) => p.seq === seq);
}

/** A state saved before readings could wait (v 1: every seq up to lastSeq processed in order) in today's form. */
export function upgradeState(s: SessionState): SessionState {
  const v = (s as { v: number }).v;
  if (v === 2) return s;
  if (v !== 1) throw new Error(`unknown SessionState version ${String(v)}`);
  return { ...s, v: 2, applied: s.lastSeq, pending: [], skipped: [] };
}

export function sessionRunId(s: SessionState): string {
  return s.runId;
}
export function lastSeenMs(s: SessionState): number {
  return s.lastSeenMs;
}
export function eventIdFor(sessionId: string, type: EvEventType): string {
  return `${sessionId}:${type}`;
}

/** Advance a run's watermark (monotonic). Usable for clock messages and, if the caller wants, reading timestamps. */
export function advanceRunClock(prev: RunClock | undefined, runId: string, timestamp: string, final = false, announcesQuiet = false): RunClock {
  const ms = Date.parse(timestamp);
  const base: RunClock = prev && prev.runId === runId ? prev : { runId, watermarkMs: Number.NEGATIVE_INFINITY, watermark: '', final: false };
  const ahead = Number.isFinite(ms) && ms > base.watermarkMs;
  const rc: RunClock = {
    runId,
    watermarkMs: ahead ? ms : base.watermarkMs,
    watermark: ahead ? timestamp : base.watermark,
    final: base.final || final,
  };
  if (base.announcesQuiet === true || announcesQuiet) rc.announcesQuiet = true;
  return rc;
}


function resolveConfig(config: Partial<DetectorConfig> | undefined): DetectorConfig {
  const c: DetectorConfig = { ...DEFAULT_DETECTOR_CONFIG };
  for (const key of Object.keys(DEFAULT_DETECTOR_CONFIG) as (keyof DetectorConfig)[]) {
    const value = config?.[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (key === 'reorderWindow' && !Number.isInteger(value))) {
      throw new RangeError(`DetectorConfig.${key} must be a finite number >= 0, got ${String(value)}`);
    }
    c[key] = value;
  }
  if (c.offlineAfterIntervals <= 0) throw new RangeError('DetectorConfig.offlineAfterIntervals must be > 0');
  if (c.reorderWindow < 1) throw new RangeError('DetectorConfig.reorderWindow must be >= 1');
  return c;
}

// ---- formatting helpers for summaries -------------------------------------------------------

const num = (x: number, digits = 1): string => (Number.isInteger(x) ? String(x) : x.toFixed(digits));
const pct = (x: number | null | undefined): string => (x === null || x === undefined ? '? %' : `${num(x)} %`);
const kWh = (wh: number): string => `${(wh / 1000).toFixed(1)} kWh`;
function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  const min = Math.round(s / 60);
  if (min < 120) return `${min} min`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}
const vehicleName = (s: SessionState): string => `${s.vehicle.make} ${s.vehicle.model}`;
const chargerName = (s: SessionState): string => (s.location ? `${s.chargePointId} (${s.location})` : s.chargePointId);

function initState(r: EvReading, tsMs: number): SessionState {
  const s: SessionState = {
    v: 2,
    runId: r.runId,
    sessionId: r.sessionId,
    lastSeq: -1,
    applied: -1,
    pending: [],
    skipped: [],
    lastSeenMs: tsMs,
    lastSeenAt: r.timestamp,
    sampleIntervalS: r.sampleIntervalS,
    chargingState: r.chargingState,
    chargePointId: r.chargePointId,
    vehicle: { ...r.vehicle },
    owner: { ...r.owner },
    charger: { ...r.charger },
    first: null,
    last: null,
    lowPower: null,
    emitted: [],
    finished: false,
    offline: false,
  };
  if (r.location !== undefined) s.location = r.location;
  return s;
}

/** The valid reading with the highest seq seen, processed or waiting above a gap. */
function latestValid(s: SessionState): ValidSnapshot | null {
  for (let k = s.pending.length - 1; k >= 0; k--) {
    const p = s.pending[k]!;
    const tsMs = Date.parse(p.timestamp);
    // The value checks read only the measured values, which a waiting reading keeps.
    if (!Number.isFinite(tsMs) || readingProblems(p as EvReading).length > 0) continue;
    return { seq: p.seq, tsMs, chargingState: p.chargingState, socPercent: p.socPercent, chargeLimitPercent: p.chargeLimitPercent, energyWh: p.energyWh, powerW: p.powerW };
  }
  return s.last;
}

/**
 * A copy the detector may change without touching `s`: its own arrays; the objects in it
 * (`first`, `last`, `lowPower`, `vehicle`, ... and the waiting readings) are only ever replaced,
 * never changed in place, so they are shared. (structuredClone, per reading and per open session
 * on every clock tick, was a fifth of ev-analytics' CPU.)
 */
function copyState(s: SessionState): SessionState {
  return { ...s, pending: s.pending.slice(), skipped: s.skipped.slice(), emitted: s.emitted.slice() };
}

function makeEvent(
  s: SessionState,
  type: EvEventType,
  ts: string,
  seq: number | null,
  summary: string,
  details: Record<string, unknown>,
  last: ValidSnapshot | null = s.last,
): EvEvent {
  const ev: EvEvent = {
    eventId: eventIdFor(s.sessionId, type),
    type,
    severity: EVENT_SEVERITY[type],
    runId: s.runId,
    sessionId: s.sessionId,
    ts,
    seq,
    chargePointId: s.chargePointId,
    vehicle: { ...s.vehicle },
    owner: { ...s.owner },
    charger: { ...s.charger },
    socPercent: last?.socPercent ?? null,
    chargeLimitPercent: last?.chargeLimitPercent ?? null,
    energyWh: last?.energyWh ?? null,
    summary,
    details,
  };
  if (s.location !== undefined) ev.location = s.location;
  return ev;
}

export function createDetector(config?: Partial<DetectorConfig>): Detector {
  const cfg = resolveConfig(config);

  type Emit = (type: EvEventType, summary: string, details: Record<string, unknown>) => void;

  function onReading(prevIn: SessionState | undefined, r: EvReading, rc?: RunClock): ReadingOutcome {
    const invalid = problemsOf(r).invalid;

    // A state of another session/run is not this session's history.
    const prev = prevIn && prevIn.sessionId === r.sessionId && prevIn.runId === r.runId ? upgradeState(prevIn) : undefined;
    if (prev && seenSeq(prev, r.seq)) return { state: prev, events: [], invalid, duplicate: true };

    const tsMs = Date.parse(r.timestamp);
    const s = prev ? copyState(prev) : initState(r, tsMs);
    const events: EvEvent[] = [];

    // What holds at arrival, whatever the order: the charger was online then; the reading with
    // the highest seq is the session's current state; a Finishing reading ends the session.
    if (Number.isFinite(tsMs) && tsMs >= s.lastSeenMs) {
      s.lastSeenMs = tsMs;
      s.lastSeenAt = r.timestamp;
    }
    if (r.seq > s.lastSeq) {
      s.lastSeq = r.seq;
      s.sampleIntervalS = r.sampleIntervalS;
      s.chargingState = r.chargingState;
      s.chargePointId = r.chargePointId;
      if (r.location !== undefined) s.location = r.location;
      s.vehicle = { ...r.vehicle };
      s.owner = { ...r.owner };
      s.charger = { ...r.charger };
    }
    if (r.chargingState === 'Finishing') s.finished = true;
    // The source spoke after its notice: the notice no longer holds.
    if (s.quietSeq !== undefined && r.seq > s.quietSeq) delete s.quietSeq;

    const skippedAt = s.skipped.indexOf(r.seq);
    if (skippedAt >= 0) {
      // Its gap was given up: its neighbours were already compared without it.
      s.skipped.splice(skippedAt, 1);
      process(s, r, false, events);
    } else if (r.seq === s.applied + 1) {
      process(s, r, true, events);
      s.applied = r.seq;
      drain(s, events);
    } else {
      const { runId: _r, sessionId: _s, vehicle: _v, owner: _o, charger: _c, ...rest } = r;
      const at = s.pending.findIndex((p) => p.seq > r.seq);
      s.pending.splice(at < 0 ? s.pending.length : at, 0, rest);
      while (s.pending.length > cfg.reorderWindow) skipGap(s, events);
    }
    if (rc?.announcesQuiet === true) judgeSilence(s, rc, false, events);
    return { state: s, events, invalid, duplicate: false };
  }

  function onQuiet(prevIn: SessionState | undefined, q: EvQuiet, rc?: RunClock): QuietOutcome {
    const prev = prevIn && prevIn.sessionId === q.sessionId && prevIn.runId === q.runId ? upgradeState(prevIn) : undefined;
    if (!prev) return { state: undefined, events: [], changed: false, unknown: true };
    // A closed session needs no notice; an older notice than one we hold, or than what the
    // source sent since, changes nothing.
    if (!isOpen(prev) || q.lastSeq < prev.lastSeq || (prev.quietSeq !== undefined && q.lastSeq <= prev.quietSeq)) {
      return { state: prev, events: [], changed: false, unknown: false };
    }
    const s = copyState(prev);
    s.quietSeq = q.lastSeq;
    const events: EvEvent[] = [];
    if (rc) judgeSilence(s, rc, false, events);
    return { state: s, events, changed: true, unknown: false };
  }

  /** The test of judgeSilence, without changing anything. */
  function silent(s: SessionState, rc: RunClock): boolean {
    if (s.runId !== rc.runId || !isOpen(s) || !Number.isFinite(rc.watermarkMs)) return false;
    if (rc.announcesQuiet === true && !(s.quietSeq !== undefined && s.lastSeq >= s.quietSeq)) return false;
    return rc.watermarkMs - s.lastSeenMs >= cfg.offlineAfterIntervals * s.sampleIntervalS * 1000;
  }

  /**
   * Whether the session is silent on the run's clock `rc`: open, and its last reading older than
   * offlineAfterIntervals intervals. In a run that announces quiet sessions, only once the
   * session's notice and the reading it names are in (before that, a reading may be late, not
   * missing). Silent: the state is marked offline (closed) and charge.offline raised once.
   */
  function judgeSilence(s: SessionState, rc: RunClock, finalClock: boolean, events: EvEvent[]): boolean {
    if (!silent(s, rc)) return false;
    const silentMs = rc.watermarkMs - s.lastSeenMs;
    const thresholdMs = cfg.offlineAfterIntervals * s.sampleIntervalS * 1000;
    s.offline = true;
    if (s.emitted.includes('charge.offline')) return true;
    s.emitted.push('charge.offline');
    // What the charger said last, even when a reading below it is still missing.
    const last = latestValid(s);
    events.push(
      makeEvent(
        s,
        'charge.offline',
        rc.watermark,
        null,
        `Charger ${chargerName(s)} went silent while charging ${vehicleName(s)}: no reading for ${duration(silentMs)} (last at ${pct(last?.socPercent)} SoC)`,
        {
          lastSeenAt: s.lastSeenAt,
          lastSeq: s.lastSeq,
          lastChargingState: s.chargingState,
          silentForS: silentMs / 1000,
          thresholdS: thresholdMs / 1000,
          offlineAfterIntervals: cfg.offlineAfterIntervals,
          sampleIntervalS: s.sampleIntervalS,
          watermark: rc.watermark,
          finalClock,
        },
        last,
      ),
    );
    return true;
  }

  function problemsOf(r: EvReading): { problems: string[]; invalid: string | null; tsMs: number } {
    const problems = readingProblems(r);
    const tsMs = Date.parse(r.timestamp);
    if (!Number.isFinite(tsMs)) problems.push(`timestamp ${r.timestamp} is not a date`);
    return { problems, invalid: problems.length > 0 ? problems.join('; ') : null, tsMs };
  }

  /** Process the waiting readings that now follow the processed ones without a gap. */
  function drain(s: SessionState, events: EvEvent[]): void {
    while (s.pending.length > 0 && s.pending[0]!.seq === s.applied + 1) {
      const p = s.pending.shift()!;
      process(s, { ...p, runId: s.runId, sessionId: s.sessionId, vehicle: { ...s.vehicle }, owner: { ...s.owner }, charger: { ...s.charger } }, true, events);
      s.applied = p.seq;
    }
  }

  /** Give the lowest gap up as lost: its seqs are remembered as skipped, the readings above it processed. */
  function skipGap(s: SessionState, events: EvEvent[]): void {
    const next = s.pending[0];
    if (!next) return;
    for (let seq = s.applied + 1; seq < next.seq; seq++) s.skipped.push(seq);
    if (s.skipped.length > MAX_SKIPPED) s.skipped.splice(0, s.skipped.length - MAX_SKIPPED);
    s.applied = next.seq - 1;
    drain(s, events);
  }

  /**
   * The detections for one reading. `inOrder`: every reading below it was processed (the
   * in-order stream); otherwise (a given-up seq arriving late) only what the reading says on
   * its own is checked, never a comparison with its neighbours.
   */
  function process(s: SessionState, r: EvReading, inOrder: boolean, events: EvEvent[]): void {
    const { problems, invalid, tsMs } = problemsOf(r);
    const emit: Emit = (type, summary, details) => {
      if (s.emitted.includes(type)) return;
      s.emitted.push(type);
      events.push(makeEvent(s, type, r.timestamp, r.seq, summary, details));
    };

    if (invalid === null) {
      const before = s.last;
      const snapshot: ValidSnapshot = {
        seq: r.seq,
        tsMs,
        chargingState: r.chargingState,
        socPercent: r.socPercent,
        chargeLimitPercent: r.chargeLimitPercent,
        energyWh: r.energyWh,
        powerW: r.powerW,
      };
      // A late reading of a given-up gap is not the last one, but the earliest marks the start.
      if (inOrder || s.last === null) s.last = snapshot;
      if (!inOrder && s.first !== null && r.seq < s.first.seq) s.first = { seq: r.seq, tsMs, socPercent: r.socPercent, energyWh: r.energyWh };

      if (s.first === null) {
        s.first = { seq: r.seq, tsMs, socPercent: r.socPercent, energyWh: r.energyWh };
        emit(
          'charge.started',
          `${vehicleName(s)} started charging at ${chargerName(s)} (${s.charger.type} ${num(s.charger.maxKW)} kW): ${pct(r.socPercent)} SoC, limit ${pct(r.chargeLimitPercent)}`,
          {
            socPercent: r.socPercent,
            chargeLimitPercent: r.chargeLimitPercent,
            chargingState: r.chargingState,
            chargerType: s.charger.type,
            chargerMaxKW: s.charger.maxKW,
            batteryKWh: s.vehicle.batteryKWh,
            sampleIntervalS: r.sampleIntervalS,
          },
        );
      }

      checkFault(r, s, emit);

      const charging = r.chargingState === 'Charging';
      if (inOrder && charging && before !== null && before.socPercent - r.socPercent >= cfg.socDropPoints) {
        const drop = before.socPercent - r.socPercent;
        emit(
          'charge.soc_drop',
          `${vehicleName(s)} at ${chargerName(s)}: SoC dropped from ${pct(before.socPercent)} to ${pct(r.socPercent)} while charging`,
          {
            fromSocPercent: before.socPercent,
            toSocPercent: r.socPercent,
            dropPoints: drop,
            thresholdPoints: cfg.socDropPoints,
            previousSeq: before.seq,
            intervalS: (tsMs - before.tsMs) / 1000,
          },
        );
      }

      if (charging && r.socPercent > r.chargeLimitPercent + cfg.overLimitPoints) {
        emit(
          'charge.over_limit',
          `${vehicleName(s)} at ${chargerName(s)} is still charging at ${pct(r.socPercent)} SoC, above its ${pct(r.chargeLimitPercent)} charge limit`,
          {
            socPercent: r.socPercent,
            chargeLimitPercent: r.chargeLimitPercent,
            overByPoints: r.socPercent - r.chargeLimitPercent,
            tolerancePoints: cfg.overLimitPoints,
            powerW: r.powerW,
          },
        );
      }

      if (!inOrder) {
        // The low-power run is a matter of the neighbours: left as the in-order readings made it.
      } else if (charging && r.powerW < cfg.stallPowerW) {
        if (s.lowPower === null || r.socPercent > s.lowPower.socPercent) {
          // Start (or restart, if SoC still rose) the low-power window at this reading.
          s.lowPower = { sinceMs: tsMs, sinceSeq: r.seq, socPercent: r.socPercent };
        } else if (tsMs - s.lowPower.sinceMs >= cfg.stallAfterS * 1000) {
          const forMs = tsMs - s.lowPower.sinceMs;
          emit(
            'charge.stalled',
            `${vehicleName(s)} at ${chargerName(s)} stalled at ${pct(r.socPercent)} SoC: ${num(r.powerW)} W for ${duration(forMs)} while charging (limit ${pct(r.chargeLimitPercent)})`,
            {
              powerW: r.powerW,
              stallPowerW: cfg.stallPowerW,
              lowPowerForS: forMs / 1000,
              stallAfterS: cfg.stallAfterS,
              sinceSeq: s.lowPower.sinceSeq,
              socAtStartPercent: s.lowPower.socPercent,
              socPercent: r.socPercent,
              chargeLimitPercent: r.chargeLimitPercent,
            },
          );
        }
      } else {
        s.lowPower = null;
      }

      const first = s.first;
      if (first && r.chargingState === 'Finishing' && r.socPercent >= r.chargeLimitPercent - cfg.completedTolerancePoints) {
        const deliveredWh = Math.max(0, r.energyWh - first.energyWh);
        const durMs = tsMs - first.tsMs;
        emit(
          'charge.completed',
          `${vehicleName(s)} at ${chargerName(s)} finished charging: ${pct(first.socPercent)} -> ${pct(r.socPercent)}, ${kWh(deliveredWh)} in ${duration(durMs)}`,
          {
            startSocPercent: first.socPercent,
            endSocPercent: r.socPercent,
            chargeLimitPercent: r.chargeLimitPercent,
            tolerancePoints: cfg.completedTolerancePoints,
            energyDeliveredWh: deliveredWh,
            energyWh: r.energyWh,
            durationS: durMs / 1000,
            averagePowerW: durMs > 0 ? Math.round((deliveredWh * 3_600_000) / durMs) : null,
            stopReason: r.stopReason ?? null,
          },
        );
      }
    } else {
      // Impossible values: report, dead-letter, and keep the last valid physics untouched.
      checkFault(r, s, emit);
      emit(
        'charge.invalid_reading',
        `Charger ${chargerName(s)} sent an impossible reading for ${vehicleName(s)} (seq ${r.seq}): ${invalid}; reading ignored`,
        {
          problems,
          messageId: r.messageId,
          reading: {
            chargingState: r.chargingState,
            socPercent: r.socPercent,
            chargeLimitPercent: r.chargeLimitPercent,
            powerW: r.powerW,
            energyWh: r.energyWh,
            currentA: r.currentA,
            voltageV: r.voltageV,
            temperatureC: r.temperatureC,
          },
          lastValidSeq: s.last?.seq ?? null,
        },
      );
    }

  }

  function checkFault(
    r: EvReading,
    s: SessionState,
    emit: (type: EvEventType, summary: string, details: Record<string, unknown>) => void,
  ): void {
    if (r.errorCode === 'NoError' && r.chargingState !== 'Faulted') return;
    const code: OcppErrorCode = r.errorCode;
    const what = code !== 'NoError' ? code : 'state Faulted';
    const tail = r.chargingState === 'Faulted' ? 'charging stopped' : `connector state ${r.chargingState}`;
    emit(
      'charge.fault',
      `Charger ${chargerName(s)} reported ${what} at ${pct(s.last?.socPercent)} SoC while charging ${vehicleName(s)}; ${tail}`,
      {
        errorCode: code,
        chargingState: r.chargingState,
        connectorId: r.connectorId,
        powerW: r.powerW,
        temperatureC: r.temperatureC,
        voltageV: r.voltageV,
        currentA: r.currentA,
      },
    );
  }

  function onClock(clock: EvClock, open: SessionState[], prev?: RunClock): ClockOutcome {
    const rc = advanceRunClock(prev, clock.runId, clock.timestamp, clock.final, clock.announcesQuiet === true);
    const events: EvEvent[] = [];
    const states: SessionState[] = [];
    for (const s0 of open) {
      if (s0.runId !== clock.runId || !isOpen(s0)) continue;
      const s1 = upgradeState(s0);
      if (!silent(s1, rc)) continue;
      const s = copyState(s1);
      judgeSilence(s, rc, clock.final, events);
      states.push(s);
    }
    return { events, states, clock: rc };
  }

  return { config: Object.freeze({ ...cfg }), onReading, onQuiet, onClock };
}
