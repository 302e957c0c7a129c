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
