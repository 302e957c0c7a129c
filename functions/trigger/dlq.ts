// Dead letters: every queue Q of the topology has Q.dlq, where the consumer runtime
// (shared/amqp/consumer.ts) forwards poison messages with the reason in `x-sluice-reason`.
// GET /v1/dlq lists them, GET /v1/dlq/:queue shows the first messages without removing them,
// POST /v1/dlq/:queue/replay moves messages back to Q, POST /v1/dlq/:queue/purge drops them.
//
// These run as their own RabbitMQ user (sluice_dlq, infra/access.ts OPERATORS, DLQ_AMQP_URL), not
// as the trigger's: a replay writes to `Q.retry` of every queue, notify.email's included, which
// the trigger must never be able to do (README, "Where mail goes").
//
// Replay: each message is taken with basic.get, published with a publisher confirm to the fanout
// exchange `Q.retry` (the path of an ordinary retry: the retry queue's TTL dead-letters it back
// to Q), and acked in the DLQ only once the broker confirmed the copy. A failure leaves the
// message unacked, and closing the channel puts it back in the DLQ: a message is never lost, and
// it is in Q once (twice only if the trigger dies between the confirm and the ack; the consumers'
// writes are idempotent). The copy starts afresh: no attempt count, and `x-sluice-replayed` counts
// its replays.
//
// Peek: basic.get without ack, then basic.nack with requeue: the messages stay, in their order,
// but the broker marks them redelivered and quorum queues count the return in `x-delivery-count`
// (a replay drops that header). RabbitMQ 4.0-4.2 also count it against a quorum queue's delivery
// limit (20 by default), after which a message without a dead-letter target is dropped: on those
// versions a dead letter shown 20 times is lost (docs/design-notes.md; 3.10 has no default limit,
// 4.3+ does not count a nack).
import { randomUUID } from 'node:crypto';
import amqp, { type ChannelModel, type ConfirmChannel, type GetMessage, type MessagePropertyHeaders } from 'amqplib';
import { z } from 'zod';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { Readable } from 'node:stream';
import type { Logger } from '../../shared/log.ts';
import { describeIssues } from '../../shared/contracts/json.ts';
import { redactUrl } from '../../shared/config.ts';
import { QUEUES, deadLetterQueue, retryQueue, topology } from '../../infra/topology.ts';
import { UNAUTHORIZED, errors, validatedByHandlers } from './api-schemas.ts';

/** Messages one GET /v1/dlq/:queue shows at most. */
export const MAX_PEEK = 1_000;
/** Bytes of each body shown (escaped). */
export const PREVIEW_BYTES = 256;
/** Messages of a replay in flight (taken, published, waiting for their confirm) at once. */
const REPLAY_WINDOW = 100;

export interface DlqQueue {
  /** The dead-letter queue, `Q.dlq`. */
  queue: string;
  /** Q, where its messages came from and where a replay puts them back. */
  source: string;
  /** Messages ready in it. */
  messages: number;
}

export interface DeadLetter {
  reason: string | null;
  attempts: number | null;
  deaths: number;
  replayed: number;
  redelivered: boolean;
  messageId: string | null;
  exchange: string | null;
  routingKey: string;
  failedAt: string | null;
  headers: Record<string, unknown>;
  size: number;
  preview: string;
  truncated: boolean;
}

/** The port the routes use: the real one speaks AMQP as sluice_dlq, the unit tests' is in memory. */
export interface DeadLetters {
  list(): Promise<DlqQueue[]>;
  peek(queue: string, limit: number): Promise<{ messages: number; items: DeadLetter[] }>;
  /** Moves up to `limit` messages (default: as many as the queue holds when the replay starts) back to the source queue. */
  replay(queue: string, limit?: number): Promise<{ replayed: number; remaining: number }>;
  purge(queue: string): Promise<{ purged: number }>;
  close(): Promise<void>;
}

/** The broker cannot be reached as the DLQ user, or refuses it: a 503 naming what to check. */
export class DlqUnavailableError extends Error {
  override name = 'DlqUnavailableError';
}

/** A replay that stopped part way: what was moved stays moved. */
export class ReplayError extends Error {
  override name = 'ReplayError';
}

/** The dead-letter queues of the topology, by their name and by their source queue's. */
export function resolveDlq(name: string, queues: readonly string[] = topology.queues.map((q) => q.name)): { queue: string; source: string } | null {
  const source = queues.find((q) => q === name || deadLetterQueue(q) === name);
  return source === undefined ? null : { queue: deadLetterQueue(source), source };
}

/**
 * The first bytes of a body, safe to print: valid UTF-8 as text, with control, format (bidi,
 * zero-width) and separator characters and the backslash escaped; other bytes as \xNN.
 */
export function safePreview(body: Buffer, max = PREVIEW_BYTES): string {
  const head = body.subarray(0, max);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let out = '';
  for (let i = 0; i < head.length; ) {
    const b = head[i]!;
    const len = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len > 0 && i + len <= head.length) {
      try {
        out += escapeChar(decoder.decode(head.subarray(i, i + len)));
        i += len;
        continue;
      } catch {
        // not a valid sequence: its first byte is shown as \xNN
      }
    }
    out += `\\x${b.toString(16).padStart(2, '0')}`;
    i++;
  }
  return out;
}

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\\': '\\\\' };
function escapeChar(c: string): string {
  if (NAMED[c]) return NAMED[c];
  return /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cs}]/u.test(c) ? `\\u{${c.codePointAt(0)!.toString(16)}}` : c;
}

/** AMQP header values as JSON: byte arrays as base64, timestamps as ISO strings, big integers as strings. */
function jsonSafe(v: unknown): unknown {
  if (Buffer.isBuffer(v)) return { base64: v.toString('base64') };
  if (v instanceof Date) return v.toISOString();
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]));
  return v;
}

const str = (v: unknown) => (v === undefined || v === null ? null : Buffer.isBuffer(v) ? v.toString('utf8') : String(v));
const int = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'bigint' ? Number(v) : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : null);

/**
 * Why a message is in a DLQ. The consumer runtime says so in `x-sluice-reason`; a message the broker
 * dead-lettered itself (past its queue's delivery limit, say) has only the broker's record: `x-death`,
 * whose first entry is the latest death (RabbitMQ keeps it most recent first), or, on brokers that
 * write them, `x-last-death-reason` / `x-last-death-queue` (3.13+) and `x-first-death-reason`.
 */
export function deadLetterReason(h: Record<string, unknown>): string | null {
  const own = str(h['x-sluice-reason']);
  if (own !== null) return own;
  const deaths = Array.isArray(h['x-death']) ? (h['x-death'] as Record<string, unknown>[]) : [];
  const last = deaths[0];
  const reason = str(last?.reason) ?? str(h['x-last-death-reason']) ?? str(h['x-first-death-reason']);
  if (reason === null) return null;
  const queue = str(last?.queue) ?? str(h['x-last-death-queue']) ?? str(h['x-first-death-queue']);
  const count = int(last?.count);
  const what = reason === 'delivery_limit' ? 'it reached the delivery limit' : reason === 'rejected' ? 'a consumer rejected it' : reason === 'expired' ? 'its TTL expired' : reason === 'maxlen' ? 'its queue was full' : reason;
  return `dead-lettered by the broker${queue ? ` from ${queue}` : ''}: ${what} (x-death reason ${reason}${count !== null ? `, count ${count}` : ''})`;
}

/** What a dead-lettered message says about itself (the headers consumer.ts sets when it dead-letters). */
export function describeDeadLetter(msg: Pick<GetMessage, 'content' | 'fields' | 'properties'>, previewBytes = PREVIEW_BYTES): DeadLetter {
  const h = msg.properties.headers ?? {};
  const deaths = Array.isArray(h['x-death']) ? (h['x-death'] as { count?: unknown }[]).reduce((n, d) => n + (int(d?.count) ?? 0), 0) : 0;
  return {
    reason: deadLetterReason(h),
    attempts: int(h['x-sluice-attempts']),
    deaths,
    replayed: int(h['x-sluice-replayed']) ?? 0,
    redelivered: msg.fields.redelivered,
    messageId: str(msg.properties.messageId),
    exchange: str(h['x-sluice-exchange']),
    // The routing key it was first published with; in the DLQ it carries its queue's name.
    routingKey: str(h['x-sluice-routing-key']) ?? msg.fields.routingKey,
    failedAt: str(h['x-sluice-failed-at']),
    headers: jsonSafe(h) as Record<string, unknown>,
    size: msg.content.length,
    preview: safePreview(msg.content, previewBytes),
    truncated: msg.content.length > previewBytes,
  };
}

/** Headers a dead letter carries that a replayed copy must not: the DLQ's record, and the attempt counts. */
const DROPPED_ON_REPLAY = [
  'x-delivery-count', 'x-acquired-count', 'x-sluice-attempt', 'x-sluice-attempts', 'x-sluice-last-error',
  'x-sluice-reason', 'x-sluice-queue', 'x-sluice-exchange', 'x-sluice-routing-key', 'x-sluice-failed-at',
];

/** The properties of a replayed copy: the same message, a fresh set of attempts, marked replayed. */
export function replayHeaders(headers: MessagePropertyHeaders | undefined, now = new Date()): MessagePropertyHeaders {
  const h: MessagePropertyHeaders = { ...(headers ?? {}) };
  const reason = deadLetterReason(h) ?? undefined;
  for (const k of DROPPED_ON_REPLAY) delete h[k];
  return {
    ...h,
    'x-sluice-replayed': (int(headers?.['x-sluice-replayed']) ?? 0) + 1,
    'x-sluice-replayed-at': now.toISOString(),
    ...(reason !== undefined ? { 'x-sluice-replayed-reason': reason } : {}),
  };
}

/** The real port: a connection of its own as the DLQ user, opened on first use and again after a loss. */
export function createDeadLetters(opts: { url: string; log: Logger; queues?: readonly string[] }): DeadLetters {
  const sources = opts.queues ?? topology.queues.map((q) => q.name);
  let model: ChannelModel | null = null;
  let connecting: Promise<ChannelModel> | null = null;
  let closed = false;

  async function connection(): Promise<ChannelModel> {
    if (closed) throw new DlqUnavailableError('the trigger is shutting down');
    if (model) return model;
    connecting ??= amqp
      .connect(opts.url, { clientProperties: { connection_name: 'sluice-trigger-dlq' } })
      .then((m) => {
        m.on('error', (err: Error) => opts.log.warn({ err: err.message }, 'DLQ connection error'));
        m.on('close', () => {
          if (model === m) model = null;
        });
        model = m;
        return m;
      })
      .catch((err: Error) => {
        throw new DlqUnavailableError(`cannot reach RabbitMQ as the dead-letter operator at ${redactUrl(opts.url)} (DLQ_AMQP_URL): ${err.message}`);
      })
      .finally(() => {
        connecting = null;
      });
    return connecting;
  }

  /** One confirm channel per operation; closing it puts back whatever the operation took and did not ack. */
  async function withChannel<T>(what: string, fn: (ch: ConfirmChannel, returned: Set<string>) => Promise<T>): Promise<T> {
    const m = await connection();
    const ch = await m.createConfirmChannel().catch((err: Error) => {
      if (model === m) model = null; // a connection that cannot open a channel is gone: a new one next time
      throw new DlqUnavailableError(`${what} failed: RabbitMQ refused a channel to the dead-letter operator (${err.message})`);
    });
    let channelError: Error | null = null;
    ch.on('error', (err: Error) => {
      channelError = err;
    });
    const returned = new Set<string>();
    ch.on('return', (msg: GetMessage) => {
      const tag = msg.properties.headers?.['x-sluice-replay-tag'];
      if (tag !== undefined) returned.add(String(tag));
    });
    try {
      return await fn(ch, returned);
    } catch (err) {
      if (err instanceof ReplayError) throw err;
      const cause = channelError ?? (err as Error);
      // ACCESS_REFUSED and friends: the user's rights, which the migrate step sets.
      throw new DlqUnavailableError(`${what} failed as the dead-letter operator: ${cause.message}${/ACCESS_REFUSED/.test(cause.message) ? ' (run `npm run migrate`: it gives sluice_dlq its rights)' : ''}`);
    } finally {
      await ch.close().catch(() => {});
    }
  }

  const publishConfirmed = (ch: ConfirmChannel, returned: Set<string>, source: string, msg: GetMessage) =>
    new Promise<void>((resolve, reject) => {
      const p = msg.properties;
      const tag = randomUUID();
      const headers = { ...replayHeaders(p.headers), 'x-sluice-replay-tag': tag };
      // Through Q.retry, like a retry: its TTL dead-letters the copy back to Q.
      ch.publish(retryQueue(source), source, msg.content, {
        persistent: true,
        mandatory: true,
        messageId: p.messageId,
        contentType: p.contentType,
        contentEncoding: p.contentEncoding,
        type: p.type,
        timestamp: p.timestamp,
        correlationId: p.correlationId,
        appId: p.appId,
        headers,
      }, (err) => {
        if (returned.delete(tag)) reject(new Error(`the broker returned the copy: nothing is bound to exchange '${retryQueue(source)}' (run \`npm run migrate\`)`));
        else if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else resolve();
      });
    });

  return {
    list: () =>
      withChannel('listing the dead-letter queues', async (ch) => {
        const out: DlqQueue[] = [];
        for (const source of sources) out.push({ queue: deadLetterQueue(source), source, messages: (await ch.checkQueue(deadLetterQueue(source))).messageCount });
        return out;
      }),

    peek: (queue, limit) =>
      withChannel(`reading ${queue}`, async (ch) => {
        const { messageCount } = await ch.checkQueue(queue);
        const got: GetMessage[] = [];
        while (got.length < limit) {
          const msg = await ch.get(queue, { noAck: false });
          if (msg === false) break;
          got.push(msg);
        }
        // Back, in order; nack (not reject) so that RabbitMQ 4.3+ does not count it as a failed delivery.
        if (got.length > 0) ch.nack(got.at(-1)!, true, true);
        return { messages: messageCount, items: got.map((m) => describeDeadLetter(m)) };
      }),

    replay: (queue, limit) =>
      withChannel(`replaying ${queue}`, async (ch, returned) => {
        const source = resolveDlq(queue, sources)!.source;
        const { messageCount } = await ch.checkQueue(queue);
        // Messages that fail again during the replay come back to the DLQ's tail: not taken twice.
        const max = Math.min(limit ?? messageCount, messageCount);
        let replayed = 0;
        while (replayed < max) {
          const window: GetMessage[] = [];
          while (window.length < Math.min(REPLAY_WINDOW, max - replayed)) {
            const msg = await ch.get(queue, { noAck: false });
            if (msg === false) break;
            window.push(msg);
          }
          if (window.length === 0) break;
          const results = await Promise.allSettled(
            window.map(async (msg) => {
              await publishConfirmed(ch, returned, source, msg);
              ch.ack(msg); // only now: the copy is the broker's
            }),
          );
          replayed += results.filter((r) => r.status === 'fulfilled').length;
          const failed = results.find((r) => r.status === 'rejected');
          if (failed) {
            throw new ReplayError(`replay of ${queue} stopped after ${replayed} messages (they are back in ${source}); the others stay in ${queue}: ${(failed.reason as Error).message}`);
          }
        }
        opts.log.info({ queue, source, replayed }, 'dead letters replayed');
        return { replayed, remaining: (await ch.checkQueue(queue)).messageCount };
      }),

    purge: (queue) =>
      withChannel(`purging ${queue}`, async (ch) => {
        const { messageCount } = await ch.purgeQueue(queue);
        opts.log.warn({ queue, purged: messageCount }, 'dead letters purged');
        return { purged: messageCount };
      }),

    async close() {
      closed = true;
      const m = model ?? (await connecting?.catch(() => null));
      model = null;
      await m?.close().catch(() => {});
    },
  };
}

// ---- HTTP ----

export const DlqParamsSchema = z.object({
  queue: z.string().describe(`A dead-letter queue (\`${deadLetterQueue(QUEUES.logClean)}\`) or the queue it belongs to (\`${QUEUES.logClean}\`)`),
});
export const DlqPeekQuerySchema = z.strictObject({
  limit: z.coerce.number().int().min(1).max(MAX_PEEK).default(10).describe('How many of the first messages to show'),
});
export const DlqReplayBodySchema = z.strictObject({
  limit: z.number().int().min(1).max(10_000_000).optional().describe('At most this many (default: every message the queue holds when the replay starts)'),
});

const DlqQueueSchema = z.object({
  queue: z.string().describe('The dead-letter queue'),
  source: z.string().describe('The queue its messages came from, where a replay puts them back'),
  messages: z.number().int().describe('Messages ready in it'),
});
export const DlqListSchema = z.object({ queues: z.array(DlqQueueSchema) });
const DeadLetterSchema = z.object({
  reason: z.string().nullable().describe('Why it was dead-lettered: header `x-sluice-reason`, or for a message the broker dead-lettered itself (its delivery limit), the latest `x-death` entry'),
  attempts: z.number().int().nullable().describe('Attempts it had when dead-lettered (`x-sluice-attempts`)'),
  deaths: z.number().int().describe('Times the broker dead-lettered it (its retries through `Q.retry`: the sum of `x-death` counts)'),
  replayed: z.number().int().describe('Times it was replayed before (`x-sluice-replayed`)'),
  redelivered: z.boolean().describe('Set by the broker once a message was returned, so also after it was shown once'),
  messageId: z.string().nullable(),
  exchange: z.string().nullable().describe('The exchange it was first published to'),
  routingKey: z.string().describe('The routing key it was first published with'),
  failedAt: z.string().nullable(),
  headers: z.record(z.string(), z.unknown()).describe('Every header, as JSON (byte arrays as `{"base64"}`)'),
  size: z.number().int().describe('Body size in bytes'),
  preview: z.string().describe(`The first ${PREVIEW_BYTES} bytes, escaped: control, format and separator characters as \\u{…}, invalid UTF-8 as \\xNN`),
  truncated: z.boolean().describe('The body is longer than the preview'),
});
export const DlqPeekSchema = DlqQueueSchema.extend({ items: z.array(DeadLetterSchema).describe('The first messages, in queue order, left in the queue') });
export const DlqReplaySchema = z.object({
  queue: z.string(),
  source: z.string(),
  replayed: z.number().int().describe('Messages moved back (each published once, with a confirm, before it left the DLQ)'),
  remaining: z.number().int().describe('Messages still in the dead-letter queue'),
  via: z.string().describe('The retry exchange they went through; they reach the source queue after its retry delay'),
  arrivesAfterMs: z.number().int(),
});
export const DlqPurgeSchema = z.object({ queue: z.string(), source: z.string(), purged: z.number().int() });

const NOT_CONFIGURED =
  'dead-letter operations are off on this trigger: set DLQ_AMQP_URL to the sluice_dlq RabbitMQ user (README, "Least privilege"; npm start sets it)';

function fail(reply: FastifyReply, statusCode: 400 | 404 | 502 | 503, message: string) {
  const error = { 400: 'Bad Request', 404: 'Not Found', 502: 'Bad Gateway', 503: 'Service Unavailable' }[statusCode];
  return reply.code(statusCode).send({ statusCode, error, message });
}

const dlqErrors = (more: Record<number, string> = {}) =>
  errors({ 401: UNAUTHORIZED, 503: 'DLQ_AMQP_URL is not set, or RabbitMQ cannot be reached or refuses the DLQ user', ...more });
const queueErrors = { 404: 'Not a queue of the topology (the message lists the known ones)' };

/** The routes; without a DeadLetters port (no DLQ_AMQP_URL) they answer 503 naming the setting. */
export const dlqRoutes = (deps: { dlq?: DeadLetters; queues?: readonly string[] }): FastifyPluginAsync => async (app) => {
  const queues = deps.queues ?? topology.queues.map((q) => q.name);
  validatedByHandlers(app);
  const retryDelay = (source: string) => topology.queues.find((q) => q.name === source)?.retryDelayMs ?? 0;

  /** Runs an operation, turning the port's errors into answers. */
  async function operate<T>(reply: FastifyReply, fn: (dlq: DeadLetters) => Promise<T>): Promise<T | FastifyReply> {
    if (!deps.dlq) return fail(reply, 503, NOT_CONFIGURED);
    try {
      return await fn(deps.dlq);
    } catch (err) {
      if (err instanceof DlqUnavailableError) return fail(reply, 503, err.message);
      if (err instanceof ReplayError) return fail(reply, 502, err.message);
      throw err;
    }
  }
  function target(reply: FastifyReply, name: string) {
    const found = resolveDlq(name, queues);
    if (!found) void fail(reply, 404, `no dead-letter queue '${name}': the queues are ${queues.map(deadLetterQueue).join(', ')} (or their source queues' names)`);
    return found;
  }

  app.get('/v1/dlq', {
    schema: {
      tags: ['dlq'],
      summary: 'Every dead-letter queue of the topology, with its depth',
      response: { 200: DlqListSchema, ...dlqErrors() },
    },
  }, async (_req, reply) => operate(reply, async (dlq) => ({ queues: await dlq.list() })));

  app.get('/v1/dlq/:queue', {
    schema: {
      tags: ['dlq'],
      summary: 'The first messages of a dead-letter queue, left in it',
      description: 'Each message is taken and given back (basic.get, then basic.nack with requeue): it stays, in order, but is marked redelivered.',
      params: DlqParamsSchema,
      querystring: DlqPeekQuerySchema,
      response: { 200: DlqPeekSchema, ...dlqErrors({ 400: 'A bad `limit`', ...queueErrors }) },
    },
  }, async (req, reply) => {
    const found = target(reply, (req.params as { queue: string }).queue);
    if (!found) return reply;
    const query = DlqPeekQuerySchema.safeParse(req.query);
    if (!query.success) return fail(reply, 400, `invalid query: ${describeIssues(query.error)}`);
    return operate(reply, async (dlq) => ({ ...found, ...(await dlq.peek(found.queue, query.data.limit)) }));
  });

  app.post('/v1/dlq/:queue/replay', {
    schema: {
      tags: ['dlq'],
      summary: 'Move dead letters back to their queue, each once',
      description:
        'Each message is taken, published with a publisher confirm to `Q.retry` (whose TTL dead-letters it back to Q, as a retry) and only then removed from the DLQ. ' +
        'The copy gets a fresh set of attempts and `x-sluice-replayed` (its replay count). A failure part way answers 502 saying how many were moved; the rest stay.',
      params: DlqParamsSchema,
      body: DlqReplayBodySchema,
      response: { 200: DlqReplaySchema, ...dlqErrors({ 400: 'A bad body', ...queueErrors, 502: 'The broker refused a copy part way: the message says how many were moved' }) },
    },
  }, async (req, reply) => {
    const found = target(reply, (req.params as { queue: string }).queue);
    if (!found) return reply;
    if (req.body instanceof Readable) {
      reply.header('connection', 'close'); // the body is not read
      return fail(reply, 400, 'body must be JSON (Content-Type: application/json), e.g. {"limit": 10}, or empty');
    }
    const body = DlqReplayBodySchema.safeParse(req.body ?? {});
    if (!body.success) return fail(reply, 400, `invalid body: ${describeIssues(body.error)}`);
    return operate(reply, async (dlq) => ({
      ...found,
      ...(await dlq.replay(found.queue, body.data.limit)),
      via: retryQueue(found.source),
      arrivesAfterMs: retryDelay(found.source),
    }));
  });

  app.post('/v1/dlq/:queue/purge', {
    schema: {
      tags: ['dlq'],
      summary: 'Drop every message of a dead-letter queue',
      params: DlqParamsSchema,
      response: { 200: DlqPurgeSchema, ...dlqErrors(queueErrors) },
    },
  }, async (req, reply) => {
    const found = target(reply, (req.params as { queue: string }).queue);
    if (!found) return reply;
    return operate(reply, async (dlq) => ({ ...found, ...(await dlq.purge(found.queue)) }));
  });
};

