// The consumer's rules, without the broker: what a batch is, and what becomes of each of its
// messages once the handler has ended. Plain data in, a decision out; no I/O, no timers, no
// amqplib types, so every rule is tested in test/unit/consumer-policy.test.ts.
//
// The driver (consumer.ts) walks a batch through these steps:
//   begin            -> run the handler on the whole batch (nothing to run: settle at once)
//   afterBatch       -> the handler's result, or its error, says which items failed; a throw that is
//                       not an outage, on several items, splits the batch (run each item alone)
//   afterEach        -> the items' results, one call each
//   (an outage)      -> probe the dependency when it can be asked, else hold
//   afterProbe       -> it answers: the batch itself is at fault, split it; it does not: hold
//   (hold)           -> wait the step's delay, run the whole batch again (no attempt counted)
//   settle           -> per message: ack, retry (next attempt) or dead-letter (with the reason)
import { PermanentError, errorMessage, isUnavailable } from '../errors.ts';
import { backoff, type BackoffOptions } from '../timing.ts';

/** How one call of the handler ended. */
export type Ending =
  | { kind: 'returned'; failures: readonly { index: number; error: unknown }[] }
  | { kind: 'threw'; error: unknown };

/** Failed items of the batch the handler received, by index, in the order they were reported. */
export type Failures = Map<number, unknown>;

/** Why the batch is run item by item. */
export type SplitReason = 'batch-failed' | 'dependency-answers';

export type Step =
  /** Call the handler with every decoded item. */
  | { kind: 'run-batch' }
  /** Call the handler once per item. `error`: what the whole batch failed with. */
  | { kind: 'run-each'; reason: SplitReason; error: unknown }
  /** Something looks like an outage: ask the dependency whether it answers. */
  | { kind: 'probe'; cause: unknown }
  /** An outage: keep the batch unacked, wait `delayMs`, then run it whole again. `hold` counts from 1. */
  | { kind: 'hold'; hold: number; delayMs: number; cause: unknown }
  /** Done: settle every message (see `settle`). */
  | { kind: 'settle'; failures: Failures };

/** What the policy needs to know about the batch between steps. */
export interface Round {
  /** Decoded items, i.e. what the handler receives. */
  size: number;
  /** Holds so far (0 until the first). */
  holds: number;
  /** Whether the driver can ask the dependency (a probe was configured). */
  canProbe: boolean;
  /** Jitter of the hold delays, in [0, 1) (the driver passes Math.random); unset: none. */
  random?: () => number;
}

/** A message of the batch as the policy sees it: its attempt, and whether it decoded. */
export type Entry = { attempt: number; decoded: true } | { attempt: number; decoded: false; error: unknown };

export type Decision =
  | { kind: 'ack' }
  /** To `Q.retry`; `attempt` is the one the copy will be (this one + 1). Its delay is the retry queue's TTL. */
  | { kind: 'retry'; attempt: number; reason: string }
  /** To `Q.dlq`; `attempts` spent so far. */
  | { kind: 'dead'; attempts: number; reason: string };

/** An item whose write drops the dependency's connection while the dependency answers: its fault, not an outage. */
export class BatchBrokeConnectionError extends Error {
  override name = 'BatchBrokeConnectionError';
}

/** Holds back off from 0.5 s to 30 s, less up to a fifth at random: consumers held by one outage do not all retry at once. */
const HOLD_BACKOFF: BackoffOptions = { baseMs: 500, factor: 2, maxMs: 30_000, jitter: 0.2 };

/** The first step of a batch of `size` decoded items. */
export function begin(size: number): Step {
  return size === 0 ? { kind: 'settle', failures: new Map() } : { kind: 'run-batch' };
}

/** After the handler ran on the whole batch. */
export function afterBatch(ending: Ending, round: Round): Step {
  if (ending.kind === 'returned') return afterFailures(failuresOf(ending.failures), round);
  const { error } = ending;
  // An outage fails every item alike; one lone item's error is its own.
  if (isUnavailable(error) || round.size === 1) return afterFailures(new Map(Array.from({ length: round.size }, (_, i) => [i, error])), round);
  return { kind: 'run-each', reason: 'batch-failed', error };
}

/** After the handler ran once per item (`endings[i]` for item i). */
export function afterEach(endings: readonly Ending[], reason: SplitReason, round: Round): Step {
  const failures: Failures = new Map();
  endings.forEach((ending, i) => {
    if (ending.kind === 'returned') {
      const f = ending.failures[0];
      if (f) failures.set(i, f.error);
    } else if (reason === 'dependency-answers' && isUnavailable(ending.error)) {
      failures.set(i, new BatchBrokeConnectionError(`the dependency answers, but this message's write failed with: ${errorMessage(ending.error)}`));
    } else {
      failures.set(i, ending.error);
    }
  });
  // Split because the dependency answered: what failed now is the items' doing, never held again.
  return reason === 'dependency-answers' ? { kind: 'settle', failures } : afterFailures(failures, round);
}

/** After the probe: an answering dependency means the batch broke the connection itself. */
export function afterProbe(answers: boolean, cause: unknown, round: Round): Step {
  return answers ? { kind: 'run-each', reason: 'dependency-answers', error: cause } : hold(cause, round);
}

/** A dependency is down: that says nothing about the messages, so hold the batch (no attempt spent). */
function afterFailures(failures: Failures, round: Round): Step {
  const cause = [...failures.values()].find(isUnavailable);
  if (cause === undefined) return { kind: 'settle', failures };
  return round.canProbe ? { kind: 'probe', cause } : hold(cause, round);
}

function hold(cause: unknown, round: Round): Step {
  const n = round.holds + 1;
  return { kind: 'hold', hold: n, delayMs: holdDelayMs(n, round.random), cause };
}

/** Backoff of the n-th hold (from 1): 0.5 s, 1 s, 2 s, ... up to 30 s; `random` takes up to a fifth off (default: nothing). */
export function holdDelayMs(hold: number, random: () => number = () => 0): number {
  return backoff(hold, HOLD_BACKOFF, random);
}

function failuresOf(list: readonly { index: number; error: unknown }[]): Failures {
  const failures: Failures = new Map();
  for (const f of list) failures.set(f.index, f.error);
  return failures;
}

/**
 * The fate of every message of the batch. `failures` are indexed like the handler's items,
 * which are the decoded entries in order; an entry that did not decode goes to the DLQ.
 */
export function settle(entries: readonly Entry[], failures: Failures, limits: { maxAttempts: number; contract: string }): Decision[] {
  let item = 0;
  return entries.map((entry): Decision => {
    if (!entry.decoded) return { kind: 'dead', attempts: entry.attempt, reason: `${limits.contract}: ${errorMessage(entry.error)}` };
    const err = failures.get(item++);
    if (err === undefined) return { kind: 'ack' };
    if (err instanceof PermanentError) return { kind: 'dead', attempts: entry.attempt, reason: `${err.name}: ${err.message}` };
    if (entry.attempt >= limits.maxAttempts) return { kind: 'dead', attempts: entry.attempt, reason: `gave up after ${entry.attempt} attempts: ${errorMessage(err)}` };
    return { kind: 'retry', attempt: entry.attempt + 1, reason: errorMessage(err) };
  });
}

// What a batch is.

export const ATTEMPT_HEADER = 'x-sluice-attempt';

/** Attempts so far, counting our retries (`x-sluice-attempt`) and the broker's redeliveries (quorum queues count them). */
export function attemptOf(headers: Readonly<Record<string, unknown>> | undefined): number {
  const h = headers ?? {};
  const retries = Number(h[ATTEMPT_HEADER] ?? 1);
  const redeliveries = Number(h['x-delivery-count'] ?? 0);
  return Math.max(1, retries) + (Number.isFinite(redeliveries) ? redeliveries : 0);
}

/**
 * Prefetch and batch size. AMQP's prefetch counts messages, so a byte budget is kept by the count:
 * room for the batch being handled and the next one filling up (2 x batchSize), cut to
 * prefetchMaxBytes / messageMaxBytes; a batch is then at most half the prefetch, so it never
 * waits for more messages than the prefetch lets in.
 */
export function batchLimits(o: { batchSize: number; prefetchMaxBytes?: number; messageMaxBytes?: number }): { prefetch: number; batchSize: number } {
  const prefetch = Math.max(1, Math.min(o.batchSize * 2, Math.floor((o.prefetchMaxBytes ?? Infinity) / (o.messageMaxBytes ?? 1))));
  return { prefetch, batchSize: Math.max(1, Math.min(o.batchSize, Math.floor(prefetch / 2))) };
}

/** A full batch is handled at once; a smaller one waits for the batch timer. */
export function batchIsFull(count: number, bytes: number, limits: { batchSize: number; batchMaxBytes: number }): boolean {
  return count >= limits.batchSize || bytes >= limits.batchMaxBytes;
}

/** How many of the buffered bodies (their sizes, in delivery order) the next batch takes: up to batchSize and batchMaxBytes, one at least. */
export function nextBatchLength(sizes: readonly number[], limits: { batchSize: number; batchMaxBytes: number }): number {
  let n = 0;
  let bytes = 0;
  while (n < sizes.length && n < limits.batchSize) {
    const size = sizes[n]!;
    if (n > 0 && bytes + size > limits.batchMaxBytes) break;
    bytes += size;
    n++;
  }
  return n;
}
