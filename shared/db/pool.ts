import mysql, { type Pool, type PoolConnection } from 'mysql2/promise';
import { backoff, sleep } from '../timing.ts';

export type { Pool };

export interface PoolOptions {
  /**
   * false: an INSERT ... ON DUPLICATE KEY UPDATE that leaves a row as it was counts 0 affected
   * rows, not 1, so that its affectedRows is the number of rows it inserted (mysql2 reports
   * found rows by default, which an UPDATE that must tell "matched" from "missed" relies on).
   */
  foundRows?: boolean;
  /**
   * Several statements in one query, for inOneTrip only. Every value still goes through the
   * placeholders (mysql2 escapes them); never build SQL from input on such a pool.
   */
  multipleStatements?: boolean;
}

export function createPool(url: string, connectionLimit = 8, opts: PoolOptions = {}): Pool {
  return mysql.createPool({
    ...(opts.foundRows === false ? { flags: ['-FOUND_ROWS'] } : {}),
    ...(opts.multipleStatements === true ? { multipleStatements: true } : {}),
    uri: url,
    connectionLimit,
    // DATETIME columns hold UTC; read and write them as UTC whatever the host's zone.
    timezone: 'Z',
    dateStrings: false,
    supportBigNumbers: true,
    bigNumberStrings: false,
    enableKeepAlive: true,
    // Big multi-row inserts of log lines.
    maxPreparedStatements: 64,
  });
}

/** Wait until the database answers, so a function started beside a booting MySQL does not crash. */
export async function waitForDatabase(pool: Pool, attempts = 30, delayMs = 1_000): Promise<void> {
  for (let i = 1; ; i++) {
    try {
      await pool.query('SELECT 1');
      return;
    } catch (err) {
      if (i >= attempts) throw err;
      await sleep(delayMs);
    }
  }
}

/** One statement of inOneTrip: SQL with `?` placeholders and their values. */
export interface Statement {
  sql: string;
  values: unknown[];
}

/**
 * `statements` in one transaction, in two round trips however many there are: `START
 * TRANSACTION` and every statement go as one query, then `accept` looks at their results
 * (affectedRows, ...) and the transaction is committed if it returns true, rolled back if not.
 * Under load a round trip is what a statement costs (a few ms of waiting to be scheduled, at
 * both ends), so this is for hot paths whose statements do not depend on each other's results.
 * The pool must be created with `multipleStatements`. A failing statement stops the rest and
 * rolls the transaction back (the error is thrown); a broken connection is destroyed.
 */
export async function inOneTrip(pool: Pool, statements: Statement[], accept: (results: { affectedRows: number }[]) => boolean): Promise<boolean> {
  return onConnection(pool, async (conn) => {
    // The connection's own format: its time zone (UTC) and escaping, as its query() would use.
    const sql = ['START TRANSACTION', ...statements.map((st) => conn.format(st.sql, st.values))].join(';\n');
    const [results] = (await conn.query(sql)) as unknown as [{ affectedRows: number }[], unknown];
    // The first result is START TRANSACTION's.
    const ok = accept(results.slice(1));
    await conn.query(ok ? 'COMMIT' : 'ROLLBACK');
    return ok;
  });
}

/**
 * `run` on one connection of `pool`, which opens and ends its own transaction. When it throws,
 * the transaction is rolled back (a deadlock has already rolled it back; a rollback outside a
 * transaction does nothing); a connection that failed (a fatal error, or a rollback that failed)
 * is destroyed, not handed to the next caller.
 */
async function onConnection<T>(pool: Pool, run: (conn: PoolConnection) => Promise<T>): Promise<T> {
  const conn = await pool.getConnection();
  let broken = false;
  try {
    return await run(conn);
  } catch (err) {
    broken = (err as { fatal?: boolean }).fatal === true;
    if (!broken) await conn.rollback().catch(() => (broken = true));
    throw err;
  } finally {
    if (broken) conn.destroy();
    else conn.release();
  }
}

/**
 * `fn` inside one transaction on one connection: committed when it returns, rolled back when it
 * throws. A connection that failed mid-transaction (a fatal error, or a rollback that failed) is
 * destroyed, not handed to the next caller. Compose with retryOnDeadlock to run it again.
 */
export async function inTransaction<T>(pool: Pool, fn: (conn: PoolConnection) => Promise<T>): Promise<T> {
  return onConnection(pool, async (conn) => {
    await conn.beginTransaction();
    const result = await fn(conn);
    await conn.commit();
    return result;
  });
}

/** The code of an error a store throws when another transaction changed what it read: run it again, like a deadlock. */
export const CONCURRENT_WRITE = 'SLUICE_CONCURRENT_WRITE';
const RETRYABLE = new Set(['ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT', CONCURRENT_WRITE]);

/** Run `fn` again when InnoDB picked it as a deadlock victim (or timed out on a lock, or a store saw a concurrent write). */
export async function retryOnDeadlock<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !RETRYABLE.has((err as { code?: string }).code ?? '')) throw err;
      // Short, and at random: the two victims of a deadlock should not collide again in step.
      await sleep(backoff(i, { baseMs: 40, maxMs: 500, jitter: 0.5 }));
    }
  }
}
