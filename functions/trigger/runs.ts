// Runs live in MySQL, so their status survives a restart of the trigger.
//
// Ownership. A run is driven by one trigger at a time: its lease is (owner,
// epoch). `create` gives a new run to its creator (epoch 1); claiming a stale run
// sets the claimer as owner and bumps the epoch. Every progress, checkpoint and
// finish update is conditional on (id, owner, epoch), so a trigger that lost its
// run (paused, cut off from MySQL longer than RUN_STALE_AFTER_S, while another
// claimed it) writes nothing: its update matches no row, and the runner stops
// publishing that run at once (functions/trigger/runner.ts).
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Pool } from '../../shared/db/pool.ts';
import { reuseCostly } from '../../shared/timing.ts';

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

/** Who drives a run: the owner (a trigger process, see ownerId) and the epoch of its claim. */
export interface Lease {
  /** Null only for a run recorded before runs had owners (migration 011), until it is claimed. */
  owner: string | null;
  epoch: number;
}

/** What the runner needs of a run to drive it. */
export type RunRef = { id: string } & Lease;

/** The run as the API shows it (its lease is the triggers' business: see LeasedRun). */
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

/** A run as the store reads it: with its lease. */
export type LeasedRun = Run & Lease;

export interface RunEnd {
  state: 'done' | 'failed' | 'stopped';
  lines: number;
  published: number;
  error?: string | null;
  /** Recorded with the end (a stopped run keeps where it stopped); left as it was when absent. */
  checkpoint?: Checkpoint;
}

export interface RunStore {
  /** Records a new running run owned by this trigger (epoch 1). */
  create(run: { kind: RunKind; source?: string | null; file?: string | null; params?: Record<string, unknown> | null }): Promise<LeasedRun>;
  get(id: string): Promise<LeasedRun | null>;
  list(limit: number): Promise<Run[]>;
  /**
   * Records progress of a running run held under `lease`; false when nothing was written: the run
   * is no longer `running` (stopped or ended elsewhere) or another owner claimed it (read the run to tell).
   */
  progress(id: string, lines: number, published: number, checkpoint: Checkpoint, lease: Lease): Promise<boolean>;
  /**
   * Take over runs whose trigger stopped reporting progress `staleAfterMs` ago (but those in
   * `exclude`: runs this trigger executes itself); returns those this caller won, with their new lease.
   */
  claimStale(staleAfterMs: number, limit?: number, exclude?: readonly string[]): Promise<LeasedRun[]>;
  /** Asks the trigger executing a running run to stop it: running -> stopping; false when the run was not running. */
  requestStop(id: string): Promise<boolean>;
  /** Ends a running (or stopping) run held under `lease`; false when nothing was written (ended already, or claimed by another owner). */
  finish(id: string, result: RunEnd, lease: Lease): Promise<boolean>;
  /**
   * Rows stored for a run by the consumers, table by table, and when they were counted. Counting
   * reads every row of the run (a 2 GB log: gigabytes), so a count is reused for STORED_REUSE_FACTOR
   * times as long as it took: watchers polling every second cannot keep the database counting.
   */
  stored(run: Run): Promise<StoredCounts>;
}

interface RunRow {
  id: string; kind: RunKind; state: RunState; source: string | null; file: string | null; params: unknown;
  lines: number; published: number; checkpoint_item: number; checkpoint_offset: number; follow_checkpoint: unknown; error: string | null;
  owner: string | null; epoch: number; created_at: Date; updated_at: Date; finished_at: Date | null;
}

const json = (v: unknown): unknown => (typeof v === 'string' ? JSON.parse(v) : v);

function toRun(r: RunRow): LeasedRun {
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
    owner: r.owner,
    epoch: Number(r.epoch),
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

export interface StoredCounts {
  counts: Record<string, number>;
  countedAt: Date;
}

/** A count of a run's rows is reused this many times as long as it took: the database counts at most a tenth of the time. */
export const STORED_REUSE_FACTOR = 9;

/** This process's owner id for runs: host, pid and a random part (a restarted process is another owner). */
export function ownerId(): string {
  return `${hostname().slice(0, 64)}:${process.pid}:${randomUUID().slice(0, 8)}`;
}

/**
 * `owner`: this trigger's owner id (ownerId()). The pool must report found rows (mysql2's
 * default, CLIENT_FOUND_ROWS; shared/db/pool.ts createPool without `foundRows: false`, as the
 * trigger's boot makes it): the fenced UPDATEs read `affectedRows` as "the row matched (id,
 * owner, epoch)". They also set updated_at = UTC_TIMESTAMP(3), which always changes, so even
 * with changed-rows semantics a matching row would count 1; 0 means fenced out or ended.
 */
export function createRunStore(pool: Pool, opts: { owner?: string } = {}): RunStore & { readonly owner: string } {
  const owner = opts.owner ?? ownerId();
  const countStored = reuseCostly(async (run: Pick<Run, 'id' | 'kind'>) => {
    const counts: Record<string, number> = {};
    for (const table of STORED_TABLES[run.kind]) {
      const [[row]] = (await pool.query(`SELECT COUNT(*) AS n FROM ${table} WHERE run_id = ?`, [run.id])) as [{ n: number }[], unknown];
      counts[table] = Number(row?.n ?? 0);
    }
    return counts;
  }, { factor: STORED_REUSE_FACTOR, keyOf: (run) => run.id });
  const select = 'SELECT id, kind, state, source, file, params, `lines`, published, checkpoint_item, checkpoint_offset, follow_checkpoint, error, owner, epoch, created_at, updated_at, finished_at FROM runs';
  return {
    owner,
    async create({ kind, source = null, file = null, params = null }) {
      const id = randomUUID();
      await pool.query(
        `INSERT INTO runs (id, kind, state, source, file, params, owner, epoch, created_at, updated_at)
         VALUES (?, ?, 'running', ?, ?, ?, ?, 1, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))`,
        [id, kind, source, file, params ? JSON.stringify(params) : null, owner],
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
    async progress(id, lines, published, checkpoint, lease) {
      const [set, values] = checkpointSet(checkpoint);
      // Fenced: only the lease's holder writes (owner <=> ?: NULL-safe, for a run from before owners).
      const [result] = (await pool.query(
        `UPDATE runs SET \`lines\` = ?, published = ?, ${set}, updated_at = UTC_TIMESTAMP(3)
         WHERE id = ? AND owner <=> ? AND epoch = ? AND state = 'running'`,
        [lines, published, ...values, id, lease.owner, lease.epoch],
      )) as [{ affectedRows: number }, unknown];
      return result.affectedRows === 1;
    },
    async claimStale(staleAfterMs, limit = 100, exclude = []) {
      if (limit <= 0) return [];
      const [rows] = (await pool.query(
        `SELECT id, epoch FROM runs WHERE state IN ('running', 'stopping') AND updated_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND
         ${exclude.length > 0 ? 'AND id NOT IN (?)' : ''} ORDER BY updated_at LIMIT ?`,
        [staleAfterMs * 1000, ...(exclude.length > 0 ? [[...exclude]] : []), Math.min(100, limit)],
      )) as [{ id: string; epoch: number }[], unknown];
      const won: LeasedRun[] = [];
      for (const { id, epoch } of rows) {
        // Whoever bumps the epoch first owns the run (the others match 0 rows); the previous
        // owner's updates, conditional on the old epoch, match nothing from now on.
        const [result] = (await pool.query(
          `UPDATE runs SET owner = ?, epoch = epoch + 1, updated_at = UTC_TIMESTAMP(3)
           WHERE id = ? AND epoch = ? AND state IN ('running', 'stopping') AND updated_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND`,
          [owner, id, Number(epoch), staleAfterMs * 1000],
        )) as [{ affectedRows: number }, unknown];
        if (result.affectedRows !== 1) continue;
        const run = await this.get(id);
        // Claimed again by another in between (only after another stale period): not ours any more.
        if (run && run.owner === owner && run.epoch === Number(epoch) + 1) won.push(run);
      }
      return won;
    },
    async requestStop(id) {
      // updated_at is left alone: a stopping run whose trigger is gone still goes stale and is claimed (and ended) by another.
      const [result] = (await pool.query("UPDATE runs SET state = 'stopping' WHERE id = ? AND state = 'running'", [id])) as [{ affectedRows: number }, unknown];
      return result.affectedRows === 1;
    },
    async finish(id, { state, lines, published, error = null, checkpoint }, lease) {
      const [set, values] = checkpoint ? checkpointSet(checkpoint) : ['', []];
      const [result] = (await pool.query(
        `UPDATE runs SET state = ?, \`lines\` = ?, published = ?, error = ?, ${set ? `${set}, ` : ''}updated_at = UTC_TIMESTAMP(3), finished_at = UTC_TIMESTAMP(3)
         WHERE id = ? AND owner <=> ? AND epoch = ? AND state IN ('running', 'stopping')`,
        [state, lines, published, error, ...values, id, lease.owner, lease.epoch],
      )) as [{ affectedRows: number }, unknown];
      return result.affectedRows === 1;
    },
    async stored(run) {
      const { value, at } = await countStored(run);
      return { counts: value, countedAt: new Date(at) };
    },
  };
}
