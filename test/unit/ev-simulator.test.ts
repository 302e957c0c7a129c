import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { EvClockSchema, EvQuietSchema, EvReadingSchema, FAULT_TYPES, readingProblems, type EvClock, type EvReading, type FaultType } from '../../shared/contracts/ev.ts';
import { loadCatalog, parseCatalog, type CatalogCharger, type CatalogVehicle } from '../../functions/trigger/ev-catalog.ts';
import {
  FAULT_ERROR_CODES, INVALID_POWER_W, INVALID_SOC_PERCENT, STALL_MAX_POWER_W, STALL_MIN_DURATION_S,
  maxPowerKW, planRun, sessionReadings, simulateRun, type SessionPlan, type SimItem, type SimOptions,
} from '../../functions/trigger/ev-simulator.ts';

const CATALOG_FILE = new URL('../../../shared/data/ev/vehicles.json', import.meta.url).pathname;
const catalog = loadCatalog();
const START = new Date('2025-03-01T08:00:00.000Z');

function options(over: Partial<SimOptions> = {}): SimOptions {
  return { runId: 'run-1', sessions: 20, seed: 42, sampleIntervalS: 30, faultRate: 0, startTime: START, catalog, ...over };
}

const ms = (iso: string) => Date.parse(iso);

function collect(opts: SimOptions, plans?: SessionPlan[]): SimItem[] {
  return [...simulateRun(opts, plans)];
}

function bySession(items: SimItem[]): Map<string, EvReading[]> {
  const map = new Map<string, EvReading[]>();
  for (const it of items) {
    if (it.kind !== 'reading') continue;
    const list = map.get(it.reading.sessionId);
    if (list) list.push(it.reading);
    else map.set(it.reading.sessionId, [it.reading]);
  }
  return map;
}

/** A healthy plan for one vehicle and charger, built from a planned session. */
function healthyPlan(vehicleIndex: number, chargerIndex: number, startSoc: number, limit: number): SessionPlan {
  const base = planRun(options({ sessions: 1, seed: vehicleIndex * 10 + chargerIndex }))[0]!;
  const vehicle = catalog.vehicles[vehicleIndex]!;
  const charger = catalog.chargers[chargerIndex]!;
  const [lo, hi] = charger.type === 'AC' ? catalog.efficiency.ac : catalog.efficiency.dc;
  return { ...base, fault: null, vehicleIndex, vehicle, chargerIndex, charger, startSoc, chargeLimitPercent: limit, efficiency: (lo + hi) / 2 };
}

/** The upper bound of the reported power at a reported (floored) SoC. */
function powerBoundW(vehicle: CatalogVehicle, charger: CatalogCharger, soc: number): number {
  return Math.max(maxPowerKW(vehicle, charger, soc), maxPowerKW(vehicle, charger, Math.min(100, soc + 1))) * 1000 + 0.5;
}

function assertHealthySession(rs: EvReading[], plan: SessionPlan, dtS: number): void {
  const label = `${plan.vehicle.model} @ ${plan.charger.type} ${plan.charger.maxKW} kW`;
  assert.ok(rs.length >= 3, label);
  assert.equal(rs[0]!.chargingState, 'Preparing', label);
  assert.equal(rs[0]!.powerW, 0, label);
  const last = rs[rs.length - 1]!;
  assert.equal(last.chargingState, 'Finishing', label);
  assert.ok(last.stopReason === 'EVDisconnected' || last.stopReason === 'Local', label);
  assert.equal(last.powerW, 0, label);
  assert.ok(last.socPercent >= plan.chargeLimitPercent - 1 && last.socPercent <= plan.chargeLimitPercent, `${label}: final SoC ${last.socPercent}`);
  assert.equal(rs.filter((r) => r.chargingState === 'Finishing').length, 1, label);
  for (let i = 0; i < rs.length; i++) {
    const r = rs[i]!;
    EvReadingSchema.parse(r);
    assert.deepEqual(readingProblems(r), [], label);
    assert.equal(r.seq, i, label);
    assert.equal(r.messageId, `run-1:${plan.sessionId}:${i}`);
    assert.equal(r.sampleIntervalS, dtS);
    assert.equal(r.errorCode, 'NoError');
    assert.ok(r.timestamp.endsWith('Z'));
    assert.ok(r.socPercent <= plan.chargeLimitPercent, `${label}: SoC ${r.socPercent} above limit`);
    assert.ok(r.powerW <= powerBoundW(plan.vehicle, plan.charger, r.socPercent), `${label}: power ${r.powerW} W at ${r.socPercent} %`);
    if (i > 0 && i < rs.length - 1) {
      assert.equal(r.chargingState, 'Charging', label);
      assert.ok(r.powerW >= STALL_MAX_POWER_W, `${label}: healthy power ${r.powerW} W looks stalled`);
    }
    if (i > 0) {
      const p = rs[i - 1]!;
      assert.equal(ms(r.timestamp) - ms(p.timestamp), dtS * 1000, label);
      assert.ok(r.energyWh >= p.energyWh, `${label}: energy decreased`);
      assert.ok(r.socPercent >= p.socPercent, `${label}: SoC decreased`);
    }
  }
}

describe('catalog', () => {
  test('loads the default catalog', () => {
    assert.equal(catalog.vehicles.length, 13);
    assert.ok(catalog.chargers.some((c) => c.type === 'AC') && catalog.chargers.some((c) => c.type === 'DC'));
  });

  test('accepts an explicit path (string or URL)', () => {
    assert.deepEqual(loadCatalog(CATALOG_FILE), catalog);
    assert.deepEqual(loadCatalog(pathToFileURL(CATALOG_FILE)), catalog);
  });

  test('validation errors name the bad field', () => {
    const json = JSON.parse(readFileSync(CATALOG_FILE, 'utf8')) as { vehicles: Array<Record<string, unknown>> };
    json.vehicles[3]!.usableKWh = -1;
    assert.throws(() => parseCatalog(json), /vehicles\[3\]\.usableKWh/);
    const json2 = JSON.parse(readFileSync(CATALOG_FILE, 'utf8')) as { vehicles: Array<{ dcCurve: number[][] }> };
    json2.vehicles[0]!.dcCurve = [[0, 100], [50, 90], [40, 80]];
    assert.throws(() => parseCatalog(json2), /vehicles\[0\]\.dcCurve\[2\]/);
    assert.throws(() => parseCatalog({ ...json, efficiency: { ac: [0.9, 0.8], dc: [0.9, 0.94] } }), /efficiency\.ac/);
    const dir = mkdtempSync(join(tmpdir(), 'ev-cat-'));
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ ...json, chargers: [{ type: 'XX', maxKW: 1, voltageV: 1, share: 1 }] }));
    assert.throws(() => loadCatalog(bad), /chargers\[0\]\.type.*bad\.json/);
    assert.throws(() => loadCatalog(join(dir, 'missing.json')), /cannot read EV catalog/);
  });
});

describe('physics', () => {
  test('every vehicle x every charger charges healthily to its limit', () => {
    const dtS = 30;
    for (let v = 0; v < catalog.vehicles.length; v++) {
      for (let c = 0; c < catalog.chargers.length; c++) {
        for (const [startSoc, limit] of [[10, 80], [35.5, 100]] as const) {
          const plan = healthyPlan(v, c, startSoc, limit);
          const rs = [...sessionReadings(plan, { runId: 'run-1', sampleIntervalS: dtS })];
          assertHealthySession(rs, plan, dtS);
        }
      }
    }
  });

  test('also with long and fractional sample intervals', () => {
    for (const dtS of [1.5, 300, 900]) {
      for (const c of [0, 4]) {
        const plan = healthyPlan(5, c, 12, 100); // Bolt: its DC curve hits 0 kW at 100 %
        const rs = [...sessionReadings(plan, { runId: 'run-1', sampleIntervalS: dtS })];
        assertHealthySession(rs, plan, dtS);
      }
    }
  });

  test('DC 150 kW, Model 3 LR, 10 -> 80 % takes 15-45 minutes', () => {
    const v = catalog.vehicles.findIndex((x) => x.model === 'Model 3 Long Range');
    const c = catalog.chargers.findIndex((x) => x.type === 'DC' && x.maxKW === 150);
    const rs = [...sessionReadings(healthyPlan(v, c, 10, 80), { runId: 'run-1', sampleIntervalS: 30 })];
    const minutes = (ms(rs[rs.length - 1]!.timestamp) - ms(rs[0]!.timestamp)) / 60000;
    assert.ok(minutes >= 15 && minutes <= 45, `${minutes} min`);
    const peak = Math.max(...rs.map((r) => r.powerW));
    assert.ok(peak > 140_000 && peak <= 150_000, `peak ${peak} W`);
    // ~52 kWh into the battery, a bit more from the grid
    const kWh = rs[rs.length - 1]!.energyWh / 1000;
    assert.ok(kWh > 51.8 && kWh < 60, `${kWh} kWh`);
  });

  test('AC 7.2 kW, ~40 kWh pack takes hours; SoC repeats while power is steady', () => {
    const v = catalog.vehicles.findIndex((x) => x.model === 'Leaf 40 kWh');
    const c = catalog.chargers.findIndex((x) => x.type === 'AC' && x.maxKW === 7.2);
    const rs = [...sessionReadings(healthyPlan(v, c, 10, 90), { runId: 'run-1', sampleIntervalS: 60 })];
    const hours = (ms(rs[rs.length - 1]!.timestamp) - ms(rs[0]!.timestamp)) / 3_600_000;
    assert.ok(hours >= 3 && hours <= 8, `${hours} h`);
    assert.ok(Math.max(...rs.map((r) => r.powerW)) <= 6600.5); // the on-board charger limits
    const repeats = rs.filter((r, i) => i > 0 && r.socPercent === rs[i - 1]!.socPercent).length;
    assert.ok(repeats > rs.length / 2);
  });

  test('voltage, current and temperature are plausible', () => {
    const dc800 = catalog.chargers.findIndex((x) => x.type === 'DC' && x.voltageV === 800);
    const dc400 = catalog.chargers.findIndex((x) => x.type === 'DC' && x.voltageV === 400);
    const ac3 = catalog.chargers.findIndex((x) => x.type === 'AC' && x.phases === 3);
    for (const [c, lo, hi] of [[dc800, 700, 815], [dc400, 350, 410], [ac3, 390, 410]] as const) {
      const rs = [...sessionReadings(healthyPlan(7, c, 10, 90), { runId: 'run-1', sampleIntervalS: 30 })];
      const charging = rs.filter((r) => r.chargingState === 'Charging');
      for (const r of rs) {
        assert.ok(r.voltageV >= lo && r.voltageV <= hi, `${r.voltageV} V`);
        assert.ok(r.temperatureC > -10 && r.temperatureC < 60, `${r.temperatureC} C`);
      }
      for (const r of charging) {
        const phases = catalog.chargers[c]!.phases === 3 ? Math.sqrt(3) : 1;
        assert.ok(Math.abs(r.currentA - r.powerW / (r.voltageV * phases)) < 0.06);
      }
      if (catalog.chargers[c]!.type === 'DC') {
        const first = charging[0]!;
        const lastC = charging[charging.length - 1]!;
        assert.ok(lastC.voltageV > first.voltageV - 10, 'pack voltage rises with SoC');
      }
    }
  });
});

describe('planning and determinism', () => {
  test('same seed -> identical output; different seed -> different', () => {
    const a = collect(options({ sessions: 30, faultRate: 0.5 }));
    const b = collect(options({ sessions: 30, faultRate: 0.5 }));
    assert.deepEqual(a, b);
    assert.equal(JSON.stringify(a), JSON.stringify(b));
    const c = collect(options({ sessions: 30, faultRate: 0.5, seed: 43 }));
    assert.notEqual(JSON.stringify(a), JSON.stringify(c));
    assert.notDeepEqual(planRun(options({ seed: 1 })).map((p) => p.sessionId), planRun(options({ seed: 2 })).map((p) => p.sessionId));
  });

  test('plans: identities, ranges and staggered starts', () => {
    const n = 2000;
    const plans = planRun(options({ sessions: n, faultRate: 0.3 }));
    assert.equal(plans.length, n);
    assert.equal(new Set(plans.map((p) => p.sessionId)).size, n);
    const windowMs = Math.max(600, n * 2) * 1000;
    const chargerCounts = new Map<number, number>();
    const vehicles = new Set<number>();
    for (const p of plans) {
      assert.match(p.chargePointId, /^CP-[A-Z0-9]+$/);
      assert.ok(p.connectorId === 1 || p.connectorId === 2);
      assert.equal(p.vin.length, 17);
      assert.ok(p.location.includes(', '));
      assert.ok(p.startMs >= START.getTime() && p.startMs < START.getTime() + windowMs);
      assert.ok(p.startSoc >= 5 && p.startSoc <= 60);
      assert.ok(Number.isInteger(p.chargeLimitPercent) && p.chargeLimitPercent >= 80 && p.chargeLimitPercent <= 100);
      if (p.fault === 'charge.over_limit') assert.ok(p.chargeLimitPercent <= 90);
      const [lo, hi] = p.charger.type === 'AC' ? catalog.efficiency.ac : catalog.efficiency.dc;
      assert.ok(p.efficiency >= lo && p.efficiency <= hi);
      chargerCounts.set(p.chargerIndex, (chargerCounts.get(p.chargerIndex) ?? 0) + 1);
      vehicles.add(p.vehicleIndex);
    }
    assert.equal(vehicles.size, catalog.vehicles.length);
    catalog.chargers.forEach((c, i) => {
      const share = (chargerCounts.get(i) ?? 0) / n;
      assert.ok(Math.abs(share - c.share) < 0.04, `charger ${i}: ${share} vs ${c.share}`);
    });
  });

  test('every reading of a run passes the schema (emails, VINs, ...)', () => {
    const items = collect(options({ sessions: 300, faultRate: 0.3, sampleIntervalS: 120 }));
    for (const it of items) {
      if (it.kind === 'reading') EvReadingSchema.parse(it.reading);
      else if (it.kind === 'clock') EvClockSchema.parse(it.clock);
      else EvQuietSchema.parse(it.quiet);
    }
  });
});

// --- faults -----------------------------------------------------------------

interface Observed {
  faulted: boolean;
  stalled: boolean;
  socDrop: boolean;
  overLimit: boolean;
  offline: boolean;
  invalid: boolean;
}

/** A reference detector with sensible thresholds. */
function observe(rs: EvReading[]): Observed {
  const valid = rs.filter((r) => readingProblems(r).length === 0);
  let stalled = false;
  let runStart = -1;
  for (let i = 0; i < valid.length; i++) {
    const r = valid[i]!;
    const low = r.chargingState === 'Charging' && r.powerW < STALL_MAX_POWER_W;
    if (low && runStart < 0) runStart = i;
    if (!low) runStart = -1;
    if (low && runStart >= 0) {
      const first = valid[runStart]!;
      if (i - runStart + 1 >= 4 && ms(r.timestamp) - ms(first.timestamp) >= STALL_MIN_DURATION_S * 1000 && r.socPercent === first.socPercent) stalled = true;
    }
  }
  let socDrop = false;
  for (let i = 1; i < valid.length; i++) if (valid[i - 1]!.socPercent - valid[i]!.socPercent >= 5) socDrop = true;
  return {
    faulted: rs.some((r) => r.chargingState === 'Faulted' || r.errorCode !== 'NoError'),
    stalled,
    socDrop,
    overLimit: valid.some((r) => r.socPercent > r.chargeLimitPercent),
    offline: rs[rs.length - 1]?.chargingState !== 'Finishing',
    invalid: rs.length !== valid.length,
  };
}

const FLAG_OF: Record<FaultType, keyof Observed> = {
  'charge.fault': 'faulted',
  'charge.stalled': 'stalled',
  'charge.soc_drop': 'socDrop',
  'charge.over_limit': 'overLimit',
  'charge.offline': 'offline',
  'charge.invalid_reading': 'invalid',
};

function assertFaultShape(plan: SessionPlan, rs: EvReading[], dtS: number): void {
  const fault = plan.fault!;
  const label = `${fault} ${plan.sessionId} dt=${dtS}`;
  const limit = plan.chargeLimitPercent;
  const last = rs[rs.length - 1]!;
  const chargingBefore = (i: number) => rs.slice(0, i).filter((r) => r.chargingState === 'Charging').length;
  const problems = rs.map((r) => readingProblems(r));
  // every reading: contiguous seq, timestamps step by dt, energy monotonic, schema
  rs.forEach((r, i) => {
    EvReadingSchema.parse(r);
    assert.equal(r.seq, i, label);
    if (i > 0) {
      assert.equal(ms(r.timestamp) - ms(rs[i - 1]!.timestamp), dtS * 1000, label);
      assert.ok(r.energyWh >= rs[i - 1]!.energyWh, label);
    }
  });
  if (fault !== 'charge.invalid_reading') assert.ok(problems.every((p) => p.length === 0), label);
  if (fault !== 'charge.fault') assert.ok(rs.every((r) => r.errorCode === 'NoError' && r.chargingState !== 'Faulted'), label);

  switch (fault) {
    case 'charge.fault': {
      const idx = rs.findIndex((r) => r.chargingState === 'Faulted');
      assert.ok(idx > 0, label);
      assert.equal(rs.filter((r) => r.chargingState === 'Faulted').length, 1, label);
      const f = rs[idx]!;
      assert.ok((FAULT_ERROR_CODES as readonly string[]).includes(f.errorCode), label);
      assert.equal(f.powerW, 0, label);
      if (f.errorCode === 'HighTemperature') assert.ok(f.temperatureC >= 75, label);
      assert.ok(chargingBefore(idx) >= 3, label);
      assert.equal(idx, rs.length - 2, label);
      assert.equal(last.chargingState, 'Finishing', label);
      assert.equal(last.stopReason, 'Other', label);
      assert.ok(last.socPercent < limit, label);
      break;
    }
    case 'charge.stalled': {
      const idx = rs.findIndex((r) => r.chargingState === 'Charging' && r.powerW < STALL_MAX_POWER_W);
      assert.ok(idx > 0 && chargingBefore(idx) >= 3, label);
      const stall = rs.slice(idx, rs.length - 1);
      assert.ok(stall.length >= 4, label);
      assert.ok(stall.every((r) => r.chargingState === 'Charging' && r.powerW < STALL_MAX_POWER_W && r.socPercent === stall[0]!.socPercent), label);
      assert.ok(ms(stall[stall.length - 1]!.timestamp) - ms(stall[0]!.timestamp) >= STALL_MIN_DURATION_S * 1000, label);
      assert.equal(last.chargingState, 'Finishing', label);
      assert.equal(last.stopReason, 'Local', label);
      assert.ok(last.socPercent < limit, label);
      break;
    }
    case 'charge.soc_drop': {
      const drops = rs.map((r, i) => (i > 0 ? rs[i - 1]!.socPercent - r.socPercent : 0)).filter((d) => d > 0);
      assert.equal(drops.length, 1, label);
      assert.ok(drops[0]! >= 8 && drops[0]! <= 15, `${label}: drop ${drops[0]}`);
      const idx = rs.findIndex((r, i) => i > 0 && r.socPercent < rs[i - 1]!.socPercent);
      assert.equal(rs[idx]!.chargingState, 'Charging', label);
      assert.ok(chargingBefore(idx) >= 3, label);
      assert.equal(last.chargingState, 'Finishing', label);
      assert.ok(last.socPercent >= limit - 1 && last.socPercent <= limit, label);
      assert.ok(rs.every((r) => r.socPercent <= limit), label);
      break;
    }
    case 'charge.over_limit': {
      assert.ok(limit <= 90, label);
      const peak = Math.max(...rs.map((r) => r.socPercent));
      assert.ok(peak >= limit + 5 && peak <= limit + 10 && peak <= 100, `${label}: peak ${peak} limit ${limit}`);
      assert.equal(last.chargingState, 'Finishing', label);
      assert.equal(last.socPercent, peak, label);
      assert.ok(rs.slice(1, -1).every((r) => r.chargingState === 'Charging'), label);
      break;
    }
    case 'charge.offline': {
      assert.ok(rs.every((r) => r.chargingState === 'Preparing' || r.chargingState === 'Charging'), label);
      assert.equal(last.chargingState, 'Charging', label);
      assert.ok(chargingBefore(rs.length) >= 3, label);
      assert.ok(last.socPercent < limit, label);
      break;
    }
    case 'charge.invalid_reading': {
      const bad = problems.map((p, i) => (p.length > 0 ? i : -1)).filter((i) => i >= 0);
      assert.equal(bad.length, 1, label);
      const i = bad[0]!;
      const r = rs[i]!;
      assert.ok(r.socPercent === INVALID_SOC_PERCENT || r.powerW === INVALID_POWER_W, label);
      assert.ok(chargingBefore(i) >= 3, label);
      // the true state goes on: the neighbours are consistent with each other
      const before = rs[i - 1]!;
      const after = rs[i + 1]!;
      const valid = rs.filter((_, k) => k !== i);
      let maxStep = 0;
      for (let k = 1; k < valid.length; k++) {
        assert.ok(valid[k]!.socPercent >= valid[k - 1]!.socPercent, label);
        if (k !== i) maxStep = Math.max(maxStep, valid[k]!.socPercent - valid[k - 1]!.socPercent);
      }
      assert.ok(after.socPercent >= before.socPercent && after.socPercent - before.socPercent <= 2 * maxStep + 1, label);
      assert.equal(last.chargingState, 'Finishing', label);
      assert.ok(last.socPercent >= limit - 1 && last.socPercent <= limit, label);
      break;
    }
  }
}

describe('faults', () => {
  test('faultRate 0 -> no faults; faultRate 1 -> one per session', () => {
    const none = planRun(options({ sessions: 500, faultRate: 0 }));
    assert.ok(none.every((p) => p.fault === null));
    const all = planRun(options({ sessions: 500, faultRate: 1 }));
    assert.ok(all.every((p) => p.fault !== null));
    const some = planRun(options({ sessions: 2000, faultRate: 0.1 }));
    const rate = some.filter((p) => p.fault).length / some.length;
    assert.ok(rate > 0.07 && rate < 0.13, `${rate}`);
  });

  test('healthy runs show no anomaly to a reference detector', () => {
    const opts = options({ sessions: 150, faultRate: 0, sampleIntervalS: 60 });
    const plans = planRun(opts);
    const sessions = bySession(collect(opts, plans));
    assert.equal(sessions.size, plans.length);
    for (const plan of plans) {
      const rs = sessions.get(plan.sessionId)!;
      assertHealthySession(rs, plan, 60);
      assert.deepEqual(observe(rs), { faulted: false, stalled: false, socDrop: false, overLimit: false, offline: false, invalid: false });
    }
  });

  for (const dtS of [30, 300]) {
    test(`every fault type occurs and has its shape, and only its shape (dt=${dtS}s)`, () => {
      const opts = options({ sessions: 600, faultRate: 1, sampleIntervalS: dtS, seed: 7 + dtS });
      const plans = planRun(opts);
      const sessions = bySession(collect(opts, plans));
      const seen = new Set<FaultType>();
      for (const plan of plans) {
        assert.ok(plan.fault);
        seen.add(plan.fault);
        const rs = sessions.get(plan.sessionId)!;
        assertFaultShape(plan, rs, dtS);
        const obs = observe(rs);
        const expected = FLAG_OF[plan.fault];
        for (const [flag, value] of Object.entries(obs)) {
          assert.equal(value, flag === expected, `${plan.fault}: ${flag}=${value}`);
        }
      }
      assert.deepEqual([...seen].sort(), [...FAULT_TYPES].sort());
      const truth = plans.filter((p) => p.fault).map((p) => ({ sessionId: p.sessionId, fault: p.fault }));
      assert.equal(truth.length, 600);
    });
  }
});

describe('merged stream', () => {
  test('event-time order, clocks every interval, final clock last', () => {
    const dtS = 45;
    const opts = options({ sessions: 200, faultRate: 0.4, sampleIntervalS: dtS });
    const items = collect(opts);
    const readings = items.filter((i): i is Extract<SimItem, { kind: 'reading' }> => i.kind === 'reading').map((i) => i.reading);
    const clocks = items.filter((i): i is Extract<SimItem, { kind: 'clock' }> => i.kind === 'clock').map((i) => i.clock);
    assert.ok(readings.length > 1000);
    // readings in non-decreasing event time
    for (let i = 1; i < readings.length; i++) assert.ok(readings[i]!.timestamp >= readings[i - 1]!.timestamp);
    // clocks: step by dt from the first reading; final only once, last
    const firstMs = ms(readings[0]!.timestamp);
    const lastMs = ms(readings[readings.length - 1]!.timestamp);
    const nonFinal = clocks.filter((c) => !c.final);
    nonFinal.forEach((c: EvClock, k) => {
      assert.equal(c.runId, 'run-1');
      assert.equal(ms(c.timestamp), firstMs + k * dtS * 1000);
    });
    assert.ok(ms(nonFinal[nonFinal.length - 1]!.timestamp) <= lastMs && ms(nonFinal[nonFinal.length - 1]!.timestamp) > lastMs - dtS * 1000);
    assert.equal(clocks.filter((c) => c.final).length, 1);
    const final = items[items.length - 1]!;
    assert.ok(final.kind === 'clock' && final.clock.final);
    assert.equal(ms(final.clock.timestamp), lastMs + 4 * dtS * 1000);
    // a clock at T comes after all readings at <= T and before any reading after T
    let maxClock = -Infinity;
    let maxReading = -Infinity;
    for (const it of items) {
      if (it.kind === 'quiet') continue;
      if (it.kind === 'clock') {
        const t = ms(it.clock.timestamp);
        assert.ok(t >= maxReading, 'clock before a reading it covers');
        maxClock = Math.max(maxClock, t);
      } else {
        const t = ms(it.reading.timestamp);
        assert.ok(t > maxClock, 'reading at or before an already emitted clock');
        maxReading = Math.max(maxReading, t);
      }
    }
    // the merge equals the per-session streams
    const plans = planRun(opts);
    const merged = bySession(items);
    for (const plan of plans.slice(0, 20)) {
      assert.deepEqual(merged.get(plan.sessionId), [...sessionReadings(plan, opts)]);
    }
  });

  test('a quiet notice per session when its next reading would have been due, before that clock; clocks say they come', () => {
    const dtS = 30;
    const opts = options({ sessions: 120, faultRate: 0.5, sampleIntervalS: dtS });
    const items = collect(opts);
    const last = new Map<string, EvReading>();
    const quiet = new Map<string, number>();
    let position = 0;
    const at = new Map<string, number>();
    for (const it of items) {
      position++;
      if (it.kind === 'reading') {
        assert.ok(!quiet.has(it.reading.sessionId), `a reading of ${it.reading.sessionId} after its notice`);
        last.set(it.reading.sessionId, it.reading);
      } else if (it.kind === 'quiet') {
        assert.ok(!quiet.has(it.quiet.sessionId), 'one notice per session');
        quiet.set(it.quiet.sessionId, position);
        const r = last.get(it.quiet.sessionId)!;
        assert.deepEqual([it.quiet.runId, it.quiet.lastSeq, ms(it.quiet.timestamp)], [r.runId, r.seq, ms(r.timestamp) + dtS * 1000]);
        at.set(it.quiet.sessionId, ms(it.quiet.timestamp));
      } else {
        assert.equal(it.clock.announcesQuiet, true);
        // every notice due by this clock came before it
        for (const [id, r] of last) if (ms(r.timestamp) + dtS * 1000 <= ms(it.clock.timestamp)) assert.ok(quiet.has(id), `notice of ${id} before clock ${it.clock.timestamp}`);
      }
    }
    assert.equal(quiet.size, 120);
    // offline sessions (the charger goes silent) get their notice like every other
    const offline = planRun(opts).filter((p) => p.fault === 'charge.offline');
    assert.ok(offline.length > 0);
    for (const p of offline) assert.ok(quiet.has(p.sessionId));
    // without notices: the stream of a run recorded before them, message for message
    const old = collect({ ...opts, announceQuiet: false });
    assert.deepEqual(old, items.filter((i) => i.kind !== 'quiet').map((i) => (i.kind === 'clock' ? { kind: 'clock', clock: { runId: i.clock.runId, timestamp: i.clock.timestamp, final: i.clock.final } } : i)));
  });

  test('the stream is lazy', () => {
    const it = simulateRun(options({ sessions: 20_000, faultRate: 0.05 }));
    let n = 0;
    for (const item of it) {
      if (item.kind === 'reading') n++;
      if (n >= 1000) break;
    }
    assert.equal(n, 1000);
  });

  test('no sessions -> just a final clock', () => {
    const items = collect(options({ sessions: 0 }));
    assert.equal(items.length, 1);
    assert.ok(items[0]!.kind === 'clock' && items[0]!.clock.final);
  });

  test('bad options are rejected', () => {
    assert.throws(() => planRun(options({ faultRate: 1.5 })), RangeError);
    assert.throws(() => planRun(options({ sampleIntervalS: 0 })), RangeError);
    assert.throws(() => planRun(options({ sessions: -1 })), RangeError);
  });
});

test('two runs with the same seed simulate the same sessions under different ids', () => {
  const a = planRun(options({ runId: 'run-a', sessions: 20, seed: 9 }));
  const b = planRun(options({ runId: 'run-b', sessions: 20, seed: 9 }));
  assert.deepEqual(a.map((p) => [p.vehicle.model, p.charger.maxKW, p.startSoc, p.chargeLimitPercent, p.fault]), b.map((p) => [p.vehicle.model, p.charger.maxKW, p.startSoc, p.chargeLimitPercent, p.fault]));
  const ids = new Set(a.map((p) => p.sessionId));
  for (const p of b) assert.ok(!ids.has(p.sessionId), 'session ids differ between runs');
  for (const p of a) assert.match(p.sessionId, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});
