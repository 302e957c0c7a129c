// What the command ends with: exit codes scripts can rely on (docs/cli.md).

export const EXIT = {
  ok: 0,
  /** The API refused the request (a 4xx or 5xx, shown as its message), or the watched run failed. */
  failed: 1,
  /** The command line is wrong (unknown command or option, a bad value). */
  usage: 2,
  /** Nothing answers at SLUICE_URL (or it does not speak the API). */
  unreachable: 3,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** A bad command line that the parser itself cannot see (a value out of range, a missing pair of options). */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The API answered with an error: `message` is the API's own. */
export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, message: string, body: unknown = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** No HTTP answer at all: refused, timed out, DNS, or not the API. */
export class UnreachableError extends Error {
  override name = 'UnreachableError';
  readonly url: string;
  readonly reason: string;
  constructor(url: string, reason: string) {
    super(
      `cannot reach the sluice API at ${url}: ${reason}.\n` +
        'Is the system running (`npm start` in the project folder, or `docker compose up`)? ' +
        'Is SLUICE_URL right (default http://127.0.0.1:3000, the trigger\'s HTTP_PORT)?',
    );
    this.url = url;
    this.reason = reason;
  }
}

/** A watched run that ended `failed` (its reason is in the message). */
export class RunFailedError extends Error {
  override name = 'RunFailedError';
}

export function exitCodeOf(err: unknown): ExitCode {
  if (err instanceof UsageError) return EXIT.usage;
  if (err instanceof UnreachableError) return EXIT.unreachable;
  return EXIT.failed;
}

/** The `cause` chain's codes and messages, for "connect ECONNREFUSED 127.0.0.1:3000" rather than "fetch failed". */
export function describeCause(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  while (e instanceof Error && parts.length < 4) {
    const here: Error = e instanceof AggregateError && e.errors[0] instanceof Error ? e.errors[0] : e;
    if (here.message && here.message !== 'fetch failed') parts.push(here.message);
    e = here.cause;
  }
  return parts.join(': ') || String(err);
}
