// Log runs: every line of a byte stream becomes one message of the run.
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { LOGS_EXCHANGE, logLineMessage, logRoutingKey, type LogLineMeta } from '../../shared/contracts/logs.ts';
import { MAX_LINE_BYTES, readLines } from '../../shared/weblog/lines.ts';
import type { Position, RunWork } from './runner.ts';

/** How a run's lines are published beyond where they come from. */
export interface LineOptions {
  /** false: the run muted alerts (`"alerts": false`): every line carries the header `alerts: false` (absent otherwise, to save bytes). */
  alerts?: boolean;
}

/**
 * Publish every line of `chunks`; `from`: where in the file the chunks start (a resumed run). Longer lines are cut at `maxLineBytes`.
 * `file`: the file the lines come from, relative to LOG_DIR (the `file` header; none for an upload).
 */
export function publishLines(
  runId: string, source: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, from?: Position, maxLineBytes = MAX_LINE_BYTES, file?: string, opts: LineOptions = {},
): RunWork {
  const alerts = opts.alerts === false ? false : undefined;
  return async (out) => {
    const routingKey = logRoutingKey(source);
    const lines = readLines(chunks, from ? { maxLineBytes, from: { lines: from.item, offset: from.offset } } : { maxLineBytes });
    for await (const { line, lineNo, byteOffset, truncatedFrom } of lines) {
      const meta: LogLineMeta = { runId, source, lineNo, byteOffset, file, truncatedFrom, alerts };
      await out.publish(LOGS_EXCHANGE, routingKey, line, logLineMessage(meta), { item: lineNo - 1, offset: byteOffset });
    }
  };
}

/** Publish a file, from its start or from a checkpoint; `file` is its name relative to LOG_DIR. */
export function publishFile(runId: string, source: string, filePath: string, from?: Position, maxLineBytes = MAX_LINE_BYTES, file?: string, opts: LineOptions = {}): RunWork {
  const name = file === undefined ? undefined : path.normalize(file);
  return publishLines(runId, source, createReadStream(filePath, { highWaterMark: 256 * 1024, start: from?.offset ?? 0 }), from, maxLineBytes, name, opts);
}
