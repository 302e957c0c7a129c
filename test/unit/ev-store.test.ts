// ev-store handlers against a hand-written EvStore that records every call.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { BatchContext, BatchItem } from '../../shared/amqp/consumer.ts';
import type { EvEvent, EvEventType, EvReading } from '../../shared/contracts/ev.ts';
import { loadCatalog } from '../../functions/trigger/ev-catalog.ts';
import { planRun, sessionReadings, simulateRun, type SessionPlan, type SimOptions } from '../../functions/trigger/ev-simulator.ts';
import { createEventsHandler, createReadingsHandler, type EvStore, type ReadingRow, type SessionPatch } from '../../functions/ev-store/handler.ts';

const ctx: BatchContext = { log: pino({ level: 'silent' }), queue: 'ev.store' };
const catalog = loadCatalog();
const START = new Date('2026-01-01T00:00:00Z');
const simOpts = (over: Partial<SimOptions> = {}): SimOptions => ({ runId: 'run-s', sessions: 12, seed: 11, sampleIntervalS: 30, faultRate: 0, startTime: START, catalog, ...over });

const PUBLISHED_AT = Date.parse('2026-01-01T00:00:05.250Z');
/** Readings carry the publisher's timestamp; an item with an odd seq has none (publishers may omit it). */
const item = <T>(body: T): BatchItem<T> => {
  const seq = (body as { seq?: unknown }).seq;
  const publishedAt = typeof seq === 'number' && seq % 2 === 1 ? undefined : PUBLISHED_AT;
  return { body, messageId: undefined, routingKey: 'ev.reading.x', redelivered: false, publishedAt, attempt: 1 };
};

interface RecordingStore extends EvStore {
  readings: ReadingRow[][];
  events: EvEvent[][];
  patches: SessionPatch[][];
}

function recordingStore(): RecordingStore {
  const s: RecordingStore = {
    readings: [],
    events: [],
    patches: [],
    async insertReadings(rows) {
      s.readings.push(structuredClone(rows));
    },
    async insertEvents(events) {
      s.events.push(structuredClone(events));
    },
    async mergeSessions(patches) {
      s.patches.push(structuredClone(patches));
    },
  };
  return s;
}

async function storeReadings(readings: EvReading[]): Promise<RecordingStore> {
  const store = recordingStore();
  await createReadingsHandler({ store })(readings.map(item), ctx);
  return store;
}

function onlyPatch(store: RecordingStore): SessionPatch {
  assert.equal(store.patches.length, 1);
  assert.equal(store.patches[0]!.length, 1, 'one patch per session');
  return store.patches[0]![0]!;
}

function planWith(fault: SessionPlan['fault'], over: Partial<SimOptions> = {}): { plan: SessionPlan; readings: EvReading[] } {
  const opts = simOpts({ sessions: 60, faultRate: fault === null ? 0 : 1, ...over });
  const plan = planRun(opts).find((p) => p.fault === fault);
  assert.ok(plan, `no ${fault} session in the plan`);
  return { plan, readings: [...sessionReadings(plan, opts)] };
}

/** Deterministic shuffle (seeded LCG Fisher-Yates). */
function shuffled<T>(list: T[], seed = 1): T[] {
  const out = [...list];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

// =================================================================================================

describe('ev-store readings handler', () => {
  test('stores every reading; invalid ones carry their problems and stay out of the session patch', async () => {
    const { readings } = planWith(null);
    const last = readings.at(-1)!;
    // An impossible reading with a higher seq than any valid one, and one in the middle.
    const late: EvReading = { ...last, seq: last.seq + 1, messageId: `${last.messageId}-bad`, socPercent: 140, chargingState: 'Charging' };
    const mid: EvReading = { ...readings[3]!, seq: 3, powerW: -5000, temperatureC: 400 };
    const batch = [...readings.slice(0, 3), mid, ...readings.slice(4), late];
    const store = await storeReadings(batch);

    assert.equal(store.readings.length, 1);
    const rows = store.readings[0]!;
    assert.equal(rows.length, batch.length, 'every reading is stored');
    assert.deepEqual(rows.map((r) => r.messageId), batch.map((r) => r.messageId));
    rows.forEach((r, i) => {
      const { problems: _p, publishedAt, ...reading } = r;
      assert.deepEqual(reading, batch[i], 'the row is the reading plus problems and publishedAt');
      assert.deepEqual(publishedAt, r.seq % 2 === 1 ? null : new Date(PUBLISHED_AT), `publishedAt of seq ${r.seq}`);
    });
    const bad = rows.filter((r) => r.problems !== null);
    assert.equal(bad.length, 2);
    assert.match(bad[0]!.problems!, /powerW -5000 is negative; temperatureC 400 outside -60\.\.150/);
    assert.match(bad[1]!.problems!, /socPercent 140 outside 0\.\.100/);
    for (const r of rows.filter((x) => x.problems === null)) assert.ok(readings.some((v) => v.messageId === r.messageId));

    const patch = onlyPatch(store);
    assert.equal(patch.last!.seq, last.seq, 'the invalid late reading does not become the last');
    assert.equal(patch.last!.soc, last.socPercent);
    assert.equal(patch.status, 'stopped', 'an invalid reading changes no status');
  });

  test('a batch of only invalid readings yields no session patch', async () => {
    const { readings } = planWith(null);
    const store = await storeReadings(readings.slice(2, 5).map((r) => ({ ...r, socPercent: -3 })));
    assert.equal(store.readings[0]!.length, 3);
    assert.ok(store.readings[0]!.every((r) => r.problems === 'socPercent -3 outside 0..100'));
    assert.deepEqual(store.patches, [[]]);
  });

  test('first and last come from the lowest and highest seq, whatever the order in the batch', async () => {
    const { plan, readings } = planWith(null);
    const inOrder = onlyPatch(await storeReadings(readings));
    const mixed = onlyPatch(await storeReadings(shuffled(readings, 7)));
    const reversed = onlyPatch(await storeReadings([...readings].reverse()));
    assert.deepEqual(mixed, inOrder);
    assert.deepEqual(reversed, inOrder);

    const first = readings[0]!;
    const last = readings.at(-1)!;
    assert.deepEqual(inOrder.first, { seq: 0, soc: first.socPercent, at: new Date(first.timestamp) });
    assert.deepEqual(inOrder.last, { seq: last.seq, soc: last.socPercent, energyKWh: last.energyWh / 1000, at: new Date(last.timestamp), ended: true });
    assert.equal(inOrder.sessionId, plan.sessionId);
    assert.equal(inOrder.chargePointId, plan.chargePointId);
    assert.equal(inOrder.ownerEmail, plan.owner.email);
    assert.equal(inOrder.chargeLimit, plan.chargeLimitPercent);
    assert.equal(inOrder.vin, plan.vin);
    assert.equal(inOrder.location, plan.location);
  });

  test('a reading that comes back after later batches (a retry) is stored, its patch carries its own seq', async () => {
    const { readings } = planWith(null);
    const k = 5;
    const store = recordingStore();
    const handler = createReadingsHandler({ store });
    await handler(readings.filter((_, i) => i !== k).map(item), ctx);
    await handler([item(readings[k]!)], ctx);
    const stored = store.readings.flat().map((r) => r.seq);
    assert.deepEqual([...stored].sort((a, b) => a - b), readings.map((r) => r.seq), 'every reading stored once, the late one too');
    const [whole, late] = [store.patches[0]![0]!, store.patches[1]![0]!];
    assert.equal(whole.first!.seq, 0);
    assert.equal(whole.last!.seq, readings.at(-1)!.seq);
    // The merge keeps the lowest first_seq and the highest last_seq: seq 5 moves neither end.
    assert.deepEqual([late.first!.seq, late.last!.seq], [k, k]);
    assert.equal(late.last!.ended, false);
    assert.equal(late.status, 'charging', 'the merge only moves a status up: a late Charging reading cannot reopen a stopped session');
  });

  test('a part of a session: first/last of that part, still charging, not ended', async () => {
    const { readings } = planWith(null);
    const part = readings.slice(5, 12);
    const p = onlyPatch(await storeReadings(shuffled(part, 3)));
    assert.equal(p.first!.seq, 5);
    assert.equal(p.last!.seq, 11);
    assert.equal(p.last!.ended, false);
    assert.equal(p.status, 'charging');
  });

  test('a healthy simulated run: one patch per session, every session ended (completion is the analytics\' call)', async () => {
    const opts = simOpts();
    const plans = planRun(opts);
    assert.ok(plans.every((p) => p.fault === null));
    const readings = [...simulateRun(opts, plans)].flatMap((it) => (it.kind === 'reading' ? [it.reading] : []));
    const store = await storeReadings(readings);
    const patches = store.patches[0]!;
    assert.equal(patches.length, plans.length);
    assert.deepEqual(new Set(patches.map((p) => p.sessionId)), new Set(plans.map((p) => p.sessionId)));
    for (const p of patches) {
      assert.equal(p.status, 'stopped', p.sessionId);
      assert.equal(p.last!.ended, true);
      assert.ok(p.last!.soc >= p.chargeLimit - 1);
    }
  });

  test('a Finishing reading ends the session as stopped, wherever the SoC is', async () => {
    const { readings } = planWith(null);
    const limit = readings[0]!.chargeLimitPercent;
    const body = readings.slice(0, 6);
    const finishing = (soc: number): EvReading => ({ ...body.at(-1)!, seq: 6, chargingState: 'Finishing', socPercent: soc, powerW: 0, currentA: 0 });
    assert.equal(onlyPatch(await storeReadings([...body, finishing(limit - 5)])).status, 'stopped');
    assert.equal(onlyPatch(await storeReadings([...body, finishing(limit - 2)])).status, 'stopped');
    assert.equal(onlyPatch(await storeReadings([...body, finishing(limit - 1)])).status, 'stopped');
  });

  test('a Faulted reading (simulated charge.fault) makes the session faulted, even after its Finishing reading', async () => {
    const { readings } = planWith('charge.fault');
    const faulted = readings.find((r) => r.chargingState === 'Faulted');
    assert.ok(faulted);
    assert.equal(readings.at(-1)!.chargingState, 'Finishing');
    assert.equal(onlyPatch(await storeReadings(readings)).status, 'faulted');
    assert.equal(onlyPatch(await storeReadings(shuffled(readings, 5))).status, 'faulted');
    // Without the Faulted reading the same session merely stopped early.
    assert.equal(onlyPatch(await storeReadings(readings.filter((r) => r !== faulted))).status, 'stopped');
  });

  test('an error code while Charging makes the session faulted too', async () => {
    const { readings } = planWith(null);
    const batch = readings.slice(0, 5).map((r, i) => (i === 3 ? { ...r, errorCode: 'GroundFailure' as const } : r));
    assert.equal(onlyPatch(await storeReadings(batch)).status, 'faulted');
  });

  test('several sessions in one batch get one patch each', async () => {
    const opts = simOpts({ sessions: 3, seed: 4 });
    const plans = planRun(opts);
    const batch = plans.flatMap((p) => [...sessionReadings(p, opts)].slice(0, 4));
    const store = await storeReadings(shuffled(batch, 9));
    const patches = store.patches[0]!;
    assert.equal(patches.length, 3);
    for (const p of patches) {
      assert.equal(p.first!.seq, 0);
      assert.equal(p.last!.seq, 3);
      assert.equal(p.status, 'charging');
    }
  });
});

// =================================================================================================

describe('ev-store events handler', () => {
  function evEvent(type: EvEventType, sessionId: string, over: Partial<EvEvent> = {}): EvEvent {
    return {
      eventId: `${sessionId}:${type}`,
      type,
      severity: 'warning',
      runId: 'run-s',
      sessionId,
      ts: '2026-01-01T00:10:00.000Z',
      seq: 7,
      chargePointId: `CP-${sessionId}`,
      vehicle: { make: 'Kia', model: 'EV6', batteryKWh: 74, vin: 'KNDC34LA1N5000001' },
      owner: { name: 'Grace Hopper', email: 'grace@example.com' },
      charger: { type: 'AC', maxKW: 11 },
      socPercent: 50,
      chargeLimitPercent: 90,
      energyWh: 12_000,
      summary: type,
      details: {},
      ...over,
    };
  }

  test('stores every event; only charge.completed, charge.fault and charge.offline patch the session status', async () => {
    const events = [
      evEvent('charge.started', 's1'),
      evEvent('charge.fault', 's1', { location: 'Depot 4' }),
      evEvent('charge.completed', 's2'),
      evEvent('charge.offline', 's3', { chargeLimitPercent: null }),
      evEvent('charge.stalled', 's4'),
      evEvent('charge.soc_drop', 's4'),
      evEvent('charge.over_limit', 's5'),
      evEvent('charge.invalid_reading', 's6'),
    ];
    const store = recordingStore();
    await createEventsHandler({ store })(events.map(item), ctx);
    assert.deepEqual(store.events, [events]);
    assert.equal(store.patches.length, 1);
    const patches = store.patches[0]!;
    assert.deepEqual(
      patches.map((p) => [p.sessionId, p.status]),
      [
        ['s1', 'faulted'],
        ['s2', 'completed'],
        ['s3', 'interrupted'],
      ],
    );
    const [fault, , offline] = patches;
    assert.equal(fault!.first, null);
    assert.equal(fault!.last, null);
    assert.equal(fault!.location, 'Depot 4');
    assert.equal(fault!.chargeLimit, 90);
    assert.equal(fault!.chargePointId, 'CP-s1');
    assert.equal(fault!.ownerEmail, 'grace@example.com');
    assert.equal(offline!.location, null);
    assert.equal(offline!.chargeLimit, 0, 'an unknown limit is 0, which the store never takes over');
  });

  test('events without a status meaning produce no patch', async () => {
    const store = recordingStore();
    await createEventsHandler({ store })([item(evEvent('charge.stalled', 'a')), item(evEvent('charge.started', 'b'))], ctx);
    assert.equal(store.events[0]!.length, 2);
    assert.deepEqual(store.patches, [[]]);
  });
});
