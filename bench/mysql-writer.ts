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

const { fn, mysqlUrl, file, runId, batch, aggregates } = workerData as {
  fn: 'log-lake' | 'log-clean'; mysqlUrl: string; file: string; runId: string; batch: number; aggregates: boolean;
};
const lines = await fileLines(file);
const items: BatchItem<LogLine>[] = lines.map(({ line, lineNo, byteOffset }) => ({
  body: { runId, source: 'bench', lineNo, byteOffset, file: 'bench', line },
  messageId: `${runId}:${lineNo}`,
  routingKey: 'logs.bench.access',
  redelivered: false,
  publishedAt: undefined,
  attempt: 1,
}));
// As log-clean's boot creates it: the store counts inserted rows from affected rows.
const pool = createPool(mysqlUrl, 8, fn === 'log-clean' ? { foundRows: false } : {});
await pool.query('SELECT 1');
const handler: BatchHandler<LogLine> = fn === 'log-lake'
  ? lakeHandler({ store: createRawLogStore(pool) })
  : cleanHandler({ store: createCleanLogStore(pool, { aggregates }), aggregates });
const ctx = { log: createLogger(fn, 'warn'), queue: fn === 'log-lake' ? 'logs.lake' : 'logs.clean' };
parentPort!.postMessage({ kind: 'ready', lines: items.length });
await new Promise((r) => parentPort!.once('message', r));
for (let i = 0; i < items.length; i += batch) await handler(items.slice(i, i + batch), ctx);
parentPort!.postMessage({ kind: 'done', lines: items.length });
await pool.end();
