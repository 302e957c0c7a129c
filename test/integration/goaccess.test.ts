// The streaming aggregates (log-clean's, read through GET /v1/stats and /v1/stats/top) agree
// with GoAccess 1.7 run on the same real logs: totals, bytes, unique visitors, status classes
// and the top 10 requested paths.
//
// Differences kept (and asserted, so they cannot grow unnoticed):
// - A line GoAccess accepts but sluice rejects: apache_logs line 8899, whose user agent lacks its
//   closing quote. sluice keeps it in log_rejects (a truncated record); GoAccess counts it.
// - Lines sluice parses but GoAccess fails (beats/test.log: X-Forwarded-For lists, `unix:`
//   sockets and `localhost` in the client field, which GoAccess's %h does not take).
// - A request line with no path (`""`): a request for both, a path value for GoAccess only.
// So each file is compared on the lines both accept: GoAccess reads the file with sluice's
// rejects left out, and the lines GoAccess still fails are left out of sluice's side.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Pool } from '../../shared/db/pool.ts';
import { parseAccessLine } from '../../shared/weblog/parse.ts';
import { api, ensureBuilt, logsDir, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

const FILES = ['apache_logs', 'shop_access_log', 'beats/access.log', 'beats/test.log'];
const RANGE = 'from=2010-01-01T00:00:00Z&to=2030-01-01T00:00:00Z';

let pool: Pool;
let trigger: FnProcess;
let work: string;

function ensureGoaccess(): void {
  if (spawnSync('goaccess', ['--version']).status === 0) return;
  // Like yamllint for the infra checks: a test tool from Debian's packages, installed when missing.
  assert.equal(process.getuid?.(), 0, 'goaccess is missing: apt-get install -y goaccess');
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
  const r = spawnSync('apt-get', ['install', '-y', '-qq', 'goaccess'], { encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  assert.equal(r.status, 0, `apt-get install goaccess failed: ${r.stderr}`);
}

interface GoAccessPanel { data: { data: string; hits: { count: number } }[] }
interface GoAccessReport {
  general: { valid_requests: number; failed_requests: number; unique_visitors: number; bandwidth: number };
  requests: GoAccessPanel; static_requests: GoAccessPanel; not_found: GoAccessPanel;
  status_codes: { data: { data: string; hits: { count: number } }[] };
}

/** GoAccess on `lines`, combined format (nginx's `main` adds a trailing field it ignores), keys without method and protocol. */
function goaccess(lines: Buffer[]): GoAccessReport {
  const input = path.join(work, `ga-${Math.random().toString(36).slice(2)}.log`);
  const output = `${input}.json`;
  writeFileSync(input, Buffer.concat(lines.map((l) => Buffer.concat([l, Buffer.from('\n')]))));
  const r = spawnSync('goaccess', [input, '--log-format=COMBINED', '--http-method=no', '--http-protocol=no', '--max-items=10000', '--no-progress', '-o', output], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(readFileSync(output, 'utf8')) as GoAccessReport;
}

/** Whether GoAccess takes this one line (it exits 1, writing nothing, when a file has no valid line). */
function gaAccepts(line: Buffer): boolean {
  const input = path.join(work, `one-${Math.random().toString(36).slice(2)}.log`);
  writeFileSync(input, Buffer.concat([line, Buffer.from('\n')]));
  const r = spawnSync('goaccess', [input, '--log-format=COMBINED', '--no-progress', '-o', `${input}.json`], { encoding: 'utf8' });
  return r.status === 0 && (JSON.parse(readFileSync(`${input}.json`, 'utf8')) as GoAccessReport).general.valid_requests === 1;
}

function linesOf(file: string): Buffer[] {
  const bytes = readFileSync(path.join(logsDir, file));
  const out: Buffer[] = [];
  let start = 0;
  for (let nl = bytes.indexOf(10); nl !== -1; nl = bytes.indexOf(10, start)) out.push(bytes.subarray(start, nl)), (start = nl + 1);
  if (start < bytes.length) out.push(bytes.subarray(start));
  return out.map((l) => (l.at(-1) === 13 ? l.subarray(0, -1) : l));
}

before(async () => {
  ensureBuilt();
  ensureGoaccess();
  pool = await resetEnvironment();
  work = mkdtempSync(path.join(tmpdir(), 'sluice-goaccess-'));
  await startFunction('log-lake');
  await startFunction('log-clean');
  trigger = await startFunction('trigger', { LOG_DIR: work });
});
after(async () => {
  await stopAll();
  await pool?.end();
  rmSync(work, { recursive: true, force: true });
});

describe('the streaming aggregates agree with GoAccess 1.7', () => {
  for (const file of FILES) {
    test(file, async () => {
      const all = linesOf(file);
      const ours = all.filter((l) => parseAccessLine(l.toString('utf8')).ok);
      // Lines both accept: GoAccess's failures among ours are found line by line (small files only).
      let both = ours;
      const whole = goaccess(ours);
      if (whole.general.failed_requests > 0) {
        assert.ok(ours.length <= 100, `GoAccess fails ${whole.general.failed_requests} of the ${ours.length} lines of ${file} that sluice parses`);
        both = ours.filter(gaAccepts);
      }
      const ga = both === ours ? whole : goaccess(both);
      // Replay exactly the lines both accept, as its own source.
      const source = `ga-${file.replace(/[^A-Za-z0-9]+/g, '-')}`;
      const name = `${source}.log`;
      writeFileSync(path.join(work, name), Buffer.concat(both.map((l) => Buffer.concat([l, Buffer.from('\n')]))));
      const run = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: name, source });
      assert.equal(run.status, 202, JSON.stringify(run.body));
      const stats = await waitFor(`${file} counted`, async () => {
        const r = await api(trigger, 'GET', `/v1/stats?source=${source}&${RANGE}&bucket=day`);
        return r.status === 200 && r.body.totals.requests === both.length ? r.body : undefined;
      }, 120_000, 250);

      assert.equal(ga.general.valid_requests, both.length);
      assert.equal(stats.totals.requests, ga.general.valid_requests, 'requests');
      assert.equal(stats.totals.bytes, ga.general.bandwidth, 'bytes');
      assert.equal(stats.totals.visitors, ga.general.unique_visitors, 'unique visitors (sum over days)');
      const classes = Object.fromEntries(ga.status_codes.data.map((d) => [`${d.data[0]}xx`, d.hits.count]));
      for (const k of ['1xx', '2xx', '3xx', '4xx', '5xx']) assert.equal(stats.totals.status[k], classes[k] ?? 0, `status ${k}`);

      // GoAccess splits requests over three panels (pages, static files, 404s): add them up per key.
      const hits = new Map<string, number>();
      for (const panel of [ga.requests, ga.static_requests, ga.not_found]) for (const d of panel.data) hits.set(d.data, (hits.get(d.data) ?? 0) + d.hits.count);
      // A request line with no path ("" or garbage, answered 400) is a request but no path value in
      // sluice; GoAccess lists the raw line as one. Those entries are left out of the comparison.
      const noPath = both.filter((l) => (parseAccessLine(l.toString('utf8')) as { value: { path: string | null } }).value.path === null).length;
      for (const key of [...hits.keys()]) if (!key.startsWith('/')) noPath > 0 ? hits.delete(key) : assert.fail(`GoAccess lists a non-path request '${key}'`);
      const top = (await api(trigger, 'GET', `/v1/stats/top?source=${source}&dimension=path&${RANGE}&limit=10`)).body.items as { value: string; requests: number }[];
      const expected = [...hits].sort((a, b) => b[1] - a[1]);
      // Ties at the tenth place may be ordered differently: compare counts in order, and each value's count.
      assert.deepEqual(top.map((i) => i.requests), expected.slice(0, top.length).map(([, n]) => n), 'top 10 counts');
      for (const item of top) assert.equal(hits.get(item.value), item.requests, `hits of ${item.value}`);
      assert.equal(top.length, Math.min(10, hits.size));
    });
  }

  test('the differences kept are the ones documented', () => {
    const apache = linesOf('apache_logs');
    const rejected = apache.map((l, i) => [i + 1, parseAccessLine(l.toString('utf8'))] as const).filter(([, r]) => !r.ok);
    assert.deepEqual(rejected.map(([n]) => n), [8899], 'sluice rejects only the truncated line 8899 of apache_logs');
    assert.ok(gaAccepts(apache[8898]!), 'which GoAccess counts');
    const beats = linesOf('beats/test.log');
    const gaFails = beats.filter((l) => parseAccessLine(l.toString('utf8')).ok && !gaAccepts(l));
    // X-Forwarded-For lists (plain or quoted), a unix socket, or a host name in the client field.
    assert.equal(gaFails.length, 7);
    for (const l of gaFails) assert.match(l.toString(), /^("|[^ ]+, |unix: |localhost )/, `GoAccess fails only lists, sockets and names as client: ${l}`);
  });
});
