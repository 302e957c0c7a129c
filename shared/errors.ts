// Small error classes with a `name` and a `cause`, so logs and dead-letter
// headers say what kind of failure happened.

/** The message can never succeed: do not retry it, send it to the dead-letter queue. */
export class PermanentError extends Error {
  override name = 'PermanentError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The message body or headers do not match the queue's contract. */
export class PoisonMessageError extends PermanentError {
  override name = 'PoisonMessageError';
}

/** One or more environment variables are missing or invalid. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.problems = problems;
  }
}

export const errorMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** A dependency cannot be reached right now; the message itself is fine. */
export class UnavailableError extends Error {
  override name = 'UnavailableError';
}

// Connection-level failures of MySQL (mysql2 marks them `fatal`) and of sockets in general.
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST', 'PROTOCOL_SEQUENCE_TIMEOUT', 'ER_CON_COUNT_ERROR', 'ER_SERVER_SHUTDOWN',
]);

// Errors that close the connection but come from the statement, not from an outage.
const STATEMENT_CODES = new Set(['ER_NET_PACKET_TOO_LARGE']);

/** True when `err` (or its cause) says a dependency is down rather than that the work is wrong. */
export function isUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof UnavailableError) return true;
    const { code, fatal } = e as { code?: string; fatal?: boolean };
    if (code !== undefined && STATEMENT_CODES.has(code)) return false;
    if (fatal === true || (code !== undefined && UNAVAILABLE_CODES.has(code))) return true;
  }
  return false;
}
