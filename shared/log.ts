// JSON-lines logging (pino). One logger per function, named after it.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { fn: name, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
