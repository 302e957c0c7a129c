// scripts/sample-log.ts: the sample access log the project generates (npm start writes it
// into an empty LOG_DIR).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isIP, isIPv6 } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAccessLine, type WebRequest } from '../../shared/weblog/parse.ts';
import { SAMPLE_LOG_DEFAULTS, ensureSampleLog, findLogFiles, sampleLogLines, writeSampleLog, type SampleLogStats } from '../../scripts/sample-log.ts';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-sample-log-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const CRAWLERS = /Googlebot|bingbot|Applebot|YandexBot|Baiduspider|DuckDuckBot|AhrefsBot|SemrushBot|GPTBot|PetalBot|facebookexternalhit/;

describe('the default sample log (20,000 lines, seed 42)', () => {
  const stats = {} as SampleLogStats;
  const lines = [...sampleLogLines(SAMPLE_LOG_DEFAULTS, stats)];
  const malformed = new Map(stats.malformed.map((m) => [m.line, m.kind]));
  const odd = new Map(stats.oddRequests.map((m) => [m.line, m.kind]));
  const rows: WebRequest[] = [];
  const rejects: { line: number; reason: string }[] = [];
  lines.forEach((line, i) => {
    const r = parseAccessLine(line);
    if (r.ok) rows.push(r.value);
    else rejects.push({ line: i + 1, reason: r.reason });
  });

  test('has the lines asked for, one record each', () => {
    assert.equal(lines.length, 20_000);
    assert.equal(stats.lines, 20_000);
    assert.ok(lines.every((l) => !l.includes('\n')));
    assert.ok(lines.every((l) => /^[\x20-\x7e]*$/.test(l)), 'printable ASCII only (nginx escapes everything else as \\xHH)');
  });

  test('every line parses but the intended malformed ones, which are rejected', () => {
    assert.deepEqual(rejects.map((r) => r.line), [...malformed.keys()].sort((a, b) => a - b));
    for (const r of rejects) assert.doesNotMatch(r.reason, /internal/, `line ${r.line}`);
    const kinds = new Set(malformed.values());
    assert.ok(kinds.has('truncated') && kinds.has('garbage'), `a truncated and a garbage line: ${[...kinds]}`);
    assert.ok(malformed.size >= 2 && malformed.size <= 10, `a few malformed lines, not ${malformed.size}`);
    for (const [line, kind] of malformed) {
      if (kind === 'truncated') assert.match(rejects.find((r) => r.line === line)!.reason, /unterminated quoted field/);
    }
  });

  test('a few valid lines carry an empty ("-") or binary request with status 400', () => {
    assert.ok(odd.size >= 2);
    assert.ok(new Set(odd.values()).has('empty-request'));
    for (const [line, kind] of odd) {
      const r = parseAccessLine(lines[line - 1]!);
      assert.ok(r.ok, `line ${line}`);
      assert.equal(r.value.status, 400);
      assert.equal(r.value.method, null);
      if (kind === 'empty-request') assert.match(lines[line - 1]!, /"-" 400 0 "-" "-"$/);
      else assert.match(lines[line - 1]!, /"\\x16\\x03\\x01[^"]*" 400 157 /);
    }
  });

  test('time stamps increase over about a day, in one zone', () => {
    const zones = new Set(rows.map((r) => r.tzOffsetMin));
    assert.equal(zones.size, 1);
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i]!.ts >= rows[i - 1]!.ts, `row ${i} goes back in time`);
    const hours = (rows.at(-1)!.ts.getTime() - rows[0]!.ts.getTime()) / 3_600_000;
    assert.ok(hours > 18 && hours < 30, `spans ${hours.toFixed(1)} h`);
  });

  test('the status mix: mostly 2xx and 3xx, some 4xx, a few 5xx', () => {
    const classes = new Map<number, number>();
    for (const r of rows) classes.set(Math.floor(r.status / 100), (classes.get(Math.floor(r.status / 100)) ?? 0) + 1);
    for (const c of [2, 3, 4, 5]) assert.ok(classes.get(c), `${c}xx present`);
    assert.ok((classes.get(2)! + classes.get(3)!) / rows.length > 0.9, '2xx and 3xx are the bulk');
    assert.ok(classes.get(4)! / rows.length < 0.08, 'some 4xx');
    assert.ok(classes.get(5)! / rows.length < 0.01, 'a few 5xx');
    for (const probe of ['/wp-login.php', '/.env']) {
      const hits = rows.filter((r) => r.path === probe);
      assert.ok(hits.length > 0 && hits.every((r) => r.status >= 400), `${probe} is scanned and refused`);
    }
    assert.ok(rows.some((r) => r.status === 404 && r.path?.startsWith('/products/')), 'gone products are 404');
    assert.ok(rows.every((r) => (r.status === 304 || r.method === 'HEAD' ? r.bytes === 0 : r.bytes !== null)), 'byte counts');
  });

  test('crawlers are present (Googlebot, bingbot, ...) and counted', () => {
    const bots = rows.filter((r) => CRAWLERS.test(r.userAgent ?? ''));
    assert.equal(bots.length, stats.crawlerLines);
    assert.ok(bots.some((r) => r.userAgent!.includes('Googlebot')) && bots.some((r) => r.userAgent!.includes('bingbot')));
    assert.ok(bots.length / rows.length > 0.03 && bots.length / rows.length < 0.25, `crawler share ${bots.length / rows.length}`);
    assert.ok(bots.filter((r) => r.userAgent!.includes('Googlebot')).every((r) => r.clientIp!.startsWith('66.249.')), "Googlebot from Google's range");
    assert.ok(rows.some((r) => r.path === '/robots.txt'));
  });

  test('clients: real-looking IPv4 and IPv6; the API in nginx main format with X-Forwarded-For', () => {
    assert.ok(rows.every((r) => isIP(r.clientIp ?? '') !== 0), 'every client is an IP address');
    assert.ok(rows.some((r) => isIPv6(r.clientIp ?? '')), 'some IPv6 clients');
    const main = lines.filter((l) => /"[^"]*" "[^"]*" "[^"]*"$/.test(l) && !l.includes('"-" "-"'));
    assert.ok(main.length > 0);
    const api = rows.filter((r) => r.path?.startsWith('/api/') && r.userAgent !== 'ELB-HealthChecker/2.0');
    assert.ok(api.length > 0 && api.every((r) => r.forwardedFor !== null && isIP(r.forwardedFor.split(', ')[0]!) !== 0), 'API lines name the client in X-Forwarded-For');
    assert.equal(stats.mainFormatLines, rows.filter((r) => r.path?.startsWith('/api/')).length);
    assert.ok(rows.some((r) => r.query !== null), 'query strings');
    assert.ok(rows.some((r) => r.referrer?.startsWith('https://www.google.')), 'search engine referrers');
    assert.ok(rows.some((r) => /\.(css|js|woff2|webp)$/.test(r.path ?? '')), 'static assets');
  });
});

describe('writeSampleLog', () => {
  test('the same seed gives the same bytes, another seed other bytes', async (t) => {
    const dir = tempDir(t);
    const a = await writeSampleLog(path.join(dir, 'a.log'), { lines: 3_000, seed: 7 });
    const b = await writeSampleLog(path.join(dir, 'b.log'), { lines: 3_000, seed: 7 });
    await writeSampleLog(path.join(dir, 'c.log'), { lines: 3_000, seed: 8 });
    const bytes = (f: string) => readFileSync(path.join(dir, f));
    assert.ok(bytes('a.log').equals(bytes('b.log')));
    assert.ok(!bytes('a.log').equals(bytes('c.log')));
    assert.deepEqual(a, b);
    assert.equal(a.bytes, statSync(path.join(dir, 'a.log')).size);
    assert.equal(bytes('a.log').toString('utf8'), `${[...sampleLogLines({ lines: 3_000, seed: 7 })].join('\n')}\n`);
    assert.deepEqual(readdirSync(dir).sort(), ['a.log', 'b.log', 'c.log'], 'no temporary file left');
  });

  test('a small log (50 lines) has no malformed lines', async (t) => {
    const dir = tempDir(t);
    const s = await writeSampleLog(path.join(dir, 'sub', 'small.log'), { lines: 50, seed: 1 });
    assert.equal(s.lines, 50);
    assert.deepEqual(s.malformed, []);
    const lines = readFileSync(path.join(dir, 'sub', 'small.log'), 'utf8').trimEnd().split('\n');
    assert.equal(lines.length, 50);
    assert.ok(lines.every((l) => parseAccessLine(l).ok));
  });
});

describe('ensureSampleLog', () => {
  test('writes access.log into a folder without a log (created when missing), then leaves it', async (t) => {
    const dir = path.join(tempDir(t), 'logs');
    const file = await ensureSampleLog(dir, { lines: 300 });
    assert.equal(file, path.join(dir, 'access.log'));
    assert.equal(readFileSync(file, 'utf8').trimEnd().split('\n').length, 300);
    assert.deepEqual(findLogFiles(dir), ['access.log']);
    assert.equal(await ensureSampleLog(dir, { lines: 300 }), null);
  });

  test('a README, hidden files, an empty file or a sub-folder are no log; a named or parseable file is', async (t) => {
    const dir = tempDir(t);
    writeFileSync(path.join(dir, 'README.md'), '# logs\nPut access logs here.\n');
    writeFileSync(path.join(dir, '.gitkeep'), '');
    writeFileSync(path.join(dir, '.access.log.partial-1'), 'x\n');
    writeFileSync(path.join(dir, 'old.log'), '');
    mkdirSync(path.join(dir, 'beats'));
    writeFileSync(path.join(dir, 'beats', 'access.log'), 'x\n');
    assert.deepEqual(findLogFiles(dir), []);
    assert.equal(findLogFiles(path.join(dir, 'missing')).length, 0);

    writeFileSync(path.join(dir, 'apache_logs'), '83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 203023 "-" "Mozilla/5.0"\n');
    writeFileSync(path.join(dir, 'shop'), '127.0.0.1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 2 "-" "curl/8.5.0" "-"\n');
    writeFileSync(path.join(dir, 'error.log'), '2025/01/01 00:00:00 [error] 1#1: oops\n');
    assert.deepEqual(findLogFiles(dir), ['apache_logs', 'error.log', 'shop']);
    assert.equal(await ensureSampleLog(dir, { lines: 300 }), null);
    assert.deepEqual(readdirSync(dir).filter((f) => f === 'access.log'), []);
  });
});
