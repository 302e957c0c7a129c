// The CLI's human output: numbers, sizes, durations, aligned tables, colour only where wanted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { colorEnabled, fmtBytes, fmtDuration, fmtInt, fmtRate, fmtTime, painter, table, truncate } from '../../cli/format.ts';
import { describeRun, runsTable, statsView, topView, type RunView } from '../../cli/views.ts';

test('numbers have thousands separators; sizes, durations and rates read at a glance', () => {
  assert.equal(fmtInt(1234567), '1,234,567');
  assert.equal(fmtInt(0), '0');
  assert.equal(fmtInt(null), '–');
  assert.equal(fmtBytes(512), '512 B');
  assert.equal(fmtBytes(1536), '1.5 KiB');
  assert.equal(fmtBytes(2.6 * 1024 ** 3), '2.6 GiB');
  assert.equal(fmtDuration(4_200), '4s');
  assert.equal(fmtDuration(65_000), '1m 05s');
  assert.equal(fmtDuration(3_725_000), '1h 02m');
  assert.equal(fmtDuration(NaN), '–');
  assert.equal(fmtRate(12345.6), '12,346/s');
  assert.equal(fmtRate(2.25), '2.3/s');
  assert.equal(fmtRate(NaN), '–');
  assert.equal(fmtTime('2026-11-25T21:23:05.123Z'), '2026-11-25 21:23:05');
  assert.equal(truncate('abcdef', 4), 'abc…');
  assert.equal(truncate('abc', 4), 'abc');
});

test('a table aligns its columns, numbers to the right, whatever colour the cells carry', () => {
  const paint = painter(true);
  const out = table(
    [{ header: 'NAME' }, { header: 'COUNT', align: 'right' }, { header: 'NOTE' }],
    [
      [paint('green', 'done'), '1,000', 'x'],
      ['running', '5', 'a longer note'],
    ],
  );
  const lines = out.trimEnd().split('\n').map((l) => l.replace(/\x1b\[\d+m/g, ''));
  assert.deepEqual(lines, ['NAME     COUNT  NOTE', 'done     1,000  x', 'running      5  a longer note']);
});

test('colour only on a terminal, never with NO_COLOR or TERM=dumb; FORCE_COLOR forces it', () => {
  assert.equal(colorEnabled({ isTTY: true }, {}), true);
  assert.equal(colorEnabled({ isTTY: false }, {}), false);
  assert.equal(colorEnabled({}, {}), false);
  assert.equal(colorEnabled({ isTTY: true }, { NO_COLOR: '1' }), false);
  assert.equal(colorEnabled({ isTTY: true }, { TERM: 'dumb' }), false);
  assert.equal(colorEnabled({ isTTY: false }, { FORCE_COLOR: '1' }), true);
  assert.equal(colorEnabled({ isTTY: true }, { FORCE_COLOR: '0' }), false);
  assert.equal(painter(false)('red', 'x'), 'x');
  assert.match(painter(true)('red', 'x'), /^\x1b\[31mx\x1b\[39m$/);
});

const run = (over: Partial<RunView> = {}): RunView => ({
  id: '7d4f2ea4-e968-4e57-9493-ca46273bc163',
  kind: 'logs',
  state: 'done',
  source: 'apache_logs',
  file: 'apache_logs',
  params: null,
  lines: 10_000,
  published: 10_000,
  error: null,
  createdAt: '2026-11-25T21:36:22.000Z',
  updatedAt: '2026-11-25T21:36:23.450Z',
  finishedAt: '2026-11-25T21:36:23.450Z',
  stored: { raw_logs: 10_000, web_requests: 9_999, log_rejects: 1 },
  ...over,
});

test('runs: a table of the API runs, what each reads, published with separators', () => {
  const out = runsTable([run(), run({ id: 'b', kind: 'ev', state: 'failed', source: 'simulator', file: null, params: { sessions: 1500, seed: 7, faultRate: 0.3 }, published: 1234567 })]);
  const [head, first, second] = out.trimEnd().split('\n');
  assert.match(head!, /^ID\s+KIND\s+STATE\s+SOURCE\s+PUBLISHED\s+STARTED \(UTC\)\s+TOOK\s+WHAT$/);
  assert.match(first!, /^7d4f2ea4-\S+\s+logs\s+done\s+apache_logs\s+10,000\s+2026-11-25 21:36:22\s+1s\s+apache_logs$/);
  assert.match(second!, /1,234,567/);
  assert.match(second!, /1,500 sessions, seed 7, faults 0\.3$/);
  assert.equal(head!.indexOf('PUBLISHED') + 'PUBLISHED'.length, first!.indexOf('10,000') + '10,000'.length, 'numbers right-aligned under their header');
  assert.equal(describeRun(run({ file: null })), '(upload)');
  assert.equal(describeRun(run({ params: { follow: true, glob: false } })), 'apache_logs (follow)');
  assert.match(runsTable([]), /no runs yet/);
});

test('stats and top: totals, a row per bucket, ranks', () => {
  const point = (t: string, requests: number) => ({ t, requests, bytes: requests * 1000, visitors: 3, status: { '1xx': 0, '2xx': requests - 1, '3xx': 0, '4xx': 1, '5xx': 0 } });
  const out = statsView({
    source: null,
    from: '2015-05-17T00:00:00.000Z',
    to: '2015-05-19T00:00:00.000Z',
    bucket: 'day',
    totals: { requests: 3000, bytes: 3_000_000, visitors: 6, status: { '1xx': 0, '2xx': 2998, '3xx': 0, '4xx': 2, '5xx': 0 } },
    series: [point('2015-05-17T00:00:00.000Z', 1000), point('2015-05-18T00:00:00.000Z', 2000)],
  });
  assert.match(out, /^requests\s+3,000$/m);
  assert.match(out, /^status\s+2xx 2,998\s+3xx 0\s+4xx 2\s+5xx 0$/m, '1xx left out when there is none');
  assert.match(out, /^DAY \(UTC\)\s+REQUESTS\s+VISITORS\s+BYTES\s+2XX\s+3XX\s+4XX\s+5XX$/m);
  assert.match(out, /^2015-05-18\s+2,000\s+3\s+1\.9 MiB\s+1,999\s+0\s+1\s+0$/m);
  const top = topView({ source: 'web', dimension: 'path', from: '2015-05-17T00:00:00.000Z', to: '2015-05-18T00:00:00.000Z', items: [{ value: '/favicon.ico', requests: 807, visitors: 723, bytes: 2_800_000 }] });
  assert.match(top, /^#\s+REQUESTS\s+VISITORS\s+BYTES\s+PATH$/m);
  assert.match(top, /^1\s+807\s+723\s+2\.7 MiB\s+\/favicon\.ico$/m);
  assert.match(topView({ source: null, dimension: 'path', from: 'a', to: 'b', items: [] }), /nothing in this range/);
});
