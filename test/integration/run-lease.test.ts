// Fenced runs (issue 10): a trigger paused (SIGSTOP) past RUN_STALE_AFTER_S loses its
// run to the trigger that claims it; resumed (SIGCONT), its next checkpoint update
// matches no row and it stops publishing the run. The run ends `done` once, by the
// new owner, with every line stored once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Pool } from '../../shared/db/pool.ts';
import { api, count, ensureBuilt, logsDir, resetEnvironment, startFunction, stopAll, waitFor } from './harness.ts';

let pool: Pool;
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-lease-'));
const TRIGGER_ENV = { LOG_DIR: dir, RUN_STALE_AFTER_S: '2' };
let fileLines = 0;

before(async () => {
  ensureBuilt();
  // apache_logs five times over: long enough to pause the trigger in the middle.
  const body = Buffer.concat(Array.from({ length: 5 }, () => readFileSync(path.join(logsDir, 'apache_logs'))));
  writeFileSync(path.join(dir, 'big.log'), body);
  fileLines = body.toString('latin1').split('\n').length - (body.at(-1) === 0x0a ? 1 : 0);
  pool = await resetEnvironment();
  await startFunction('log-lake');
  await startFunction('log-clean');
});
after(async () => {
  await stopAll();
  await pool?.end();
  rmSync(dir, { recursive: true, force: true });
});

test('a paused trigger loses its run to the one that claims it, and stops publishing it once resumed', async () => {
  const a = await startFunction('trigger', TRIGGER_ENV);
  const id = (await api(a, 'POST', '/v1/runs', { kind: 'logs', file: 'big.log' })).body.id as string;
  await waitFor('the run under way', async () => (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id])) > 5_000, 60_000, 50);
  a.child.kill('SIGSTOP');
  try {
    const [[before]] = (await pool.query('SELECT state, published, owner, epoch FROM runs WHERE id = ?', [id])) as [{ state: string; published: number; owner: string; epoch: number }[], unknown];
    assert.equal(before!.state, 'running');
    assert.equal(Number(before!.epoch), 1);
    assert.ok(before!.published < fileLines, 'the pause lands mid-run');

    const b = await startFunction('trigger', TRIGGER_ENV);
    await waitFor('B to claim the run', async () => b.logs.some((l) => l.includes('resuming a run whose trigger stopped') && l.includes(id)), 30_000, 50);
    const [[claimed]] = (await pool.query('SELECT owner, epoch FROM runs WHERE id = ?', [id])) as [{ owner: string; epoch: number }[], unknown];
    assert.equal(Number(claimed!.epoch), 2, 'the claim bumped the epoch');
    assert.notEqual(claimed!.owner, before!.owner, 'and moved the owner');
    assert.ok(b.logs.some((l) => l.includes('run owner id') && l.includes(claimed!.owner)));

    a.child.kill('SIGCONT');
    const fenced = await waitFor('A to find itself fenced out', async () => a.logs.find((l) => l.includes('run claimed by another trigger: stopped publishing it here') && l.includes(id)), 30_000, 50);
    assert.match(fenced, /"epoch":1/);
    assert.equal(a.child.exitCode, null, 'A lives on');
    assert.equal((await api(a, 'GET', '/v1/runs')).status, 200, 'and still answers');

    const run = await waitFor('the run to be done', async () => {
      const r = (await api(b, 'GET', `/v1/runs/${id}`)).body;
      assert.notEqual(r.state, 'failed', r.error);
      return r.state === 'done' ? r : undefined;
    }, 240_000, 250);
    assert.equal(run.lines, fileLines);
    assert.equal(run.published, fileLines);
    await waitFor('every line stored once', async () =>
      (await count(pool, 'SELECT COUNT(*) FROM raw_logs WHERE run_id = ?', [id])) === fileLines &&
      (await count(pool, 'SELECT (SELECT COUNT(*) FROM web_requests WHERE run_id = ?) + (SELECT COUNT(*) FROM log_rejects WHERE run_id = ?)', [id, id])) === fileLines,
    120_000, 500);
    assert.equal(await count(pool, 'SELECT COUNT(DISTINCT line_no) FROM raw_logs WHERE run_id = ?', [id]), fileLines, 'no duplicate line numbers');
    assert.equal(await count(pool, 'SELECT MAX(line_no) FROM raw_logs WHERE run_id = ?', [id]), fileLines);

    // Ended once, by its new owner; the old one wrote no end (done, failed or handed back).
    const [[row]] = (await pool.query('SELECT state, owner, epoch FROM runs WHERE id = ?', [id])) as [{ state: string; owner: string; epoch: number }[], unknown];
    assert.deepEqual({ ...row, epoch: Number(row!.epoch) }, { state: 'done', owner: claimed!.owner, epoch: 2 });
    assert.equal(b.logs.filter((l) => l.includes('"msg":"run done"') && l.includes(id)).length, 1);
    for (const msg of ['run done', 'run failed', 'run handed back', 'run stopped']) {
      assert.ok(!a.logs.some((l) => l.includes(`"msg":"${msg}`) && l.includes(id)), `A did not log "${msg}"`);
    }
  } finally {
    a.child.kill('SIGCONT');
  }
});
