// Messages of the EV charging pipeline. These schemas are the only way the
// simulator (trigger), ev-analytics, ev-store and notify-email know each other.
import { z } from 'zod';
import type { Contract } from '../amqp/consumer.ts';
import type { PublishOptions } from '../amqp/publisher.ts';
import { encodeJson, jsonContract } from './json.ts';
import { CLOCK_ROUTING_KEY, EV_EXCHANGE, EV_PARTITION_HEADER, MESSAGE_TYPES, QUIET_ROUTING_KEY, eventRoutingKey as eventKeyOf, jsonMessageOptions, readingRoutingKey } from './names.ts';

export {
  CLOCK_ROUTING_KEY, EVENTS_BINDING, EVENT_ROUTING_PREFIX, EV_EXCHANGE, EV_PARTITION_EXCHANGE, EV_PARTITION_HEADER,
  QUIET_ROUTING_KEY, READINGS_BINDING, READING_ROUTING_PREFIX, readingRoutingKey,
} from './names.ts';

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
  /**
   * The run's source sends a quiet notice (EvQuiet) for every session once it has sent that
   * session's last reading. The analytics then judge a session offline only once its notice and
   * the reading it names have arrived, so a late reading (a retry, a redelivery) never looks like
   * silence. Absent (a source without notices): silence on the clock alone is enough.
   */
  announcesQuiet: z.boolean().optional(),
});
export type EvClock = z.infer<typeof EvClockSchema>;

/**
 * The source's notice that a session went quiet: it has sent the readings 0..lastSeq of the
 * session and no more (the session finished, faulted or its charger went silent). Published
 * when the next reading would have been due (`timestamp`, event time) and partitioned like the
 * session's readings. The notice states a fact about the source, not a verdict: whether the
 * charger is offline is still judged on the run's clock.
 */
export const EvQuietSchema = z.object({
  runId: z.string().min(1),
  sessionId: z.string().min(1),
  lastSeq: z.number().int().nonnegative(),
  timestamp: z.iso.datetime({ offset: true }),
});
export type EvQuiet = z.infer<typeof EvQuietSchema>;

/** One message of a run's EV stream, decoded: what the simulator yields, and what an analytics partition receives. */
export type EvStreamItem = { kind: 'reading'; reading: EvReading } | { kind: 'clock'; clock: EvClock } | { kind: 'quiet'; quiet: EvQuiet };

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

/** ev.event.<type without `charge.`>. */
export const eventRoutingKey = (type: EvEventType) => eventKeyOf(type);

export const evReadingContract: Contract<EvReading> = jsonContract(MESSAGE_TYPES.evReading, EvReadingSchema);
export const evClockContract: Contract<EvClock> = jsonContract(MESSAGE_TYPES.evClock, EvClockSchema);
export const evQuietContract: Contract<EvQuiet> = jsonContract(MESSAGE_TYPES.evQuiet, EvQuietSchema);
export const evEventContract: Contract<EvEvent> = jsonContract(MESSAGE_TYPES.evEvent, EvEventSchema);

/** An EV message as published: exchange, routing key, body and options. */
export interface EvMessage {
  exchange: string;
  routingKey: string;
  content: Buffer;
  options: PublishOptions;
}

/** A reading (the trigger's simulator); `sentAt` in milliseconds, which ev-store keeps to measure end-to-end lag. */
export function readingMessage(r: EvReading, sentAt = Date.now()): EvMessage {
  return {
    exchange: EV_EXCHANGE,
    routingKey: readingRoutingKey(r.vehicle.make),
    content: encodeJson(r),
    options: {
      ...jsonMessageOptions(MESSAGE_TYPES.evReading, r.messageId),
      // Milliseconds (not the spec's seconds).
      timestamp: sentAt,
      // The consistent-hash exchange partitions readings on this header.
      headers: { [EV_PARTITION_HEADER]: r.sessionId },
    },
  };
}

/** A tick of a run's simulated clock (the trigger's simulator). */
export function clockMessage(c: EvClock): EvMessage {
  return { exchange: EV_EXCHANGE, routingKey: CLOCK_ROUTING_KEY, content: encodeJson(c), options: jsonMessageOptions(MESSAGE_TYPES.evClock, `${c.runId}:clock:${c.timestamp}`) };
}

/** A session's quiet notice (the trigger's simulator), routed to the partition of the session's readings. */
export function quietMessage(q: EvQuiet): EvMessage {
  return {
    exchange: EV_EXCHANGE,
    routingKey: QUIET_ROUTING_KEY,
    content: encodeJson(q),
    options: { ...jsonMessageOptions(MESSAGE_TYPES.evQuiet, `${q.runId}:quiet:${q.sessionId}`), headers: { [EV_PARTITION_HEADER]: q.sessionId } },
  };
}

/** An event (ev-analytics); its id is deterministic, so a republished event carries the same one. */
export function eventMessage(e: EvEvent): EvMessage {
  return { exchange: EV_EXCHANGE, routingKey: eventRoutingKey(e.type), content: encodeJson(e), options: jsonMessageOptions(MESSAGE_TYPES.evEvent, e.eventId) };
}
