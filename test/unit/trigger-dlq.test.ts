// Dead letters: the routes over a fake port, how a dead letter is described and shown, what a
// replayed copy carries, and who may do what on the broker (infra/access.ts, the operator roles
// sluice_dlq and sluice_monitor included).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { createApp } from '../../functions/trigger/app.ts';
import { createDeadLetters, deadLetterReason, describeDeadLetter, type DeadLetters, replayHeaders, resolveDlq, safePreview } from '../../functions/trigger/dlq.ts';
import { OPERATOR_ACCESS, amqpPermissions, operatorPermissions, passwordVariable, userOf, FUNCTIONS } from '../../infra/access.ts';
import { deadLetterQueue, retryQueue, topology } from '../../infra/topology.ts';
import { monitorApiUrl } from '../../scripts/local-env.ts';
import { fakeRuns } from './fakes/run-store.ts';
import { deadLetter, fakeDeadLetters } from './fakes/dead-letters.ts';

const TOKEN = 'secret-token-123';
const auth = { authorization: `Bearer ${TOKEN}` };
const noRunner = { start() {}, runNow: async () => ({ lines: 0, published: 0 }), stopRun: () => null, executing: () => [], active: 0, stop: async () => {} };
const noEv = { start: async () => assert.fail('no EV run'), resume() {} };
const build = (dlq: DeadLetters = fakeDeadLetters()) =>
  createApp({ runs: fakeRuns(), runner: noRunner, ev: noEv, logDir: '/nonexistent', token: TOKEN, bodyLimitBytes: 1024, log: pino({ level: 'silent' }), ready: () => true, ...(dlq ? { dlq } : {}) });

describe('routes', () => {
  const dlq = fakeDeadLetters();
  let app: ReturnType<typeof createApp>;
  before(() => {
    app = build(dlq);
    dlq.queues.get('logs.clean.dlq')!.push(
      deadLetter('logs.clean', 'first', { runId: 'r' }, 'a'),
      deadLetter('logs.clean', 'second', {}, 'b'),
      deadLetter('logs.clean', 'third', { 'x-sluice-replayed': 1 }, 'c'),
    );
  });
  after(() => app.close());

  test('GET /v1/dlq lists every queue of the topology with its DLQ and depth', async () => {
    const res = await app.inject({ url: '/v1/dlq', headers: auth });
    assert.equal(res.statusCode, 200);
    const { queues } = res.json() as { queues: { queue: string; source: string; messages: number }[] };
    assert.deepEqual(queues.map((q) => q.source), topology.queues.map((q) => q.name));
    assert.deepEqual(queues.find((q) => q.source === 'logs.clean'), { queue: 'logs.clean.dlq', source: 'logs.clean', messages: 3 });
  });

  test('GET /v1/dlq/:queue shows the first messages, by DLQ or source name, and leaves them', async () => {
    for (const name of ['logs.clean.dlq', 'logs.clean']) {
      const res = await app.inject({ url: `/v1/dlq/${name}?limit=2`, headers: auth });
      assert.equal(res.statusCode, 200);
      const body = res.json();
      assert.equal(body.queue, 'logs.clean.dlq');
      assert.equal(body.messages, 3);
      assert.deepEqual(body.items.map((m: { messageId: string }) => m.messageId), ['a', 'b']);
      assert.match(body.items[0].reason, /invalid log-line headers/);
      assert.equal(body.items[0].routingKey, 'logs.web.access', 'the routing key it was published with, not the DLQ one');
    }
    assert.equal(dlq.queues.get('logs.clean.dlq')!.length, 3, 'nothing removed');
  });

  test('an unknown queue is 404 naming it and the known ones; a bad limit is 400 naming it', async () => {
    for (const [method, url] of [['GET', '/v1/dlq/web.dlq'], ['POST', '/v1/dlq/web.dlq/replay'], ['POST', '/v1/dlq/notify.email.retry/purge']] as const) {
      const res = await app.inject({ method, url, headers: auth, ...(method === 'POST' ? { payload: {} } : {}) });
      assert.equal(res.statusCode, 404, url);
      assert.match(res.json().message, /no dead-letter queue '(web\.dlq|notify\.email\.retry)'.*logs\.clean\.dlq/);
    }
    const bad = await app.inject({ url: '/v1/dlq/logs.clean?limit=0', headers: auth });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().message, /limit/);
    const badBody = await app.inject({ method: 'POST', url: '/v1/dlq/logs.clean/replay', headers: auth, payload: { limit: 'all' } });
    assert.equal(badBody.statusCode, 400);
    assert.match(badBody.json().message, /limit/);
    const text = await app.inject({ method: 'POST', url: '/v1/dlq/logs.clean/replay', headers: { ...auth, 'content-type': 'text/plain' }, payload: 'x' });
    assert.equal(text.statusCode, 400);
    assert.match(text.json().message, /JSON/);
  });

  test('the routes need the token', async () => {
    assert.equal((await app.inject({ url: '/v1/dlq' })).statusCode, 401);
    assert.equal((await app.inject({ method: 'POST', url: '/v1/dlq/logs.clean/purge' })).statusCode, 401);
    assert.deepEqual(dlq.purged, []);
  });

  test('POST replay moves `limit` messages (or all), marked, through the retry queue', async () => {
    const one = await app.inject({ method: 'POST', url: '/v1/dlq/logs.clean.dlq/replay', headers: auth, payload: { limit: 1 } });
    assert.equal(one.statusCode, 200);
    assert.deepEqual(one.json(), { queue: 'logs.clean.dlq', source: 'logs.clean', replayed: 1, remaining: 2, via: 'logs.clean.retry', arrivesAfterMs: 5000 });
    // No body at all is fine too: everything.
    const rest = await app.inject({ method: 'POST', url: '/v1/dlq/logs.clean/replay', headers: auth });
    assert.equal(rest.statusCode, 200);
    assert.equal(rest.json().replayed, 2);
    assert.deepEqual(dlq.moved.map((m) => (m.headers as Record<string, unknown>)['x-sluice-replayed']), [1, 1, 2]);
  });

  test('POST purge empties the queue', async () => {
    dlq.queues.get('notify.email.dlq')!.push(deadLetter('notify.email', '{}'));
    const res = await app.inject({ method: 'POST', url: '/v1/dlq/notify.email/purge', headers: auth });
    assert.deepEqual(res.json(), { queue: 'notify.email.dlq', source: 'notify.email', purged: 1 });
    assert.equal(dlq.queues.get('notify.email.dlq')!.length, 0);
  });
});

test('without DLQ_AMQP_URL every DLQ route is 503 naming the setting', async () => {
  const app = createApp({ runs: fakeRuns(), runner: noRunner, ev: noEv, logDir: '/nonexistent', token: TOKEN, bodyLimitBytes: 1024, log: pino({ level: 'silent' }), ready: () => true });
  try {
    for (const [method, url] of [['GET', '/v1/dlq'], ['GET', '/v1/dlq/logs.lake'], ['POST', '/v1/dlq/logs.lake/replay'], ['POST', '/v1/dlq/logs.lake/purge']] as const) {
      const res = await app.inject({ method, url, headers: auth });
      assert.equal(res.statusCode, 503, url);
      assert.match(res.json().message, /DLQ_AMQP_URL/);
    }
  } finally {
    await app.close();
  }
});

test('resolveDlq takes the DLQ or its source queue, nothing else', () => {
  assert.deepEqual(resolveDlq('logs.lake'), { queue: 'logs.lake.dlq', source: 'logs.lake' });
  assert.deepEqual(resolveDlq('ev.analytics.p3.dlq'), { queue: 'ev.analytics.p3.dlq', source: 'ev.analytics.p3' });
  for (const bad of ['logs.lake.retry', 'logs', '', 'logs.lake.dlq.dlq', '.*']) assert.equal(resolveDlq(bad), null, bad);
});

test('safePreview: text as is, control, bidi and separator characters escaped, invalid UTF-8 as \\xNN, cut', () => {
  assert.equal(safePreview(Buffer.from('GET /a?q=é 200')), 'GET /a?q=é 200');
  assert.equal(safePreview(Buffer.from('a\nb\tc\\d\x1b[31m')), 'a\\nb\\tc\\\\d\\u{1b}[31m');
  assert.equal(safePreview(Buffer.from('x\u202ey\u200bz\u2028')), 'x\\u{202e}y\\u{200b}z\\u{2028}');
  assert.equal(safePreview(Buffer.from([0x61, 0xff, 0xc3, 0x28, 0x62])), 'a\\xff\\xc3(b');
  assert.equal(safePreview(Buffer.from('abcdef'), 3), 'abc');
  // A character cut by the limit shows as its bytes, not as a wrong character.
  assert.equal(safePreview(Buffer.from('aé'), 2), 'a\\xc3');
});

test('describeDeadLetter reads what the consumer runtime recorded', () => {
  const m = describeDeadLetter(deadLetter('logs.clean', Buffer.alloc(300, 0x41), { 'x-death': [{ count: 2 }, { count: 1 }], 'x-sluice-attempts': 8, blob: Buffer.from([1, 2]) }, 'id-1'));
  assert.equal(m.reason, 'log.line: invalid log-line headers: lineNo: expected number');
  assert.equal(m.attempts, 8);
  assert.equal(m.deaths, 3);
  assert.equal(m.routingKey, 'logs.web.access');
  assert.equal(m.exchange, 'logs');
  assert.equal(m.size, 300);
  assert.equal(m.truncated, true);
  assert.equal(m.preview.length, 256);
  assert.deepEqual(m.headers.blob, { base64: 'AQI=' });
});

test('a replayed copy starts afresh: no attempts or DLQ record, counted as replayed, the reason kept', () => {
  const h = replayHeaders({ runId: 'r', lineNo: 3, 'x-sluice-attempt': 8, 'x-delivery-count': 4, 'x-sluice-reason': 'boom', 'x-sluice-attempts': 8, 'x-sluice-routing-key': 'logs.web.access', 'x-sluice-replayed': 2 }, new Date('2026-01-01T00:00:00Z'));
  assert.deepEqual(h, { runId: 'r', lineNo: 3, 'x-sluice-replayed': 3, 'x-sluice-replayed-at': '2026-01-01T00:00:00.000Z', 'x-sluice-replayed-reason': 'boom' });
});

describe('least privilege', () => {
  const matches = (re: string, name: string) => new RegExp(re).test(name);

  test("the trigger's own user still may not write to any retry or dead-letter exchange (notify.email.retry above all)", () => {
    const { write, read, configure } = amqpPermissions('trigger');
    for (const q of topology.queues) {
      for (const x of [retryQueue(q.name), deadLetterQueue(q.name), q.name]) assert.ok(!matches(write, x), `trigger may not write ${x}`);
      assert.ok(!matches(read, deadLetterQueue(q.name)), `trigger may not read ${deadLetterQueue(q.name)}`);
    }
    assert.equal(configure, '^$');
    assert.ok(!matches(write, ''), 'nor the default exchange');
    assert.ok(!matches(write, 'amq.default'));
  });

  test('sluice_dlq: reads only the .dlq queues, writes only the .retry exchanges, configures nothing', () => {
    const p = operatorPermissions('dlq');
    assert.equal(p.configure, '^$');
    for (const q of topology.queues) {
      assert.ok(matches(p.read, deadLetterQueue(q.name)));
      assert.ok(!matches(p.read, q.name) && !matches(p.read, retryQueue(q.name)), `not ${q.name} itself`);
      assert.ok(matches(p.write, retryQueue(q.name)));
      assert.ok(!matches(p.write, q.name) && !matches(p.write, deadLetterQueue(q.name)));
    }
    for (const x of ['', 'amq.default', 'logs', 'ev', 'ev.analytics', 'logs.lake.retryx', 'xlogs.lake.retry']) assert.ok(!matches(p.write, x), `not ${JSON.stringify(x)}`);
    assert.equal(OPERATOR_ACCESS.dlq.reads.length, topology.queues.length);
  });

  test('sluice_monitor: the monitoring tag, and no right on any queue or exchange (configure, write, read all ^$)', () => {
    assert.deepEqual(operatorPermissions('monitor'), { configure: '^$', write: '^$', read: '^$' });
    assert.deepEqual(OPERATOR_ACCESS.monitor.tags, ['monitoring']);
    assert.deepEqual(OPERATOR_ACCESS.dlq.tags, [], 'sluice_dlq has no tag: no management API');
    const p = operatorPermissions('monitor');
    for (const q of topology.queues) {
      for (const x of [q.name, retryQueue(q.name), deadLetterQueue(q.name)]) assert.ok(!matches(p.read, x) && !matches(p.write, x) && !matches(p.configure, x), x);
    }
    for (const x of ['amq.default', 'logs', 'ev']) assert.ok(!matches(p.write, x), x);
  });

  test('the operator roles are users of their own, not functions', () => {
    assert.equal(userOf('dlq'), 'sluice_dlq');
    assert.equal(passwordVariable('dlq'), 'SLUICE_PASSWORD_DLQ');
    assert.equal(userOf('monitor'), 'sluice_monitor');
    assert.equal(passwordVariable('monitor'), 'SLUICE_PASSWORD_MONITOR');
    for (const op of ['dlq', 'monitor']) assert.ok(!(FUNCTIONS as readonly string[]).includes(op));
    // npm start's and the tests' RABBITMQ_MONITOR_URL: the administrator's API host, sluice_monitor's user.
    const url = new URL(monitorApiUrl('m0n-pw', { rabbitApiUrl: 'http://guest:guest@127.0.0.1:15672' }));
    assert.deepEqual([url.protocol, url.username, url.password, url.host], ['http:', 'sluice_monitor', 'm0n-pw', '127.0.0.1:15672']);
  });
});

test('the real port, with nothing listening: a 503 naming DLQ_AMQP_URL, the password not shown', async () => {
  const dlq = createDeadLetters({ url: 'amqp://sluice_dlq:s3cret-pw-123@127.0.0.1:1/sluice', log: pino({ level: 'silent' }) });
  const app = build(dlq);
  try {
    const res = await app.inject({ url: '/v1/dlq', headers: auth });
    assert.equal(res.statusCode, 503);
    assert.match(res.json().message, /cannot reach RabbitMQ as the dead-letter operator at amqp:\/\/sluice_dlq:\*\*\*@127\.0\.0\.1:1\/sluice \(DLQ_AMQP_URL\)/);
    assert.doesNotMatch(res.body, /s3cret/);
  } finally {
    await app.close();
    await dlq.close();
  }
});

test('a message the broker dead-lettered itself is explained from its x-death record', () => {
  // What RabbitMQ writes when a quorum queue's delivery limit sends a message to its DLX:
  // x-death most recent first (here after one earlier trip through Q.retry).
  const time = { '!': 'timestamp', value: 1764100000 };
  // amqplib's XDeath type predates the delivery_limit reason, hence the loose type.
  const h: Record<string, any> = {
    'x-death': [
      { count: 1, reason: 'delivery_limit', queue: 'logs.clean', exchange: 'logs', 'routing-keys': ['logs.web.access'], time },
      { count: 2, reason: 'expired', queue: 'logs.clean.retry', exchange: 'logs.clean.retry', 'routing-keys': ['logs.web.access'], time },
    ],
    'x-first-death-reason': 'expired',
  };
  const raw = deadLetter('logs.clean', 'x');
  raw.properties.headers = h; // no x-sluice-* header: the broker moved it, not the runtime
  const m = describeDeadLetter(raw);
  assert.equal(m.reason, 'dead-lettered by the broker from logs.clean: it reached the delivery limit (x-death reason delivery_limit, count 1)');
  assert.equal(m.deaths, 3);
  // Brokers that also write x-last-death-* (3.13+), and one with only the first-death headers.
  assert.equal(deadLetterReason({ 'x-last-death-reason': 'rejected', 'x-last-death-queue': 'notify.email' }), 'dead-lettered by the broker from notify.email: a consumer rejected it (x-death reason rejected)');
  assert.equal(deadLetterReason({ 'x-first-death-reason': 'maxlen' }), 'dead-lettered by the broker: its queue was full (x-death reason maxlen)');
  // The runtime's own reason wins; with neither there is no reason to show.
  assert.equal(deadLetterReason({ 'x-sluice-reason': 'boom', 'x-death': h['x-death'] }), 'boom');
  assert.equal(deadLetterReason({}), null);
  // A replay keeps the broker's reason as the replayed reason.
  assert.match(String(replayHeaders(h)['x-sluice-replayed-reason']), /delivery limit/);
});
