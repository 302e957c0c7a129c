import { retryOnDeadlock, type Pool } from '../../shared/db/pool.ts';
import type { EvEvent } from '../../shared/contracts/ev.ts';
import type { AlertEvent } from '../../shared/contracts/alerts.ts';
import type { OutboxWriter } from './handler.ts';
import type { ClaimedRow, OutboxStore } from './dispatcher.ts';
import type { Role } from './rules.ts';

export function createOutbox(db: Pool): OutboxWriter & OutboxStore {
  // Rows of one charge point are written by the consumer and the dispatcher at once: retry deadlock victims.
  const pool = { query: ((...args: Parameters<Pool['query']>) => retryOnDeadlock(() => db.query(...args))) as Pool['query'] };
  return {
    async enqueue(rows) {
      if (rows.length === 0) return;
      await pool.query(
        `INSERT INTO email_outbox (dedupe_key, event_id, run_id, kind, role, recipient, group_key, event, status, due_at, created_at) VALUES ?
         ON DUPLICATE KEY UPDATE dedupe_key = dedupe_key`,
        [rows.map((r) => [r.dedupeKey, r.eventId, r.runId, r.kind ?? 'ev', r.role, r.recipient, r.groupKey, JSON.stringify(r.event), 'pending', r.dueAt, new Date()])],
      );
    },
    async dueGroups(now, limit) {
      const [rows] = (await pool.query(
        `SELECT group_key FROM email_outbox WHERE status = 'pending'
         GROUP BY group_key HAVING MIN(due_at) <= ? ORDER BY MIN(due_at) LIMIT ?`,
        [now, limit],
      )) as [{ group_key: string }[], unknown];
      return rows.map((r) => r.group_key);
    },
    async claim(groupKey, batchId, now) {
      // One statement, committed on its own: whoever flips the rows owns them.
      await pool.query(
        `UPDATE email_outbox SET status = 'sending', batch_id = ?, claimed_at = ?, attempts = attempts + 1
         WHERE group_key = ? AND status = 'pending'`,
        [batchId, now, groupKey],
      );
      const [rows] = (await pool.query('SELECT dedupe_key, kind, role, recipient, event, attempts FROM email_outbox WHERE batch_id = ? ORDER BY created_at, dedupe_key', [batchId])) as [
        { dedupe_key: string; kind: string; role: Role; recipient: string; event: unknown; attempts: number }[],
        unknown,
      ];
      return rows.map((r): ClaimedRow => {
        const base = { dedupeKey: r.dedupe_key, role: r.role, recipient: r.recipient, attempts: r.attempts };
        const event: unknown = typeof r.event === 'string' ? JSON.parse(r.event) : r.event;
        return r.kind === 'alert' ? { ...base, kind: 'alert', event: event as AlertEvent } : { ...base, kind: 'ev', event: event as EvEvent };
      });
    },
    async markSent(batchId, sesMessageId, now) {
      await pool.query("UPDATE email_outbox SET status = 'sent', ses_message_id = ?, sent_at = ?, last_error = NULL WHERE batch_id = ?", [sesMessageId, now, batchId]);
    },
    async release(batchId, retryAt, error) {
      await pool.query("UPDATE email_outbox SET status = 'pending', batch_id = NULL, due_at = ?, last_error = ? WHERE batch_id = ? AND status = 'sending'", [
        retryAt,
        error.slice(0, 1024),
        batchId,
      ]);
    },
    async markFailed(batchId, status, error) {
      await pool.query('UPDATE email_outbox SET status = ?, last_error = ? WHERE batch_id = ?', [status, error.slice(0, 1024), batchId]);
    },
    async expireClaims(claimedBefore) {
      // Few rows (a dead sender's batch): flip them one by one so each caller learns exactly which it
      // turned unknown (two dispatchers expiring at once never both count, or both log, the same row).
      const [rows] = (await pool.query("SELECT dedupe_key FROM email_outbox WHERE status = 'sending' AND claimed_at < ? LIMIT 1000", [claimedBefore])) as [
        { dedupe_key: string }[],
        unknown,
      ];
      const expired: string[] = [];
      for (const { dedupe_key } of rows) {
        const [result] = (await pool.query(
          "UPDATE email_outbox SET status = 'unknown', last_error = 'the sender stopped before SES answered' WHERE dedupe_key = ? AND status = 'sending' AND claimed_at < ?",
          [dedupe_key, claimedBefore],
        )) as [{ affectedRows: number }, unknown];
        if (result.affectedRows === 1) expired.push(dedupe_key);
      }
      return expired;
    },
  };
}
