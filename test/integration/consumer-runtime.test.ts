// The shared consumer runtime against a real RabbitMQ: batching, partial batch
// failure, delayed retry through Q.retry, dead-lettering after too many attempts
// or on a permanent error, a whole-batch failure split into single messages,
// batches bounded in bytes, a memory budget for deliveries, and a batch too big
// for MySQL's max_allowed_packet split rather than held as if MySQL were down, and a
// consumer stopped while it holds a batch through an outage: stop() ends the hold at
// once and the batch goes back to the queue, whole.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import amqplib from 'amqplib';
import { connectAmqp, type AmqpClient } from '../../shared/amqp/connection.ts';
import { createPublisher, type Publisher } from '../../shared/amqp/publisher.ts';
import { startConsumer, type BatchItem, type Contract } from '../../shared/amqp/consumer.ts';
import { PermanentError, PoisonMessageError, UnavailableError } from '../../shared/errors.ts';
import { deadLetterQueue, retryQueue, type Topology } from '../../infra/topology.ts';
import { createPool } from '../../shared/db/pool.ts';
import { isUnavailable } from '../../shared/errors.ts';
import { AMQP_URL, MYSQL_URL, waitFor } from './harness.ts';

const QUEUE = 'test.runtime';
const topology: Topology = { exchanges: [{ name: 'test', type: 'topic' }], queues: [{ name: QUEUE, bindings: [{ exchange: 'test', pattern: 'test.#' }], retryDelayMs: 200 }] };
const log = pino({ level: process.env.TEST_LOG ?? 'silent' });
const contract: Contract<string> = {
  name: 'text',
  decode(msg) {
    const text = msg.content.toString();
    if (text.startsWith('poison')) throw new PoisonMessageError('text starts with poison');
    return text;
  },
};

let amqp: AmqpClient;
let publisher: Publisher;

before(async () => {
  amqp = await connectAmqp({ url: AMQP_URL, name: 'runtime-test', log, topology });
  await amqp.attach(async (model) => {
    const ch = await model.createChannel();
    for (const q of [QUEUE, retryQueue(QUEUE), deadLetterQueue(QUEUE)]) await ch.purgeQueue(q);
    await ch.close();
  });
  publisher = await createPublisher(amqp, { log });
});
after(async () => {
  await publisher?.close();
  await amqp?.close();
});

async function purgeAll(): Promise<void> {
  const conn = await amqplib.connect(AMQP_URL);
  const ch = await conn.createChannel();
  for (const q of [QUEUE, retryQueue(QUEUE), deadLetterQueue(QUEUE)]) await ch.purgeQueue(q);
  await conn.close();
}

async function drainDlq(): Promise<{ body: string; reason: string; attempts: number }[]> {
  const out: { body: string; reason: string; attempts: number }[] = [];
  await amqp.attach(async (model) => {
    const ch = await model.createChannel();
    for (let m = await ch.get(deadLetterQueue(QUEUE), { noAck: true }); m; m = await ch.get(deadLetterQueue(QUEUE), { noAck: true })) {
      out.push({ body: m.content.toString(), reason: String(m.properties.headers?.['x-sluice-reason']), attempts: Number(m.properties.headers?.['x-sluice-attempts']) });
    }
    await ch.close();
  });
  return out;
}

test('retry, partial failure, dead letters and batch splitting', async () => {
  const seen = new Map<string, number>();
  const done = new Set<string>();
  const batchSizes: number[] = [];
  const consumer = await startConsumer(amqp, {
    queue: QUEUE,
    contract,
    publisher,
    log,
    batchSize: 20,
    batchWaitMs: 30,
    maxAttempts: 3,
    async handler(items: BatchItem<string>[]) {
      batchSizes.push(items.length);
      // A message that blows up the whole batch: the runtime must retry its neighbours alone.
      if (items.length > 1 && items.some((i) => i.body === 'explode')) throw new Error('batch exploded');
      const failures: { index: number; error: unknown }[] = [];
      items.forEach((item, index) => {
        const n = (seen.get(item.body) ?? 0) + 1;
        seen.set(item.body, n);
        if (item.body === 'flaky' && n < 3) failures.push({ index, error: new Error(`transient failure ${n}`) });
        else if (item.body === 'always-fails') failures.push({ index, error: new Error('still broken') });
        else if (item.body === 'permanent') failures.push({ index, error: new PermanentError('cannot ever work') });
        else if (item.body === 'explode') failures.push({ index, error: new Error('explodes alone too') });
        else done.add(item.body);
      });
      return { failures };
    },
  });
  try {
    const bodies = [...Array.from({ length: 40 }, (_, i) => `ok-${i}`), 'flaky', 'always-fails', 'permanent', 'poison-pill', 'explode'];
    await Promise.all(bodies.map((b, i) => publisher.publish('test', 'test.x', Buffer.from(b), { messageId: `m${i}` })));

    await waitFor('every good message and the flaky one to be handled', async () => done.size === 41, 20_000);
    const dead = await waitFor('four dead letters', async () => {
      const d = await drainDlq();
      return d.length ? d : undefined;
    }, 20_000).then(async (first) => {
      const all = [...first];
      await waitFor('the rest of the dead letters', async () => (all.push(...(await drainDlq())), all.length >= 4), 20_000);
      return all;
    });
    assert.ok(done.has('flaky'), 'a transient failure is retried until it succeeds');
    assert.equal(seen.get('flaky'), 3);
    const byBody = Object.fromEntries(dead.map((d) => [d.body, d]));
    assert.deepEqual(Object.keys(byBody).sort(), ['always-fails', 'explode', 'permanent', 'poison-pill']);
    assert.match(byBody['always-fails']!.reason, /gave up after 3 attempts: still broken/);
    assert.equal(seen.get('always-fails'), 3);
    assert.match(byBody['permanent']!.reason, /PermanentError: cannot ever work/);
    assert.equal(seen.get('permanent'), 1, 'a permanent error is not retried');
    assert.match(byBody['poison-pill']!.reason, /text: text starts with poison/);
    assert.ok(!seen.has('poison-pill'), 'an undecodable message never reaches the handler');
    assert.ok(batchSizes.some((n) => n > 1), `messages were batched: ${batchSizes.join(',')}`);
    assert.ok(Math.max(...batchSizes) <= 20);
    for (let i = 0; i < 40; i++) assert.equal(seen.get(`ok-${i}`), 1, `ok-${i} handled exactly once`);
  } finally {
    await consumer.stop();
  }
});

test('batches are bounded in bytes, and the consumer holds no more than its memory budget', async () => {
  await purgeAll();
  const batches: { count: number; bytes: number }[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const consumer = await startConsumer(amqp, {
    queue: QUEUE, contract, publisher, log, batchSize: 100, batchWaitMs: 20, maxAttempts: 3,
    batchMaxBytes: 100 * 1024,
    // Bodies of at most 32 KiB, 320 KiB held at most: a prefetch of 10 instead of 200.
    messageMaxBytes: 32 * 1024,
    prefetchMaxBytes: 320 * 1024,
    async handler(items) {
      batches.push({ count: items.length, bytes: items.reduce((n, i) => n + i.body.length, 0) });
      await gate; // hold the first batch: deliveries pile up to what the budget allows
    },
  });
  try {
    // 400 messages of 30 KiB = 12 MB: without a budget, the consumer would take its whole prefetch (200).
    const body = (i: number) => Buffer.from(`${i}-`.padEnd(30 * 1024, 'x'));
    await Promise.all(Array.from({ length: 400 }, (_, i) => publisher.publish('test', 'test.x', body(i), { messageId: `big${i}` })));
    await waitFor('the first batch to be handled', async () => batches.length === 1, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const probe = await amqplib.connect(AMQP_URL);
    const ready = (await (await probe.createChannel()).checkQueue(QUEUE)).messageCount;
    await probe.close();
    assert.equal(400 - ready, 10, 'the consumer holds exactly its budget: 10 x 32 KiB');
    assert.equal(batches.length, 1, 'nothing else was handled while the first batch was held');
    release();
    await waitFor('all 400 messages', async () => batches.reduce((n, b) => n + b.count, 0) === 400, 30_000);
    for (const b of batches) assert.ok(b.bytes <= 100 * 1024, `a batch of ${b.count} messages holds ${b.bytes} bytes`);
    assert.ok(batches.every((b) => b.count <= 3), `batches of at most 3 x 30 KiB: ${batches.map((b) => b.count).join(',')}`);
  } finally {
    release();
    await consumer.stop();
  }
});

test('a batch over max_allowed_packet is split and stored, not held as an outage', async () => {
  await purgeAll();
  const admin = createPool(MYSQL_URL, 1);
  const [[row]] = (await admin.query('SELECT @@max_allowed_packet AS packet')) as [{ packet: number }[], unknown];
  const packet = row!.packet;
  await admin.query('CREATE TABLE IF NOT EXISTS runtime_blobs (id VARCHAR(64) PRIMARY KEY, body LONGBLOB NOT NULL)');
  await admin.query('TRUNCATE runtime_blobs');
  // Each body is a fifth of the server's packet limit: one fits in an INSERT (as hex, 2/5),
  // the batch of 8 (16/5) does not. MySQL answers such an INSERT by dropping the connection.
  const size = Math.floor(Number(packet) / 5);
  const pool = createPool(MYSQL_URL, 2);
  const errors: string[] = [];
  const consumer = await startConsumer(amqp, {
    queue: QUEUE, contract, publisher, log, batchSize: 50, batchWaitMs: 100, maxAttempts: 3,
    probe: () => pool.query('SELECT 1'),
    async handler(items) {
      try {
        await pool.query('INSERT INTO runtime_blobs (id, body) VALUES ? ON DUPLICATE KEY UPDATE id = id', [items.map((i) => [i.body.slice(0, 10), Buffer.from(i.body)])]);
      } catch (err) {
        errors.push(`${(err as { code?: string }).code}:${isUnavailable(err)}`);
        throw err;
      }
    },
  });
  try {
    const bodies = Array.from({ length: 8 }, (_, i) => `blob-${i}`.padEnd(10, '-').padEnd(size, 'y'));
    await Promise.all(bodies.map((b, i) => publisher.publish('test', 'test.x', Buffer.from(b), { messageId: `blob${i}` })));
    await waitFor('all 8 rows stored', async () => {
      const [[row]] = (await admin.query('SELECT COUNT(*) AS n FROM runtime_blobs')) as [{ n: number }[], unknown];
      return Number(row!.n) === 8;
    }, 30_000);
    assert.ok(errors.length > 0, 'the whole batch did fail once');
    assert.deepEqual(await drainDlq(), [], 'nothing dead-lettered');
  } finally {
    await consumer.stop();
    await admin.query('DROP TABLE IF EXISTS runtime_blobs');
    await pool.end();
    await admin.end();
  }
});

test('stopping a consumer that holds a batch through an outage ends the hold at once; nothing is lost', async () => {
  await purgeAll();
  const calls: string[][] = [];
  let stopAsked = false;
  let callsAfterStop = 0;
  const held = await startConsumer(amqp, {
    queue: QUEUE, contract, publisher, log, batchSize: 10, batchWaitMs: 50, maxAttempts: 3,
    async handler(items) {
      if (stopAsked) callsAfterStop++;
      calls.push(items.map((i) => i.body));
      throw new UnavailableError('the database is down');
    },
  });
  const bodies = Array.from({ length: 5 }, (_, i) => `held-${i}`);
  let stopped = false;
  try {
    await Promise.all(bodies.map((b, i) => publisher.publish('test', 'test.x', Buffer.from(b), { messageId: `held${i}` })));
    // Holds back off 0.5 s, 1 s, 2 s, ...: after the third call the consumer sleeps ~2 s before the fourth.
    await waitFor('the third try of the held batch', async () => calls.length >= 3, 20_000, 20);
    assert.equal(calls.length, 3);
    assert.deepEqual(calls.flat().sort(), [...bodies, ...bodies, ...bodies].sort(), 'one batch, held whole, no attempt spent');
    stopAsked = true;
    await held.stop();
    stopped = true;
    // Without the wake-up, stop() would wait out the hold and then run the batch once more.
    assert.equal(callsAfterStop, 0, 'the handler was not called again once stop() began');
  } finally {
    if (!stopped) await held.stop();
  }
  // Nothing acked, nothing retried or dead-lettered: the whole batch is back on the queue.
  const probe = await amqplib.connect(AMQP_URL);
  try {
    const ch = await probe.createChannel();
    await waitFor('the held messages back on the queue', async () => (await ch.checkQueue(QUEUE)).messageCount === 5, 10_000);
    assert.equal((await ch.checkQueue(retryQueue(QUEUE))).messageCount, 0);
  } finally {
    await probe.close();
  }
  assert.deepEqual(await drainDlq(), []);
  // A consumer started once the database is back handles every one of them, once, with no attempt spent.
  const seen: { body: string; attempt: number }[] = [];
  const next = await startConsumer(amqp, {
    queue: QUEUE, contract, publisher, log, batchSize: 10, batchWaitMs: 50, maxAttempts: 3,
    async handler(items) {
      for (const i of items) seen.push({ body: i.body, attempt: i.attempt });
    },
  });
  try {
    await waitFor('the held messages handled', async () => seen.length >= 5, 20_000);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(seen.map((s) => s.body).sort(), bodies);
  } finally {
    await next.stop();
  }
});
