import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { isIP, isIPv4 } from 'node:net';
import { parseAccessLine, type WebRequest } from '../../shared/weblog/parse.ts';

const LOGS = '../../../shared/data/logs/';

function readLines(rel: string): string[] {
  const lines = fs.readFileSync(new URL(LOGS + rel, import.meta.url)).toString('utf8').split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

function mustParse(line: string): WebRequest {
  const r = parseAccessLine(line);
  if (!r.ok) assert.fail(`expected a row, got rejection "${r.reason}" for: ${line}`);
  return r.value;
}

function mustReject(line: string): string {
  const r = parseAccessLine(line);
  if (r.ok) assert.fail(`expected a rejection for: ${JSON.stringify(line)}`);
  assert.equal(typeof r.reason, 'string');
  assert.ok(r.reason.length > 0);
  assert.ok(!r.reason.startsWith('internal'), `internal error: ${r.reason}`);
  return r.reason;
}

/** `-` in Filebeat's output means "absent", which the parser reports as null. */
function dash(v: unknown): unknown {
  return v === '-' ? null : v;
}

type Expected = Record<string, unknown>;

function checkAgainstFilebeat(logFile: string, expectedFile: string): void {
  const lines = readLines(logFile);
  const expected = JSON.parse(
    fs.readFileSync(new URL(LOGS + expectedFile, import.meta.url)).toString('utf8'),
  ) as Expected[];
  const byOffset = new Map<number, Expected>();
  for (const e of expected) byOffset.set(e['log.offset'] as number, e);
  assert.equal(byOffset.size, expected.length, 'log.offset values are unique');

  let offset = 0;
  const seen = new Set<number>();
  for (const line of lines) {
    const e = byOffset.get(offset);
    assert.ok(e, `no expected entry for offset ${offset}: ${line}`);
    seen.add(offset);
    const where = `${logFile}@${offset}`;
    const v = mustParse(line);

    if ('source.ip' in e) assert.equal(v.clientIp, e['source.ip'], `${where} source.ip`);
    if ('source.address' in e) {
      const addr = e['source.address'] as string;
      if (addr.includes(',')) assert.equal(v.forwardedFor, addr, `${where} source.address (list)`);
      else assert.equal(v.clientIp, addr, `${where} source.address`);
    }
    if ('nginx.access.remote_ip_list' in e) {
      const list = e['nginx.access.remote_ip_list'] as string[];
      if (list.length > 1) {
        assert.equal(v.forwardedFor, list.join(', '), `${where} remote_ip_list`);
      } else {
        assert.equal(v.forwardedFor, null, `${where} remote_ip_list (single)`);
        assert.equal(v.clientIp, list[0], `${where} remote_ip_list (single)`);
      }
    }
    if ('http.request.method' in e) assert.equal(v.method, e['http.request.method'], `${where} method`);
    else assert.equal(v.method, null, `${where} no method`);
    if ('url.original' in e) {
      assert.equal(v.path! + (v.query !== null ? '?' + v.query : ''), e['url.original'], `${where} url.original`);
    } else {
      assert.equal(v.path, null, `${where} no url`);
    }
    if ('http.version' in e) assert.equal(v.protocol, `HTTP/${e['http.version'] as string}`, `${where} http.version`);
    if ('http.response.status_code' in e) assert.equal(v.status, e['http.response.status_code'], `${where} status`);
    if ('http.response.body.bytes' in e) assert.equal(v.bytes, e['http.response.body.bytes'], `${where} bytes`);
    if ('@timestamp' in e) assert.equal(v.ts.toISOString(), e['@timestamp'], `${where} @timestamp`);
    if ('user_agent.original' in e) assert.equal(v.userAgent, dash(e['user_agent.original']), `${where} user_agent`);
    if ('http.request.referrer' in e) assert.equal(v.referrer, dash(e['http.request.referrer']), `${where} referrer`);
    if ('user.name' in e) assert.equal(v.remoteUser, dash(e['user.name']), `${where} user.name`);

    offset += Buffer.byteLength(line, 'utf8') + 1;
  }
  assert.equal(seen.size, expected.length, 'every expected entry matched a line');
}

describe('beats nginx fixtures match Filebeat expected output', () => {
  test('beats/test.log', () => {
    checkAgainstFilebeat('beats/test.log', 'beats/test.log-expected.json');
  });

  test('beats/access.log', () => {
    checkAgainstFilebeat('beats/access.log', 'beats/access.log-expected.json');
  });

  test('test.log specifics: lists, IPv6, unix:, empty request', () => {
    const lines = readLines('beats/test.log');
    const quoted = mustParse(lines[4]!); // "10.5.102.222, 199.96.1.1, 204.246.1.1" 10.2.1.185
    assert.equal(quoted.forwardedFor, '10.5.102.222, 199.96.1.1, 204.246.1.1, 10.2.1.185');
    assert.equal(quoted.clientIp, '199.96.1.1'); // first non-private entry, as Filebeat
    assert.equal(quoted.vhost, null);
    const v6 = mustParse(lines[5]!);
    assert.equal(v6.clientIp, '2a03:0000:10ff:f00f:0000:0000:0:8000');
    const empty = mustParse(lines[6]!);
    assert.equal(empty.request, '');
    assert.equal(empty.status, 400);
    assert.equal(empty.tzOffsetMin, 120);
    const unix = mustParse(lines[7]!);
    assert.equal(unix.clientIp, 'unix:');
    assert.equal(unix.request, 'hello');
    assert.equal(unix.method, null);
  });
});

describe('shop_access_log (nginx main, +0330)', () => {
  const lines = readLines('shop_access_log');
  const rows = lines.map((l) => parseAccessLine(l));

  test('all 1,000 lines parse', () => {
    assert.equal(lines.length, 1000);
    const bad = rows.flatMap((r, i) => (r.ok ? [] : [`${i + 1}: ${r.reason}`]));
    assert.deepEqual(bad, []);
  });

  test('+0330 is converted to UTC', () => {
    // 54.36.149.41 - - [22/Jan/2019:03:56:14 +0330] "GET /filter/27|13%20%D9%85... HTTP/1.1" 200 30577 ...
    const first = mustParse(lines[0]!);
    assert.equal(first.ts.toISOString(), '2019-01-22T00:26:14.000Z');
    assert.equal(first.tzOffsetMin, 210);
    assert.equal(first.clientIp, '54.36.149.41');
    assert.equal(first.bytes, 30577);
    assert.ok(first.path!.startsWith('/filter/27|13%20%D9%85%DA%AF'), 'URLs are not percent-decoded');
    for (const r of rows) if (r.ok) assert.equal(r.value.tzOffsetMin, 210);
  });

  test('exactly 13 lines carry a real IP in the trailing X-Forwarded-For field', () => {
    let withXff = 0;
    for (const [i, r] of rows.entries()) {
      assert.ok(r.ok);
      const v = r.value;
      assert.equal(v.vhost, null);
      assert.ok(isIP(v.clientIp ?? '') !== 0, `line ${i + 1} client is an IP`);
      if (v.forwardedFor !== null) {
        withXff++;
        for (const ip of v.forwardedFor.split(', ')) assert.ok(isIP(ip) !== 0, `line ${i + 1}: ${ip}`);
        assert.ok(lines[i]!.endsWith(` "${v.forwardedFor}"`), `line ${i + 1} forwardedFor is the trailing field`);
      } else {
        assert.ok(lines[i]!.endsWith(' "-"'), `line ${i + 1} has "-" as trailing field`);
      }
    }
    assert.equal(withXff, 13);
    assert.equal(mustParse(lines[647]!).forwardedFor, '103.28.132.65'); // line 648
  });
});

describe('apache_logs (combined, 10,000 lines)', () => {
  const lines = readLines('apache_logs');
  const rows = lines.map((l) => parseAccessLine(l));

  test('at least 9,999 of 10,000 lines parse; the only rejection is the truncated line 8899', () => {
    assert.equal(lines.length, 10000);
    const rejected = rows.flatMap((r, i) => (r.ok ? [] : [{ line: i + 1, reason: r.reason }]));
    assert.ok(lines.length - rejected.length >= 9999);
    // Line 8899 lacks the user agent's closing quote: rejected, by design (see parse.ts).
    assert.deepEqual(rejected, [{ line: 8899, reason: 'unterminated quoted field user_agent' }]);
  });

  test('status counts (parsed rows + status read from the raw text of the rejected line)', () => {
    const counts = new Map<number, number>();
    for (const r of rows) if (r.ok) counts.set(r.value.status, (counts.get(r.value.status) ?? 0) + 1);
    assert.equal(counts.get(200), 9125, 'parsed rows alone: 9,125 x 200');
    // The rejected line 8899 is `... "GET /scripts/grok-py-test/configlib.py HTTP/1.1" 200 235 "-" "Mozilla/...`:
    // read its status from the raw text so that the counts cover all 10,000 lines.
    for (const [i, r] of rows.entries()) {
      if (r.ok) continue;
      const m = /^[^"]*"[^"]*" (\d{3}) /.exec(lines[i]!);
      assert.ok(m, `status readable from raw line ${i + 1}`);
      const st = Number(m[1]);
      counts.set(st, (counts.get(st) ?? 0) + 1);
    }
    assert.deepEqual(
      [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]),
      [[200, 9126], [304, 445], [404, 213], [301, 164], [206, 45], [500, 3], [403, 2], [416, 2]],
    );
  });

  test('669 lines have bytes "-" (null); all IPv4, all +0000', () => {
    let nullBytes = 0;
    for (const r of rows) {
      if (!r.ok) continue;
      const v = r.value;
      if (v.bytes === null) nullBytes++;
      assert.ok(isIPv4(v.clientIp ?? ''), String(v.clientIp));
      assert.equal(v.tzOffsetMin, 0);
      assert.equal(v.forwardedFor, null);
      assert.equal(v.vhost, null);
    }
    assert.equal(nullBytes, 669);
    // the truncated line has bytes 235, so the raw count over all 10,000 lines is also 669
    assert.equal(lines.filter((l) => /"[^"]*" \d{3} - /.test(l)).length, 669);
  });

  test('request lines split and reassemble exactly', () => {
    for (const [i, r] of rows.entries()) {
      if (!r.ok) continue;
      const v = r.value;
      assert.ok(v.method && v.path !== null && v.protocol, `line ${i + 1} split`);
      const url = v.path + (v.query !== null ? '?' + v.query : '');
      assert.equal(`${v.method} ${url} ${v.protocol}`, v.request, `line ${i + 1}`);
      assert.ok(lines[i]!.includes(`"${v.request}"`), `line ${i + 1} request verbatim`);
    }
  });

  test('the 1,363-character line: its long URL and referrer come out intact', () => {
    // README says "one URL is 1,363 characters long"; in the file, 1,363 is the length of the whole
    // line (3029), which holds the longest request URL (595 chars) and a 622-char referrer.
    const idx = lines.findIndex((l) => l.length === 1363);
    assert.equal(idx + 1, 3029);
    const raw = lines[idx]!;
    const rawRequest = raw.split('"')[1]!;
    const rawUrl = rawRequest.split(' ')[1]!;
    const rawReferrer = raw.split('"')[3]!;
    const v = mustParse(raw);
    assert.equal(v.request, rawRequest);
    assert.equal(v.path, rawUrl);
    assert.equal(v.path!.length, 595);
    assert.equal(v.query, null);
    assert.equal(v.method, 'GET');
    assert.equal(v.protocol, 'HTTP/1.0');
    assert.equal(v.status, 403);
    assert.equal(v.referrer, rawReferrer);
    assert.equal(v.referrer!.length, 622);
    assert.ok(v.path!.includes('%E8%F1%EF%EE%EB%FC'), 'no percent-decoding');
  });

  test('lower-case \\xhh referrers that are not UTF-8 are kept verbatim', () => {
    for (const n of [5851, 5853, 5860]) {
      const raw = lines[n - 1]!;
      const v = mustParse(raw);
      assert.equal(v.referrer, raw.split('"')[3]);
      assert.ok(v.referrer!.startsWith('http://\\xe4\\xe5\\xe3'), v.referrer!);
    }
  });
});

describe('edge cases', () => {
  const TS = '[10/Oct/2000:13:55:36 -0700]';

  test('Apache \\" and \\\\ inside the user agent', () => {
    const v = mustParse(String.raw`1.2.3.4 - - ${TS} "GET /a HTTP/1.0" 200 2326 "-" "Mozilla/5.0 \"quoted\" C:\\dir"`);
    assert.equal(v.userAgent, 'Mozilla/5.0 "quoted" C:\\dir');
    assert.equal(v.ts.toISOString(), '2000-10-10T20:55:36.000Z');
    assert.equal(v.tzOffsetMin, -420);
  });

  test('Apache lower-case \\xhh in a referrer: UTF-8 decoded, other bytes kept verbatim', () => {
    const ok = mustParse(String.raw`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 1 "http://x/\xd0\xbf\xd1\x80\xd0\xb8" "ua"`);
    assert.equal(ok.referrer, 'http://x/при');
    const latin1 = mustParse(String.raw`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 1 "http://x/caf\xe9-\xc3\xa9" "ua"`);
    assert.equal(latin1.referrer, 'http://x/caf\\xe9-é');
  });

  test('nginx upper-case \\xHH for quote, backslash and UTF-8 bytes', () => {
    const v = mustParse(String.raw`::1 - - ${TS} "GET /x\x22y\x5Cz?q=\xE2\x82\xAC HTTP/1.1" 200 10 "-" "\xE2\x80\x99 \xC3"`);
    assert.equal(v.clientIp, '::1');
    assert.equal(v.request, 'GET /x"y\\z?q=€ HTTP/1.1');
    assert.equal(v.path, '/x"y\\z');
    assert.equal(v.query, 'q=€');
    assert.equal(v.userAgent, '’ \\xC3'); // lone 0xC3 is not UTF-8: kept as escape
  });

  test('"-" request with 408 (Apache)', () => {
    const v = mustParse(`1.2.3.4 - - ${TS} "-" 408 - "-" "-"`);
    assert.equal(v.request, '-');
    assert.equal(v.status, 408);
    assert.deepEqual([v.method, v.path, v.query, v.protocol, v.bytes, v.referrer, v.userAgent], [null, null, null, null, null, null, null]);
  });

  test('empty request "" with 400 (nginx)', () => {
    const v = mustParse(`1.2.3.4 - - ${TS} "" 400 0 "-" "-"`);
    assert.equal(v.request, '');
    assert.equal(v.method, null);
    assert.equal(v.bytes, 0);
  });

  test('binary garbage in the request parses as a row without method/path/protocol', () => {
    const v = mustParse(String.raw`5.6.7.8 - - ${TS} "\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03" 400 157 "-" "-"`);
    assert.equal(v.request, String.raw`\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03`); // not UTF-8: verbatim
    assert.deepEqual([v.method, v.path, v.query, v.protocol], [null, null, null, null]);
    assert.equal(v.status, 400);
    const ascii = mustParse(String.raw`5.6.7.8 - - ${TS} "\x16\x03\x01\x00" 400 157 "-" "-"`);
    assert.equal(ascii.request, '\x16\x03\x01\x00'); // valid (ASCII) UTF-8: decoded
    assert.equal(ascii.method, null);
  });

  test('vhost prefix host:port before the client address', () => {
    const v = mustParse(`example.com:443 1.2.3.4 - frank ${TS} "GET /a?b=1&c HTTP/1.1" 200 10 "https://r/" "ua"`);
    assert.equal(v.vhost, 'example.com:443');
    assert.equal(v.clientIp, '1.2.3.4');
    assert.equal(v.forwardedFor, null);
    assert.equal(v.remoteUser, 'frank');
    assert.equal(v.path, '/a');
    assert.equal(v.query, 'b=1&c');
    assert.equal(v.referrer, 'https://r/');
    const bare = mustParse(`www.example.org 10.0.0.1 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "-"`);
    assert.equal(bare.vhost, 'www.example.org');
    assert.equal(bare.clientIp, '10.0.0.1');
  });

  test('nginx main: trailing X-Forwarded-For is normalised; "-" is null', () => {
    const v = mustParse(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 1 "-" "ua" "203.0.113.9,10.0.0.1 ,  10.0.0.2"`);
    assert.equal(v.forwardedFor, '203.0.113.9, 10.0.0.1, 10.0.0.2');
    assert.equal(v.clientIp, '1.2.3.4');
    assert.equal(mustParse(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 1 "-" "ua" "-"`).forwardedFor, null);
  });

  test('common log format (no referrer/user agent), CRLF, +0000/-0000 give offset 0', () => {
    const v = mustParse(`1.2.3.4 - - [01/Jan/2020:00:00:00 -0000] "GET / HTTP/1.0" 200 1\r`);
    assert.equal(v.referrer, null);
    assert.equal(v.userAgent, null);
    assert.ok(Object.is(v.tzOffsetMin, 0));
    assert.equal(v.ts.toISOString(), '2020-01-01T00:00:00.000Z');
    const frac = mustParse(`1.2.3.4 - - [31/Dec/2019:23:59:59.123 -0130] "GET / HTTP/1.0" 200 1`);
    assert.equal(frac.ts.toISOString(), '2020-01-01T01:29:59.123Z');
    assert.equal(frac.tzOffsetMin, -90);
  });

  test('empty string and random garbage are rejected with a reason', () => {
    assert.equal(mustReject(''), 'empty line');
    assert.equal(mustReject('hello world, this is not a log line'), 'missing timestamp');
    mustReject('\u0000\u00ff\ufffd[]""\\\\\\x');
    mustReject('- - - [');
  });

  test('bad month, bad day, non-numeric status, bad bytes, truncation', () => {
    assert.equal(mustReject(`1.2.3.4 - - [10/Foo/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 1 "-" "-"`), 'invalid timestamp month');
    assert.equal(mustReject(`1.2.3.4 - - [29/Feb/2001:13:55:36 -0700] "GET / HTTP/1.0" 200 1 "-" "-"`), 'invalid timestamp day');
    assert.equal(mustReject(`1.2.3.4 - - ${TS} "GET / HTTP/1.0" OK 1 "-" "-"`), 'status is not a number');
    assert.equal(mustReject(`1.2.3.4 - - ${TS} "GET / HTTP/1.0" 200 lots "-" "-"`), 'bytes is not a number');
    assert.equal(mustReject(`1.2.3.4 - - ${TS} "GET / HTTP/1.0`), 'unterminated quoted field request');
    assert.equal(mustReject(`1.2.3.4 - - ${TS} "GET / HTTP/1.0" 200 1 "-" "Mozilla`), 'unterminated quoted field user_agent');
  });

  test('never throws: every prefix and single-character corruption of a line gets a result', () => {
    const base = String.raw`example.com:443 "10.0.0.2, 8.8.8.8" 1.2.3.4 - u ${TS} "GET /a?b=\x22\xE2\x82\xAC HTTP/1.1" 200 12 "r\"x" "ua\\" "9.9.9.9"`;
    assert.ok(parseAccessLine(base).ok);
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const noise = ['"', '\\', ' ', '[', ']', '-', 'x', '\u0000', '\uffff', '\ud800', ',', '9'];
    for (let k = 0; k <= base.length; k++) {
      const inputs = [base.slice(0, k), base.slice(0, k) + noise[rnd(noise.length)]! + base.slice(k + 1)];
      for (const s of inputs) {
        const r = parseAccessLine(s);
        assert.equal(typeof r.ok, 'boolean');
        if (!r.ok) assert.ok(r.reason.length > 0 && !r.reason.startsWith('internal'), r.reason);
      }
    }
  });
});

describe('hostile header fields: the client is anchored on the first field', () => {
  const TS = '[10/Oct/2000:13:55:36 -0700]';
  const REST = `"GET / HTTP/1.1" 200 2326 "-" "ua"`;
  const header = (v: WebRequest) => ({ vhost: v.vhost, clientIp: v.clientIp, forwardedFor: v.forwardedFor, remoteUser: v.remoteUser });

  test('a remote user with spaces does not move client_ip', () => {
    const v = mustParse(`1.2.3.4 - John Smith ${TS} ${REST}`);
    assert.deepEqual(header(v), { vhost: null, clientIp: '1.2.3.4', forwardedFor: null, remoteUser: 'John Smith' });
    assert.equal(v.ts.toISOString(), '2000-10-10T20:55:36.000Z');
    assert.equal(v.status, 200);
  });

  test('a remote user that imitates header fields stays the user', () => {
    const cases: [string, string][] = [
      ['x 6.6.6.6 - -', 'x 6.6.6.6 - -'], // used to give client "x" and user "-"
      ['6.6.6.6, 7.7.7.7', '6.6.6.6, 7.7.7.7'], // looks like an address list
      ['"6.6.6.6, 7.7.7.7" 8.8.8.8 -', '"6.6.6.6, 7.7.7.7" 8.8.8.8 -'], // looks like a quoted list prefix
      ['evil.example:443 6.6.6.6 - bob', 'evil.example:443 6.6.6.6 - bob'], // looks like a vhost line
      ['- -', '- -'],
      ['Bob [1st]', 'Bob [1st]'], // a "[" that is no timestamp
      [String.raw`a \"b\" c`, 'a "b" c'], // Apache escapes quotes in %u
    ];
    for (const [user, expected] of cases) {
      const v = mustParse(`1.2.3.4 - ${user} ${TS} ${REST}`);
      assert.deepEqual(header(v), { vhost: null, clientIp: '1.2.3.4', forwardedFor: null, remoteUser: expected }, user);
    }
  });

  test('fuzz: no user text built from header-like pieces moves the vhost, client or list', () => {
    const pieces = ['-', ' ', ' ', ',', '"', '6.6.6.6', 'evil:80', '[2001:db8::6]:1', 'a', 'John', '10.0.0.1,', '[', ']', '\t'];
    const heads: [string, Record<string, unknown>][] = [
      ['1.2.3.4 -', { vhost: null, clientIp: '1.2.3.4', forwardedFor: null }],
      ['example.com:443 1.2.3.4 -', { vhost: 'example.com:443', clientIp: '1.2.3.4', forwardedFor: null }],
      ['[2001:db8::1]:8080 2001:db8::2 -', { vhost: '[2001:db8::1]:8080', clientIp: '2001:db8::2', forwardedFor: null }],
      ['10.0.0.2, 10.0.0.1, 85.181.35.98 -', { vhost: null, clientIp: '85.181.35.98', forwardedFor: '10.0.0.2, 10.0.0.1, 85.181.35.98' }],
      ['"10.0.0.1, 9.9.9.9" 10.2.1.185 -', { vhost: null, clientIp: '9.9.9.9', forwardedFor: '10.0.0.1, 9.9.9.9, 10.2.1.185' }],
    ];
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let k = 0; k < 3000; k++) {
      let user = '';
      for (let n = 1 + rnd(8); n > 0; n--) user += pieces[rnd(pieces.length)];
      if (user.startsWith(' ')) user = 'u' + user; // leading spaces belong to the separator
      const [head, expected] = heads[k % heads.length]!;
      const line = `${head} ${user} ${TS} ${REST}`;
      const v = mustParse(line);
      assert.deepEqual({ vhost: v.vhost, clientIp: v.clientIp, forwardedFor: v.forwardedFor }, expected, line);
      assert.equal(v.remoteUser, user === '-' ? null : user, line);
      assert.equal(v.ts.toISOString(), '2000-10-10T20:55:36.000Z', line);
    }
  });

  test('host:port and IPv6 prefixes and clients', () => {
    assert.deepEqual(header(mustParse(`example.com:443 1.2.3.4 - - ${TS} ${REST}`)),
      { vhost: 'example.com:443', clientIp: '1.2.3.4', forwardedFor: null, remoteUser: null });
    assert.deepEqual(header(mustParse(`[2001:db8::1]:8080 2001:db8::2 - - ${TS} ${REST}`)),
      { vhost: '[2001:db8::1]:8080', clientIp: '2001:db8::2', forwardedFor: null, remoteUser: null });
    assert.deepEqual(header(mustParse(`2001:db8::1 - - ${TS} ${REST}`)),
      { vhost: null, clientIp: '2001:db8::1', forwardedFor: null, remoteUser: null });
    assert.deepEqual(header(mustParse(`2001:db8::1 - John Smith ${TS} ${REST}`)),
      { vhost: null, clientIp: '2001:db8::1', forwardedFor: null, remoteUser: 'John Smith' });
    assert.deepEqual(header(mustParse(`2001:db8::1 2001:db8::2 - - ${TS} ${REST}`)),
      { vhost: '2001:db8::1', clientIp: '2001:db8::2', forwardedFor: null, remoteUser: null });
    assert.deepEqual(header(mustParse(`example.com:443 1.2.3.4 - John Smith ${TS} ${REST}`)),
      { vhost: 'example.com:443', clientIp: '1.2.3.4', forwardedFor: null, remoteUser: 'John Smith' });
    assert.deepEqual(header(mustParse(`example.com 10.0.0.1, 8.8.8.8 - J S ${TS} ${REST}`)),
      { vhost: 'example.com', clientIp: '8.8.8.8', forwardedFor: '10.0.0.1, 8.8.8.8', remoteUser: 'J S' });
  });

  test('address lists: a token ending in "," continues the list, a quoted list is one field', () => {
    assert.deepEqual(header(mustParse(`10.0.0.2, 10.0.0.1, 127.0.0.1 - John Smith ${TS} ${REST}`)),
      { vhost: null, clientIp: '10.0.0.2', forwardedFor: '10.0.0.2, 10.0.0.1, 127.0.0.1', remoteUser: 'John Smith' });
    assert.deepEqual(header(mustParse(`"10.0.0.1, 8.8.8.8" - John Smith ${TS} ${REST}`)),
      { vhost: null, clientIp: '8.8.8.8', forwardedFor: '10.0.0.1, 8.8.8.8', remoteUser: 'John Smith' });
    // a list before the client (Filebeat's `"a, b" c` and `a, b c`): one list
    assert.deepEqual(header(mustParse(`"10.0.0.1, 8.8.8.8" 1.2.3.4 - John Smith ${TS} ${REST}`)),
      { vhost: null, clientIp: '8.8.8.8', forwardedFor: '10.0.0.1, 8.8.8.8, 1.2.3.4', remoteUser: 'John Smith' });
    assert.deepEqual(header(mustParse(`10.0.0.1, 8.8.8.8 1.2.3.4 - - ${TS} ${REST}`)),
      { vhost: null, clientIp: '8.8.8.8', forwardedFor: '10.0.0.1, 8.8.8.8, 1.2.3.4', remoteUser: null });
    assert.deepEqual(header(mustParse(`"-" - - ${TS} ${REST}`)), { vhost: null, clientIp: null, forwardedFor: null, remoteUser: null });
  });

  test('an ident other than "-" with a one-word user is no prefix', () => {
    assert.deepEqual(header(mustParse(`1.2.3.4 identd frank ${TS} ${REST}`)),
      { vhost: null, clientIp: '1.2.3.4', forwardedFor: null, remoteUser: 'frank' });
  });

  test('missing or broken header fields are named', () => {
    assert.equal(mustReject(`1.2.3.4 - ${TS} ${REST}`), 'missing remote user field (expected "client ident user [timestamp]")');
    assert.equal(mustReject(`1.2.3.4 ${TS} ${REST}`), 'missing ident and remote user fields (expected "client ident user [timestamp]")');
    assert.equal(mustReject(` ${TS} ${REST}`), 'missing client address');
    assert.equal(mustReject(`"1.2.3.4 - - ${TS} ${REST}`), 'unterminated quoted field client');
  });
});

describe('range checks name the value', () => {
  const line = (ts: string, status = '200') => `1.2.3.4 - - [${ts}] "GET / HTTP/1.1" ${status} 1 "-" "-"`;
  const OK_TS = '10/Oct/2000:13:55:36 -0700';

  test('status outside 100..599', () => {
    assert.equal(mustReject(line(OK_TS, '42')), 'status 42 outside 100..599');
    assert.equal(mustReject(line(OK_TS, '099')), 'status 099 outside 100..599');
    assert.equal(mustReject(line(OK_TS, '600')), 'status 600 outside 100..599');
    assert.equal(mustReject(line(OK_TS, '999')), 'status 999 outside 100..599');
    assert.equal(mustReject(line(OK_TS, '0200')), 'status 0200 is not a 3-digit code');
    assert.equal(mustReject(line(OK_TS, '9'.repeat(40))), `status ${'9'.repeat(20)}... outside 100..599`);
    assert.equal(mustParse(line(OK_TS, '100')).status, 100);
    assert.equal(mustParse(line(OK_TS, '599')).status, 599);
  });

  test('year outside 1000..9999, in the line or in UTC', () => {
    assert.equal(mustReject(line('10/Oct/0999:13:55:36 -0700')), 'invalid timestamp year 0999 (outside 1000..9999)');
    assert.equal(mustReject(line('10/Oct/0000:13:55:36 +0000')), 'invalid timestamp year 0000 (outside 1000..9999)');
    assert.equal(mustParse(line('01/Jan/1000:00:00:00 +0000')).ts.toISOString(), '1000-01-01T00:00:00.000Z');
    assert.equal(mustParse(line('31/Dec/9999:23:59:59 +0000')).ts.toISOString(), '9999-12-31T23:59:59.000Z');
    assert.equal(mustReject(line('01/Jan/1000:00:30:00 +0100')),
      'invalid timestamp: 01/Jan/1000:00:30:00 +0100 is in year 999 in UTC (outside 1000..9999)');
    assert.equal(mustReject(line('31/Dec/9999:23:59:59 -0100')),
      'invalid timestamp: 31/Dec/9999:23:59:59 -0100 is in year 10000 in UTC (outside 1000..9999)');
    assert.equal(mustReject(line('10/Oct/20000:13:55:36 -0700')), 'invalid timestamp year');
  });

  test('hour, minute, second', () => {
    assert.equal(mustReject(line('10/Oct/2000:24:00:00 -0700')), 'invalid timestamp hour 24 (outside 00..23)');
    assert.equal(mustReject(line('10/Oct/2000:13:60:36 -0700')), 'invalid timestamp minute 60 (outside 00..59)');
    assert.equal(mustReject(line('10/Oct/2000:13:55:60 -0700')), 'invalid timestamp second 60 (outside 00..59)');
    assert.equal(mustReject(line('10/Oct/2000:1x:55:36 -0700')), 'invalid timestamp time (expected HH:MM:SS)');
    assert.equal(mustParse(line('10/Oct/2000:23:59:59 +0000')).ts.toISOString(), '2000-10-10T23:59:59.000Z');
  });

  test('time-zone offset', () => {
    assert.equal(mustReject(line('10/Oct/2000:13:55:36 +1500')), 'invalid timestamp zone +1500 (outside -1200..+1400)');
    assert.equal(mustReject(line('10/Oct/2000:13:55:36 -1201')), 'invalid timestamp zone -1201 (outside -1200..+1400)');
    assert.equal(mustReject(line('10/Oct/2000:13:55:36 +0160')), 'invalid timestamp zone +0160 (minutes outside 00..59)');
    assert.equal(mustReject(line('10/Oct/2000:13:55:36 0700')), 'invalid timestamp zone (expected +hhmm or -hhmm)');
    assert.equal(mustReject(line('10/Oct/2000:13:55:36 GMT')), 'invalid timestamp zone (expected +hhmm or -hhmm)');
    assert.equal(mustParse(line('10/Oct/2000:13:55:36 +1400')).tzOffsetMin, 840);
    assert.equal(mustParse(line('10/Oct/2000:13:55:36 -1200')).tzOffsetMin, -720);
    assert.equal(mustParse(line('10/Oct/2000:13:55:36 +0545')).tzOffsetMin, 345);
  });

  test('day and month', () => {
    assert.equal(mustReject(line('32/Oct/2000:13:55:36 -0700')), 'invalid timestamp day');
    assert.equal(mustReject(line('31/Apr/2000:13:55:36 -0700')), 'invalid timestamp day');
    assert.equal(mustReject(line('00/Oct/2000:13:55:36 -0700')), 'invalid timestamp day');
    assert.equal(mustParse(line('29/Feb/2000:13:55:36 -0700')).ts.toISOString(), '2000-02-29T20:55:36.000Z');
    assert.equal(mustReject(line('1/Oct/2000:13:55:36 -0700')), 'invalid timestamp day'); // not "missing timestamp"
    assert.equal(mustReject(line('10/oct/2000:13:55:36 -0700')), 'invalid timestamp month');
  });

  test('bytes with more than 15 digits', () => {
    assert.equal(mustReject(`1.2.3.4 - - [${OK_TS}] "GET / HTTP/1.1" 200 ${'1'.repeat(16)}`), `bytes ${'1'.repeat(16)} out of range (more than 15 digits)`);
    assert.equal(mustParse(`1.2.3.4 - - [${OK_TS}] "GET / HTTP/1.1" 200 ${'9'.repeat(15)}`).bytes, 999999999999999);
  });
});
