// Log runs: every line of a byte stream is published, a message each or (batch framing) many to a message.
import { createReadStream } from 'node:fs';
import path from 'node:path';
import { MAX_LINE_BYTES, readLines } from '../../shared/weblog/lines.ts';
import { LineFramer, type FramingOptions } from './framing.ts';
import type { Position, RunWork } from './runner.ts';

/** How a run's lines are published beyond where they come from. */
export interface LineOptions {
  /** false: the run muted alerts (`"alerts": false`): every line carries the header `alerts: false` (absent otherwise, to save bytes). */
  alerts?: boolean;
  /** One message per line (the default) or batches of lines (functions/trigger/framing.ts). */
  framing?: FramingOptions;
}

/**
 * Publish every line of `chunks`; `from`: where in the file the chunks start (a resumed run). Longer lines are cut at `maxLineBytes`.
 * `file`: the file the lines come from, relative to LOG_DIR (the `file` header; none for an upload).
 */
export function publishLines(
  runId: string, source: string, chunks: AsyncIterable<Buffer> | Iterable<Buffer>, from?: Position, maxLineBytes = MAX_LINE_BYTES, file?: string, opts: LineOptions = {},
): RunWork {
  return async (out) => {
    const framer = new LineFramer(out, { runId, source, alerts: opts.alerts }, opts.framing);
    try {
      const lines = readLines(chunks, from ? { maxLineBytes, from: { lines: from.item, offset: from.offset } } : { maxLineBytes });
      for await (const l of lines) await framer.add(l, file);
      await framer.flush();
    } finally {
      framer.close();
    }
  };
}

/** Publish a file, from its start or from a checkpoint; `file` is its name relative to LOG_DIR. */
export function publishFile(runId: string, source: string, filePath: string, from?: Position, maxLineBytes = MAX_LINE_BYTES, file?: string, opts: LineOptions = {}): RunWork {
  const name = file === undefined ? undefined : path.normalize(file);
  return publishLines(runId, source, createReadStream(filePath, { highWaterMark: 256 * 1024, start: from?.offset ?? 0 }), from, maxLineBytes, name, opts);
}
