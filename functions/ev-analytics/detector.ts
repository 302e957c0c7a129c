// Pure detection logic of the ev-analytics function: no I/O, no timers, no
// wall clock, no env. The caller loads/saves `SessionState` (one per session,
// JSON in MySQL) and optionally `RunClock` (one per run and partition), feeds
// readings to `onReading` and clock messages to `onClock`, and publishes the
// returned events. Everything is decided in event time (reading / clock
// timestamps), so reprocessing the same messages yields the same events with
// the same ids.
import {
  EVENT_SEVERITY,
  readingProblems,
  type ChargingState,
  type EvClock,
  type EvEvent,
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
}

export const DEFAULT_DETECTOR_CONFIG: DetectorConfig = Object.freeze({
  offlineAfterIntervals: 3,
  stallPowerW: 100,
  stallAfterS: 600,
  socDropPoints: 3,
  overLimitPoints: 2,
  completedTolerancePoints: 1,
});

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

/**
 * Per-session detector state. Plain JSON (numbers, strings, booleans, arrays,
 * objects, null): `JSON.parse(JSON.stringify(state))` is an equivalent state.
 */
export interface SessionState {
  v: 1;
  runId: string;
  sessionId: string;
  /** Highest seq processed (valid or invalid); readings with seq <= this are duplicates. */
  lastSeq: number;
  /** Event time (epoch ms) of the latest reading of any kind: an invalid reading still proves the charger is online. */
  lastSeenMs: number;
  /** ISO timestamp of that reading. */
  lastSeenAt: string;
  sampleIntervalS: number;
  /** State of the latest reading of any kind. */
  chargingState: ChargingState;
  chargePointId: string;
  location?: string;
  vehicle: EvReading['vehicle'];
  owner: EvReading['owner'];
  charger: EvReading['charger'];
  /** First valid reading (start of the session for summaries), null until one arrived. */
  first: { seq: number; tsMs: number; socPercent: number; energyWh: number } | null;
  /** Last valid reading; invalid readings never change it. */
  last: ValidSnapshot | null;
  /** Start of the current run of valid Charging readings below stallPowerW, with the SoC at its start. */
  lowPower: { sinceMs: number; sinceSeq: number; socPercent: number } | null;
  /** Event types already raised for this session (each at most once). */
  emitted: EvEventType[];
  /** A Finishing reading was seen. */
  finished: boolean;
  /** charge.offline was reported. */
  offline: boolean;
}

/** Event-time watermark of one run in one partition (max clock time seen, never goes back). */
export interface RunClock {
  runId: string;
  watermarkMs: number;
  /** ISO form of watermarkMs, as received. */
  watermark: string;
  /** The run's final clock was seen. */
  final: boolean;
}

export interface ReadingOutcome {
  state: SessionState;
  events: EvEvent[];
  /** The reason when the reading is impossible (the caller dead-letters it), else null. */
  invalid: string | null;
  /** seq <= last processed seq: redelivery, nothing changed, no events. */
  duplicate: boolean;
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
  onReading(prev: SessionState | undefined, reading: EvReading): ReadingOutcome;
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
export function advanceRunClock(prev: RunClock | undefined, runId: string, timestamp: string, final = false): RunClock {
  const ms = Date.parse(timestamp);
  const base: RunClock = prev && prev.runId === runId ? prev : { runId, watermarkMs: Number.NEGATIVE_INFINITY, watermark: '', final: false };
  const ahead = Number.isFinite(ms) && ms > base.watermarkMs;
  return {
    runId,
    watermarkMs: ahead ? ms : base.watermarkMs,
    watermark: ahead ? timestamp : base.watermark,
    final: base.final || final,
  };
}


function resolveConfig(config: Partial<DetectorConfig> | undefined): DetectorConfig {
  const c: DetectorConfig = { ...DEFAULT_DETECTOR_CONFIG };
  for (const key of Object.keys(DEFAULT_DETECTOR_CONFIG) as (keyof DetectorConfig)[]) {
    const value = config?.[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new RangeError(`DetectorConfig.${key} must be a finite number >= 0, got ${String(value)}`);
    }
    c[key] = value;
  }
  if (c.offlineAfterIntervals <= 0) throw new RangeError('DetectorConfig.offlineAfterIntervals must be > 0');
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
    v: 1,
    runId: r.runId,
    sessionId: r.sessionId,
    lastSeq: -1,
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

function copyState(s: SessionState): SessionState {
  return structuredClone(s);
}

function makeEvent(
  s: SessionState,
  type: EvEventType,
  ts: string,
  seq: number | null,
  summary: string,
  details: Record<string, unknown>,
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
    socPercent: s.last?.socPercent ?? null,
    chargeLimitPercent: s.last?.chargeLimitPercent ?? null,
    energyWh: s.last?.energyWh ?? null,
    summary,
    details,
  };
  if (s.location !== undefined) ev.location = s.location;
  return ev;
}

export function createDetector(config?: Partial<DetectorConfig>): Detector {
  const cfg = resolveConfig(config);

  function onReading(prevIn: SessionState | undefined, r: EvReading): ReadingOutcome {
    const problems = readingProblems(r);
    const tsMs = Date.parse(r.timestamp);
    if (!Number.isFinite(tsMs)) problems.push(`timestamp ${r.timestamp} is not a date`);
    const invalid = problems.length > 0 ? problems.join('; ') : null;

    // A state of another session/run is not this session's history.
    const prev = prevIn && prevIn.sessionId === r.sessionId && prevIn.runId === r.runId ? prevIn : undefined;
    if (prev && r.seq <= prev.lastSeq) return { state: prev, events: [], invalid, duplicate: true };

    const s = prev ? copyState(prev) : initState(r, tsMs);
    const events: EvEvent[] = [];
    const emit = (type: EvEventType, summary: string, details: Record<string, unknown>): void => {
      if (s.emitted.includes(type)) return;
      s.emitted.push(type);
      events.push(makeEvent(s, type, r.timestamp, r.seq, summary, details));
    };

    // Bookkeeping that holds for every reading, plausible or not.
    s.lastSeq = r.seq;
    if (Number.isFinite(tsMs) && tsMs >= s.lastSeenMs) {
      s.lastSeenMs = tsMs;
      s.lastSeenAt = r.timestamp;
    }
    s.sampleIntervalS = r.sampleIntervalS;
    s.chargingState = r.chargingState;
    s.chargePointId = r.chargePointId;
    if (r.location !== undefined) s.location = r.location;
    s.vehicle = { ...r.vehicle };
    s.owner = { ...r.owner };
    s.charger = { ...r.charger };
    if (r.chargingState === 'Finishing') s.finished = true;

    if (invalid === null) {
      const before = s.last;
      s.last = {
        seq: r.seq,
        tsMs,
        chargingState: r.chargingState,
        socPercent: r.socPercent,
        chargeLimitPercent: r.chargeLimitPercent,
        energyWh: r.energyWh,
        powerW: r.powerW,
      };

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
      if (charging && before !== null && before.socPercent - r.socPercent >= cfg.socDropPoints) {
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

      if (charging && r.powerW < cfg.stallPowerW) {
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

    return { state: s, events, invalid, duplicate: false };
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
    const rc = advanceRunClock(prev, clock.runId, clock.timestamp, clock.final);
    const events: EvEvent[] = [];
    const states: SessionState[] = [];
    if (!Number.isFinite(rc.watermarkMs)) return { events, states, clock: rc };
    for (const s of open) {
      if (s.runId !== clock.runId || !isOpen(s)) continue;
      const silentMs = rc.watermarkMs - s.lastSeenMs;
      const thresholdMs = cfg.offlineAfterIntervals * s.sampleIntervalS * 1000;
      if (!(silentMs >= thresholdMs)) continue;
      const ns = copyState(s);
      ns.offline = true;
      if (!ns.emitted.includes('charge.offline')) {
        ns.emitted.push('charge.offline');
        events.push(
          makeEvent(
            ns,
            'charge.offline',
            rc.watermark,
            null,
            `Charger ${chargerName(ns)} went silent while charging ${vehicleName(ns)}: no reading for ${duration(silentMs)} (last at ${pct(ns.last?.socPercent)} SoC)`,
            {
              lastSeenAt: ns.lastSeenAt,
              lastSeq: ns.lastSeq,
              lastChargingState: ns.chargingState,
              silentForS: silentMs / 1000,
              thresholdS: thresholdMs / 1000,
              offlineAfterIntervals: cfg.offlineAfterIntervals,
              sampleIntervalS: ns.sampleIntervalS,
              watermark: rc.watermark,
              finalClock: clock.final,
            },
          ),
        );
      }
      states.push(ns);
    }
    return { events, states, clock: rc };
  }

  return { config: Object.freeze({ ...cfg }), onReading, onClock };
}
