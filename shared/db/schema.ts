// A function's boot check: the schema it was built against is in place. Only the
// privileged migrate step changes the schema (infra/provision.ts); a function
// that starts first waits for it a while, saying what it waits for, then gives
// up with the command that fixes it.
import type { Pool } from 'mysql2/promise';
import type { Logger } from '../log.ts';
import { loadMigrations } from '../../infra/migrations.ts';
import { sleep } from '../timing.ts';

const HOW = 'run `npm run migrate` (docker compose: the `migrate` service; Kubernetes: the `sluice-migrate` Job)';

/** The newest migration this build carries: the schema version it needs. */
export const requiredSchemaVersion = (): number => Math.max(0, ...loadMigrations().map((m) => m.version));

export class SchemaError extends Error {
  override name = 'SchemaError';
}

/** Resolves once schema_migrations holds `version`; throws a SchemaError naming the problem after `waitMs`. */
export async function waitForSchema(pool: Pool, log: Logger, version = requiredSchemaVersion(), waitMs = 60_000, everyMs = 2_000): Promise<number> {
  const deadline = Date.now() + waitMs;
  for (let said = false; ; said = true) {
    const problem = await schemaProblem(pool, version);
    if (problem === null) return version;
    if (Date.now() >= deadline) throw new SchemaError(`${problem}: ${HOW}`);
    if (!said) log.warn({ need: version }, `waiting for the schema (${problem}): ${HOW}`);
    await sleep(Math.min(everyMs, deadline - Date.now()));
  }
}

async function schemaProblem(pool: Pool, version: number): Promise<string | null> {
  try {
    const [[row]] = (await pool.query('SELECT MAX(version) AS v FROM schema_migrations')) as [{ v: number | null }[], unknown];
    const have = Number(row?.v ?? 0);
    return have >= version ? null : `the database has schema version ${have}, this build needs ${version}`;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ER_NO_SUCH_TABLE') return 'the database has no schema yet (no table schema_migrations)';
    if (code === 'ER_TABLEACCESS_DENIED_ERROR') return 'this function\'s MySQL user may not read schema_migrations (its grants are missing)';
    throw err;
  }
}
