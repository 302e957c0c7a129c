// A log line travels as its raw bytes in the body (nothing re-encoded, invalid
// UTF-8 included); where it came from travels in the headers. In batch framing
// one message carries many consecutive lines (below: the batch message).
import { z } from 'zod';
import type { Contract } from '../amqp/consumer.ts';
import type { PublishOptions } from '../amqp/publisher.ts';
import { PoisonMessageError } from '../errors.ts';
import { describeIssues } from './json.ts';
import { ALERT_SOURCE, MESSAGE_TYPES } from './names.ts';

export { LOGS_EXCHANGE, LOG_LINES_BINDING, logRoutingKey } from './names.ts';
export const SourceSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'must be 1-64 letters, digits, _ or -, starting with a letter or digit')
  // A source's lines go out as logs.<source>.access; alert events as logs.alert.<rule> (contracts/alerts.ts).
  .refine((s) => s !== ALERT_SOURCE, 'alert is reserved (logs.alert.* carries alert events); choose another source name');
export const LOG_LINE_TYPE = MESSAGE_TYPES.logLine;

export const LogLineHeadersSchema = z.object({
  runId: z.uuid(),
  source: SourceSchema,
  lineNo: z.number().int().min(1),
  byteOffset: z.number().int().min(0),
  /** The file the line was read from, relative to the trigger's LOG_DIR (absent for uploads). A followed file keeps the name it had when the run first saw it, also once rotated. */
  file: z.string().min(1).max(1024).optional(),
  /** Set when the line was longer than the publisher's limit: its real length in bytes (the body holds its first bytes only). */
  truncatedFrom: z.number().int().min(1).optional(),
  /** `false` when the line's run muted alerts (`"alerts": false`, e.g. the replay of an old log); absent otherwise. */
  alerts: z.literal(false).optional(),
});
export type LogLineMeta = z.infer<typeof LogLineHeadersSchema>;
export interface LogLine extends LogLineMeta {
  line: Buffer;
}

export const logLineContract: Contract<LogLine> = {
  name: 'log-line',
  decode(msg) {
    const result = LogLineHeadersSchema.safeParse(msg.properties.headers ?? {});
    if (!result.success) throw new PoisonMessageError(`invalid log-line headers: ${describeIssues(result.error)}`);
    return { ...result.data, line: msg.content };
  },
};

export function logLineMessage(meta: LogLineMeta): PublishOptions {
  return {
    messageId: `${meta.runId}:${meta.lineNo}`,
    contentType: 'application/octet-stream',
    type: MESSAGE_TYPES.logLine,
    // amqplib leaves a header whose value is undefined out of the table (an absent optional field).
    headers: { ...meta },
  };
}

// ---- batch framing ---------------------------------------------------------
// A batch message carries consecutive lines of one run and one file (a run's
// `"framing": "batch"`), so the broker handles one message where it would handle
// hundreds. What all its lines share travels in the headers (as for a line, with
// `firstLineNo` and `lineCount` instead of `lineNo` and `byteOffset`); the body
// is a table of `lineCount` entries of 16 bytes, each
//   byte offset of the line in its file   (unsigned 48-bit, big-endian)
//   its real length when cut, else 0      (unsigned 48-bit, big-endian: truncatedFrom)
//   the length of its bytes in this body  (unsigned 32-bit, big-endian)
// followed by the lines' bytes, one after the other, exactly as read. Line i is
// line number firstLineNo + i; consumers store it with the same key, (run, line
// number), as the line message of the same line, so either framing gives the same rows.

export const LOG_BATCH_TYPE = MESSAGE_TYPES.logBatch;
export const LOG_BATCH_CONTENT_TYPE = 'application/vnd.sluice.log-batch';
/** The layout above; a consumer refuses any other (dead-lettered with the reason). */
export const LOG_BATCH_VERSION = 1;
export const LOG_BATCH_ENTRY_BYTES = 16;
/** Most lines one batch message may carry (a decoder refuses more before reading the table). */
export const LOG_BATCH_MAX_LINES = 100_000;
const U48_MAX = 2 ** 48 - 1;

// Not strict: a retried or replayed message carries the runtime's x-sluice-* headers too.
export const LogBatchHeadersSchema = z.object({
  v: z.literal(LOG_BATCH_VERSION),
  runId: z.uuid(),
  source: SourceSchema,
  firstLineNo: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER - LOG_BATCH_MAX_LINES),
  lineCount: z.number().int().min(1).max(LOG_BATCH_MAX_LINES),
  file: z.string().min(1).max(1024).optional(),
  alerts: z.literal(false).optional(),
});
export type LogBatchMeta = Omit<z.infer<typeof LogBatchHeadersSchema>, 'v' | 'lineCount' | 'firstLineNo'>;

/** One line of a batch, as the trigger read it. */
export interface BatchLine {
  line: Buffer;
  byteOffset: number;
  truncatedFrom?: number | undefined;
}

/** The body of a batch message holding `lines` (consecutive, in file order). */
export function encodeLogBatch(lines: readonly BatchLine[]): Buffer {
  const table = lines.length * LOG_BATCH_ENTRY_BYTES;
  let size = table;
  for (const l of lines) size += l.line.length;
  const body = Buffer.allocUnsafe(size);
  let at = table;
  lines.forEach((l, i) => {
    const e = i * LOG_BATCH_ENTRY_BYTES;
    body.writeUIntBE(l.byteOffset, e, 6);
    body.writeUIntBE(l.truncatedFrom ?? 0, e + 6, 6);
    body.writeUInt32BE(l.line.length, e + 12);
    at += l.line.copy(body, at);
  });
  return body;
}

/** Publish options of a batch message whose first line is number `firstLineNo`. */
export function logBatchMessage(meta: LogBatchMeta, firstLineNo: number, lineCount: number): PublishOptions {
  return {
    messageId: `${meta.runId}:${firstLineNo}+${lineCount}`,
    contentType: LOG_BATCH_CONTENT_TYPE,
    type: LOG_BATCH_TYPE,
    headers: { v: LOG_BATCH_VERSION, ...meta, firstLineNo, lineCount },
  };
}

/** The lines of a batch message; throws PoisonMessageError naming the first thing wrong with it. */
export function decodeLogBatch(headers: unknown, body: Buffer): LogLine[] {
  const parsed = LogBatchHeadersSchema.safeParse(headers ?? {});
  if (!parsed.success) throw new PoisonMessageError(`invalid log-batch headers: ${describeIssues(parsed.error)}`);
  const { v: _v, firstLineNo, lineCount, ...meta } = parsed.data;
  const table = lineCount * LOG_BATCH_ENTRY_BYTES;
  if (body.length < table) {
    throw new PoisonMessageError(`log-batch body is ${body.length} bytes, shorter than its table of ${lineCount} lines (${table} bytes): truncated?`);
  }
  const lines: LogLine[] = new Array(lineCount);
  let at = table;
  let end = -1; // where the previous line ends in its file (its offset + its real length)
  for (let i = 0; i < lineCount; i++) {
    const e = i * LOG_BATCH_ENTRY_BYTES;
    const byteOffset = body.readUIntBE(e, 6);
    const truncatedFrom = body.readUIntBE(e + 6, 6);
    const length = body.readUInt32BE(e + 12);
    const lineNo = firstLineNo + i;
    if (byteOffset <= end) {
      throw new PoisonMessageError(`log-batch line ${lineNo} starts at byte ${byteOffset}, not after the previous line (which ends at byte ${end})`);
    }
    if (truncatedFrom !== 0 && truncatedFrom <= length) {
      throw new PoisonMessageError(`log-batch line ${lineNo} is marked cut from ${truncatedFrom} bytes but holds ${length}`);
    }
    if (at + length > body.length) {
      throw new PoisonMessageError(`log-batch line ${lineNo} (${length} bytes at body byte ${at}) runs past the end of the ${body.length}-byte body: truncated?`);
    }
    const real = truncatedFrom || length;
    if (byteOffset + real > U48_MAX) throw new PoisonMessageError(`log-batch line ${lineNo} ends past byte 2^48`);
    end = byteOffset + real;
    const l: LogLine = { ...meta, lineNo, byteOffset, line: body.subarray(at, at + length) };
    if (truncatedFrom !== 0) l.truncatedFrom = truncatedFrom;
    lines[i] = l;
    at += length;
  }
  if (at !== body.length) {
    throw new PoisonMessageError(`log-batch body has ${body.length - at} bytes after its ${lineCount} lines`);
  }
  return lines;
}

/**
 * What log-lake and log-clean consume: a line message (type log.line, or none: messages from
 * before the type) as one line, a batch message (type log.batch) as its lines, in order. A
 * message that cannot be decoded is refused whole, with the reason (dead-lettered by the runtime).
 */
export const logLinesContract: Contract<LogLine[]> = {
  name: 'log-line',
  decode(msg) {
    const type = msg.properties.type as unknown;
    if (type === LOG_BATCH_TYPE) return decodeLogBatch(msg.properties.headers, msg.content);
    if (type === undefined || type === null || type === LOG_LINE_TYPE) return [logLineContract.decode(msg)];
    throw new PoisonMessageError(`unknown message type ${JSON.stringify(type)} (expected ${LOG_LINE_TYPE} or ${LOG_BATCH_TYPE})`);
  },
};
