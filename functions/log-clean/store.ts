import type { Pool } from '../../shared/db/pool.ts';
import type { CleanLogStore } from './handler.ts';

export function createCleanLogStore(pool: Pool): CleanLogStore {
  return {
    async insertRequests(rows) {
      if (rows.length === 0) return;
      await pool.query(
        `INSERT INTO web_requests (run_id, line_no, source, ts, tz_offset_min, client_ip, forwarded_for, vhost, remote_user,
           request, method, path, query, protocol, status, bytes, referrer, user_agent, truncated) VALUES ?
         ON DUPLICATE KEY UPDATE line_no = line_no`,
        [
          rows.map((r) => [
            r.runId, r.lineNo, r.source, r.ts, r.tzOffsetMin, r.clientIp, r.forwardedFor, r.vhost, r.remoteUser,
            r.request, r.method, r.path, r.query, r.protocol, r.status, r.bytes, r.referrer, r.userAgent, r.truncated,
          ]),
        ],
      );
    },
    async insertRejects(rows) {
      if (rows.length === 0) return;
      await pool.query(
        `INSERT INTO log_rejects (run_id, line_no, source, line, reason, received_at) VALUES ?
         ON DUPLICATE KEY UPDATE line_no = line_no`,
        [rows.map((r) => [r.runId, r.lineNo, r.source, r.line, r.reason, r.receivedAt])],
      );
    },
  };
}
