import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EvEventSchema, EvReadingSchema, type EvClock, type EvEvent, type EvReading } from '../../shared/contracts/ev.ts';
import {
  DEFAULT_DETECTOR_CONFIG,
  createDetector,
  isOpen,
  lastSeenMs,
  sessionRunId,
  type RunClock,
  type SessionState,
} from '../../functions/ev-analytics/detector.ts';

// ---- helpers --------------------------------------------------------------------------------

const T0 = Date.parse('2025-03-01T08:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();

/** Every event produced by any test, checked against the schema at the end. */
const allEvents: EvEvent[] = [];

/** A valid reading; `seq` also sets the timestamp (T0 + seq * sampleIntervalS) unless given. */
function reading(over: Partial<EvReading> = {}): EvReading {
  const seq = over.seq ?? 1;
  const interval = over.sampleIntervalS ?? 10;
  const r: EvReading = {
    messageId: `m-${over.sessionId ?? 'S1'}-${seq}`,
    runId: 'run-1',
    sessionId: 'S1',
    seq,
    timestamp: iso(T0 + seq * interval * 1000),
    sampleIntervalS: interval,
    chargePointId: 'CP-8X2K',
    connectorId: 1,
    location: 'Berlin Mitte',
    vehicle: { make: 'Tesla', model: 'Model 3 Long Range', batteryKWh: 75, vin: '5YJ3E1EA7KF000001' },
    owner: { name: 'Ada Lovelace', email: 'ada@example.com' },
    charger: { type: 'DC', maxKW: 150 },
    chargingState: seq === 0 ? 'Preparing' : 'Charging',
    socPercent: 20,
    chargeLimitPercent: 80,
    powerW: seq === 0 ? 0 : 50_000,
    energyWh: 0,
    currentA: 125,
    voltageV: 400,
    temperatureC: 30,
    errorCode: 'NoError',
    ...over,
  };
  return EvReadingSchema.parse(r);
}

interface SimOptions {
  sessionId?: string;
  runId?: string;
  batteryKWh?: number;
  charger?: EvReading['charger'];
  startSoc?: number;
  limit?: number;
  intervalS?: number;
  /** Power (W) as a function of the exact SoC. */
  power?: (soc: number) => number;
  /** Stop after this many Charging readings even if the limit is not reached (no Finishing then). */
  maxCharging?: number;
  finish?: boolean;
}

/** A healthy session like the simulator produces: Preparing, Charging..., Finishing. */
function simulate(o: SimOptions = {}): EvReading[] {
  const battery = o.batteryKWh ?? 75;
  const interval = o.intervalS ?? 10;
  const limit = o.limit ?? 80;
  const power = o.power ?? (() => 50_000);
  const base = {
    sessionId: o.sessionId ?? 'S1',
    runId: o.runId ?? 'run-1',
    sampleIntervalS: interval,
    chargeLimitPercent: limit,
    vehicle: { make: 'Tesla', model: 'Model 3 Long Range', batteryKWh: battery, vin: '5YJ3E1EA7KF000001' },
    charger: o.charger ?? { type: 'DC', maxKW: 150 },
  } satisfies Partial<EvReading>;
  const out: EvReading[] = [];
  let soc = o.startSoc ?? 20;
  let energy = 0;
  out.push(reading({ ...base, seq: 0, chargingState: 'Preparing', socPercent: Math.floor(soc), powerW: 0, energyWh: 0, currentA: 0 }));
  let seq = 1;
  while (Math.floor(soc) < limit && (o.maxCharging === undefined || seq <= o.maxCharging)) {
    const p = power(soc);
    const wh = (p * interval) / 3600;
    energy += wh;
    soc += (wh / (battery * 1000)) * 100;
    out.push(reading({ ...base, seq, chargingState: 'Charging', socPercent: Math.floor(Math.min(soc, 100)), powerW: p, energyWh: Math.round(energy), currentA: p / 400 }));
    seq++;
  }
  if (o.finish ?? o.maxCharging === undefined) {
    out.push(reading({ ...base, seq, chargingState: 'Finishing', socPercent: Math.floor(Math.min(soc, 100)), powerW: 0, energyWh: Math.round(energy), currentA: 0, stopReason: 'Local' }));
  }
  return out;
}

function clock(atMs: number, final = false, runId = 'run-1'): EvClock {
  return { runId, timestamp: iso(atMs), final };
}

type Det = ReturnType<typeof createDetector>;

/**
 * Drive a detector like the ev-analytics function does: states per session
 * (round-tripped through JSON, as MySQL stores them), a RunClock per run,
 * onClock with the run's open sessions.
 */
class Harness {
  det: Det;
  states = new Map<string, SessionState>();
  clocks = new Map<string, RunClock>();
  events: EvEvent[] = [];
  invalid: string[] = [];
  duplicates = 0;
  constructor(det: Det = createDetector()) {
    this.det = det;
  }
  read(r: EvReading): EvEvent[] {
    const out = this.det.onReading(this.states.get(r.sessionId), r);
    this.states.set(r.sessionId, JSON.parse(JSON.stringify(out.state)) as SessionState);
    if (out.duplicate) this.duplicates++;
    else if (out.invalid !== null) this.invalid.push(out.invalid);
    this.push(out.events);
    return out.events;
  }
  tick(c: EvClock): EvEvent[] {
    const open = [...this.states.values()].filter((s) => isOpen(s) && sessionRunId(s) === c.runId);
    const out = this.det.onClock(c, open, this.clocks.get(c.runId));
    this.clocks.set(c.runId, JSON.parse(JSON.stringify(out.clock)) as RunClock);
    for (const s of out.states) this.states.set(s.sessionId, JSON.parse(JSON.stringify(s)) as SessionState);
    this.push(out.events);
    return out.events;
  }
  /** Readings, with a clock after each reading's timestamp, and a final clock 5 intervals after the last one. */
  play(readings: EvReading[], withClocks = true): this {
    let lastMs = T0;
    for (const r of readings) {
      this.read(r);
      lastMs = Math.max(lastMs, Date.parse(r.timestamp));
      if (withClocks) this.tick(clock(Date.parse(r.timestamp), false, r.runId));
    }
    if (withClocks && readings.length > 0) {
      const r = readings.at(-1)!;
      this.tick(clock(lastMs + 5 * r.sampleIntervalS * 1000, true, r.runId));
    }
    return this;
  }
  types(): string[] {
    return this.events.map((e) => e.type);
  }
  private push(evs: EvEvent[]): void {
    this.events.push(...evs);
    allEvents.push(...evs);
  }
}

// ---- rules firing ---------------------------------------------------------------------------

test('defaults are the documented ones', () => {
  assert.deepEqual({ ...DEFAULT_DETECTOR_CONFIG }, {
    offlineAfterIntervals: 3, stallPowerW: 100, stallAfterS: 600, socDropPoints: 3, overLimitPoints: 2, completedTolerancePoints: 1, reorderWindow: 256,
  });
  assert.throws(() => createDetector({ stallAfterS: -1 }), RangeError);
  assert.throws(() => createDetector({ offlineAfterIntervals: 0 }), RangeError);
  assert.throws(() => createDetector({ reorderWindow: 0 }), RangeError);
  assert.throws(() => createDetector({ reorderWindow: 1.5 }), RangeError);
});

test('charge.started fires once, on the first valid reading', () => {
  const h = new Harness();
  const e0 = h.read(reading({ seq: 0 }));
  assert.deepEqual(e0.map((e) => e.type), ['charge.started']);
  const ev = e0[0]!;
  assert.equal(ev.severity, 'info');
  assert.equal(ev.seq, 0);
  assert.equal(ev.eventId, 'S1:charge.started');
  assert.equal(ev.ts, reading({ seq: 0 }).timestamp);
  assert.equal(ev.socPercent, 20);
  assert.equal(ev.chargeLimitPercent, 80);
  assert.equal(ev.location, 'Berlin Mitte');
  assert.match(ev.summary, /Tesla Model 3 Long Range started charging at CP-8X2K/);
  assert.deepEqual(h.read(reading({ seq: 1 })), []);
  assert.deepEqual(h.read(reading({ seq: 2, socPercent: 21 })), []);
});

test('charge.started waits for a valid reading when the first one is impossible', () => {
  const h = new Harness();
  assert.deepEqual(h.read(reading({ seq: 0, socPercent: 140 })).map((e) => e.type), ['charge.invalid_reading']);
  const e1 = h.read(reading({ seq: 1 }));
  assert.deepEqual(e1.map((e) => e.type), ['charge.started']);
  assert.equal(e1[0]!.seq, 1);
});

test('charge.completed on Finishing at the limit, with a readable summary', () => {
  const h = new Harness().play(simulate({ startSoc: 20, limit: 80 }));
  assert.deepEqual(h.types(), ['charge.started', 'charge.completed']);
  const done = h.events[1]!;
  assert.equal(done.severity, 'info');
  assert.equal(done.socPercent, 80);
  assert.match(done.summary, /^Tesla Model 3 Long Range at CP-8X2K \(Berlin Mitte\) finished charging: 20 % -> 80 %, \d+\.\d kWh in \d+ min$/);
  assert.equal(done.details['startSocPercent'], 20);
  assert.equal(done.details['endSocPercent'], 80);
  assert.equal(done.details['stopReason'], 'Local');
  assert.equal(isOpen(h.states.get('S1')!), false);
});

test('charge.completed honours the tolerance, and not when stopped early', () => {
  const h = new Harness();
  h.read(reading({ seq: 0 }));
  assert.deepEqual(h.read(reading({ seq: 1, chargingState: 'Finishing', socPercent: 79, powerW: 0, stopReason: 'EVDisconnected' })).map((e) => e.type), ['charge.completed']);

  const early = new Harness();
  early.read(reading({ seq: 0 }));
  assert.deepEqual(early.read(reading({ seq: 1, chargingState: 'Finishing', socPercent: 78, powerW: 0, stopReason: 'EVDisconnected' })), []);
  assert.equal(isOpen(early.states.get('S1')!), false, 'finished sessions are closed either way');
});

test('charge.fault on an error code, once per session', () => {
  const h = new Harness();
  h.read(reading({ seq: 0 }));
  h.read(reading({ seq: 1, socPercent: 47 }));
  const ev = h.read(reading({ seq: 2, socPercent: 47, errorCode: 'GroundFailure', chargingState: 'Faulted', powerW: 0 }));
  assert.deepEqual(ev.map((e) => e.type), ['charge.fault']);
  assert.equal(ev[0]!.severity, 'critical');
  assert.equal(ev[0]!.details['errorCode'], 'GroundFailure');
  assert.equal(ev[0]!.summary, 'Charger CP-8X2K (Berlin Mitte) reported GroundFailure at 47 % SoC while charging Tesla Model 3 Long Range; charging stopped');
  assert.deepEqual(h.read(reading({ seq: 3, socPercent: 47, errorCode: 'GroundFailure', chargingState: 'Faulted', powerW: 0 })), []);
});

test('charge.fault on state Faulted without error code; a charger that goes silent after faulting is not also offline', () => {
  const h = new Harness();
  h.read(reading({ seq: 0 }));
  const ev = h.read(reading({ seq: 1, chargingState: 'Faulted', powerW: 0 }));
  assert.deepEqual(ev.map((e) => e.type), ['charge.fault']);
  assert.equal(isOpen(h.states.get('S1')!), false);
  assert.deepEqual(h.tick(clock(T0 + 100_000, true)), []);
});

test('charge.fault while still charging (error code with state Charging)', () => {
  const h = new Harness();
  h.read(reading({ seq: 0 }));
  const ev = h.read(reading({ seq: 1, errorCode: 'HighTemperature', temperatureC: 95 }));
  assert.deepEqual(ev.map((e) => e.type), ['charge.fault']);
  assert.match(ev[0]!.summary, /reported HighTemperature at 20 % SoC/);
});

test('charge.stalled needs the full stallAfterS of low power with SoC not rising', () => {
  const h = new Harness();
  h.read(reading({ seq: 0 }));
  h.read(reading({ seq: 1, socPercent: 40, powerW: 50_000 }));
  // low power from seq 2 (t = 20 s) on, 10 s interval: 600 s later is seq 62
  for (let seq = 2; seq < 62; seq++) {
    assert.deepEqual(h.read(reading({ seq, socPercent: 40, powerW: 40 })), [], `seq ${seq}`);
  }
  const ev = h.read(reading({ seq: 62, socPercent: 40, powerW: 40 }));
  assert.deepEqual(ev.map((e) => e.type), ['charge.stalled']);
  assert.equal(ev[0]!.severity, 'warning');
  assert.equal(ev[0]!.details['lowPowerForS'], 600);
  assert.equal(ev[0]!.details['stallAfterS'], 600);
  assert.deepEqual(h.read(reading({ seq: 200, socPercent: 40, powerW: 40 })), [], 'once per session');
});

test('charge.stalled: a power recovery or a rising SoC restarts the window', () => {
  const h = new Harness();
  h.read(reading({ seq: 0 }));
  for (let seq = 1; seq <= 50; seq++) h.read(reading({ seq, socPercent: 40, powerW: 0 }));
  h.read(reading({ seq: 51, socPercent: 40, powerW: 5000 })); // recovers once
  for (let seq = 52; seq <= 100; seq++) h.read(reading({ seq, socPercent: 40, powerW: 0 }));
  assert.deepEqual(h.types(), ['charge.started']);
  // SoC rising at low power: not a stall
  const g = new Harness();
  g.read(reading({ seq: 0 }));
  for (let seq = 1; seq <= 200; seq++) g.read(reading({ seq, socPercent: 40 + Math.floor(seq / 40), powerW: 90 }));
  assert.deepEqual(g.types(), ['charge.started']);
});

test('charge.stalled respects a configured stallAfterS', () => {
  const h = new Harness(createDetector({ stallAfterS: 60 }));
  h.read(reading({ seq: 0 }));
  for (let seq = 1; seq <= 6; seq++) assert.deepEqual(h.read(reading({ seq, powerW: 0 })), []);
  assert.deepEqual(h.read(reading({ seq: 7, powerW: 0 })).map((e) => e.type), ['charge.stalled']);
});

test('charge.soc_drop when SoC falls by >= 3 points between consecutive valid readings while Charging', () => {
  const h = new Harness();
  h.read(reading({ seq: 0, socPercent: 50 }));
  h.read(reading({ seq: 1, socPercent: 50 }));
  assert.deepEqual(h.read(reading({ seq: 2, socPercent: 48 })), [], 'a 2-point dip is tolerated');
  const ev = h.read(reading({ seq: 3, socPercent: 45 }));
  assert.deepEqual(ev.map((e) => e.type), ['charge.soc_drop']);
  assert.equal(ev[0]!.details['fromSocPercent'], 48);
  assert.equal(ev[0]!.details['toSocPercent'], 45);
  assert.equal(ev[0]!.socPercent, 45);
  assert.deepEqual(h.read(reading({ seq: 4, socPercent: 30 })), [], 'once per session');
});

test('charge.over_limit when SoC exceeds the limit by more than 2 points while Charging', () => {
  const h = new Harness();
  h.read(reading({ seq: 0, socPercent: 80 }));
  assert.deepEqual(h.read(reading({ seq: 1, socPercent: 81 })), []);
  assert.deepEqual(h.read(reading({ seq: 2, socPercent: 82 })), []);
  const ev = h.read(reading({ seq: 3, socPercent: 83 }));
  assert.deepEqual(ev.map((e) => e.type), ['charge.over_limit']);
  assert.equal(ev[0]!.details['chargeLimitPercent'], 80);
  assert.deepEqual(h.read(reading({ seq: 4, socPercent: 85 })), []);
});

test('charge.invalid_reading: reported, dead-lettered, and the physics stay the last valid ones', () => {
  const h = new Harness();
  const readings = simulate({ startSoc: 70, limit: 80, maxCharging: 20, finish: false });
  for (const r of readings.slice(0, 10)) h.read(r);
  const before = h.states.get('S1')!;
  const glitch = { ...readings[10]!, socPercent: 140, messageId: 'glitch' };
  const out = h.det.onReading(before, glitch);
  assert.deepEqual(out.events.map((e) => e.type), ['charge.invalid_reading']);
  assert.equal(out.invalid, 'socPercent 140 outside 0..100');
  assert.equal(out.duplicate, false);
  const ev = out.events[0]!;
  assert.equal(ev.severity, 'warning');
  assert.equal(ev.socPercent, before.last!.socPercent, 'event carries the last valid SoC');
  assert.deepEqual(ev.details['problems'], ['socPercent 140 outside 0..100']);
  assert.deepEqual(out.state.last, before.last);
  assert.deepEqual(out.state.lowPower, before.lowPower);
  assert.equal(out.state.lastSeq, 10);
});

test('no false alarms: an impossible SoC 140 then normal readings raise only invalid_reading', () => {
  const h = new Harness();
  const readings = simulate({ startSoc: 70, limit: 80 });
  const glitched = readings.map((r) => (r.seq === 15 ? { ...r, socPercent: 140 } : r));
  h.play(glitched);
  assert.deepEqual(h.types(), ['charge.started', 'charge.invalid_reading', 'charge.completed']);
  assert.equal(h.invalid.length, 1);
  // several kinds of glitch, each dead-lettered, the event only once
  const g = new Harness();
  g.play(readings.map((r) => (r.seq === 5 ? { ...r, powerW: -3000 } : r.seq === 6 ? { ...r, temperatureC: 400 } : r)));
  assert.deepEqual(g.types(), ['charge.started', 'charge.invalid_reading', 'charge.completed']);
  assert.deepEqual(g.invalid, ['powerW -3000 is negative', 'temperatureC 400 outside -60..150']);
});

test('charge.offline fires once via clock after the gap, and closes the session', () => {
  const h = new Harness();
  const rs = simulate({ maxCharging: 5, finish: false }); // seq 0..5, t = 0..50 s
  for (const r of rs) h.read(r);
  const last = T0 + 50_000;
  assert.deepEqual(h.tick(clock(last + 10_000)), []);
  assert.deepEqual(h.tick(clock(last + 20_000)), []);
  const ev = h.tick(clock(last + 30_000));
  assert.deepEqual(ev.map((e) => e.type), ['charge.offline']);
  const off = ev[0]!;
  assert.equal(off.severity, 'critical');
  assert.equal(off.seq, null);
  assert.equal(off.ts, iso(last + 30_000));
  assert.equal(off.eventId, 'S1:charge.offline');
  assert.equal(off.details['silentForS'], 30);
  assert.equal(off.details['thresholdS'], 30);
  const st = h.states.get('S1')!;
  assert.equal(isOpen(st), false);
  assert.equal(lastSeenMs(st), last);
  assert.deepEqual(h.tick(clock(last + 40_000)), []);
  assert.deepEqual(h.tick(clock(last + 100_000, true)), []);
  // even if the caller passes the closed state again
  assert.deepEqual(h.det.onClock(clock(last + 200_000), [st]).events, []);
  assert.deepEqual(h.types(), ['charge.started', 'charge.offline']);
});

test('offline: the threshold scales with the session sampleIntervalS; other runs and old clocks are ignored', () => {
  const det = createDetector();
  const s = det.onReading(undefined, reading({ seq: 0, sampleIntervalS: 60 })).state; // t = 0
  assert.deepEqual(det.onClock(clock(T0 + 179_000), [s]).events, []);
  assert.deepEqual(det.onClock(clock(T0 + 500_000, false, 'run-2'), [s]).events, []);
  const out = det.onClock(clock(T0 + 180_000), [s]);
  assert.equal(out.events.length, 1);
  assert.equal(out.states.length, 1);
  assert.equal(out.states[0]!.offline, true);
  assert.equal(s.offline, false, 'input state is not mutated');
  // the watermark never goes back: an old clock redelivered after a newer one keeps the newer time
  const rc = det.onClock(clock(T0 + 100_000), [], out.clock).clock;
  assert.equal(rc.watermarkMs, T0 + 180_000);
});

test('no false alarms: a finished session is never flagged offline, even by the final clock', () => {
  const h = new Harness().play(simulate());
  assert.deepEqual(h.types(), ['charge.started', 'charge.completed']);
  const st = h.states.get('S1')!;
  assert.deepEqual(h.det.onClock(clock(lastSeenMs(st) + 3_600_000, true), [st]).events, []);
});

test('the final clock flags a session that went silent near the end of the run', () => {
  const h = new Harness();
  const rs = simulate({ maxCharging: 30, finish: false });
  const out = h.play(rs);
  assert.deepEqual(out.types(), ['charge.started', 'charge.offline']);
  assert.equal(h.clocks.get('run-1')!.final, true);
});

test('no false alarms: slow AC session (7.2 kW, 128 kWh) with SoC flat for 30+ samples', () => {
  const rs = simulate({ batteryKWh: 128, charger: { type: 'AC', maxKW: 7.2 }, power: () => 7200, startSoc: 30, limit: 34 });
  let run = 0;
  let longest = 0;
  for (let i = 2; i < rs.length; i++) {
    run = rs[i]!.socPercent === rs[i - 1]!.socPercent ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  assert.ok(longest >= 30, `SoC flat for ${longest} samples`);
  const h = new Harness().play(rs);
  assert.deepEqual(h.types(), ['charge.started', 'charge.completed']);
});

test('no false alarms: DC session tapering near 100 %', () => {
  const taper = (soc: number): number => (soc < 80 ? 120_000 : Math.max(1500, 120_000 * (100 - soc) / 20));
  const rs = simulate({ batteryKWh: 60, charger: { type: 'DC', maxKW: 150 }, power: taper, startSoc: 85, limit: 100, intervalS: 30 });
  assert.ok(rs.some((r) => r.powerW < 5000 && r.chargingState === 'Charging'));
  const h = new Harness().play(rs);
  assert.deepEqual(h.types(), ['charge.started', 'charge.completed']);
});

test('no false alarms: Preparing with power 0 for longer than stallAfterS is not a stall', () => {
  const h = new Harness();
  for (let seq = 0; seq <= 100; seq++) h.read(reading({ seq, chargingState: 'Preparing', powerW: 0 }));
  for (let seq = 101; seq <= 200; seq++) h.read(reading({ seq, chargingState: 'SuspendedEV', powerW: 0 }));
  assert.deepEqual(h.types(), ['charge.started']);
});

test('redelivery: seq <= last processed seq is a duplicate with no events and unchanged state', () => {
  const det = createDetector();
  const a = det.onReading(undefined, reading({ seq: 0 }));
  const b = det.onReading(a.state, reading({ seq: 1 }));
  const again0 = det.onReading(b.state, reading({ seq: 0 }));
  assert.equal(again0.duplicate, true);
  assert.deepEqual(again0.events, []);
  assert.equal(again0.state, b.state);
  const again1 = det.onReading(b.state, reading({ seq: 1, socPercent: 5 }));
  assert.equal(again1.duplicate, true);
  assert.deepEqual(again1.events, []);
  assert.deepEqual(again1.state, b.state);
  assert.equal(b.duplicate, false);
});

test('redelivery after a crash: replaying a prefix yields the same events as a clean run', () => {
  const rs = simulate({ startSoc: 60, limit: 80 });
  const clean = new Harness().play(rs);
  const crashed = new Harness();
  for (const r of rs) {
    crashed.read(r);
    crashed.tick(clock(Date.parse(r.timestamp)));
    if (r.seq === 20) for (const again of rs.slice(12, 21)) crashed.read(again); // redelivered batch
  }
  crashed.tick(clock(Date.parse(rs.at(-1)!.timestamp) + 50_000, true));
  assert.equal(crashed.duplicates, 9);
  assert.deepEqual(crashed.events, clean.events);
});

test('eventIds and events are stable across two independent detector runs', () => {
  const mk = (): EvReading[] => [
    ...simulate({ sessionId: 'A', startSoc: 70, limit: 80 }).map((r) => (r.seq === 4 ? { ...r, socPercent: 150 } : r)),
    ...simulate({ sessionId: 'B', maxCharging: 5, finish: false }),
  ];
  const one = new Harness().play(mk());
  const two = new Harness(createDetector({})).play(mk());
  assert.deepEqual(one.events.map((e) => e.eventId), two.events.map((e) => e.eventId));
  assert.deepEqual(one.events, two.events);
  assert.deepEqual(one.events.map((e) => e.eventId).sort(), [
    'A:charge.completed', 'A:charge.invalid_reading', 'A:charge.started', 'B:charge.offline', 'B:charge.started',
  ]);
  assert.equal(new Set(one.events.map((e) => e.eventId)).size, one.events.length);
});

// ---- out-of-order readings (a retry, a redelivery) ----------------------------------------

/** `rs` with the reading at `index` moved `by` places later, as the retry queue returns it. */
function delayed(rs: EvReading[], index: number, by: number): EvReading[] {
  const out = rs.filter((_, k) => k !== index);
  out.splice(Math.min(index + by, out.length), 0, rs[index]!);
  return out;
}

const byId = (events: EvEvent[]): EvEvent[] => [...events].sort((a, b) => a.eventId.localeCompare(b.eventId));

/** Sessions whose detections depend on order: pairs of neighbours (soc_drop), runs (stall), the start (completed). */
const ORDER_CASES: Record<string, () => EvReading[]> = {
  healthy: () => simulate({ startSoc: 60, limit: 80, intervalS: 60 }),
  'a 5-point SoC drop': () => simulate({ startSoc: 40, limit: 80, intervalS: 60 }).map((r) => (r.seq === 10 ? reading({ ...r, socPercent: r.socPercent - 5 }) : r)),
  // 2 points, then 2 more: each pair is tolerated, the pair across the middle one is not.
  'two 2-point dips': () => {
    const rs = simulate({ startSoc: 40, limit: 80, intervalS: 60 });
    const at9 = rs[9]!.socPercent;
    return rs.map((r) => (r.seq === 10 || r.seq === 11 ? reading({ ...r, socPercent: at9 - 2 * (r.seq - 9) }) : r));
  },
  'a stall': () => [reading({ seq: 0 }), ...Array.from({ length: 80 }, (_, k) => reading({ seq: k + 1, socPercent: 40, powerW: k < 5 ? 50_000 : 40 }))],
  // Low power for just under stallAfterS, a recovery, low power again: never a stall.
  'a stall broken by a recovery': () => [reading({ seq: 0 }), ...Array.from({ length: 100 }, (_, k) => reading({ seq: k + 1, socPercent: 40, powerW: k === 55 ? 5_000 : 40 }))],
  'over the limit': () => simulate({ startSoc: 70, limit: 80, intervalS: 60 }).map((r) => (r.chargingState === 'Charging' && r.seq > 5 ? reading({ ...r, socPercent: 84 }) : r)),
  'a fault': () => simulate({ startSoc: 50, limit: 80, intervalS: 60 }).map((r) => (r.seq === 8 ? reading({ ...r, chargingState: 'Faulted', errorCode: 'GroundFailure', powerW: 0 }) : r)),
  'an impossible reading': () => simulate({ startSoc: 50, limit: 80, intervalS: 60 }).map((r) => (r.seq === 6 ? reading({ ...r, socPercent: 140 }) : r)),
};

for (const [name, make] of Object.entries(ORDER_CASES)) {
  test(`out of order (${name}): any one reading delayed by 1, 7 or 70 places raises exactly the in-order events`, () => {
    const rs = make();
    const inOrder = new Harness().play(rs);
    assert.ok(inOrder.types().includes('charge.started'));
    for (let index = 0; index < rs.length - 1; index++) {
      for (const by of [1, 7, 70]) {
        const late = new Harness().play(delayed(rs, index, by));
        const where = `seq ${rs[index]!.seq} delayed by ${by}`;
        assert.deepEqual(byId(late.events), byId(inOrder.events), where);
        assert.equal(late.duplicates, 0, where);
        assert.deepEqual(late.states.get('S1'), inOrder.states.get('S1'), `${where}: the same final state`);
      }
    }
  });
}

test('out of order: the dips case is order-sensitive (comparing across seq 10 would be a false soc_drop)', () => {
  const rs = ORDER_CASES['two 2-point dips']!();
  const [a, b, c] = [rs[10]!, rs[11]!, rs[12]!];
  assert.ok(a.socPercent - b.socPercent < 3 && b.socPercent - c.socPercent < 3 && rs[9]!.socPercent - a.socPercent < 3, 'each step is tolerated');
  assert.ok(rs[9]!.socPercent - b.socPercent >= 3, 'but skipping seq 10 compares a 4-point drop');
  assert.ok(!new Harness().play(rs).types().includes('charge.soc_drop'));
});

test('out of order: a reading waiting above a gap raises nothing until the gap is filled, then the in-order events', () => {
  const rs = ORDER_CASES['a 5-point SoC drop']!();
  const h = new Harness();
  for (const r of rs.slice(0, 9)) h.read(r);
  assert.deepEqual(h.read(rs[10]!), [], 'seq 10 waits for seq 9');
  assert.equal(h.states.get('S1')!.pending.length, 1);
  const filled = h.read(rs[9]!);
  assert.deepEqual(filled.map((e) => [e.type, e.seq]), [['charge.soc_drop', 10]]);
  assert.equal(h.states.get('S1')!.pending.length, 0);
  assert.equal(h.states.get('S1')!.applied, 10);
});

test('out of order: a true duplicate is still ignored, waiting or processed', () => {
  const rs = simulate({ startSoc: 60, limit: 80 });
  const h = new Harness();
  h.read(rs[0]!);
  h.read(rs[2]!); // waits for seq 1
  const before = h.states.get('S1')!;
  assert.deepEqual(h.read(rs[2]!), []);
  assert.deepEqual(h.read(rs[0]!), []);
  assert.equal(h.duplicates, 2);
  assert.deepEqual(h.states.get('S1'), before);
  h.read(rs[1]!);
  assert.deepEqual([h.read(rs[1]!), h.read(rs[2]!)], [[], []]);
  assert.equal(h.duplicates, 4);
});

test('out of order: a delayed reading keeps the charger online (no false offline), the offline of a silent one stays', () => {
  const rs = simulate({ maxCharging: 12, finish: false, intervalS: 10 });
  const h = new Harness();
  // seq 3 comes back 6 readings later; a clock ticks after every reading.
  h.play(delayed(rs, 3, 6), false);
  for (const r of delayed(rs, 3, 6)) h.tick(clock(Date.parse(r.timestamp)));
  assert.deepEqual(h.types(), ['charge.started']);
  h.tick(clock(Date.parse(rs.at(-1)!.timestamp) + 30_000, true));
  assert.deepEqual(h.types(), ['charge.started', 'charge.offline']);
});

test('out of order: a charger that goes silent while a reading below its last is still missing: the in-order offline event', () => {
  const rs = simulate({ maxCharging: 12, finish: false, intervalS: 10 }).map((r) => (r.seq === 11 ? reading({ ...r, socPercent: r.socPercent + 1 }) : r));
  const endMs = Date.parse(rs.at(-1)!.timestamp) + 50_000;
  const inOrder = new Harness().play(rs, false);
  inOrder.tick(clock(endMs, true));
  const h = new Harness();
  for (const r of rs.filter((r) => r.seq !== 10)) h.read(r);
  const offline = h.tick(clock(endMs, true));
  assert.deepEqual(offline.map((e) => e.type), ['charge.offline']);
  assert.equal(offline[0]!.socPercent, rs.at(-1)!.socPercent, 'the last SoC the charger sent, though it waits above the gap');
  h.read(rs[10]!); // the missing reading arrives after all
  assert.deepEqual(byId(h.events), byId(inOrder.events));
  assert.deepEqual(h.states.get('S1'), inOrder.states.get('S1'));
});

test('out of order: a gap is given up once reorderWindow readings wait; its reading arriving after that is no duplicate', () => {
  const det = createDetector({ reorderWindow: 4 });
  const rs = simulate({ startSoc: 50, limit: 80, intervalS: 60 }).map((r) => (r.seq === 3 ? reading({ ...r, chargingState: 'Faulted', errorCode: 'GroundFailure', powerW: 0 }) : r));
  const h = new Harness(det);
  const missing = rs[3]!;
  for (const r of rs.filter((r) => r !== missing).slice(0, 7)) h.read(r); // seq 0..2 and 4..7
  let st = h.states.get('S1')!;
  assert.deepEqual(st.pending.map((p) => p.seq), [4, 5, 6, 7], 'four wait above the gap');
  h.read(rs[8]!);
  st = h.states.get('S1')!;
  assert.equal(st.pending.length, 0, 'a fifth gives the gap up');
  assert.equal(st.applied, 8);
  assert.deepEqual(st.skipped, [3]);
  for (const r of rs.slice(9, 30)) h.read(r);
  assert.ok(h.states.get('S1')!.pending.length === 0);
  assert.ok(!h.types().includes('charge.fault'));
  // The given-up reading still arrives: checked on its own, its fault is reported.
  assert.deepEqual(h.read(missing).map((e) => e.type), ['charge.fault']);
  assert.deepEqual(h.states.get('S1')!.skipped, []);
  assert.deepEqual(h.read(missing), [], 'and once only');
  assert.equal(h.duplicates, 1);
});

test('out of order: the state stays bounded however many readings wait', () => {
  const h = new Harness(createDetector({ reorderWindow: 16 }));
  const rs = [reading({ seq: 0 }), ...Array.from({ length: 400 }, (_, k) => reading({ seq: k + 1, socPercent: 40 }))];
  for (const r of rs) if (r.seq % 50 !== 7) h.read(r); // a missing reading every 50
  const st = h.states.get('S1')!;
  assert.ok(st.pending.length <= 16);
  assert.ok(st.skipped.length <= 64);
  assert.ok(JSON.stringify(st).length < 8_000, `${JSON.stringify(st).length} chars`);
});

test('a state saved before readings could wait (v 1) is continued as it was', () => {
  const rs = simulate({ startSoc: 40, limit: 80 }).map((r) => (r.seq === 10 ? reading({ ...r, socPercent: r.socPercent - 5 }) : r));
  const clean = new Harness().play(rs);
  const h = new Harness();
  for (const r of rs.slice(0, 6)) h.read(r);
  const { applied: _a, pending: _p, skipped: _s, ...rest } = h.states.get('S1')!;
  h.states.set('S1', { ...rest, v: 1 } as unknown as SessionState);
  for (const r of rs.slice(6)) h.read(r);
  assert.deepEqual(h.types(), clean.types().filter((t) => t !== 'charge.offline'));
  assert.equal(h.states.get('S1')!.v, 2);
  assert.throws(() => createDetector().onReading({ ...rest, v: 3 } as unknown as SessionState, rs[6]!), /version 3/);
});

// ---- runs whose source announces quiet sessions (EvClock.announcesQuiet, EvQuiet) -----------

const aclock = (atMs: number, final = false): EvClock => ({ ...clock(atMs, final), announcesQuiet: true });
const quietOf = (r: EvReading) => ({ runId: r.runId, sessionId: r.sessionId, lastSeq: r.seq, timestamp: iso(Date.parse(r.timestamp) + r.sampleIntervalS * 1000) });

test('announced quiet: a finished session whose Finishing comes after clocks past the threshold is never offline', () => {
  const det = createDetector();
  const rs = simulate(); // ... Finishing, 10 s apart
  const fin = rs.at(-1)!;
  let s: SessionState | undefined;
  let rc: RunClock | undefined;
  const events: EvEvent[] = [];
  for (const r of rs.slice(0, -1)) {
    const out = det.onReading(s, r, rc);
    (s = out.state), events.push(...out.events);
    const c = det.onClock(aclock(Date.parse(r.timestamp)), [s].filter(isOpen), rc);
    rc = c.clock;
  }
  // The Finishing is late: the clock runs 10 intervals past it, the notice naming it arrives.
  for (let k = 1; k <= 10; k++) {
    const c = det.onClock(aclock(Date.parse(fin.timestamp) + k * 10_000), [s!].filter(isOpen), rc);
    assert.deepEqual(c.events, [], `clock +${k} intervals: the session's last reading is not in yet`);
    rc = c.clock;
  }
  const q = det.onQuiet(s, quietOf(fin), rc);
  assert.deepEqual([q.events, q.changed, q.unknown, q.state!.quietSeq], [[], true, false, fin.seq]);
  s = q.state;
  assert.deepEqual(det.onClock(aclock(Date.parse(fin.timestamp) + 200_000), [s!], rc).events, []);
  const out = det.onReading(s, fin, rc);
  events.push(...out.events);
  assert.deepEqual(events.map((e) => e.type), ['charge.started', 'charge.completed']);
  assert.equal(isOpen(out.state), false);
  // The same late Finishing without notices: the clock alone calls it silent (the old rule).
  const old = new Harness();
  for (const r of rs.slice(0, -1)) old.read(r), old.tick(clock(Date.parse(r.timestamp)));
  assert.deepEqual(old.tick(clock(Date.parse(fin.timestamp) + 30_000)).map((e) => e.type), ['charge.offline']);
});

test('announced quiet: a silent charger is offline once the clock passes the threshold after its notice and last reading, whichever comes last', () => {
  const det = createDetector();
  const rs = simulate({ maxCharging: 5, finish: false }); // seq 0..5, t = 0..50 s
  const lastMs = T0 + 50_000;
  const feed = (order: ('readings' | 'notice' | 'clocks')[]) => {
    let s: SessionState | undefined;
    let rc: RunClock | undefined;
    const events: EvEvent[] = [];
    for (const what of order) {
      if (what === 'readings') for (const r of rs) { const o = det.onReading(s, r, rc); (s = o.state), events.push(...o.events); }
      if (what === 'notice') { const o = det.onQuiet(s, quietOf(rs.at(-1)!), rc); if (o.changed) s = o.state; events.push(...o.events); }
      if (what === 'clocks') for (let t = lastMs; t <= lastMs + 40_000; t += 10_000) { const o = det.onClock(aclock(t), s ? [s].filter(isOpen) : [], rc); rc = o.clock; for (const x of o.states) s = x; events.push(...o.events); }
    }
    return { events, s: s! };
  };
  for (const order of [['readings', 'notice', 'clocks'], ['readings', 'clocks', 'notice'], ['clocks', 'readings', 'notice']] as const) {
    const { events, s } = feed(order as unknown as ('readings' | 'notice' | 'clocks')[]);
    assert.deepEqual(events.map((e) => e.type), ['charge.started', 'charge.offline'], order.join(', '));
    assert.equal(events[1]!.details['lastSeq'], 5);
    assert.equal(s.offline, true);
  }
  // a notice before any reading of its session: unknown (retried), nothing changes
  const early = det.onQuiet(undefined, quietOf(rs.at(-1)!));
  assert.deepEqual([early.unknown, early.changed, early.events], [true, false, []]);
  // the reading the notice names is late: no verdict until it arrives, then one at once
  let s: SessionState | undefined;
  for (const r of rs.slice(0, -1)) s = det.onReading(s, r).state;
  s = det.onQuiet(s, quietOf(rs.at(-1)!)).state;
  let rc: RunClock | undefined;
  for (let t = lastMs; t <= lastMs + 60_000; t += 10_000) {
    const o = det.onClock(aclock(t), [s!], rc);
    assert.deepEqual(o.events, []);
    rc = o.clock;
  }
  const late = det.onReading(s, rs.at(-1)!, rc);
  assert.deepEqual(late.events.map((e) => e.type), ['charge.offline']);
  assert.equal(late.events[0]!.details['silentForS'], 60);
});

test('announced quiet: a reading after the notice (the source spoke again) withdraws it; stale and repeated notices change nothing', () => {
  const det = createDetector();
  const rs = simulate({ maxCharging: 8, finish: false });
  let s: SessionState | undefined;
  for (const r of rs.slice(0, 5)) s = det.onReading(s, r).state;
  const q4 = quietOf(rs[4]!);
  s = det.onQuiet(s, q4).state!;
  assert.equal(s.quietSeq, 4);
  assert.equal(det.onQuiet(s, q4).changed, false, 'a redelivered notice');
  s = det.onReading(s, rs[5]!).state;
  assert.equal(s.quietSeq, undefined);
  assert.equal(det.onQuiet(s, q4).changed, false, 'a notice older than what the source sent since');
  const rc = det.onClock(aclock(T0 + 500_000), [], undefined).clock;
  assert.deepEqual(det.onClock(aclock(T0 + 500_000), [s], rc).events, [], 'no notice: no verdict');
});

test('session state is small plain JSON', () => {
  const h = new Harness().play(simulate());
  const st = h.states.get('S1')!;
  assert.deepEqual(JSON.parse(JSON.stringify(st)), st);
  assert.equal(sessionRunId(st), 'run-1');
  assert.ok(JSON.stringify(st).length < 2000, `${JSON.stringify(st).length} chars`);
});

test('every event produced above passes EvEventSchema', () => {
  assert.ok(allEvents.length > 30);
  const types = new Set(allEvents.map((e) => e.type));
  for (const t of ['charge.started', 'charge.completed', 'charge.fault', 'charge.stalled', 'charge.soc_drop', 'charge.over_limit', 'charge.offline', 'charge.invalid_reading']) {
    assert.ok(types.has(t as EvEvent['type']), t);
  }
  for (const e of allEvents) {
    assert.deepEqual(EvEventSchema.parse(e), e);
    assert.ok(e.summary.length > 10);
    assert.deepEqual(JSON.parse(JSON.stringify(e)), e);
  }
});
