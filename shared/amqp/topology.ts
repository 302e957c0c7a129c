import type { Channel } from 'amqplib';
import { deadLetterQueue, retryQueue, topology as declared, type QueueSpec, type Topology } from '../../infra/topology.ts';

/**
 * The topology's spec of `queue`, or an error naming it and infra/topology.ts: a function
 * consumes only queues the topology declares (the migrate step declares them, with their retry
 * and dead-letter queues, policies and permissions). Checked when a consumer is defined, before
 * anything is asked of the broker, so a typo or an undeclared queue stops the function at boot.
 */
export function declaredQueue(queue: string, t: Topology = declared): QueueSpec {
  const spec = t.queues.find((q) => q.name === queue);
  if (spec) return spec;
  throw new Error(
    `cannot consume queue '${queue}': infra/topology.ts does not declare it (declared: ${t.queues.map((q) => q.name).join(', ')}). ` +
      'Take the name from QUEUES (infra/topology.ts), or declare the queue there and in infra/access.ts, then run `npm run migrate`',
  );
}

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
    // The consumer forwards to Q.retry and Q.dlq through exchanges of the same names, each
    // feeding its one queue: write access to these, not to the default exchange (which
    // reaches every queue), is all a consumer needs (infra/access.ts).
    for (const target of [retryQueue(q.name), deadLetterQueue(q.name)]) {
      await ch.assertExchange(target, 'fanout', { durable: true });
      await ch.bindQueue(target, target, '');
    }
    for (const b of q.bindings) await ch.bindQueue(q.name, b.exchange, b.pattern);
  }
  // Deleting what does not exist is fine on RabbitMQ 3.x and 4.x alike.
  for (const b of t.retired?.bindings ?? []) await ch.unbindQueue(b.queue, b.exchange, b.pattern);
  for (const q of t.retired?.queues ?? []) {
    for (const name of [q, retryQueue(q), deadLetterQueue(q)]) await ch.deleteQueue(name);
    for (const name of [retryQueue(q), deadLetterQueue(q)]) await ch.deleteExchange(name);
  }
}

/** Check, without declaring anything, that `queues` exist: a function may not configure the broker. */
export async function checkQueues(model: { createChannel(): Promise<Channel> }, queues: string[]): Promise<void> {
  if (queues.length === 0) return;
  // One channel for every check: the broker answers them in order, and a missing queue closes the
  // channel, failing the checks after it too; the first that failed names the missing queue.
  const ch = await model.createChannel();
  // A missing queue closes the channel with 404; the channel's own error event would be unhandled.
  ch.on('error', () => {});
  try {
    const checks = await Promise.allSettled(queues.map((queue) => ch.checkQueue(queue)));
    const missing = checks.findIndex((c) => c.status === 'rejected');
    if (missing >= 0) {
      const err = (checks[missing] as PromiseRejectedResult).reason as Error;
      throw new Error(`queue '${queues[missing]}' does not exist on the broker (${err.message}): run \`npm run migrate\` (docker compose: the \`migrate\` service; Kubernetes: the \`sluice-migrate\` Job)`);
    }
  } finally {
    await ch.close().catch(() => {});
  }
}
