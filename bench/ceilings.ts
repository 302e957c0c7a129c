// The two ceilings the log replay is compared with (npm run bench, section `ceilings`):
//   brokerCeiling  the broker alone, on the pipeline's own queues: every line of a file published
//                  persistent and confirmed to the `logs` exchange, which routes it to logs.lake and
//                  logs.clean (quorum queues, as the migrate step declared them, with its policies),
//                  and consumed from both by consumers that ack without doing anything.
//   mysqlCeiling   MySQL alone: the rows log-lake and log-clean write for the same lines (raw_logs,
//                  web_requests + log_rejects, and the aggregates), through the functions' own
//                  handlers and stores, in their batch sizes, one worker thread per function and no broker.
// Both measure from the first line sent to the last one stored or acked, in lines/s.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import amqp from 'amqplib';
import { LOGS_EXCHANGE, logLineMessage, logRoutingKey } from '../shared/contracts/logs.ts';
import { readLines, type Line } from '../shared/weblog/lines.ts';

/** The lines of a file as the trigger cuts them (body without its newline, numbered from 1). */
export async function fileLines(file: string): Promise<Line[]> {
  const out: Line[] = [];
  for await (const line of readLines([readFileSync(file)])) out.push(line);
  return out;
}

export interface BrokerCeilingOptions {
  /** Unconfirmed messages in flight (the trigger's run window is 1,000). */
  window?: number;
  /** Prefetch of each consumer. */
  prefetch?: number;
  /** A consumer acks (multiple) every this many messages, and whatever is left at the end. */
  ackEvery?: number;
  /** The queues a line reaches, each consumed on its own channel. */
  queues?: string[];
}

/** Lines/s through the broker alone: publish persistent with confirms, consume and ack, nothing else. */
export async function brokerCeiling(amqpUrl: string, lines: Line[], o: BrokerCeilingOptions = {}): Promise<number> {
  const window = o.window ?? 1_000;
  const prefetch = o.prefetch ?? 1_000;
  const ackEvery = o.ackEvery ?? Math.max(1, Math.floor(prefetch / 2));
  const queues = o.queues ?? ['logs.lake', 'logs.clean'];
  const conn = await amqp.connect(amqpUrl);
  try {
    const consumers = await Promise.all(queues.map(async (queue) => {
      const ch = await conn.createChannel();
      await ch.purgeQueue(queue);
      await ch.prefetch(prefetch);
      let received = 0;
      let unacked = 0;
      let last: amqp.ConsumeMessage | null = null;
      let resolveDone!: () => void;
      const done = new Promise<void>((r) => (resolveDone = r));
      await ch.consume(queue, (msg) => {
        if (!msg) return;
        received++;
        unacked++;
        last = msg;
        if (unacked >= ackEvery || received === lines.length) {
          ch.ack(msg, true);
          unacked = 0;
        }
        if (received === lines.length) resolveDone();
      });
      return { ch, done, get last() { return last; } };
    }));
    const pub = await conn.createConfirmChannel();
    const runId = randomUUID();
    const routingKey = logRoutingKey('bench');
    let inFlight = 0;
    let failure: Error | null = null;
    let wake: (() => void) | null = null;
    const waitUntil = async (cond: () => boolean) => {
      while (!cond()) await new Promise<void>((r) => (wake = r));
    };
    const t0 = performance.now();
    for (const { line, lineNo, byteOffset } of lines) {
      await waitUntil(() => inFlight < window);
      if (failure) throw failure;
      inFlight++;
      const ok = pub.publish(LOGS_EXCHANGE, routingKey, line, { ...logLineMessage({ runId, source: 'bench', lineNo, byteOffset, file: 'bench' }), persistent: true, mandatory: true }, (err) => {
        if (err) failure ??= err;
        inFlight--;
        wake?.();
        wake = null;
      });
      if (!ok) await new Promise((r) => pub.once('drain', r));
    }
    await waitUntil(() => inFlight === 0);
    if (failure) throw failure;
    await Promise.all(consumers.map((c) => c.done));
    const seconds = (performance.now() - t0) / 1000;
    return lines.length / seconds;
  } finally {
    await conn.close().catch(() => {});
  }
}

export interface MysqlCeilingOptions {
  /** Messages per call of each function's handler (the consumers' batch size: 128 by default, prefetch 256 over 1 MiB lines). */
  batch: number;
  /** Lines per message: 1 for line framing, the trigger's FRAMING_BATCH_LINES for batch framing. */
  linesPerMessage?: number;
  /** A call also stops at this many bytes of lines (the consumers' BATCH_MAX_BYTES). */
  batchMaxBytes?: number;
  /** Count the aggregates in log-clean's transaction (AGGREGATES, default true). */
  aggregates?: boolean;
}

/**
 * Lines/s into MySQL alone: log-lake's and log-clean's handlers, each in its own worker thread
 * with its own pool, called batch after batch on the file's lines, as their consumers call them.
 */
export async function mysqlCeiling(mysqlUrl: string, file: string, o: MysqlCeilingOptions): Promise<number> {
  const runId = randomUUID();
  const workers = (['log-lake', 'log-clean'] as const).map((fn) =>
    new Worker(new URL('./mysql-writer.ts', import.meta.url), { workerData: { fn, mysqlUrl, file, runId, batch: o.batch, aggregates: o.aggregates ?? true, linesPerMessage: o.linesPerMessage ?? 1, batchMaxBytes: o.batchMaxBytes ?? Infinity } }),
  );
  const message = (w: Worker, kind: string) =>
    new Promise<{ kind: string; lines: number }>((resolve, reject) => {
      const onMessage = (m: { kind: string; lines: number }) => m.kind === kind && (w.off('message', onMessage), resolve(m));
      w.on('message', onMessage);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`mysql writer exited (${code}) before ${kind}`)));
    });
  try {
    const ready = await Promise.all(workers.map((w) => message(w, 'ready')));
    const t0 = performance.now();
    const done = workers.map((w) => message(w, 'done'));
    for (const w of workers) w.postMessage('go');
    await Promise.all(done);
    return ready[0]!.lines / ((performance.now() - t0) / 1000);
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
