// Out-of-order readings through the real broker (issue 10): a reading that goes through a retry
// queue comes back after later readings of its session. Here the test publishes a simulated run
// the way the trigger does, but holds some readings back and publishes each of them well after
// later ones of its session (and publishes some readings twice, as a redelivery would). ev-store
// must keep every reading exactly once, and ev-analytics must raise exactly the events that the
// in-order stream raises: the simulator's injected faults, no more, no less.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { FAULT_TYPES, readingProblems, type EvEvent } from '../../shared/contracts/ev.ts';
import { EV_PARTITIONS } from '../../infra/topology.ts';
import { loadCatalog } from '../../functions/trigger/ev-catalog.ts';
import { planRun, simItemMessage, simulateRun, type SimOptions } from '../../functions/trigger/ev-simulator.ts';
import { createDetector, isOpen, type RunClock, type SessionState } from '../../functions/ev-analytics/detector.ts';
import type { AnalyticsMessage } from '../../functions/ev-analytics/contract.ts';
import { AMQP_URL, count, ensureBuilt, resetEnvironment, startFunction, stopAll, waitFor } from './harness.ts';

let pool: Pool;

before(async () => {
  ensureBuilt();
  pool = await resetEnvironment();
  await startFunction('ev-analytics');
  await startFunction('ev-store');
});
after(async () => {
  await stopAll();
  await pool?.end();
});

/** The events of the in-order stream, by the detector alone (one state per session, one clock per run, as each partition has). */
function inOrderEvents(messages: AnalyticsMessage[]): EvEvent[] {
  const detector = createDetector();
  const states = new Map<string, SessionState>();
  let clock: RunClock | undefined;
  const events: EvEvent[] = [];
  for (const m of messages) {
    if (m.kind === 'reading') {
      const out = detector.onReading(states.get(m.reading.sessionId), m.reading, clock);
      states.set(m.reading.sessionId, out.state);
      events.push(...out.events);
    } else if (m.kind === 'quiet') {
      const out = detector.onQuiet(states.get(m.quiet.sessionId), m.quiet, clock);
      if (out.changed) states.set(m.quiet.sessionId, out.state!);
      events.push(...out.events);
    } else {
      const out = detector.onClock(m.clock, [...states.values()].filter(isOpen), clock);
      clock = out.clock;
      for (const s of out.states) states.set(s.sessionId, s);
      events.push(...out.events);
    }
  }
  return events;
}

describe('out-of-order readings', () => {
  test('readings published after later ones of their session: every one stored once, detections equal the in-order run', async () => {
    const opts: SimOptions = { runId: randomUUID(), sessions: 16, seed: 21, sampleIntervalS: 30, faultRate: 1, startTime: new Date('2026-02-01T00:00:00Z'), catalog: loadCatalog() };
    const plans = planRun(opts);
    const messages = [...simulateRun(opts, plans)];
    const readings = messages.flatMap((m) => (m.kind === 'reading' ? [m.reading] : []));
    const lastSeq = new Map<string, number>();
    for (const r of readings) lastSeq.set(r.sessionId, r.seq);

    // Every 61st message, when it is a reading, is held back and published 150 messages later
    // (several sample intervals, dozens of its session's readings, as after a retry queue's
    // delay). So is the last reading of every other session: its Finishing (or, for a charger
    // that goes silent, its last word) then comes after clocks well past the offline threshold,
    // and after the session's quiet notice. Every 89th reading is published twice.
    const order: AnalyticsMessage[] = [];
    const held: { at: number; m: AnalyticsMessage }[] = [];
    const lastHeld = new Set(plans.filter((_, i) => i % 2 === 0).map((p) => p.sessionId));
    let late = 0;
    let lastLate = 0;
    let twice = 0;
    messages.forEach((m, k) => {
      const isLast = m.kind === 'reading' && m.reading.seq === lastSeq.get(m.reading.sessionId);
      if (m.kind === 'reading' && (k % 61 === 0 || (isLast && lastHeld.has(m.reading.sessionId)))) {
        held.push({ at: k + 150, m });
        late++;
        if (isLast) lastLate++;
      } else {
        order.push(m);
        if (m.kind === 'reading' && k % 89 === 0) order.push(m), twice++;
      }
      while (held.length > 0 && held[0]!.at <= k) order.push(held.shift()!.m);
    });
    // A held reading due after the end still comes before the final clock, as the trigger only
    // ends the run once everything it published was confirmed.
    const final = order.pop()!;
    assert.equal(final.kind, 'clock');
    order.push(...held.map((h) => h.m), final);
    assert.ok(late >= 20 && twice >= 20 && lastLate >= 6, `${late} late (${lastLate} last readings), ${twice} twice`);

    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      for (const m of order) {
        const { exchange, routingKey, content, options } = simItemMessage(m);
        ch.publish(exchange, routingKey, content, { ...options, persistent: true });
      }
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }

    const runId = opts.runId;
    const expected = inOrderEvents(messages);
    let last = '';
    await waitFor('the run to be stored and analysed', async () => {
      const snapshot = [
        await count(pool, "SELECT COUNT(*) FROM ev_analytics_clock WHERE run_id = ? AND JSON_EXTRACT(clock, '$.final') = true", [runId]),
        await count(pool, 'SELECT COUNT(*) FROM ev_readings WHERE run_id = ?', [runId]),
        await count(pool, 'SELECT COUNT(*) FROM ev_events WHERE run_id = ?', [runId]),
      ];
      const steady = JSON.stringify(snapshot) === last;
      last = JSON.stringify(snapshot);
      return snapshot[0] === EV_PARTITIONS && snapshot[1] === readings.length && snapshot[2]! >= expected.length && steady;
    }, 300_000, 1_000);

    // ev-store: every reading, once, with its own values.
    const [stored] = (await pool.query('SELECT session_id, seq, soc_percent, energy_wh FROM ev_readings WHERE run_id = ? ORDER BY session_id, seq', [runId])) as [
      { session_id: string; seq: number; soc_percent: number; energy_wh: number }[],
      unknown,
    ];
    const want = [...readings].sort((a, b) => (a.sessionId === b.sessionId ? a.seq - b.seq : a.sessionId < b.sessionId ? -1 : 1));
    assert.deepEqual(
      stored.map((r) => `${r.session_id} ${r.seq} ${r.soc_percent} ${r.energy_wh}`),
      want.map((r) => `${r.sessionId} ${r.seq} ${r.socPercent} ${r.energyWh}`),
    );
    // ... and the session summaries are those of the in-order run: ends by seq, not by arrival.
    const [sessions] = (await pool.query('SELECT session_id, first_seq, last_seq, start_soc, end_soc FROM ev_sessions WHERE run_id = ?', [runId])) as [
      { session_id: string; first_seq: number; last_seq: number; start_soc: number; end_soc: number }[],
      unknown,
    ];
    assert.equal(sessions.length, plans.length);
    for (const s of sessions) {
      const valid = readings.filter((r) => r.sessionId === s.session_id && readingProblems(r).length === 0);
      const [first, end] = [valid[0]!, valid.at(-1)!];
      assert.deepEqual([s.first_seq, s.last_seq, s.start_soc, s.end_soc], [first.seq, end.seq, first.socPercent, end.socPercent], `session ${s.session_id}`);
    }

    // ev-analytics: the same events as in order, hence the simulator's truth and nothing else.
    const [events] = (await pool.query('SELECT event_id, session_id, type, details FROM ev_events WHERE run_id = ? ORDER BY event_id', [runId])) as [
      { event_id: string; session_id: string; type: string; details: unknown }[],
      unknown,
    ];
    assert.deepEqual(events.map((e) => e.event_id), expected.map((e) => e.eventId).sort());
    const full = new Map(events.map((e) => [e.event_id, (typeof e.details === 'string' ? JSON.parse(e.details) : e.details) as EvEvent]));
    // An offline verdict waits for the session's last reading: when that came late, the verdict
    // comes at a later clock, so when and how long silent differ; the rest is as in order.
    const when = (e: EvEvent) => {
      if (e.type !== 'charge.offline') return e;
      const { silentForS, watermark, finalClock, ...details } = e.details;
      assert.ok(Number(silentForS) >= Number(details['thresholdS']) && typeof watermark === 'string' && typeof finalClock === 'boolean', `${e.eventId}: ${JSON.stringify(e.details)}`);
      return { ...e, ts: '', summary: e.summary.replace(/no reading for [^(]+\(/, 'no reading for … ('), details };
    };
    for (const e of expected) assert.deepEqual(when(full.get(e.eventId)!), when(e), `event ${e.eventId} as in order`);
    const faults = new Set<string>(FAULT_TYPES);
    assert.deepEqual(
      new Set(events.filter((e) => faults.has(e.type)).map((e) => `${e.session_id} ${e.type}`)),
      new Set(plans.map((p) => `${p.sessionId} ${p.fault}`)),
      'precision and recall 1 against the injected faults',
    );
    // Nothing waits for a missing reading any more.
    const [states] = (await pool.query('SELECT state FROM ev_analytics_state WHERE run_id = ?', [runId])) as [{ state: unknown }[], unknown];
    for (const { state } of states) {
      const s = (typeof state === 'string' ? JSON.parse(state) : state) as SessionState;
      assert.deepEqual([s.pending.length, s.applied], [0, s.lastSeq], `session ${s.sessionId}`);
    }
  });
});
