// The alert rules and the incident state machine of log-alerts (functions/log-alerts/rules.ts),
// against an in-memory view of one source's minutes.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MINUTE_MS, NO_INCIDENT, advance, errorRateBreach, isComplete, scannerCandidate, scannerOffenders, silenceBySource, silenceStep,
  type IncidentState, type Latest, type MinuteCounts, type MinuteStatus,
} from '../../functions/log-alerts/rules.ts';

const T0 = Date.UTC(2024, 9, 10, 13, 0);
const M = (i: number) => T0 + i * MINUTE_MS;
const THRESHOLDS = { ratio: 0.05, minRequests: 20 };
const ok = (requests = 30): MinuteCounts => ({ requests, s4xx: 0, s5xx: 0 });
const bad = (requests = 40, s5xx = 4): MinuteCounts => ({ requests, s4xx: 0, s5xx });

/** One source's minutes (the aggregates) and the breaching minutes already counted (log_alerts_breach), kept across passes. */
function source(rows: Record<number, MinuteCounts>) {
  const recorded = new Set<number>();
  let ids = 0;
  let state: IncidentState = NO_INCIDENT;
  return {
    rows,
    recorded,
    get state() {
      return state;
    },
    /** One evaluation pass over the changed minutes (indexes), the source's latest minute being `latest`. */
    async pass(changed: number[], latest: Latest | null, clearMinutes = 1) {
      const asked: number[] = [];
      const result = await advance<MinuteCounts>(
        state,
        changed.map(M),
        {
          async status(minute): Promise<MinuteStatus<MinuteCounts>> {
            asked.push(minute);
            if (!isComplete(minute, latest)) return { kind: 'incomplete' };
            const row = rows[(minute - T0) / MINUTE_MS];
            return row && errorRateBreach(row, THRESHOLDS) ? { kind: 'breach', detail: row } : { kind: 'clean' };
          },
          async recorded(minutes) {
            return new Set(minutes.filter((m) => recorded.has(m)));
          },
        },
        { clearMinutes, newId: () => `incident-${++ids}` },
      );
      for (const r of result.records) recorded.add(r.minute);
      state = result.state;
      return { ...result, asked };
    },
  };
}
const upTo = (i: number, settled = false): Latest => ({ minute: M(i), settled });
const brief = (ts: { type: string; incident: string; minute?: number; at?: number; since?: number; lastBreach?: number }[]) =>
  ts.map((t) => (t.type === 'fired' ? `fired ${t.incident} @${(t.minute! - T0) / MINUTE_MS}` : `resolved ${t.incident} ${(t.since! - T0) / MINUTE_MS}..${(t.lastBreach! - T0) / MINUTE_MS} @${(t.at! - T0) / MINUTE_MS}`));

describe('error_rate: the minute predicate', () => {
  test('breaches above the ratio with enough requests', () => {
    assert.equal(errorRateBreach({ requests: 40, s4xx: 0, s5xx: 4 }, THRESHOLDS), true);
    assert.equal(errorRateBreach({ requests: 1000, s4xx: 0, s5xx: 51 }, THRESHOLDS), true);
  });
  test('not with fewer requests than the minimum, however bad', () => {
    assert.equal(errorRateBreach({ requests: 19, s4xx: 0, s5xx: 19 }, THRESHOLDS), false);
    assert.equal(errorRateBreach({ requests: 0, s4xx: 0, s5xx: 0 }, { ratio: 0, minRequests: 0 }), false);
  });
  test('exactly at the thresholds: 20 requests count, a ratio of exactly 5 % does not', () => {
    assert.equal(errorRateBreach({ requests: 20, s4xx: 0, s5xx: 1 }, THRESHOLDS), false, '1 of 20 = 5 %: not above');
    assert.equal(errorRateBreach({ requests: 20, s4xx: 0, s5xx: 2 }, THRESHOLDS), true, '2 of 20 = 10 % with exactly 20 requests');
    assert.equal(errorRateBreach({ requests: 100, s4xx: 0, s5xx: 5 }, THRESHOLDS), false);
    assert.equal(errorRateBreach({ requests: 100, s4xx: 0, s5xx: 6 }, THRESHOLDS), true);
    assert.equal(errorRateBreach({ requests: 30, s4xx: 0, s5xx: 3 }, { ratio: 0.1, minRequests: 20 }), false, '3/30 is exactly 0.1');
  });
});

describe('completeness (event time)', () => {
  test('a minute is complete once the source has data after it, or, the latest, once it settled', () => {
    assert.equal(isComplete(M(3), upTo(4)), true);
    assert.equal(isComplete(M(4), upTo(4)), false);
    assert.equal(isComplete(M(4), upTo(4, true)), true);
    assert.equal(isComplete(M(5), upTo(4, true)), false, 'after the latest minute: not yet');
    assert.equal(isComplete(M(1), null), false);
  });
});

describe('error_rate: incidents', () => {
  test('a breach fires once with its minute, and resolves when the next minute is complete and clean', async () => {
    const s = source({ 0: ok(), 1: ok(), 2: ok(), 3: bad(), 4: ok(), 5: ok() });
    const r = await s.pass([0, 1, 2, 3, 4, 5], upTo(5));
    assert.deepEqual(brief(r.transitions), ['fired incident-1 @3', 'resolved incident-1 3..3 @5']);
    assert.deepEqual(r.records, [{ minute: M(3), incident: 'incident-1' }]);
    assert.equal(r.state.incident, null);
    assert.equal(r.state.pending, M(5), 'the latest minute, not settled, is judged again later');
    const again = await s.pass([3, 4, 5], upTo(5, true));
    assert.deepEqual(again.transitions, [], 'the same minutes judged again (a second evaluator, the slack window): nothing new');
  });

  test('an incomplete minute is neither fired nor used to resolve', async () => {
    const s = source({ 0: ok(), 1: bad() });
    const first = await s.pass([0, 1], upTo(1));
    assert.deepEqual(first.transitions, [], 'minute 1 is the latest and has not settled');
    assert.equal(first.state.pending, M(1));
    const settled = await s.pass([], upTo(1, true));
    assert.deepEqual(brief(settled.transitions), ['fired incident-1 @1'], 'the pending minute, once settled, fires');
    s.rows[2] = ok();
    const next = await s.pass([2], upTo(2));
    assert.deepEqual(next.transitions, [], 'minute 2 clean but incomplete: still open');
    assert.equal(next.state.incident, 'incident-1');
    s.rows[3] = ok(1);
    const moved = await s.pass([3], upTo(3));
    assert.deepEqual(brief(moved.transitions), ['resolved incident-1 1..1 @3'], 'event time moved past minute 2: resolved');
  });

  test('consecutive breaching minutes are one incident; a gap without requests is clean', async () => {
    const s = source({ 3: bad(), 4: bad(100, 50), 5: bad(), 8: ok() });
    const r = await s.pass([3, 4, 5, 8], upTo(8));
    assert.deepEqual(brief(r.transitions), ['fired incident-1 @3', 'resolved incident-1 3..5 @7']);
    assert.deepEqual(r.records.map((x) => (x.minute - T0) / MINUTE_MS), [3, 4, 5]);
  });

  test('two incidents in one pass (a replay), in minute order', async () => {
    const s = source({ 2: ok(), 3: bad(), 4: ok(), 5: ok(), 6: bad(), 7: ok(), 8: ok() });
    const r = await s.pass([2, 3, 4, 5, 6, 7, 8], upTo(8));
    assert.deepEqual(brief(r.transitions), ['fired incident-1 @3', 'resolved incident-1 3..3 @5', 'fired incident-2 @6', 'resolved incident-2 6..6 @8']);
  });

  test('ALERT_CLEAR_MINUTES=2: one clean minute between breaches does not resolve', async () => {
    const s = source({ 3: bad(), 4: ok(), 5: bad(), 6: ok(), 7: ok(), 8: ok() });
    const r = await s.pass([3, 4, 5, 6, 7, 8], upTo(8), 2);
    assert.deepEqual(brief(r.transitions), ['fired incident-1 @3', 'resolved incident-1 3..5 @8']);
  });

  test('a late update that tips an earlier clean minute over opens a new incident; a breaching minute already counted does not', async () => {
    const s = source({ 3: bad(), 4: ok(), 5: ok(), 6: ok() });
    assert.deepEqual(brief((await s.pass([3, 4, 5, 6], upTo(6))).transitions), ['fired incident-1 @3', 'resolved incident-1 3..3 @5']);
    // Late lines for minute 3 (still breaching): it was counted in incident-1.
    s.rows[3] = bad(60, 9);
    assert.deepEqual((await s.pass([3], upTo(6))).transitions, []);
    // Late lines make minute 4 (the clean one that resolved incident-1) breach: a new incident, over at once.
    s.rows[4] = bad(40, 10);
    const late = await s.pass([4], upTo(6));
    assert.deepEqual(brief(late.transitions), ['fired incident-2 @4', 'resolved incident-2 4..4 @6']);
    assert.deepEqual(late.records, [{ minute: M(4), incident: 'incident-2' }]);
  });

  test('late lines of a minute inside the open incident join it', async () => {
    const s = source({ 3: ok(), 4: bad(), 5: bad(), 6: ok() });
    assert.deepEqual(brief((await s.pass([3, 4, 5, 6], upTo(6))).transitions), ['fired incident-1 @4']);
    s.rows[3] = bad(50, 10);
    const r = await s.pass([3], upTo(6));
    assert.deepEqual(r.transitions, []);
    assert.deepEqual(r.records, [{ minute: M(3), incident: 'incident-1' }]);
    assert.equal(r.state.since, M(3));
  });
});

describe('scanner', () => {
  test('only a minute with more 4xx than the threshold is a candidate; offenders are the clients over it, most first', () => {
    assert.equal(scannerCandidate({ requests: 100, s4xx: 50, s5xx: 0 }, 50), false);
    assert.equal(scannerCandidate({ requests: 100, s4xx: 51, s5xx: 0 }, 50), true);
    const clients = [
      { clientIp: '10.0.0.2', count: 50 },
      { clientIp: '10.0.0.9', count: 51 },
      { clientIp: '10.0.0.1', count: 80 },
      { clientIp: '10.0.0.3', count: 80 },
    ];
    assert.deepEqual(scannerOffenders(clients, 50).map((c) => c.clientIp), ['10.0.0.1', '10.0.0.3', '10.0.0.9']);
  });
  test('a scanner minute opens an incident like any breach', async () => {
    const rows: Record<number, { requests: number; s4xx: number; s5xx: number; clients: { clientIp: string; count: number }[] }> = {
      0: { requests: 70, s4xx: 60, s5xx: 0, clients: [{ clientIp: '10.0.0.9', count: 60 }] },
      1: { requests: 70, s4xx: 55, s5xx: 0, clients: [{ clientIp: '10.0.0.9', count: 30 }, { clientIp: '10.0.0.8', count: 25 }] },
    };
    const latest = upTo(1, true);
    const r = await advance(NO_INCIDENT, [M(0), M(1)], {
      async status(minute) {
        if (!isComplete(minute, latest)) return { kind: 'incomplete' };
        const row = rows[(minute - T0) / MINUTE_MS];
        if (!row || !scannerCandidate(row, 50)) return { kind: 'clean' };
        const offenders = scannerOffenders(row.clients, 50);
        return offenders.length ? { kind: 'breach', detail: offenders } : { kind: 'clean' };
      },
      async recorded() {
        return new Set();
      },
    }, { clearMinutes: 1, newId: () => 'scan-1' });
    assert.deepEqual(r.transitions.map((t) => t.type), ['fired', 'resolved'], 'minute 1 has 55 4xx but no single client over 50: clean');
    assert.deepEqual(r.transitions[0]!.type === 'fired' && r.transitions[0]!.detail, [{ clientIp: '10.0.0.9', count: 60 }]);
  });
});

describe('silent (wall clock)', () => {
  const now = Date.UTC(2024, 9, 10, 14, 0);
  test('a source is silent once none of its follow runs moved for ALERT_SILENT_S', () => {
    const view = silenceBySource([
      { runId: 'b', source: 'shop', published: 10, movedAt: now - 400_000 },
      { runId: 'a', source: 'shop', published: 5, movedAt: now - 299_000 },
      { runId: 'c', source: 'blog', published: 7, movedAt: now - 300_000 },
    ], now, 300_000);
    assert.deepEqual({ ...view.get('shop') }, { source: 'shop', lastMoved: now - 299_000, published: 15, runIds: ['a', 'b'], silentForMs: 299_000, silent: false });
    assert.equal(view.get('blog')!.silent, true, 'exactly ALERT_SILENT_S: silent');
  });
  test('fires once, resolves when lines flow again or when the runs stop', () => {
    const silent = silenceBySource([{ runId: 'a', source: 'shop', published: 5, movedAt: now - 301_000 }], now, 300_000).get('shop');
    const fired = silenceStep(NO_INCIDENT, silent, () => 'quiet-1');
    assert.equal(fired.transition?.type, 'fired');
    assert.equal(fired.state.incident, 'quiet-1');
    assert.equal(fired.state.since, now - 301_000);
    assert.equal(silenceStep(fired.state, silent, () => 'x').transition, null, 'still silent: nothing new');
    const flowing = silenceBySource([{ runId: 'a', source: 'shop', published: 9, movedAt: now }], now, 300_000).get('shop');
    const back = silenceStep(fired.state, flowing, () => 'x');
    assert.deepEqual(back.transition && { type: back.transition.type, reason: back.transition.type === 'resolved' && back.transition.reason, incident: back.transition.incident }, { type: 'resolved', reason: 'flowing', incident: 'quiet-1' });
    assert.equal(back.state.incident, null);
    const stopped = silenceStep(fired.state, undefined, () => 'x');
    assert.equal(stopped.transition?.type === 'resolved' && stopped.transition.reason, 'stopped');
    assert.equal(silenceStep(NO_INCIDENT, undefined, () => 'x').transition, null, 'no runs, no incident: nothing');
  });
});
