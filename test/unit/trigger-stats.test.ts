// The stats query API with a hand-written fake store: parameters validated (400 naming the bad
// one), defaults (the last hour, minute buckets, top 10), totals as the sum of the series.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { statsRoutes, type StatsQuery, type StatsStore, type TopQuery } from '../../functions/trigger/stats.ts';

function setup() {
  const calls: { series: StatsQuery[]; top: TopQuery[] } = { series: [], top: [] };
  const store: StatsStore = {
    async series(q) {
      calls.series.push(q);
      return [
        { t: '2024-01-01T10:00:00.000Z', requests: 10, bytes: 1000, visitors: 3, status: { '1xx': 0, '2xx': 8, '3xx': 1, '4xx': 1, '5xx': 0 } },
        { t: '2024-01-01T10:01:00.000Z', requests: 5, bytes: 500, visitors: 1, status: { '1xx': 0, '2xx': 3, '3xx': 0, '4xx': 0, '5xx': 2 } },
      ];
    },
    async top(q) {
      calls.top.push(q);
      return [{ value: '/a', requests: 9, visitors: 2, bytes: 90 }];
    },
  };
  const app = Fastify();
  void app.register(statsRoutes({ store, now: () => new Date('2024-01-01T11:00:00Z') }));
  return { app, calls };
}

test('GET /v1/stats: the last hour by minute by default, totals summed from the series', async () => {
  const { app, calls } = setup();
  const res = await app.inject({ url: '/v1/stats?source=web' });
  assert.equal(res.statusCode, 200, res.body);
  const body = res.json();
  assert.equal(body.from, '2024-01-01T10:00:00.000Z');
  assert.equal(body.to, '2024-01-01T11:00:00.000Z');
  assert.deepEqual(body.totals, { requests: 15, bytes: 1500, visitors: 4, status: { '1xx': 0, '2xx': 11, '3xx': 1, '4xx': 1, '5xx': 2 } });
  assert.equal(body.series.length, 2);
  assert.deepEqual(calls.series[0], { source: 'web', from: new Date('2024-01-01T10:00:00Z'), to: new Date('2024-01-01T11:00:00Z'), bucket: 'minute' });
});

test('GET /v1/stats: every bad parameter is named', async () => {
  const { app } = setup();
  const cases: [string, RegExp][] = [
    ['/v1/stats?bucket=week', /bucket/],
    ['/v1/stats?from=yesterday', /from/],
    ['/v1/stats?source=a%20b', /source/],
    ['/v1/stats?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z', /from .* must be before to/],
    ['/v1/stats?from=2020-01-01T00:00:00Z&to=2024-01-01T00:00:00Z', /at most 10,080 points: use a larger bucket/],
    ['/v1/stats?colour=red', /colour/],
  ];
  for (const [url, message] of cases) {
    const res = await app.inject({ url });
    assert.equal(res.statusCode, 400, url);
    assert.match(res.json().message, message, url);
  }
  assert.equal((await app.inject({ url: '/v1/stats?from=2020-01-01T00:00:00Z&to=2024-01-01T00:00:00Z&bucket=day' })).statusCode, 200);
});

test('GET /v1/stats/top: dimension required and checked, limit 1..1000 (10 by default)', async () => {
  const { app, calls } = setup();
  assert.match((await app.inject({ url: '/v1/stats/top' })).json().message, /dimension/);
  assert.match((await app.inject({ url: '/v1/stats/top?dimension=colour' })).json().message, /dimension/);
  assert.match((await app.inject({ url: '/v1/stats/top?dimension=path&limit=0' })).json().message, /limit/);
  const res = await app.inject({ url: '/v1/stats/top?dimension=not_found&from=2024-01-01T00:00:00Z&to=2024-01-02T00:00:00Z' });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.json().items, [{ value: '/a', requests: 9, visitors: 2, bytes: 90 }]);
  assert.equal(calls.top[0]!.limit, 10);
  assert.equal(calls.top[0]!.dimension, 'not_found');
});
