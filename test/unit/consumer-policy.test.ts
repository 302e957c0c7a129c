// The consumer's batch policy without a broker: every rule test/integration/consumer-runtime.test.ts
// and db-outage.test.ts check against RabbitMQ and MySQL, here as plain data. `walk` plays the
// driver: it follows the policy's steps with a fake handler and a fake probe, and records them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BatchBrokeConnectionError, afterBatch, afterEach, afterProbe, attemptOf, batchIsFull, batchLimits, begin, holdDelayMs, nextBatchLength, settle,
  type Decision, type Ending, type Entry, type Round, type Step,
} from '../../shared/amqp/batch-policy.ts';
import { PermanentError, PoisonMessageError, UnavailableError } from '../../shared/errors.ts';

interface Msg {
  body: string;
  attempt?: number;
  /** Set: the message does not decode; this is what the contract threw. */
  undecodable?: Error;
}

interface Walk {
  decisions: Decision[];
  /** The steps the policy took, by kind (`hold:<ms>` for a hold). */
  trace: string[];
  /** Every call of the handler: the bodies it received. */
  calls: string[][];
}

/**
 * Drive a batch through the policy, as consumer.ts does. `handler` gets the decoded bodies and
 * returns the failed ones by index, or throws; `probe` says whether the dependency answers
 * (undefined: no probe configured).
 */
function walk(msgs: Msg[], handler: (bodies: string[]) => { index: number; error: unknown }[], opts: { probe?: () => boolean; maxAttempts?: number; maxSteps?: number } = {}): Walk {
  const entries: Entry[] = msgs.map((m) => (m.undecodable ? { attempt: m.attempt ?? 1, decoded: false, error: m.undecodable } : { attempt: m.attempt ?? 1, decoded: true }));
  const bodies = msgs.filter((m) => !m.undecodable).map((m) => m.body);
  const round: Round = { size: bodies.length, holds: 0, canProbe: opts.probe !== undefined };
  const trace: string[] = [];
  const calls: string[][] = [];
  const call = (list: string[]): Ending => {
    calls.push(list);
    try {
      return { kind: 'returned', failures: handler(list) };
    } catch (error) {
      return { kind: 'threw', error };
    }
  };
  let step: Step = begin(bodies.length);
  for (let n = 0; step.kind !== 'settle'; n++) {
    if (n > (opts.maxSteps ?? 50)) throw new Error(`no settlement after ${n} steps: ${trace.join(' ')}`);
    trace.push(step.kind === 'run-each' ? `run-each:${step.reason}` : step.kind === 'hold' ? `hold:${step.delayMs}` : step.kind);
    if (step.kind === 'run-batch') step = afterBatch(call(bodies), round);
    else if (step.kind === 'run-each') step = afterEach(bodies.map((b) => call([b])), step.reason, round);
    else if (step.kind === 'probe') step = afterProbe(opts.probe!(), step.cause, round);
    else (round.holds = step.hold), (step = { kind: 'run-batch' });
  }
  trace.push('settle');
  return { decisions: settle(entries, step.failures, { maxAttempts: opts.maxAttempts ?? 3, contract: 'text' }), trace, calls };
}

const ok = () => [];
const lost = () => Object.assign(new Error('Connection lost: The server closed the connection.'), { code: 'PROTOCOL_CONNECTION_LOST', fatal: true });
const kinds = (w: Walk) => w.decisions.map((d) => d.kind);

test('a batch the handler stores is acked, every message', () => {
  const w = walk([{ body: 'a' }, { body: 'b' }, { body: 'c' }], ok);
  assert.deepEqual(w.decisions, [{ kind: 'ack' }, { kind: 'ack' }, { kind: 'ack' }]);
  assert.deepEqual(w.trace, ['run-batch', 'settle']);
  assert.deepEqual(w.calls, [['a', 'b', 'c']], 'one call for the batch');
});

test('a message that does not decode goes to the DLQ with the contract and the reason, and never reaches the handler', () => {
  const w = walk([{ body: 'a' }, { body: 'poison-pill', undecodable: new PoisonMessageError('text starts with poison') }, { body: 'b' }], (bodies) =>
    // Indexes are the handler's: 'b' is 1 although it is the batch's third message.
    bodies.map((b, index) => ({ b, index })).filter(({ b }) => b === 'b').map(({ index }) => ({ index, error: new Error('b failed') })),
  );
  assert.deepEqual(w.calls, [['a', 'b']]);
  assert.deepEqual(w.decisions, [
    { kind: 'ack' },
    { kind: 'dead', attempts: 1, reason: 'text: text starts with poison' },
    { kind: 'retry', attempt: 2, reason: 'b failed' },
  ]);
});

test('a batch of undecodable messages only: nothing to run, all dead-lettered', () => {
  const w = walk([{ body: 'x', undecodable: new Error('not JSON') }], () => assert.fail('the handler must not be called'));
  assert.deepEqual(w.trace, ['settle']);
  assert.deepEqual(w.decisions, [{ kind: 'dead', attempts: 1, reason: 'text: not JSON' }]);
});

test('a permanent error (and a poison item the handler names) goes to the DLQ at once, with its name', () => {
  const w = walk([{ body: 'permanent' }, { body: 'ok' }, { body: 'poison' }], () => [
    { index: 0, error: new PermanentError('cannot ever work') },
    { index: 2, error: new PoisonMessageError('field x is missing') },
  ]);
  assert.deepEqual(w.decisions, [
    { kind: 'dead', attempts: 1, reason: 'PermanentError: cannot ever work' },
    { kind: 'ack' },
    { kind: 'dead', attempts: 1, reason: 'PoisonMessageError: field x is missing' },
  ]);
});

test('a transient failure is retried with the next attempt; attempts exhausted go to the DLQ', () => {
  const fail = () => [{ index: 0, error: new Error('still broken') }];
  assert.deepEqual(walk([{ body: 'x', attempt: 1 }], fail).decisions, [{ kind: 'retry', attempt: 2, reason: 'still broken' }]);
  assert.deepEqual(walk([{ body: 'x', attempt: 2 }], fail).decisions, [{ kind: 'retry', attempt: 3, reason: 'still broken' }]);
  assert.deepEqual(walk([{ body: 'x', attempt: 3 }], fail).decisions, [{ kind: 'dead', attempts: 3, reason: 'gave up after 3 attempts: still broken' }]);
  // Redeliveries count too: an attempt past the limit (a consumer that crashed) is dead at once.
  assert.deepEqual(walk([{ body: 'x', attempt: 7 }], fail, { maxAttempts: 5 }).decisions, [{ kind: 'dead', attempts: 7, reason: 'gave up after 7 attempts: still broken' }]);
  // A message that succeeds on its last attempt is acked.
  assert.deepEqual(walk([{ body: 'x', attempt: 3 }], ok).decisions, [{ kind: 'ack' }]);
});

test('a batch that throws is split; the bad message fails alone and its neighbours are stored', () => {
  const w = walk([{ body: 'a' }, { body: 'explode' }, { body: 'b' }], (bodies) => {
    if (bodies.length > 1 && bodies.includes('explode')) throw new Error('batch exploded');
    return bodies[0] === 'explode' ? [{ index: 0, error: new Error('explodes alone too') }] : [];
  });
  assert.deepEqual(w.trace, ['run-batch', 'run-each:batch-failed', 'settle']);
  assert.deepEqual(w.calls, [['a', 'explode', 'b'], ['a'], ['explode'], ['b']]);
  assert.deepEqual(w.decisions, [{ kind: 'ack' }, { kind: 'retry', attempt: 2, reason: 'explodes alone too' }, { kind: 'ack' }]);
});

test('a split item that throws fails with its error; a lone message that throws is not split', () => {
  const w = walk([{ body: 'a' }, { body: 'bad', attempt: 3 }], (bodies) => {
    if (bodies.includes('bad')) throw new PermanentError('bad row');
    return [];
  });
  assert.deepEqual(w.decisions, [{ kind: 'ack' }, { kind: 'dead', attempts: 3, reason: 'PermanentError: bad row' }]);
  const lone = walk([{ body: 'bad' }], () => {
    throw new Error('boom');
  });
  assert.deepEqual(lone.trace, ['run-batch', 'settle']);
  assert.deepEqual(lone.decisions, [{ kind: 'retry', attempt: 2, reason: 'boom' }]);
});

test('an outage holds the batch with a growing backoff and spends no attempt', () => {
  let down = 3; // the handler fails three times, then the database is back
  const handler = () => {
    if (down-- > 0) throw lost();
    return [];
  };
  const w = walk([{ body: 'a', attempt: 2 }, { body: 'b', attempt: 2 }], handler, { probe: () => down < 0, maxAttempts: 2 });
  assert.deepEqual(w.trace, ['run-batch', 'probe', 'hold:500', 'run-batch', 'probe', 'hold:1000', 'run-batch', 'probe', 'hold:2000', 'run-batch', 'settle']);
  assert.deepEqual(kinds(w), ['ack', 'ack'], 'held messages on their last attempt are stored, not dead-lettered');
  assert.ok(w.calls.every((c) => c.length === 2), 'a held batch is run whole, never split');
});

test('without a probe an outage is held at once; a reported unavailable item holds the whole batch too', () => {
  let calls = 0;
  const w = walk([{ body: 'a' }, { body: 'b' }], () => (calls++ === 0 ? [{ index: 1, error: new UnavailableError('SES is down') }] : []));
  assert.deepEqual(w.trace, ['run-batch', 'hold:500', 'run-batch', 'settle']);
  assert.deepEqual(kinds(w), ['ack', 'ack']);
});

test('a split that meets an outage holds the whole batch', () => {
  let down = true;
  const w = walk([{ body: 'a' }, { body: 'b' }], (bodies) => {
    if (bodies.length > 1) throw new Error('batch exploded');
    if (down && bodies[0] === 'b') throw ((down = false), lost());
    return [];
  }, { probe: () => false });
  assert.deepEqual(w.trace, ['run-batch', 'run-each:batch-failed', 'probe', 'hold:500', 'run-batch', 'run-each:batch-failed', 'settle']);
  assert.deepEqual(kinds(w), ['ack', 'ack']);
});

test('hold backoff: 0.5 s doubling, at most 30 s', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => holdDelayMs(n)), [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  const round: Round = { size: 1, holds: 9, canProbe: false };
  const cause = lost();
  assert.deepEqual(afterBatch({ kind: 'threw', error: cause }, round), { kind: 'hold', hold: 10, delayMs: 30_000, cause });
});

test('hold backoff with the round\'s random source: up to a fifth less, never more', () => {
  assert.equal(holdDelayMs(3, () => 0.5), 1800);
  assert.equal(holdDelayMs(20, () => 0.999), 30_000 * (1 - 0.2 * 0.999));
  const cause = lost();
  const round: Round = { size: 1, holds: 1, canProbe: false, random: () => 0.5 };
  assert.deepEqual(afterBatch({ kind: 'threw', error: cause }, round), { kind: 'hold', hold: 2, delayMs: 900, cause });
});

test('a batch over max_allowed_packet (connection dropped while the database answers) is split, never held', () => {
  // MySQL drops the connection of a statement over max_allowed_packet: the batch of 8 breaks it, one row does not.
  const w = walk(Array.from({ length: 8 }, (_, i) => ({ body: `blob-${i}` })), (bodies) => {
    if (bodies.length > 1) throw lost();
    return [];
  }, { probe: () => true });
  assert.deepEqual(w.trace, ['run-batch', 'probe', 'run-each:dependency-answers', 'settle']);
  assert.deepEqual(kinds(w), Array(8).fill('ack'));
});

test('after such a split, an item that still drops the connection is its own failure, not an outage', () => {
  const w = walk([{ body: 'small' }, { body: 'huge', attempt: 1 }, { body: 'huge-last', attempt: 3 }], (bodies) => {
    if (bodies.length > 1 || bodies[0]!.startsWith('huge')) throw lost();
    return [];
  }, { probe: () => true });
  assert.deepEqual(w.trace, ['run-batch', 'probe', 'run-each:dependency-answers', 'settle'], 'no second hold');
  const [small, huge, last] = w.decisions;
  assert.deepEqual(small, { kind: 'ack' });
  assert.equal(huge!.kind, 'retry');
  assert.match((huge as { reason: string }).reason, /^the dependency answers, but this message's write failed with: Connection lost/);
  assert.equal(last!.kind, 'dead');
  assert.match((last as { reason: string }).reason, /^gave up after 3 attempts: the dependency answers/);
  const step = afterEach([{ kind: 'threw', error: lost() }], 'dependency-answers', { size: 1, holds: 0, canProbe: true });
  assert.ok(step.kind === 'settle' && step.failures.get(0) instanceof BatchBrokeConnectionError);
});

test('a statement error that says so (ER_NET_PACKET_TOO_LARGE) is not an outage: the batch is split at once', () => {
  const tooLarge = () => Object.assign(new Error('Got a packet bigger than max_allowed_packet'), { code: 'ER_NET_PACKET_TOO_LARGE', fatal: true });
  const w = walk([{ body: 'a' }, { body: 'b' }], (bodies) => {
    if (bodies.length > 1) throw tooLarge();
    return [];
  }, { probe: () => assert.fail('no probe for a statement error') });
  assert.deepEqual(w.trace, ['run-batch', 'run-each:batch-failed', 'settle']);
  assert.deepEqual(kinds(w), ['ack', 'ack']);
});

test('afterProbe: an answering dependency splits, a silent one holds', () => {
  const round: Round = { size: 3, holds: 2, canProbe: true };
  const cause = lost();
  assert.deepEqual(afterProbe(true, cause, round), { kind: 'run-each', reason: 'dependency-answers', error: cause });
  assert.deepEqual(afterProbe(false, cause, round), { kind: 'hold', hold: 3, delayMs: 2000, cause });
});

test('failures are keyed by index as the handler reported them; undefined errors and unknown indexes change nothing', () => {
  const round: Round = { size: 2, holds: 0, canProbe: false };
  const step = afterBatch({ kind: 'returned', failures: [{ index: 1, error: new Error('first') }, { index: 1, error: new Error('second') }, { index: 5, error: new Error('out of range') }] }, round);
  assert.equal(step.kind, 'settle');
  const decisions = settle([{ attempt: 1, decoded: true }, { attempt: 1, decoded: true }], (step as { failures: Map<number, unknown> }).failures, { maxAttempts: 3, contract: 'c' });
  assert.deepEqual(decisions, [{ kind: 'ack' }, { kind: 'retry', attempt: 2, reason: 'second' }]);
  assert.deepEqual(settle([{ attempt: 1, decoded: true }], new Map([[0, undefined]]), { maxAttempts: 3, contract: 'c' }), [{ kind: 'ack' }]);
});

test('attempts count our retries and the broker redeliveries', () => {
  assert.equal(attemptOf(undefined), 1);
  assert.equal(attemptOf({}), 1);
  assert.equal(attemptOf({ 'x-sluice-attempt': 3 }), 3);
  assert.equal(attemptOf({ 'x-delivery-count': 2 }), 3);
  assert.equal(attemptOf({ 'x-sluice-attempt': 2, 'x-delivery-count': 1 }), 3);
  assert.equal(attemptOf({ 'x-sluice-attempt': 0, 'x-delivery-count': 'junk' }), 1);
});

test('a batch is cut at batchSize and batchMaxBytes, one message at least', () => {
  const limits = { batchSize: 4, batchMaxBytes: 100 };
  assert.equal(nextBatchLength([], limits), 0);
  assert.equal(nextBatchLength([10, 10, 10, 10, 10, 10], limits), 4);
  assert.equal(nextBatchLength([30, 30, 30, 30], limits), 3, '120 bytes would be over 100');
  assert.equal(nextBatchLength([500, 1], limits), 1, 'an over-size message makes a batch alone');
  assert.equal(nextBatchLength([1, 500], limits), 1);
  assert.equal(nextBatchLength([50, 50, 1], limits), 2, 'exactly the bound fits');
  assert.equal(batchIsFull(4, 0, limits), true);
  assert.equal(batchIsFull(1, 100, limits), true);
  assert.equal(batchIsFull(3, 99, limits), false);
});

test('the memory budget is a prefetch count, and a batch is half of it', () => {
  // The integration test's figures: 320 KiB budget over 32 KiB bodies = a prefetch of 10, batches of 5.
  assert.deepEqual(batchLimits({ batchSize: 100, prefetchMaxBytes: 320 * 1024, messageMaxBytes: 32 * 1024 }), { prefetch: 10, batchSize: 5 });
  assert.deepEqual(batchLimits({ batchSize: 100 }), { prefetch: 200, batchSize: 100 });
  assert.deepEqual(batchLimits({ batchSize: 100, prefetchMaxBytes: 1, messageMaxBytes: 1024 }), { prefetch: 1, batchSize: 1 });
});
