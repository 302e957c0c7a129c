// trigger: the HTTP API that starts runs (log replays, log uploads, EV simulations).
import type { AddressInfo } from 'node:net';
import { boot } from '../../shared/runtime.ts';
import { loadCatalog } from '../../shared/ev/catalog.ts';
import { createApp } from './app.ts';
import { DEV_TOKEN, configShape } from './config.ts';
import { createEvRuns } from './ev-runs.ts';
import { createRunner } from './runner.ts';
import { startResumer } from './resume.ts';
import { createRunStore } from './runs.ts';

const deps = await boot('trigger', configShape);
const { config, log } = deps;
if (config.TRIGGER_TOKEN === DEV_TOKEN) log.warn('TRIGGER_TOKEN is the development default; set your own outside a laptop');

const runs = createRunStore(deps.pool);
const runner = createRunner({ publisher: deps.publisher, runs, log });
deps.onStop(() => runner.stop());
const ev = createEvRuns({ runs, runner, pool: deps.pool, catalog: loadCatalog(config.EV_CATALOG) });
const app = createApp({
  runs,
  runner,
  ev,
  logDir: config.LOG_DIR,
  token: config.TRIGGER_TOKEN,
  bodyLimitBytes: config.BODY_LIMIT_MB * 1024 * 1024,
  log,
  ready: () => deps.amqp.connected,
  metrics: deps.metrics.registry,
});
const resumer = startResumer({ runs, runner, ev, logDir: config.LOG_DIR, log, staleAfterMs: config.RUN_STALE_AFTER_S * 1000 });
deps.onStop(() => resumer.stop());
// Registered last, so it runs first on shutdown: stop taking requests, then stop the runs.
deps.onStop(() => app.close());
const address = await app.listen({ port: config.HTTP_PORT, host: config.HTTP_HOST });
const { port } = app.server.address() as AddressInfo;
log.info({ address, port, logDir: config.LOG_DIR, uptimeMs: Math.round(process.uptime() * 1000) }, 'ready');
