// The broker's own dead-lettering, on the real broker (issue 10): the migrate step sets policies
// (infra/topology.ts queuePolicies) that give every queue an explicit delivery limit and its `.dlq`
// as dead-letter target, retry queues at-least-once dead-lettering back, and `.dlq` queues no limit.
// Checked: the policies apply (also to queues that existed before them, and again on a re-run,
// removing stale ones); a message returned to its queue past the limit lands in Q.dlq with
// `x-death` reason `delivery_limit`; a retried message comes back from Q.retry; a dead letter
// peeked (nack + requeue) more often than the limit stays; and the figures KEDA's http protocol
// reads (ready + unacked) are visible to the monitoring role sluice_monitor.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp, { type GetMessage } from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { DELIVERY_LIMIT, POLICY_PREFIX, deadLetterQueue, queuePolicies, retryQueue, topology } from '../../infra/topology.ts';
import { vhostOf } from '../../infra/provision.ts';
import { describeDeadLetter } from '../../functions/trigger/dlq.ts';
import { AMQP_URL, RABBITMQ_API_URL, RABBITMQ_MONITOR_URL, provisionTestEnvironment, resetEnvironment, waitFor } from './harness.ts';

const QUEUE = 'logs.lake';
const vhost = encodeURIComponent(vhostOf(AMQP_URL));
let pool: Pool;

/** The management API as the user of `base` (http://user:pass@host:15672). */
async function mgmt(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const url = new URL(base);
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
  const res = await fetch(`${url.origin}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}
const admin = (method: string, path: string, body?: unknown) => mgmt(RABBITMQ_API_URL, method, path, body);

async function withChannel<T>(fn: (ch: amqp.ConfirmChannel) => Promise<T>): Promise<T> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    return await fn(await conn.createConfirmChannel());
  } finally {
    await conn.close();
  }
}
const depth = (queue: string) => withChannel(async (ch) => (await ch.checkQueue(queue)).messageCount);

before(async () => {
  pool = await resetEnvironment();
});
after(async () => {
  await pool?.end();
});

test('every queue gets its policy: delivery limit and .dlq target, retry queues at-least-once, .dlq unlimited', async () => {
  const version = ((await admin('GET', '/api/overview')).body as { rabbitmq_version: string }).rabbitmq_version;
  const major = Number(version.split('.')[0]);
  const expected = new Map(queuePolicies(topology, major).map((p) => [p.name, p]));
  for (const q of topology.queues) {
    for (const [name, policy] of [[q.name, `${POLICY_PREFIX}q.${q.name}`], [retryQueue(q.name), `${POLICY_PREFIX}retry`], [deadLetterQueue(q.name), `${POLICY_PREFIX}dlq`]] as const) {
      // Policies reach a queue's process asynchronously: wait until the queue reports it.
      const info = await waitFor(`policy ${policy} on ${name}`, async () => {
        const r = await admin('GET', `/api/queues/${vhost}/${encodeURIComponent(name)}`);
        return r.body?.policy === policy && r.body;
      }, 10_000);
      assert.deepEqual(info.effective_policy_definition, expected.get(policy)!.definition, `${name}: ${policy}'s definition is in force`);
    }
    const main = expected.get(`${POLICY_PREFIX}q.${q.name}`)!.definition;
    assert.equal(main['delivery-limit'], DELIVERY_LIMIT, `${q.name}: explicit delivery limit`);
    assert.equal(main['dead-letter-exchange'], deadLetterQueue(q.name), `${q.name}: dead-letters to its .dlq`);
  }
  const retry = expected.get(`${POLICY_PREFIX}retry`)!.definition;
  assert.deepEqual([retry['dead-letter-strategy'], retry.overflow], ['at-least-once', 'reject-publish']);
  // The retry queue's own target, from its arguments: back to Q through the default exchange.
  const r = await admin('GET', `/api/queues/${vhost}/${encodeURIComponent(retryQueue(QUEUE))}`);
  assert.equal(r.body.arguments['x-dead-letter-exchange'], '');
  assert.equal(r.body.arguments['x-dead-letter-routing-key'], QUEUE);
});

test('a re-run of the migrate step keeps the policies and removes stale sluice. ones', async () => {
  const stale = `${POLICY_PREFIX}q.logs.stats`;
  assert.equal((await admin('PUT', `/api/policies/${vhost}/${encodeURIComponent(stale)}`, { pattern: '^logs\\.stats$', 'apply-to': 'queues', priority: 10, definition: { 'delivery-limit': 5 } })).status < 300, true);
  await provisionTestEnvironment();
  const names = ((await admin('GET', `/api/policies/${vhost}`)).body as { name: string }[]).map((p) => p.name).sort();
  assert.deepEqual(names.filter((n) => n.startsWith(POLICY_PREFIX)), queuePolicies(topology).map((p) => p.name).sort());
});

test(`a message returned to ${QUEUE} more than ${DELIVERY_LIMIT} times is dead-lettered by the broker to ${QUEUE}.dlq with x-death reason delivery_limit`, async () => {
  const messageId = `dlx-limit-${Date.now()}`;
  await withChannel(async (ch) => {
    ch.publish('', QUEUE, Buffer.from('{"not":"a log line"}'), { persistent: true, messageId });
    await ch.waitForConfirms();
  });
  // As a consumer that crashes with it every time: taken, then handed back (nack with requeue).
  let deliveries = 0;
  await withChannel(async (ch) => {
    for (;;) {
      const m = await ch.get(QUEUE);
      if (m === false) {
        if ((await depth(deadLetterQueue(QUEUE))) > 0) break;
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      deliveries++;
      ch.nack(m, false, true);
      assert.ok(deliveries <= DELIVERY_LIMIT + 2, 'the broker stops delivering it at the limit');
    }
  });
  assert.ok(deliveries >= DELIVERY_LIMIT, `delivered ${deliveries} times, at least the limit`);
  const dead = await withChannel(async (ch) => {
    const m = (await ch.get(deadLetterQueue(QUEUE))) as GetMessage | false;
    assert.ok(m, 'in the .dlq');
    ch.nack(m, false, true);
    return m;
  });
  assert.equal(dead.properties.messageId, messageId);
  const deaths = dead.properties.headers?.['x-death'] as { reason: string; queue: string; exchange: string; 'routing-keys': string[] }[];
  assert.equal(deaths[0]?.reason, 'delivery_limit');
  assert.equal(deaths[0]?.queue, QUEUE);
  assert.equal(String(dead.properties.headers?.['x-first-death-reason']), 'delivery_limit');
  assert.equal(dead.properties.headers?.['x-sluice-reason'], undefined, 'no consumer wrote a reason: the broker did');
  // What GET /v1/dlq/:queue shows for it: the reason taken from the broker's record.
  assert.match(describeDeadLetter(dead).reason ?? '', new RegExp(`^dead-lettered by the broker from ${QUEUE.replace('.', '\\.')}: it reached the delivery limit \\(x-death reason delivery_limit`));
  console.log(`# ${QUEUE}: dead-lettered by the broker after ${deliveries} deliveries; x-death[0] = ${JSON.stringify({ reason: deaths[0]?.reason, queue: deaths[0]?.queue })}`);
});

test(`a dead letter peeked (nack + requeue) more than ${DELIVERY_LIMIT} times stays in the .dlq`, async () => {
  const dlq = deadLetterQueue(QUEUE);
  const before = await depth(dlq);
  assert.ok(before >= 1);
  await withChannel(async (ch) => {
    for (let i = 0; i < DELIVERY_LIMIT + 10; i++) {
      const m = await ch.get(dlq);
      assert.ok(m, `peek ${i + 1}: still there`);
      ch.nack(m, false, true);
    }
  });
  assert.equal(await depth(dlq), before);
});

test(`a message forwarded to ${QUEUE}.retry comes back to ${QUEUE} after the TTL (x-death reason expired)`, async () => {
  await withChannel(async (ch) => {
    await ch.purgeQueue(QUEUE);
    ch.publish(retryQueue(QUEUE), QUEUE, Buffer.from('retry me'), { persistent: true, messageId: 'dlx-retry-1' });
    await ch.waitForConfirms();
  });
  const back = await waitFor('the retried message back in its queue', () => withChannel(async (ch) => {
    const m = await ch.get(QUEUE);
    if (m) ch.ack(m);
    return m || undefined;
  }), 20_000, 250);
  assert.equal(back.properties.messageId, 'dlx-retry-1');
  const deaths = back.properties.headers?.['x-death'] as { reason: string; queue: string }[];
  assert.deepEqual([deaths[0]?.reason, deaths[0]?.queue], ['expired', retryQueue(QUEUE)]);
});

test('KEDA (protocol http) reads ready + unacked figures as sluice_monitor, which has no vhost rights', async () => {
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createConfirmChannel();
    await ch.purgeQueue(QUEUE);
    for (let i = 0; i < 3; i++) ch.publish('', QUEUE, Buffer.from(`m${i}`), { persistent: true });
    await ch.waitForConfirms();
    const held = await ch.get(QUEUE); // one held, unacked, as by a consumer mid-batch
    assert.ok(held);
    const seen = await waitFor('the management API shows 2 ready and 1 unacked', async () => {
      const r = await mgmt(RABBITMQ_MONITOR_URL, 'GET', `/api/queues/${vhost}/${encodeURIComponent(QUEUE)}`);
      assert.equal(r.status, 200, 'sluice_monitor may read the queue');
      return r.body.messages_ready === 2 && r.body.messages_unacknowledged === 1 && r.body;
    }, 20_000, 500);
    assert.equal(seen.messages, 3, 'messages = ready + unacked: what KEDA\'s QueueLength counts over http');
    ch.nack(held, false, true);
  } finally {
    await conn.close();
  }
});
