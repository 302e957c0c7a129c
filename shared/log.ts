// JSON-lines logging (pino). One logger per function, named after it.
// No log line carries a secret: fields named like one are censored, and the
// password of any URL in a logged string (a field or the message) is masked.
import { pino, type Logger, type LoggerOptions } from 'pino';
import { redactUrl } from './config.ts';

export type { Logger };

/** Fields censored wherever pino finds them (one level deep for `*.x`). */
export const REDACT_PATHS = [
  'password', '*.password', 'passwords', '*.passwords',
  'token', '*.token', 'secret', '*.secret',
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers.cookie', 'headers.cookie',
];

/** A string that may hold a URL with credentials (cheap test first: most log strings have no "://" nor "@"). */
const scrub = (v: unknown): unknown => (typeof v === 'string' && (v.includes('@') || v.includes('=')) ? redactUrl(v) : v);

/** Masks URL passwords in the top-level string fields of a log object, and in those of its object fields. */
function scrubFields(obj: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | null = null;
  for (const key of Object.keys(obj)) {
    const value = obj[key];
    let clean = scrub(value);
    if (clean === value && value !== null && typeof value === 'object' && !Array.isArray(value) && !Buffer.isBuffer(value)) {
      let inner: Record<string, unknown> | null = null;
      for (const k of Object.keys(value)) {
        const v = (value as Record<string, unknown>)[k];
        const c = scrub(v);
        if (c !== v) (inner ??= { ...(value as Record<string, unknown>) })[k] = c;
      }
      if (inner) clean = inner;
    }
    if (clean !== value) (out ??= { ...obj })[key] = clean;
  }
  return out ?? obj;
}

/** pino options shared by every logger of the project: secrets are censored or masked. */
export const redactionOptions: Pick<LoggerOptions, 'redact' | 'formatters' | 'hooks'> = {
  redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  formatters: { log: scrubFields },
  hooks: {
    logMethod(args, method) {
      // The message and its printf arguments (the merging object is handled by formatters.log).
      for (let i = 0; i < args.length; i++) if (typeof args[i] === 'string') args[i] = scrub(args[i]) as string;
      return method.apply(this, args);
    },
  },
};

export function createLogger(name: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { fn: name, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime, ...redactionOptions });
}
