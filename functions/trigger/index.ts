// trigger: the HTTP API that starts runs (log replays, log uploads, EV simulations).
import type { AddressInfo } from 'node:net';
import { boot } from '../../shared/runtime.ts';
import { ConfigError } from '../../shared/errors.ts';
import { loadCatalog } from './ev-catalog.ts';
import { createApp } from './app.ts';
import { DEV_TOKEN, configShape, triggerConfigProblems } from './config.ts';
import { createEvRuns } from './ev-runs.ts';
import { createRunner } from './runner.ts';
import { startResumer } from './resume.ts';
import { createRunStore } from './runs.ts';
import { createStatsStore } from './stats.ts';
import { createDeadLetters } from './dlq.ts';
import { createDashboardSources } from './dashboard.ts';
import type { FramingSettings } from './framing.ts';

// Checked before boot connects anywhere: a bad variable, or the public dev token on a
// non-loopback address, stops the trigger with every problem named (exit 78, like boot).
const problems = triggerConfigProblems(process.env);
if (problems.length > 0) {
  process.stderr.write(`trigger: ${new ConfigError(problems).message}\n`);
  process.exit(78); // EX_CONFIG
}
const deps = await boot('trigger', configShape);
const { config, log } = deps;
if (config.TRIGGER_TOKEN === DEV_TOKEN) log.warn({ host: config.HTTP_HOST }, 'TRIGGER_TOKEN is the development default (accepted on loopback only); set your own outside a laptop');

const runs = createRunStore(deps.pool);
// The framing of a run that names none, and the limits of batch framing.
const framing: FramingSettings = { default: config.LOG_FRAMING, maxLines: config.FRAMING_BATCH_LINES, maxBytes: config.FRAMING_BATCH_BYTES, lingerMs: config.FRAMING_LINGER_MS };
// The lease: a run this trigger did not save for RUN_STALE_AFTER_S may be claimed by another one.
const runner = createRunner({ publisher: deps.publisher, runs, log, leaseMs: config.RUN_STALE_AFTER_S * 1000, maxInFlightPerRun: config.RUN_MAX_IN_FLIGHT });
log.info({ owner: runs.owner }, 'run owner id');
deps.onStop(() => runner.stop());
const ev = createEvRuns({ runs, runner, pool: deps.pool, catalog: loadCatalog(config.EV_CATALOG), maxRunMessages: config.MAX_RUN_MESSAGES });
// Dead letters as their own RabbitMQ user (DLQ_AMQP_URL), connected on first use.
const dlq = config.DLQ_AMQP_URL ? createDeadLetters({ url: config.DLQ_AMQP_URL, log }) : undefined;
if (dlq) deps.onStop(() => dlq.close());
else log.info('DLQ_AMQP_URL is not set: the dead-letter routes answer 503');
const app = createApp({
  dlq,
  runs,
  runner,
  ev,
  logDir: config.LOG_DIR,
  token: config.TRIGGER_TOKEN,
  bodyLimitBytes: Math.floor(config.BODY_LIMIT_MB * 1024 * 1024),
  maxConcurrentRuns: config.MAX_CONCURRENT_RUNS,
  maxLineBytes: config.MAX_LINE_BYTES,
  framing,
  stats: createStatsStore(deps.pool),
  log,
  ready: () => !deps.stopping && deps.amqp.connected,
  metrics: deps.metrics.registry,
  dashboard: { pollMs: config.DASHBOARD_POLL_MS, sources: createDashboardSources({ pool: deps.pool, log, amqpUrl: config.AMQP_URL, rabbitApiUrl: config.RABBITMQ_MONITOR_URL }) },
});
const resumer = startResumer({ runs, runner, ev, logDir: config.LOG_DIR, log, staleAfterMs: config.RUN_STALE_AFTER_S * 1000, maxConcurrentRuns: config.MAX_CONCURRENT_RUNS, maxLineBytes: config.MAX_LINE_BYTES, framing });
deps.onStop(() => resumer.stop());
// Registered last, so it runs first on shutdown: stop taking requests, then stop the runs.
deps.onStop(() => app.close());
const address = await app.listen({ port: config.HTTP_PORT, host: config.HTTP_HOST });
const { port } = app.server.address() as AddressInfo;
log.info({ address, port, logDir: config.LOG_DIR, uptimeMs: Math.round(process.uptime() * 1000) }, 'ready');
