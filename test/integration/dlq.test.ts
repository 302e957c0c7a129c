// Dead letters end to end, on the real broker: poison log lines dead-lettered by log-lake and
// log-clean, listed and shown through the API and the `sluice` command (left in place), replayed
// back to their queue (each exactly once, through the retry queue, with a fresh set of attempts:
// a good message is then stored, the poison ones come back once), purged; the answers checked
// against the trigger's own /openapi.json; and what the operator's user sluice_dlq and the
// trigger's own user may not do.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import amqp, { type GetMessage } from 'amqplib';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Pool } from '../../shared/db/pool.ts';
import { DLQ_AMQP_URL, admin, depth, TOKEN, api, count, ensureBuilt, ownUrls, resetEnvironment, root, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

let pool: Pool;
let trigger: FnProcess;
let clean: FnProcess;
const runId = randomUUID();
const poisonIds = [1, 2, 3].map((i) => `dlq-test-poison-${i}`);
const goodId = 'dlq-test-good-1';
const GOOD_LINE = '203.0.113.9 - - [25/Nov/2026:21:00:00 +0000] "GET /replayed HTTP/1.1" 200 512 "-" "curl/8.0"';

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  await startFunction('log-lake');
  clean = await startFunction('log-clean');
  trigger = await startFunction('trigger');
});
after(async () => {
  await stopAll();
  await pool?.end();
});


/** Every message of a queue, given back afterwards (nack with requeue). */
const drainLook = (queue: string) =>
  admin(async (ch) => {
    const got: GetMessage[] = [];
    for (let m = await ch.get(queue); m !== false; m = await ch.get(queue)) got.push(m);
    if (got.length) ch.nack(got.at(-1)!, true, true);
    return got;
  });

function sluice(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin', 'sluice.mjs'), ...args], {
      cwd: root,
      env: { PATH: process.env.PATH, SLUICE_URL: `http://127.0.0.1:${trigger.ready.port}`, SLUICE_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The trigger's own document, and a check of an answer against it. */
let doc: { paths: Record<string, Record<string, { responses: Record<string, { content: Record<string, { schema: object }> }> }>> };
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats.default(ajv);
function conforms(method: string, route: string, res: { status: number; body: unknown }) {
  const schema = doc.paths[route]?.[method]?.responses[String(res.status)]?.content['application/json']?.schema;
  assert.ok(schema, `${method} ${route} ${res.status} is declared in /openapi.json`);
  const validate = ajv.compile(schema);
  assert.ok(validate(res.body), `${method} ${route} ${res.status}: ${ajv.errorsText(validate.errors)}`);
}

test('poison lines are dead-lettered by both consumers; a good message is put in the DLQ by hand', async () => {
  await admin(async (ch) => {
    // Headers that break the log-line contract: each consumer dead-letters them at once.
    poisonIds.forEach((messageId, i) =>
      ch.publish('logs', 'logs.dlqtest.access', Buffer.from(`poison line ${i + 1}\u202e\x00`), { messageId, persistent: true, headers: { runId, source: 'dlqtest', lineNo: 'not a number', byteOffset: 0 } }),
    );
    // A good line that "gave up after 8 attempts" (say, while a bug was deployed): straight into logs.clean.dlq.
    ch.publish('logs.clean.dlq', 'logs.clean', Buffer.from(GOOD_LINE), {
      messageId: goodId,
      persistent: true,
      headers: { runId, source: 'dlqtest', lineNo: 1, byteOffset: 0, 'x-sluice-attempt': 8, 'x-sluice-attempts': 8, 'x-sluice-reason': 'gave up after 8 attempts: the bug of the day', 'x-sluice-routing-key': 'logs.dlqtest.access', 'x-sluice-exchange': 'logs' },
    });
    await ch.waitForConfirms();
  });
  await waitFor('4 dead letters in logs.clean.dlq and 3 in logs.lake.dlq', async () => (await depth('logs.clean.dlq')) === 4 && (await depth('logs.lake.dlq')) === 3, 30_000);
  const docRes = await fetch(`http://127.0.0.1:${trigger.ready.port}/openapi.json`);
  assert.equal(docRes.status, 200, 'the document is public');
  doc = (await docRes.json()) as typeof doc;
});

test('GET /v1/dlq and GET /v1/dlq/:queue list and show them, and leave them', async () => {
  const list = await api(trigger, 'GET', '/v1/dlq');
  assert.equal(list.status, 200);
  conforms('get', '/v1/dlq', list);
  const byQueue = Object.fromEntries((list.body as { queues: { queue: string; messages: number; source: string }[] }).queues.map((q) => [q.queue, q]));
  assert.deepEqual(byQueue['logs.clean.dlq'], { queue: 'logs.clean.dlq', source: 'logs.clean', messages: 4 });
  assert.equal(byQueue['logs.lake.dlq']!.messages, 3);
  assert.equal(byQueue['notify.email.dlq']!.messages, 0);

  const show = await api(trigger, 'GET', '/v1/dlq/logs.clean?limit=10');
  assert.equal(show.status, 200);
  conforms('get', '/v1/dlq/{queue}', show);
  const items = (show.body as { items: { messageId: string; reason: string; attempts: number; routingKey: string; exchange: string; preview: string; size: number; redelivered: boolean }[] }).items;
  assert.deepEqual(items.map((m) => m.messageId).sort(), [...poisonIds, goodId].sort());
  const first = items.find((m) => m.messageId === poisonIds[0])!;
  assert.match(first.reason, /invalid log-line headers: lineNo/);
  assert.equal(first.attempts, 1);
  assert.equal(first.routingKey, 'logs.dlqtest.access', 'the routing key it was published with');
  assert.equal(first.exchange, 'logs');
  assert.equal(first.preview, 'poison line 1\\u{202e}\\u{0}', 'shown escaped');
  assert.equal(items.find((m) => m.messageId === goodId)!.attempts, 8);
  // Shown, not taken: the same messages, in the same order, are still there.
  assert.equal(await depth('logs.clean.dlq'), 4);
  const again = await api(trigger, 'GET', '/v1/dlq/logs.clean.dlq?limit=10');
  assert.deepEqual((again.body as { items: { messageId: string }[] }).items.map((m) => m.messageId), items.map((m) => m.messageId));
  assert.ok((again.body as { items: { redelivered: boolean }[] }).items.every((m) => m.redelivered), 'a shown message is marked redelivered by the broker');

  const unknown = await api(trigger, 'GET', '/v1/dlq/logs.nope');
  assert.equal(unknown.status, 404);
  conforms('get', '/v1/dlq/{queue}', unknown);
});

test('sluice dlq list / show; replay refuses without --yes off a terminal', async () => {
  const list = await sluice(['dlq', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^logs\.clean\.dlq\s+logs\.clean\s+4$/m);
  assert.match(list.stdout, /^logs\.lake\.dlq\s+logs\.lake\s+3$/m);
  const show = await sluice(['dlq', 'show', 'logs.clean', '--limit', '2']);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /logs\.clean\.dlq \(from logs\.clean\): 4 messages, the first 2 shown/);
  assert.match(show.stdout, /reason\s+log-line: invalid log-line headers/);
  const json = await sluice(['dlq', 'show', 'logs.clean.dlq', '--limit', '1', '--json']);
  assert.equal(JSON.parse(json.stdout).items.length, 1);
  const refused = await sluice(['dlq', 'replay', 'logs.clean']);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /--yes/);
  assert.equal(await depth('logs.clean.dlq'), 4, 'nothing moved');
});

test('replay moves each message back to its queue exactly once, afresh and marked; only to that queue', async () => {
  // log-clean stopped, so the messages can be seen arriving in logs.clean.
  await clean.kill('SIGTERM');
  const replay = await sluice(['dlq', 'replay', 'logs.clean', '--yes', '--json']);
  assert.equal(replay.code, 0, replay.stderr);
  const body = JSON.parse(replay.stdout);
  conforms('post', '/v1/dlq/{queue}/replay', { status: 200, body });
  assert.deepEqual(body, { queue: 'logs.clean.dlq', source: 'logs.clean', replayed: 4, remaining: 0, via: 'logs.clean.retry', arrivesAfterMs: 5000 });
  assert.equal(await depth('logs.clean.dlq'), 0);
  await waitFor('the 4 copies back in logs.clean after the retry delay', async () => (await depth('logs.clean')) === 4, 30_000);
  const arrived = await drainLook('logs.clean');
  assert.deepEqual(arrived.map((m) => String(m.properties.messageId)).sort(), [...poisonIds, goodId].sort(), 'each once');
  for (const m of arrived) {
    const h = m.properties.headers ?? {};
    assert.equal(h['x-sluice-replayed'], 1);
    assert.equal(h['x-sluice-attempt'], undefined, 'a fresh set of attempts');
    assert.equal(h['x-sluice-reason'], undefined);
    assert.match(String(h['x-sluice-replayed-reason']), /invalid log-line headers|gave up after 8 attempts/);
    assert.equal(h.runId, runId, "the message's own headers kept");
  }
  assert.equal(await depth('logs.lake.dlq'), 3, "logs.lake's dead letters untouched");
  assert.equal(await depth('logs.lake'), 0, 'nothing went to logs.lake');

  // log-clean back: the good line is stored, the poison lines come back to the DLQ once each.
  clean = await startFunction('log-clean');
  await waitFor('the replayed good line stored', async () => (await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [runId])) === 1, 30_000);
  await waitFor('the 3 poison lines back in logs.clean.dlq', async () => (await depth('logs.clean.dlq')) === 3, 30_000);
  await new Promise((r) => setTimeout(r, 1_000));
  const back = await api(trigger, 'GET', '/v1/dlq/logs.clean?limit=10');
  const items = (back.body as { messages: number; items: { messageId: string; replayed: number; attempts: number }[] });
  assert.equal(items.messages, 3, 'no more, no less');
  assert.deepEqual(items.items.map((m) => m.messageId).sort(), [...poisonIds].sort());
  // Attempt 2: the first of a fresh set (not 8), plus the test's own look at logs.clean above, which
  // returned them once (a quorum queue counts that as a delivery, and the runtime counts deliveries).
  assert.ok(items.items.every((m) => m.replayed === 1 && m.attempts === 2), JSON.stringify(items.items));
});

test('purge through the command line drops every message of one DLQ', async () => {
  const purge = await sluice(['dlq', 'purge', 'logs.lake', '--yes']);
  assert.equal(purge.code, 0, purge.stderr);
  assert.match(purge.stdout, /purged logs\.lake\.dlq: 3 messages dropped/);
  assert.equal(await depth('logs.lake.dlq'), 0);
  assert.equal(await depth('logs.clean.dlq'), 3, 'the other DLQ untouched');
  const res = await api(trigger, 'POST', '/v1/dlq/logs.clean/purge');
  assert.equal(res.status, 200);
  conforms('post', '/v1/dlq/{queue}/purge', res);
  assert.equal((res.body as { purged: number }).purged, 3);
});

test('sluice_dlq may only read the DLQs and write the retry exchanges; the trigger may write neither', async () => {
  async function as(url: string, fn: (ch: amqp.ConfirmChannel) => Promise<unknown>): Promise<string> {
    const conn = await amqp.connect(url);
    conn.on('error', () => {});
    try {
      const ch = await conn.createConfirmChannel();
      const closed = new Promise<string>((resolve) => ch.on('error', (err: Error) => resolve(err.message)));
      return await Promise.race([fn(ch).then(() => 'ok'), closed]);
    } catch (err) {
      return (err as Error).message;
    } finally {
      await conn.close().catch(() => {});
    }
  }
  const publish = (exchange: string, key: string) => async (ch: amqp.ConfirmChannel) => {
    ch.publish(exchange, key, Buffer.from('{}'), { messageId: 'sec', persistent: true });
    await ch.waitForConfirms();
  };
  for (const [exchange, key] of [['', 'notify.email'], ['logs', 'logs.x.access'], ['ev', 'ev.event.completed'], ['notify.email.dlq', 'notify.email']] as const) {
    assert.match(await as(DLQ_AMQP_URL, publish(exchange, key)), /ACCESS_REFUSED/, `sluice_dlq may not publish to '${exchange}'`);
  }
  assert.match(await as(DLQ_AMQP_URL, (ch) => ch.get('logs.clean')), /ACCESS_REFUSED/, 'nor read a source queue');
  assert.match(await as(DLQ_AMQP_URL, (ch) => ch.purgeQueue('notify.email')), /ACCESS_REFUSED/, 'nor purge one');
  assert.match(await as(DLQ_AMQP_URL, (ch) => ch.assertQueue('sluice-dlq-made-this', { durable: false })), /ACCESS_REFUSED/, 'nor configure');
  // The trigger's own user, which runs next to these routes: still no way into notify.email.
  for (const exchange of ['notify.email.retry', 'notify.email.dlq', '']) {
    assert.match(await as(ownUrls('trigger').AMQP_URL, publish(exchange, 'notify.email')), /ACCESS_REFUSED/, `the trigger may not publish to '${exchange}'`);
  }
  assert.match(await as(ownUrls('trigger').AMQP_URL, (ch) => ch.get('notify.email.dlq')), /ACCESS_REFUSED/, 'nor read the DLQs itself');
});
