// web_requests, log_rejects and the aggregates. A batch's requests go in with
// one transaction: the INSERT of their rows tells which of them are new (its
// affected-row count, on a pool that does not report found rows), and only
// those are added to the aggregates (stats-store.ts), before the same commit.
// So a redelivered line, whichever process gets it, is neither stored nor
// counted twice, and the aggregates always agree with web_requests.
import type { PoolConnection } from 'mysql2/promise';
import { CONCURRENT_WRITE, inTransaction, retryOnDeadlock, type Pool } from '../../shared/db/pool.ts';
import type { CleanLogStore, RequestRow } from './handler.ts';
import { chunks, knownRows, recordAggregates, type KnownRows } from './stats-store.ts';

/** Thrown inside a transaction when some rows of a batch were already stored: run it again, reading first which. */
class SomeStoredBefore extends Error {}

/**
 * `pool` must be created with `foundRows: false` (shared/db/pool.ts): the store counts inserted rows.
 * `aggregates` false: the requests are stored, and counted nowhere.
 */
export function createCleanLogStore(pool: Pool, opts: { aggregates?: boolean } = {}): CleanLogStore {
  const aggregates = opts.aggregates ?? true;
  const known = knownRows();
  return {
    async insertRequests(rows) {
      if (rows.length === 0) return;
      if (!aggregates) {
        for (const chunk of chunks(rows, requestValues)) await pool.query(INSERT_REQUESTS, [chunk]);
        return;
      }
      const sorted = [...rows].sort((a, b) => (a.runId < b.runId ? -1 : a.runId > b.runId ? 1 : a.lineNo - b.lineNo));
      // First as if every row were new (a batch delivered once: one INSERT). When only some
      // were, again, reading first which were stored (redeliveries only).
      await retryOnDeadlock(async () => {
        let committed: () => void;
        try {
          committed = await inTransaction(pool, (conn) => storeAndCount(conn, sorted, false, known));
        } catch (err) {
          if (!(err instanceof SomeStoredBefore)) throw err;
          committed = await inTransaction(pool, (conn) => storeAndCount(conn, sorted, true, known));
        }
        committed();
      });
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

/**
 * Inserts the rows not stored yet and counts exactly those. `readFirst` false: insert all and
 * count all if all went in (none: count none; some: SomeStoredBefore). `readFirst` true: read
 * which are stored, insert the others, and check that all of those went in (a row another
 * process committed in between fails the check: the caller runs the transaction again).
 */
async function storeAndCount(conn: PoolConnection, rows: RequestRow[], readFirst: boolean, known: KnownRows): Promise<() => void> {
  let candidates = rows;
  if (readFirst) {
    const stored = new Set<string>();
    for (const chunk of chunks(rows, (r) => [r.runId, r.lineNo])) {
      const [found] = (await conn.query('SELECT run_id AS runId, line_no AS lineNo FROM web_requests WHERE (run_id, line_no) IN (?)', [chunk])) as [
        { runId: string; lineNo: number }[],
        unknown,
      ];
      for (const f of found) stored.add(`${f.runId}\0${f.lineNo}`);
    }
    candidates = rows.filter((r) => !stored.has(`${r.runId}\0${r.lineNo}`));
  }
  let inserted = 0;
  for (const chunk of chunks(candidates, requestValues)) {
    const [result] = (await conn.query(INSERT_REQUESTS, [chunk])) as [{ affectedRows: number }, unknown];
    inserted += result.affectedRows;
  }
  if (inserted === 0) return () => {};
  if (inserted !== candidates.length) {
    if (readFirst) throw Object.assign(new Error('web_requests: another transaction stored rows of this batch meanwhile'), { code: CONCURRENT_WRITE });
    throw new SomeStoredBefore();
  }
  return recordAggregates(conn, candidates.map((r) => {
    if (r.counted === null) throw new Error(`line ${r.lineNo} of run ${r.runId}: not worked out for the aggregates`);
    return r.counted;
  }), known);
}

const INSERT_REQUESTS = `INSERT INTO web_requests (run_id, line_no, source, ts, tz_offset_min, client_ip, forwarded_for, vhost, remote_user,
    request, method, path, query, protocol, status, bytes, referrer, user_agent, truncated) VALUES ?
  ON DUPLICATE KEY UPDATE line_no = line_no`;

const requestValues = (r: RequestRow) => [
  r.runId, r.lineNo, r.source, r.ts, r.tzOffsetMin, r.clientIp, r.forwardedFor, r.vhost, r.remoteUser,
  r.request, r.method, r.path, r.query, r.protocol, r.status, r.bytes, r.referrer, r.userAgent, r.truncated,
];
