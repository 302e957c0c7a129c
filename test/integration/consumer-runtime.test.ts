// The shared consumer runtime against a real RabbitMQ: batching, partial batch
// failure, delayed retry through Q.retry, dead-lettering after too many attempts
// or on a permanent error, and a whole-batch failure split into single messages.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { connectAmqp, type AmqpClient } from '../../shared/amqp/connection.ts';
import { createPublisher, type Publisher } from '../../shared/amqp/publisher.ts';
import { startConsumer, type BatchItem, type Contract } from '../../shared/amqp/consumer.ts';
import { PermanentError, PoisonMessageError } from '../../shared/errors.ts';
import { deadLetterQueue, retryQueue, type Topology } from '../../infra/topology.ts';
import { AMQP_URL, waitFor } from './harness.ts';

const QUEUE = 'test.runtime';
const topology: Topology = { exchanges: [{ name: 'test', type: 'topic' }], queues: [{ name: QUEUE, bindings: [{ exchange: 'test', pattern: 'test.#' }], retryDelayMs: 200 }] };
const log = pino({ level: 'silent' });
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
