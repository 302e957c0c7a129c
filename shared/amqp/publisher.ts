// A confirm-channel publisher: every message is persistent and mandatory, and
// `publish` resolves only when the broker has confirmed it. A nack or a return
// (no queue bound for the routing key) rejects. It honours the channel's
// backpressure (`drain`) and bounds the number of unconfirmed messages on the wire
// (`maxInFlight`); a producer bounds what it hands over by awaiting (the trigger's runner
// keeps its own window).
//
// Order. Messages go out in the order `publish` was called, and stay in that order when the
// connection drops: every message not yet confirmed is published again on the new channel,
// oldest first, before any message published after it (at-least-once; consumers' writes are
// idempotent). Consumers may rely on it: ev-analytics judges a charger offline from the run's
// clock, so a clock tick overtaking an older reading of the same run would raise a false
// `charge.offline`. A resent message may be a second copy of one the broker had taken (its
// confirm was lost with the channel); the second copy then comes after the first, never before.
import type { ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import type { AmqpClient } from './connection.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';

export class PublishError extends Error {
  override name = 'PublishError';
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
  /** Unconfirmed messages on the wire; later ones wait, in order, until confirms come back. */
  maxInFlight?: number;
  /** How many times a message is re-sent after losing its channel. */
  maxResends?: number;
}

/** A message from `publish` until the broker confirms, nacks or returns it. */
interface Entry {
  /** Publish order: resends go out by it. */
  seq: number;
  exchange: string;
  routingKey: string;
  content: Buffer;
  options: PublishOptions;
  resends: number;
  /** The channel it was last sent on (null: waiting to be sent). */
  on: ConfirmChannel | null;
  settle(err?: Error): void;
}

export async function createPublisher(amqp: AmqpClient, opts: PublisherOptions): Promise<Publisher> {
  const maxInFlight = opts.maxInFlight ?? 2_000;
  const maxResends = opts.maxResends ?? 10;
  let channel: ConfirmChannel | null = null;
  let channelReady = deferred<ConfirmChannel>();
  let drained: Promise<void> | null = null;
  let closed = false;
  let nextSeq = 0;
  /** Waiting to be sent, in publish order. */
  let unsent: Entry[] = [];
  /** Sent on the current channel and not settled yet. */
  const unconfirmed = new Map<number, Entry>();
  /** Channels known to be gone (closed, or a send failed on them): nothing more is sent on them. */
  const lost = new WeakSet<ConfirmChannel>();
  let pumping = false;
  /** The pump, waiting for a confirm to free a place on the wire. */
  let slotFreed: (() => void) | null = null;
  const returned = new Set<string>();
  const settled = new Set<Promise<void>>();

  /**
   * The channel is gone: its unconfirmed messages go back in front of the unsent ones, in publish
   * order, to be sent again on the next channel. Idempotent (the close event, a failed confirm and a
   * throwing publish may all report the same loss).
   */
  function loseChannel(ch: ConfirmChannel, why: string): void {
    if (lost.has(ch)) return;
    lost.add(ch);
    if (channel === ch) {
      channel = null;
      channelReady = deferred();
      drained = null;
    }
    freeSlot();
    const back: Entry[] = [];
    for (const e of unconfirmed.values()) {
      if (e.on !== ch) continue;
      unconfirmed.delete(e.seq);
      e.on = null;
      if (++e.resends > maxResends) e.settle(new PublishError(`message ${e.options.messageId}: channel lost ${e.resends} times before the broker confirmed it (${why})`));
      else back.push(e);
    }
    if (back.length > 0) {
      opts.log.debug({ messages: back.length, why }, 'channel lost before confirm; publishing again in order');
      unsent = [...back, ...unsent].sort((a, b) => a.seq - b.seq);
    }
    if (!closed) amqp.reset(`publisher channel lost: ${why}`);
  }

  await amqp.attach(async (model) => {
    const ch = await model.createConfirmChannel();
    ch.on('return', (msg: ConsumeMessage) => {
      if (msg.properties.messageId) returned.add(String(msg.properties.messageId));
    });
    ch.on('error', (err: Error) => opts.log.warn({ err: err.message }, 'publisher channel error'));
    ch.on('close', () => loseChannel(ch, 'channel closed'));
    channel = ch;
    channelReady.resolve(ch);
    void pump();
  });

  /** Sends unsent messages in order, one channel at a time; the only place that publishes. */
  async function pump(): Promise<void> {
    if (pumping) return;
    pumping = true;
    try {
      while (unsent.length > 0) {
        const ch = channel ?? (await channelReady.promise);
        if (drained) await drained;
        if (unconfirmed.size >= maxInFlight) {
          await new Promise<void>((r) => (slotFreed = r));
          continue;
        }
        if (ch !== channel || lost.has(ch)) continue; // lost while waiting: wait for the next one
        const e = unsent.shift()!;
        e.on = ch;
        unconfirmed.set(e.seq, e);
        let ok: boolean;
        try {
          ok = ch.publish(e.exchange, e.routingKey, e.content, { ...e.options, persistent: true, mandatory: true }, (err) => confirmed(e, ch, err));
        } catch (err) {
          // publish() throws at once on a channel that has just closed.
          loseChannel(ch, String(err));
          continue;
        }
        if (!ok && !drained) {
          drained = new Promise<void>((r) => {
            const done = () => ((drained = null), r());
            ch.once('drain', done);
            ch.once('close', done);
          });
        }
      }
    } finally {
      pumping = false;
    }
  }

  function confirmed(e: Entry, ch: ConfirmChannel, err: unknown): void {
    if (e.on !== ch || !unconfirmed.has(e.seq)) return; // already sent again after a loss
    const id = e.options.messageId;
    if (returned.delete(id)) {
      unconfirmed.delete(e.seq);
      e.settle(new PublishError(`message ${id} was returned: no queue is bound to exchange '${e.exchange}' for routing key '${e.routingKey}'`));
    } else if ((err as Error | null)?.message === 'message nacked') {
      unconfirmed.delete(e.seq);
      e.settle(new PublishError(`broker nacked message ${id}`));
    } else if (err) {
      // The channel went before the broker answered: this and every later unconfirmed message go again.
      loseChannel(ch, (err as Error).message ?? String(err));
      void pump();
    } else {
      unconfirmed.delete(e.seq);
      e.settle();
    }
  }

  function freeSlot(): void {
    const wake = slotFreed;
    slotFreed = null;
    wake?.();
  }

  return {
    async publish(exchange, routingKey, content, options) {
      if (closed) throw new PublishError('publisher is closed');
      // Queued at once, in call order: that order is the order on the wire, also after a loss.
      const done = new Promise<void>((resolve, reject) => {
        const e: Entry = {
          seq: nextSeq++, exchange, routingKey, content, options, resends: 0, on: null,
          settle(err) {
            freeSlot();
            if (err) return reject(err);
            opts.metrics?.published.inc({ exchange });
            resolve();
          },
        };
        unsent.push(e);
      });
      void pump();
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
