// What a stored request counts for in the streaming aggregates: its minute
// (UTC), its day in the log's own time zone, its status class, its bytes, the
// visitor it makes and its values in the five top-N dimensions. Adding them up
// exactly once is the store's job (stats-store.ts).
import { hash } from 'node:crypto';
import type { LogLine } from '../../shared/contracts/logs.ts';
import type { WebRequest } from '../../shared/weblog/parse.ts';
import { truncateBytes } from './truncate.ts';

export const DIMENSIONS = ['path', 'not_found', 'referrer', 'client_ip', 'user_agent'] as const;
export type Dimension = (typeof DIMENSIONS)[number];
export type StatusClass = 1 | 2 | 3 | 4 | 5;

export interface DimensionValue {
  dimension: Dimension;
  /** At most VALUE_MAX_BYTES of UTF-8 (log_stats_top.value is a TEXT). */
  value: string;
  /** MD5 of `value`: the key of the value in log_stats_top. */
  hash: Buffer;
}

export interface CountedRequest {
  runId: string;
  lineNo: number;
  source: string;
  /** The minute of the request's timestamp, in UTC. */
  minute: Date;
  /** YYYY-MM-DD: the request's date in its own time zone (the offset it was logged with), as GoAccess counts days. */
  day: string;
  statusClass: StatusClass;
  /** Bytes sent ("-" counts as 0). */
  bytes: number;
  /** The visitor the request makes (MD5 of client IP, NUL, user agent), or null: a 4xx answer, or no client address. */
  visitor: Buffer | null;
  values: DimensionValue[];
  /** The line's run left alerts on (log_stats_minute.alerting). */
  alerting: boolean;
}

/** log_stats_top.value is a TEXT: 65,535 bytes whatever the characters. */
export const VALUE_MAX_BYTES = 65_535;

// crypto.hash: one call, no Hash object per value (a third of the time of createHash here).
export const md5 = (s: string): Buffer => hash('md5', s, 'buffer');

export const utcMinute = (ts: Date): Date => new Date(Math.floor(ts.getTime() / 60_000) * 60_000);

/** The date the request was logged on, in the zone of its own offset (the log's own day). */
export const localDay = (ts: Date, tzOffsetMin: number): string => {
  const day = Math.floor((ts.getTime() + tzOffsetMin * 60_000) / 86_400_000);
  let s = dayNames.get(day);
  if (s === undefined) {
    if (dayNames.size >= 10_000) dayNames.clear(); // a log that spans centuries
    dayNames.set(day, (s = new Date(day * 86_400_000).toISOString().slice(0, 10)));
  }
  return s;
};
const dayNames = new Map<number, string>();

/**
 * MD5 of the values a log repeats (client addresses, user agents, paths, referrers), each hashed
 * once: a lookup costs a fraction of a hash. Bounded: past MEMO_MAX values it starts afresh.
 * A value longer than MEMO_VALUE_MAX_CHARS is hashed every time: long values are mostly distinct
 * (query strings), and 25,000 of 8 KiB would hold 200 MB.
 */
const MEMO_MAX = 25_000;
export const MEMO_VALUE_MAX_CHARS = 256;
const memo = new Map<string, Buffer>();
export function md5Memo(s: string): Buffer {
  if (s.length > MEMO_VALUE_MAX_CHARS) return md5(s);
  let h = memo.get(s);
  if (h === undefined) {
    if (memo.size >= MEMO_MAX) memo.clear();
    memo.set(detached(s), (h = md5(s)));
  }
  return h;
}
/** memoSize() for the tests: how many values the memo holds. */
export const memoSize = (): number => memo.size;

/**
 * A copy of `s` that shares no memory with the string it was cut from. V8 keeps a slice of 13
 * characters or more as a view of its parent: a memo key sliced from a line would keep the whole
 * line alive (100,000 lines of 8 KiB: 800 MB for a memo of short paths).
 */
const detached = (s: string): string => JSON.parse(JSON.stringify(s)) as string;

/**
 * The visitor a request makes, as GoAccess counts unique visitors: same client IP, same user agent
 * (a missing one is "-", as GoAccess has it), same day. A request answered 4xx makes none
 * (GoAccess's default, without --4xx-to-unique-count); nor does one without a client address.
 */
export function visitorOf(r: Pick<WebRequest, 'status' | 'clientIp' | 'userAgent'>): Buffer | null {
  if (r.clientIp === null || (r.status >= 400 && r.status < 500)) return null;
  return md5Memo(`${r.clientIp}\0${r.userAgent ?? '-'}`);
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/**
 * Decodes the `%XX` escapes of a request target, as GoAccess does by default (once; no `+` to
 * space). Where the decoded bytes are not valid UTF-8 (a text column cannot hold them, GoAccess
 * keeps them raw), the escapes of the offending bytes stay as written.
 */
export function decodePercent(s: string): string {
  let i = s.indexOf('%');
  if (i < 0) return s;
  let out = s.slice(0, i);
  const bytes: number[] = [];
  while (i < s.length) {
    // A run of consecutive %XX escapes, decoded together (a character may span several).
    const start = i;
    bytes.length = 0;
    while (i + 2 < s.length && s.charCodeAt(i) === 37) {
      const hi = hexDigit(s.charCodeAt(i + 1));
      const lo = hexDigit(s.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) break;
      bytes.push((hi << 4) | lo);
      i += 3;
    }
    if (bytes.length > 0) out += decodeRun(bytes, s, start);
    const next = s.indexOf('%', bytes.length > 0 ? i : i + 1);
    const end = next < 0 ? s.length : next;
    out += s.slice(i, end);
    i = end;
  }
  return out;
}

/** UTF-8 sequences of `bytes` decoded; a byte that starts no valid sequence keeps its escape (`s` from `start`, 3 characters a byte). */
function decodeRun(bytes: number[], s: string, start: number): string {
  let out = '';
  let k = 0;
  while (k < bytes.length) {
    const b0 = bytes[k]!;
    let need = -1;
    let cp = 0;
    let min = 0;
    if (b0 < 0x80) (need = 0), (cp = b0);
    else if (b0 >= 0xc2 && b0 <= 0xdf) (need = 1), (cp = b0 & 0x1f), (min = 0x80);
    else if (b0 >= 0xe0 && b0 <= 0xef) (need = 2), (cp = b0 & 0x0f), (min = 0x800);
    else if (b0 >= 0xf0 && b0 <= 0xf4) (need = 3), (cp = b0 & 0x07), (min = 0x10000);
    let ok = need >= 0 && k + need < bytes.length;
    for (let j = 1; ok && j <= need; j++) {
      const b = bytes[k + j]!;
      if ((b & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (b & 0x3f);
    }
    if (ok && need > 0 && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
    if (ok) {
      out += String.fromCodePoint(cp);
      k += need + 1;
    } else {
      out += s.slice(start + 3 * k, start + 3 * k + 3);
      k += 1;
    }
  }
  return out;
}

const isCSpace = (c: number) => c === 32 || (c >= 9 && c <= 13); // C's isspace: space, \t \n \v \f \r

/**
 * The request as GoAccess 1.7 keys it by default in its requests, static files and 404 panels:
 * the target with its query string (GoAccess strips it only with --no-query-string), `%XX`
 * decoded, line breaks removed, ASCII white space trimmed; a target that decodes to nothing stays
 * as written. Unlike GoAccess, requests that differ only by method or protocol are one value.
 */
export function requestTarget(path: string, query: string | null): string {
  const raw = query === null ? path : `${path}?${query}`;
  let v = decodePercent(raw);
  if (v.includes('\r') || v.includes('\n')) v = v.replace(/[\r\n]/g, '');
  let a = 0;
  let b = v.length;
  while (a < b && isCSpace(v.charCodeAt(a))) a++;
  while (b > a && isCSpace(v.charCodeAt(b - 1))) b--;
  return a === b ? raw : v.slice(a, b);
}

function dimensionValue(dimension: Dimension, value: string): DimensionValue {
  const cut = truncateBytes(value, VALUE_MAX_BYTES);
  return { dimension, value: cut, hash: md5Memo(cut) };
}

/** The request's values in the top-N dimensions; a missing value (no path, no referrer, ...) is left out. */
export function dimensionValues(r: WebRequest): DimensionValue[] {
  const values: DimensionValue[] = [];
  if (r.path !== null) {
    const path = dimensionValue('path', requestTarget(r.path, r.query));
    values.push(path);
    if (r.status === 404) values.push({ ...path, dimension: 'not_found' });
  }
  // The parser gives null for "-"; an empty referrer ("") names no page either.
  if (r.referrer !== null && r.referrer !== '' && r.referrer !== '-') values.push(dimensionValue('referrer', r.referrer));
  if (r.clientIp !== null) values.push(dimensionValue('client_ip', r.clientIp));
  if (r.userAgent !== null) values.push(dimensionValue('user_agent', r.userAgent));
  return values;
}

/** `r` as the parser gave it (before log-clean cuts fields to fit its columns): the values are cut to VALUE_MAX_BYTES here. */
export function countRequest(meta: Pick<LogLine, 'runId' | 'lineNo' | 'source' | 'alerts'>, r: WebRequest): CountedRequest {
  return {
    runId: meta.runId,
    lineNo: meta.lineNo,
    source: meta.source,
    minute: utcMinute(r.ts),
    day: localDay(r.ts, r.tzOffsetMin),
    statusClass: Math.floor(r.status / 100) as StatusClass,
    bytes: r.bytes ?? 0,
    visitor: visitorOf(r),
    values: dimensionValues(r),
    alerting: meta.alerts !== false,
  };
}
