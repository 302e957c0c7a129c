// Deterministic, physically plausible EV charging-session simulator.
//
// planRun() draws every session up front (faker for identities, a seeded
// mulberry32 for numbers; O(sessions) memory, no physics). simulateRun() then
// steps each session's physics lazily and merges all sessions in event-time
// order with a binary min-heap; sessions join the heap only when their start
// time comes up, so memory is bounded by the number of concurrent sessions.
// planRunSliced() and countRunMessages() do the same work in slices that yield to
// the event loop; the latter counts what a run would publish without building it.
//
// Physics per sample interval dt (zero-order hold: the power reported at a
// reading is applied until the next one):
//   vehicle limit  AC: acMaxKW, tapering linearly above 90 % SoC to 30 % at 100 %
//                  DC: min(dcMaxKW, dcCurve interpolated at the SoC)
//   power          max(MIN_CHARGE_KW, min(charger maxKW, vehicle limit) * ramp * jitter)
//                  ramp 0.35, 0.7, then 1 over the first Charging readings, jitter 0..-1.5 %
//   SoC            += power * dt * efficiency / usableKWh (the last step is cut at the target)
//   energyWh       += power * dt (grid side register)
import { createHash } from 'node:crypto';
import { Faker, base, en } from '@faker-js/faker';
import { FAULT_TYPES, clockMessage, quietMessage, readingMessage, type ChargingState, type EvMessage, type EvQuiet, type EvReading, type EvStreamItem, type FaultType, type OcppErrorCode, type StopReason } from '../../shared/contracts/ev.ts';
import type { Catalog, CatalogCharger, CatalogVehicle } from './ev-catalog.ts';

export interface SimOptions {
  runId: string;
  sessions: number;
  seed: number;
  sampleIntervalS: number;
  faultRate: number;
  startTime: Date;
  catalog: Catalog;
  /**
   * Send a quiet notice for each session after its last reading, and say so on every clock
   * (EvClock.announcesQuiet). Default true; false replays the stream of a run recorded before
   * notices existed, message for message (its resume position counts messages).
   */
  announceQuiet?: boolean;
}

/** Error codes a `charge.fault` session reports on its single `Faulted` reading. */
export const FAULT_ERROR_CODES = ['GroundFailure', 'OverCurrentFailure', 'HighTemperature', 'OverVoltage', 'PowerSwitchFailure'] as const satisfies readonly OcppErrorCode[];
export type FaultErrorCode = (typeof FAULT_ERROR_CODES)[number];

/** Power floor while charging, so a curve that reaches 0 kW at 100 % still gets there. */
export const MIN_CHARGE_KW = 1;
/** A stalled session reports less than this while `Charging`; healthy charging never does (>= MIN_CHARGE_KW). */
export const STALL_MAX_POWER_W = 50;
/** A stalled session stays flat at least this long (and at least STALL_MIN_SAMPLES readings). */
export const STALL_MIN_DURATION_S = 1200;
export const STALL_MIN_SAMPLES = 4;
/** Values of the single impossible reading of a `charge.invalid_reading` session. */
export const INVALID_SOC_PERCENT = 140;
export const INVALID_POWER_W = -5000;
/** Healthy readings stay below ~60 C; a HighTemperature fault reports 78-95 C. */
export const FAULT_TEMPERATURE_RANGE_C = [78, 95] as const;

/** Fault parameters, drawn for every session (only those of `plan.fault` are used). */
export interface FaultParams {
  /** Where in [startSoc, target] the fault fires (0.3-0.6); never before the 4th Charging reading. */
  atFraction: number;
  /** charge.fault */
  errorCode: FaultErrorCode;
  /** charge.fault with HighTemperature: temperatureC of the Faulted reading. */
  faultTemperatureC: number;
  /** charge.stalled: number of stalled Charging readings (>= 4 and spanning >= 20 min). */
  stallSamples: number;
  /** charge.stalled: reported power while stalled, 0-45 W. */
  stallPowerW: number;
  /** charge.soc_drop: points the reported SoC drops in one sample, 8-15. */
  socDropPoints: number;
  /** charge.over_limit: points above chargeLimitPercent where charging stops, 5-10. */
  overLimitPoints: number;
  /** charge.invalid_reading: which field is impossible (140 % or -5000 W). */
  invalidField: 'socPercent' | 'powerW';
}

export interface SessionPlan {
  /** Index of the session in the run (0-based). */
  index: number;
  sessionId: string;
  fault: FaultType | null;
  faultParams: FaultParams;
  vehicleIndex: number;
  vehicle: CatalogVehicle;
  vin: string;
  chargerIndex: number;
  charger: CatalogCharger;
  chargePointId: string;
  connectorId: number;
  location: string;
  owner: { name: string; email: string };
  /** True start SoC, 5-60 % (20-60 % for soc_drop sessions). */
  startSoc: number;
  /** Integer 80-100 (80-90 for over_limit sessions). */
  chargeLimitPercent: number;
  /** Epoch ms of the session's first (Preparing) reading. */
  startMs: number;
  /** Charger-to-battery efficiency, drawn from the catalog's AC/DC range. */
  efficiency: number;
  ambientC: number;
  /** Battery temperature at plug-in. */
  startTemperatureC: number;
  /** stopReason of a normal finish. */
  stopReason: 'EVDisconnected' | 'Local';
  /** Seed of the session's physics PRNG (jitter, voltage noise). */
  physicsSeed: number;
}

export type SimItem = EvStreamItem;

/** The item as published; a reading carries the time it was sent (`sentAt`). */
export function simItemMessage(item: SimItem, sentAt?: number): EvMessage {
  if (item.kind === 'reading') return readingMessage(item.reading, sentAt);
  return item.kind === 'clock' ? clockMessage(item.clock) : quietMessage(item.quiet);
}

/** Event time of the item (epoch ms). */
export function simItemTime(item: SimItem): number {
  return Date.parse(item.kind === 'reading' ? item.reading.timestamp : item.kind === 'clock' ? item.clock.timestamp : item.quiet.timestamp);
}

/** Small fast seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedWord(seed: number): number {
  const s = Math.trunc(seed);
  const lo = s >>> 0;
  const hi = Math.trunc(s / 4294967296) >>> 0;
  return (Math.imul(lo ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(hi + 0x27d4eb2f, 0xc2b2ae35)) >>> 0;
}

/** Piecewise-linear interpolation of [SoC, kW] points, clamped at both ends. */
export function interpolateCurve(curve: ReadonlyArray<readonly [number, number]>, soc: number): number {
  const first = curve[0];
  if (!first) return 0;
  if (soc <= first[0]) return first[1];
  for (let i = 1; i < curve.length; i++) {
    const b = curve[i]!;
    if (soc <= b[0]) {
      const a = curve[i - 1]!;
      const w = b[0] - a[0];
      return w <= 0 ? b[1] : a[1] + ((b[1] - a[1]) * (soc - a[0])) / w;
    }
  }
  return curve[curve.length - 1]![1];
}

/** What the vehicle accepts at a SoC (kW): AC on-board charger with taper above 90 %, or the DC curve. */
export function vehicleLimitKW(vehicle: CatalogVehicle, type: 'AC' | 'DC', soc: number): number {
  if (type === 'AC') {
    if (soc <= 90) return vehicle.acMaxKW;
    const over = Math.min(soc, 100) - 90;
    return vehicle.acMaxKW * (1 - (0.7 * over) / 10);
  }
  return Math.min(vehicle.dcMaxKW, interpolateCurve(vehicle.dcCurve, soc));
}

/** Upper bound of the power (kW) a session may report at a SoC: the floor or min(charger, vehicle). */
export function maxPowerKW(vehicle: CatalogVehicle, charger: CatalogCharger, soc: number): number {
  return Math.max(MIN_CHARGE_KW, Math.min(charger.maxKW, vehicleLimitKW(vehicle, charger.type, soc)));
}

function checkOptions(opts: SimOptions): void {
  if (!opts.runId) throw new RangeError('runId must not be empty');
  if (!Number.isInteger(opts.sessions) || opts.sessions < 0) throw new RangeError(`sessions must be a non-negative integer, got ${opts.sessions}`);
  if (!Number.isFinite(opts.seed)) throw new RangeError(`seed must be a finite number, got ${opts.seed}`);
  if (!(opts.sampleIntervalS > 0) || Math.round(opts.sampleIntervalS * 1000) < 1) throw new RangeError(`sampleIntervalS must be >= 0.001, got ${opts.sampleIntervalS}`);
  if (!(opts.faultRate >= 0 && opts.faultRate <= 1)) throw new RangeError(`faultRate must be within 0..1, got ${opts.faultRate}`);
  if (!Number.isFinite(opts.startTime.getTime())) throw new RangeError('startTime is not a valid date');
}

/** Number of stalled readings for an interval: >= 4 and spanning >= 20 minutes, plus 0-2 extra. */
export function stallSamplesFor(sampleIntervalS: number, extra: number): number {
  return Math.max(STALL_MIN_SAMPLES, Math.ceil(STALL_MIN_DURATION_S / sampleIntervalS) + 1) + extra;
}

/** Draws every session of a run (cheap: no physics). The truth is `plans.filter(p => p.fault)`. */
export function planRun(opts: SimOptions): SessionPlan[] {
  checkOptions(opts);
  const plans: SessionPlan[] = new Array(opts.sessions);
  let i = 0;
  for (const plan of planSessions(opts, true)) plans[i++] = plan;
  return plans;
}

/** Hands control back to the event loop (between slices of a long computation). */
export type Pause = () => Promise<void>;
const nextTurn: Pause = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * planRun() in slices of `sliceSize` sessions with a `pause()` between them, so planning
 * 100,000 sessions (seconds of faker) never blocks the event loop. Same plans as planRun().
 */
export async function planRunSliced(opts: SimOptions, options: { sliceSize?: number; pause?: Pause } = {}): Promise<SessionPlan[]> {
  checkOptions(opts);
  const sliceSize = Math.max(1, options.sliceSize ?? 250);
  const pause = options.pause ?? nextTurn;
  const plans: SessionPlan[] = new Array(opts.sessions);
  let i = 0;
  for (const plan of planSessions(opts, true)) {
    plans[i++] = plan;
    if (i % sliceSize === 0 && i < opts.sessions) await pause();
  }
  return plans;
}

const NO_OWNER = Object.freeze({ name: '', email: '' });

/**
 * The sessions of a run, one at a time, in plan order. Without `identities`, only the
 * numbers are drawn (the faker fields stay empty): what counting needs, at a fraction of
 * the cost. The numbers do not depend on faker, so they are the same either way.
 */
function* planSessions(opts: SimOptions, identities: boolean): Generator<SessionPlan> {
  const { catalog } = opts;
  const faker = new Faker({ locale: [en, base] });
  faker.seed(opts.seed);
  const rng = mulberry32(seedWord(opts.seed));

  const shareTotal = catalog.chargers.reduce((s, c) => s + c.share, 0);
  const windowS = Math.max(600, opts.sessions * 2);
  const startMs0 = opts.startTime.getTime();

  for (let i = 0; i < opts.sessions; i++) {
    // Numbers: a fixed number of draws per session, whatever the fault rate.
    const vehicleIndex = Math.min(catalog.vehicles.length - 1, Math.floor(rng() * catalog.vehicles.length));
    let pick = rng() * shareTotal;
    let chargerIndex = catalog.chargers.length - 1;
    for (let c = 0; c < catalog.chargers.length; c++) {
      pick -= catalog.chargers[c]!.share;
      if (pick < 0) { chargerIndex = c; break; }
    }
    const offsetS = Math.floor(rng() * windowS);
    const faultRoll = rng();
    const faultPick = rng();
    const fault: FaultType | null = faultRoll < opts.faultRate ? FAULT_TYPES[Math.min(FAULT_TYPES.length - 1, Math.floor(faultPick * FAULT_TYPES.length))]! : null;
    const socRoll = rng();
    const startSoc = fault === 'charge.soc_drop' ? 20 + socRoll * 40 : 5 + socRoll * 55;
    const limitRoll = rng();
    const chargeLimitPercent = fault === 'charge.over_limit' ? 80 + Math.floor(limitRoll * 11) : 80 + Math.floor(limitRoll * 21);
    const vehicle = catalog.vehicles[vehicleIndex]!;
    const charger = catalog.chargers[chargerIndex]!;
    const [effLo, effHi] = charger.type === 'AC' ? catalog.efficiency.ac : catalog.efficiency.dc;
    const efficiency = effLo + rng() * (effHi - effLo);
    const ambientC = -5 + rng() * 37;
    const startTemperatureC = ambientC + rng() * 6;
    const connectorId = 1 + Math.floor(rng() * 2);
    const stopReason = rng() < 0.7 ? 'EVDisconnected' : 'Local';
    const physicsSeed = Math.floor(rng() * 4294967296);
    const faultParams: FaultParams = {
      atFraction: 0.3 + rng() * 0.3,
      errorCode: FAULT_ERROR_CODES[Math.min(FAULT_ERROR_CODES.length - 1, Math.floor(rng() * FAULT_ERROR_CODES.length))]!,
      faultTemperatureC: Math.round((FAULT_TEMPERATURE_RANGE_C[0] + rng() * (FAULT_TEMPERATURE_RANGE_C[1] - FAULT_TEMPERATURE_RANGE_C[0])) * 10) / 10,
      stallSamples: stallSamplesFor(opts.sampleIntervalS, Math.floor(rng() * 3)),
      stallPowerW: Math.floor(rng() * 46),
      socDropPoints: 8 + Math.floor(rng() * 8),
      overLimitPoints: 5 + Math.floor(rng() * 6),
      invalidField: rng() < 0.5 ? 'socPercent' : 'powerW',
    };

    const numbers = {
      index: i, fault, faultParams, vehicleIndex, vehicle, chargerIndex, charger, connectorId, startSoc, chargeLimitPercent,
      startMs: startMs0 + offsetS * 1000, efficiency, ambientC, startTemperatureC, stopReason, physicsSeed,
    } as const;
    if (!identities) {
      yield { ...numbers, sessionId: '', vin: '', chargePointId: '', location: '', owner: NO_OWNER };
      continue;
    }

    // Identities: faker (seeded once per run).
    // Scoped to the run: two runs with the same seed simulate the same sessions under
    // different ids, so their rows, states and events never collide.
    const sessionId = runScopedUuid(opts.runId, faker.string.uuid());
    const chargePointId = `CP-${faker.string.alphanumeric({ length: 8, casing: 'upper' })}`;
    const vin = faker.vehicle.vin();
    const location = `${faker.location.buildingNumber()} ${faker.location.street()}, ${faker.location.city()}`;
    const firstName = faker.person.firstName();
    const lastName = faker.person.lastName();
    const owner = { name: `${firstName} ${lastName}`, email: faker.internet.email({ firstName, lastName }) };

    yield {
      index: i, sessionId, fault, faultParams, vehicleIndex, vehicle, vin, chargerIndex, charger,
      chargePointId, connectorId, location, owner, startSoc, chargeLimitPercent,
      startMs: numbers.startMs, efficiency, ambientC, startTemperatureC, stopReason, physicsSeed,
    };
  }
}

// Session modes.
const PREPARING = 0;
const CHARGING = 1;
const STALLED = 2;
const FAULTED = 3;
const DONE = 4;

const TEMP_TAU_S = 900;
const SQRT3 = Math.sqrt(3);

const round1 = (x: number) => Math.round(x * 10) / 10;

/**
 * One session's physics. `pending` is the next reading (at `pendingMs`) or
 * null when the session has no more readings; `advance()` computes the next.
 */
class SessionSim {
  readonly order: number;
  pending: EvReading | null = null;
  pendingMs: number;

  private readonly plan: SessionPlan;
  private readonly runId: string;
  private readonly dtS: number;
  private readonly dtMs: number;
  private readonly msgPrefix: string;
  private readonly vehicleOut: EvReading['vehicle'];
  private readonly ownerOut: EvReading['owner'];
  private readonly chargerOut: EvReading['charger'];
  private readonly rng: () => number;
  /** SoC % gained per kW held for one interval. */
  private readonly socPerKW: number;
  /** Wh per kW held for one interval. */
  private readonly whPerKW: number;
  private readonly target: number;
  private readonly triggerSoc: number;
  private readonly capKW: number;
  private readonly tempAlpha: number;
  private readonly tempRisePerKW: number;

  private seq = 0;
  private mode = PREPARING;
  private soc: number;
  /** True SoC of the previous reading. */
  private prevSoc: number;
  private energyWh = 0;
  private tempC: number;
  /** Power held over the interval after the last reading. */
  private heldKW = 0;
  private chargingCount = 0;
  private faultPending: boolean;
  private stallLeft = 0;
  /** Counting only: the one object every reading is "built" into (the PRNG draws still happen, in the same order). */
  private readonly scratch: EvReading | null;

  constructor(plan: SessionPlan, order: number, runId: string, sampleIntervalS: number, counting = false) {
    this.scratch = counting ? ({} as EvReading) : null;
    this.plan = plan;
    this.order = order;
    this.runId = runId;
    this.dtS = sampleIntervalS;
    this.dtMs = Math.round(sampleIntervalS * 1000);
    this.pendingMs = plan.startMs;
    this.msgPrefix = `${runId}:${plan.sessionId}:`;
    this.vehicleOut = Object.freeze({ make: plan.vehicle.make, model: plan.vehicle.model, batteryKWh: plan.vehicle.usableKWh, vin: plan.vin });
    this.ownerOut = Object.freeze({ name: plan.owner.name, email: plan.owner.email });
    this.chargerOut = Object.freeze({ type: plan.charger.type, maxKW: plan.charger.maxKW });
    this.rng = mulberry32(plan.physicsSeed);
    this.socPerKW = (sampleIntervalS * plan.efficiency) / (36 * plan.vehicle.usableKWh);
    this.whPerKW = sampleIntervalS / 3.6;
    this.soc = plan.startSoc;
    this.prevSoc = plan.startSoc;
    this.tempC = plan.startTemperatureC;
    this.tempAlpha = 1 - Math.exp(-sampleIntervalS / TEMP_TAU_S);
    this.tempRisePerKW = plan.charger.type === 'DC' ? 0.075 : 0.25;
    const fault = plan.fault;
    this.target = fault === 'charge.over_limit'
      ? Math.min(100, plan.chargeLimitPercent + plan.faultParams.overLimitPoints)
      : plan.chargeLimitPercent;
    this.faultPending = fault !== null && fault !== 'charge.over_limit';
    this.triggerSoc = plan.startSoc + plan.faultParams.atFraction * (this.target - plan.startSoc);
    // A faulted session needs >= 8 intervals to reach its target, so the fault
    // always fires mid-charge, even at very long sample intervals.
    this.capKW = fault === null ? Infinity : (this.target - plan.startSoc) / 8 / this.socPerKW;
    this.pending = this.next();
  }

  advance(): void {
    this.pendingMs += this.dtMs;
    this.pending = this.next();
  }

  /** Applies the held power over the last interval; returns true when the target was reached. */
  private integrate(chargeSoc: boolean): boolean {
    const kw = this.heldKW;
    this.tempC += (this.plan.ambientC + this.tempRisePerKW * kw - this.tempC) * this.tempAlpha;
    if (kw <= 0) return false;
    if (!chargeSoc) {
      this.energyWh += kw * this.whPerKW;
      return false;
    }
    const gain = kw * this.socPerKW;
    if (this.soc + gain >= this.target) {
      this.energyWh += kw * this.whPerKW * ((this.target - this.soc) / gain);
      this.soc = this.target;
      return true;
    }
    this.soc += gain;
    this.energyWh += kw * this.whPerKW;
    return false;
  }

  private powerAt(soc: number): number {
    const ramp = this.chargingCount === 0 ? 0.35 : this.chargingCount === 1 ? 0.7 : 1;
    const limit = Math.min(this.plan.charger.maxKW, vehicleLimitKW(this.plan.vehicle, this.plan.charger.type, soc));
    const kw = Math.max(MIN_CHARGE_KW, limit * ramp * (1 - 0.015 * this.rng()));
    return Math.min(kw, this.capKW);
  }

  private next(): EvReading | null {
    const plan = this.plan;
    let r: EvReading | null;
    switch (this.mode) {
      case PREPARING:
        r = this.reading('Preparing', 0, undefined);
        this.mode = CHARGING;
        break;
      case CHARGING: {
        if (this.integrate(true)) {
          r = this.reading('Finishing', 0, plan.stopReason);
          this.mode = DONE;
          break;
        }
        let kw = this.powerAt(this.soc);
        if (this.faultPending && this.chargingCount >= 3 && (this.soc >= this.triggerSoc || this.soc + kw * this.socPerKW >= this.target)) {
          this.faultPending = false;
          r = this.fault(kw);
          break;
        }
        r = this.reading('Charging', kw, undefined);
        this.heldKW = kw;
        this.chargingCount++;
        break;
      }
      case STALLED:
        this.integrate(false);
        if (this.stallLeft > 0) {
          this.stallLeft--;
          r = this.reading('Charging', plan.faultParams.stallPowerW / 1000, undefined);
        } else {
          r = this.reading('Finishing', 0, 'Local');
          this.mode = DONE;
        }
        break;
      case FAULTED:
        this.integrate(true);
        r = this.reading('Finishing', 0, 'Other');
        this.mode = DONE;
        break;
      default:
        return null;
    }
    this.prevSoc = this.soc;
    this.seq++;
    return r;
  }

  /** The reading at which the planned fault fires (null: the session goes offline). */
  private fault(kw: number): EvReading | null {
    const p = this.plan.faultParams;
    switch (this.plan.fault) {
      case 'charge.fault': {
        const r = this.reading('Faulted', 0, undefined);
        r.errorCode = p.errorCode;
        if (p.errorCode === 'HighTemperature') r.temperatureC = p.faultTemperatureC;
        this.heldKW = 0;
        this.mode = FAULTED;
        return r;
      }
      case 'charge.stalled': {
        this.heldKW = p.stallPowerW / 1000;
        this.stallLeft = p.stallSamples - 1;
        this.mode = STALLED;
        return this.reading('Charging', this.heldKW, undefined);
      }
      case 'charge.soc_drop': {
        // BMS recalibration: the SoC falls by socDropPoints relative to the previous reading.
        this.soc = Math.max(0, this.prevSoc - p.socDropPoints);
        const dropKW = this.powerAt(this.soc);
        this.heldKW = dropKW;
        this.chargingCount++;
        return this.reading('Charging', dropKW, undefined);
      }
      case 'charge.offline':
        this.mode = DONE;
        return null;
      case 'charge.invalid_reading': {
        const r = this.reading('Charging', kw, undefined);
        if (p.invalidField === 'socPercent') {
          r.socPercent = INVALID_SOC_PERCENT;
        } else {
          r.powerW = INVALID_POWER_W;
          r.currentA = this.current(INVALID_POWER_W / 1000, r.voltageV);
        }
        this.heldKW = kw;
        this.chargingCount++;
        return r;
      }
      default: {
        const r = this.reading('Charging', kw, undefined);
        this.heldKW = kw;
        this.chargingCount++;
        return r;
      }
    }
  }

  private current(kw: number, voltageV: number): number {
    const v = this.plan.charger.type === 'AC' && this.plan.charger.phases === 3 ? voltageV * SQRT3 : voltageV;
    return v > 0 ? round1((kw * 1000) / v) : 0;
  }

  private voltage(kw: number): number {
    const c = this.plan.charger;
    if (c.type === 'AC') return round1(c.voltageV * (1 + (this.rng() - 0.5) * 0.02));
    // DC: pack voltage rising with SoC, plus a little IR rise under load.
    const high = c.voltageV >= 700;
    const baseV = high ? 700 : 350;
    const span = high ? 100 : 50;
    return round1(baseV + (span * Math.min(this.soc, 100)) / 100 + (kw / c.maxKW) * (high ? 10 : 5));
  }

  private reading(state: ChargingState, kw: number, stopReason: StopReason | undefined): EvReading {
    const plan = this.plan;
    const voltageV = this.voltage(kw);
    if (this.scratch) return this.scratch;
    const r: EvReading = {
      messageId: this.msgPrefix + this.seq,
      runId: this.runId,
      sessionId: plan.sessionId,
      seq: this.seq,
      timestamp: new Date(this.pendingMs).toISOString(),
      sampleIntervalS: this.dtS,
      chargePointId: plan.chargePointId,
      connectorId: plan.connectorId,
      location: plan.location,
      vehicle: this.vehicleOut,
      owner: this.ownerOut,
      charger: this.chargerOut,
      chargingState: state,
      socPercent: Math.floor(this.soc),
      chargeLimitPercent: plan.chargeLimitPercent,
      powerW: Math.round(kw * 1000),
      energyWh: Math.round(this.energyWh),
      currentA: this.current(kw, voltageV),
      voltageV,
      temperatureC: round1(this.tempC),
      errorCode: 'NoError',
    };
    if (stopReason !== undefined) r.stopReason = stopReason;
    return r;
  }
}

/**
 * The readings of one session, on its own (no clocks). Handy for tests and for
 * replaying a single plan; `simulateRun` yields the same readings merged.
 */
export function* sessionReadings(plan: SessionPlan, opts: Pick<SimOptions, 'runId' | 'sampleIntervalS'>): Generator<EvReading> {
  const sim = new SessionSim(plan, 0, opts.runId, opts.sampleIntervalS);
  while (sim.pending) {
    yield sim.pending;
    sim.advance();
  }
}

/** How many readings `plan` produces: the same physics as sessionReadings(), without building them. */
export function sessionReadingCount(plan: SessionPlan, sampleIntervalS: number): number {
  const sim = new SessionSim(plan, 0, 'count', sampleIntervalS, true);
  let n = 0;
  while (sim.pending) {
    n++;
    sim.advance();
  }
  return n;
}

export interface RunCount {
  /** Messages the run publishes: readings, clock ticks and quiet notices (an estimate when `exact` is false). */
  messages: number;
  readings: number;
  clocks: number;
  /** One per session, when the run announces quiet sessions. */
  quiet: number;
  /** Sessions whose readings were counted (all of them when `exact`). */
  sessionsCounted: number;
  /** False when counting stopped early because the run passed `limit`: the figures are extrapolated. */
  exact: boolean;
}

/**
 * The number of messages simulateRun() yields for `opts`, counted from the plans (their
 * numbers only) and each session's physics, in slices with a `pause()` between them. Exact,
 * unless the count passes `limit`: then it stops there and extrapolates from the sessions
 * counted so far (plan order is random in time and kind, so they are a fair sample).
 */
export async function countRunMessages(opts: SimOptions, options: { limit?: number; pause?: Pause; stepsPerSlice?: number } = {}): Promise<RunCount> {
  checkOptions(opts);
  const limit = options.limit ?? Infinity;
  const pause = options.pause ?? nextTurn;
  const stepsPerSlice = options.stepsPerSlice ?? 100_000;
  const dtMs = Math.round(opts.sampleIntervalS * 1000);
  let readings = 0;
  let counted = 0;
  let firstMs = Infinity;
  let lastMs = -Infinity;
  let longestMs = 0;
  let steps = 0;
  // simulateRun: a clock every dtMs from the first reading up to the last one, plus a final clock.
  const clocksOf = (first: number, last: number) => (Number.isFinite(first) ? Math.floor((last - first) / dtMs) + 2 : 1);
  const quietOf = (sessions: number) => (opts.announceQuiet === false ? 0 : sessions);
  for (const plan of planSessions(opts, false)) {
    const n = sessionReadingCount(plan, opts.sampleIntervalS); // >= 1: a session always starts with Preparing
    readings += n;
    counted++;
    firstMs = Math.min(firstMs, plan.startMs);
    lastMs = Math.max(lastMs, plan.startMs + (n - 1) * dtMs);
    longestMs = Math.max(longestMs, (n - 1) * dtMs);
    if (readings + clocksOf(firstMs, lastMs) + quietOf(counted) > limit && counted < opts.sessions) {
      // Past the limit: estimate the rest. Sessions start within max(600, 2 x sessions) seconds.
      const estReadings = Math.round((readings / counted) * opts.sessions);
      const windowMs = (Math.max(600, opts.sessions * 2) - 1) * 1000;
      const estClocks = Math.max(clocksOf(firstMs, lastMs), Math.floor((windowMs + longestMs) / dtMs) + 2);
      const quiet = quietOf(opts.sessions);
      return { messages: estReadings + estClocks + quiet, readings: estReadings, clocks: estClocks, quiet, sessionsCounted: counted, exact: false };
    }
    steps += n + 20; // + the planning of the session
    if (steps >= stepsPerSlice && counted < opts.sessions) {
      steps = 0;
      await pause();
    }
  }
  const clocks = clocksOf(firstMs, lastMs);
  const quiet = quietOf(counted);
  return { messages: readings + clocks + quiet, readings, clocks, quiet, sessionsCounted: counted, exact: true };
}

const before = (a: SessionSim, b: SessionSim) => a.pendingMs < b.pendingMs || (a.pendingMs === b.pendingMs && a.order < b.order);

function siftUp(heap: SessionSim[], i: number): void {
  const item = heap[i]!;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const p = heap[parent]!;
    if (!before(item, p)) break;
    heap[i] = p;
    i = parent;
  }
  heap[i] = item;
}

function siftDown(heap: SessionSim[], i: number): void {
  const n = heap.length;
  const item = heap[i]!;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    let c = l;
    if (r < n && before(heap[r]!, heap[l]!)) c = r;
    const child = heap[c]!;
    if (!before(child, item)) break;
    heap[i] = child;
    i = c;
  }
  heap[i] = item;
}

/**
 * All readings of a run merged in event-time order (ties: plan order), with a
 * clock every sampleIntervalS from the first reading (a clock at T follows
 * every reading at <= T) and a final clock at last reading + 4 intervals.
 * With `announceQuiet` (the default), each session's quiet notice comes when
 * its next reading would have been due (last reading + 1 interval), before the
 * clock of that time; the rest come before the final clock.
 * Pass `plans` from `planRun(opts)` to avoid planning twice.
 */
export function* simulateRun(opts: SimOptions, plans?: SessionPlan[]): Generator<SimItem> {
  checkOptions(opts);
  const all = plans ?? planRun(opts);
  const dtMs = Math.round(opts.sampleIntervalS * 1000);
  const { runId } = opts;
  const order = Array.from(all.keys()).sort((a, b) => all[a]!.startMs - all[b]!.startMs || a - b);
  const heap: SessionSim[] = [];
  let next = 0;
  let clockMs = NaN;
  let lastMs = NaN;
  const announce = opts.announceQuiet !== false;
  const clock = (ms: number, final: boolean): SimItem => ({
    kind: 'clock',
    clock: announce ? { runId, timestamp: new Date(ms).toISOString(), final, announcesQuiet: true } : { runId, timestamp: new Date(ms).toISOString(), final },
  });
  // Sessions whose last reading went out, in the order they ended (so by due time).
  const quiet: EvQuiet[] = [];
  let quietNext = 0;
  const dueQuiet = function* (uptoMs: number): Generator<SimItem> {
    while (quietNext < quiet.length && Date.parse(quiet[quietNext]!.timestamp) <= uptoMs) yield { kind: 'quiet', quiet: quiet[quietNext++]! };
  };

  for (;;) {
    // Start the sessions whose first reading comes before the heap's next one.
    while (next < order.length) {
      const idx = order[next]!;
      const plan = all[idx]!;
      const top = heap[0];
      if (top && !(plan.startMs < top.pendingMs || (plan.startMs === top.pendingMs && idx < top.order))) break;
      next++;
      const sim = new SessionSim(plan, idx, runId, opts.sampleIntervalS);
      if (sim.pending) {
        heap.push(sim);
        siftUp(heap, heap.length - 1);
      }
    }
    const top = heap[0];
    if (!top) break;
    const reading = top.pending!;
    const t = top.pendingMs;
    if (Number.isNaN(clockMs)) clockMs = t;
    while (clockMs < t) {
      yield* dueQuiet(clockMs);
      yield clock(clockMs, false);
      clockMs += dtMs;
    }
    yield { kind: 'reading', reading };
    lastMs = t;
    top.advance();
    if (!top.pending && announce) quiet.push({ runId, sessionId: reading.sessionId, lastSeq: reading.seq, timestamp: new Date(t + dtMs).toISOString() });
    if (top.pending) {
      siftDown(heap, 0);
    } else {
      const last = heap.pop()!;
      if (heap.length > 0) {
        heap[0] = last;
        siftDown(heap, 0);
      }
    }
  }

  if (Number.isNaN(lastMs)) {
    yield clock(opts.startTime.getTime(), true);
    return;
  }
  while (clockMs <= lastMs) {
    yield* dueQuiet(clockMs);
    yield clock(clockMs, false);
    clockMs += dtMs;
  }
  yield* dueQuiet(Infinity);
  yield clock(lastMs + 4 * dtMs, true);
}

/** A UUID (version 5 layout) from the run id and a seeded one: deterministic, unique per run. */
export function runScopedUuid(runId: string, seeded: string): string {
  const h = createHash('sha256').update(`${runId}:${seeded}`).digest('hex');
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
