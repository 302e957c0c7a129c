// The versioned schema: infra/migrations/NNN_name.sql, applied in order.
// Running from source, the files are read from disk; build.mjs replaces this
// module with the same list inlined, so a bundle carries its schema with it.
import { readdirSync, readFileSync } from 'node:fs';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const dir = new URL('./migrations/', import.meta.url);

export function loadMigrations(): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{3}_[\w-]+\.sql$/.test(f))
    .sort()
    .map((file) => ({ version: Number(file.slice(0, 3)), name: file.slice(4, -4), sql: readFileSync(new URL(file, dir), 'utf8') }));
}
