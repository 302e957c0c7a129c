// Runs live in MySQL, so their status survives a restart of the trigger.
import { randomUUID } from 'node:crypto';
import type { Pool } from '../../shared/db/pool.ts';

export type RunKind = 'logs' | 'ev';
/** `stopping`: POST /v1/runs/:id/stop reached a trigger that does not execute the run; its own trigger stops it (or, if that one is gone, whoever claims it). */
export type RunState = 'running' | 'stopping' | 'done' | 'failed' | 'stopped';

/** A followed file in a follow run's checkpoint (functions/trigger/follow.ts). */
export interface FollowedFile {
  /** The run's own id for the file, referenced by `segments`. */
  id: number;
  /** Path relative to LOG_DIR where the run first saw the file: the `file` of its lines, also once rotated. */
  name: string;
  /** Identity: device and inode (decimal strings: they may pass 2^53), and the SHA-256 (hex) of the file's first `fpLen` bytes (at most 1 KiB). */
  dev: string;
  ino: string;
  fpLen: number;
  fp: string;
  /** Where its first line the broker has not confirmed starts (or, when all are confirmed, where its next line starts). */
  offset: number;
}

/** A follow run's checkpoint: enough to give every line, on resume, the same number as before. */
export interface FollowCheckpoint {
  v: 1;
  /** Number of the first line the broker has not confirmed (the next line's number when all are). */
  nextLineNo: number;
  files: FollowedFile[];
  /**
   * The lines from `nextLineNo` on that were (or may have been) published, in order, as
   * [file id, line count]; file id -1 marks numbers skipped (lines of a file that is gone).
   */
  segments: [number, number][];
  /** The file whose lines may follow `segments` (the one being read when the checkpoint was taken); null: none. */
  active: number | null;
  nextFileId: number;
}

/** Where a resumed run starts again: messages before it and the byte offset in the file; a follow run adds `follow`. */
export interface Checkpoint {
  item: number;
  offset: number;
  follow?: FollowCheckpoint;
}

export interface Run {
  id: string;
  kind: RunKind;
  state: RunState;
  source: string | null;
  /** The file (or, with params.glob, the glob) under LOG_DIR; null for an upload or an EV run. */
  file: string | null;
  params: Record<string, unknown> | null;
  lines: number;
  published: number;
  checkpoint: Checkpoint;
  error: string | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}

export interface RunEnd {
  state: 'done' | 'failed' | 'stopped';
  lines: number;
  published: number;
  error?: string | null;
  /** Recorded with the end (a stopped run keeps where it stopped); left as it was when absent. */
  checkpoint?: Checkpoint;
}

export interface RunStore {
  create(run: { kind: RunKind; source?: string | null; file?: string | null; params?: Record<string, unknown> | null }): Promise<Run>;
  get(id: string): Promise<Run | null>;
  list(limit: number): Promise<Run[]>;
  /** Records progress of a running run; false when the run is no longer `running` (stopped or ended elsewhere): nothing was written. */
  progress(id: string, lines: number, published: number, checkpoint: Checkpoint): Promise<boolean>;
  /** Take over runs whose trigger stopped reporting progress `staleAfterMs` ago; returns those this caller won. */
  claimStale(staleAfterMs: number, limit?: number): Promise<Run[]>;
  /** Asks the trigger executing a running run to stop it: running -> stopping; false when the run was not running. */
  requestStop(id: string): Promise<boolean>;
  /** Ends a running (or stopping) run; a run already ended is left as it is. */
  finish(id: string, result: RunEnd): Promise<void>;
  /** Rows stored for a run by the consumers, table by table. */
  stored(run: Run): Promise<Record<string, number>>;
}

interface RunRow {
  id: string; kind: RunKind; state: RunState; source: string | null; file: string | null; params: unknown;
  lines: number; published: number; checkpoint_item: number; checkpoint_offset: number; follow_checkpoint: unknown; error: string | null;
  created_at: Date; updated_at: Date; finished_at: Date | null;
}

const json = (v: unknown): unknown => (typeof v === 'string' ? JSON.parse(v) : v);

function toRun(r: RunRow): Run {
  const checkpoint: Checkpoint = { item: Number(r.checkpoint_item), offset: Number(r.checkpoint_offset) };
  const follow = json(r.follow_checkpoint) as FollowCheckpoint | null;
  if (follow) checkpoint.follow = follow;
  return {
    id: r.id,
    kind: r.kind,
    state: r.state,
    source: r.source,
    file: r.file,
    params: json(r.params) as Run['params'],
    lines: Number(r.lines),
    published: Number(r.published),
    checkpoint,
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

/** SET clause and values of a checkpoint: `follow_checkpoint` only when the checkpoint has one (a save before a follow run described itself leaves it). */
function checkpointSet(checkpoint: Checkpoint): [string, unknown[]] {
  const values: unknown[] = [checkpoint.item, checkpoint.offset];
  let sql = 'checkpoint_item = ?, checkpoint_offset = ?';
  if (checkpoint.follow) (sql += ', follow_checkpoint = ?'), values.push(JSON.stringify(checkpoint.follow));
  return [sql, values];
}

export function createRunStore(pool: Pool): RunStore {
  const select = 'SELECT id, kind, state, source, file, params, `lines`, published, checkpoint_item, checkpoint_offset, follow_checkpoint, error, created_at, updated_at, finished_at FROM runs';
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
      const [set, values] = checkpointSet(checkpoint);
      const [result] = (await pool.query(
        `UPDATE runs SET \`lines\` = ?, published = ?, ${set}, updated_at = UTC_TIMESTAMP(3) WHERE id = ? AND state = 'running'`,
        [lines, published, ...values, id],
      )) as [{ affectedRows: number }, unknown];
      return result.affectedRows === 1;
    },
    async claimStale(staleAfterMs, limit = 100) {
      if (limit <= 0) return [];
      const [rows] = (await pool.query(
        "SELECT id FROM runs WHERE state IN ('running', 'stopping') AND updated_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND ORDER BY updated_at LIMIT ?",
        [staleAfterMs * 1000, Math.min(100, limit)],
      )) as [{ id: string }[], unknown];
      const won: Run[] = [];
      for (const { id } of rows) {
        // Whoever moves updated_at first owns the run; the others see 0 rows changed.
        const [result] = (await pool.query(
          "UPDATE runs SET updated_at = UTC_TIMESTAMP(3) WHERE id = ? AND state IN ('running', 'stopping') AND updated_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND",
          [id, staleAfterMs * 1000],
        )) as [{ affectedRows: number }, unknown];
        if (result.affectedRows === 1) won.push((await this.get(id))!);
      }
      return won;
    },
    async requestStop(id) {
      // updated_at is left alone: a stopping run whose trigger is gone still goes stale and is claimed (and ended) by another.
      const [result] = (await pool.query("UPDATE runs SET state = 'stopping' WHERE id = ? AND state = 'running'", [id])) as [{ affectedRows: number }, unknown];
      return result.affectedRows === 1;
    },
    async finish(id, { state, lines, published, error = null, checkpoint }) {
      const [set, values] = checkpoint ? checkpointSet(checkpoint) : ['', []];
      await pool.query(
        `UPDATE runs SET state = ?, \`lines\` = ?, published = ?, error = ?, ${set ? `${set}, ` : ''}updated_at = UTC_TIMESTAMP(3), finished_at = UTC_TIMESTAMP(3)
         WHERE id = ? AND state IN ('running', 'stopping')`,
        [state, lines, published, error, ...values, id],
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
