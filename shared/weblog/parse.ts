// Parser for one web-server access log line (nginx `combined`, nginx `main`,
// Apache `combined`/`common`, nginx `vhost_combined`-style host prefix).
//
// Shape accepted:
//
//   [vhost[:port] ] client ident user [dd/Mon/yyyy:HH:MM:SS[.fff] +zzzz] "request" status bytes
//       [ "referrer" "user_agent" [ "x_forwarded_for" [anything...]]]
//
// - `client` may be a single address (IPv4, IPv6, `unix:`, `localhost`, ...),
//   `-`, or an X-Forwarded-For style list: `a, b, c`, `"a, b, c" d`, `a, b c`
//   (the same list syntax Filebeat's nginx module accepts).
// - `user` must not contain spaces (it is the last space-separated token before
//   the timestamp).
// - Quoted fields accept both escapings: nginx `\xHH` (upper-case hex) and
//   Apache `\"`, `\\`, `\xhh` (lower-case hex). See `unescape` for the rules.
//
// It is a left-to-right scanner over char codes with `indexOf` for the long
// hops: no regular expressions on the hot path, and no allocation per line
// beyond the substrings of the fields, the Date and the result objects. Lines
// that hold no backslash at all (nearly all of them) skip escape handling.
//
// Truncated lines: a quoted field whose closing quote is missing is rejected
// with `unterminated quoted field <name>` - including the last field (e.g.
// line 8899 of elastic's apache_logs, whose user agent lacks its closing
// quote). A truncated line is an incomplete record: we cannot know whether the
// user agent (or anything after it) was cut, and accepting it would make a
// truncated row indistinguishable from a complete one. Callers that want to
// salvage such lines can see the reason and decide.

export interface WebRequest {
  ts: Date;                 // UTC instant, millisecond precision
  tzOffsetMin: number;      // e.g. +0330 -> 210, -0700 -> -420
  /** Address in client position (`-` -> null). For a list, Filebeat's choice: first entry outside 10/8, 172.16/12, 192.168/16, 127/8, else the first. */
  clientIp: string | null;
  /** The client-position address list, or the trailing nginx `main` field (which wins), as "a, b, c"; null when absent or "-". */
  forwardedFor: string | null;
  /** `host` / `host:port` prefix before the client address (vhost_combined / Apache %v). */
  vhost: string | null;
  remoteUser: string | null;
  /** Request line as logged, unescaped ("" for an empty request). */
  request: string;
  /** Split of `METHOD target [HTTP/x.y]`; query without the '?'; all null for "", "-" or garbage. */
  method: string | null; path: string | null; query: string | null; protocol: string | null;
  status: number;
  bytes: number | null;     // "-" -> null
  referrer: string | null; userAgent: string | null;
}

export type ParseResult = { ok: true; value: WebRequest } | { ok: false; reason: string };

const SPACE = 32;
const QUOTE = 34;
const BACKSLASH = 92;

function fail(reason: string): ParseResult {
  return { ok: false, reason };
}

function digit(s: string, i: number): number {
  const c = s.charCodeAt(i); // NaN past the end: both comparisons are false
  return c >= 48 && c <= 57 ? c - 48 : -1;
}

function monthIndex(a: number, b: number, c: number): number {
  switch (a) {
    case 74: // J
      if (b === 97 && c === 110) return 0; // Jan
      if (b === 117 && c === 110) return 5; // Jun
      if (b === 117 && c === 108) return 6; // Jul
      return -1;
    case 70: return b === 101 && c === 98 ? 1 : -1; // Feb
    case 77: // M
      if (b === 97 && c === 114) return 2; // Mar
      if (b === 97 && c === 121) return 4; // May
      return -1;
    case 65: // A
      if (b === 112 && c === 114) return 3; // Apr
      if (b === 117 && c === 103) return 7; // Aug
      return -1;
    case 83: return b === 101 && c === 112 ? 8 : -1; // Sep
    case 79: return b === 99 && c === 116 ? 9 : -1; // Oct
    case 78: return b === 111 && c === 118 ? 10 : -1; // Nov
    case 68: return b === 101 && c === 99 ? 11 : -1; // Dec
    default: return -1;
  }
}

const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function isLeap(y: number): boolean {
  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
}

/**
 * Index of the closing quote of a quoted field whose content starts at
 * `start`, or -1 when there is none. A closing quote is a `"` that is followed
 * by a space or the end of the line; any other `"` is taken literally (some
 * loggers do not escape quotes). When the line holds backslashes, a `"`
 * preceded by an odd number of backslashes is escaped (Apache `\"`).
 */
function findClose(line: string, start: number, end: number, hasBackslash: boolean): number {
  let from = start;
  for (;;) {
    const q = line.indexOf('"', from);
    if (q < 0 || q >= end) return -1;
    from = q + 1;
    if (hasBackslash) {
      let k = q - 1;
      while (k >= start && line.charCodeAt(k) === BACKSLASH) k--;
      if (((q - 1 - k) & 1) === 1) continue; // escaped quote
    }
    if (q + 1 === end || line.charCodeAt(q + 1) === SPACE) return q;
  }
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

// Reused scratch buffer for `\xHH` runs (grows as needed, never shrinks).
let runBytes = new Uint8Array(256);

/** Strict UTF-8 decode of runBytes[0..n); null when the bytes are not valid UTF-8. */
function decodeUtf8(n: number): string | null {
  let out = '';
  let i = 0;
  while (i < n) {
    const b0 = runBytes[i]!;
    if (b0 < 0x80) {
      out += String.fromCharCode(b0);
      i += 1;
      continue;
    }
    let need: number;
    let cp: number;
    let min: number;
    if (b0 >= 0xc2 && b0 <= 0xdf) { need = 1; cp = b0 & 0x1f; min = 0x80; }
    else if (b0 >= 0xe0 && b0 <= 0xef) { need = 2; cp = b0 & 0x0f; min = 0x800; }
    else if (b0 >= 0xf0 && b0 <= 0xf4) { need = 3; cp = b0 & 0x07; min = 0x10000; }
    else return null;
    if (i + need >= n) return null; // truncated sequence
    for (let k = 1; k <= need; k++) {
      const b = runBytes[i + k]!;
      if ((b & 0xc0) !== 0x80) return null;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return null;
    out += String.fromCodePoint(cp);
    i += need + 1;
  }
  return out;
}

/**
 * Unescapes line[s..e):
 * - `\"` -> `"` and `\\` -> `\` (Apache);
 * - a run of consecutive `\xHH` escapes (either hex case: nginx writes upper,
 *   Apache lower) is decoded to bytes; when those bytes are valid UTF-8 the run
 *   becomes that text, otherwise the run is kept verbatim (`\xe4\xe5...`), so
 *   binary garbage and legacy 8-bit text stay readable and lossless;
 * - any other backslash sequence is kept as is. No percent-decoding.
 */
function unescape(line: string, s: number, e: number): string {
  let i = line.indexOf('\\', s);
  if (i < 0 || i >= e) return line.slice(s, e);
  let out = '';
  let last = s;
  while (i >= 0 && i < e) {
    const n = i + 1 < e ? line.charCodeAt(i + 1) : -1;
    if (n === QUOTE || n === BACKSLASH) {
      out += line.slice(last, i);
      out += n === QUOTE ? '"' : '\\';
      last = i + 2;
      i = line.indexOf('\\', last);
      continue;
    }
    if (n === 120 /* x */) {
      let j = i;
      let count = 0;
      while (j + 4 <= e && line.charCodeAt(j) === BACKSLASH && line.charCodeAt(j + 1) === 120) {
        const hi = hexVal(line.charCodeAt(j + 2));
        const lo = hexVal(line.charCodeAt(j + 3));
        if (hi < 0 || lo < 0) break;
        if (count === runBytes.length) {
          const bigger = new Uint8Array(runBytes.length * 2);
          bigger.set(runBytes);
          runBytes = bigger;
        }
        runBytes[count++] = (hi << 4) | lo;
        j += 4;
      }
      if (count > 0) {
        const text = decodeUtf8(count);
        if (text !== null) {
          out += line.slice(last, i);
          out += text;
          last = j;
        }
        // invalid UTF-8: leave the run in place (it is copied verbatim later)
        i = line.indexOf('\\', j);
        continue;
      }
    }
    // lone or unknown escape: keep verbatim
    i = line.indexOf('\\', i + 1);
  }
  return last === s ? line.slice(s, e) : out + line.slice(last, e);
}

/** Field value: `-` -> null, otherwise the (unescaped when needed) text. */
function field(line: string, s: number, e: number, hasBackslash: boolean): string | null {
  if (e - s === 1 && line.charCodeAt(s) === 45 /* - */) return null;
  return hasBackslash ? unescape(line, s, e) : line.slice(s, e);
}

/**
 * Filebeat's nginx module (ingest pipeline `isPrivate` painless script): an
 * entry is "private" when its first two dot-separated tokens parse as integers
 * and it is in 10/8, 172.16/12, 192.168/16 or 127/8. Anything else - IPv6,
 * `localhost`, `unix:` - counts as public.
 */
function filebeatIsPrivate(ip: string): boolean {
  // java.util.StringTokenizer(ip, ".") skips empty tokens
  let i = 0;
  const n = ip.length;
  const nums = [0, 0];
  for (let t = 0; t < 2; t++) {
    while (i < n && ip.charCodeAt(i) === 46) i++;
    if (i === n) return false; // NoSuchElementException -> false
    const start = i;
    let v = 0;
    let sign = 1;
    const c0 = ip.charCodeAt(i);
    if (c0 === 43 || c0 === 45) { sign = c0 === 45 ? -1 : 1; i++; }
    if (i === n || ip.charCodeAt(i) === 46) return false;
    while (i < n && ip.charCodeAt(i) !== 46) {
      const d = digit(ip, i);
      if (d < 0) return false; // NumberFormatException -> false
      v = v * 10 + d;
      if (v > 2147483648) return false;
      i++;
    }
    if (i - start > 11) return false;
    nums[t] = sign * v;
  }
  const a = nums[0]!;
  const b = nums[1]!;
  return a === 10 || a === 127 || (a === 192 && b === 168) || (a === 172 && b >= 16 && b <= 31);
}

/** Filebeat's choice of source.ip in an address list: first non-private entry, else the first entry. */
function filebeatPick(items: readonly string[]): string {
  for (const it of items) if (!filebeatIsPrivate(it)) return it;
  return items[0]!;
}

// Result slots of parseClient (module-level to avoid a per-line object).
let cVhost: string | null = null;
let cIp: string | null = null;
let cList: string | null = null;

/**
 * Slow path for a client part that contains a space, a comma or a quote:
 * an optional `host[:port]` prefix, then one address or an address list.
 * As in Filebeat's grok, a first whitespace-separated token that neither
 * starts with a quote nor contains a comma and is followed by more address
 * text is the vhost; everything else is one list split on `"`, `,` and
 * whitespace (so `"a, b" c` and `a, b c` are the three-item lists Filebeat
 * reports as nginx.access.remote_ip_list).
 */
function parseClient(part: string): void {
  cVhost = null;
  let rest = part;
  const sp = part.search(/\s/);
  if (sp > 0) {
    const first = part.slice(0, sp);
    const after = part.slice(sp).trimStart();
    if (first.charCodeAt(0) !== QUOTE && first.indexOf(',') < 0 && after !== '' && after.charCodeAt(0) !== 44) {
      cVhost = first;
      rest = after;
    }
  }
  const items = rest.split(/[\s,"]+/).filter((x) => x !== '' && x !== '-');
  if (items.length === 0) {
    cIp = null;
    cList = null;
  } else if (items.length === 1) {
    cIp = items[0]!;
    cList = null;
  } else {
    cIp = filebeatPick(items);
    cList = items.join(', ');
  }
}

/** "a,b ,  c" -> "a, b, c"; null when empty or only "-". */
function normaliseList(v: string | null): string | null {
  if (v === null) return null;
  if (v.indexOf(',') < 0) {
    const t = v.trim();
    return t === '' || t === '-' ? null : t;
  }
  const items = v.split(',').map((x) => x.trim()).filter((x) => x !== '' && x !== '-');
  return items.length === 0 ? null : items.join(', ');
}

function isMethodChar(c: number): boolean {
  return (c >= 65 && c <= 90) || c === 45 || c === 95; // A-Z - _
}

function parseLine(line: string): ParseResult {
  let end = line.length;
  while (end > 0 && (line.charCodeAt(end - 1) === 13 || line.charCodeAt(end - 1) === 10)) end--;
  if (end === 0) return fail('empty line');
  const hasBackslash = line.indexOf('\\') >= 0;

  // ---- header: [vhost ]client ident user
  let tsOpen = line.indexOf(' [');
  while (tsOpen >= 0 && tsOpen < end && digit(line, tsOpen + 2) < 0) tsOpen = line.indexOf(' [', tsOpen + 1);
  if (tsOpen < 0 || tsOpen >= end) return fail('missing timestamp');
  const userSp = tsOpen > 0 ? line.lastIndexOf(' ', tsOpen - 1) : -1;
  if (userSp <= 0) return fail('missing client address');
  const identSp = line.lastIndexOf(' ', userSp - 1);
  if (identSp <= 0) return fail('missing client address');
  const remoteUser = field(line, userSp + 1, tsOpen, hasBackslash);

  let vhost: string | null = null;
  let clientIp: string | null;
  let forwardedFor: string | null = null;
  let simple = true;
  for (let i = 0; i < identSp; i++) {
    const c = line.charCodeAt(i);
    if (c === SPACE || c === 44 || c === QUOTE || c === 9) { simple = false; break; }
  }
  if (simple) {
    clientIp = identSp === 1 && line.charCodeAt(0) === 45 ? null : line.slice(0, identSp);
  } else {
    parseClient(line.slice(0, identSp));
    vhost = cVhost;
    clientIp = cIp;
    forwardedFor = cList;
  }

  // ---- timestamp: dd/Mon/yyyy:HH:MM:SS[.fff] +zzzz]
  let p = tsOpen + 2;
  if (p + 27 > end) return fail('invalid timestamp (truncated)');
  const d1 = digit(line, p), d2 = digit(line, p + 1);
  if (d1 < 0 || d2 < 0 || line.charCodeAt(p + 2) !== 47) return fail('invalid timestamp day');
  const day = d1 * 10 + d2;
  const mon = monthIndex(line.charCodeAt(p + 3), line.charCodeAt(p + 4), line.charCodeAt(p + 5));
  if (mon < 0 || line.charCodeAt(p + 6) !== 47) return fail('invalid timestamp month');
  const y1 = digit(line, p + 7), y2 = digit(line, p + 8), y3 = digit(line, p + 9), y4 = digit(line, p + 10);
  if (y1 < 0 || y2 < 0 || y3 < 0 || y4 < 0 || line.charCodeAt(p + 11) !== 58) return fail('invalid timestamp year');
  const year = y1 * 1000 + y2 * 100 + y3 * 10 + y4;
  if (day < 1 || day > DAYS_IN_MONTH[mon]! || (mon === 1 && day === 29 && !isLeap(year))) return fail('invalid timestamp day');
  const h1 = digit(line, p + 12), h2 = digit(line, p + 13);
  const m1 = digit(line, p + 15), m2 = digit(line, p + 16);
  const s1 = digit(line, p + 18), s2 = digit(line, p + 19);
  if (h1 < 0 || h2 < 0 || line.charCodeAt(p + 14) !== 58 || m1 < 0 || m2 < 0 ||
      line.charCodeAt(p + 17) !== 58 || s1 < 0 || s2 < 0) return fail('invalid timestamp time');
  const hour = h1 * 10 + h2, minute = m1 * 10 + m2, second = s1 * 10 + s2;
  if (hour > 23 || minute > 59 || second > 59) return fail('invalid timestamp time');
  p += 20;
  let ms = 0;
  if (line.charCodeAt(p) === 46) { // optional fraction, kept to milliseconds
    p++;
    let scale = 100;
    const fs = p;
    for (let d = digit(line, p); d >= 0; d = digit(line, ++p)) {
      ms += d * scale;
      scale /= 10;
    }
    ms = Math.floor(ms);
    if (p === fs) return fail('invalid timestamp fraction');
  }
  if (line.charCodeAt(p) !== SPACE) return fail('invalid timestamp zone');
  const sign = line.charCodeAt(p + 1);
  const z1 = digit(line, p + 2), z2 = digit(line, p + 3), z3 = digit(line, p + 4), z4 = digit(line, p + 5);
  if ((sign !== 43 && sign !== 45) || z1 < 0 || z2 < 0 || z3 < 0 || z4 < 0) return fail('invalid timestamp zone');
  const zh = z1 * 10 + z2, zm = z3 * 10 + z4;
  if (zh > 23 || zm > 59) return fail('invalid timestamp zone');
  if (line.charCodeAt(p + 6) !== 93) return fail('invalid timestamp (missing "]")');
  const tzAbs = zh * 60 + zm;
  const tzOffsetMin = tzAbs === 0 ? 0 : sign === 45 ? -tzAbs : tzAbs;
  // Date.UTC maps years 0..99 to 1900..1999; shift by 400 Gregorian years (146097 days) instead.
  const epochMs = year < 100
    ? Date.UTC(year + 400, mon, day, hour, minute, second, ms) - 146097 * 86400000
    : Date.UTC(year, mon, day, hour, minute, second, ms);
  const ts = new Date(epochMs - tzOffsetMin * 60000);
  p += 7;

  // ---- "request"
  if (line.charCodeAt(p) !== SPACE || line.charCodeAt(p + 1) !== QUOTE) return fail('missing quoted field request');
  p += 2;
  const reqEnd = findClose(line, p, end, hasBackslash);
  if (reqEnd < 0) return fail('unterminated quoted field request');
  const request = hasBackslash ? unescape(line, p, reqEnd) : line.slice(p, reqEnd);
  p = reqEnd + 1;

  // ---- status
  if (p >= end) return fail('missing status');
  p++; // the space findClose guaranteed
  let status = 0;
  const st = p;
  for (let d = digit(line, p); d >= 0; d = digit(line, ++p)) status = status * 10 + d;
  if (p === st || (p < end && line.charCodeAt(p) !== SPACE)) return fail('status is not a number');
  if (p - st !== 3 || status < 100) return fail('status out of range');

  // ---- bytes
  if (p >= end) return fail('missing bytes');
  p++;
  let bytes: number | null = 0;
  if (line.charCodeAt(p) === 45 && (p + 1 === end || line.charCodeAt(p + 1) === SPACE)) {
    bytes = null;
    p++;
  } else {
    const bs = p;
    for (let d = digit(line, p); d >= 0; d = digit(line, ++p)) bytes = bytes * 10 + d;
    if (p === bs || (p < end && line.charCodeAt(p) !== SPACE)) return fail('bytes is not a number');
    if (p - bs > 15) return fail('bytes out of range');
  }

  // ---- "referrer" "user_agent" (absent in Common Log Format)
  let referrer: string | null = null;
  let userAgent: string | null = null;
  let xff: string | null = null;
  if (p < end) {
    if (line.charCodeAt(p + 1) !== QUOTE) return fail('missing quoted field referrer');
    p += 2;
    const refEnd = findClose(line, p, end, hasBackslash);
    if (refEnd < 0) return fail('unterminated quoted field referrer');
    referrer = field(line, p, refEnd, hasBackslash);
    p = refEnd + 1;
    if (p >= end || line.charCodeAt(p + 1) !== QUOTE) return fail('missing quoted field user_agent');
    p += 2;
    const uaEnd = findClose(line, p, end, hasBackslash);
    if (uaEnd < 0) return fail('unterminated quoted field user_agent');
    userAgent = field(line, p, uaEnd, hasBackslash);
    p = uaEnd + 1;
    // ---- optional "x_forwarded_for" (nginx `main`); anything after it is ignored
    if (p < end && line.charCodeAt(p + 1) === QUOTE) {
      p += 2;
      const xEnd = findClose(line, p, end, hasBackslash);
      if (xEnd < 0) return fail('unterminated quoted field x_forwarded_for');
      xff = normaliseList(field(line, p, xEnd, hasBackslash));
    }
  }
  // The trailing $http_x_forwarded_for field wins over a list in client position.
  if (xff !== null) forwardedFor = xff;

  // ---- split the request line: METHOD SP target [SP HTTP/x.y]
  let method: string | null = null;
  let path: string | null = null;
  let query: string | null = null;
  let protocol: string | null = null;
  const rl = request.length;
  if (rl > 1) {
    let m = 0;
    while (m < rl && m <= 32 && isMethodChar(request.charCodeAt(m))) m++;
    const c0 = request.charCodeAt(0);
    if (m > 0 && m < rl && request.charCodeAt(m) === SPACE && c0 >= 65 && c0 <= 90) {
      let tEnd = rl;
      const ls = request.lastIndexOf(' ');
      if (ls > m && request.startsWith('HTTP/', ls + 1)) {
        protocol = request.slice(ls + 1);
        tEnd = ls;
      }
      const tStart = m + 1;
      if (tEnd > tStart) {
        method = request.slice(0, m);
        const qi = request.indexOf('?', tStart);
        if (qi >= 0 && qi < tEnd) {
          path = request.slice(tStart, qi);
          query = request.slice(qi + 1, tEnd);
        } else {
          path = request.slice(tStart, tEnd);
        }
      } else {
        protocol = null; // "GET " with no target: garbage, all parts stay null
      }
    }
  }

  return {
    ok: true,
    value: {
      ts, tzOffsetMin, clientIp, forwardedFor, vhost, remoteUser, request,
      method, path, query, protocol, status, bytes, referrer, userAgent,
    },
  };
}

/**
 * Parses one access log line (without its newline; a trailing `\r` is
 * ignored). Never throws: returns `{ok:false, reason}` for anything that is
 * not an access log line.
 */
export function parseAccessLine(line: string): ParseResult {
  if (typeof line !== 'string') return fail('not a string');
  try {
    return parseLine(line);
  } catch (err) {
    return fail(`internal parser error: ${err instanceof Error ? err.message : String(err)}`);
  }
}
