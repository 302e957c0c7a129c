// A batch's new requests added up into the rows of the log_stats_* tables
// (infra/migrations/006_log_stats.sql), one row per key, so that each table
// takes one multi-row statement per batch. Pure: the store decides which
// requests are new, which visitors it inserted first (or moved to an earlier
// minute) and which (value, visitor) pairs it inserted first, and credits them
// with creditVisitors / creditNewPairs.
import type { CountedRequest, Dimension } from './count.ts';

export interface MinuteRow {
  source: string;
  minute: Date;
  requests: number;
  bytes: number;
  /** Visitors whose first request that day is in this minute: filled by creditVisitors (may be negative: moved away). */
  visitors: number;
  /** Requests answered 1xx, 2xx, 3xx, 4xx, 5xx. */
  status: [number, number, number, number, number];
  /** Requests whose run left alerts on. */
  alerting: number;
}
export interface VisitorRow {
  source: string;
  day: string;
  visitor: Buffer;
  /** The earliest minute the visitor made a request in, within the batch. */
  firstMinute: Date;
  /** Keys (topKey) of the visitor's client_ip and user_agent values: a new visitor is new to them too. */
  implied: string[];
}
export interface TopRow {
  source: string;
  day: string;
  dimension: Dimension;
  hash: Buffer;
  value: string;
  requests: number;
  bytes: number;
  /** Visitors the value had for the first time that day: filled by creditNewPairs. */
  visitors: number;
}
export interface TopVisitorRow {
  source: string;
  day: string;
  dimension: Dimension;
  hash: Buffer;
  visitor: Buffer;
}

export interface BatchAggregate {
  minutes: Map<string, MinuteRow>;
  visitors: Map<string, VisitorRow>;
  tops: Map<string, TopRow>;
  topVisitors: Map<string, TopVisitorRow>;
}

/**
 * The visitor alone tells which client_ip and user_agent values it has (it is the hash of both),
 * so a value of these dimensions gets a new visitor exactly when the visitor is new that day: no
 * (value, visitor) pairs are kept for them. Only path and referrer need theirs (not_found has
 * none: a 404 makes no visitor).
 */
const IMPLIED_BY_VISITOR: ReadonlySet<Dimension> = new Set(['client_ip', 'user_agent']);

// Map keys only (never stored): latin1 turns 16 bytes into 16 characters, cheaper than hex's 32.
const hex = (b: Buffer) => b.toString('latin1');
export const minuteKey = (r: { source: string; minute: Date }) => `${r.source}\0${r.minute.getTime()}`;
export const visitorKey = (r: { source: string; day: string; visitor: Buffer }) => `${r.source}\0${r.day}\0${hex(r.visitor)}`;
export const topKey = (r: { source: string; day: string; dimension: string; hash: Buffer }) => `${r.source}\0${r.day}\0${r.dimension}\0${hex(r.hash)}`;
export const topVisitorKey = (r: TopVisitorRow) => `${topKey(r)}\0${hex(r.visitor)}`;

const emptyMinute = (source: string, minute: Date): MinuteRow => ({ source, minute, requests: 0, bytes: 0, visitors: 0, status: [0, 0, 0, 0, 0], alerting: 0 });

export function aggregate(requests: CountedRequest[]): BatchAggregate {
  const agg: BatchAggregate = { minutes: new Map(), visitors: new Map(), tops: new Map(), topVisitors: new Map() };
  for (const r of requests) {
    const mk = minuteKey(r);
    let m = agg.minutes.get(mk);
    if (!m) agg.minutes.set(mk, (m = emptyMinute(r.source, r.minute)));
    m.requests++;
    if (r.alerting) m.alerting++;
    m.bytes += r.bytes;
    const cls = r.statusClass - 1;
    m.status[cls] = (m.status[cls] ?? 0) + 1;

    // Keys are built from hex strings made once per request and value: this loop is hot.
    const dayPrefix = `${r.source}\0${r.day}\0`;
    const visitorHex = r.visitor ? hex(r.visitor) : '';
    let visitor: VisitorRow | undefined;
    if (r.visitor) {
      const vk = dayPrefix + visitorHex;
      visitor = agg.visitors.get(vk);
      if (!visitor) agg.visitors.set(vk, (visitor = { source: r.source, day: r.day, visitor: r.visitor, firstMinute: r.minute, implied: [] }));
      else if (r.minute < visitor.firstMinute) visitor.firstMinute = r.minute;
    }

    for (const { dimension, value, hash } of r.values) {
      const tk = `${dayPrefix}${dimension}\0${hex(hash)}`;
      let top = agg.tops.get(tk);
      if (!top) agg.tops.set(tk, (top = { source: r.source, day: r.day, dimension, hash, value, requests: 0, bytes: 0, visitors: 0 }));
      top.requests++;
      top.bytes += r.bytes;
      if (!visitor) continue;
      if (IMPLIED_BY_VISITOR.has(dimension)) {
        if (!visitor.implied.includes(tk)) visitor.implied.push(tk);
      } else {
        agg.topVisitors.set(`${tk}\0${visitorHex}`, { source: r.source, day: r.day, dimension, hash, visitor: r.visitor! });
      }
    }
  }
  return agg;
}

/**
 * A visitor's day counts it once, in the minute of its earliest request. For each visitor the
 * store inserted first (`movedFrom` null), or moved to an earlier minute of this batch (from
 * `movedFrom`, which another batch had credited): 1 to its first minute, and -1 to `movedFrom`.
 * A visitor new that day is also a new visitor of its client_ip and user_agent values.
 */
export function creditVisitors(agg: BatchAggregate, credited: Iterable<{ key: string; movedFrom: Date | null }>): void {
  for (const { key, movedFrom } of credited) {
    const v = agg.visitors.get(key);
    if (!v) throw new Error(`visitor ${JSON.stringify(key)} is not in the batch`);
    agg.minutes.get(minuteKey({ source: v.source, minute: v.firstMinute }))!.visitors++;
    if (movedFrom === null) {
      for (const tk of v.implied) agg.tops.get(tk)!.visitors++;
      continue;
    }
    if (movedFrom.getTime() <= v.firstMinute.getTime()) throw new Error(`visitor ${JSON.stringify(key)} moved to a later minute`);
    const mk = minuteKey({ source: v.source, minute: movedFrom });
    let m = agg.minutes.get(mk);
    if (!m) agg.minutes.set(mk, (m = emptyMinute(v.source, movedFrom)));
    m.visitors--;
  }
}

/** Each (value, visitor) pair new that day adds 1 to the value's visitors. */
export function creditNewPairs(agg: BatchAggregate, newPairKeys: Iterable<string>): void {
  for (const k of newPairKeys) {
    const p = agg.topVisitors.get(k);
    if (!p) throw new Error(`(value, visitor) pair ${JSON.stringify(k)} is not in the batch`);
    agg.tops.get(topKey(p))!.visitors++;
  }
}
