// The streaming aggregates in MySQL, exactly once under at-least-once delivery.
// recordAggregates runs inside the transaction that stored the batch's clean rows,
// and is given only the requests that transaction inserted (store.ts): a line is
// new to the aggregates exactly when its web_requests row is.
//   1. The requests' visitors (log_stats_visitor): one this batch inserts first adds
//      1 to the visitors of its minute; one that was there with a later first minute
//      moves to ours (-1 there, +1 here), so that a visitor always counts in the
//      minute of its earliest request whatever the order the lines came in; a new
//      visitor is also new to its client_ip and user_agent values (it is their hash).
//      The (path or referrer, visitor) pairs (log_stats_top_visitor) go in with INSERT
//      IGNORE and a batch id, read back when only some went in: each new one adds 1
//      to its value's visitors.
//   2. Add the requests to log_stats_minute and log_stats_top
//      (INSERT ... ON DUPLICATE KEY UPDATE x = x + VALUES(x)).
// Every statement is multi-row, its rows in primary-key order (every transaction
// takes its locks in the same order, which keeps deadlocks rare; a deadlock or lock
// wait timeout runs the whole transaction again, with a new batch id), and cut to
// at most STATEMENT_MAX_BYTES, well under any server's max_allowed_packet.
import { randomBytes } from 'node:crypto';
import type { PoolConnection } from 'mysql2/promise';
import type { CountedRequest } from './count.ts';
import {
  aggregate, creditNewPairs, creditVisitors, topVisitorKey, visitorKey,
  type MinuteRow, type TopRow, type TopVisitorRow, type VisitorRow,
} from './aggregate.ts';

/** A statement's values at most this many bytes (as estimated; binary values travel as hex). */
const STATEMENT_MAX_BYTES = 1024 * 1024;
const STATEMENT_MAX_ROWS = 2_000;

type Row = Record<string, unknown>;

/** The server's clock, in a VALUES list: every writer stamps log_stats_minute.updated_at with one clock. */
const SERVER_NOW = { toSqlString: () => 'UTC_TIMESTAMP(3)' };

/**
 * What this process knows is committed: visitors with (at most) their first minute, and (value,
 * visitor) pairs. Rows of these tables are never deleted and a first minute only moves earlier, so
 * a batch need not claim what is known: a known pair is not new, and a known visitor is neither new
 * nor moved by a request at or after its known minute. Most lines of a busy site are by visitors
 * it has seen that day, on pages they have seen: this saves most visitor and pair rows.
 */
export interface KnownRows {
  visitors: Map<string, number>;
  pairs: Set<string>;
}
/**
 * Entries each map keeps (about 140 bytes each): past it, the oldest half is forgotten. 50,000:
 * 200,000 held 55 MB and kept log-clean over 250 MB of RSS; a log whose visitors of a day pass
 * the bound re-claims them either way (docs/benchmarks.md, "Memory of the log consumers").
 */
export const KNOWN_MAX = 50_000;
export const knownRows = (): KnownRows => ({ visitors: new Map(), pairs: new Set() });

function forgetOldest(m: { size: number; keys(): IterableIterator<string>; delete(k: string): boolean }): void {
  if (m.size <= KNOWN_MAX) return;
  let n = m.size - KNOWN_MAX / 2;
  for (const k of m.keys()) {
    if (n-- <= 0) break;
    m.delete(k);
  }
}

/**
 * Adds `requests` (new lines only, each once) to the aggregates, on `conn`, inside the caller's
 * transaction. Returns what to remember once that transaction has committed (`known`).
 */
export async function recordAggregates(conn: PoolConnection, requests: CountedRequest[], known: KnownRows = knownRows()): Promise<() => void> {
  if (requests.length === 0) return () => {};
  const batchId = randomBytes(16);
  const agg = aggregate(requests);
  const visitors = [...agg.visitors].filter(([k, v]) => !(v.firstMinute.getTime() >= (known.visitors.get(k) ?? Infinity))).map(([, v]) => v);
  creditVisitors(agg, await claimVisitors(conn, batchId, visitors.sort(byVisitorKey)));
  const newPairs = await claim<TopVisitorRow>(conn, batchId, {
    table: 'log_stats_top_visitor',
    columns: ['source', 'day', 'dimension', 'value_hash', 'visitor'],
    keyColumns: ['source', 'day', 'dimension', 'value_hash', 'visitor'],
    select: 'source, CAST(day AS CHAR) AS day, dimension, value_hash AS hash, visitor',
    items: [...agg.topVisitors].filter(([k]) => !known.pairs.has(k)).map(([, p]) => p).sort(byTopVisitorKey),
    values: (p) => [p.source, p.day, p.dimension, p.hash, p.visitor],
    key: topVisitorKey,
    keyOfRow: (row) => topVisitorKey(row as unknown as TopVisitorRow),
  });
  creditNewPairs(agg, newPairs.map(topVisitorKey));

  const minutes = [...agg.minutes.values()].sort((a, b) => cmp(a.source, b.source) || a.minute.getTime() - b.minute.getTime());
  for (const chunk of chunks(minutes, minuteValues)) {
    await conn.query(
      `INSERT INTO log_stats_minute (source, minute, requests, bytes, visitors, s1xx, s2xx, s3xx, s4xx, s5xx, alerting, updated_at) VALUES ?
       ON DUPLICATE KEY UPDATE requests = requests + VALUES(requests), bytes = bytes + VALUES(bytes), visitors = visitors + VALUES(visitors),
         s1xx = s1xx + VALUES(s1xx), s2xx = s2xx + VALUES(s2xx), s3xx = s3xx + VALUES(s3xx), s4xx = s4xx + VALUES(s4xx), s5xx = s5xx + VALUES(s5xx),
         alerting = alerting + VALUES(alerting), updated_at = VALUES(updated_at)`,
      [chunk],
    );
  }
  const tops = [...agg.tops.values()].sort(byTopKey);
  for (const chunk of chunks(tops, topValues)) {
    await conn.query(
      `INSERT INTO log_stats_top (source, day, dimension, value_hash, value, requests, bytes, visitors) VALUES ?
       ON DUPLICATE KEY UPDATE requests = requests + VALUES(requests), bytes = bytes + VALUES(bytes), visitors = visitors + VALUES(visitors)`,
      [chunk],
    );
  }
  return () => {
    for (const [k, v] of agg.visitors) {
      const first = v.firstMinute.getTime();
      if (!(first >= (known.visitors.get(k) ?? Infinity))) known.visitors.set(k, first);
    }
    for (const k of agg.topVisitors.keys()) known.pairs.add(k);
    forgetOldest(known.visitors);
    forgetOldest(known.pairs);
  };
}

const minuteValues = (m: MinuteRow) => [m.source, m.minute, m.requests, m.bytes, m.visitors, ...m.status, m.alerting, SERVER_NOW];
const topValues = (t: TopRow) => [t.source, t.day, t.dimension, t.hash, t.value, t.requests, t.bytes, t.visitors];

interface ClaimSpec<T> {
  table: string;
  /** Columns of `values`; the batch id is appended. */
  columns: string[];
  /** The table's primary key. */
  keyColumns: string[];
  /** The primary key as read back, in the shape keyOfRow reads. */
  select: string;
  /** In primary-key order. */
  items: T[];
  values(item: T): unknown[];
  key(item: T): string;
  keyOfRow(row: Row): string;
}

/**
 * INSERT IGNORE the items with this batch's id; returns those this transaction inserted (the others
 * were there before, or were inserted by another transaction, which then holds them until it ends).
 * When every row or none went in, the affected-rows count says so; otherwise the rows that carry
 * the batch id are read back.
 */
async function claim<T>(conn: PoolConnection, batchId: Buffer, spec: ClaimSpec<T>): Promise<T[]> {
  if (spec.items.length === 0) return [];
  let inserted = 0;
  for (const chunk of chunks(spec.items, (item) => [...spec.values(item), batchId])) {
    const [result] = (await conn.query(`INSERT IGNORE INTO ${spec.table} (${spec.columns.join(', ')}, batch_id) VALUES ?`, [chunk])) as [{ affectedRows: number }, unknown];
    inserted += result.affectedRows;
  }
  if (inserted === spec.items.length) return spec.items;
  if (inserted === 0) return [];
  const byKey = new Map(spec.items.map((item) => [spec.key(item), item]));
  const keyIndexes = spec.keyColumns.map((c) => spec.columns.indexOf(c));
  const ours: T[] = [];
  for (const chunk of chunks(spec.items, (item) => keyIndexes.map((i) => spec.values(item)[i]))) {
    const [rows] = (await conn.query(
      `SELECT ${spec.select} FROM ${spec.table} WHERE (${spec.keyColumns.join(', ')}) IN (?) AND batch_id = ?`,
      [chunk, batchId],
    )) as [Row[], unknown];
    for (const row of rows) {
      const item = byKey.get(spec.keyOfRow(row));
      if (item === undefined) throw new Error(`${spec.table}: read back a row this batch did not insert`);
      ours.push(item);
    }
  }
  if (ours.length !== inserted) throw new Error(`${spec.table}: inserted ${inserted} rows but read back ${ours.length}`);
  return ours;
}

/**
 * The batch's visitors with the earliest minute of each: a visitor not there yet is inserted; one
 * there with a later first minute is moved to ours. Returns those this batch inserted or moved
 * (the rows that carry its id), with the minute a moved one came from.
 */
async function claimVisitors(conn: PoolConnection, batchId: Buffer, visitors: VisitorRow[]): Promise<{ key: string; movedFrom: Date | null }[]> {
  if (visitors.length === 0) return [];
  for (const chunk of chunks(visitors, (v) => [v.source, v.day, v.visitor, v.firstMinute, batchId])) {
    // The assignments run left to right, each seeing those before: first_minute changes last.
    await conn.query(
      `INSERT INTO log_stats_visitor (source, day, visitor, first_minute, batch_id) VALUES ?
       ON DUPLICATE KEY UPDATE
         moved_from = IF(VALUES(first_minute) < first_minute, first_minute, moved_from),
         batch_id = IF(VALUES(first_minute) < first_minute, VALUES(batch_id), batch_id),
         first_minute = LEAST(first_minute, VALUES(first_minute))`,
      [chunk],
    );
  }
  const ours: { key: string; movedFrom: Date | null }[] = [];
  for (const chunk of chunks(visitors, (v) => [v.source, v.day, v.visitor])) {
    const [rows] = (await conn.query(
      'SELECT source, CAST(day AS CHAR) AS day, visitor, moved_from AS movedFrom FROM log_stats_visitor WHERE (source, day, visitor) IN (?) AND batch_id = ?',
      [chunk, batchId],
    )) as [{ source: string; day: string; visitor: Buffer; movedFrom: Date | null }[], unknown];
    for (const row of rows) ours.push({ key: visitorKey(row), movedFrom: row.movedFrom });
  }
  return ours;
}

/** `items` as rows of values, cut into statements of at most STATEMENT_MAX_BYTES (estimated) and STATEMENT_MAX_ROWS. */
export function chunks<T>(items: T[], values: (item: T) => unknown[]): unknown[][][] {
  const out: unknown[][][] = [];
  let chunk: unknown[][] = [];
  let bytes = 0;
  for (const item of items) {
    const row = values(item);
    const size = row.reduce<number>((n, v) => n + sizeOf(v), 4);
    if (chunk.length > 0 && (bytes + size > STATEMENT_MAX_BYTES || chunk.length >= STATEMENT_MAX_ROWS)) out.push(chunk), (chunk = []), (bytes = 0);
    chunk.push(row);
    bytes += size;
  }
  if (chunk.length > 0) out.push(chunk);
  return out;
}

/** Bytes a value takes in the statement: strings may double when escaped, buffers travel as hex. */
function sizeOf(v: unknown): number {
  if (typeof v === 'string') return 2 * Buffer.byteLength(v, 'utf8') + 4;
  if (Buffer.isBuffer(v)) return 2 * v.length + 4;
  return 32;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const byVisitorKey = (a: VisitorRow, b: VisitorRow) => cmp(a.source, b.source) || cmp(a.day, b.day) || Buffer.compare(a.visitor, b.visitor);
const byTopKey = (a: Omit<TopRow, 'value' | 'requests' | 'bytes' | 'visitors'>, b: Omit<TopRow, 'value' | 'requests' | 'bytes' | 'visitors'>) =>
  cmp(a.source, b.source) || cmp(a.day, b.day) || cmp(a.dimension, b.dimension) || Buffer.compare(a.hash, b.hash);
const byTopVisitorKey = (a: TopVisitorRow, b: TopVisitorRow) => byTopKey(a, b) || Buffer.compare(a.visitor, b.visitor);
