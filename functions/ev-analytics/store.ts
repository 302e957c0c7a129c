import { inOneTrip, inTransaction, type Pool, type Statement } from '../../shared/db/pool.ts';
import { isOpen, type RunClock, type SessionState } from './detector.ts';
import type { AnalyticsStore } from './handler.ts';
import type { Membership } from './rebalance.ts';

const parse = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

/** `savePool`: a pool created with `multipleStatements`, for the per-batch save (inOneTrip). */
export function createAnalyticsStore(pool: Pool, savePool: Pool): AnalyticsStore {
  return {
    async loadStates(ids) {
      const states = new Map<string, SessionState>();
      if (ids.length === 0) return states;
      const [rows] = (await pool.query('SELECT session_id, state FROM ev_analytics_state WHERE session_id IN (?)', [ids])) as [{ session_id: string; state: unknown }[], unknown];
      for (const r of rows) states.set(r.session_id, parse<SessionState>(r.state));
      return states;
    },
    async loadOpen(partition, runId) {
      const [rows] = (await pool.query('SELECT state FROM ev_analytics_state WHERE partition_no = ? AND run_id = ? AND is_open = 1', [partition, runId])) as [{ state: unknown }[], unknown];
      return rows.map((r) => parse<SessionState>(r.state));
    },
    async loadClock(partition, runId) {
      const [rows] = (await pool.query('SELECT clock FROM ev_analytics_clock WHERE run_id = ? AND partition_no = ?', [runId, partition])) as [{ clock: unknown }[], unknown];
      return rows[0] ? parse<RunClock>(rows[0].clock) : undefined;
    },
    async claim(partition, owner) {
      // One transaction: the bump and the read of the epoch it produced, the row locked in between.
      return inTransaction(pool, async (conn) => {
        await conn.query(
          'INSERT INTO ev_analytics_partitions (partition_no, epoch, owner, claimed_at) VALUES (?, 1, ?, ?) ON DUPLICATE KEY UPDATE epoch = epoch + 1, owner = VALUES(owner), claimed_at = VALUES(claimed_at)',
          [partition, owner, new Date()],
        );
        const [rows] = (await conn.query('SELECT epoch FROM ev_analytics_partitions WHERE partition_no = ?', [partition])) as [{ epoch: number | string }[], unknown];
        return Number(rows[0]!.epoch);
      });
    },
    async save(partition, epoch, states, clocks) {
      // Two round trips per batch, not five: the statements go as one query (inOneTrip), then
      // the commit, or the rollback when the fence did not hold. The fence is the first
      // statement: it matches the partition's row only while the epoch is still ours
      // (affectedRows counts matched rows: mysql2 sets FOUND_ROWS), and keeps the row locked
      // until the commit, so a claim waits for a save under way, and a save after a claim
      // matches nothing and its writes are rolled back.
      const statements: Statement[] = [
        { sql: 'UPDATE ev_analytics_partitions SET saved_at = ? WHERE partition_no = ? AND epoch = ?', values: [new Date(), partition, epoch] },
      ];
      if (states.length > 0) {
        statements.push({
          sql: `INSERT INTO ev_analytics_state (session_id, run_id, partition_no, is_open, state, updated_at) VALUES ?
             ON DUPLICATE KEY UPDATE is_open = VALUES(is_open), state = VALUES(state), partition_no = VALUES(partition_no), updated_at = VALUES(updated_at)`,
          values: [states.map((s) => [s.sessionId, s.runId, partition, isOpen(s) ? 1 : 0, JSON.stringify(s), new Date()])],
        });
      }
      if (clocks.length > 0) {
        statements.push({
          sql: 'INSERT INTO ev_analytics_clock (run_id, partition_no, clock) VALUES ? ON DUPLICATE KEY UPDATE clock = VALUES(clock)',
          values: [clocks.map((c) => [c.runId, partition, JSON.stringify(c)])],
        });
      }
      return inOneTrip(savePool, statements, ([fence]) => fence!.affectedRows === 1);
    },
  };
}

/** Heartbeats in ev_analytics_members; an instance silent for `deadAfterMs` is gone. */
export function createMembership(pool: Pool, deadAfterMs: number): Membership {
  return {
    async heartbeat(instanceId) {
      const now = new Date();
      await pool.query(
        'INSERT INTO ev_analytics_members (instance_id, started_at, heartbeat_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE heartbeat_at = VALUES(heartbeat_at)',
        [instanceId, now, now],
      );
      const since = new Date(now.getTime() - deadAfterMs);
      await pool.query('DELETE FROM ev_analytics_members WHERE heartbeat_at < ?', [new Date(now.getTime() - 10 * deadAfterMs)]);
      const [rows] = (await pool.query('SELECT instance_id FROM ev_analytics_members WHERE heartbeat_at >= ? ORDER BY instance_id', [since])) as [{ instance_id: string }[], unknown];
      return rows.map((r) => r.instance_id);
    },
    async leave(instanceId) {
      await pool.query('DELETE FROM ev_analytics_members WHERE instance_id = ?', [instanceId]);
    },
  };
}
