// Fencing of ev-analytics' state on real MariaDB (issue 10, "Fence every writer"): the stale
// writer, reproduced deterministically. Instance A handles a partition; its next batch is in
// flight, the publish of its events waiting for a reconnect; B takes the partition over (claims
// it: a new epoch), handles the redelivered batch and goes on; then A's publish returns and A
// saves. The save must be refused and B's states stand, so that C, reloading them later, raises
// no false charge.offline. The store is the real one, as the function's own MySQL user.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { createPool, type Pool } from '../../shared/db/pool.ts';
import type { BatchContext, BatchItem } from '../../shared/amqp/consumer.ts';
import { FAULT_TYPES, type EvEvent } from '../../shared/contracts/ev.ts';
import { loadCatalog } from '../../functions/trigger/ev-catalog.ts';
import { createDetector } from '../../functions/ev-analytics/detector.ts';
import { planRun, simulateRun, type SimOptions } from '../../functions/trigger/ev-simulator.ts';
import { asBatchItems } from '../ev-stream.ts';
import type { AnalyticsMessage } from '../../functions/ev-analytics/contract.ts';
import { PartitionLostError, createHandler, type AnalyticsStore, type EventSink } from '../../functions/ev-analytics/handler.ts';
import { createAnalyticsStore } from '../../functions/ev-analytics/store.ts';
import { ownUrls, resetEnvironment } from './harness.ts';

let admin: Pool;
let pool: Pool; // ev-analytics' own user: the grants of infra/access.ts are part of the test
let savePool: Pool; // the same user, several statements per query, as ev-analytics saves

before(async () => {
  admin = await resetEnvironment();
  pool = createPool(ownUrls('ev-analytics').MYSQL_URL, 4);
  savePool = createPool(ownUrls('ev-analytics').MYSQL_URL, 4, { multipleStatements: true });
});
after(async () => {
  await pool?.end();
  await savePool?.end();
  await admin?.end();
});

const log = pino({ level: 'silent' });
const FAULTS = new Set<string>(FAULT_TYPES);
const catalog = loadCatalog();

function simulate(sessions: number) {
  // A source without quiet notices: there a stale state alone makes a session look silent, so
  // the unfenced schedule below shows its harm as a false charge.offline.
  const opts: SimOptions = { runId: randomUUID(), sessions, seed: 5, sampleIntervalS: 30, faultRate: 1, startTime: new Date('2026-01-01T00:00:00Z'), catalog, announceQuiet: false };
  const plans = planRun(opts);
  const items = asBatchItems(simulateRun(opts, plans));
  return { runId: opts.runId, items, expected: new Set(plans.map((p) => `${p.sessionId} ${p.fault}`)) };
}

const faultsOf = (events: EvEvent[]) => new Set(events.filter((e) => FAULTS.has(e.type)).map((e) => `${e.sessionId} ${e.type}`));

async function rows(partition: number): Promise<string> {
  const [states] = await admin.query('SELECT session_id, is_open, state FROM ev_analytics_state WHERE partition_no = ? ORDER BY session_id', [partition]);
  const [clocks] = await admin.query('SELECT run_id, clock FROM ev_analytics_clock WHERE partition_no = ? ORDER BY run_id', [partition]);
  return JSON.stringify([states, clocks]);
}

async function epochOf(partition: number): Promise<number> {
  const [r] = (await admin.query('SELECT epoch FROM ev_analytics_partitions WHERE partition_no = ?', [partition])) as [{ epoch: number }[], unknown];
  return Number(r[0]?.epoch ?? 0);
}

/** The schedule of the stale writer on `partition`. `fenced: false` saves at whatever epoch is current (the bug). */
async function staleWriter(partition: number, fenced: boolean) {
  const { items, expected } = simulate(30);
  const real = createAnalyticsStore(pool, savePool);
  const store: AnalyticsStore = fenced ? real : { ...real, save: async (p, _epoch, states, clocks) => real.save(p, await epochOf(p), states, clocks) };
  const published: EvEvent[] = [];
  const sink: EventSink = { publish: async (events) => void published.push(...events) };
  let waits = false;
  let reached!: () => void;
  const blocked = new Promise<void>((r) => (reached = r));
  let reconnect!: () => void;
  const reconnected = new Promise<void>((r) => (reconnect = r));
  const aSink: EventSink = {
    async publish(events) {
      if (waits) reached(), await reconnected;
      await sink.publish(events);
    },
  };
  const instance = (events: EventSink, id: string) => createHandler({ detector: createDetector(), store, events, partitionOf: () => partition, instanceId: id });
  const a = instance(aSink, randomUUID());
  const b = instance(sink, randomUUID());
  const c = instance(sink, randomUUID());
  const ctx: BatchContext = { log, queue: `ev.analytics.p${partition}`, subscription: 1 };

  const batches: BatchItem<AnalyticsMessage>[][] = [];
  for (let i = 0; i < items.length; i += 40) batches.push(items.slice(i, i + 40));
  const k = Math.floor(batches.length / 3);
  const m = Math.floor(batches.length / 3);

  for (const batch of batches.slice(0, k)) await a(batch, ctx);
  const epochA = await epochOf(partition);
  waits = true;
  const late = a(batches[k]!, ctx);
  await blocked; // A's publish now waits for its "reconnect"
  for (const batch of batches.slice(k, k + m)) await b(batch, ctx); // B took over: the broker redelivered batch k to it
  const epochB = await epochOf(partition);
  const theirs = await rows(partition);
  reconnect();
  const outcome = await late.then(
    () => 'saved',
    (err: Error) => (err instanceof PartitionLostError ? 'refused' : `failed: ${err.message}`),
  );
  const overwritten = (await rows(partition)) !== theirs;
  for (const batch of batches.slice(k + m)) await c(batch, ctx); // a later holder reloads from MySQL
  return { outcome, overwritten, epochA, epochB, epochC: await epochOf(partition), faults: faultsOf(published), expected };
}

describe('ev-analytics state fencing (MariaDB)', () => {
  test('a claim bumps the partition epoch; a save at an older epoch writes nothing', async () => {
    const a = createAnalyticsStore(pool, savePool);
    const b = createAnalyticsStore(pool, savePool);
    const { items } = simulate(2);
    const detector = createDetector();
    const readings = items.flatMap((it) => (it.body.kind === 'reading' ? [it.body.reading] : []));
    const sessionId = readings[0]!.sessionId;
    let state = detector.onReading(undefined, readings[0]!).state;
    const states = [state];
    for (const r of readings.filter((x) => x.sessionId === sessionId).slice(1, 30)) states.push((state = detector.onReading(state, r).state));

    const e1 = await a.claim(0, 'a');
    assert.equal(await a.save(0, e1, [states[5]!], []), true);
    const e2 = await b.claim(0, 'b');
    assert.equal(e2, e1 + 1);
    assert.equal(await b.save(0, e2, [states[20]!], []), true);
    assert.equal(await a.save(0, e1, [states[10]!], []), false, 'the older writer is refused');
    assert.deepEqual((await a.loadStates([sessionId])).get(sessionId), states[20], "B's state stands");
    const [owner] = (await admin.query('SELECT owner, epoch FROM ev_analytics_partitions WHERE partition_no = 0')) as [{ owner: string; epoch: number }[], unknown];
    assert.deepEqual(owner[0], { owner: 'b', epoch: e2 });
  });

  test('stale writer: A\'s late save is refused, B\'s states stand, and no false charge.offline follows', async () => {
    const r = await staleWriter(1, true);
    assert.equal(r.outcome, 'refused');
    assert.equal(r.overwritten, false);
    assert.ok(r.epochB > r.epochA && r.epochC > r.epochB, `epochs ${r.epochA} < ${r.epochB} < ${r.epochC}`);
    assert.deepEqual(r.faults, r.expected);
  });

  test('without the fence the same schedule overwrites B\'s states and raises a false charge.offline (the test above can fail)', async () => {
    const r = await staleWriter(2, false);
    assert.equal(r.outcome, 'saved');
    assert.equal(r.overwritten, true);
    const extra = [...r.faults].filter((f) => !r.expected.has(f));
    assert.ok(extra.some((f) => f.endsWith(' charge.offline')), `false events: ${extra.join(', ') || 'none'}`);
  });
});
