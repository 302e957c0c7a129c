// A log line travels as its raw bytes in the body (nothing re-encoded, invalid
// UTF-8 included); where it came from travels in the headers.
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
