// A confirm-channel publisher: every message is persistent and mandatory, and
// `publish` resolves only when the broker has confirmed it. A nack or a return
// (no queue bound for the routing key) rejects. It honours the channel's
// backpressure (`drain`) and bounds the number of unconfirmed messages, so a
// fast producer runs in constant memory. When the connection drops, messages
// that were not yet confirmed are published again on the new channel
// (at-least-once; consumers' writes are idempotent).
import type { ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import type { AmqpClient } from './connection.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { backoff, sleep } from '../timing.ts';

export class PublishError extends Error {
  override name = 'PublishError';
}
class ChannelLostError extends Error {
  override name = 'ChannelLostError';
}

export interface PublishOptions extends Omit<Options.Publish, 'persistent' | 'mandatory' | 'messageId'> {
  /** Required: it identifies the message end to end (and matches returns to publishes). */
  messageId: string;
}

export interface Publisher {
  publish(exchange: string, routingKey: string, content: Buffer, options: PublishOptions): Promise<void>;
  /** Waits for every message handed to `publish` so far to be settled. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface PublisherOptions {
  log: Logger;
  metrics?: Metrics;
  /** Unconfirmed messages allowed in flight before `publish` waits. */
  maxInFlight?: number;
  /** How many times a message is re-sent after losing its channel. */
  maxResends?: number;
}

export async function createPublisher(amqp: AmqpClient, opts: PublisherOptions): Promise<Publisher> {
  const maxInFlight = opts.maxInFlight ?? 2_000;
  const maxResends = opts.maxResends ?? 10;
  let channel: ConfirmChannel | null = null;
  let channelReady = deferred<ConfirmChannel>();
  let drained: Promise<void> | null = null;
  let inFlight = 0;
  let closed = false;
  const slotWaiters: (() => void)[] = [];
  const returned = new Set<string>();
  const settled = new Set<Promise<void>>();

  await amqp.attach(async (model) => {
    const ch = await model.createConfirmChannel();
    ch.on('return', (msg: ConsumeMessage) => {
      if (msg.properties.messageId) returned.add(String(msg.properties.messageId));
    });
    ch.on('error', (err: Error) => opts.log.warn({ err: err.message }, 'publisher channel error'));
    ch.on('close', () => {
      if (channel !== ch) return;
      channel = null;
      channelReady = deferred();
      drained = null;
      if (!closed) amqp.reset('publisher channel closed');
    });
    channel = ch;
    channelReady.resolve(ch);
  });

  async function sendOnce(exchange: string, routingKey: string, content: Buffer, options: PublishOptions): Promise<void> {
    const ch = channel ?? (await channelReady.promise);
    if (drained) await drained;
    return new Promise<void>((resolve, reject) => {
      const id = options.messageId;
      let ok: boolean;
      try {
        ok = ch.publish(exchange, routingKey, content, { ...options, persistent: true, mandatory: true }, (err) => {
          if (returned.delete(id)) reject(new PublishError(`message ${id} was returned: no queue is bound to exchange '${exchange}' for routing key '${routingKey}'`));
          else if (err?.message === 'message nacked') reject(new PublishError(`broker nacked message ${id}`));
          else if (err) reject(new ChannelLostError(err.message));
          else resolve();
        });
      } catch (err) {
        // publish() throws at once on a channel that has just closed.
        return reject(new ChannelLostError(String(err)));
      }
      if (!ok && !drained) {
        drained = new Promise<void>((r) => {
          const done = () => ((drained = null), r());
          ch.once('drain', done);
          ch.once('close', done);
        });
      }
    });
  }

  async function acquireSlot(): Promise<void> {
    while (inFlight >= maxInFlight) await new Promise<void>((r) => slotWaiters.push(r));
    inFlight++;
  }
  function releaseSlot(): void {
    inFlight--;
    slotWaiters.shift()?.();
  }

  return {
    async publish(exchange, routingKey, content, options) {
      if (closed) throw new PublishError('publisher is closed');
      await acquireSlot();
      const done = (async () => {
        try {
          for (let attempt = 0; ; attempt++) {
            try {
              await sendOnce(exchange, routingKey, content, options);
              opts.metrics?.published.inc({ exchange });
              return;
            } catch (err) {
              if (!(err instanceof ChannelLostError) || attempt >= maxResends) throw err;
              opts.log.debug({ messageId: options.messageId, attempt }, 'channel lost before confirm; publishing again');
              // Recovery needs a moment (250 ms at least): 0.1 s, 0.2 s, ... up to 2 s between tries.
              await sleep(backoff(attempt + 1, { baseMs: 100, maxMs: 2_000 }));
            }
          }
        } finally {
          releaseSlot();
        }
      })();
      const tracked = done.catch(() => {});
      settled.add(tracked);
      void tracked.finally(() => settled.delete(tracked));
      return done;
    },
    async flush() {
      await Promise.all([...settled]);
    },
    async close() {
      await Promise.all([...settled]);
      closed = true;
      await channel?.close().catch(() => {});
    },
  };
}

export function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => {});
  return { promise, resolve, reject };
}
