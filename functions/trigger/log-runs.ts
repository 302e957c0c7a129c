// Log runs: every line of a byte stream becomes one message of the run.
import { createReadStream } from 'node:fs';
import { LOGS_EXCHANGE, logLineMessage, logRoutingKey } from '../../shared/contracts/logs.ts';
import { MAX_LINE_BYTES, readLines } from '../../shared/weblog/lines.ts';
import type { Position, RunWork } from './runner.ts';

/** Publish every line of `chunks`; `from`: where in the file the chunks start (a resumed run). Longer lines are cut at `maxLineBytes`. */
export function publishLines(runId: string, source: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, from?: Position, maxLineBytes = MAX_LINE_BYTES): RunWork {
  return async (out) => {
    const routingKey = logRoutingKey(source);
    const lines = readLines(chunks, from ? { maxLineBytes, from: { lines: from.item, offset: from.offset } } : { maxLineBytes });
    for await (const { line, lineNo, byteOffset, truncatedFrom } of lines) {
      const meta = truncatedFrom === undefined ? { runId, source, lineNo, byteOffset } : { runId, source, lineNo, byteOffset, truncatedFrom };
      await out.publish(LOGS_EXCHANGE, routingKey, line, logLineMessage(meta), { item: lineNo - 1, offset: byteOffset });
    }
  };
}

/** Publish a file, from its start or from a checkpoint. */
export function publishFile(runId: string, source: string, path: string, from?: Position, maxLineBytes = MAX_LINE_BYTES): RunWork {
  return publishLines(runId, source, createReadStream(path, { highWaterMark: 256 * 1024, start: from?.offset ?? 0 }), from, maxLineBytes);
}
