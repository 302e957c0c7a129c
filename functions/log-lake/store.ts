import type { Pool } from '../../shared/db/pool.ts';
import type { RawLogRow, RawLogStore } from './handler.ts';

export function createRawLogStore(pool: Pool): RawLogStore {
  return {
    async insert(rows) {
      if (rows.length === 0) return;
      await pool.query(
        `INSERT INTO raw_logs (run_id, line_no, source, byte_offset, file, line, truncated_from, received_at) VALUES ?
         ON DUPLICATE KEY UPDATE line_no = line_no`,
        [rows.map((r: RawLogRow) => [r.runId, r.lineNo, r.source, r.byteOffset, r.file, r.line, r.truncatedFrom, r.receivedAt])],
      );
    },
  };
}
