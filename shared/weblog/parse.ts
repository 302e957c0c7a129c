// Parser for one web-server access log line (nginx `combined`, nginx `main`,
// Apache `combined`/`common`, nginx `vhost_combined`-style host prefix).
//
// Shape accepted:
//
//   [vhost[:port] ] [xff_list ] client ident user [dd/Mon/yyyy:HH:MM:SS[.fff] +zzzz] "request" status bytes
//       [ "referrer" "user_agent" [ "x_forwarded_for" [anything...]]]
//
// Header fields (everything before the timestamp) are read LEFT TO RIGHT, and
// the remote user is whatever lies between the ident and the timestamp. The
// user is the one header field a client controls (HTTP basic auth), and it may
// hold spaces (`1.2.3.4 - John Smith [...]`): reading from the left means no
// user can move the client address, the vhost or the address list.
//
// - A "field" is a space-separated token; two kinds span several tokens:
//   a quoted field (`"a, b, c"`, up to the `"` followed by a space), and an
//   unquoted address list, where a token ending in `,` continues the field
//   (`a, b, c`). A quoted field, or one holding a comma, is an address list.
// - Prefixes: a vhost (`host`, `host:port`, `[v6]:port`: a field that is not a
//   list) and/or an address list (X-Forwarded-For style, `"a, b" c` or
//   `a, b c`, as Filebeat's nginx module reads them) may come before the client.
//   A field is read as a prefix only when what follows it has the full shape
//   `client ident user` - a client that is not `-`, an ident, and a non-empty
//   user - before the timestamp. Why this tells them apart: without a prefix,
//   the field after the client is the ident, which is `-` on any server that
//   does not run identd lookups (Apache IdentityCheck is off by default, nginx
//   never logs one), while after a prefix it is the client address, never `-`.
//   Neither depends on the user, so a user with spaces cannot turn the client
//   into a "prefix". Known ambiguity: a line without prefix whose ident is not
//   `-` AND whose user holds a space is read as having a prefix; the format
//   itself cannot tell them apart, only the server's LogFormat can.
// - `client` is a single address (IPv4, IPv6, `unix:`, `localhost`, a host
//   name, ...), `-`, or an address list. With a list prefix, the prefix's
//   entries and the client form one list (`"a, b" c` -> `a, b, c`), as in
//   Filebeat; clientIp is then Filebeat's pick (see WebRequest.clientIp).
// - Quoted fields accept both escapings: nginx `\xHH` (upper-case hex) and
//   Apache `\"`, `\\`, `\xhh` (lower-case hex). See `unescape` for the rules.
// - The timestamp is the first ` [` followed by `dd/` (a user holding ` [1`
//   does not end the header early); a user holding a complete fake
//   ` [dd/Mon/yyyy...` cannot be told apart from the real one.
// - Range checks, each rejected with a reason naming the value: status
//   100..599; year 1000..9999 and the instant in UTC also in years 1000..9999
//   (the DATETIME range); day of month; hour 00..23; minute and second 00..59;
//   time-zone offset -1200..+1400 with minutes 00..59 (every offset in use).
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

/** The DATETIME range in UTC: [1000-01-01, 10000-01-01). */
const MIN_EPOCH_MS = Date.UTC(1000, 0, 1);
const END_EPOCH_MS = Date.UTC(10000, 0, 1);

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

const COMMA = 44;
const DASH = 45;

/** First index >= i that is not a space (or `limit`). */
function skipSpaces(line: string, i: number, limit: number): number {
  while (i < limit && line.charCodeAt(i) === SPACE) i++;
  return i;
}

/** End (exclusive) of the space-free token starting at `s`, at most `limit`. */
function tokenEnd(line: string, s: number, limit: number): number {
  // a loop, not indexOf: header tokens are a few characters long, and the call costs more than the scan
  while (s < limit && line.charCodeAt(s) !== SPACE) s++;
  return s;
}

/**
 * End (exclusive) of the address field starting at `s` (a non-space), at most
 * `limit`; -1 when it opens a quote that is not closed before `limit`.
 * A quoted field runs to its closing quote; an unquoted one is a token, and a
 * token ending in `,` continues it with the next token (`a, b, c`).
 */
function addressEnd(line: string, s: number, limit: number, hasBackslash: boolean): number {
  if (line.charCodeAt(s) === QUOTE) {
    const q = findClose(line, s + 1, limit, hasBackslash);
    return q < 0 ? -1 : q + 1;
  }
  let e = tokenEnd(line, s, limit);
  while (e < limit && line.charCodeAt(e - 1) === COMMA) {
    const n = skipSpaces(line, e, limit);
    if (n === limit) break;
    e = tokenEnd(line, n, limit);
  }
  return e;
}

/** Whether line[s..e) is an address list: quoted, or holding a comma. */
function isList(line: string, s: number, e: number): boolean {
  if (line.charCodeAt(s) === QUOTE) return true;
  // a loop, not indexOf: the field is short, and the next comma is often far away in the user agent
  for (let i = s; i < e; i++) if (line.charCodeAt(i) === COMMA) return true;
  return false;
}

function isDash(line: string, s: number, e: number): boolean {
  return e - s === 1 && line.charCodeAt(s) === DASH;
}

/**
 * Whether the field ending at `e` is a prefix: what follows it must be
 * `client ident user` before `limit` (the timestamp), with a client that is
 * not `-`. Returns the client's end (it starts at skipSpaces(e)), or -1 when
 * the field is no prefix. Only the two fields after `e` are looked at, never
 * the user's text (see the header comment).
 */
function prefixClientEnd(line: string, e: number, limit: number, hasBackslash: boolean): number {
  const cs = skipSpaces(line, e, limit);
  if (cs === e || cs >= limit) return -1;
  const ce = addressEnd(line, cs, limit, hasBackslash);
  if (ce < 0 || isDash(line, cs, ce)) return -1;
  const is = skipSpaces(line, ce, limit);
  if (is === ce || is >= limit) return -1;
  const us = skipSpaces(line, tokenEnd(line, is, limit), limit);
  return us >= limit ? -1 : ce;
}

/** Appends the entries of the address list line[s..e) (split on quotes, commas and white space; `-` dropped). */
function listItems(line: string, s: number, e: number, out: string[]): void {
  let i = s;
  while (i < e) {
    let c = line.charCodeAt(i);
    while (i < e && (c === QUOTE || c === COMMA || c === SPACE || c === 9)) c = line.charCodeAt(++i);
    const b = i;
    while (i < e && c !== QUOTE && c !== COMMA && c !== SPACE && c !== 9) c = line.charCodeAt(++i);
    if (i > b && !isDash(line, b, i)) out.push(line.slice(b, i));
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

/**
 * Index of the space before the timestamp's `[`, or -1. The first ` [dd/` wins;
 * when there is none, the first ` [` + digit, so that a malformed timestamp
 * gets an "invalid timestamp ..." reason rather than "missing timestamp".
 */
function findTimestamp(line: string, end: number): number {
  let loose = -1;
  for (let i = line.indexOf(' ['); i >= 0 && i < end; i = line.indexOf(' [', i + 1)) {
    if (digit(line, i + 2) < 0) continue;
    if (digit(line, i + 3) >= 0 && line.charCodeAt(i + 4) === 47) return i;
    if (loose < 0) loose = i;
  }
  return loose;
}

function isMethodChar(c: number): boolean {
  return (c >= 65 && c <= 90) || c === 45 || c === 95; // A-Z - _
}

function parseLine(line: string): ParseResult {
  let end = line.length;
  while (end > 0 && (line.charCodeAt(end - 1) === 13 || line.charCodeAt(end - 1) === 10)) end--;
  if (end === 0) return fail('empty line');
  const hasBackslash = line.indexOf('\\') >= 0;

  // ---- header: [vhost ][list ]client ident user, read from the left (see the header comment)
  const tsOpen = findTimestamp(line, end);
  if (tsOpen < 0) return fail('missing timestamp');
  // Plain locals rather than a helper with result slots: this runs for every line.
  let cs = 0;
  let ce = 0;
  let userS = -1;
  let vhost: string | null = null;
  let listS = -1;
  let listE = -1;
  let clientIsList = false;
  // Fast path, nearly every line: `client - user`, the client one token without
  // comma or quote. An ident `-` rules out any prefix, so this is the general
  // rule below, minus its function calls.
  let c0 = line.charCodeAt(0);
  while (ce < tsOpen && c0 !== SPACE && c0 !== COMMA && c0 !== QUOTE) c0 = line.charCodeAt(++ce);
  if (ce > 0 && line.charCodeAt(ce) === SPACE && line.charCodeAt(ce + 1) === DASH && line.charCodeAt(ce + 2) === SPACE) {
    userS = skipSpaces(line, ce + 3, tsOpen);
  }
  if (userS < 0 || userS >= tsOpen) {
    cs = skipSpaces(line, 0, tsOpen);
    if (cs >= tsOpen) return fail('missing client address');
    ce = addressEnd(line, cs, tsOpen, hasBackslash);
    if (ce < 0) return fail('unterminated quoted field client');
    clientIsList = isList(line, cs, ce);
    if (!clientIsList) {
      const next = prefixClientEnd(line, ce, tsOpen, hasBackslash);
      if (next >= 0) {
        if (!isDash(line, cs, ce)) vhost = line.slice(cs, ce);
        cs = skipSpaces(line, ce, tsOpen);
        ce = next;
        clientIsList = isList(line, cs, ce);
      }
    }
    if (clientIsList) {
      const next = prefixClientEnd(line, ce, tsOpen, hasBackslash);
      if (next >= 0) {
        listS = cs;
        listE = ce;
        cs = skipSpaces(line, ce, tsOpen);
        ce = next;
        clientIsList = isList(line, cs, ce);
      }
    }
    const identS = skipSpaces(line, ce, tsOpen);
    if (identS === ce || identS >= tsOpen) return fail('missing ident and remote user fields (expected "client ident user [timestamp]")');
    userS = skipSpaces(line, tokenEnd(line, identS, tsOpen), tsOpen);
    if (userS >= tsOpen) return fail('missing remote user field (expected "client ident user [timestamp]")');
  }
  const remoteUser = field(line, userS, tsOpen, hasBackslash);
  let clientIp: string | null;
  let forwardedFor: string | null = null;
  if (listS < 0 && !clientIsList) {
    // the common case: one address, no list
    clientIp = isDash(line, cs, ce) ? null : line.slice(cs, ce);
  } else {
    const items: string[] = [];
    if (listS >= 0) listItems(line, listS, listE, items);
    listItems(line, cs, ce, items);
    clientIp = items.length === 0 ? null : filebeatPick(items);
    if (items.length > 1) forwardedFor = items.join(', ');
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
  // DATETIME holds years 1000..9999; a 4-digit year below 1000 is no real log time.
  if (year < 1000) return fail(`invalid timestamp year ${line.slice(p + 7, p + 11)} (outside 1000..9999)`);
  if (day < 1 || day > DAYS_IN_MONTH[mon]! || (mon === 1 && day === 29 && !isLeap(year))) return fail('invalid timestamp day');
  const h1 = digit(line, p + 12), h2 = digit(line, p + 13);
  const m1 = digit(line, p + 15), m2 = digit(line, p + 16);
  const s1 = digit(line, p + 18), s2 = digit(line, p + 19);
  if (h1 < 0 || h2 < 0 || line.charCodeAt(p + 14) !== 58 || m1 < 0 || m2 < 0 ||
      line.charCodeAt(p + 17) !== 58 || s1 < 0 || s2 < 0) return fail('invalid timestamp time (expected HH:MM:SS)');
  const hour = h1 * 10 + h2, minute = m1 * 10 + m2, second = s1 * 10 + s2;
  // No leap second: Apache and nginx take the time from the C library, which never gives :60.
  if (hour > 23) return fail(`invalid timestamp hour ${line.slice(p + 12, p + 14)} (outside 00..23)`);
  if (minute > 59) return fail(`invalid timestamp minute ${line.slice(p + 15, p + 17)} (outside 00..59)`);
  if (second > 59) return fail(`invalid timestamp second ${line.slice(p + 18, p + 20)} (outside 00..59)`);
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
  if ((sign !== 43 && sign !== 45) || z1 < 0 || z2 < 0 || z3 < 0 || z4 < 0) {
    return fail('invalid timestamp zone (expected +hhmm or -hhmm)');
  }
  const zh = z1 * 10 + z2, zm = z3 * 10 + z4;
  if (zm > 59) return fail(`invalid timestamp zone ${line.slice(p + 1, p + 6)} (minutes outside 00..59)`);
  const tzAbs = zh * 60 + zm;
  // -12:00 (Baker Island) to +14:00 (Kiribati) spans every offset in use; anything
  // beyond is a corrupt or forged line, and it would shift the instant by a day or more.
  if (sign === 45 ? tzAbs > 720 : tzAbs > 840) {
    return fail(`invalid timestamp zone ${line.slice(p + 1, p + 6)} (outside -1200..+1400)`);
  }
  if (line.charCodeAt(p + 6) !== 93) return fail('invalid timestamp (missing "]")');
  const tzOffsetMin = tzAbs === 0 ? 0 : sign === 45 ? -tzAbs : tzAbs;
  const epochMs = Date.UTC(year, mon, day, hour, minute, second, ms) - tzOffsetMin * 60000;
  // The offset can push a time at the edge of years 1000..9999 out of them in UTC,
  // and web_requests.ts is a DATETIME (years 1000..9999) holding UTC.
  if (epochMs < MIN_EPOCH_MS || epochMs >= END_EPOCH_MS) {
    return fail(`invalid timestamp: ${line.slice(tsOpen + 2, p + 6)} is in year ${new Date(epochMs).getUTCFullYear()} in UTC (outside 1000..9999)`);
  }
  const ts = new Date(epochMs);
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
  if (p - st !== 3 || status < 100 || status > 599) {
    // The digits are named as written (at most 20 of them), so `042` and `0200` read as they were logged.
    const text = p - st > 20 ? `${line.slice(st, st + 20)}...` : line.slice(st, p);
    return fail(p - st > 3 && Number(line.slice(st, p)) <= 599
      ? `status ${text} is not a 3-digit code`
      : `status ${text} outside 100..599`);
  }

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
    // 15 digits stay exact in a double (and fit BIGINT).
    if (p - bs > 15) return fail(`bytes ${line.slice(bs, bs + 20)}${p - bs > 20 ? '...' : ''} out of range (more than 15 digits)`);
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
