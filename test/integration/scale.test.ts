// Scaled consumers: competing consumers on the log queues, and keyed state under
// scale for ev-analytics (partitions shared between instances, a standby taking
// over when one dies).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Pool } from '../../shared/db/pool.ts';
import { FAULT_TYPES } from '../../shared/contracts/ev.ts';
import { EV_PARTITIONS } from '../../infra/topology.ts';
import { ensureSesEmulator } from '../../scripts/ses-emulator.ts';
import { SES_ENDPOINT, api, count, ensureBuilt, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

let pool: Pool;
let ses: Awaited<ReturnType<typeof ensureSesEmulator>>;

before(async () => {
  ensureBuilt();
  ses = await ensureSesEmulator(SES_ENDPOINT);
});
after(async () => {
  await stopAll();
  await ses?.stop();
});

/** Messages a process acked, by queue, from its /metrics. */
async function acked(fn: FnProcess): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${fn.ready.health}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^sluice_messages_total\{[^}]*queue="([^"]+)"[^}]*outcome="ack"[^}]*\} (\d+)/gm)) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  return out;
}
const total = (counts: Record<string, number>, prefix: string) => Object.entries(counts).filter(([q]) => q.startsWith(prefix)).reduce((a, [, n]) => a + n, 0);

describe('scaled consumers', () => {
  test('3 log-clean and 2 log-lake processes share a replay: no loss, no duplicates', async () => {
    pool = await resetEnvironment();
    try {
      const lakes = [await startFunction('log-lake', { BATCH_SIZE: '50' }), await startFunction('log-lake', { BATCH_SIZE: '50' })];
      const cleans = [await startFunction('log-clean', { BATCH_SIZE: '50' }), await startFunction('log-clean', { BATCH_SIZE: '50' }), await startFunction('log-clean', { BATCH_SIZE: '50' })];
      const trigger = await startFunction('trigger');
      const { body } = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'apache_logs' });
      await waitFor('the replay to be stored', async () => {
        const s = (await api(trigger, 'GET', `/v1/runs/${body.id}`)).body.stored;
        return s.raw_logs === 10_000 && s.web_requests + s.log_rejects === 10_000;
      }, 120_000);
      assert.equal(await count(pool, 'SELECT COUNT(*) FROM web_requests WHERE run_id = ?', [body.id]), 9_999);
      assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id = ?', [body.id]), 1);
      assert.equal(await count(pool, 'SELECT COUNT(DISTINCT line_no) FROM raw_logs WHERE run_id = ?', [body.id]), 10_000);
      const cleanCounts = await Promise.all(cleans.map(acked));
      const lakeCounts = await Promise.all(lakes.map(acked));
      for (const c of cleanCounts) assert.ok(total(c, 'logs.clean') > 0, `every log-clean process took work: ${JSON.stringify(cleanCounts)}`);
      for (const c of lakeCounts) assert.ok(total(c, 'logs.lake') > 0, `every log-lake process took work: ${JSON.stringify(lakeCounts)}`);
      // Nothing was handled twice: the acks add up to the lines.
      assert.equal(cleanCounts.reduce((a, c) => a + total(c, 'logs.clean'), 0), 10_000);
      assert.equal(lakeCounts.reduce((a, c) => a + total(c, 'logs.lake'), 0), 10_000);
    } finally {
      await stopAll();
      await pool.end();
    }
  });

  test('2 ev-analytics processes share the partitions; one killed mid-run, detections still equal the truth', async () => {
    pool = await resetEnvironment();
    try {
      const env = { REBALANCE_EVERY_MS: '300', BATCH_SIZE: '50' };
      const a = await startFunction('ev-analytics', env);
      const b = await startFunction('ev-analytics', env);
      await startFunction('ev-store');
      await startFunction('notify-email', { GROUP_WINDOW_S: '1', SES_MAX_PER_SECOND: '500', OUTBOX_POLL_MS: '50' });
      const trigger = await startFunction('trigger');
      // Paced so that the run lasts long enough for the partitions to be shared out, then for the kill.
      const { body } = await api(trigger, 'POST', '/v1/runs', { kind: 'ev', sessions: 60, seed: 5, faultRate: 1, speed: 4000 });
      const runId = body.id as string;
      await waitFor('both instances to hold partitions', async () => {
        const [ca, cb] = await Promise.all([acked(a), acked(b)]);
        return total(ca, 'ev.analytics') > 0 && total(cb, 'ev.analytics') > 0;
      }, 60_000);
      const run = (await api(trigger, 'GET', `/v1/runs/${runId}`)).body;
      assert.equal(run.state, 'running', 'the kill must land mid-run');
      await a.kill('SIGKILL');
      await waitFor('every partition to pass the final clock', async () =>
        (await count(pool, "SELECT COUNT(*) FROM ev_analytics_clock WHERE run_id = ? AND JSON_EXTRACT(clock, '$.final') = true", [runId])) === EV_PARTITIONS,
      240_000, 500);
      await waitFor('the events to be stored', async () => {
        const n = await count(pool, 'SELECT COUNT(*) FROM ev_events WHERE run_id = ?', [runId]);
        await new Promise((r) => setTimeout(r, 1_000));
        return n > 0 && n === (await count(pool, 'SELECT COUNT(*) FROM ev_events WHERE run_id = ?', [runId])) ? n : undefined;
      }, 60_000, 0);

      const [truth] = (await pool.query('SELECT session_id, fault FROM ev_sim_truth WHERE run_id = ?', [runId])) as [{ session_id: string; fault: string }[], unknown];
      const [found] = (await pool.query('SELECT session_id, type FROM ev_events WHERE run_id = ? AND type IN (?)', [runId, FAULT_TYPES])) as [{ session_id: string; type: string }[], unknown];
      assert.equal(truth.length, 60);
      assert.deepEqual(found.map((r) => `${r.session_id} ${r.type}`).sort(), truth.map((r) => `${r.session_id} ${r.fault}`).sort());
      assert.equal(await count(pool, "SELECT COUNT(*) FROM ev_events WHERE run_id = ? AND type = 'charge.started'", [runId]), 60);
      // One event per (session, type), one email per event and role.
      assert.equal(
        await count(pool, 'SELECT COUNT(*) FROM ev_events WHERE run_id = ?', [runId]),
        await count(pool, 'SELECT COUNT(*) FROM (SELECT DISTINCT session_id, type FROM ev_events WHERE run_id = ?) d', [runId]),
      );
      assert.ok(b.logs.some((l) => l.includes('"msg":"consuming"')));
    } finally {
      await stopAll();
      await pool.end();
    }
  });
});
