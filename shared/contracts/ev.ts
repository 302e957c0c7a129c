// Messages of the EV charging pipeline. These schemas are the only way the
// simulator (trigger), ev-analytics, ev-store and notify-email know each other.
import { z } from 'zod';

/** OCPP 1.6 ChargePointErrorCode. */
export const OCPP_ERROR_CODES = [
  'NoError', 'ConnectorLockFailure', 'EVCommunicationError', 'GroundFailure', 'HighTemperature',
  'InternalError', 'LocalListConflict', 'OtherError', 'OverCurrentFailure', 'OverVoltage',
  'PowerMeterFailure', 'PowerSwitchFailure', 'ReaderFailure', 'ResetFailure', 'UnderVoltage',
  'WeakSignal',
] as const;
export const OcppErrorCodeSchema = z.enum(OCPP_ERROR_CODES);
export type OcppErrorCode = z.infer<typeof OcppErrorCodeSchema>;

/** OCPP 1.6 ChargePointStatus values a connector reports during a session. */
export const ChargingStateSchema = z.enum(['Preparing', 'Charging', 'SuspendedEV', 'SuspendedEVSE', 'Finishing', 'Faulted']);
export type ChargingState = z.infer<typeof ChargingStateSchema>;

/** OCPP 1.6 StopTransaction reasons. */
export const StopReasonSchema = z.enum([
  'EmergencyStop', 'EVDisconnected', 'HardReset', 'Local', 'Other', 'PowerLoss', 'Reboot', 'Remote',
  'SoftReset', 'UnlockCommand', 'DeAuthorized',
]);
export type StopReason = z.infer<typeof StopReasonSchema>;

export const VehicleSchema = z.object({
  make: z.string().min(1),
  model: z.string().min(1),
  batteryKWh: z.number().positive(),
  vin: z.string().length(17),
});
export const OwnerSchema = z.object({ name: z.string().min(1), email: z.email() });
export const ChargerSchema = z.object({ type: z.enum(['AC', 'DC']), maxKW: z.number().positive() });

/**
 * One telemetry reading. The schema checks structure only: values that are
 * physically impossible (SoC 140 %, negative power) pass here on purpose, so
 * that ev-analytics can report them as `charge.invalid_reading` events; see
 * `readingProblems` for the value checks.
 */
export const EvReadingSchema = z.object({
  messageId: z.string().min(1),
  runId: z.string().min(1),
  sessionId: z.string().min(1),
  seq: z.number().int().nonnegative(),
  timestamp: z.iso.datetime({ offset: true }),
  sampleIntervalS: z.number().positive(),
  chargePointId: z.string().min(1),
  connectorId: z.number().int().positive(),
  location: z.string().optional(),
  vehicle: VehicleSchema,
  owner: OwnerSchema,
  charger: ChargerSchema,
  chargingState: ChargingStateSchema,
  socPercent: z.number(),
  chargeLimitPercent: z.number(),
  powerW: z.number(),
  energyWh: z.number(),
  currentA: z.number(),
  voltageV: z.number(),
  temperatureC: z.number(),
  errorCode: OcppErrorCodeSchema,
  /** Only on the final reading of a session (state Finishing). */
  stopReason: StopReasonSchema.optional(),
});
export type EvReading = z.infer<typeof EvReadingSchema>;

/** Value checks the schema leaves out; an empty list means the reading is plausible. */
export function readingProblems(r: EvReading): string[] {
  const problems: string[] = [];
  if (!(r.socPercent >= 0 && r.socPercent <= 100)) problems.push(`socPercent ${r.socPercent} outside 0..100`);
  if (!(r.chargeLimitPercent > 0 && r.chargeLimitPercent <= 100)) problems.push(`chargeLimitPercent ${r.chargeLimitPercent} outside 1..100`);
  if (r.powerW < 0) problems.push(`powerW ${r.powerW} is negative`);
  if (r.energyWh < 0) problems.push(`energyWh ${r.energyWh} is negative`);
  if (r.currentA < 0) problems.push(`currentA ${r.currentA} is negative`);
  if (r.voltageV < 0) problems.push(`voltageV ${r.voltageV} is negative`);
  if (r.temperatureC < -60 || r.temperatureC > 150) problems.push(`temperatureC ${r.temperatureC} outside -60..150`);
  return problems;
}

/**
 * The simulated clock of a run, broadcast to every analytics partition every
 * sample interval and once more, with `final: true`, after the last reading.
 * It lets the analytics advance its event-time watermark even for partitions
 * that get no readings, so an offline charger is detected in event time.
 */
export const EvClockSchema = z.object({
  runId: z.string().min(1),
  timestamp: z.iso.datetime({ offset: true }),
  final: z.boolean(),
});
export type EvClock = z.infer<typeof EvClockSchema>;

export const EV_EVENT_TYPES = [
  'charge.started', 'charge.completed', 'charge.fault', 'charge.stalled', 'charge.soc_drop',
  'charge.over_limit', 'charge.offline', 'charge.invalid_reading',
] as const;
export const EvEventTypeSchema = z.enum(EV_EVENT_TYPES);
export type EvEventType = z.infer<typeof EvEventTypeSchema>;
/** The event types that stand for an anomaly (what `ev_sim_truth.fault` may hold). */
export const FAULT_TYPES = [
  'charge.fault', 'charge.stalled', 'charge.soc_drop', 'charge.over_limit', 'charge.offline', 'charge.invalid_reading',
] as const satisfies readonly EvEventType[];
export type FaultType = (typeof FAULT_TYPES)[number];

export const SeveritySchema = z.enum(['info', 'warning', 'critical']);
export type Severity = z.infer<typeof SeveritySchema>;

/** How bad each event is: what the analytics stamps on it and the email rules can rely on. */
export const EVENT_SEVERITY: Record<EvEventType, Severity> = {
  'charge.started': 'info',
  'charge.completed': 'info',
  'charge.fault': 'critical',
  'charge.stalled': 'warning',
  'charge.soc_drop': 'warning',
  'charge.over_limit': 'warning',
  'charge.offline': 'critical',
  'charge.invalid_reading': 'warning',
};

export const EvEventSchema = z.object({
  /** Deterministic: reprocessing the same readings yields the same id. */
  eventId: z.string().min(1),
  type: EvEventTypeSchema,
  severity: SeveritySchema,
  runId: z.string().min(1),
  sessionId: z.string().min(1),
  /** Event time: the timestamp of the reading (or clock) that raised it. */
  ts: z.iso.datetime({ offset: true }),
  seq: z.number().int().nonnegative().nullable(),
  chargePointId: z.string().min(1),
  location: z.string().optional(),
  vehicle: VehicleSchema,
  owner: OwnerSchema,
  charger: ChargerSchema,
  socPercent: z.number().nullable(),
  chargeLimitPercent: z.number().nullable(),
  energyWh: z.number().nullable(),
  summary: z.string().min(1),
  details: z.record(z.string(), z.unknown()),
});
export type EvEvent = z.infer<typeof EvEventSchema>;

export const EV_EXCHANGE = 'ev';
export const readingRoutingKey = (make: string) => `ev.reading.${make.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
export const eventRoutingKey = (type: EvEventType) => `ev.event.${type.slice('charge.'.length)}`;
export const CLOCK_ROUTING_KEY = 'ev.clock';
