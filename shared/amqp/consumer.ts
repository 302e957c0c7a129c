// The consumer runtime of queue functions: it owns everything but the logic. This file is the
// driver: it subscribes (prefetch), buffers deliveries into batches (up to `batchSize` messages,
// `batchMaxBytes` of bodies, or `batchWaitMs`), decodes them through the queue's contract, calls
// the handler, settles every message only after the handler's writes are durable, and stops.
// What becomes of each message is decided by the pure policy in batch-policy.ts:
//   handler returns          -> ack
//   handler reports failures -> those go to retry (or DLQ), the rest are acked
//   handler throws           -> the batch is split and each message retried alone,
//                               so one bad message cannot hold back its batch
//   a dependency is down     -> the batch is held (unacked, in order, no attempt spent)
//   PermanentError / invalid body / too many attempts -> <queue>.dlq with the reason
// Retries go through <queue>.retry, whose TTL dead-letters them back to the queue.
import type { Channel, ChannelModel, ConsumeMessage, MessagePropertyHeaders } from 'amqplib';
import type { AmqpClient } from './connection.ts';
import type { Publisher } from './publisher.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { errorMessage } from '../errors.ts';
import { sleep } from '../timing.ts';
import { deadLetterQueue, retryQueue } from '../../infra/topology.ts';
import { ATTEMPT_HEADER, afterBatch, afterEach, afterProbe, attemptOf, batchIsFull, batchLimits, begin, nextBatchLength, settle, type Decision, type Ending, type Entry, type Round, type Step } from './batch-policy.ts';

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

export async function startConsumer<T>(amqp: AmqpClient, opts: ConsumerOptions<T>): Promise<Consumer> {
  const { queue, log, probe } = opts;
  let channel: Channel | null = null;
  let consumerTag: string | null = null;
  let buffer: Delivery[] = [];
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> | null = null;
  let stopping = false;
  let pausing = false;
  // Aborted by stop() and cycle(): a batch held through an outage is given back at once, not after its delay.
  let interrupt = new AbortController();
  let lastDeliveryAt = 0;
  let model: ChannelModel | null = null;
  let subscriptions = 0;
  const { prefetch, batchSize } = batchLimits(opts);
  const limits = { batchSize, batchMaxBytes: opts.batchMaxBytes ?? Infinity };
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
    if (batchIsFull(buffer.length, bufferBytes, limits)) return void run();
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

  function takeBatch(): Delivery[] {
    const batch = buffer.splice(0, nextBatchLength(buffer.map((d) => d.msg.content.length), limits));
    bufferBytes -= bytesOf(batch);
    return batch;
  }

  async function handleBatch(batch: Delivery[]): Promise<void> {
    const entries: Entry[] = [];
    const items: BatchItem<T>[] = [];
    for (const { msg } of batch) {
      const attempt = attemptOf(msg.properties.headers);
      try {
        items.push(itemOf(msg, opts.contract.decode(msg), attempt));
        entries.push({ attempt, decoded: true });
      } catch (error) {
        entries.push({ attempt, decoded: false, error });
      }
    }
    const ctx: BatchContext = { log, queue, subscription: batch[0]!.subscription };
    const round: Round = { size: items.length, holds: 0, canProbe: probe !== undefined, random: Math.random };
    const started = performance.now();
    let step: Step = begin(items.length);
    while (step.kind !== 'settle') {
      if (step.kind === 'run-batch') {
        step = afterBatch(await call(items, ctx), round);
        continue;
      }
      if (step.kind === 'run-each') {
        const why = step.reason === 'batch-failed' ? 'batch failed; handling its messages one by one' : 'the batch failed although the dependency answers; not holding it';
        log.warn({ queue, err: errorMessage(step.error), size: items.length }, why);
        const endings: Ending[] = [];
        for (const item of items) endings.push(await call([item], ctx));
        step = afterEach(endings, step.reason, round);
        continue;
      }
      // An outage. A stop, a cycle or a lost channel ends the hold: the broker gives the messages back.
      if (stopping || pausing || !batch.every((d) => d.ch === channel)) return;
      if (step.kind === 'probe') {
        step = afterProbe(await answers(probe!), step.cause, round);
        if (step.kind !== 'hold') continue;
      }
      log.warn({ queue, delay: step.delayMs, hold: step.hold, err: errorMessage(step.cause) }, 'a dependency is unavailable; holding the batch');
      const { hold, delayMs } = step;
      round.holds = hold;
      if (!(await sleep(delayMs, interrupt.signal))) return; // woken by stop() or cycle(): unacked, redelivered
      step = { kind: 'run-batch' };
    }
    opts.metrics?.batchSeconds.observe({ queue }, (performance.now() - started) / 1000);

    const decisions = settle(entries, step.failures, { maxAttempts: opts.maxAttempts, contract: opts.contract.name });
    await Promise.all(batch.map(({ msg }, i) => send(msg, decisions[i]!)));
    for (const d of decisions) opts.metrics?.messages.inc({ queue, outcome: d.kind === 'dead' ? 'dead_letter' : d.kind });

    // Every message of the batch is now stored, retried or dead-lettered: settle them.
    // Batches are handled in delivery order, so acking the last tag with allUpTo covers them all.
    for (const ch of new Set(batch.map((d) => d.ch))) {
      if (ch !== channel) continue; // a closed channel's messages come back by themselves
      const last = batch.filter((d) => d.ch === ch).at(-1)!;
      ch.ack(last.msg, true);
    }
  }

  /** One call of the handler, as data: what it returned, or what it threw. */
  async function call(items: BatchItem<T>[], ctx: BatchContext): Promise<Ending> {
    try {
      const result = await opts.handler(items, ctx);
      return { kind: 'returned', failures: result?.failures ?? [] };
    } catch (error) {
      return { kind: 'threw', error };
    }
  }

  /** Carry out a decision that needs the broker before the ack: a copy to `Q.retry` or `Q.dlq`. */
  function send(msg: ConsumeMessage, d: Decision): Promise<void> | undefined {
    if (d.kind === 'retry') return forward(msg, retryQueue(queue), { [ATTEMPT_HEADER]: d.attempt, 'x-sluice-last-error': d.reason });
    if (d.kind === 'ack') return undefined;
    log.warn({ queue, messageId: msg.properties.messageId, reason: d.reason }, 'dead-lettering message');
    return forward(msg, deadLetterQueue(queue), {
      'x-sluice-reason': d.reason,
      'x-sluice-queue': queue,
      'x-sluice-exchange': msg.fields.exchange,
      'x-sluice-routing-key': msg.fields.routingKey,
      'x-sluice-attempts': d.attempts,
      'x-sluice-failed-at': new Date().toISOString(),
    });
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
      interrupt.abort();
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
        interrupt = new AbortController();
      }
      if (model && !stopping) await subscribe(model).catch((err) => amqp.reset(`re-subscribing to ${queue} failed: ${errorMessage(err)}`));
    },
    async stop() {
      stopping = true;
      interrupt.abort();
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

function itemOf<T>(msg: ConsumeMessage, body: T, attempt: number): BatchItem<T> {
  return {
    body,
    attempt,
    messageId: msg.properties.messageId ? String(msg.properties.messageId) : undefined,
    routingKey: msg.fields.routingKey,
    redelivered: msg.fields.redelivered,
    publishedAt: typeof msg.properties.timestamp === 'number' ? msg.properties.timestamp : undefined,
  };
}

async function answers(probe: () => Promise<unknown>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch {
    return false;
  }
}

function withoutKey(headers: MessagePropertyHeaders | undefined, key: string): MessagePropertyHeaders {
  const { [key]: _dropped, ...rest } = headers ?? {};
  return rest;
}
