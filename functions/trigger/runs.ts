// Runs live in MySQL, so their status survives a restart of the trigger.
import { randomUUID } from 'node:crypto';
import type { Pool } from '../../shared/db/pool.ts';

export type RunKind = 'logs' | 'ev';
export type RunState = 'running' | 'done' | 'failed';

export interface Run {
  id: string;
  kind: RunKind;
  state: RunState;
  source: string | null;
  file: string | null;
  params: Record<string, unknown> | null;
  lines: number;
  published: number;
  /** Where a resumed run starts again: messages before it, and its byte offset in the file. */
  checkpoint: { item: number; offset: number };
  error: string | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

export interface RunStore {
  create(run: { kind: RunKind; source?: string | null; file?: string | null; params?: Record<string, unknown> | null }): Promise<Run>;
  get(id: string): Promise<Run | null>;
  list(limit: number): Promise<Run[]>;
  progress(id: string, lines: number, published: number, checkpoint: { item: number; offset: number }): Promise<void>;
  /** Take over runs whose trigger stopped reporting progress `staleAfterMs` ago; returns those this caller won. */
  claimStale(staleAfterMs: number, limit?: number): Promise<Run[]>;
  finish(id: string, result: { state: 'done' | 'failed'; lines: number; published: number; error?: string | null }): Promise<void>;
  /** Rows stored for a run by the consumers, table by table. */
  stored(run: Run): Promise<Record<string, number>>;
}

interface RunRow {
  id: string; kind: RunKind; state: RunState; source: string | null; file: string | null; params: unknown;
  lines: number; published: number; checkpoint_item: number; checkpoint_offset: number; error: string | null;
  created_at: Date; updated_at: Date; finished_at: Date | null;
}

function toRun(r: RunRow): Run {
  return {
    id: r.id,
    kind: r.kind,
    state: r.state,
    source: r.source,
    file: r.file,
    params: (typeof r.params === 'string' ? JSON.parse(r.params) : r.params) as Run['params'],
    lines: Number(r.lines),
    published: Number(r.published),
    checkpoint: { item: Number(r.checkpoint_item), offset: Number(r.checkpoint_offset) },
    error: r.error,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
    finishedAt: r.finished_at?.toISOString() ?? null,
  };
}

const STORED_TABLES: Record<RunKind, string[]> = {
  logs: ['raw_logs', 'web_requests', 'log_rejects'],
  ev: ['ev_readings', 'ev_sessions', 'ev_events'],
};

export function createRunStore(pool: Pool): RunStore {
  const select = 'SELECT id, kind, state, source, file, params, `lines`, published, checkpoint_item, checkpoint_offset, error, created_at, updated_at, finished_at FROM runs';
  return {
    async create({ kind, source = null, file = null, params = null }) {
      const id = randomUUID();
      await pool.query(
        `INSERT INTO runs (id, kind, state, source, file, params, created_at, updated_at)
         VALUES (?, ?, 'running', ?, ?, ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))`,
        [id, kind, source, file, params ? JSON.stringify(params) : null],
      );
      return (await this.get(id))!;
    },
    async get(id) {
      const [rows] = (await pool.query(`${select} WHERE id = ?`, [id])) as [RunRow[], unknown];
      return rows[0] ? toRun(rows[0]) : null;
    },
    async list(limit) {
      const [rows] = (await pool.query(`${select} ORDER BY created_at DESC LIMIT ?`, [limit])) as [RunRow[], unknown];
      return rows.map((r) => toRun(r));
    },
    async progress(id, lines, published, checkpoint) {
      await pool.query(
        "UPDATE runs SET `lines` = ?, published = ?, checkpoint_item = ?, checkpoint_offset = ?, updated_at = UTC_TIMESTAMP(3) WHERE id = ? AND state = 'running'",
        [lines, published, checkpoint.item, checkpoint.offset, id],
      );
    },
    async claimStale(staleAfterMs, limit = 100) {
      if (limit <= 0) return [];
      const [rows] = (await pool.query(
        "SELECT id FROM runs WHERE state = 'running' AND updated_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND ORDER BY updated_at LIMIT ?",
        [staleAfterMs * 1000, Math.min(100, limit)],
      )) as [{ id: string }[], unknown];
      const won: Run[] = [];
      for (const { id } of rows) {
        // Whoever moves updated_at first owns the run; the others see 0 rows changed.
        const [result] = (await pool.query(
          "UPDATE runs SET updated_at = UTC_TIMESTAMP(3) WHERE id = ? AND state = 'running' AND updated_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND",
          [id, staleAfterMs * 1000],
        )) as [{ affectedRows: number }, unknown];
        if (result.affectedRows === 1) won.push((await this.get(id))!);
      }
      return won;
    },
    async finish(id, { state, lines, published, error = null }) {
      await pool.query(
        'UPDATE runs SET state = ?, `lines` = ?, published = ?, error = ?, updated_at = UTC_TIMESTAMP(3), finished_at = UTC_TIMESTAMP(3) WHERE id = ?',
        [state, lines, published, error, id],
      );
    },
    async stored(run) {
      const counts: Record<string, number> = {};
      for (const table of STORED_TABLES[run.kind]) {
        const [[row]] = (await pool.query(`SELECT COUNT(*) AS n FROM ${table} WHERE run_id = ?`, [run.id])) as [{ n: number }[], unknown];
        counts[table] = Number(row?.n ?? 0);
      }
      return counts;
    },
  };
}
