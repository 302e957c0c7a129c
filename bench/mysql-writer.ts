// Worker thread of bench/ceilings.ts mysqlCeiling: one function's handler and store (log-lake or
// log-clean) called on a file's lines, batch after batch, with no broker. Posts `ready` once the
// lines are in memory and the pool answers, waits for `go`, posts `done` when every batch is stored.
import { parentPort, workerData } from 'node:worker_threads';
import type { BatchHandler, BatchItem } from '../shared/amqp/consumer.ts';
import type { LogLine } from '../shared/contracts/logs.ts';
import { createPool } from '../shared/db/pool.ts';
import { createLogger } from '../shared/log.ts';
import { createHandler as lakeHandler } from '../functions/log-lake/handler.ts';
import { createRawLogStore } from '../functions/log-lake/store.ts';
import { createHandler as cleanHandler } from '../functions/log-clean/handler.ts';
import { createCleanLogStore } from '../functions/log-clean/store.ts';
import { fileLines } from './ceilings.ts';

const { fn, mysqlUrl, file, runId, batch, aggregates, linesPerMessage = 1, batchMaxBytes = Infinity } = workerData as {
  fn: 'log-lake' | 'log-clean'; mysqlUrl: string; file: string; runId: string; batch: number; aggregates: boolean;
  /** 1: line framing; more: batch framing's messages, `batch` of them per handler call. */
  linesPerMessage?: number;
  /** A handler call also stops at this many bytes of lines (the consumers' BATCH_MAX_BYTES). */
  batchMaxBytes?: number;
};
const lines = await fileLines(file);
const messages: LogLine[][] = [];
for (let i = 0; i < lines.length; i += linesPerMessage) {
  messages.push(lines.slice(i, i + linesPerMessage).map(({ line, lineNo, byteOffset }) => ({ runId, source: 'bench', lineNo, byteOffset, file: 'bench', line })));
}
const items: BatchItem<LogLine[]>[] = messages.map((body) => ({
  body,
  messageId: `${runId}:${body[0]!.lineNo}`,
  routingKey: 'logs.bench.access',
  redelivered: false,
  publishedAt: undefined,
  attempt: 1,
}));
// As log-clean's boot creates it: the store counts inserted rows from affected rows.
const pool = createPool(mysqlUrl, 8, fn === 'log-clean' ? { foundRows: false } : {});
await pool.query('SELECT 1');
const handler: BatchHandler<LogLine[]> = fn === 'log-lake'
  ? lakeHandler({ store: createRawLogStore(pool) })
  : cleanHandler({ store: createCleanLogStore(pool, { aggregates }), aggregates });
const ctx = { log: createLogger(fn, 'warn'), queue: fn === 'log-lake' ? 'logs.lake' : 'logs.clean' };
parentPort!.postMessage({ kind: 'ready', lines: lines.length });
await new Promise((r) => parentPort!.once('message', r));
// Cut as the consumer cuts: at `batch` messages or `batchMaxBytes` of bodies, whichever comes first.
const calls: BatchItem<LogLine[]>[][] = [];
let current: BatchItem<LogLine[]>[] = [];
let bytes = 0;
for (const item of items) {
  const size = item.body.reduce((n, l) => n + l.line.length, 0);
  if (current.length > 0 && (current.length >= batch || bytes + size > batchMaxBytes)) calls.push(current), (current = []), (bytes = 0);
  current.push(item);
  bytes += size;
}
if (current.length > 0) calls.push(current);
for (const call of calls) await handler(call, ctx);
parentPort!.postMessage({ kind: 'done', lines: lines.length });
await pool.end();
