// Applies infra/migrations in order, each once. Safe to run from every function
// at boot: a named lock serialises concurrent runners, and the statements are
// written to be re-runnable (IF NOT EXISTS) because MySQL DDL is not transactional.
import type { Pool } from 'mysql2/promise';
import type { Logger } from '../log.ts';
import { loadMigrations, type Migration } from '../../infra/migrations.ts';

export async function migrate(pool: Pool, log: Logger, migrations: Migration[] = loadMigrations()): Promise<number[]> {
  const conn = await pool.getConnection();
  try {
    const [[lock]] = (await conn.query("SELECT GET_LOCK('sluice_migrations', 60) AS ok")) as [{ ok: number }[], unknown];
    if (lock?.ok !== 1) throw new Error('could not take the migration lock within 60 s');
    try {
      await conn.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version INT PRIMARY KEY, name VARCHAR(255) NOT NULL, applied_at DATETIME(3) NOT NULL)`);
      const [rows] = (await conn.query('SELECT version FROM schema_migrations')) as [{ version: number }[], unknown];
      const done = new Set(rows.map((r) => r.version));
      const applied: number[] = [];
      for (const m of migrations) {
        if (done.has(m.version)) continue;
        for (const statement of splitStatements(m.sql)) await conn.query(statement);
        await conn.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, UTC_TIMESTAMP(3))', [m.version, m.name]);
        log.info({ version: m.version, name: m.name }, 'migration applied');
        applied.push(m.version);
      }
      return applied;
    } finally {
      await conn.query("SELECT RELEASE_LOCK('sluice_migrations')");
    }
  } finally {
    conn.release();
  }
}

/** Split a migration file on semicolons at line ends; comments are dropped. */
export function splitStatements(sql: string): string[] {
  return sql
    .split('\n')
    .filter((l) => !l.trimStart().startsWith('--'))
    .join('\n')
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.trim())
    .filter(Boolean);
}
