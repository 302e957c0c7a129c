import type { Pool } from '../../shared/db/pool.ts';
import type { EvStore } from './handler.ts';

const STATUS_ORDER = "'charging','stopped','completed','interrupted','faulted'";
const NO_SEQ_YET = 2_147_483_647;

export function createEvStore(pool: Pool): EvStore {
  return {
    async insertReadings(rows) {
      if (rows.length === 0) return;
      await pool.query(
        `INSERT INTO ev_readings (session_id, seq, run_id, ts, charge_point_id, connector_id, state, soc_percent, charge_limit, power_w,
           energy_wh, current_a, voltage_v, temperature_c, error_code, stop_reason, problems, published_at) VALUES ?
         ON DUPLICATE KEY UPDATE seq = seq`,
        [
          rows.map((r) => [
            r.sessionId, r.seq, r.runId, new Date(r.timestamp), r.chargePointId, r.connectorId, r.chargingState, r.socPercent,
            r.chargeLimitPercent, r.powerW, r.energyWh, r.currentA, r.voltageV, r.temperatureC, r.errorCode, r.stopReason ?? null, r.problems, r.publishedAt,
          ]),
        ],
      );
    },
    async insertEvents(events) {
      if (events.length === 0) return;
      await pool.query(
        `INSERT INTO ev_events (event_id, run_id, session_id, type, severity, ts, summary, details) VALUES ?
         ON DUPLICATE KEY UPDATE event_id = event_id`,
        [events.map((e) => [e.eventId, e.runId, e.sessionId, e.type, e.severity, new Date(e.ts), e.summary.slice(0, 1024), JSON.stringify(e)])],
      );
    },
    async mergeSessions(patches) {
      if (patches.length === 0) return;
      // MySQL evaluates the assignments left to right, each seeing the ones before:
      // the seq columns are therefore updated last.
      await pool.query(
        `INSERT INTO ev_sessions (session_id, run_id, charge_point_id, location, vehicle_make, vehicle_model, vin, charger_type, charger_max_kw,
           owner_email, start_soc, end_soc, charge_limit, energy_kwh, first_seq, last_seq, started_at, ended_at, status) VALUES ?
         ON DUPLICATE KEY UPDATE
           start_soc  = IF(VALUES(first_seq) < first_seq, VALUES(start_soc), start_soc),
           started_at = IF(VALUES(first_seq) < first_seq, VALUES(started_at), started_at),
           end_soc    = IF(VALUES(last_seq) > last_seq, VALUES(end_soc), end_soc),
           ended_at   = IF(VALUES(last_seq) > last_seq, VALUES(ended_at), ended_at),
           charge_limit = IF(VALUES(last_seq) > last_seq AND VALUES(charge_limit) > 0, VALUES(charge_limit), charge_limit),
           energy_kwh = GREATEST(energy_kwh, VALUES(energy_kwh)),
           status     = IF(FIELD(VALUES(status), ${STATUS_ORDER}) > FIELD(status, ${STATUS_ORDER}), VALUES(status), status),
           first_seq  = LEAST(first_seq, VALUES(first_seq)),
           last_seq   = GREATEST(last_seq, VALUES(last_seq))`,
        [
          patches.map((p) => [
            p.sessionId, p.runId, p.chargePointId, p.location, p.make, p.model, p.vin, p.chargerType, p.chargerMaxKW, p.ownerEmail,
            p.first?.soc ?? null, p.last?.soc ?? null, p.chargeLimit, p.last?.energyKWh ?? 0, p.first?.seq ?? NO_SEQ_YET, p.last?.seq ?? -1,
            p.first?.at ?? p.last?.at ?? new Date(0), p.last?.ended ? p.last.at : null, p.status,
          ]),
        ],
      );
    },
  };
}
