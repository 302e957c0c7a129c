import { inTransaction, type Pool } from '../../shared/db/pool.ts';
import { isOpen, type RunClock, type SessionState } from './detector.ts';
import type { AnalyticsStore } from './handler.ts';
import type { Membership } from './rebalance.ts';

const parse = <T>(v: unknown): T => (typeof v === 'string' ? JSON.parse(v) : v) as T;

export function createAnalyticsStore(pool: Pool): AnalyticsStore {
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
      // The partition's row stays locked until the commit: a claim waits for a save under way,
      // and a save after a claim sees the new epoch and writes nothing.
      return inTransaction(pool, async (conn) => {
        const [rows] = (await conn.query('SELECT epoch FROM ev_analytics_partitions WHERE partition_no = ? FOR UPDATE', [partition])) as [{ epoch: number | string }[], unknown];
        // Fenced out: nothing written (the commit only ends the locking read).
        if (rows.length === 0 || Number(rows[0]!.epoch) !== epoch) return false;
        if (states.length > 0) {
          await conn.query(
            `INSERT INTO ev_analytics_state (session_id, run_id, partition_no, is_open, state, updated_at) VALUES ?
             ON DUPLICATE KEY UPDATE is_open = VALUES(is_open), state = VALUES(state), partition_no = VALUES(partition_no), updated_at = VALUES(updated_at)`,
            [states.map((s) => [s.sessionId, s.runId, partition, isOpen(s) ? 1 : 0, JSON.stringify(s), new Date()])],
          );
        }
        if (clocks.length > 0) {
          await conn.query('INSERT INTO ev_analytics_clock (run_id, partition_no, clock) VALUES ? ON DUPLICATE KEY UPDATE clock = VALUES(clock)', [
            clocks.map((c) => [c.runId, partition, JSON.stringify(c)]),
          ]);
        }
        await conn.query('UPDATE ev_analytics_partitions SET saved_at = ? WHERE partition_no = ?', [new Date(), partition]);
        return true;
      });
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
