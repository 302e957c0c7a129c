// The EV pipeline end to end on real RabbitMQ, MariaDB and the SES emulator:
// trigger (simulator) -> ev-analytics -> ev-store / notify-email -> SES.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import { FAULT_TYPES } from '../../shared/contracts/ev.ts';
import { EV_PARTITIONS, deadLetterQueue, evAnalyticsQueue } from '../../infra/topology.ts';
import { ensureSesEmulator } from '../../scripts/ses-emulator.ts';
import { AMQP_URL, SES_ENDPOINT, api, count, ensureBuilt, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

interface StoredEmail {
  destination: { to: string[] };
  subject: string;
  body: { text?: string; html?: string };
}

let pool: Pool;
let trigger: FnProcess;
let notify: FnProcess;
let ses: Awaited<ReturnType<typeof ensureSesEmulator>>;
const NOTIFY_ENV = { GROUP_WINDOW_S: '1', SES_MAX_PER_SECOND: '200', OUTBOX_POLL_MS: '50', ALERT_EMAIL: 'ops@sluice.test' };

before(async () => {
  ensureBuilt();
  ses = await ensureSesEmulator(SES_ENDPOINT);
  pool = await resetEnvironment();
  await startFunction('ev-analytics');
  await startFunction('ev-store');
  notify = await startFunction('notify-email', NOTIFY_ENV);
  trigger = await startFunction('trigger');
});
after(async () => {
  await stopAll();
  await ses?.stop();
  await pool?.end();
});

async function emails(): Promise<StoredEmail[]> {
  return ((await (await fetch(`${SES_ENDPOINT}/store`)).json()) as { emails: StoredEmail[] }).emails;
}

async function startRun(body: Record<string, unknown>) {
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'ev', speed: 1e6, ...body });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  return res.body.id as string;
}

/**
 * Done when the run is published, every session has a final status and the outbox is drained.
 * `stuck`: rows that may stay in 'sending' (claimed by a sender that was killed).
 */
async function settle(runId: string, sessions: number, stuck = 0) {
  let last = '';
  await waitFor(`EV run ${runId} to settle`, async () => {
    const run = (await api(trigger, 'GET', `/v1/runs/${runId}`)).body;
    assert.notEqual(run.state, 'failed', run.error);
    if (run.state !== 'done') return undefined;
    const q = (sql: string) => count(pool, sql, [runId]);
    const snapshot = [
      // every partition has seen the run's final clock: the analytics is through the run
      await q("SELECT COUNT(*) FROM ev_analytics_clock WHERE run_id = ? AND JSON_EXTRACT(clock, '$.final') = true"),
      await q('SELECT COUNT(*) FROM ev_sessions WHERE run_id = ?'),
      await q("SELECT COUNT(*) FROM ev_sessions WHERE run_id = ? AND status = 'charging'"),
      await q('SELECT COUNT(*) FROM ev_events WHERE run_id = ?'),
      await q('SELECT COUNT(*) FROM email_outbox WHERE run_id = ?'),
      await q("SELECT COUNT(*) FROM email_outbox WHERE run_id = ? AND status = 'pending'"),
      await q("SELECT COUNT(*) FROM email_outbox WHERE run_id = ? AND status = 'sending'"),
    ];
    const [finals, stored, open, , , pending, sending] = snapshot;
    // ... and nothing moved since the last look.
    const steady = JSON.stringify(snapshot) === last;
    last = JSON.stringify(snapshot);
    return finals === EV_PARTITIONS && stored === sessions && open === 0 && pending === 0 && sending! <= stuck && steady ? run : undefined;
  }, 240_000, 1_000);
}

const referencesIn = (list: StoredEmail[]) => list.flatMap((e) => [...(e.body.text ?? '').matchAll(/^Reference: (.+)$/gm)].map((m) => `${e.destination.to[0]} ${m[1]}`));

describe('EV pipeline', () => {
  test('healthy sessions: every one completes, one event and one owner email each', async () => {
    const before = (await emails()).length;
    const runId = await startRun({ sessions: 50, seed: 42, faultRate: 0 });
    await settle(runId, 50);
    assert.equal(await count(pool, "SELECT COUNT(*) FROM ev_sessions WHERE run_id = ? AND status = 'completed'", [runId]), 50);
    assert.equal(await count(pool, "SELECT COUNT(*) FROM ev_events WHERE run_id = ? AND type = 'charge.completed'", [runId]), 50);
    assert.equal(await count(pool, "SELECT COUNT(*) FROM ev_events WHERE run_id = ? AND type NOT IN ('charge.started', 'charge.completed')", [runId]), 0, 'no false alarm');
    assert.equal(await count(pool, 'SELECT COUNT(*) FROM ev_sim_truth WHERE run_id = ?', [runId]), 0);
    const readings = await count(pool, 'SELECT COUNT(*) FROM ev_readings WHERE run_id = ?', [runId]);
    assert.ok(readings > 50 * 10, `readings ${readings}`);

    const mine = (await emails()).slice(before);
    const [owners] = (await pool.query('SELECT owner_email FROM ev_sessions WHERE run_id = ?', [runId])) as [{ owner_email: string }[], unknown];
    assert.equal(mine.length, 50);
    assert.deepEqual(mine.map((e) => e.destination.to[0]).sort(), owners.map((o) => o.owner_email).sort());
    for (const e of mine) {
      assert.match(e.subject, /^Charging complete: your .+ at CP-/);
      assert.match(e.body.text ?? '', /Energy delivered: \d+\.\d kWh/);
      assert.match(e.body.html ?? '', /<table>/);
    }
    assert.equal(new Set(referencesIn(mine)).size, 50);
  });

  test('faultRate 1: detections match the injected truth, precision and recall 1.0 per type', async () => {
    const runId = await startRun({ sessions: 60, seed: 7, faultRate: 1 });
    await settle(runId, 60);
    const [truthRows] = (await pool.query('SELECT session_id, fault FROM ev_sim_truth WHERE run_id = ?', [runId])) as [{ session_id: string; fault: string }[], unknown];
    const [eventRows] = (await pool.query(`SELECT session_id, type FROM ev_events WHERE run_id = ? AND type IN (?)`, [runId, FAULT_TYPES])) as [
      { session_id: string; type: string }[],
      unknown,
    ];
    assert.equal(truthRows.length, 60);
    const truth = new Set(truthRows.map((r) => `${r.session_id} ${r.fault}`));
    const detected = new Set(eventRows.map((r) => `${r.session_id} ${r.type}`));
    const table: Record<string, { truth: number; detected: number; correct: number }> = {};
    for (const type of FAULT_TYPES) {
      const t = [...truth].filter((k) => k.endsWith(` ${type}`));
      const d = [...detected].filter((k) => k.endsWith(` ${type}`));
      table[type] = { truth: t.length, detected: d.length, correct: d.filter((k) => truth.has(k)).length };
    }
    console.log('detection by fault type (precision = correct/detected, recall = correct/truth):', JSON.stringify(table));
    for (const [type, row] of Object.entries(table)) {
      assert.ok(row.truth > 0, `the seeded run injects ${type}`);
      assert.equal(row.correct, row.detected, `precision of ${type}`);
      assert.equal(row.correct, row.truth, `recall of ${type}`);
    }
    // Invalid readings also go to the partitions' dead-letter queues, with the reason.
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      const reasons: string[] = [];
      for (let p = 0; p < EV_PARTITIONS; p++) {
        for (let msg = await ch.get(deadLetterQueue(evAnalyticsQueue(p)), { noAck: true }); msg; msg = await ch.get(deadLetterQueue(evAnalyticsQueue(p)), { noAck: true })) {
          reasons.push(String(msg.properties.headers?.['x-sluice-reason']));
        }
      }
      assert.ok(reasons.length >= table['charge.invalid_reading']!.truth, `dead-lettered ${reasons.length}`);
      for (const r of reasons) assert.match(r, /invalid reading .*(socPercent 140|powerW -5000)/);
    } finally {
      await conn.close();
    }
    // Sessions carry their final status.
    assert.equal(await count(pool, "SELECT COUNT(*) FROM ev_sessions s JOIN ev_sim_truth t USING (session_id) WHERE t.run_id = ? AND t.fault = 'charge.offline' AND s.status <> 'interrupted'", [runId]), 0);
    assert.equal(await count(pool, "SELECT COUNT(*) FROM ev_sessions s JOIN ev_sim_truth t USING (session_id) WHERE t.run_id = ? AND t.fault = 'charge.fault' AND s.status <> 'faulted'", [runId]), 0);
    // Operator alerts: one outbox row per alert, all sent, none twice.
    const alerts = eventRows.length;
    assert.equal(await count(pool, "SELECT COUNT(*) FROM email_outbox WHERE run_id = ? AND role = 'operator' AND status = 'sent'", [runId]), alerts);
    const refs = referencesIn(await emails());
    assert.equal(refs.length, new Set(refs).size, 'no event is mailed twice to the same address');
  });

  test('killing notify-email mid-run sends no duplicate email', async () => {
    await fetch(`${SES_ENDPOINT}/clear-store`, { method: 'POST' });
    await notify.kill('SIGTERM');
    // Slow sends so that the kill lands while mail is going out.
    const slow = { ...NOTIFY_ENV, SES_MAX_PER_SECOND: '25' };
    notify = await startFunction('notify-email', slow);
    const runId = await startRun({ sessions: 80, seed: 11, faultRate: 0.5 });
    await waitFor('some emails to go out', async () => (await emails()).length >= 15, 120_000);
    await notify.kill('SIGKILL');
    const sentBeforeKill = (await emails()).length;
    notify = await startFunction('notify-email', { ...slow, SES_MAX_PER_SECOND: '200' });
    await settle(runId, 80, 1);
    const rows = (await pool.query('SELECT status, COUNT(*) AS n FROM email_outbox WHERE run_id = ? GROUP BY status', [runId]))[0] as { status: string; n: number }[];
    const byStatus = Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
    const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
    assert.ok(sentBeforeKill < total, 'the kill must land mid-run');
    // A row claimed at the moment of the kill may stay 'sending' until its lease ends: it is never resent.
    assert.ok((byStatus.sent ?? 0) + (byStatus.sending ?? 0) + (byStatus.unknown ?? 0) === total, JSON.stringify(byStatus));
    assert.ok((byStatus.sending ?? 0) + (byStatus.unknown ?? 0) <= 1, JSON.stringify(byStatus));
    const refs = referencesIn(await emails());
    assert.equal(refs.length, new Set(refs).size, 'no duplicate email');
    // Every event that was mailed is in exactly one email per recipient role.
    const [expected] = (await pool.query("SELECT CONCAT(recipient, ' ', event_id) AS k FROM email_outbox WHERE run_id = ? AND status = 'sent'", [runId])) as [{ k: string }[], unknown];
    for (const { k } of expected) assert.ok(refs.includes(k), `${k} was mailed`);
  });
});
