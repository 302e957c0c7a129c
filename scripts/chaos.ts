// npm run chaos: the full chaos scenario (issue 10). A 100,000-line replay, a follow run receiving
// appends and a 300-session EV run with faults, all at once, with log-clean and ev-analytics scaled
// to 2; meanwhile every queue function is SIGKILLed three times, RabbitMQ's app restarted once,
// MariaDB stopped for 10 s once and the trigger SIGKILLed once, at random moments (CHAOS_SEED
// replays a run's moments). Then every table is checked exactly; exits 1 naming what differs.
// Stops RabbitMQ and MariaDB: nothing else may use them meanwhile.
//   npm run chaos -- [--seed N] [--scale fn=N ...] [--window S] [--short]
// Database sluice_test_chaos and vhost sluice-test unless TEST_MYSQL_URL / TEST_AMQP_URL say otherwise.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';

process.env.TEST_MYSQL_URL ??= 'mysql://sluice:sluice@127.0.0.1:3306/sluice_test_chaos';
const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    scale: { type: 'string', multiple: true },
    window: { type: 'string' },
    short: { type: 'boolean' },
  },
});
const root = path.resolve(import.meta.dirname, '..');
const run = (cmd: string, args: string[]) => {
  if (spawnSync(cmd, args, { cwd: root, stdio: 'inherit' }).status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed`);
};
run('bash', ['scripts/services.sh']);
run(process.execPath, ['build.mjs', '--no-check']);
const { runChaos, FULL, SHORT, RECOVERY } = await import('../test/integration/chaos.ts');

const base = values.short ? SHORT : FULL;
const scale = { ...base.scale };
for (const s of values.scale ?? []) {
  const m = /^([a-z-]+)=(\d+)$/.exec(s);
  if (!m) throw new Error(`--scale ${s}: expected function=N`);
  (scale as Record<string, number>)[m[1]!] = Number(m[2]);
}
const seed = Number(values.seed ?? process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const started = Date.now();
console.log(`chaos: CHAOS_SEED=${seed}${values.short ? ' (short variant)' : ''}, scale ${JSON.stringify(scale)}`);
const result = await runChaos({
  ...base,
  scale,
  seed,
  windowS: values.window ? Number(values.window) : base.windowS,
  log: (line) => console.log(line),
});
console.log(`\n## Faults injected (CHAOS_SEED=${seed}, ${Math.round((Date.now() - started) / 1000)} s in all)\n`);
console.log(result.table);
console.log(`\n${RECOVERY.join('\n')}\n`);
for (const f of result.facts) console.log(`- ${f}`);
if (result.mismatches.length > 0) {
  console.log(`\nFAILED: ${result.mismatches.length} mismatch(es); replay with CHAOS_SEED=${seed}`);
  for (const m of result.mismatches) console.log(`  - ${m}`);
  process.exit(1);
}
console.log('\nOK: every count exact, no duplicate row or email, detections equal to the truth, dead-letter queues hold only the input\'s invalid readings');
process.exit(0);
