const h = await import('./test/integration/harness.ts');
const pool = await h.resetEnvironment();
for (let i = 0; i < 2; i++) {
  const t0 = performance.now();
  const p = await h.startFunction('trigger', i === 1 ? { NODE_OPTIONS: '--cpu-prof --cpu-prof-dir=/tmp/prof2 --cpu-prof-interval=200' } : {});
  console.log('ready after', Math.round(performance.now() - t0), 'ms; uptime', p.ready.uptimeMs);
  await p.kill();
}
await h.stopAll(); await pool.end();
