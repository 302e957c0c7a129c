import type { Channel } from 'amqplib';
import { deadLetterQueue, retryQueue, type Topology } from '../../infra/topology.ts';

/** Declare exchanges, queues, retry and dead-letter queues and bindings. Idempotent. */
export async function declareTopology(ch: Channel, t: Topology): Promise<void> {
  for (const ex of t.exchanges) {
    await ch.assertExchange(ex.name, ex.type, { durable: true, arguments: ex.arguments ?? {} });
  }
  for (const ex of t.exchanges) {
    for (const b of ex.bindings ?? []) await ch.bindExchange(ex.name, b.source, b.pattern);
  }
  for (const q of t.queues) {
    await ch.assertQueue(q.name, {
      durable: true,
      arguments: { 'x-queue-type': 'quorum', ...(q.singleActiveConsumer ? { 'x-single-active-consumer': true } : {}) },
    });
    // Retried messages wait out the TTL, then the default exchange routes them back to q.name.
    await ch.assertQueue(retryQueue(q.name), {
      durable: true,
      arguments: {
        'x-queue-type': 'quorum',
        'x-message-ttl': q.retryDelayMs,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': q.name,
      },
    });
    await ch.assertQueue(deadLetterQueue(q.name), { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    for (const b of q.bindings) await ch.bindQueue(q.name, b.exchange, b.pattern);
  }
}
