// Sends what the outbox holds, at most once per row:
//   1. find groups whose first row is due (owner mails at once, operator mails after the group window);
//   2. claim the group's pending rows (status 'sending') in their own commit - only then send;
//   3. SES accepted -> 'sent'; SES refused for now (throttled, not reached) -> back to
//      'pending' with a backoff, up to SES_MAX_ATTEMPTS; refused for good (4xx) -> 'failed';
//      an answer that may have come after SES accepted (5xx, timeout, connection reset after
//      sending) -> 'unknown': it may have gone out, so it is never sent again; it is counted
//      and logged (dedupe keys, never the address or body) for a person to check.
// A crash between claim and answer leaves rows in 'sending'; after the lease they turn
// 'unknown' too. So a crash can cost at most the email in flight, and never sends one twice.
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../shared/log.ts';
import { backoff, periodic, sleep as realSleep, type Periodic } from '../../shared/timing.ts';
import type { EvEvent } from '../../shared/contracts/ev.ts';
import type { AlertEvent } from '../../shared/contracts/alerts.ts';
import { alertEmail, operatorEmail, ownerEmail, type Email } from './render.ts';
import type { Role } from './rules.ts';

interface ClaimedRowBase {
  dedupeKey: string;
  role: Role;
  recipient: string;
  attempts: number;
}
/** A claimed outbox row: an EV event (`kind` 'ev' or absent) or a web-log alert. */
export type ClaimedRow = ClaimedRowBase & ({ kind?: 'ev'; event: EvEvent } | { kind: 'alert'; event: AlertEvent });

export interface OutboxStore {
  dueGroups(now: Date, limit: number): Promise<string[]>;
  /** Atomically move the group's pending rows to 'sending' under `batchId`; returns them. */
  claim(groupKey: string, batchId: string, now: Date): Promise<ClaimedRow[]>;
  markSent(batchId: string, sesMessageId: string, now: Date): Promise<void>;
  release(batchId: string, retryAt: Date, error: string): Promise<void>;
  /** The batch ends here: 'failed' (SES refused it for good) or 'unknown' (no answer: it may have gone out). */
  markFailed(batchId: string, status: 'failed' | 'unknown', error: string): Promise<void>;
  /** Rows left in 'sending' since before `claimedBefore` (their sender died) become 'unknown'; returns their dedupe keys. */
  expireClaims(claimedBefore: Date): Promise<string[]>;
}

export type SendOutcome = 'retry' | 'failed' | 'unknown';

export class SendError extends Error {
  override name = 'SendError';
  readonly outcome: SendOutcome;
  constructor(message: string, outcome: SendOutcome, options?: { cause?: unknown }) {
    super(message, options);
    this.outcome = outcome;
  }
}

export interface EmailSender {
  /** Resolves with SES's message id; throws SendError saying whether a retry is safe. */
  send(email: Email): Promise<string>;
}

/** Where an outbox row ended up after a send (or a lease expiry); 'retry' means back to pending. */
export type RowOutcome = 'sent' | 'retry' | 'failed' | 'unknown';

/** SES error texts may quote the recipient: logs get `<address>` instead. */
export const redactAddresses = (text: string) => text.replace(/[^\s@<>()[\]"',;:]+@[^\s@<>()[\]"',;:]+/g, '<address>');

export interface DispatcherOptions {
  store: OutboxStore;
  sender: EmailSender;
  log: Logger;
  operatorAddress: string;
  maxPerSecond: number;
  maxAttempts: number;
  /** First retry delay; doubles with every attempt (up to an hour), less up to a fifth at random. */
  backoffMs?: number;
  leaseMs?: number;
  /** Counts rows by outcome (the sluice_email_outbox_total metric). */
  count?: (outcome: RowOutcome, rows: number) => void;
  now?: () => Date;
  sleep?: (ms: number) => Promise<void>;
}

const RETRY_MAX_MS = 3_600_000;

export function createDispatcher(opts: DispatcherOptions) {
  const now = opts.now ?? (() => new Date());
  const sleep = opts.sleep ?? ((ms: number) => realSleep(ms).then(() => {}));
  const backoffMs = opts.backoffMs ?? 1_000;
  const render = renderFor(opts.operatorAddress);
  const leaseMs = opts.leaseMs ?? 5 * 60_000;
  const count = opts.count ?? (() => {});
  // Token bucket: `maxPerSecond` sends per second on average, bursts of at most that many.
  let tokens = opts.maxPerSecond;
  let refilledAt = now().getTime();
  async function takeToken(): Promise<void> {
    for (;;) {
      const t = now().getTime();
      tokens = Math.min(opts.maxPerSecond, tokens + ((t - refilledAt) / 1000) * opts.maxPerSecond);
      refilledAt = t;
      if (tokens >= 1) return void tokens--;
      await sleep(Math.ceil(((1 - tokens) / opts.maxPerSecond) * 1000));
    }
  }

  async function sendGroup(groupKey: string): Promise<number> {
    const batchId = randomUUID();
    const rows = await opts.store.claim(groupKey, batchId, now());
    if (rows.length === 0) return 0; // another instance took it
    const email = render(rows);
    await takeToken();
    let id: string;
    try {
      id = await opts.sender.send(email);
    } catch (err) {
      await settleFailure(groupKey, batchId, rows, err);
      return 0;
    }
    // SES has the email: from here on, never send it again, whatever the database says.
    for (let attempt = 1; ; attempt++) {
      try {
        await opts.store.markSent(batchId, id, now());
        count('sent', rows.length);
        return 1;
      } catch (err) {
        if (attempt >= 5) {
          opts.log.error({ groupKey, dedupeKeys: rows.map((r) => r.dedupeKey), sesMessageId: id, err: String(err) }, 'email sent but not recorded; its rows stay claimed and expire as unknown');
          return 1;
        }
        await sleep(200 * attempt);
      }
    }
  }

  async function settleFailure(groupKey: string, batchId: string, rows: ClaimedRow[], err: unknown): Promise<void> {
    // Anything but a SendError is an error nobody placed: it may have come after SES accepted.
    const outcome = err instanceof SendError ? err.outcome : 'unknown';
    const message = err instanceof SendError ? err.message : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    const attempts = Math.max(...rows.map((r) => r.attempts));
    const dedupeKeys = rows.map((r) => r.dedupeKey);
    // Never the address or the body in a log line: the group key and dedupe keys say which mail.
    const logged = { groupKey, dedupeKeys, attempts, err: redactAddresses(message) };
    if (outcome === 'retry' && attempts < opts.maxAttempts) {
      const delay = backoff(attempts, { baseMs: backoffMs, maxMs: RETRY_MAX_MS });
      opts.log.warn({ ...logged, delay: Math.round(delay) }, 'SES refused the email for now; will retry');
      await opts.store.release(batchId, new Date(now().getTime() + delay), message);
      count('retry', rows.length);
    } else if (outcome === 'unknown') {
      opts.log.warn(logged, 'SES may have accepted the email before this error: marked unknown, never resent; check with SES before sending it by hand');
      await opts.store.markFailed(batchId, 'unknown', message);
      count('unknown', rows.length);
    } else {
      opts.log.error(logged, outcome === 'retry' ? 'SES kept refusing the email; failed after the last attempt' : 'SES rejected the email: failed');
      await opts.store.markFailed(batchId, 'failed', message);
      count('failed', rows.length);
    }
  }

  let stopped = false;

  /** One pass over the due groups; returns the number of emails SES accepted. */
  async function tick(): Promise<number> {
    const expired = await opts.store.expireClaims(new Date(now().getTime() - leaseMs));
    if (expired.length > 0) {
      opts.log.warn({ dedupeKeys: expired }, 'outbox rows were left in sending by a sender that died: marked unknown, never resent');
      count('unknown', expired.length);
    }
    let sent = 0;
    for (;;) {
      const groups = await opts.store.dueGroups(now(), 100);
      if (groups.length === 0 || stopped) return sent;
      for (const g of groups) if (!stopped) sent += await sendGroup(g);
    }
  }

  let loop: Periodic | null = null;
  return {
    tick,
    start(pollMs: number) {
      // Back off while the database is unhappy, up to 10 s; at once when woken meanwhile.
      loop = periodic(tick, { name: 'outbox pass', everyMs: pollMs, backoff: { baseMs: pollMs * 2, maxMs: Math.max(10_000, pollMs) }, log: opts.log });
    },
    /** New rows are due: look now instead of at the next poll. */
    wake() {
      if (!stopped) loop?.wake();
    },
    async stop() {
      stopped = true;
      await loop?.stop();
    },
  };
}

/** The email of a claimed group: a web-log alert is its own group (one row); EV rows go to their owner, or as one operator digest. */
function renderFor(operatorAddress: string) {
  return (rows: ClaimedRow[]): Email => {
    const first = rows[0]!;
    if (first.kind === 'alert') return alertEmail(first.recipient, first.event);
    const events = rows.flatMap((r) => (r.kind === 'alert' ? [] : [r.event]));
    return first.role === 'owner' ? ownerEmail(first.event) : operatorEmail(operatorAddress, events);
  };
}
