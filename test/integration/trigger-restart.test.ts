// The trigger dies in the middle of its runs (SIGKILL): another trigger claims
// them and resumes from their checkpoints; every row still comes out exactly once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Pool } from '../../shared/db/pool.ts';
import { FAULT_TYPES } from '../../shared/contracts/ev.ts';
import { loadCatalog } from '../../functions/trigger/ev-catalog.ts';
import { simulateRun } from '../../functions/trigger/ev-simulator.ts';
import { EV_PARTITIONS } from '../../infra/topology.ts';
import { ensureSesEmulator } from '../../scripts/ses-emulator.ts';
import { FRAMING, SES_ENDPOINT, api, count, ensureBuilt, logsDir, resetEnvironment, startFunction, stopAll, waitFor } from './harness.ts';

let pool: Pool;
let ses: Awaited<ReturnType<typeof ensureSesEmulator>>;
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-restart-'));
const TRIGGER_ENV = { LOG_DIR: dir, RUN_STALE_AFTER_S: '2' };
// apache_logs this many times over: long enough to kill the trigger in the middle. Batch framing
// publishes a file many times faster than the consumers store it: it needs a longer one.
const COPIES = FRAMING === 'batch' ? 30 : 5;
const LINES = COPIES * 10_000;

before(async () => {
  ensureBuilt();
  writeFileSync(path.join(dir, 'big.log'), Buffer.concat(Array.from({ length: COPIES }, () => readFileSync(path.join(logsDir, 'apache_logs')))));
  ses = await ensureSesEmulator(SES_ENDPOINT);
  pool = await resetEnvironment();
  await startFunction('log-lake');
  await startFunction('log-clean');
  await startFunction('ev-analytics');
  await startFunction('ev-store');
});
after(async () => {
  await stopAll();
  await ses?.stop();
  await pool?.end();
  rmSync(dir, { recursive: true, force: true });
});

test('log and EV runs resume on another trigger after theirs is killed', async () => {
  const first = await startFunction('trigger', TRIGGER_ENV);
  const logRun = (await api(first, 'POST', '/v1/runs', { kind: 'logs', file: 'big.log' })).body.id as string;
  const evRun = (await api(first, 'POST', '/v1/runs', { kind: 'ev', sessions: 40, seed: 21, faultRate: 1, speed: 3000 })).body.id as string;
  await waitFor('both runs under way', async () =>
    (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [logRun])) > 5_000 && (await count(pool, 'SELECT COUNT(*) FROM ev_readings WHERE run_id = ?', [evRun])) > 1_000,
  );
  await first.kill('SIGKILL');
  const [logAtKill] = (await pool.query('SELECT state, published FROM runs WHERE id = ?', [logRun]))[0] as { state: string; published: number }[];
  assert.equal(logAtKill!.state, 'running');
  assert.ok(logAtKill!.published < LINES, 'the kill lands mid-run');

  const second = await startFunction('trigger', TRIGGER_ENV);
  const done = async (id: string) =>
    waitFor(`run ${id} to be done`, async () => {
      const r = (await api(second, 'GET', `/v1/runs/${id}`)).body;
      assert.notEqual(r.state, 'failed', r.error);
      return r.state === 'done' ? r : undefined;
    }, 240_000, 500);

  const log = await done(logRun);
  assert.equal(log.lines, LINES);
  assert.ok(second.logs.some((l) => l.includes('resuming a run whose trigger stopped') && l.includes(logRun)));
  await waitFor('every line stored', async () =>
    (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [logRun])) === LINES &&
    (await count(pool, 'SELECT (SELECT COUNT(*) FROM web_requests WHERE run_id = ?) + (SELECT COUNT(*) FROM log_rejects WHERE run_id = ?)', [logRun, logRun])) === LINES,
  120_000, 500);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_rejects WHERE run_id = ?', [logRun]), COPIES);

  const ev = await done(evRun);
  // The resumed stream is the same stream: every reading of the simulation, once.
  const p = ev.params;
  const expected = [...simulateRun({ runId: evRun, sessions: p.sessions, seed: p.seed, sampleIntervalS: p.sampleIntervalS, faultRate: p.faultRate, startTime: new Date(p.startTime), catalog: loadCatalog() })]
    .filter((i) => i.kind === 'reading').length;
  await waitFor('the analytics through the run', async () =>
    (await count(pool, "SELECT COUNT(*) FROM ev_analytics_clock WHERE run_id = ? AND JSON_EXTRACT(clock, '$.final') = true", [evRun])) === EV_PARTITIONS &&
    (await count(pool, 'SELECT COUNT(*) FROM ev_readings WHERE run_id = ?', [evRun])) === expected,
  120_000, 500);
  await new Promise((r) => setTimeout(r, 1_500));
  const [truth] = (await pool.query('SELECT session_id, fault FROM ev_sim_truth WHERE run_id = ?', [evRun])) as [{ session_id: string; fault: string }[], unknown];
  const [found] = (await pool.query('SELECT session_id, type FROM ev_events WHERE run_id = ? AND type IN (?)', [evRun, FAULT_TYPES])) as [{ session_id: string; type: string }[], unknown];
  assert.deepEqual(found.map((r) => `${r.session_id} ${r.type}`).sort(), truth.map((r) => `${r.session_id} ${r.fault}`).sort());
});

test('a trigger stopped gracefully (a deploy) hands its run over instead of failing it', async () => {
  const old = await startFunction('trigger', TRIGGER_ENV);
  const id = (await api(old, 'POST', '/v1/runs', { kind: 'logs', file: 'big.log' })).body.id as string;
  await waitFor('the run under way', async () => (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id])) > 5_000);
  assert.equal(await old.kill('SIGTERM'), 0);
  const [[row]] = (await pool.query('SELECT state, published FROM runs WHERE id = ?', [id])) as [{ state: string; published: number }[], unknown];
  assert.equal(row!.state, 'running', 'not failed: handed back');
  assert.ok(row!.published < LINES, 'the stop lands mid-run');
  assert.ok(old.logs.some((l) => l.includes('run handed back')));

  const fresh = await startFunction('trigger', TRIGGER_ENV);
  await waitFor(`run ${id} to be done`, async () => (await api(fresh, 'GET', `/v1/runs/${id}`)).body.state === 'done', 240_000, 500);
  await waitFor('every line stored once', async () =>
    (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id])) === LINES &&
    (await count(pool, 'SELECT (SELECT COUNT(*) FROM web_requests WHERE run_id = ?) + (SELECT COUNT(*) FROM log_rejects WHERE run_id = ?)', [id, id])) === LINES,
  120_000, 500);
});
