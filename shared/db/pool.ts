import mysql, { type Pool } from 'mysql2/promise';

export type { Pool };

export function createPool(url: string, connectionLimit = 8): Pool {
  return mysql.createPool({
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
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

const RETRYABLE = new Set(['ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT']);

/** Run `fn` again when InnoDB picked it as a deadlock victim (or timed out on a lock). */
export async function retryOnDeadlock<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !RETRYABLE.has((err as { code?: string }).code ?? '')) throw err;
      await new Promise((r) => setTimeout(r, 20 * i + Math.random() * 20));
    }
  }
}
