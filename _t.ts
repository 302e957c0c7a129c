const h = await import('./test/integration/harness.ts');
const pool = await h.resetEnvironment();
try { const a = await h.startFunction('ev-analytics'); console.log('ready'); await a.kill(); } catch (e) { console.log(String(e).slice(0, 3000)); }
await h.stopAll(); await pool.end();
