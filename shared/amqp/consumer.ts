// The consumer runtime of queue functions. It owns everything but the logic:
// prefetch, batching (up to `batchSize` messages or `batchWaitMs`), decoding and
// validation through the queue's contract, calling the handler, and settling
// every message only after the handler's writes are durable:
//   handler returns          -> ack
//   handler reports failures -> those go to retry (or DLQ), the rest are acked
//   handler throws           -> the batch is split and each message retried alone,
//                               so one bad message cannot hold back its batch
//   PermanentError / invalid body / too many attempts -> <queue>.dlq with the reason
// Retries go through <queue>.retry, whose TTL dead-letters them back to the queue.
import type { Channel, ChannelModel, ConsumeMessage, MessagePropertyHeaders } from 'amqplib';
import type { AmqpClient } from './connection.ts';
import type { Publisher } from './publisher.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { PermanentError, errorMessage, isUnavailable } from '../errors.ts';
import { deadLetterQueue, retryQueue } from '../../infra/topology.ts';

/** Decodes and validates a message; throws PoisonMessageError naming what is wrong. */
export interface Contract<T> {
  name: string;
  decode(msg: ConsumeMessage): T;
}

export interface BatchItem<T> {
  body: T;
  messageId: string | undefined;
  routingKey: string;
  redelivered: boolean;
  /** The publisher's clock at publish (AMQP timestamp property, in ms), when it set one. */
  publishedAt: number | undefined;
  /** 1 on first delivery, counting retries and redeliveries. */
  attempt: number;
}

export interface BatchContext {
  log: Logger;
  queue: string;
  /**
   * Changes whenever the consumer subscribes anew (reconnect, hand-over). While it stays
   * the same on a single-active-consumer queue, no other consumer has had the queue, so
   * state kept in memory for it is still ours.
   */
  subscription?: number;
}

export interface BatchItemFailure {
  /** Index into the batch the handler received. */
  index: number;
  error: unknown;
}

export type BatchResult = void | { failures: BatchItemFailure[] };
export type BatchHandler<T> = (items: BatchItem<T>[], ctx: BatchContext) => Promise<BatchResult>;

export interface ConsumerOptions<T> {
  queue: string;
  contract: Contract<T>;
  handler: BatchHandler<T>;
  publisher: Publisher;
  log: Logger;
  metrics?: Metrics;
  batchSize: number;
  batchWaitMs: number;
  maxAttempts: number;
  /** A batch holds at most this many bytes of message bodies (at least one message). */
  batchMaxBytes?: number;
  /**
   * Bytes of bodies the consumer may hold unacknowledged. AMQP's prefetch counts messages, and
   * the broker sends the whole prefetch before it would see a cancel, so the budget is kept by
   * the count: prefetch = prefetchMaxBytes / messageMaxBytes (at most 2 x batchSize).
   */
  prefetchMaxBytes?: number;
  /** The largest body the queue's publishers produce (theirs to enforce; e.g. the trigger's MAX_LINE_BYTES). */
  messageMaxBytes?: number;
  /**
   * Asks the dependency whether it is up. A batch whose failure looks like an outage is held
   * only while this fails: when the database answers, the failure came from the batch (say a
   * packet over max_allowed_packet, after which MySQL drops the connection) and it is split.
   */
  probe?: () => Promise<unknown>;
}

export interface Consumer {
  readonly queue: string;
  readonly consuming: boolean;
  /** When the broker last delivered to this consumer (ms since epoch; 0 = never). */
  readonly lastDeliveryAt: number;
  /**
   * Finish the batch in flight, hand unprocessed messages back and subscribe again.
   * On a single-active-consumer queue this moves us to the back of the line: the next
   * consumer takes over the queue, in order (messages go back before the switch).
   */
  cycle(): Promise<void>;
  /** Stop taking messages, finish the batch in flight; unprocessed messages go back to the queue. */
  stop(): Promise<void>;
}

interface Delivery {
  msg: ConsumeMessage;
  ch: Channel;
  subscription: number;
}

type Outcome = { kind: 'ack' } | { kind: 'retry'; reason: string } | { kind: 'dead'; reason: string };

const ATTEMPT_HEADER = 'x-sluice-attempt';

export async function startConsumer<T>(amqp: AmqpClient, opts: ConsumerOptions<T>): Promise<Consumer> {
  const { queue, log } = opts;
  let channel: Channel | null = null;
  let consumerTag: string | null = null;
  let buffer: Delivery[] = [];
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> | null = null;
  let stopping = false;
  let pausing = false;
  let lastDeliveryAt = 0;
  let model: ChannelModel | null = null;
  let subscriptions = 0;
  const batchMaxBytes = opts.batchMaxBytes ?? Infinity;
  // Room for the batch being handled and the next one filling up, within the memory budget.
  const prefetch = Math.max(1, Math.min(opts.batchSize * 2, Math.floor((opts.prefetchMaxBytes ?? Infinity) / (opts.messageMaxBytes ?? 1))));
  // With the prefetch cut by the budget, a batch is half of it: one is handled while the next arrives
  // (a batch waiting for more messages than the prefetch lets in would wait for the timer every time).
  const batchSize = Math.max(1, Math.min(opts.batchSize, Math.floor(prefetch / 2)));
  // Bytes of bodies in `buffer`: a batch is cut at batchMaxBytes.
  let bufferBytes = 0;
  const bytesOf = (list: Delivery[]) => list.reduce((n, d) => n + d.msg.content.length, 0);

  async function subscribe(m: ChannelModel): Promise<void> {
    model = m;
    if (stopping) return;
    const ch = await m.createChannel();
    const subscription = ++subscriptions;
    ch.on('error', (err: Error) => log.warn({ err: err.message, queue }, 'consumer channel error'));
    ch.on('close', () => {
      if (channel !== ch) return;
      channel = null;
      consumerTag = null;
      // Unacked messages of a closed channel are redelivered by the broker; drop our copies.
      buffer = buffer.filter((d) => d.ch !== ch);
      bufferBytes = bytesOf(buffer);
      if (!stopping) amqp.reset(`consumer channel of ${queue} closed`);
    });
    await ch.prefetch(prefetch);
    const { consumerTag: tag } = await ch.consume(queue, (msg) => {
      if (msg === null) return amqp.reset(`broker cancelled the consumer of ${queue}`);
      lastDeliveryAt = Date.now();
      buffer.push({ msg, ch, subscription });
      bufferBytes += msg.content.length;
      schedule();
    });
    channel = ch;
    consumerTag = tag;
    log.info({ queue, prefetch, batchSize }, 'consuming');
  }
  await amqp.attach(subscribe);

  function schedule(): void {
    if (inFlight || pausing) return; // the running loop picks the buffer up when it finishes
    if (buffer.length >= batchSize || bufferBytes >= batchMaxBytes) return void run();
    timer ??= setTimeout(run, opts.batchWaitMs);
  }

  function run(): void {
    if (timer) clearTimeout(timer), (timer = null);
    if (inFlight || buffer.length === 0) return;
    inFlight = (async () => {
      // Messages that arrived while a batch was handled have waited long enough.
      while (buffer.length > 0 && !stopping && !pausing) await handleBatch(takeBatch());
    })()
      .catch((err) => {
        log.error({ err: errorMessage(err), queue }, 'batch could not be settled; its messages will be redelivered');
        amqp.reset(`settling a batch of ${queue} failed`);
      })
      .finally(() => {
        inFlight = null;
        if (!stopping && !pausing && buffer.length > 0) schedule();
      });
  }

  /** The next batch: up to batchSize messages and batchMaxBytes of bodies (one message at least). */
  function takeBatch(): Delivery[] {
    let n = 0;
    let bytes = 0;
    while (n < buffer.length && n < batchSize) {
      const size = buffer[n]!.msg.content.length;
      if (n > 0 && bytes + size > batchMaxBytes) break;
      bytes += size;
      n++;
    }
    bufferBytes -= bytes;
    return buffer.splice(0, n);
  }

  async function handleBatch(batch: Delivery[]): Promise<void> {
    const outcomes: Outcome[] = new Array(batch.length);
    const items: BatchItem<T>[] = [];
    const itemIndex: number[] = []; // items[i] came from batch[itemIndex[i]]
    batch.forEach(({ msg }, i) => {
      const attempt = attemptOf(msg);
      try {
        const body = opts.contract.decode(msg);
        items.push({
          body,
          attempt,
          messageId: msg.properties.messageId ? String(msg.properties.messageId) : undefined,
          routingKey: msg.fields.routingKey,
          redelivered: msg.fields.redelivered,
          publishedAt: typeof msg.properties.timestamp === 'number' ? msg.properties.timestamp : undefined,
        });
        itemIndex.push(i);
      } catch (err) {
        outcomes[i] = { kind: 'dead', reason: `${opts.contract.name}: ${errorMessage(err)}` };
      }
    });

    const started = performance.now();
    let failures = await runHandler(items, batch[0]!.subscription);
    // A dependency is down (the database, typically): that says nothing about the messages.
    // Hold the batch - unacked, in order, no attempt counted - and try again with a backoff,
    // instead of spending the messages' attempts and dead-lettering them during an outage.
    for (let hold = 1; [...failures.values()].some(isUnavailable); hold++) {
      if (stopping || !batch.every((d) => d.ch === channel)) return; // the broker gives them back
      const cause = [...failures.values()].find(isUnavailable);
      if (opts.probe && (await dependencyAnswers(opts.probe))) {
        // The dependency is up, so the batch itself broke the connection: fail it like any error.
        log.warn({ queue, err: errorMessage(cause), size: items.length }, 'the batch failed although the dependency answers; not holding it');
        failures = await runHandler(items, batch[0]!.subscription, true);
        break;
      }
      const delay = Math.min(30_000, 250 * 2 ** Math.min(hold, 7));
      log.warn({ queue, delay, hold, err: errorMessage(cause) }, 'a dependency is unavailable; holding the batch');
      await new Promise((r) => setTimeout(r, delay));
      failures = await runHandler(items, batch[0]!.subscription);
    }
    opts.metrics?.batchSeconds.observe({ queue }, (performance.now() - started) / 1000);
    items.forEach((item, i) => {
      const err = failures.get(i);
      const at = itemIndex[i]!;
      if (err === undefined) outcomes[at] = { kind: 'ack' };
      else if (err instanceof PermanentError) outcomes[at] = { kind: 'dead', reason: `${err.name}: ${err.message}` };
      else if (item.attempt >= opts.maxAttempts) outcomes[at] = { kind: 'dead', reason: `gave up after ${item.attempt} attempts: ${errorMessage(err)}` };
      else outcomes[at] = { kind: 'retry', reason: errorMessage(err) };
    });

    await Promise.all(
      batch.map(({ msg }, i) => {
        const o = outcomes[i]!;
        if (o.kind === 'retry') return forward(msg, retryQueue(queue), { [ATTEMPT_HEADER]: attemptOf(msg) + 1, 'x-sluice-last-error': o.reason });
        if (o.kind === 'dead') {
          log.warn({ queue, messageId: msg.properties.messageId, reason: o.reason }, 'dead-lettering message');
          return forward(msg, deadLetterQueue(queue), {
            'x-sluice-reason': o.reason,
            'x-sluice-queue': queue,
            'x-sluice-exchange': msg.fields.exchange,
            'x-sluice-routing-key': msg.fields.routingKey,
            'x-sluice-attempts': attemptOf(msg),
            'x-sluice-failed-at': new Date().toISOString(),
          });
        }
        return undefined;
      }),
    );
    for (const o of outcomes) opts.metrics?.messages.inc({ queue, outcome: o.kind === 'dead' ? 'dead_letter' : o.kind });

    // Every message of the batch is now stored, retried or dead-lettered: settle them.
    // Batches are handled in delivery order, so acking the last tag with allUpTo covers them all.
    for (const ch of new Set(batch.map((d) => d.ch))) {
      if (ch !== channel) continue; // a closed channel's messages come back by themselves
      const last = batch.filter((d) => d.ch === ch).at(-1)!;
      ch.ack(last.msg, true);
    }
  }

  /**
   * Runs the handler; returns the failed items by index. A throwing batch is retried item by item.
   * `split`: go one by one at once (the whole batch already failed). A lone item that fails with what
   * looks like an outage while the dependency answers is a failure of the item, not an outage.
   */
  async function runHandler(items: BatchItem<T>[], subscription: number, split = false): Promise<Map<number, unknown>> {
    const failures = new Map<number, unknown>();
    if (items.length === 0) return failures;
    const ctx: BatchContext = { log, queue, subscription };
    if (!split) {
      try {
        const result = await opts.handler(items, ctx);
        for (const f of result?.failures ?? []) failures.set(f.index, f.error);
        return failures;
      } catch (err) {
        if (isUnavailable(err)) return new Map(items.map((_, i) => [i, err]));
        if (items.length === 1) return failures.set(0, err);
        log.warn({ queue, err: errorMessage(err), size: items.length }, 'batch failed; handling its messages one by one');
      }
    }
    for (let i = 0; i < items.length; i++) {
      try {
        const result = await opts.handler([items[i]!], ctx);
        const f = result?.failures[0];
        if (f) failures.set(i, f.error);
      } catch (err) {
        failures.set(i, split && isUnavailable(err) ? new BatchBrokeConnectionError(`the dependency answers, but this message's write failed with: ${errorMessage(err)}`) : err);
      }
    }
    return failures;
  }

  /** Publish a copy to the exchange named `target`, which feeds the queue of that name. */
  function forward(msg: ConsumeMessage, target: string, extra: MessagePropertyHeaders): Promise<void> {
    const p = msg.properties;
    return opts.publisher.publish(target, queue, msg.content, {
      messageId: String(p.messageId ?? `${queue}:${msg.fields.deliveryTag}`),
      contentType: p.contentType,
      type: p.type,
      timestamp: p.timestamp,
      correlationId: p.correlationId,
      // The broker's delivery count belongs to the old message; `extra` carries ours.
      headers: { ...withoutKey(p.headers, 'x-delivery-count'), ...extra },
    });
  }

  return {
    queue,
    get consuming() {
      return consumerTag !== null;
    },
    get lastDeliveryAt() {
      return lastDeliveryAt;
    },
    async cycle() {
      const ch = channel;
      if (!ch || stopping || pausing) return;
      pausing = true;
      try {
        if (timer) clearTimeout(timer), (timer = null);
        await inFlight;
        // Closing the channel returns its unacked messages and removes the consumer in one go.
        channel = null;
        consumerTag = null;
        buffer = buffer.filter((d) => d.ch !== ch);
        bufferBytes = bytesOf(buffer);
        await ch.close().catch(() => {});
        lastDeliveryAt = 0;
      } finally {
        pausing = false;
      }
      if (model && !stopping) await subscribe(model).catch((err) => amqp.reset(`re-subscribing to ${queue} failed: ${errorMessage(err)}`));
    },
    async stop() {
      stopping = true;
      if (timer) clearTimeout(timer), (timer = null);
      const ch = channel;
      if (ch && consumerTag) await ch.cancel(consumerTag).catch(() => {});
      consumerTag = null;
      await inFlight;
      channel = null;
      // Closing the channel hands unprocessed (unacked) messages back to the queue.
      await ch?.close().catch(() => {});
    },
  };
}

/** A message whose handling drops the dependency's connection while the dependency is up. */
class BatchBrokeConnectionError extends Error {
  override name = 'BatchBrokeConnectionError';
}

async function dependencyAnswers(probe: () => Promise<unknown>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch {
    return false;
  }
}

/** Attempts so far, counting our retries and the broker's redeliveries (quorum queues count them). */
function attemptOf(msg: ConsumeMessage): number {
  const h = msg.properties.headers ?? {};
  const retries = Number(h[ATTEMPT_HEADER] ?? 1);
  const redeliveries = Number(h['x-delivery-count'] ?? 0);
  return Math.max(1, retries) + (Number.isFinite(redeliveries) ? redeliveries : 0);
}

function withoutKey(headers: MessagePropertyHeaders | undefined, key: string): MessagePropertyHeaders {
  const { [key]: _dropped, ...rest } = headers ?? {};
  return rest;
}
