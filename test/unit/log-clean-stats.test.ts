// log-clean's handler and the aggregates' arithmetic, against hand-written stores: what each request
// counts for (minute, day, status class, bytes, visitor, top-N values), what
// does not count, the GoAccess-style request values, and - with an in-memory
// store that is exactly-once the way the MySQL one is - apache_logs replayed in
// batches with duplicates and redeliveries adds up to what the file says.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import type { BatchContext, BatchItem } from '../../shared/amqp/consumer.ts';
import type { LogLine } from '../../shared/contracts/logs.ts';
import { parseAccessLine } from '../../shared/weblog/parse.ts';
import { createHandler, type CleanLogStore, type RequestRow } from '../../functions/log-clean/handler.ts';
import { decodePercent, md5Memo, MEMO_VALUE_MAX_CHARS, memoSize, requestTarget, VALUE_MAX_BYTES, type CountedRequest } from '../../functions/log-clean/count.ts';
import { truncateBytes } from '../../functions/log-clean/truncate.ts';
import {
  aggregate, creditNewPairs, creditVisitors, minuteKey, topKey, topVisitorKey, visitorKey,
} from '../../functions/log-clean/aggregate.ts';

const ctx: BatchContext = { log: pino({ level: 'silent' }), queue: 'logs.clean' };
const lineKey = (r: { runId: string; lineNo: number }) => `${r.runId}\0${r.lineNo}`;

/** A store that sees the requests log-clean stores, as what they count for. */
function statsStore(record: (requests: CountedRequest[]) => Promise<void>): CleanLogStore {
  return {
    insertRequests: (rows: RequestRow[]) => (rows.length > 0 ? record(rows.map((r) => r.counted!)) : Promise.resolve()),
    insertRejects: async () => {},
  };
}
const RUN = '0b7f4a52-9c1e-4d6b-8a3f-2e5d7c9b1a04';
const md5 = (s: string) => createHash('md5').update(s, 'utf8').digest();

/** Records every batch it is given. */
function recordingStore(): CleanLogStore & { batches: CountedRequest[][] } {
  const batches: CountedRequest[][] = [];
  return { batches, ...statsStore(async (requests) => void batches.push(requests)) };
}

function item(lineNo: number, line: string | Buffer, extra: Partial<LogLine> = {}, runId = RUN, source = 'test'): BatchItem<LogLine[]> {
  const body: LogLine = { runId, source, lineNo, byteOffset: 0, line: typeof line === 'string' ? Buffer.from(line, 'utf8') : line, ...extra };
  return { body: [body], messageId: `${runId}:${lineNo}`, routingKey: `logs.${source}.access`, redelivered: false, publishedAt: undefined, attempt: 1 };
}

async function counted(...lines: string[]): Promise<CountedRequest[]> {
  const store = recordingStore();
  await createHandler({ store })(lines.map((l, i) => item(i + 1, l)), ctx);
  return store.batches.flat();
}
async function one(line: string): Promise<CountedRequest> {
  const all = await counted(line);
  assert.equal(all.length, 1, 'the line counts');
  return all[0]!;
}
const valuesOf = (r: CountedRequest) => Object.fromEntries(r.values.map((v) => [v.dimension, v.value]));

describe('what a request counts for', () => {
  test('minute in UTC, day in the log\'s own zone, status class, bytes, visitor, values', async () => {
    const r = await one('10.1.2.3 - - [10/Oct/2000:23:55:36 -0700] "GET /a/b?x=1 HTTP/1.1" 200 2326 "http://ref.example/" "curl/8"');
    assert.deepEqual([r.runId, r.lineNo, r.source], [RUN, 1, 'test']);
    assert.equal(r.minute.toISOString(), '2000-10-11T06:55:00.000Z', 'UTC minute, seconds dropped');
    assert.equal(r.day, '2000-10-10', 'the day as logged (-0700), not the UTC day');
    assert.equal(r.statusClass, 2);
    assert.equal(r.bytes, 2326);
    assert.deepEqual(r.visitor, md5('10.1.2.3\0curl/8'));
    assert.deepEqual(valuesOf(r), { path: '/a/b?x=1', referrer: 'http://ref.example/', client_ip: '10.1.2.3', user_agent: 'curl/8' });
    for (const v of r.values) assert.deepEqual(v.hash, md5(v.value), `${v.dimension}: hash of the value`);
  });

  test('a positive offset moves the day forward', async () => {
    const r = await one('::1 - - [01/Jan/2024:00:30:00 +0530] "GET / HTTP/1.1" 301 - "-" "-"');
    assert.equal(r.minute.toISOString(), '2023-12-31T19:00:00.000Z');
    assert.equal(r.day, '2024-01-01');
    assert.equal(r.statusClass, 3);
    assert.equal(r.bytes, 0, '"-" bytes count as 0');
    assert.deepEqual(r.visitor, md5('::1\0-'), 'no user agent: "-", as GoAccess has it');
    assert.deepEqual(valuesOf(r), { path: '/', client_ip: '::1' }, 'no referrer, no user agent');
  });

  test('4xx makes no visitor; 404 also counts its path as not found', async () => {
    const [notFound, forbidden, error] = await counted(
      '1.1.1.1 - - [10/Oct/2000:13:55:36 +0000] "GET /missing HTTP/1.1" 404 10 "-" "ua"',
      '1.1.1.1 - - [10/Oct/2000:13:55:36 +0000] "GET /secret HTTP/1.1" 403 10 "-" "ua"',
      '1.1.1.1 - - [10/Oct/2000:13:55:36 +0000] "GET /boom HTTP/1.1" 500 10 "-" "ua"',
    );
    assert.equal(notFound!.visitor, null);
    assert.equal(notFound!.statusClass, 4);
    assert.deepEqual(valuesOf(notFound!), { path: '/missing', not_found: '/missing', client_ip: '1.1.1.1', user_agent: 'ua' });
    assert.equal(forbidden!.visitor, null);
    assert.equal(valuesOf(forbidden!).not_found, undefined, 'only 404 is "not found"');
    assert.deepEqual(error!.visitor, md5('1.1.1.1\0ua'), '5xx still makes a visitor');
    assert.equal(error!.statusClass, 5);
  });

  test('no client address: counted, but no visitor and no client_ip value', async () => {
    const r = await one('- - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "" "ua"');
    assert.equal(r.visitor, null);
    assert.deepEqual(valuesOf(r), { path: '/', user_agent: 'ua' }, 'an empty referrer is no referrer');
  });

  test('a request line without a target counts, without a path value', async () => {
    const r = await one('1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "-" 400 0 "-" "-"');
    assert.equal(r.statusClass, 4);
    assert.deepEqual(valuesOf(r), { client_ip: '1.2.3.4' });
  });
});

test('a line of a run that muted alerts counts, but not for alerts', async () => {
  const line = '10.1.2.3 - - [10/Oct/2000:23:55:36 -0700] "GET / HTTP/1.1" 500 1 "-" "curl/8"';
  const store = recordingStore();
  await createHandler({ store })([item(1, line), item(2, line, { alerts: false })], ctx);
  assert.deepEqual(store.batches.flat().map((r) => [r.lineNo, r.alerting]), [[1, true], [2, false]]);
});

describe('what does not count', () => {
  test('lines that do not parse and lines the publisher cut short; the store is not called for nothing', async () => {
    const good = '1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "ua"';
    const store = recordingStore();
    await createHandler({ store })([
      item(1, 'not a log line'),
      item(2, good, { truncatedFrom: 2_000_000 }),
      item(3, '1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "cut shor'),
      item(4, good),
    ], ctx);
    assert.deepEqual(store.batches.map((b) => b.map((r) => r.lineNo)), [[4]]);
    const empty = recordingStore();
    await createHandler({ store: empty })([item(1, 'garbage'), item(2, good, { truncatedFrom: 5_000_000 })], ctx);
    assert.deepEqual(empty.batches, []);
  });

  test('a store failure fails the batch (the runtime retries it)', async () => {
    const failing = statsStore(async () => Promise.reject(new Error('db down')));
    await assert.rejects(createHandler({ store: failing })([item(1, '1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-"')], ctx), /db down/);
  });
});

describe('request values as GoAccess 1.7 keys them', () => {
  test('query string kept, %XX decoded once, + kept', () => {
    assert.equal(requestTarget('/blog/tags/puppet', 'flav=rss20'), '/blog/tags/puppet?flav=rss20');
    assert.equal(requestTarget('/a', ''), '/a?', 'a bare ? stays');
    assert.equal(requestTarget('/blog/tags/jquery%20mobile', null), '/blog/tags/jquery mobile');
    assert.equal(requestTarget('/x', 'c=Feed%3A+a%2Fb+%28c%29'), '/x?c=Feed:+a/b+(c)');
    assert.equal(requestTarget('/%2541', null), '/%41', 'decoded once only');
    assert.equal(requestTarget('/caf%C3%A9', null), '/café', 'a multi-byte character across escapes');
    assert.equal(requestTarget('/%F0%9F%98%80', null), '/😀');
  });

  test('bytes that are not UTF-8 keep their escapes; broken escapes stay as written', () => {
    assert.equal(decodePercent('/%E8%F1x'), '/%E8%F1x', 'CP1251 bytes: no text column holds them');
    assert.equal(decodePercent('/%C3%A9%FF%41'), '/é%FFA', 'only the offending byte keeps its escape');
    assert.equal(decodePercent('/%C3'), '/%C3', 'a sequence cut short');
    assert.equal(decodePercent('/%C0%AF'), '/%C0%AF', 'overlong');
    assert.equal(decodePercent('/%ED%A0%80'), '/%ED%A0%80', 'a surrogate');
    assert.equal(decodePercent('/100%'), '/100%');
    assert.equal(decodePercent('/%zz%4'), '/%zz%4');
    assert.equal(decodePercent('%%41%'), '%A%');
    assert.equal(decodePercent('/plain'), '/plain');
  });

  test('line breaks removed, ASCII white space trimmed; what decodes to nothing stays as written', () => {
    assert.equal(requestTarget('/a%0D%0Ab', null), '/ab');
    assert.equal(requestTarget('/tags/%20barcamp%20', null), '/tags/ barcamp');
    assert.equal(requestTarget('%20', null), '%20');
    assert.equal(requestTarget('/%C2%A0', null), '/\u00a0', 'no-break space is not C white space');
  });

  test('over 65,535 bytes: cut at a character boundary, hashed as cut', async () => {
    const ua = 'a' + '€'.repeat(30_000);
    const r = await one(`1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /${'p'.repeat(70_000)} HTTP/1.1" 404 1 "-" "${ua}"`);
    const v = Object.fromEntries(r.values.map((x) => [x.dimension, x]));
    assert.equal(Buffer.byteLength(v.path!.value), VALUE_MAX_BYTES);
    assert.equal(v.not_found!.value, v.path!.value);
    assert.equal(v.user_agent!.value, truncateBytes(ua, VALUE_MAX_BYTES));
    assert.equal(Buffer.byteLength(v.user_agent!.value), 1 + 3 * 21_844);
    assert.deepEqual(v.user_agent!.hash, md5(v.user_agent!.value));
    assert.equal(r.visitor, null, 'a 404 makes no visitor');
  });
});

function req(over: Partial<CountedRequest> & { lineNo: number }): CountedRequest {
  return {
    runId: RUN, source: 's', minute: new Date('2015-05-17T10:05:00Z'), day: '2015-05-17', statusClass: 2, bytes: 10, visitor: md5('v1'),
    values: [{ dimension: 'path', value: '/', hash: md5('/') }], alerting: true, ...over,
  };
}

describe('the hash memo: what it keeps', () => {
  const md5hex = (s: string) => createHash('md5').update(s).digest('hex');

  test('each value hashed right; a long value is hashed, not kept', () => {
    const short = `/products/${Math.random()}`;
    const long = `/search?q=${'x'.repeat(MEMO_VALUE_MAX_CHARS)}`;
    const before = memoSize();
    assert.equal(md5Memo(short).toString('hex'), md5hex(short));
    assert.equal(md5Memo(short).toString('hex'), md5hex(short));
    assert.equal(memoSize(), before + 1);
    assert.equal(md5Memo(long).toString('hex'), md5hex(long));
    assert.equal(memoSize(), before + 1);
  });

  test('a value cut from a long line does not keep the line alive', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const heap = () => (gc(), gc(), process.memoryUsage().heapUsed);
    const base = heap();
    // 2,000 distinct lines of 64 KiB (128 MB), each giving the memo a 30-character value sliced from it.
    for (let i = 0; i < 2_000; i++) {
      const line = `${String(i).padStart(8, '0')} /path/${i}/${Math.random().toString(36).slice(2, 10)} ${'q'.repeat(64 * 1024)}`;
      md5Memo(line.slice(9, line.indexOf(' ', 9)));
    }
    const kept = heap() - base;
    // A memo holding the slices themselves holds the 128 MB of lines; its own copies take well under 4 MB.
    assert.ok(kept < 16 * 1024 * 1024, `the memo keeps ${(kept / 1024 / 1024).toFixed(0)} MB after 2,000 values of 30 characters`);
  });
});

describe('aggregate: a batch\'s rows, one per key', () => {
  test('minutes, visitors (earliest minute), values, pairs', () => {
    const m1 = new Date('2015-05-17T10:05:00Z');
    const m2 = new Date('2015-05-17T10:04:00Z');
    const agg = aggregate([
      req({ lineNo: 1 }),
      req({ lineNo: 2, minute: m2, statusClass: 4, bytes: 5, visitor: null }),
      req({ lineNo: 3, minute: m2, statusClass: 5, bytes: 1, alerting: false }),
      req({ lineNo: 4, visitor: md5('v2'), values: [{ dimension: 'path', value: '/', hash: md5('/') }, { dimension: 'user_agent', value: 'ua', hash: md5('ua') }] }),
    ]);
    assert.deepEqual([...agg.minutes.values()].map((m) => [m.minute.toISOString(), m.requests, m.bytes, m.visitors, m.status]), [
      [m1.toISOString(), 2, 20, 0, [0, 2, 0, 0, 0]],
      [m2.toISOString(), 2, 6, 0, [0, 0, 0, 1, 1]],
    ]);
    assert.deepEqual([...agg.minutes.values()].map((m) => m.alerting), [2, 1], 'requests of runs that left alerts on');
    assert.equal(agg.visitors.size, 2);
    assert.equal(agg.visitors.get(visitorKey({ source: 's', day: '2015-05-17', visitor: md5('v1') }))!.firstMinute.toISOString(), m2.toISOString(), 'the earliest minute');
    const path = agg.tops.get(topKey({ source: 's', day: '2015-05-17', dimension: 'path', hash: md5('/') }))!;
    assert.deepEqual([path.value, path.requests, path.bytes, path.visitors], ['/', 4, 26, 0]);
    assert.equal(agg.topVisitors.size, 2, '(/, v1), (/, v2): the 4xx request adds no pair, and (ua, v2) is implied by v2');

    creditVisitors(agg, [{ key: visitorKey({ source: 's', day: '2015-05-17', visitor: md5('v1') }), movedFrom: null }]);
    assert.equal(agg.minutes.get(minuteKey({ source: 's', minute: m2 }))!.visitors, 1, 'a new visitor counts in its first minute');
    // v2 was counted at 10:07 by an earlier batch: it moves to 10:05, its earliest request.
    const m3 = new Date('2015-05-17T10:07:00Z');
    creditVisitors(agg, [{ key: visitorKey({ source: 's', day: '2015-05-17', visitor: md5('v2') }), movedFrom: m3 }]);
    assert.equal(agg.minutes.get(minuteKey({ source: 's', minute: m1 }))!.visitors, 1);
    assert.deepEqual(agg.minutes.get(minuteKey({ source: 's', minute: m3 })), { source: 's', minute: m3, requests: 0, bytes: 0, visitors: -1, status: [0, 0, 0, 0, 0], alerting: 0 });
    creditNewPairs(agg, [topVisitorKey({ source: 's', day: '2015-05-17', dimension: 'path', hash: md5('/'), visitor: md5('v2') })]);
    assert.equal(path.visitors, 1);
    const ua = agg.tops.get(topKey({ source: 's', day: '2015-05-17', dimension: 'user_agent', hash: md5('ua') }))!;
    assert.equal(ua.visitors, 0, 'a visitor moved to an earlier minute is not new to its user agent');
    const fresh = aggregate([req({ lineNo: 9, visitor: md5('v3'), values: [{ dimension: 'user_agent', value: 'ua', hash: md5('ua') }] })]);
    creditVisitors(fresh, [{ key: visitorKey({ source: 's', day: '2015-05-17', visitor: md5('v3') }), movedFrom: null }]);
    assert.equal(fresh.tops.get(topKey({ source: 's', day: '2015-05-17', dimension: 'user_agent', hash: md5('ua') }))!.visitors, 1, 'a new visitor is new to its user agent');
    assert.throws(() => creditVisitors(agg, [{ key: 'nope', movedFrom: null }]), /not in the batch/);
    assert.throws(() => creditVisitors(agg, [{ key: visitorKey({ source: 's', day: '2015-05-17', visitor: md5('v2') }), movedFrom: m2 }]), /later minute/);
  });
});

// --- apache_logs through the handler into an exactly-once in-memory store ---------------

interface Totals {
  minutes: Map<string, { requests: number; bytes: number; visitors: number; status: number[] }>;
  visitorsByDay: Map<string, number>;
  tops: Map<string, { requests: number; bytes: number; visitors: number }>;
}

/**
 * The MySQL store's protocol in memory, built on aggregate.ts as store.ts is: a line is new when
 * its key was not there; visitors and pairs are new when inserted first; then the upserts.
 */
function memoryStore(): CleanLogStore & { totals(): Totals } {
  const seen = new Set<string>();
  const visitors = new Map<string, { day: string; first: Date }>();
  const pairs = new Set<string>();
  const minutes: Totals['minutes'] = new Map();
  const tops: Totals['tops'] = new Map();
  return {
    ...statsStore(async (requests) => {
      const fresh = requests.filter((r) => !seen.has(lineKey(r)));
      for (const r of fresh) seen.add(lineKey(r));
      const agg = aggregate(fresh);
      const credited: { key: string; movedFrom: Date | null }[] = [];
      for (const [key, v] of agg.visitors) {
        const known = visitors.get(key);
        if (known && known.first <= v.firstMinute) continue;
        credited.push({ key, movedFrom: known?.first ?? null });
        visitors.set(key, { day: v.day, first: v.firstMinute });
      }
      creditVisitors(agg, credited);
      const newPairs = [...agg.topVisitors.keys()].filter((k) => !pairs.has(k));
      for (const k of newPairs) pairs.add(k);
      creditNewPairs(agg, newPairs);
      for (const [k, m] of agg.minutes) {
        const t = minutes.get(k) ?? { requests: 0, bytes: 0, visitors: 0, status: [0, 0, 0, 0, 0] };
        t.requests += m.requests, t.bytes += m.bytes, t.visitors += m.visitors;
        m.status.forEach((n, i) => (t.status[i]! += n));
        minutes.set(k, t);
      }
      for (const [k, top] of agg.tops) {
        const t = tops.get(k) ?? { requests: 0, bytes: 0, visitors: 0 };
        t.requests += top.requests, t.bytes += top.bytes, t.visitors += top.visitors;
        tops.set(k, t);
      }
    }),
    totals() {
      const visitorsByDay = new Map<string, number>();
      for (const { day } of visitors.values()) visitorsByDay.set(day, (visitorsByDay.get(day) ?? 0) + 1);
      return { minutes, visitorsByDay, tops };
    },
  };
}

const apacheLines = readFileSync(path.resolve(import.meta.dirname, '../../../shared/data/logs/apache_logs'), 'utf8').split('\n').filter((l) => l !== '');

describe('apache_logs in batches, with duplicates and redeliveries: each line counts once', () => {
  test('the totals are the file\'s, computed here independently', async () => {
    // Independently: parse every line, count by hand.
    let requests = 0;
    let bytes = 0;
    const status = [0, 0, 0, 0, 0];
    const days = new Map<string, Set<string>>();
    const valueVisitors = new Map<string, Set<string>>(); // "day dimension value" -> visitors
    const addValueVisitor = (day: string, dimension: string, value: string | null, visitor: string) => {
      if (value === null) return;
      const k = `${day}\0${dimension}\0${value}`;
      if (!valueVisitors.has(k)) valueVisitors.set(k, new Set());
      valueVisitors.get(k)!.add(visitor);
    };
    for (const line of apacheLines) {
      const p = parseAccessLine(line);
      if (!p.ok) continue;
      const r = p.value;
      requests++;
      bytes += r.bytes ?? 0;
      status[Math.floor(r.status / 100) - 1]!++;
      if (r.status >= 400 && r.status < 500) continue;
      const day = new Date(r.ts.getTime() + r.tzOffsetMin * 60_000).toISOString().slice(0, 10);
      if (!days.has(day)) days.set(day, new Set());
      const visitor = `${r.clientIp}\0${r.userAgent ?? '-'}`;
      days.get(day)!.add(visitor);
      addValueVisitor(day, 'client_ip', r.clientIp, visitor);
      addValueVisitor(day, 'user_agent', r.userAgent, visitor);
      addValueVisitor(day, 'referrer', r.referrer, visitor);
    }
    assert.equal(requests, 9_999, 'line 8899 is cut short: it does not count');

    const store = memoryStore();
    const handler = createHandler({ store });
    const items = apacheLines.map((l, i) => item(i + 1, l));
    // Batches of 97, each batch then half of it redelivered, and a few duplicates inside batches.
    for (let i = 0; i < items.length; i += 97) {
      const batch = items.slice(i, i + 97);
      await handler([...batch, ...batch.slice(0, 3)], ctx);
      await handler(batch.filter((_, k) => k % 2 === 0), ctx);
    }
    const t = store.totals();
    const sum = (f: (m: { requests: number; bytes: number; visitors: number; status: number[] }) => number) => [...t.minutes.values()].reduce((n, m) => n + f(m), 0);
    assert.equal(sum((m) => m.requests), requests);
    assert.equal(sum((m) => m.bytes), bytes);
    assert.deepEqual([0, 1, 2, 3, 4].map((i) => sum((m) => m.status[i]!)), status);
    assert.deepEqual(Object.fromEntries(t.visitorsByDay), Object.fromEntries([...days].map(([d, s]) => [d, s.size])));
    assert.equal(sum((m) => m.visitors), [...days.values()].reduce((n, s) => n + s.size, 0), 'the minutes\' visitors add up to the days\'');
    // Every dimension adds up to the requests that have a value in it.
    const byDimension = new Map<string, number>();
    for (const [k, v] of t.tops) byDimension.set(k.split('\0')[2]!, (byDimension.get(k.split('\0')[2]!) ?? 0) + v.requests);
    assert.equal(byDimension.get('path'), requests);
    assert.equal(byDimension.get('client_ip'), requests);
    assert.equal(byDimension.get('not_found'), status[3]! - 2 - 2, '4xx less the 403s and 416s');
    // Each value's visitors: the distinct visitors among its requests, that day.
    const valueOf = new Map(apacheLines.flatMap((l) => {
      const p = parseAccessLine(l);
      return p.ok ? [p.value.clientIp, p.value.userAgent, p.value.referrer].filter((v): v is string => v !== null).map((v) => [md5(v).toString('hex'), v] as const) : [];
    }));
    let checked = 0;
    for (const [k, v] of t.tops) {
      // The key's hash is its last 16 characters (latin1: one per byte, NUL included).
      const [, day, dimension] = k.split('\0');
      const hash = Buffer.from(k.slice(-16), 'latin1').toString('hex');
      if (dimension === 'path' || dimension === 'not_found') continue;
      assert.equal(v.visitors, valueVisitors.get(`${day}\0${dimension}\0${valueOf.get(hash!)}`)?.size ?? 0, `${dimension} ${valueOf.get(hash!)} on ${day}`);
      checked++;
    }
    assert.ok(checked > 3_000);

    // The same lines once each, in one pass: identical aggregates.
    const once = memoryStore();
    await createHandler({ store: once })(items, ctx);
    assert.deepEqual(once.totals(), t);

    // In another order (the batches reversed, as redeliveries and a second consumer may bring
    // them): identical too, visitors per minute included - each in the minute of its first request.
    const reversed = memoryStore();
    const reverseHandler = createHandler({ store: reversed });
    for (let i = Math.floor((items.length - 1) / 53) * 53; i >= 0; i -= 53) await reverseHandler(items.slice(i, i + 53), ctx);
    assert.deepEqual(reversed.totals(), t);
    const [firstMinute] = [...t.minutes.keys()].sort((a, b) => Number(a.split('\0')[1]) - Number(b.split('\0')[1]));
    assert.ok(t.minutes.get(firstMinute!)!.visitors > 0, 'the first minute has its visitors');
    for (const m of t.minutes.values()) assert.ok(m.visitors >= 0);
  });
});
