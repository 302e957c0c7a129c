// The chaos scenario, short variant (test/integration/chaos.ts): apache_logs (10,000 lines), a
// short follow and 40 EV sessions at once, log-clean and ev-analytics scaled to 2; one SIGKILL of
// each queue function, one of the trigger, one RabbitMQ restart, one 10-second MariaDB stop.
// Every table exact afterwards. CHAOS_SEED replays a failing run's fault moments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ensureBuilt } from './harness.ts';
import { RECOVERY, SHORT, runChaos } from './chaos.ts';

test('chaos, short: every count exact after one of each fault', { timeout: 600_000 }, async (t) => {
  ensureBuilt();
  const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const lines: string[] = [];
  const result = await runChaos({ ...SHORT, seed, log: (l) => lines.push(l) });
  t.diagnostic(`CHAOS_SEED=${seed}\n${result.table}\n${RECOVERY.join('\n')}\n${result.facts.join('\n')}`);
  console.log(`CHAOS_SEED=${seed}\n${result.table}\n${result.facts.join('\n')}`);
  assert.ok(result.faults.filter((f) => f.fault === 'SIGKILL').length >= 7, 'every kill was injected');
  assert.deepEqual(result.mismatches, [], `CHAOS_SEED=${seed}; log:\n${lines.slice(-40).join('\n')}`);
});
