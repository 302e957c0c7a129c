// The shared publisher keeps publish order when its connection is lost (issue 10, found by the
// chaos suite): messages not yet confirmed are published again on the new channel, oldest first,
// before anything published after them. Out of order, an EV clock tick overtook older readings
// after a broker restart and ev-analytics raised false charge.offline events.
// The connection is closed from the broker's side (management API), as a broker restart or a
// network cut would, while thousands of messages are in flight; then the queue is read back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import amqplib from 'amqplib';
import { connectAmqp, type AmqpClient } from '../../shared/amqp/connection.ts';
import { createPublisher, type Publisher } from '../../shared/amqp/publisher.ts';
import { AMQP_URL, RABBITMQ_API_URL, waitFor } from './harness.ts';

const QUEUE = 'test.publisher.order';
const NAME = `publisher-order-${process.pid}`;
const N = 20_000;
const log = pino({ level: process.env.TEST_LOG ?? 'silent' });
let amqp: AmqpClient;
let publisher: Publisher;

async function mgmt(method: string, path: string): Promise<any> {
  const url = new URL(RABBITMQ_API_URL);
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
  const res = await fetch(`${url.origin}${path}`, { method, headers: { authorization: auth, 'x-reason': 'publisher-order test' } });
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}
/** The broker's names of our publisher's connection (once the management API lists it). */
async function ourConnections(exclude: string[] = []): Promise<string[]> {
  let names: string[] = [];
  await waitFor('the management API to list our connection', async () => {
    const list = (await mgmt('GET', '/api/connections?columns=name,client_properties')) as { name: string; client_properties?: { connection_name?: string } }[];
    names = list.filter((c) => c.client_properties?.connection_name === NAME && !exclude.includes(c.name)).map((c) => c.name);
    return names.length > 0;
  }, 60_000, 50);
  return names;
}

before(async () => {
  const conn = await amqplib.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.deleteQueue(QUEUE);
  await ch.assertQueue(QUEUE, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  await conn.close();
  amqp = await connectAmqp({ url: AMQP_URL, name: NAME, log });
  publisher = await createPublisher(amqp, { log, maxInFlight: 500 });
});
after(async () => {
  await publisher?.close();
  await amqp?.close();
  const conn = await amqplib.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.deleteQueue(QUEUE);
  await conn.close();
});

test(`${N} messages, the connection closed by the broker twice mid-stream: every one arrives, first copies in publish order`, async () => {
  const killed: string[] = [];
  for (const round of [0, 1]) {
    const names = await ourConnections(killed); // the connection of this round (a new one after a kill)
    let confirmed = 0;
    const first = round * (N / 2);
    // Handed over all at once, without waiting, as the trigger's runner does (it keeps its own window).
    const sent = Array.from({ length: N / 2 }, (_, k) => publisher.publish('', QUEUE, Buffer.from(String(first + k)), { messageId: `m-${first + k}` }).then(() => void confirmed++));
    await waitFor('a third of them confirmed', async () => confirmed >= N / 6, 120_000, 1);
    for (const n of names) await mgmt('DELETE', `/api/connections/${encodeURIComponent(n)}`);
    killed.push(...names);
    assert.ok(confirmed < N / 2, `round ${round}: the connection closed mid-stream (${confirmed} confirmed)`);
    await Promise.all(sent);
  }
  assert.equal(killed.length, 2);

  const conn = await amqplib.connect(AMQP_URL);
  const ch = await conn.createChannel();
  const seen = new Set<number>();
  let expected = 0;
  let copies = 0;
  const outOfOrder: string[] = [];
  for (;;) {
    const m = await ch.get(QUEUE, { noAck: true });
    if (m === false) break;
    const i = Number(m.content.toString());
    if (seen.has(i)) {
      copies++; // a resend of one the broker had taken: fine, as long as it is not early
      continue;
    }
    if (i !== expected && outOfOrder.length < 5) outOfOrder.push(`${i} arrived when ${expected} was due`);
    seen.add(i);
    expected = Math.max(expected, i) + 1;
  }
  await conn.close();
  console.log(`# ${N} messages, ${seen.size} distinct, ${copies} second copies after 2 connection kills`);
  assert.equal(seen.size, N, 'every message arrives');
  assert.deepEqual(outOfOrder, [], 'each message first arrives after every message published before it');
});
