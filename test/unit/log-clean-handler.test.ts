// log-clean's handler against a hand-written CleanLogStore that records every row:
// over-long fields are cut to fit their column (and named), lines the publisher
// cut short are rejected with their bytes, and every line ends up exactly once.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { pino } from 'pino';
import type { BatchContext, BatchItem } from '../../shared/amqp/consumer.ts';
import type { LogLine } from '../../shared/contracts/logs.ts';
import {
  createHandler, fitRow, truncateBytes, truncateChars, truncatedLineReason,
  type CleanLogStore, type RejectRow, type RequestRow,
} from '../../functions/log-clean/handler.ts';
import { parseAccessLine } from '../../shared/weblog/parse.ts';

const ctx: BatchContext = { log: pino({ level: 'silent' }), queue: 'logs.clean' };
const RUN = '0b7f4a52-9c1e-4d6b-8a3f-2e5d7c9b1a04';
const NOW = new Date('2026-01-01T00:00:00Z');
const TS = '[10/Oct/2000:13:55:36 -0700]';
const TEXT_MAX = 65_535;
const ALL_COLUMNS = 'client_ip,forwarded_for,vhost,remote_user,request,method,path,query,protocol,referrer,user_agent';

interface RecordingStore extends CleanLogStore {
  requests: RequestRow[];
  rejects: RejectRow[];
  calls: number;
}

function recordingStore(): RecordingStore {
  const s: RecordingStore = {
    requests: [],
    rejects: [],
    calls: 0,
    async insertRequests(rows) {
      s.calls++;
      s.requests.push(...rows);
    },
    async insertRejects(rows) {
      s.calls++;
      s.rejects.push(...rows);
    },
  };
  return s;
}

function item(lineNo: number, line: string | Buffer, extra: Partial<LogLine> = {}): BatchItem<LogLine[]> {
  const body: LogLine = {
    runId: RUN, source: 'test', lineNo, byteOffset: 0,
    line: typeof line === 'string' ? Buffer.from(line, 'utf8') : line, ...extra,
  };
  return { body: [body], messageId: `${RUN}:${lineNo}`, routingKey: 'logs.test.access', redelivered: false, publishedAt: undefined, attempt: 1 };
}

async function run(items: BatchItem<LogLine[]>[]): Promise<RecordingStore> {
  const store = recordingStore();
  await createHandler({ store, now: () => NOW })(items, ctx);
  return store;
}

async function onlyRequest(line: string | Buffer): Promise<RequestRow> {
  const store = await run([item(1, line)]);
  assert.deepEqual(store.rejects, [], 'no reject');
  assert.equal(store.requests.length, 1);
  return store.requests[0]!;
}

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');
const codePoints = (s: string): number => [...s].length;
/** No lone surrogate (a half of a cut pair); String#isWellFormed is ES2024. */
const wellFormed = (s: string): boolean => s.isWellFormed();

describe('truncateChars / truncateBytes', () => {
  test('short strings come back as they are', () => {
    assert.equal(truncateChars('abc', 3), 'abc');
    assert.equal(truncateBytes('€€', 6), '€€');
    assert.equal(truncateChars('😀😀', 2), '😀😀'); // 4 UTF-16 units, 2 characters
  });

  test('characters: a surrogate pair is never split', () => {
    assert.equal(truncateChars('😀😀😀', 2), '😀😀');
    assert.equal(truncateChars('a😀b', 2), 'a😀');
    const s = truncateChars('😀'.repeat(300), 255);
    assert.equal(codePoints(s), 255);
    assert.ok(wellFormed(s));
  });

  test('bytes: never inside a UTF-8 sequence', () => {
    assert.equal(truncateBytes('a€', 3), 'a'); // € is 3 bytes: 1 + 3 > 3
    assert.equal(truncateBytes('a€', 4), 'a€');
    assert.equal(truncateBytes('😀x', 3), '');
    assert.equal(truncateBytes('xé', 2), 'x');
    for (const unit of ['é', '€', '😀', 'a']) {
      for (let max = 0; max <= 12; max++) {
        const s = truncateBytes(unit.repeat(5), max);
        assert.equal(s, unit.repeat(Math.min(5, Math.floor(max / bytes(unit)))), `${unit} x5 in ${max} bytes`);
      }
    }
  });
});

describe('over-long fields are cut to fit their column; the request is kept', () => {
  test('a line that fits: truncated is null', async () => {
    const r = await onlyRequest(`1.2.3.4 - frank ${TS} "GET /a?b=1 HTTP/1.1" 200 10 "-" "ua"`);
    assert.equal(r.truncated, null);
    assert.equal(r.clientIp, '1.2.3.4');
    assert.equal(r.remoteUser, 'frank');
    assert.deepEqual([r.runId, r.lineNo, r.source], [RUN, 1, 'test']);
  });

  test('user agent over 65,535 bytes (TEXT): cut by bytes', async () => {
    const ua = 'M'.repeat(70_000);
    const r = await onlyRequest(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "${ua}"`);
    assert.equal(r.truncated, 'user_agent');
    assert.equal(r.userAgent, ua.slice(0, TEXT_MAX));
    assert.equal(r.status, 200);
  });

  test('a TEXT cut never splits a multi-byte character', async () => {
    const ua = 'a' + '€'.repeat(30_000); // 90,001 bytes; 65,535 falls inside a €
    const r = await onlyRequest(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "${ua}"`);
    assert.equal(r.truncated, 'user_agent');
    assert.equal(bytes(r.userAgent!), 1 + 3 * 21_844); // 65,533: the next € would not fit
    assert.ok(ua.startsWith(r.userAgent!));
    const emoji = 'x' + '😀'.repeat(20_000); // 4-byte characters, surrogate pairs in JS
    const e = await onlyRequest(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "${emoji}" "-"`);
    assert.equal(e.truncated, 'referrer');
    assert.equal(bytes(e.referrer!), 1 + 4 * 16_383);
    assert.ok(wellFormed(e.referrer!) && emoji.startsWith(e.referrer!));
  });

  test('invalid UTF-8 grows to U+FFFD (3 bytes each) and is cut by bytes, not characters', async () => {
    const line = Buffer.concat([
      Buffer.from(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "`),
      Buffer.alloc(30_000, 0xff), // 30,000 bytes on the wire, 90,000 once decoded
      Buffer.from('"'),
    ]);
    const r = await onlyRequest(line);
    assert.equal(r.truncated, 'user_agent');
    assert.equal(r.userAgent, '\ufffd'.repeat(21_845));
    assert.equal(bytes(r.userAgent!), TEXT_MAX);
  });

  test('a field exactly at its limit is not cut', async () => {
    const ua = 'é'.repeat(TEXT_MAX >> 1) + 'x'; // 65,535 bytes
    const user = '😀'.repeat(255); // 255 characters, 510 UTF-16 units
    const r = await onlyRequest(`1.2.3.4 - ${user} ${TS} "GET / HTTP/1.1" 200 10 "-" "${ua}"`);
    assert.equal(r.truncated, null);
    assert.equal(r.userAgent, ua);
    assert.equal(r.remoteUser, user);
  });

  test('VARCHAR columns are cut by characters (utf8mb4), not bytes or UTF-16 units', async () => {
    const user = '😀'.repeat(300);
    const r = await onlyRequest(`1.2.3.4 - ${user} ${TS} "GET / HTTP/1.1" 200 10 "-" "-"`);
    assert.equal(r.truncated, 'remote_user');
    assert.equal(r.remoteUser, '😀'.repeat(255));
  });

  test('request, path and query: each cut to its own column', async () => {
    const target = `/${'p'.repeat(40_000)}?${'q'.repeat(40_000)}`;
    const r = await onlyRequest(`1.2.3.4 - - ${TS} "GET ${target} HTTP/1.1" 404 10 "-" "-"`);
    assert.equal(r.truncated, 'request'); // path and query fit alone; the whole request does not
    assert.equal(r.request.length, TEXT_MAX);
    assert.equal(r.path!.length, 40_001);
    assert.equal(r.query!.length, 40_000);
    assert.equal(r.method, 'GET');
    assert.equal(r.protocol, 'HTTP/1.1');
    const longPath = await onlyRequest(`1.2.3.4 - - ${TS} "GET /${'p'.repeat(70_000)} HTTP/1.1" 404 10 "-" "-"`);
    assert.equal(longPath.truncated, 'request,path');
    assert.equal(longPath.path!.length, TEXT_MAX);
  });

  test('every bounded column at once: all named, in table order, within VARCHAR(255)', async () => {
    const line = `${'v'.repeat(300)}.example ${'c'.repeat(300)} - ${'u'.repeat(300)} ${TS} ` +
      `"${'M'.repeat(33)} /${'p'.repeat(70_000)}?${'q'.repeat(70_000)} HTTP/${'1'.repeat(40)}" 200 10 ` +
      `"${'r'.repeat(70_000)}" "${'a'.repeat(70_000)}" "${'9.9.9.9, '.repeat(200)}8.8.8.8"`;
    const r = await onlyRequest(line);
    assert.equal(r.truncated, ALL_COLUMNS);
    assert.ok(r.truncated.length <= 255);
    assert.equal(r.vhost!.length, 255);
    assert.equal(r.clientIp, 'c'.repeat(255));
    assert.equal(r.remoteUser, 'u'.repeat(255));
    assert.equal(r.method, 'M'.repeat(32)); // the parser accepts a 33-letter method; the column holds 32
    assert.equal(r.protocol!.length, 32);
    assert.equal(r.forwardedFor!.length, 1024);
    for (const f of ['request', 'path', 'query', 'referrer', 'userAgent'] as const) assert.equal(bytes(r[f]!), TEXT_MAX, f);
  });

  test('fitRow copies only when it cuts', () => {
    const parsed = parseAccessLine(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "${'a'.repeat(70_000)}"`);
    assert.ok(parsed.ok);
    const { row, truncated } = fitRow(parsed.value);
    assert.equal(truncated, 'user_agent');
    assert.notEqual(row, parsed.value);
    assert.equal(parsed.value.userAgent!.length, 70_000, 'the parsed value is not modified');
    const small = parseAccessLine(`1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "ua"`);
    assert.ok(small.ok);
    assert.equal(fitRow(small.value).row, small.value);
  });
});

describe('lines cut short by the publisher (truncatedFrom)', () => {
  const LIMIT = 1024 * 1024;

  test('rejected with the real and the kept length; the kept bytes are stored as they came', async () => {
    const body = Buffer.alloc(LIMIT, 0x41);
    body.write(`1.2.3.4 - - ${TS} "GET /`, 0);
    const store = await run([item(1, body, { truncatedFrom: 5 * LIMIT })]);
    assert.deepEqual(store.requests, []);
    assert.equal(store.rejects.length, 1);
    const rej = store.rejects[0]!;
    assert.equal(rej.reason, 'line is 5242880 bytes, longer than the 1048576-byte limit; the lake keeps its first 1048576 bytes');
    assert.equal(rej.line, body);
    assert.deepEqual([rej.runId, rej.lineNo, rej.source, rej.receivedAt], [RUN, 1, 'test', NOW]);
  });

  test('never parsed, even when its first bytes would parse', async () => {
    const line = `1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "Mozilla/5.0"`;
    assert.ok(parseAccessLine(line).ok);
    const store = await run([item(7, line, { truncatedFrom: 2_000_000 })]);
    assert.deepEqual(store.requests, []);
    assert.equal(store.rejects[0]!.reason, `line is 2000000 bytes, longer than the ${bytes(line)}-byte limit; the lake keeps its first ${bytes(line)} bytes`);
    assert.equal(store.rejects[0]!.line.toString('utf8'), line);
  });

  test('a truncatedFrom that is not longer than the body is still not parsed', async () => {
    const line = `1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 10 "-" "-"`;
    const store = await run([item(1, line, { truncatedFrom: bytes(line) })]);
    assert.deepEqual(store.requests, []);
    assert.match(store.rejects[0]!.reason, /^line marked as cut short \(truncatedFrom \d+\) but the body holds \d+ bytes; not parsed$/);
    assert.equal(truncatedLineReason(10, 20), 'line marked as cut short (truncatedFrom 10) but the body holds 20 bytes; not parsed');
  });
});

describe('nothing is dropped', () => {
  test('every line ends up as exactly one request or one reject, with a reason that fits VARCHAR(512)', async () => {
    const apache = fs.readFileSync(new URL('../../../shared/data/logs/apache_logs', import.meta.url)).toString('utf8').split('\n').slice(0, 3000);
    const hostile: (string | Buffer)[] = [
      '',
      'garbage',
      `1.2.3.4 - John Smith ${TS} "GET / HTTP/1.1" 200 1 "-" "-"`,
      `1.2.3.4 - - ${TS} "GET / HTTP/1.1" 42 1 "-" "-"`,
      `1.2.3.4 - - [10/Oct/0999:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "-"`,
      `1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 1 "-" "${'x'.repeat(80_000)}"`,
      `1.2.3.4 - - ${TS} "GET / HTTP/1.1" ${'9'.repeat(5_000)} 1 "-" "-"`, // a long value in the reason
      Buffer.from([0xff, 0xfe, 0x00, 0x0a, 0x0d]),
      `1.2.3.4 - - ${TS} "GET / HTTP/1.1" 200 1 "-" "unterminated`,
    ];
    const items: BatchItem<LogLine[]>[] = [];
    let n = 0;
    for (const l of apache) items.push(item(++n, l));
    for (const l of hostile) items.push(item(++n, l));
    for (const l of hostile.slice(0, 4)) items.push(item(++n, l, { truncatedFrom: 3_000_000 }));
    const store = await run(items);

    assert.equal(store.calls, 2, 'one insert of each kind per batch');
    const seen = [...store.requests.map((r) => r.lineNo), ...store.rejects.map((r) => r.lineNo)].sort((a, b) => a - b);
    assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i + 1));
    for (const r of store.rejects) {
      assert.ok(r.reason.length > 0 && codePoints(r.reason) <= 512, r.reason);
      assert.equal(r.line, items[r.lineNo - 1]!.body[0]!.line, 'the reject keeps the bytes it received');
    }
    for (const r of store.requests) assert.ok(r.truncated === null || r.truncated.length <= 255);
    // apache_logs: line 8899 is beyond the 3,000 read here, so all of them are requests
    assert.equal(store.requests.filter((r) => r.lineNo <= 3000).length, 3000);
    const byLine = new Map(store.rejects.map((r) => [r.lineNo, r.reason]));
    assert.equal(byLine.get(3004), 'status 42 outside 100..599');
    assert.equal(byLine.get(3005), 'invalid timestamp year 0999 (outside 1000..9999)');
    assert.ok(store.requests.some((r) => r.lineNo === 3003 && r.remoteUser === 'John Smith' && r.clientIp === '1.2.3.4'));
    assert.ok(store.requests.some((r) => r.lineNo === 3006 && r.truncated === 'user_agent'));
    for (let k = n - 3; k <= n; k++) assert.match(byLine.get(k)!, /^line is 3000000 bytes, longer than the \d+-byte limit/);
  });

  test('an empty batch still calls the store with empty lists', async () => {
    const store = await run([]);
    assert.deepEqual([store.requests, store.rejects, store.calls], [[], [], 2]);
  });
});
