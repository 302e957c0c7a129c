// log-alerts' MySQL port: what the evaluator reads (the aggregates, a flagged minute's requests,
// the follow runs) and the state it keeps (infra/migrations/009_alerts.sql). Every decision
// about one (rule, source) runs in `withState`: one transaction holding the state row
// locked (SELECT ... FOR UPDATE), in which the breaching minutes, the new state and the
// outbox rows of its events are written, so two evaluators serialise on the row and the
// second one sees what the first decided.
import type { Pool, PoolConnection } from 'mysql2/promise';
import { inTransaction, retryOnDeadlock } from '../../shared/db/pool.ts';
import { AlertEventSchema, alertMessage, type AlertEvent, type AlertRule } from '../../shared/contracts/alerts.ts';
import type { IncidentState, Latest, MinuteCounts } from './rules.ts';

export interface ChangedMinute {
  source: string;
  minute: number;
  updatedAt: number;
}

export interface StateTx {
  readonly state: IncidentState;
  /** The source's latest minute with alerting requests, settled when not updated for `settleMs`. */
  latest(): Promise<Latest | null>;
  /** Counts of the given minutes that hold alerting requests (a minute absent: none). */
  minutes(minutes: number[]): Promise<Map<number, MinuteCounts>>;
  recorded(minutes: number[]): Promise<Set<number>>;
  record(records: { minute: number; incident: string }[]): Promise<void>;
  /** The minute's most frequent paths among answers with a status in [from, to]. */
  topPaths(minute: number, from: number, to: number, limit: number): Promise<{ path: string; count: number }[]>;
  /** Clients with more than `over` 4xx answers in the minute, most first. */
  clients4xx(minute: number, over: number, limit: number): Promise<{ clientIp: string; count: number }[]>;
  /** Each client's most frequent 4xx paths in the minute. */
  clientPaths(minute: number, clients: string[], limit: number): Promise<Map<string, { path: string; count: number }[]>>;
  /** Totals over the breaching minutes from `since` to `lastBreach` (those of an incident; a minute counted by an earlier one that the incident spans included). */
  incidentTotals(since: number, lastBreach: number): Promise<{ minutes: number; requests: number; s4xx: number; s5xx: number }>;
  save(state: IncidentState): Promise<void>;
  enqueue(event: AlertEvent): Promise<void>;
}

export interface RunningFollow {
  runId: string;
  source: string;
  published: number;
}

export interface SilenceTx {
  readonly state: IncidentState;
  /** Records the source's running follow runs' counts; returns each one's count and when it last moved; forgets the source's other runs. */
  track(runs: RunningFollow[], now: number): Promise<{ runId: string; published: number; movedAt: number }[]>;
  save(state: IncidentState): Promise<void>;
  enqueue(event: AlertEvent): Promise<void>;
}

export interface OutboxMessage {
  id: number;
  routingKey: string;
  messageId: string;
  body: Buffer;
}

export interface AlertStore {
  /** The database's clock (UTC), which stamps log_stats_minute.updated_at. */
  now(): Promise<number>;
  /** Where the evaluators have read to; set to now on the very first start (history is not alerted on). */
  cursor(): Promise<number>;
  advanceCursor(to: number): Promise<void>;
  /** Minutes with alerting requests updated at or after `from`. */
  changedMinutes(from: number): Promise<ChangedMinute[]>;
  /** Sources with an open incident or a pending minute for `rule`. */
  revisit(rule: AlertRule): Promise<string[]>;
  withState<T>(rule: AlertRule, source: string, settleMs: number, fn: (tx: StateTx) => Promise<T>): Promise<T>;
  /** Running follow runs that did not mute alerts. */
  runningFollows(): Promise<RunningFollow[]>;
  withSilence<T>(source: string, fn: (tx: SilenceTx) => Promise<T>): Promise<T>;
  /** Sources whose silence has an open incident, or rows of runs to forget. */
  silenceSources(): Promise<string[]>;
  unpublished(limit: number): Promise<OutboxMessage[]>;
  markPublished(ids: number[]): Promise<void>;
}

type Rows<T> = [T[], unknown];
const date = (ms: number | null) => (ms === null ? null : new Date(ms));
const ms = (d: Date | null) => (d === null ? null : d.getTime());
const json = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));
const PAGE = 5_000;

interface StateRow {
  incident: string | null;
  since: Date | null;
  last_breach: Date | null;
  pending_minute: Date | null;
}

const toState = (r: StateRow | undefined): IncidentState => ({
  incident: r?.incident ?? null,
  since: ms(r?.since ?? null),
  lastBreach: ms(r?.last_breach ?? null),
  pending: ms(r?.pending_minute ?? null),
});

async function lockState(conn: PoolConnection, rule: string, source: string): Promise<IncidentState> {
  // The row must exist to be locked: the first evaluator of a (rule, source) inserts it.
  await conn.query('INSERT IGNORE INTO log_alerts_state (rule, source, updated_at) VALUES (?, ?, UTC_TIMESTAMP(3))', [rule, source]);
  const [rows] = (await conn.query('SELECT incident, since, last_breach, pending_minute FROM log_alerts_state WHERE rule = ? AND source = ? FOR UPDATE', [rule, source])) as Rows<StateRow>;
  return toState(rows[0]);
}

async function saveState(conn: PoolConnection, rule: string, source: string, s: IncidentState, evaluatedTo: number | null = null): Promise<void> {
  await conn.query(
    `UPDATE log_alerts_state SET incident = ?, since = ?, last_breach = ?, pending_minute = ?, evaluated_to = COALESCE(?, evaluated_to), updated_at = UTC_TIMESTAMP(3)
     WHERE rule = ? AND source = ?`,
    [s.incident, date(s.since), date(s.lastBreach), date(s.pending), date(evaluatedTo), rule, source],
  );
}

async function enqueue(conn: PoolConnection, event: AlertEvent): Promise<void> {
  const valid = AlertEventSchema.parse(event); // our own bug must not reach the broker
  const m = alertMessage(valid);
  await conn.query(
    `INSERT INTO log_alerts_outbox (message_id, rule, source, incident, state, routing_key, body, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE id = id`,
    [m.options.messageId, valid.rule, valid.source, valid.incident, valid.state, m.routingKey, m.content.toString('utf8')],
  );
}

const transaction = <T>(pool: Pool, fn: (conn: PoolConnection) => Promise<T>): Promise<T> => retryOnDeadlock(() => inTransaction(pool, fn));

export function createAlertStore(pool: Pool): AlertStore {
  return {
    async now() {
      const [[row]] = (await pool.query('SELECT UTC_TIMESTAMP(3) AS now')) as Rows<{ now: Date }>;
      return row!.now.getTime();
    },
    async cursor() {
      await pool.query("INSERT IGNORE INTO log_alerts_cursor (name, updated_at) VALUES ('minutes', UTC_TIMESTAMP(3))");
      const [[row]] = (await pool.query("SELECT updated_at FROM log_alerts_cursor WHERE name = 'minutes'")) as Rows<{ updated_at: Date }>;
      return row!.updated_at.getTime();
    },
    async advanceCursor(to) {
      await pool.query("UPDATE log_alerts_cursor SET updated_at = GREATEST(updated_at, ?) WHERE name = 'minutes'", [new Date(to)]);
    },
    async changedMinutes(from) {
      const out: ChangedMinute[] = [];
      let after: [Date, string, Date] | null = null;
      for (;;) {
        // Keyset pages in (updated_at, source, minute) order: one commit stamps many rows with one time.
        const [rows] = (await (after === null
          ? pool.query('SELECT source, minute, updated_at FROM log_stats_minute WHERE updated_at >= ? AND alerting > 0 ORDER BY updated_at, source, minute LIMIT ?', [new Date(from), PAGE])
          : pool.query(
              `SELECT source, minute, updated_at FROM log_stats_minute
               WHERE updated_at >= ? AND alerting > 0 AND (updated_at > ? OR (updated_at = ? AND (source > ? OR (source = ? AND minute > ?))))
               ORDER BY updated_at, source, minute LIMIT ?`,
              [after[0], after[0], after[0], after[1], after[1], after[2], PAGE],
            ))) as Rows<{ source: string; minute: Date; updated_at: Date }>;
        for (const r of rows) out.push({ source: r.source, minute: r.minute.getTime(), updatedAt: r.updated_at.getTime() });
        if (rows.length < PAGE) return out;
        const last = rows.at(-1)!;
        after = [last.updated_at, last.source, last.minute];
      }
    },
    async revisit(rule) {
      const [rows] = (await pool.query('SELECT source FROM log_alerts_state WHERE rule = ? AND (incident IS NOT NULL OR pending_minute IS NOT NULL)', [rule])) as Rows<{ source: string }>;
      return rows.map((r) => r.source);
    },
    withState(rule, source, settleMs, fn) {
      return transaction(pool, async (conn) => {
        const state = await lockState(conn, rule, source);
        const q = async <T>(sql: string, values: unknown[]) => ((await conn.query(sql, values)) as Rows<T>)[0];
        const range = (minute: number) => [new Date(minute), new Date(minute + 60_000)];
        let latestSeen: number | null = null;
        const tx: StateTx = {
          state,
          async latest() {
            const [row] = await q<{ minute: Date; settled: number }>(
              `SELECT minute, updated_at <= UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND AS settled FROM log_stats_minute
               WHERE source = ? AND alerting > 0 ORDER BY minute DESC LIMIT 1`,
              [Math.round(settleMs * 1000), source],
            );
            if (!row) return null;
            latestSeen = row.minute.getTime();
            return { minute: latestSeen, settled: Number(row.settled) === 1 };
          },
          async minutes(list) {
            const out = new Map<number, MinuteCounts>();
            for (let i = 0; i < list.length; i += 1_000) {
              const chunk = list.slice(i, i + 1_000).map((m) => new Date(m));
              if (chunk.length === 0) continue;
              const rows = await q<{ minute: Date; requests: number; s4xx: number; s5xx: number }>(
                'SELECT minute, requests, s4xx, s5xx FROM log_stats_minute WHERE source = ? AND minute IN (?) AND alerting > 0',
                [source, chunk],
              );
              for (const r of rows) out.set(r.minute.getTime(), { requests: Number(r.requests), s4xx: Number(r.s4xx), s5xx: Number(r.s5xx) });
            }
            return out;
          },
          async recorded(list) {
            const out = new Set<number>();
            for (let i = 0; i < list.length; i += 1_000) {
              const chunk = list.slice(i, i + 1_000).map((m) => new Date(m));
              if (chunk.length === 0) continue;
              const rows = await q<{ minute: Date }>('SELECT minute FROM log_alerts_breach WHERE rule = ? AND source = ? AND minute IN (?)', [rule, source, chunk]);
              for (const r of rows) out.add(r.minute.getTime());
            }
            return out;
          },
          async record(records) {
            if (records.length === 0) return;
            await conn.query('INSERT IGNORE INTO log_alerts_breach (rule, source, minute, incident) VALUES ?', [records.map((r) => [rule, source, new Date(r.minute), r.incident])]);
          },
          async topPaths(minute, from, to, limit) {
            // web_requests_ts: one minute's rows; only minutes the aggregates already flag get here.
            const rows = await q<{ path: string | null; n: number }>(
              `SELECT path, COUNT(*) AS n FROM web_requests WHERE ts >= ? AND ts < ? AND source = ? COLLATE utf8mb4_bin AND status BETWEEN ? AND ?
               GROUP BY path ORDER BY n DESC, path LIMIT ?`,
              [...range(minute), source, from, to, limit],
            );
            return rows.map((r) => ({ path: r.path ?? '(no path)', count: Number(r.n) }));
          },
          async clients4xx(minute, over, limit) {
            const rows = await q<{ client_ip: string; n: number }>(
              `SELECT client_ip, COUNT(*) AS n FROM web_requests WHERE ts >= ? AND ts < ? AND source = ? COLLATE utf8mb4_bin AND status BETWEEN 400 AND 499 AND client_ip IS NOT NULL
               GROUP BY client_ip HAVING n > ? ORDER BY n DESC, client_ip LIMIT ?`,
              [...range(minute), source, over, limit],
            );
            return rows.map((r) => ({ clientIp: r.client_ip, count: Number(r.n) }));
          },
          async clientPaths(minute, clients, limit) {
            const out = new Map<string, { path: string; count: number }[]>();
            if (clients.length === 0) return out;
            const rows = await q<{ client_ip: string; path: string | null; n: number }>(
              `SELECT client_ip, path, COUNT(*) AS n FROM web_requests WHERE ts >= ? AND ts < ? AND source = ? COLLATE utf8mb4_bin AND status BETWEEN 400 AND 499 AND client_ip IN (?)
               GROUP BY client_ip, path ORDER BY client_ip, n DESC, path`,
              [...range(minute), source, clients],
            );
            for (const r of rows) {
              const list = out.get(r.client_ip) ?? [];
              if (list.length < limit) list.push({ path: r.path ?? '(no path)', count: Number(r.n) });
              out.set(r.client_ip, list);
            }
            return out;
          },
          async incidentTotals(since, lastBreach) {
            const [row] = await q<{ minutes: number; requests: number | null; s4xx: number | null; s5xx: number | null }>(
              `SELECT COUNT(*) AS minutes, SUM(m.requests) AS requests, SUM(m.s4xx) AS s4xx, SUM(m.s5xx) AS s5xx
               FROM log_alerts_breach b JOIN log_stats_minute m ON m.source = b.source AND m.minute = b.minute
               WHERE b.rule = ? AND b.source = ? AND b.minute BETWEEN ? AND ?`,
              [rule, source, new Date(since), new Date(lastBreach)],
            );
            return { minutes: Number(row?.minutes ?? 0), requests: Number(row?.requests ?? 0), s4xx: Number(row?.s4xx ?? 0), s5xx: Number(row?.s5xx ?? 0) };
          },
          save: (s) => saveState(conn, rule, source, s, latestSeen),
          enqueue: (event) => enqueue(conn, event),
        };
        return fn(tx);
      });
    },
    async runningFollows() {
      // Few rows: the runs in progress. params is JSON (MariaDB: text), read here rather than with JSON_* functions, whose results differ between MySQL and MariaDB.
      const [rows] = (await pool.query("SELECT id, source, published, params FROM runs WHERE kind = 'logs' AND state = 'running' AND finished_at IS NULL")) as Rows<{
        id: string;
        source: string | null;
        published: number;
        params: unknown;
      }>;
      return rows.flatMap((r) => {
        const params = (typeof r.params === 'string' ? JSON.parse(r.params) : r.params) as { follow?: unknown; alerts?: unknown } | null;
        if (params?.follow !== true || params.alerts === false || r.source === null) return [];
        return [{ runId: r.id, source: r.source, published: Number(r.published) }];
      });
    },
    withSilence(source, fn) {
      return transaction(pool, async (conn) => {
        const state = await lockState(conn, 'silent', source);
        const tx: SilenceTx = {
          state,
          async track(runs, now) {
            if (runs.length > 0) {
              // moved_at first: it compares with the published count still in the row.
              await conn.query(
                `INSERT INTO log_alerts_silence (run_id, source, published, moved_at) VALUES ?
                 ON DUPLICATE KEY UPDATE moved_at = IF(published <> VALUES(published), VALUES(moved_at), moved_at), published = VALUES(published)`,
                [runs.map((r) => [r.runId, r.source, r.published, new Date(now)])],
              );
            }
            const ids = runs.map((r) => r.runId);
            await conn.query(`DELETE FROM log_alerts_silence WHERE source = ?${ids.length ? ' AND run_id NOT IN (?)' : ''}`, ids.length ? [source, ids] : [source]);
            if (ids.length === 0) return [];
            const [rows] = (await conn.query('SELECT run_id, published, moved_at FROM log_alerts_silence WHERE run_id IN (?)', [ids])) as Rows<{ run_id: string; published: number; moved_at: Date }>;
            return rows.map((r) => ({ runId: r.run_id, published: Number(r.published), movedAt: r.moved_at.getTime() }));
          },
          save: (s) => saveState(conn, 'silent', source, s),
          enqueue: (event) => enqueue(conn, event),
        };
        return fn(tx);
      });
    },
    async silenceSources() {
      const [rows] = (await pool.query(
        "SELECT source FROM log_alerts_state WHERE rule = 'silent' AND incident IS NOT NULL UNION SELECT DISTINCT source FROM log_alerts_silence",
      )) as Rows<{ source: string }>;
      return rows.map((r) => r.source);
    },
    async unpublished(limit) {
      const [rows] = (await pool.query('SELECT id, routing_key, message_id, body FROM log_alerts_outbox WHERE published_at IS NULL ORDER BY id LIMIT ?', [limit])) as Rows<{
        id: number;
        routing_key: string;
        message_id: string;
        body: unknown;
      }>;
      return rows.map((r) => ({ id: Number(r.id), routingKey: r.routing_key, messageId: r.message_id, body: Buffer.from(json(r.body)) }));
    },
    async markPublished(ids) {
      if (ids.length === 0) return;
      await pool.query('UPDATE log_alerts_outbox SET published_at = UTC_TIMESTAMP(3) WHERE id IN (?) AND published_at IS NULL', [ids]);
    },
  };
}
